"""Delivery of warning events (``warning.raised``, ``warning.escalated``) to ``warning_webhook_url``.

Events wait in the store's outbox (``events``), written in the same transaction as the warning
they announce, so a crash between raising and delivering loses nothing. ``deliver_pending``
POSTs each pending event as JSON, retrying with exponential back-off (``warning_webhook_attempts``
attempts; ``warning_webhook_backoff`` seconds before the second, doubling after each failure).
Every attempt is logged in ``deliveries`` (attempt number, time, HTTP status or error text,
delivered or not). Delivery is at least once: a receiver de-duplicates on the
``X-Salesml-Delivery`` header (the event id, the same on every attempt).

Retried: connection errors, timeouts, 5xx, 408 and 429. Any other 4xx fails the event at once
(the receiver refuses the request; sending it again will not help), logged like any attempt.
An event whose attempts are all spent is ``failed``; ``deliver_pending(retry_failed=True)``
(``salesml warnings deliver --retry-failed``) tries it again.

No webhook configured: events stay pending (a webhook configured later still receives them),
they are in the inbox either way, and the delivery log says "no webhook configured" once per
event. That is not an error.

``BackgroundDeliverer`` runs the same in a thread fed by a queue: the service calls ``notify()``
after raising, and a request never waits on the receiver. It also escalates overdue warnings
on each wake-up (at least every ``poll_s``), so escalation needs no separate scheduler.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from serving.predlog import now_utc

if TYPE_CHECKING:
    from salesml.settings import Settings

NO_WEBHOOK = "no webhook configured"
TIMEOUT_S = 10.0  # per attempt: a receiver slower than this is retried like one that is down
RETRY_STATUS = frozenset({408, 429})
log = logging.getLogger(__name__)


class _Failed(Exception):
    """One attempt that did not deliver; ``retry`` says whether another attempt may help."""

    def __init__(self, detail: str, retry: bool, status: int | None = None):
        super().__init__(detail)
        self.retry, self.status = retry, status


class _Stopped(Exception):
    """The deliverer is shutting down during a back-off wait."""


def lease_s(attempts: int, backoff: float, timeout_s: float = TIMEOUT_S) -> float:
    """Longest time one event's delivery can take (timeouts plus waits), with a margin: a claim older
    than this belongs to a deliverer that died."""
    waits = backoff * (2 ** (attempts - 1) - 1)
    return 2 * (attempts * timeout_s + waits) + 60


def _post(client: httpx.Client, url: str, event: dict) -> int:
    """One attempt: the HTTP status of a delivery; raises _Failed when not delivered."""
    headers = {"Content-Type": "application/json", "X-Salesml-Event": event["event"],
               "X-Salesml-Delivery": event["event_id"]}
    try:
        r = client.post(url, content=event["payload"].encode(), headers=headers)
    except httpx.HTTPError as exc:
        text = str(exc)
        raise _Failed(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, retry=True) from None
    if 200 <= r.status_code < 300:
        return r.status_code
    detail = f"HTTP {r.status_code}: {r.text[:200]}".strip().rstrip(":")
    raise _Failed(detail, retry=r.status_code >= 500 or r.status_code in RETRY_STATUS, status=r.status_code)


def deliver_event(store, event: dict, url: str, *, attempts: int, backoff: float, client: httpx.Client,
                  sleep: Callable[[float], None] = time.sleep) -> bool:
    """Deliver one claimed event with retries; logs every attempt; returns whether it was delivered."""
    first = store.attempts_made(event["event_id"]) + 1  # attempts continue their numbering on a retry
    counter = iter(range(first, first + attempts))

    def attempt() -> None:
        n, at = next(counter), now_utc()
        try:
            status = _post(client, url, event)
        except _Failed as exc:
            store.log_delivery(event, n, at, url, exc.status, str(exc), False)
            raise
        store.log_delivery(event, n, at, url, status, None, True)

    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=backoff),
                        retry=retry_if_exception(lambda e: isinstance(e, _Failed) and e.retry),
                        sleep=sleep, reraise=True)
    try:
        retrying(attempt)
    except _Failed:
        store.finish_event(event["event_id"], "failed")
        return False
    except _Stopped:
        store.finish_event(event["event_id"], "pending")  # released: the next deliverer carries on
        raise
    store.finish_event(event["event_id"], "delivered", now_utc())
    return True


def deliver_pending(store, settings: Settings, *, retry_failed: bool = False, client: httpx.Client | None = None,
                    sleep: Callable[[float], None] = time.sleep, stop: threading.Event | None = None) -> dict[str, int]:
    """Deliver every pending event (and failed ones with ``retry_failed``); returns counts by outcome."""
    url = settings.warning_webhook_url
    if not url:
        return {"delivered": 0, "failed": 0, "no_webhook": store.note_undeliverable(NO_WEBHOOK, now_utc())}
    if retry_failed:
        store.requeue_failed()
    attempts, backoff = settings.warning_webhook_attempts, settings.warning_webhook_backoff
    counts = {"delivered": 0, "failed": 0, "no_webhook": 0}
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT_S)
    try:
        while stop is None or not stop.is_set():
            event = store.claim_event(now_utc(), lease_s(attempts, backoff))
            if event is None:
                break
            ok = deliver_event(store, event, url, attempts=attempts, backoff=backoff, client=client, sleep=sleep)
            counts["delivered" if ok else "failed"] += 1
    finally:
        if own:
            client.close()
    return counts


class BackgroundDeliverer:
    """A thread that delivers (and escalates) whenever notified, and at least every ``poll_s``."""

    def __init__(self, store, settings: Settings, *, poll_s: float = 60.0, escalate: bool = True):
        self.store, self.settings, self.poll_s, self.escalate = store, settings, poll_s, escalate
        self._wake: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warning-webhook", daemon=True)

    def start(self) -> BackgroundDeliverer:
        self._thread.start()
        return self

    def notify(self) -> None:
        """Something was raised: deliver it soon. Never blocks."""
        self._wake.put_nowait(True)

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.put_nowait(None)
        self._thread.join(timeout)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._wake.get(timeout=self.poll_s)
            except queue.Empty:
                pass
            while not self._wake.empty():  # one pass serves every notification queued meanwhile
                self._wake.get_nowait()
            if self._stop.is_set():
                break
            try:
                if self.escalate:
                    self.store.escalate()
                deliver_pending(self.store, self.settings, sleep=self._sleep, stop=self._stop)
            except _Stopped:
                break
            except Exception:  # a bad pass must not end the thread: the next wake-up tries again
                log.exception("warning delivery pass failed")
