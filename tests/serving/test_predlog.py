import json
import math
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.predlog import PredictionLog

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _rec(i: int, **kw) -> dict:
    r = dict(request_id=f"r{i}", ts=T0 + timedelta(seconds=i), role="analyst", api_key_id="k1",
             endpoint="/score_leads", entity_type="lead", entity_id=f"L{i}", model="lead_score", version="3",
             variant="champion", features={"emails_30d": float(i), "industry": "saas", "days_open": np.int64(i)},
             outputs={"p_convert": 0.5, "band": "warm"})
    r.update(kw)
    return r


@pytest.fixture
def log(tmp_path):
    with PredictionLog(tmp_path / "sub" / "pred.db") as lg:
        yield lg


def test_round_trip_predictions_and_feature_frame(log):
    recs = [_rec(0), _rec(1, variant="challenger", ts="2025-03-01T13:00:01+01:00"), _rec(2)]
    recs[2]["features"]["emails_30d"] = float("nan")
    assert log.append_predictions(recs) == 3

    df = log.predictions(model="lead_score")
    assert list(df["request_id"]) == ["r0", "r1", "r2"]
    assert str(df["ts"].dt.tz) == "UTC"
    assert df["ts"].iloc[0] == pd.Timestamp(T0)
    assert df["ts"].iloc[1] == pd.Timestamp("2025-03-01T12:00:01Z")  # offset converted to UTC
    assert df["features"].iloc[0] == {"emails_30d": 0.0, "industry": "saas", "days_open": 0}
    assert df["features"].iloc[2]["emails_30d"] is None
    assert df["outputs"].iloc[1] == {"p_convert": 0.5, "band": "warm"}
    assert list(log.predictions(variant="challenger")["request_id"]) == ["r1"]
    assert log.predictions(model="other").empty
    window = log.predictions(start="2025-03-01T12:00:01Z", end=T0 + timedelta(seconds=2))  # start <= ts < end
    assert list(window["request_id"]) == ["r1"]

    ff = log.feature_frame("lead_score")
    assert {"entity_id", "ts", "model", "version", "variant", "emails_30d", "industry", "days_open",
            "out_p_convert", "out_band"} <= set(ff.columns)
    assert ff["emails_30d"].dtype == float and math.isnan(ff["emails_30d"].iloc[2])
    assert ff["emails_30d"].iloc[1] == 1.0
    assert ff["days_open"].tolist() == [0, 1, 2]
    assert ff["out_p_convert"].tolist() == [0.5] * 3
    assert ff["variant"].tolist() == ["champion", "challenger", "champion"]
    assert str(ff["ts"].dt.tz) == "UTC"


@pytest.mark.parametrize("bad", [
    dict(outputs={"p": object()}),  # not JSON serialisable
    dict(outputs={"p": float("inf")}),  # only NaN means missing; inf is an error
    dict(ts="not a time"),
])
def test_bad_record_writes_nothing(log, bad):
    log.append_predictions([_rec(0)])
    batch = [_rec(1), _rec(2, **bad), _rec(3)]
    with pytest.raises((TypeError, ValueError)):
        log.append_predictions(batch)
    assert log.count("predictions") == 1


def test_missing_key_writes_nothing(log):
    rec = _rec(2)
    del rec["outputs"]
    with pytest.raises(KeyError):
        log.append_predictions([_rec(1), rec])
    assert log.count("predictions") == 0


def test_constraint_failure_mid_batch_rolls_back(log):
    # passes the Python checks but fails NOT NULL inside the transaction, after the first row was inserted
    with pytest.raises(Exception, match="NOT NULL"):
        log.append_predictions([_rec(1), _rec(2, role=None)])
    assert log.count("predictions") == 0
    assert log.append_predictions([_rec(3)]) == 1  # the connection is usable afterwards


