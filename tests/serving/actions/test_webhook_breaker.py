"""The outbox against a real local receiver that hangs (issue 22 item 9): events go out several at
once, so a black-holed event no longer holds back a new warning; a per-receiver circuit breaker
stops hammering a dead receiver, and its events stay pending, none lost, until it answers again."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pandas as pd
import pytest

from salesml.settings import Settings
from serving.actions.warnings import WarningConfig, WarningStore
from serving.actions.webhook import Breaker, deliver_pending

NOW = pd.Timestamp("2026-11-02 09:00", tz="UTC")
TIMEOUT = 0.3  # the client's per-attempt timeout here (10 s in service)


class HangingReceiver:
    """Answers 200, except that it holds (never answers) requests for the accounts in ``hang``, or
    every request while ``hang_all`` is set."""

    def __init__(self):
        self.hang: set[str] = set()
        self.hang_all = threading.Event()
        self.closing = threading.Event()
        self.received: list[tuple[float, str]] = []
        self.events: list[tuple[str, str]] = []  # (account, event), in arrival order
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                account = body["warning"]["account_id"]
                outer.received.append((time.monotonic(), account))
                outer.events.append((account, body["event"]))
                if outer.hang_all.is_set() or account in outer.hang:
                    outer.closing.wait(10)  # a black hole: the client times out first
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = HangingReceiver()
    yield r
    r.close()


@pytest.fixture
def store(tmp_path):
    with WarningStore(tmp_path / "w.db", config=WarningConfig(holdout_share=0.0)) as s:
        yield s


def _raise(store, accounts, now):
    rows = [dict(account_id=a, as_of="2026-11-02", old_level="yellow", new_level="orange", score=41.0)
            for a in accounts]
    return [w["warning_id"] for w in store.raise_warnings(pd.DataFrame(rows), source="run", now=now)]


def _settings(tmp_path, url, attempts):
    return Settings(home=tmp_path, warning_webhook_url=url, warning_webhook_attempts=attempts,
                    warning_webhook_backoff=0.01)


def test_a_black_holed_event_does_not_hold_back_a_new_warning(tmp_path, store, receiver):
    receiver.hang = {"H0", "H1", "H2"}
    _raise(store, ["H0", "H1", "H2"], NOW)
    _raise(store, ["NEW"], NOW + pd.Timedelta(minutes=1))  # raised after them: the last in the outbox
    t0 = time.monotonic()
    with httpx.Client(timeout=TIMEOUT) as client:
        counts = deliver_pending(store, _settings(tmp_path, receiver.url, attempts=2), client=client,
                                 breaker=Breaker(failures=100))
    new_at = next(t for t, a in receiver.received if a == "NEW")
    # one at a time, NEW waited 3 events x 2 attempts x 0.3 s (65 s each with the service's 10 s timeout)
    assert new_at - t0 < 4 * TIMEOUT, new_at - t0  # one at a time: >= 1.83 s
    assert counts == {"delivered": 1, "failed": 3, "deferred": 0, "no_webhook": 0}
    assert sorted(store.events()["status"]) == ["delivered", "failed", "failed", "failed"]


def test_a_dead_receiver_opens_the_breaker_its_events_stay_pending_and_go_out_when_it_answers(
        tmp_path, store, receiver):
    ids = _raise(store, [f"A{i}" for i in range(10)], NOW)
    receiver.hang_all.set()
    breaker = Breaker(failures=3, cooldown_s=0.6)
    settings = _settings(tmp_path, receiver.url, attempts=3)
    with httpx.Client(timeout=TIMEOUT) as client:
        t0 = time.monotonic()
        counts = deliver_pending(store, settings, client=client, breaker=breaker)
        took = time.monotonic() - t0
        # 10 events x 3 attempts x 0.3 s = 9 s one at a time; the breaker opens after 3 failures
        assert took < 3.0, took
        assert counts["delivered"] == 0 and counts["failed"] == 0 and counts["deferred"] >= 1
        assert len(receiver.received) <= 3 + 3  # the breaker's 3, and at most the other workers' attempts under way
        events = store.events()
        assert set(events["status"]) == {"pending"} and events["claimed_at"].isna().all()
        log = store.deliveries()
        assert log["error"].str.startswith("circuit open").any() and not log["delivered"].any()
        sent = len(receiver.received)
        assert deliver_pending(store, settings, client=client, breaker=breaker)["deferred"] == 0  # cooling down
        assert len(receiver.received) == sent  # nothing sent while it cools down

        receiver.hang_all.clear()  # the receiver is back
        time.sleep(0.7)
        counts = deliver_pending(store, settings, client=client, breaker=breaker)
    assert counts["delivered"] == 10 and counts["failed"] == 0
    assert set(store.events()["status"]) == {"delivered"}
    delivered = {a for _, a in receiver.received[sent:]}
    assert delivered == {f"A{i}" for i in range(10)}
    attempts = store.deliveries().groupby("event_id")["attempt"].max()
    assert (attempts <= 3).all() and len(attempts) == len(ids)  # no event spent more than its attempts


def test_the_events_of_one_warning_go_out_in_order(tmp_path, store, receiver):
    [wid] = _raise(store, ["E1"], pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=5))
    store.escalate()
    _raise(store, [f"B{i}" for i in range(6)], pd.Timestamp.now(tz="UTC"))
    with httpx.Client(timeout=TIMEOUT) as client:
        first = store.claim_event(pd.Timestamp.now(tz="UTC"), 60)
        assert first["event"] == "warning.raised" and first["warning_id"] == wid
        claimed = [store.claim_event(pd.Timestamp.now(tz="UTC"), 60) for _ in range(6)]
        # the escalation waits while its warning's raised event is pending, however many deliverers claim
        assert all(c["warning_id"] != wid for c in claimed)
        for c in [first, *claimed]:
            store.finish_event(c["event_id"], "pending")
        deliver_pending(store, _settings(tmp_path, receiver.url, attempts=1), client=client)
    assert [e for a, e in receiver.events if a == "E1"] == ["warning.raised", "warning.escalated"]
    assert set(store.events()["status"]) == {"delivered"}
