"""The serving bench beside its anchor: ``salesml serve`` and the thinnest BentoML service over the same
champion boosters (``benchmarks.bare_service``), measured in the same run with the same client code.

:func:`export_anchor` writes what the bare service loads: each champion's booster (XGBoost JSON) and its
feature rows, read once from the bench home's online store through the scoring core (``online`` and
``training.data.feature_matrix``), so that both services score the same numbers. A numeric logistic
champion goes as its imputer's medians, scaler and coefficients (the bare service does the arithmetic);
one that neither service form fits (a logistic model with categorical levels) gets no anchor: the
report says so. :func:`side_by_side` checks that both
answer the same probabilities, then measures each endpoint on both, back to back: one keep-alive client
(``calls`` after ``warmup``), then ``clients`` clients for ``seconds``; and ours alone with 1,000 ids per
/health call, without and with ``since``. ``benchmarks.serving.run`` runs it before any push and adds its
:func:`section` to ``bench_serving.md``.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from benchmarks.home import pct
from salesml.settings import Settings

if TYPE_CHECKING:
    from serving.core import ScoringCore

# endpoint, what one call asks for, the model behind it
ENDPOINTS = (("/health", "1 account", "chs"), ("/intent", "1 lead", "intent"), ("/match", "1 lead", "lead_match"))
TOP = 3  # reps per lead in /match
CHECK_IDS = 20  # entities whose answers are compared between the two services
BATCH = 1000  # ids per /health call in the batch lines (at most the service's max_batch)
SINCE_WEEKS = 4  # `since` this many weeks before the export's last usage week ends
GOALS = {"p50": 2.0, "p99": 3.0, "calls/s": 0.5}  # ours within 2x / 3x of the bare one; at least half its calls/s
HEALTH_GOAL, SINCE_GOAL = 20_000, 2_000  # accounts/s over HTTP, /health with 1,000 ids, without and with since


@dataclass(frozen=True)
class BesideRun:
    """How long each part runs (the issue's method by default; a test shortens it)."""

    calls: int = 300  # one client: calls measured ...
    warmup: int = 20  # ... after these
    clients: int = 16
    seconds: float = 15.0  # the clients' time per service and endpoint
    batch_seconds: float = 8.0  # /health with 1,000 ids (and with since): calls back to back for this long


ISSUE_METHOD = BesideRun()


@dataclass
class Anchor:
    """What :func:`export_anchor` wrote: per model its ids (in the bare service's rows) or why it has none."""

    folder: Path
    ids: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    reps: list[str] = field(default_factory=list)
    columns: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # xgboost | linear (a numeric logistic champion)


def export_anchor(home: Settings, core: ScoringCore, folder: Path, max_leads: int = 1000) -> Anchor:
    """Each model's registry champion (by alias, loaded by version as the service loads it) and its feature
    rows from ``home``'s online store, into ``folder`` for ``benchmarks.bare_service``."""
    from mlflow.exceptions import MlflowException

    from features.transforms import lead_rep_fit
    from training import tracking
    from training.chs import HealthModel
    from training.data import feature_matrix
    from training.models import LinearScoringModel, ScoringModel

    tracking.configure(home)
    client = tracking.client(home)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        if old.suffix in (".json", ".npz"):
            old.unlink()
    accounts = pd.read_parquet(home.raw_dir / "accounts.parquet", columns=["account_id"])["account_id"]
    leads = pd.read_parquet(home.raw_dir / "leads.parquet", columns=["lead_id"])["lead_id"]
    out = Anchor(folder)
    manifest: dict = {"models": {}, "skipped": out.skipped}
    for name in ("chs", "intent", "lead_match"):
        try:
            mv = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            out.skipped[name] = "it has no champion in the registry"
            continue
        loaded = tracking.load_scoring_model(f"models:/{name}/{mv.version}")
        model = loaded.full if isinstance(loaded, HealthModel) else loaded
        out.versions[name] = str(mv.version)
        linear = isinstance(model, LinearScoringModel) and model.matrix_ready
        if not isinstance(model, ScoringModel) and not linear:
            out.skipped[name] = (f"its champion (version {mv.version}) is a {type(model).__name__} the bare "
                                 "service cannot score (a logistic model with categorical levels)")
            continue
        spec = model.spec
        if name == "chs":
            frame = core.online(core.specs["chs"].feature_service, "account_id", accounts.astype(str).tolist())
            frame = frame[frame["_known"]]
            ids = frame["account_id"].astype(str).tolist()
            x = feature_matrix(frame, spec, len(frame))
            arrays: dict[str, Any] = {"ids": np.array(ids), "x": x}
        else:  # the lead side, as ours reads it for /intent and /match: the intent model's feature service
            frame = core.online(core.specs["intent"].feature_service, "lead_id", leads.astype(str).tolist())
            frame = frame[frame["_known"]]
            if name == "intent":
                ids = frame["lead_id"].astype(str).tolist()
                arrays = {"ids": np.array(ids), "x": feature_matrix(frame, spec, len(frame))}
            else:  # every lead with every active rep known online, as serving.core's match pairs them
                frame = frame.head(max_leads)
                ids = frame["lead_id"].astype(str).tolist()
                reps = core.online_reps(list(dict.fromkeys(core.active_reps)))
                reps = reps[reps["_known"]]
                out.reps = reps["rep_id"].astype(str).tolist()
                if not out.reps:
                    out.skipped[name] = "no active rep has features online"
                    continue
                pairs = frame.drop(columns="_known").merge(reps.drop(columns="_known"), how="cross")
                pairs = pd.concat([pairs, lead_rep_fit(pairs)], axis=1)
                x = feature_matrix(pairs, spec, len(pairs)).reshape(len(ids), len(out.reps), -1)
                arrays = {"ids": np.array(ids), "reps": np.array(out.reps), "x": x}
        meta: dict[str, Any] = {"version": str(mv.version), "columns": list(spec.columns), "rows": len(ids)}
        if isinstance(model, LinearScoringModel):  # its imputer, scaler and coefficients as plain arrays
            arrays.update(model.numpy_parts())
            meta["kind"] = "linear"
        else:
            model.booster.get_booster().save_model(str(folder / f"{name}.json"))
            meta.update(kind="xgboost", iteration_range=list(model._trees),
                        nthread=int(model.booster.get_params().get("n_jobs") or 0))
        np.savez(str(folder / f"{name}.npz"), **arrays)
        out.ids[name], out.columns[name] = ids, len(spec.columns)
        out.kinds[name] = meta["kind"]
        manifest["models"][name] = meta
    (folder / "anchor.json").write_text(json.dumps(manifest, indent=2))
    return out


class BareServer:
    """``bentoml serve benchmarks.bare_service:BareScoring`` on ``port``, in a session of its own, with as
    many workers and threads as ``home``'s scoring service; its pid is kept in the home's serving folder so
    that a later run stops one an interrupted run left behind."""

    def __init__(self, home: Settings, folder: Path, port: int):
        self.home, self.folder, self.port = home, folder, port
        self.proc: subprocess.Popen | None = None
        self.log_path = home.serving_dir / "bare.log"

    @staticmethod
    def pid_file(home: Settings) -> Path:
        return home.serving_dir / "bare.pid"

    @classmethod
    def stop_leftover(cls, home: Settings) -> None:
        from salesml.processes import kill_process_group

        path = cls.pid_file(home)
        if path.exists():
            kill_process_group(int(path.read_text()))
            path.unlink()

    def start(self) -> BareServer:
        from salesml.settings import REPO_ROOT

        self.home.serving_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SALESML_BARE_DIR": str(self.folder),
               "SALESML_BARE_WORKERS": str(self.home.serve_workers),
               "SALESML_BARE_THREADS": str(self.home.serve_threads)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "benchmarks.bare_service:BareScoring", "--host",
                 "127.0.0.1", "--port", str(self.port), "--working-dir", str(REPO_ROOT)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file(self.home).write_text(str(self.proc.pid))
        return self

    def wait(self, timeout: float = 180.0) -> None:
        from salesml.processes import ProcessExited, wait_until_ready

        assert self.proc is not None
        try:
            ready = wait_until_ready(self.proc, f"http://127.0.0.1:{self.port}/readyz", timeout)
        except ProcessExited as exc:
            raise RuntimeError(f"the bare BentoML service exited with {exc.returncode}; see {self.log_path}") from None
        if not ready:
            raise RuntimeError(f"the bare BentoML service was not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        from salesml.processes import kill_process_group

        if self.proc is not None:
            kill_process_group(self.proc.pid, proc=self.proc)
            self.proc = None
        self.pid_file(self.home).unlink(missing_ok=True)


class _Connections:
    """One keep-alive connection per thread to one service (the same client for ours and the bare one:
    the key is sent to both); every connection opened is closed by :meth:`close`."""

    def __init__(self, port: int, key: str):
        self.port, self.headers = port, {"Content-Type": "application/json", "X-API-Key": key}
        self.local = threading.local()
        self.opened: list[http.client.HTTPConnection] = []
        self.lock = threading.Lock()

    def send(self, path: str, body: bytes) -> tuple[int | str, bytes]:
        """(HTTP status, body), or (the error's name, b"") where the connection failed (it is reopened for
        the next call)."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            with self.lock:
                self.opened.append(conn)
        try:
            conn.request("POST", path, body, self.headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.local.conn = None
            return type(exc).__name__, b""

    def post(self, path: str, body: bytes) -> bytes:
        status, data = self.send(path, body)
        if status != 200:
            raise RuntimeError(f"POST {path} on port {self.port}: {status}: {data[:300]!r}")
        return data

    def json(self, path: str, body: dict) -> dict:
        return json.loads(self.post(path, json.dumps(body).encode()))

    def close(self) -> None:
        with self.lock:
            for conn in self.opened:
                conn.close()
            self.opened.clear()
        self.local = threading.local()


class _Calls:
    """One client's (or all clients') calls: ms of those answered 200, the others by what they got."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.failed: dict[str, int] = {}

    def call(self, conns: _Connections, path: str, body: bytes) -> None:
        t0 = time.perf_counter()
        status, _ = conns.send(path, body)
        if status == 200:
            self.ms.append(1000 * (time.perf_counter() - t0))
        else:
            what = f"HTTP {status}" if isinstance(status, int) else status
            self.failed[what] = self.failed.get(what, 0) + 1

    def add(self, other: _Calls) -> None:
        self.ms += other.ms
        for k, n in other.failed.items():
            self.failed[k] = self.failed.get(k, 0) + n


def _one_client(conns: _Connections, path: str, bodies: list[bytes], calls: int, warmup: int) -> _Calls:
    for i in range(warmup):
        conns.post(path, bodies[i % len(bodies)])
    out = _Calls()
    for i in range(calls):
        out.call(conns, path, bodies[(warmup + i) % len(bodies)])
    return out


def _many_clients(conns: _Connections, path: str, bodies: list[bytes], clients: int, seconds: float
                  ) -> tuple[_Calls, float]:
    """The calls of ``clients`` threads calling back to back for ``seconds``, and the calls answered per second."""
    parts = [_Calls() for _ in range(clients)]
    errors: list[BaseException] = []
    started = time.perf_counter()
    stop = started + seconds

    def worker(k: int) -> None:
        i = k
        try:
            while time.perf_counter() < stop:
                parts[k].call(conns, path, bodies[i % len(bodies)])
                i += clients
        except BaseException as exc:  # re-raised below, in the bench's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out = _Calls()
    for part in parts:
        out.add(part)
    return out, len(out.ms) / (time.perf_counter() - started)


def _bodies(endpoint: str, ids: list[str]) -> list[bytes]:
    if endpoint == "/health":
        return [json.dumps({"account_ids": [i]}).encode() for i in ids]
    if endpoint == "/intent":
        return [json.dumps({"lead_ids": [i]}).encode() for i in ids]
    return [json.dumps({"lead_ids": [i], "top": TOP}).encode() for i in ids]


def _agreement(ours: _Connections, bare: _Connections, endpoint: str, ids: list[str]) -> dict:
    """Both services' probabilities for the same ``ids``: the largest difference, the first id's two answers
    (and for /match whether both rank the same reps)."""
    if endpoint == "/match":
        a = ours.json("/match", {"lead_ids": ids, "top": TOP})["results"]
        b = bare.json("/match", {"lead_ids": ids, "top": TOP})["results"]
        ranked = [[r["expected_conversion"] for r in x["ranked_reps"]] for x in a]
        theirs = [x["probabilities"] for x in b]
        same_reps = all([r["rep_id"] for r in x["ranked_reps"]] == y["rep_ids"] for x, y in zip(a, b))
        diff = max(float(np.max(np.abs(np.array(m) - np.array(t)))) for m, t in zip(ranked, theirs))
        return {"ids": len(ids), "first id": ids[0], "ours": ranked[0][0], "bare": theirs[0][0], "max abs diff": diff,
                "same reps": same_reps}
    field_, key, key_ids = (("churn_probability", "account_id", "account_ids") if endpoint == "/health"
                            else ("probability", "lead_id", "lead_ids"))
    a = ours.json(endpoint, {key_ids: ids})["results"]
    b = bare.json(endpoint, {key_ids: ids})["probabilities"]
    if [str(r.get(key)) for r in a] != ids or any(field_ not in r for r in a):
        raise RuntimeError(f"{endpoint}: our service did not score every id: {json.dumps(a)[:300]}")
    mine = [float(r[field_]) for r in a]
    return {"ids": len(ids), "first id": ids[0], "ours": mine[0], "bare": float(b[0]),
            "max abs diff": float(np.max(np.abs(np.array(mine) - np.array(b)))), "same reps": None}


def _since_ids(home: Settings, ids: list[str]) -> tuple[str, list[str]]:
    """``since`` (an ISO date ``SINCE_WEEKS`` weeks before the export's last usage week ends) and up to
    ``BATCH`` of ``ids`` with usage in the eight weeks before it (a feature value to compare with)."""
    usage = pd.read_parquet(home.raw_dir / "usage_weekly.parquet", columns=["account_id", "week_start"])
    week = pd.to_datetime(usage["week_start"], utc=True)
    since = (week.max() + pd.Timedelta(days=7) - pd.Timedelta(weeks=SINCE_WEEKS)).normalize()
    recent = set(usage.loc[(week >= since - pd.Timedelta(weeks=8)) & (week <= since - pd.Timedelta(days=7)),
                           "account_id"].astype(str))
    return since.date().isoformat(), [i for i in ids if i in recent][:BATCH]


def _batch(conns: _Connections, bodies: list[bytes], seconds: float) -> dict:
    """/health calls back to back (one client) for ``seconds`` after one warm-up call."""
    conns.post("/health", bodies[0])
    ms: list[float] = []
    started = time.perf_counter()
    while not ms or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        conns.post("/health", bodies[(1 + len(ms)) % len(bodies)])
        ms.append(1000 * (time.perf_counter() - t0))
    took = time.perf_counter() - started
    return {"calls": len(ms), "p50 ms": pct(np.array(ms), 50), "seconds": took}


def side_by_side(home: Settings, anchor: Anchor, ours_port: int, bare_port: int, key: str,
                 run: BesideRun = ISSUE_METHOD, log: Callable[[str], None] = print) -> dict:
    """Both services running (ours on ``ours_port`` with ``key``, a read key; the bare one on ``bare_port``,
    serving ``anchor``): the agreement check, the side-by-side figures per endpoint and ours' batch lines."""
    ours, bare = _Connections(ours_port, key), _Connections(bare_port, key)
    figures: dict = {"run": run.__dict__, "workers": home.serve_workers, "threads": home.serve_threads,
                     "versions": anchor.versions, "skipped": anchor.skipped, "reps": len(anchor.reps),
                     "kinds": anchor.kinds, "agreement": {}, "endpoints": {}}
    accounts = pd.read_parquet(home.raw_dir / "accounts.parquet", columns=["account_id"])["account_id"]
    leads = pd.read_parquet(home.raw_dir / "leads.parquet", columns=["lead_id"])["lead_id"]
    try:
        for endpoint, what, model in ENDPOINTS:
            ids = anchor.ids.get(model) or (accounts if model == "chs" else leads).astype(str).tolist()
            bodies = _bodies(endpoint, ids)
            with_bare = model in anchor.ids
            if with_bare:
                figures["agreement"][endpoint] = _agreement(ours, bare, endpoint, ids[:CHECK_IDS])
                # each phase opens its connections: BentoML closes one idle for 5 s, and a request written to it
                # fails (BrokenPipeError, which click's CLI turns into a silent exit)
                ours.close()
                bare.close()
            row: dict = {"what": what, "model": model}
            for side, conns in (("ours", ours), ("bare", bare)):
                if side == "bare" and not with_bare:
                    continue
                log(f"serving bench: {endpoint} {what}, {side}: 1 client, {run.calls} calls after {run.warmup}")
                one = _one_client(conns, endpoint, bodies, run.calls, run.warmup)
                conns.close()
                log(f"serving bench: {endpoint} {what}, {side}: {run.clients} clients, {run.seconds:g} s")
                many, rate = _many_clients(conns, endpoint, bodies, run.clients, run.seconds)
                conns.close()
                a, m = np.array(one.ms), np.array(many.ms)
                row[side] = {"calls": len(a), "p50 ms": pct(a, 50), "p99 ms": pct(a, 99), "failed": one.failed,
                             "calls/s": rate, "p99 ms at clients": pct(m, 99), "calls at clients": len(m),
                             "failed at clients": many.failed}
            if with_bare:
                o, b = row["ours"], row["bare"]
                row["ratio"] = {k: o[k] / b[k] for k in ("p50 ms", "p99 ms", "calls/s", "p99 ms at clients")}
            figures["endpoints"][endpoint] = row
        ids = accounts.astype(str).tolist()
        n = min(BATCH, len(ids), home.max_batch)
        log(f"serving bench: /health with {n:,} ids, ours, 1 client, {run.batch_seconds:g} s")
        bodies = [json.dumps({"account_ids": [ids[(k * n + j) % len(ids)] for j in range(n)]}).encode()
                  for k in range(4)]
        batch = _batch(ours, bodies, run.batch_seconds)
        figures["batch"] = {**batch, "ids": n, "accounts/s": n * batch["calls"] / batch["seconds"]}
        since, with_history = _since_ids(home, ids)
        log(f"serving bench: /health with {len(with_history):,} ids and since {since}, ours, 1 client, "
            f"{run.batch_seconds:g} s")
        try:
            body = json.dumps({"account_ids": with_history, "since": since}).encode()
            batch = _batch(ours, [body], run.batch_seconds)
            figures["since"] = {**batch, "ids": len(with_history), "since": since,
                                "accounts/s": len(with_history) * batch["calls"] / batch["seconds"]}
        except RuntimeError as exc:  # said in the report: a since the history does not cover is a 400
            figures["since"] = {"ids": len(with_history), "since": since, "error": str(exc)}
    finally:
        ours.close()
        bare.close()
    figures["lines"] = section(figures)
    return figures


def _failures(failed: dict[str, int], answered: int) -> str:
    if not failed:
        return "none"
    n = sum(failed.values())
    return f"{n:,} of {n + answered:,} (" + ", ".join(f"{k}: {v:,}" for k, v in failed.items()) + ")"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _f(x: float, unit: str = "") -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:,.1f}{unit}"


