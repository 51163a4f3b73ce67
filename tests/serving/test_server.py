"""`salesml serve` as a real process: BentoML's client, plain HTTP, and a SIGKILL under load."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from serving.runner import post as _post  # the same call the demo and the bench make

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]
SALESML = str(Path(sys.executable).with_name("salesml"))
SERVER_MAX_BATCH = 100  # the module server's batch limit (see ``server``)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(settings, port: int, log_path: Path, command: list[str] | None = None, **env: str) -> subprocess.Popen:
    """``salesml serve`` (or ``command``) on ``port``, once /readyz answers; ``env`` adds variables."""
    env = {**os.environ, "SALESML_HOME": str(settings.root), **env}
    proc = subprocess.Popen([*(command or [SALESML, "serve"]), "--port", str(port)], env=env, start_new_session=True,
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    _kill(proc)
    raise AssertionError(f"server not ready in 120 s: {log_path.read_text()[-3000:]}")


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the server and its workers: BentoML starts each worker in its own session, so
    killing the arbiter's process group alone would leave the worker (the log writer) running."""
    import psutil

    try:
        victims = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = [proc.pid]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    for pid in victims[1:]:
        try:
            psutil.Process(pid).wait(timeout=30)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def _servers(served_settings, tmp_path_factory):
    """The module's one server at a time: started on first use, again after a test killed it."""
    held: dict = {}
    yield held, served_settings, tmp_path_factory
    if held.get("proc") is not None and held["proc"].poll() is None:
        _kill(held["proc"])


@pytest.fixture
def server(_servers):
    """A running server on the served environment: the module's, or a new one when a test (the SIGKILL
    test) killed it. Never two at once: two servers writing one environment's logs is not what is tested."""
    held, settings, factory = _servers
    if held.get("proc") is None or held["proc"].poll() is not None:
        held["port"] = _free_port()
        held["log"] = factory.mktemp("server") / "server.log"
        # batches of at most 100 (1,000 by default): Schemathesis builds the largest batches the OpenAPI
        # document allows, and a 1,000-row /health explained row by row costs seconds on 2 busy cores
        # without reaching any code a 100-row one does not (the limit itself: tests/serving/test_guards.py)
        held["proc"] = _start(settings, held["port"], held["log"], SALESML_MAX_BATCH=str(SERVER_MAX_BATCH))
    return held["port"], held["proc"], held["log"]


def test_bentoml_client_and_plain_http(server, served_settings, keys):
    import bentoml

    port, _, _ = server
    accounts = pd.read_parquet(served_settings.raw_dir / "accounts.parquet")["account_id"].head(3).tolist()
    with bentoml.SyncHTTPClient(f"http://127.0.0.1:{port}", token=keys["csm"]) as client:
        out = client.health(account_ids=accounts)
        assert [r["account_id"] for r in out["results"]] == accounts
        assert all(0 <= r["score"] <= 100 for r in out["results"])
    status, body = _post(port, "/health", {"account_ids": accounts[:1]}, keys["sales"])
    assert status == 200 and "layers" not in body["results"][0]
    status, body = _post(port, "/health", {"account_ids": []}, keys["sales"])
    assert status == 400 and "account_ids" in json.dumps(body)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs.json") as r:
        doc = json.loads(r.read())
    assert "/health" in doc["paths"]
    # SALESML_MAX_BATCH reaches the served limit and the document that declares it
    over = [accounts[0]] * (SERVER_MAX_BATCH + 1)
    status, body = _post(port, "/health", {"account_ids": over}, keys["sales"])
    assert status == 400 and "account_ids" in json.dumps(body), body
    assert f"at most {SERVER_MAX_BATCH}" in json.dumps(body), body
    assert (_post(port, "/health", {"account_ids": over[:SERVER_MAX_BATCH]}, keys["sales"]))[0] == 200
    assert f'"maxItems": {SERVER_MAX_BATCH}' in json.dumps(doc["paths"]["/health"]), "limit not declared"