def test_resent_outcome_is_counted_once(log):
    o = dict(entity_type="lead", entity_id="L1", outcome="converted", value=1, occurred_at="2025-03-05T00:00:00Z",
             source="crm", request_id="r1")
    log.append_outcomes([o])
    log.append_outcomes([o])
    log.append_outcomes([dict(o, entity_id="L2", source=None)])
    df = log.outcomes("lead")
    assert len(df) == 2 and log.count("outcomes") == 2
    assert df["occurred_at"].iloc[0] == pd.Timestamp("2025-03-05", tz="UTC")
    assert str(df["received_at"].dt.tz) == "UTC"
    assert log.outcomes("account").empty


def test_access_log(log):
    log.append_access(dict(ts=T0, request_id="r1", api_key_id="k1", role="analyst", endpoint="/score_leads",
                           entities=["L1", "L2"], status=200))
    log.append_access(dict(request_id="r2", api_key_id=None, role=None, endpoint="/score_leads", entities=[],
                           status=401, detail="bad key"))
    df = log.access()
    assert df["entities"].tolist() == [["L1", "L2"], []]
    assert df["status"].tolist() == [200, 401]
    assert str(df["ts"].dt.tz) == "UTC"
    assert len(log.access(start=T0, end=T0 + timedelta(seconds=1))) == 1
    with pytest.raises(ValueError):
        log.count("sqlite_master")


@pytest.mark.parametrize("shared", [True, False], ids=["one-connection", "connection-per-thread"])
def test_concurrent_appends(tmp_path, shared):
    path = tmp_path / "pred.db"
    main = PredictionLog(path)
    errors = []

    def work(t):
        lg = main if shared else PredictionLog(path)
        try:
            for i in range(50):
                lg.append_predictions([_rec(t * 1000 + i)])
        except Exception as e:  # surfaced below; a thread's exception is otherwise lost
            errors.append(e)
        finally:
            if not shared:
                lg.close()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert main.count("predictions") == 400
    assert main.predictions()["request_id"].nunique() == 400
    assert main.integrity_ok()
    main.close()


CHILD = """
import sys, threading, time
from serving.predlog import PredictionLog

log = PredictionLog(sys.argv[1])
out = threading.Lock()
stop = time.monotonic() + 30  # safety net if the parent never kills us

def rec(rid):
    return dict(request_id=rid, ts="2025-03-01T00:00:00Z", role="r", api_key_id=None, endpoint="/e",
                entity_type="lead", entity_id=rid, model="m", version="1", variant="direct",
                features={f"x{k}": k * 0.5 for k in range(40)} | {"blob": "y" * 2000}, outputs={"p": 0.25})

def work(t):
    i = 0
    while time.monotonic() < stop:
        ids = [f"t{t}-{i}-{j}" for j in range(10 if i % 5 == 0 else 1)]
        log.append_predictions([rec(r) for r in ids])
        with out:
            sys.stdout.write("".join(r + "\\n" for r in ids))
            sys.stdout.flush()
        i += 1

for t in range(4):
    threading.Thread(target=work, args=(t,), daemon=True).start()
time.sleep(31)
"""


def test_acknowledged_writes_survive_sigkill(tmp_path):
    path = tmp_path / "crash.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acked = set()
    deadline = time.monotonic() + 20
    try:
        while len(acked) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.endswith("\n"):
                acked.add(line.strip())
    finally:
        proc.kill()
        proc.wait()
    assert len(acked) >= 300, f"child acknowledged {len(acked)} ids; stderr:\n{proc.stderr.read()}"
    proc.stdout.close()
    proc.stderr.close()

    with PredictionLog(path) as log:
        assert log.integrity_ok()
        ids = set(log.predictions()["request_id"])
        assert acked <= ids, f"{len(acked - ids)} acknowledged ids lost"
        with log._lock:  # raw text, to check no half-written JSON slipped through
            rows = log._con.execute("SELECT features, outputs FROM predictions").fetchall()
    for f, o in rows:
        assert len(json.loads(f)) == 41 and json.loads(o) == {"p": 0.25}
