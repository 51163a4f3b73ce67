"""Start the scoring service as a background process and call it: used by ``make demo``,
the serving benchmark and ``salesml serve-stop``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from salesml.processes import ProcessExited, kill_process_group, wait_until_ready
from salesml.settings import Settings


def pid_file(settings: Settings) -> Path:
    return settings.serving_dir / "server.pid"


def server_env(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` in it: ``SALESML_HOME`` and every field set
    explicitly (a benchmark's own home, say), so that the server runs with these settings, not
    with whatever the environment says (a field set to None is taken out of it)."""
    env = {**os.environ, "SALESML_HOME": str(settings.root)}
    for name in settings.model_fields_set - {"home"}:
        value, key = getattr(settings, name), f"SALESML_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return env


def start_background(settings: Settings, port: int | None = None, timeout: float = 180.0) -> tuple[int, int]:
    """Start ``salesml serve`` detached (its own session), wait for /readyz; (pid, port)."""
    port = port or settings.serve_port
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.serving_dir / "server.log"
    salesml = str(Path(sys.executable).with_name("salesml"))
    env = server_env(settings)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([salesml, "serve", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pid_file(settings).write_text(str(proc.pid))
    try:
        if wait_until_ready(proc, f"http://127.0.0.1:{port}/readyz", timeout):
            return proc.pid, port
    except ProcessExited as exc:
        raise RuntimeError(f"the server exited with {exc.returncode}; see {log_path}") from None
    stop(settings)
    raise RuntimeError(f"the server was not ready after {timeout:.0f} s; see {log_path}")


def stop(settings: Settings) -> bool:
    """Stop the background server started by ``start_background``; False if none was running."""
    path = pid_file(settings)
    if not path.exists():
        return False
    pid = int(path.read_text())
    path.unlink()
    return kill_process_group(pid)


def post(port: int, path: str, body: dict, key: str, timeout: float = 30) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def sample_calls(settings: Settings, port: int, key: str, show: Callable[[str], None] = print) -> None:
    """One call per endpoint on the demo export, printed with its answer (shortened)."""
    import pandas as pd

    raw = settings.raw_dir
    account = pd.read_parquet(raw / "accounts.parquet", columns=["account_id"])["account_id"].iloc[0]
    leads = pd.read_parquet(raw / "leads.parquet", columns=["lead_id"])["lead_id"].tail(3).tolist()
    last = pd.read_parquet(raw / "lead_events.parquet", columns=["lead_id", "occurred_at"])
    at = last.loc[last["lead_id"] == leads[-1], "occurred_at"].max()
    at = (at if pd.notna(at) else pd.Timestamp.now(tz="UTC")) + pd.Timedelta(minutes=5)
    since = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=90)).date().isoformat()
    calls = [
        ("/health", {"account_ids": [account], "since": since}),
        ("/intent", {"lead_ids": leads}),
        ("/match", {"lead_ids": leads, "assign": True, "top": 2}),
        ("/events", {"table": "lead_events", "rows": [
            {"event_id": f"E-demo-{int(time.time())}", "lead_id": leads[-1], "occurred_at": at.isoformat(),
             "event_type": "page_view", "page": "pricing", "dwell_seconds": 95.0}]}),
        ("/intent", {"lead_ids": leads[-1:]}),
        ("/outcomes", {"outcomes": [{"entity_type": "lead", "entity_id": leads[0], "outcome": "converted",
                                     "value": True, "occurred_at": pd.Timestamp.now(tz="UTC").isoformat()}]}),
    ]
    calls.append(("/warnings", {"status": "open", "limit": 3}))
    answers = [_show_call(port, path, body, key, show) for path, body in calls]
    inbox = answers[-1].get("warnings") or []
    if not inbox:
        show("\n(no open warning to act on: `salesml score chs` raises them when a level worsens between runs)")
        return
    first = inbox[0]  # one sample intervention: the owner applies the playbook the warning carries
    body = {"warning_id": first["warning_id"], **({"playbook_id": first["playbook"]["id"]} if first.get("playbook")
                                                 else {"not_applicable": True, "reason": "demo: no playbook shown"})}
    _show_call(port, "/interventions", body, key, show)


def _show_call(port: int, path: str, body: dict, key: str, show: Callable[[str], None]) -> dict:
    status, answer = post(port, path, body, key)
    text = json.dumps(answer, default=str)
    show(f"\n$ curl -s -X POST http://127.0.0.1:{port}{path} -H 'X-API-Key: $KEY' "
         f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'")
    show(f"HTTP {status}: {text[:700]}{' ...' if len(text) > 700 else ''}")
    return answer