def section(figures: dict) -> list[str]:
    """The report's section "Beside a bare BentoML service" from :func:`side_by_side`'s figures."""
    run = figures["run"]
    clients = run["clients"]
    lines = ["## Beside a bare BentoML service", "",
             f"In the same run, a bare BentoML service (`benchmarks/bare_service.py`, {figures['workers']} worker(s) "
             f"with {figures['threads']} threads each, as ours) over the same champions, their features "
             "read once from the bench's online store at start and held in memory (in each model's column order; "
             "categoricals as their codes), one `inplace_predict` per call (for a logistic champion: its "
             "imputer, scaler and dot product in numpy): no key, no log, no drivers, "
             f"probabilities only. Its /match scores the lead against each of the {figures['reps']} active reps' "
             "rows in the worker itself (ours hands /match to its own Matching process). The same client code "
             "drives both, ours first, then the bare one, endpoint by endpoint: one keep-alive client, "
             f"{run['calls']} calls after {run['warmup']} warm-up calls, then {clients} clients (one keep-alive "
             f"connection each, threads of the bench process on the same cores) for {run['seconds']:g} s. "
             "Ratio: ours / bare.", ""]
    for name, reason in figures["skipped"].items():
        lines += [f"**No bare anchor for `{name}`**: {reason}; its endpoint is measured for ours alone and its "
                  "goals cannot be judged in this run.", ""]
    for endpoint, what, model in ENDPOINTS:
        row = figures["endpoints"].get(endpoint)
        if row is None:
            continue
        kind = {"linear": ", a logistic champion", "xgboost": ", an XGBoost champion"}.get(
            figures.get("kinds", {}).get(model, ""), "")
        lines += [f"### {endpoint}, {what} per call ({model}{kind})", "",
                  f"| | p50 ms, 1 client | p99 ms, 1 client | calls/s, {clients} clients | p99 ms, {clients} clients |",
                  "|---|---:|---:|---:|---:|"]
        for side, label in (("ours", "ours (`salesml serve`)"), ("bare", "bare BentoML")):
            r = row.get(side)
            lines.append(f"| {label} | " + (" | ".join(_f(r[k]) for k in ("p50 ms", "p99 ms", "calls/s",
                                                                           "p99 ms at clients"))
                                            if r else "— | — | — | —") + " |")
        ratio = row.get("ratio")
        lines.append("| ratio, ours / bare | " + (" | ".join(f"{ratio[k]:.2f}" for k in ("p50 ms", "p99 ms", "calls/s",
                                                                                         "p99 ms at clients"))
                                                  if ratio else "— | — | — | —") + " |")
        lines.append("")
        for side, label in (("ours", "ours"), ("bare", "the bare one")):
            r = row.get(side)
            if r and (r["failed"] or r["failed at clients"]):
                lines += [f"**Failed calls**, {label}: at 1 client {_failures(r['failed'], r['calls'])}; at {clients} "
                          f"clients {_failures(r['failed at clients'], r['calls at clients'])} (the figures above "
                          "are those of the calls answered 200).", ""]
        agree = figures["agreement"].get(endpoint)
        if agree:
            same = agree["max abs diff"] <= 1e-6 and agree["same reps"] is not False
            lines.append(f"Same answers: over {agree['ids']} {'leads' if model != 'chs' else 'accounts'} the "
                         f"probabilities differ by at most {agree['max abs diff']:.1e}"
                         + ("" if agree["same reps"] is None else
                            f", the same reps ranked: {'yes' if agree['same reps'] else 'NO'}")
                         + f" ({agree['first id']}: ours {agree['ours']:.6f}, bare {agree['bare']:.6f})"
                         + ("." if same else ": **the two do not score alike; the comparison is not like for like**."))
            lines.append("")
        if endpoint in ("/health", "/intent"):
            if ratio:
                lines.append(f"Goals: p50 within {GOALS['p50']:g}x the bare one's "
                             f"{_verdict(ratio['p50 ms'] <= GOALS['p50'])} "
                             f"({ratio['p50 ms']:.2f}x); p99 within {GOALS['p99']:g}x "
                             f"{_verdict(ratio['p99 ms'] <= GOALS['p99'])} ({ratio['p99 ms']:.2f}x); at least "
                             f"{GOALS['calls/s']:g} of its calls/s at {clients} clients "
                             f"{_verdict(ratio['calls/s'] >= GOALS['calls/s'])} ({ratio['calls/s']:.2f}).")
            else:
                lines.append(f"Goals (p50 within {GOALS['p50']:g}x, p99 within {GOALS['p99']:g}x, at least "
                             f"{GOALS['calls/s']:g} of the calls/s at {clients} clients): not judged, no bare anchor.")
            lines.append("")
    batch, since = figures["batch"], figures["since"]
    lines += ["### /health with many ids (ours)", "",
              f"/health with {batch['ids']:,} ids per call, one keep-alive client, back to back for "
              f"{batch['seconds']:.1f} s ({batch['calls']} calls, p50 {batch['p50 ms']:.0f} ms): "
              f"**{batch['accounts/s']:,.0f} accounts/s** over HTTP; goal >= {HEALTH_GOAL:,}: "
              f"{_verdict(batch['accounts/s'] >= HEALTH_GOAL)}.", ""]
    if "error" in since:
        lines += [f"/health with {since['ids']:,} ids and `since` {since['since']}: could not be measured: "
                  f"{since['error']}; goal >= {SINCE_GOAL:,} accounts/s: **not met**.", ""]
    else:
        lines += [f"/health with {since['ids']:,} ids and `since` {since['since']} ({SINCE_WEEKS} weeks before the "
                  "export's last usage week ends; the accounts with usage in the eight weeks before it), one client, "
                  f"{since['seconds']:.1f} s ({since['calls']} calls, p50 {since['p50 ms']:.0f} ms): "
                  f"**{since['accounts/s']:,.0f} accounts/s**; goal >= {SINCE_GOAL:,}: "
                  f"{_verdict(since['accounts/s'] >= SINCE_GOAL)}.", ""]
    return lines


def start_anchor(home: Settings, core: ScoringCore, log: Callable[[str], None] = print
                 ) -> tuple[Anchor, BareServer]:
    """Export the anchor from ``home``'s champions and start the bare service on it (not waited for)."""
    from salesml.processes import free_port

    BareServer.stop_leftover(home)
    log("serving bench: exporting the champions' boosters and features for the bare BentoML service")
    anchor = export_anchor(home, core, home.serving_dir / "bare")
    return anchor, BareServer(home, anchor.folder, free_port()).start()