def test_concurrent_match_calls_all_answer(server, served_settings, keys):
    """/match goes on to the Matching process through BentoML's dependency client, which (BentoML 1.4.39)
    closed its session every 100 requests and cut the calls in flight on it: 8 clients, 320 calls, two
    workers past that mark, every call answered 200 (39 of 387 answered 500 before, at 16 clients)."""
    port, _, _ = server
    leads = pd.read_parquet(served_settings.raw_dir / "leads.parquet")["lead_id"].astype(str).tolist()

    def client(k: int) -> list[int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        codes = []
        try:
            for i in range(40):
                body = json.dumps({"lead_ids": [leads[(k * 40 + i) % len(leads)]], "top": 3})
                conn.request("POST", "/match", body, {"Content-Type": "application/json", "X-API-Key": keys["sales"]})
                resp = conn.getresponse()
                resp.read()
                codes.append(resp.status)
        finally:
            conn.close()
        return codes

    with ThreadPoolExecutor(8) as pool:
        codes = [c for part in pool.map(client, range(8)) for c in part]
    assert len(codes) == 320 and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}


def _worker_rss(proc: subprocess.Popen) -> int:
    """Resident memory of the BentoML worker (the arbiter's busiest child)."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    return max(c.memory_info().rss for c in children)


def test_unknown_paths_leave_metrics_and_memory_bounded(server):
    import random

    port, proc, _ = server

    def metrics() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            return len(r.read())

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def burst(n: int, rng: random.Random) -> None:
        for _ in range(n):
            conn.request("GET", f"/{rng.getrandbits(64):x}/{rng.getrandbits(32):x}")
            resp = conn.getresponse()
            assert resp.status == 404, resp.status
            resp.read()

    burst(500, random.Random(0))  # warm-up: the 404 path's own code paths and allocations
    size0, rss0 = metrics(), _worker_rss(proc)
    burst(10_000, random.Random(1))
    size1, rss1 = metrics(), _worker_rss(proc)
    conn.close()
    assert size1 <= size0 * 1.05, (size0, size1)
    assert rss1 <= rss0 * 1.05, (rss0, rss1)


# Every check but positive_data_acceptance: a schema-valid /health or /intent request may carry feature
# rows whose names the schema cannot know (they are the served model's), and that 400 is the right
# answer (tests/serving/test_guards.py).
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance,negative_data_rejection,missing_required_header,"
          "unsupported_method,use_after_free,ensure_resource_availability,ignored_auth")
# What each role's key may call: schemathesis generates valid requests for those endpoints only.
READS = ["/health", "/health/history", "/intent", "/match", "/warnings"]
ROLE_PATHS = {"sales": READS, "csm": [*READS, "/interventions"],
              "admin": [*READS, "/events", "/outcomes", "/interventions"], "ingest": ["/events", "/outcomes"]}


@pytest.fixture(scope="module")
def st_known(served_settings, tmp_path_factory):
    """The export's entities and times, for the hooks that make generated requests name them."""
    raw = served_settings.raw_dir
    week = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=7)
    known = {"accounts": pd.read_parquet(raw / "accounts.parquet")["account_id"].tolist(),
             "leads": pd.read_parquet(raw / "leads.parquet")["lead_id"].tolist(),
             "reps": pd.read_parquet(raw / "reps.parquet")["rep_id"].tolist(),
             "since": (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=120)).date().isoformat(),
             "at": (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)).isoformat(),
             "week": (week - pd.Timedelta(days=week.dayofweek)).isoformat()}
    known["warnings"], written = _history_and_warnings(served_settings, known["accounts"])
    path = tmp_path_factory.mktemp("st") / "known.json"
    path.write_text(json.dumps(known))
    yield path
    for p in written:  # the served environment is shared: no score run stays behind
        p.unlink()


