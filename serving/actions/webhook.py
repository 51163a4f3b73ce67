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

Concurrency: ``CONCURRENCY`` (4) events are delivered at once, each by its own worker claiming
from the outbox, so a receiver that hangs on one event (each attempt costs ``TIMEOUT_S``) no longer
holds back the events behind it. The events of one warning still go out in order: an event is
claimed only when no earlier event of its warning is pending.

Circuit breaker (``Breaker``, one per receiver URL): after ``BREAKER_FAILURES`` (5) failed
attempts in a row at that receiver (timeouts, connection errors, 5xx, 408, 429; an answered
refusal or a delivery resets the count), it is left alone for ``BREAKER_COOLDOWN_S`` (60 s): the
attempt under way ends, the events stay pending with the attempts they used (a "circuit open"
row in the delivery log; their attempts are not spent), and nothing more is sent to it until the
cool-down has passed. Then one event probes it: delivered, the breaker closes and the outbox
drains; failed, another cool-down. Nothing is lost: a pending event waits for the receiver,
whatever the breaker does. ``BackgroundDeliverer`` keeps its breaker from one pass to the next;
``salesml warnings deliver`` starts with a closed one.

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
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from serving.predlog import now_utc

if TYPE_CHECKING:
    from salesml.settings import Settings

NO_WEBHOOK = "no webhook configured"
TIMEOUT_S = 10.0  # per attempt: a receiver slower than this is retried like one that is down
RETRY_STATUS = frozenset({408, 429})
CONCURRENCY = 4  # events delivered at once
BREAKER_FAILURES = 5  # failed attempts in a row at one receiver before it is left alone ...
BREAKER_COOLDOWN_S = 60.0  # ... for this long
log = logging.getLogger(__name__)


class Breaker:
    """A receiver's circuit breaker (see the module docstring); thread-safe."""

    def __init__(self, failures: int = BREAKER_FAILURES, cooldown_s: float = BREAKER_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic):
        if failures < 1 or cooldown_s < 0:
            raise ValueError("a breaker needs failures >= 1 and cooldown_s >= 0")
        self.failures, self.cooldown_s, self._clock = failures, cooldown_s, clock
        self._lock = threading.Lock()
        self._streak = 0
        self._open_until: float | None = None
        self._probe = False  # one attempt is testing the receiver after a cool-down

    def allow(self) -> bool:
        """Whether an attempt may go to the receiver now (after a cool-down: one probe at a time)."""
        with self._lock:
            if self._open_until is None:
                return True
            if self._probe or self._clock() < self._open_until:
                return False
            self._probe = True
            return True

    def allow_claim(self) -> bool:
        """Whether to take another event from the outbox: not while the receiver is left alone, nor
        while a probe is testing it (``allow`` grants the probe itself)."""
        with self._lock:
            return self._open_until is None or (not self._probe and self._clock() >= self._open_until)

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def record(self, ok: bool) -> None:
        """An attempt's outcome: ``ok`` the receiver answered (delivered or refused), else it failed."""
        with self._lock:
            self._probe = False
            if ok:
                self._streak, self._open_until = 0, None
                return
            self._streak += 1
            if self._streak >= self.failures:
                self._open_until = self._clock() + self.cooldown_s

    def note(self) -> str:
        return (f"circuit open: {self._streak} failed attempts in a row at this receiver; left alone for "
                f"{self.cooldown_s:g} s, the event stays pending")


