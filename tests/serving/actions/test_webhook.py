"""Webhook delivery against a real local HTTP receiver: every attempt logged, back-off, give-up, no webhook."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from salesml.settings import Settings
from serving.actions.warnings import WarningConfig, WarningStore
from serving.actions.webhook import NO_WEBHOOK, BackgroundDeliverer, deliver_pending

NOW = pd.Timestamp("2026-11-02 09:00", tz="UTC")


class Receiver:
    """A local HTTP server that answers ``fail_status`` to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503):
        self.fail_first, self.fail_status, self.received = fail_first, fail_status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((time.monotonic(), dict(self.headers), json.loads(body)))
                status = outer.fail_status if len(outer.received) <= outer.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request):
    r = Receiver(*getattr(request, "param", (0,)))
    yield r
    r.close()


@pytest.fixture
def store(tmp_path):
    s = WarningStore(tmp_path / "w.db", config=WarningConfig(holdout_share=0.0))
    yield s
    s.close()


def hook(tmp_path, url, attempts=4, backoff=0.05) -> Settings:
    return Settings(home=tmp_path, warning_webhook_url=url, warning_webhook_attempts=attempts,
                    warning_webhook_backoff=backoff)


def raise_some(store, n=1, now=NOW):
    rows = [dict(account_id=f"A{i}", as_of="2026-11-02", old_level="yellow", new_level="orange", score=41.0,
                 change_text="CHS fell 11 points") for i in range(n)]
    return [w["warning_id"] for w in store.raise_warnings(pd.DataFrame(rows), source="run", now=now)]


def test_each_warning_reaches_the_receiver_once(tmp_path, store, receiver):
    ids = raise_some(store, 3)
    sent = deliver_pending(store, hook(tmp_path, receiver.url))
    assert sent == {"delivered": 3, "failed": 0, "deferred": 0, "no_webhook": 0}
    got = {body["warning"]["warning_id"]: (headers, body) for _, headers, body in receiver.received}
    assert sorted(got) == sorted(ids) and len(receiver.received) == 3
    headers, body = got[ids[0]]
    assert body["event"] == "warning.raised" and body["warning"]["playbook"]["id"] == "csm-call"
    assert body["warning"]["change_text"] == "CHS fell 11 points" and "holdout" not in body["warning"]
    assert headers["X-Salesml-Event"] == "warning.raised"
    assert headers["X-Salesml-Delivery"] == f"warning.raised:{ids[0]}"  # the same on every attempt: receivers dedupe
    log = store.deliveries()
    assert list(log["attempt"]) == [1, 1, 1] and list(log["http_status"]) == [200] * 3 and log["delivered"].all()
    assert set(store.events()["status"]) == {"delivered"}
    assert deliver_pending(store, hook(tmp_path, receiver.url))["delivered"] == 0 and len(receiver.received) == 3


@pytest.mark.parametrize("receiver", [(2,)], indirect=True)
def test_a_flaky_receiver_gets_retries_with_exponential_back_off(tmp_path, store, receiver):
    [wid] = raise_some(store)
    assert deliver_pending(store, hook(tmp_path, receiver.url, backoff=0.2))["delivered"] == 1
    log = store.deliveries()
    assert list(log["attempt"]) == [1, 2, 3] and list(log["http_status"]) == [503, 503, 200]
    assert list(log["delivered"]) == [0, 0, 1] and log["error"][0].startswith("HTTP 503")
    assert (log["warning_id"] == wid).all() and (log["event"] == "warning.raised").all()
    times = [t for t, _, _ in receiver.received]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 0.2 <= gaps[0] < 0.2 + 1 and 0.4 <= gaps[1] < 0.4 + 1, gaps  # 0.2 s, then doubled
    assert store.events()["status"].tolist() == ["delivered"]