def _history_and_warnings(settings, accounts: list[str]):
    """Two stored CHS runs for every account (so /health/history has timelines) and warnings for a
    few (so /interventions has something to act on); (warning ids, the score files written)."""
    from datetime import date

    from serving import scores
    from serving.actions.warnings import open_warning_store

    written = []
    for d, level, score in ((date(2026, 8, 31), "yellow", 58.0), (date(2026, 9, 7), "orange", 44.0)):
        written.append(scores.write(settings, "chs", d, pd.DataFrame({
            "account_id": accounts, "as_of": d, "score": score, "level": level, "churn_probability": 0.3,
            "early_warning": False, "change_points": score - 58.0, "change_text": "CHS fell", "restated": False,
            "model_version": "1", "weights_version": "initial", "run_id": "st"})))
    with open_warning_store(settings) as store:
        raised = store.raise_warnings(pd.DataFrame({"account_id": accounts[:5], "as_of": "2026-09-07",
                                                    "old_level": "yellow", "new_level": "orange"}), source="run")
        ids = [w["warning_id"] for w in raised] or store.frame()["warning_id"].head(5).tolist()
    return ids, written


@pytest.mark.parametrize("role", ["sales", "csm", "admin", "ingest"])
def test_schemathesis_all_checks_per_role(server, served_settings, keys, role, st_known, tmp_path, capsys):
    """Generated requests, each role's key on the endpoints its scopes allow: no check fails, and
    generated requests reach the scoring code (a 200) on every one of those endpoints."""
    from serving.predlog import PredictionLog

    port, _, _ = server
    st = str(Path(sys.executable).with_name("st"))
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "SALESML_ST_KNOWN": str(st_known),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    since = PredictionLog(served_settings.prediction_log_path).count("access")
    paths = "^(" + "|".join(ROLE_PATHS[role]) + ")$"
    run = subprocess.run([st, "run", f"http://127.0.0.1:{port}/docs.json", "--checks", CHECKS,
                          "--include-path-regex", paths, "-H", f"X-API-Key: {keys[role]}",
                          "--max-examples", "15", "--seed", "1", "--mode", "positive",
                          # a 1,000-row /health explains every row: seconds on 2 busy cores, not 10
                          "--request-timeout", "60",
                          "--report-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=env)
    access = PredictionLog(served_settings.prediction_log_path).access().iloc[since:]
    mine = access[access["api_key_id"].fillna("").str.startswith(f"test-{role}-")]
    reached = mine[mine["status"] == 200].groupby("endpoint").size()
    with capsys.disabled():  # the figure belongs in the suite's output, passed or not
        print(f"\nschemathesis, {role}: {len(mine)} requests; reached the scoring code (200): {reached.to_dict()}")
    assert run.returncode == 0, run.stdout[-6000:]
    for path in ROLE_PATHS[role]:
        assert reached.get(path, 0) > 0, f"no generated {path} request reached the scoring code"


def test_sigkill_under_load_loses_no_acknowledged_request(server, served_settings, keys):
    """Reads and writes in one concurrent mix, the server SIGKILLed mid-load: every acknowledged
    request is in the logs and stores after restart, and a rebuild includes every acknowledged event."""
    from features.live import live_path, open_live
    from features.store import build_feature_files, materialize, online_features
    from serving.predlog import PredictionLog

    port, proc, log_path = server
    raw = served_settings.raw_dir
    accounts = pd.read_parquet(raw / "accounts.parquet")["account_id"].tolist()
    events = pd.read_parquet(raw / "lead_events.parquet", columns=["lead_id", "occurred_at"])
    last = events.groupby("lead_id")["occurred_at"].max().sort_index().tail(6)
    acked: dict[str, list] = {"health": [], "events": [], "outcomes": []}
    stop = time.time() + 60

    def reader(i: int):
        while time.time() < stop:
            ids = [accounts[(i * 7 + len(acked["health"]) + j) % len(accounts)] for j in range(1 + i % 3)]
            try:
                status, body = _post(port, "/health", {"account_ids": ids}, keys["csm"], timeout=10)
            except (OSError, ConnectionError, http.client.HTTPException):  # cut off by the kill: not acknowledged
                return  # the server is gone
            if status == 200:
                acked["health"].append((body["request_id"], ids))

    def pusher(i: int):
        k = 0
        while time.time() < stop:
            lead, at = list(last.items())[(i + k) % len(last)]
            event = {"event_id": f"E-kill-{i}-{k}", "lead_id": lead, "event_type": "page_view", "page": "pricing",
                     "occurred_at": (at + pd.Timedelta(seconds=60 + k)).isoformat(), "dwell_seconds": 30.0}
            outcome = {"entity_type": "account", "entity_id": accounts[(i * 13 + k) % len(accounts)],
                       "outcome": "churned", "value": bool(k % 2),
                       "occurred_at": (pd.Timestamp("2026-01-05", tz="UTC") + pd.Timedelta(minutes=k)).isoformat()}
            k += 1
            try:
                status, body = _post(port, "/events", {"table": "lead_events", "rows": [event]}, keys["ingest"],
                                     timeout=10)
                if status == 200:
                    acked["events"].append((body["request_id"], event))
                status, body = _post(port, "/outcomes", {"outcomes": [outcome]}, keys["ingest"], timeout=10)
                if status == 200:
                    acked["outcomes"].append((body["request_id"], outcome))
            except (OSError, ConnectionError, http.client.HTTPException):  # cut off by the kill: not acknowledged
                return

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(reader, i) for i in range(13)] + [pool.submit(pusher, i) for i in range(3)]
        while (len(acked["health"]) < 150 or len(acked["events"]) < 10) and time.time() < stop:
            time.sleep(0.05)
        _kill(proc)  # the arbiter and the worker that writes the logs, mid-load
        for f in futures:
            f.result()
    assert len(acked["health"]) >= 150 and len(acked["events"]) >= 10 and len(acked["outcomes"]) >= 5, \
        {k: len(v) for k, v in acked.items()}

    log = PredictionLog(served_settings.prediction_log_path)
    assert log.integrity_ok()
    logged = log.predictions(model="chs")
    by_request = logged.groupby("request_id")["entity_id"].apply(sorted)
    missing = [rid for rid, ids in acked["health"] if by_request.get(rid) != sorted(ids)]
    assert not missing, f"{len(missing)} acknowledged requests not fully in the log"
    assert logged["outputs"].map(lambda o: isinstance(o, dict) and "score" in o).all()
    stored = log.outcomes("account")
    stored_keys = set(zip(stored["entity_id"], stored["occurred_at"]))
    assert all((o["entity_id"], pd.Timestamp(o["occurred_at"])) in stored_keys for _, o in acked["outcomes"])
    # the gate commits a call's access row before the first byte of its answer leaves (tests/serving/test_gate.py)
    access = set(log.access()["request_id"])
    unlogged = {kind: [rid for rid, _ in part if rid not in access] for kind, part in acked.items()}
    assert not any(unlogged.values()), f"acknowledged calls without an access row: {unlogged}"
    with open_live(served_settings) as live:
        pushed = set(live.rows("lead_events", list(last.index))["event_id"])
    with sqlite3.connect(live_path(served_settings)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert all(e["event_id"] in pushed for _, e in acked["events"])

    # a rebuild and materialize include every acknowledged event: each lead's event count grows by its pushes
    before = {lead: int((events["lead_id"] == lead).sum()) for lead in last.index}
    build_feature_files(served_settings, raw, progress=lambda _: None)
    materialize(served_settings)
    online = online_features(served_settings, "intent", [{"lead_id": lead} for lead in last.index])
    with open_live(served_settings) as live:
        live_rows = live.rows("lead_events", list(last.index))
    for lead, total in zip(online["lead_id"], online["events_total"]):
        assert total == before[lead] + int((live_rows["lead_id"] == lead).sum()), lead

    # the server comes back on the same log and keeps appending
    port2 = _free_port()
    proc2 = _start(served_settings, port2, log_path)
    try:
        status, body = _post(port2, "/health", {"account_ids": accounts[:1]}, keys["csm"])
        assert status == 200
        assert body["request_id"] in set(PredictionLog(served_settings.prediction_log_path).predictions()["request_id"])
    finally:
        _kill(proc2)


def test_plain_bentoml_serve_binds_loopback(served_settings, tmp_path):
    """`bentoml serve` without --host listens on 127.0.0.1 only, like `salesml serve`."""
    import psutil

    port = _free_port()
    env = {**os.environ, "SALESML_HOME": str(served_settings.root)}
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    from salesml.settings import REPO_ROOT

    proc = subprocess.Popen([bentoml, "serve", "serving.service:SalesScoring", "--port", str(port)], cwd=REPO_ROOT,
                            env=env, start_new_session=True, stdout=(tmp_path / "log").open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        deadline, listening = time.time() + 120, []
        while time.time() < deadline and not listening:
            assert proc.poll() is None, (tmp_path / "log").read_text()[-3000:]
            listening = [c.laddr.ip for c in psutil.net_connections("inet")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
            time.sleep(0.5)
        assert listening == ["127.0.0.1"], listening
    finally:
        _kill(proc)


def test_make_bento_pins_the_champions_and_the_lock_files_packages(served_settings, keys, tmp_path):
    """`make bento` imports each model's champion into the BentoML model store and pins it in the Bento,
    whose packages are uv.lock's; served from the Bento, the service scores with those versions even
    where no registry is reachable."""
    from importlib.metadata import version

    import yaml

    from salesml.modelspec import MODEL_NAMES
    from salesml.settings import REPO_ROOT
    from training import tracking

    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "SALESML_HOME": str(served_settings.root)}
    # -o install: this environment is the installed one (make install would sync .venv first)
    run = subprocess.run(["make", "-o", "install", "bento"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (bento_yaml,) = (tmp_path / "bentos" / "salesml-scoring").glob("*/bento.yaml")
    info = yaml.safe_load(bento_yaml.read_text())
    assert info["service"] == "serving.service:SalesScoring"
    assert (bento_yaml.parent / "src" / "serving" / "service.py").exists()
    client = tracking.client(served_settings)
    pinned = {}
    for m in info["models"]:
        name, ver = m["tag"].split(":")
        labels = yaml.safe_load((tmp_path / "models" / name / ver / "model.yaml").read_text())["labels"]
        pinned[labels["registry_model"]] = labels["registry_version"]
    assert pinned == {n: str(client.get_model_version_by_alias(n, "champion").version) for n in MODEL_NAMES}
    packages = (bento_yaml.parent / "env" / "python" / "requirements.txt").read_text().split("\n")
    assert {f"{p}=={version(p)}" for p in ("feast", "mlflow", "xgboost", "bentoml", "pandas")} <= set(packages)

    port = _free_port()
    serve = [str(Path(sys.executable).with_name("bentoml")), "serve", f"{info['name']}:{info['version']}"]
    proc = _start(served_settings, port, tmp_path / "bento.log", serve, BENTOML_HOME=str(tmp_path),
                  SALESML_MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'no-registry.db'}")
    try:
        lead = pd.read_parquet(served_settings.raw_dir / "leads.parquet", columns=["lead_id"])["lead_id"].iloc[-1]
        status, body = _post(port, "/intent", {"lead_ids": [lead]}, keys["admin"])
        assert status == 200, body
        assert body["results"][0]["model"] == {"name": "intent", "version": pinned["intent"], "variant": "champion"}
        acc = pd.read_parquet(served_settings.raw_dir / "accounts.parquet", columns=["account_id"])["account_id"][0]
        status, body = _post(port, "/health", {"account_ids": [acc]}, keys["admin"])
        assert status == 200 and body["results"][0]["model"]["version"] == pinned["chs"], body
        status, body = _post(port, "/match", {"lead_ids": [lead], "top": 1}, keys["admin"])
        assert status == 200 and body["results"][0]["model"]["version"] == pinned["lead_match"], body
    finally:
        _kill(proc)
    assert not (tmp_path / "no-registry.db").exists()  # the registry was never asked