class _Deferred(Exception):
    """The receiver's breaker is open: the event goes back to pending, its attempts not spent."""


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
                  sleep: Callable[[float], None] = time.sleep, breaker: Breaker | None = None) -> bool | None:
    """Deliver one claimed event with retries; logs every attempt; returns whether it was delivered,
    or None when the receiver's breaker opened (the event is pending again, its attempts not spent)."""
    breaker = breaker or Breaker()
    made = store.attempts_made(event["event_id"])
    first = made + 1  # attempts continue their numbering on a retry
    counter = iter(range(first, first + attempts))
    tried = [made]

    def attempt() -> None:
        if not breaker.allow():
            raise _Deferred()
        n, at = next(counter), now_utc()
        tried[0] = n
        try:
            status = _post(client, url, event)
        except _Failed as exc:
            breaker.record(not exc.retry)
            store.log_delivery(event, n, at, url, exc.status, str(exc), False)
            raise
        breaker.record(True)
        store.log_delivery(event, n, at, url, status, None, True)

    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=backoff),
                        retry=retry_if_exception(lambda e: isinstance(e, _Failed) and e.retry and not breaker.is_open),
                        sleep=sleep, reraise=True)
    try:
        retrying(attempt)
    except _Failed as exc:
        if exc.retry and breaker.is_open and tried[0] < made + attempts:  # stopped by the breaker, not spent
            _defer(store, event, url, breaker, tried[0])
            return None
        store.finish_event(event["event_id"], "failed")
        return False
    except _Deferred:
        _defer(store, event, url, breaker, tried[0])
        return None
    except _Stopped:
        store.finish_event(event["event_id"], "pending")  # released: the next deliverer carries on
        raise
    store.finish_event(event["event_id"], "delivered", now_utc())
    return True


def _defer(store, event: dict, url: str, breaker: Breaker, attempt: int) -> None:
    """Back to pending with a "circuit open" row (numbered as the last attempt made, so none is spent)."""
    store.log_delivery(event, attempt, now_utc(), url, None, breaker.note(), False)
    store.finish_event(event["event_id"], "pending")


def deliver_pending(store, settings: Settings, *, retry_failed: bool = False, client: httpx.Client | None = None,
                    sleep: Callable[[float], None] = time.sleep, stop: threading.Event | None = None,
                    concurrency: int = CONCURRENCY, breaker: Breaker | None = None) -> dict[str, int]:
    """Deliver every pending event (and failed ones with ``retry_failed``), ``concurrency`` at once;
    returns counts by outcome (``deferred``: left pending because the receiver's breaker opened)."""
    url = settings.warning_webhook_url
    if not url:
        return {"delivered": 0, "failed": 0, "deferred": 0,
                "no_webhook": store.note_undeliverable(NO_WEBHOOK, now_utc())}
    if retry_failed:
        store.requeue_failed()
    attempts, backoff = settings.warning_webhook_attempts, settings.warning_webhook_backoff
    breaker = breaker or Breaker()
    counts = {"delivered": 0, "failed": 0, "deferred": 0, "no_webhook": 0}
    lock = threading.Lock()
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT_S)

    def worker() -> None:
        while (stop is None or not stop.is_set()) and breaker.allow_claim():
            event = store.claim_event(now_utc(), lease_s(attempts, backoff, _timeout_of(http)))
            if event is None:
                return
            ok = deliver_event(store, event, url, attempts=attempts, backoff=backoff, client=http, sleep=sleep,
                               breaker=breaker)
            with lock:
                counts["deferred" if ok is None else "delivered" if ok else "failed"] += 1

    try:
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="warning-webhook") as pool:
            for f in [pool.submit(worker) for _ in range(max(1, concurrency))]:
                f.result()  # a worker's error (or _Stopped) reaches the caller
    finally:
        if own:
            http.close()
    return counts


def _timeout_of(client: httpx.Client) -> float:
    """The longest a single attempt of ``client`` may take (its read timeout), for the claim lease."""
    read = client.timeout.read
    return TIMEOUT_S if read is None else max(float(read), 1.0)


class BackgroundDeliverer:
    """A thread that delivers (and escalates) whenever notified, and at least every ``poll_s``."""

    def __init__(self, store, settings: Settings, *, poll_s: float = 60.0, escalate: bool = True):
        self.store, self.settings, self.poll_s, self.escalate = store, settings, poll_s, escalate
        self._wake: queue.Queue = queue.Queue()
        self.breaker = Breaker()  # kept from one pass to the next: a dead receiver waits out its cool-down
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
                deliver_pending(self.store, self.settings, sleep=self._sleep, stop=self._stop, breaker=self.breaker)
            except _Stopped:
                break
            except Exception:  # a bad pass must not end the thread: the next wake-up tries again
                log.exception("warning delivery pass failed")