@pytest.mark.parametrize("receiver", [(10**6,)], indirect=True)
def test_a_receiver_that_always_fails_leaves_the_event_undelivered(tmp_path, store, receiver):
    raise_some(store)
    settings = hook(tmp_path, receiver.url, attempts=3, backoff=0.01)
    assert deliver_pending(store, settings) == {"delivered": 0, "failed": 1, "deferred": 0, "no_webhook": 0}
    log = store.deliveries()
    assert list(log["attempt"]) == [1, 2, 3] and not log["delivered"].any() and len(receiver.received) == 3
    assert store.events()["status"].tolist() == ["failed"]
    assert deliver_pending(store, settings)["failed"] == 0 and len(store.deliveries()) == 3  # not retried by itself
    assert deliver_pending(store, settings, retry_failed=True)["failed"] == 1
    assert list(store.deliveries()["attempt"]) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("receiver", [(1, 400)], indirect=True)
def test_a_refusal_is_not_retried(tmp_path, store, receiver):
    raise_some(store)
    assert deliver_pending(store, hook(tmp_path, receiver.url))["failed"] == 1
    assert store.deliveries()["http_status"].tolist() == [400] and len(receiver.received) == 1


def test_an_unreachable_receiver_logs_the_error_of_each_attempt(tmp_path, store):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raise_some(store)
    assert deliver_pending(store, hook(tmp_path, f"http://127.0.0.1:{port}/", attempts=2, backoff=0.01))["failed"] == 1
    log = store.deliveries()
    assert len(log) == 2 and log["http_status"].isna().all() and log["error"].str.startswith("ConnectError").all()


def test_no_webhook_keeps_events_in_the_inbox_and_says_so_once(tmp_path, store, receiver):
    ids = raise_some(store, 2)
    none = Settings(home=tmp_path, warning_webhook_url=None)
    assert deliver_pending(store, none) == {"delivered": 0, "failed": 0, "deferred": 0, "no_webhook": 2}
    assert deliver_pending(store, none)["no_webhook"] == 0
    log = store.deliveries()
    assert log["error"].tolist() == [NO_WEBHOOK] * 2 and sorted(log["warning_id"]) == sorted(ids)
    assert len(store.inbox()) == 2 and set(store.events()["status"]) == {"pending"}
    assert deliver_pending(store, hook(tmp_path, receiver.url))["delivered"] == 2  # configured later: delivered


def test_escalations_are_delivered_as_their_own_event(tmp_path, store, receiver):
    [wid] = raise_some(store)
    store.escalate(NOW + pd.Timedelta(hours=5))
    deliver_pending(store, hook(tmp_path, receiver.url))
    kinds = [(b["event"], b["warning"]["warning_id"], b["warning"]["status"]) for _, _, b in receiver.received]
    assert kinds == [("warning.raised", wid, "open"), ("warning.escalated", wid, "escalated")]


def test_the_background_deliverer_sends_without_the_caller_waiting(tmp_path, store, receiver):
    deliverer = BackgroundDeliverer(store, hook(tmp_path, receiver.url), poll_s=30, escalate=False).start()
    try:
        raise_some(store, 2)
        deliverer.notify()
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(receiver.received) == 2
    finally:
        deliverer.stop()
    assert not deliverer._thread.is_alive()


@pytest.mark.parametrize("receiver", [(10**6,)], indirect=True)
def test_stopping_during_back_off_is_prompt_and_releases_the_event(tmp_path, store, receiver):
    raise_some(store)
    deliverer = BackgroundDeliverer(store, hook(tmp_path, receiver.url, attempts=5, backoff=30), poll_s=30,
                                    escalate=False).start()
    deliverer.notify()
    deadline = time.monotonic() + 10
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    deliverer.stop()
    assert time.monotonic() - started < 5 and not deliverer._thread.is_alive()
    assert store.events()["status"].tolist() == ["pending"] and store.events()["claimed_at"].isna().all()


def test_the_background_deliverer_escalates_overdue_warnings(tmp_path, store, receiver):
    [wid] = raise_some(store, now=pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=5))
    deliverer = BackgroundDeliverer(store, hook(tmp_path, receiver.url), poll_s=30).start()
    try:
        deliverer.notify()
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        deliverer.stop()
    assert sorted(b["event"] for _, _, b in receiver.received) == ["warning.escalated", "warning.raised"]
    assert store.get(wid)["status"] == "escalated"
