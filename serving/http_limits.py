"""Resource bounds for the HTTP server that BentoML runs in each worker process.

BentoML's worker (``_bentoml_impl/worker/service.py``) builds ``uvicorn.Config(...)`` itself and passes no
option that reaches uvicorn's ``limit_concurrency``, and uvicorn's HTTP protocols arm no timer before the
first request: a client that connects and sends nothing, or sends half its headers and pauses, holds a
socket (and a file descriptor) for ever. This module closes those holes:

* a **header read timeout**: a new connection must deliver complete request headers within
  ``header_timeout`` seconds of being accepted; a keep-alive connection, once the first byte of its next
  request arrives, likewise. Data trickling in does not extend the deadline. Idle keep-alive connections
  keep uvicorn's own ``timeout_keep_alive`` behaviour (our timer is armed by the first byte, which is
  exactly when uvicorn cancels its keep-alive timer and stops bounding the connection);
* a **total body deadline**: once a request's headers are complete, its whole body must arrive within
  ``body_deadline`` seconds, however it trickles (the key gate, ``serving.gate``, answers ``408`` with an
  access row at that deadline; this protocol closes the connection ``BODY_GRACE_S`` later, for any path,
  should nothing have answered);
* a **connection cap** with **per-client fairness**: at most ``max_connections`` open HTTP connections
  per worker process (per ``uvicorn.Server``), and at most ``max_client_connections`` of them from one
  peer address. A connection over either cap does not simply bounce: the server first closes an *idle*
  connection to make room, choosing it from the peer holding the most connections (for the per-client
  cap, the newcomer's own peer), a connection that never sent a byte before a keep-alive connection
  between requests (idle at least ``IDLE_GRACE_S``), the longest idle first. Only when every candidate is
  busy (a request being read or answered) is the newcomer answered ``503`` and closed. So one client's
  idle or half-open sockets can never lock others out, and a client that keeps calling on its keep-alive
  connections keeps them. The peer is the TCP peer address: behind a reverse proxy every client is the proxy (raise
  ``max_client_connections`` to ``max_connections`` there and let the proxy bound its clients);
* a **half-closed client** (it sends a complete request, then shuts its write side) still gets its answer,
  and the connection is closed after it; uvicorn alone closes at the client's FIN and drops the answer.

:func:`install` is called inside the worker process, after BentoML has loaded the service module and
before it builds its ``uvicorn.Config``; it replaces the module attribute ``uvicorn.Config`` (which the
worker looks up at call time) with a thin subclass that forces the protocol below and stores the limits
on the config. Importing this module changes nothing.

Only uvicorn's httptools protocol is covered (``http="auto"`` resolves to it whenever httptools is
installed, as it is here); the patched Config forces it even if ``http="h11"`` was asked for.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BODY_DEADLINE_S", "MAX_CLIENT_CONNECTIONS", "LimitedHttpToolsProtocol", "Limits", "body_deadline",
           "install", "installed_limits", "uninstall"]

logger = logging.getLogger("uvicorn.error")

# How long a refused connection stays half-closed (our FIN sent, still reading) so that the client's
# request bytes are absorbed instead of provoking a TCP RST that could destroy the 503 before it is read.
REFUSED_LINGER_S = 0.5
# Defaults of install(): open connections one peer address may hold per worker process (a quarter of the
# service's default 256), and seconds from a request's headers to the end of its body, however it trickles
# (a 1 MB body, the largest accepted, at 50 kB/s takes 20 s).
MAX_CLIENT_CONNECTIONS = 64
BODY_DEADLINE_S = 30.0
# The protocol's own body deadline comes this much after the gate's, which answers 408 with an access row.
BODY_GRACE_S = 1.0
# A keep-alive connection idle for less than this is not closed to make room: a client calling back to back
# would otherwise find its connection closed as it sends (a connection that never sent a byte has no grace).
IDLE_GRACE_S = 0.5

_MARKER = "_salesml_http_limits"


def _json_response(status: int, reason: bytes, payload: dict[str, Any], default_headers) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        b"\r\n",
    ]
    return b"".join(head) + body


class _ThrottledWarning:
    """One log line per ``every`` seconds per kind, with the count of the events it stood for."""

    def __init__(self, message: str, every: float = 10.0) -> None:
        self.message = message
        self.every = every
        self.count = 0
        self.last = -math.inf

    def __call__(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            logger.warning("%s (%d since last report)", self.message, self.count)
            self.count = 0
            self.last = now


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a header read timeout, a total body deadline, and a per-process
    connection cap that closes the busiest peer's idle connections before it refuses anyone.

    Limits are read from the config: ``config.header_timeout`` (seconds, or None for no timeout),
    ``config.body_deadline`` (seconds, or None), ``config.max_connections`` and
    ``config.max_client_connections`` (or None for no cap); a plain ``uvicorn.Config`` has none of them,
    and then this class behaves like ``HttpToolsProtocol`` (a half-closed client still gets its answer).
    """

    _warn_refused = _ThrottledWarning("refused HTTP connections with 503 (every connection of the peer or "
                                      "of the worker busy)")
    _warn_evicted = _ThrottledWarning("closed idle HTTP connections of the peer holding the most, to admit "
                                      "new ones")
    _warn_timeout = _ThrottledWarning("closed HTTP connections that did not send request headers in time")
    _warn_body = _ThrottledWarning("closed HTTP connections whose request body did not arrive in time")

    def __init__(self, config, server_state, app_state, _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout: float | None = getattr(config, "header_timeout", None)
        self.body_deadline: float | None = getattr(config, "body_deadline", None)
        self.max_connections: int | None = getattr(config, "max_connections", None)
        self.max_client_connections: int | None = getattr(config, "max_client_connections", None)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._bytes_since_armed = False
        self._in_headers = False  # parser between on_message_begin and on_headers_complete
        self._in_body = False  # parser between on_headers_complete and on_message_complete
        self._refused = False
        self._peer: str | None = None  # the client's address (no port): the unit of per-client fairness
        self._received_any = False  # a byte ever arrived on this connection
        self._idle_since = time.monotonic()  # accepted, or its last response completed
        self._peer_eof = False  # the client shut its write side after a complete request

    # -- the header timer ------------------------------------------------------------------------------

    def _response_done(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        if self.header_timeout is None or self._header_timer is not None:
            return
        self._bytes_since_armed = False
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_handler)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_handler(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if not self._response_done():  # cannot happen (a cycle starts only after headers); never cut a response
            return
        self._warn_timeout()
        if self._bytes_since_armed:
            # a request was begun: tell the client why; a silent connection is just closed
            self.transport.write(
                _json_response(
                    408,
                    b"Request Timeout",
                    {"error": "request headers not received in time", "field": None},
                    self.server_state.default_headers,
                )
            )
        self.transport.close()

    # -- the body deadline -----------------------------------------------------------------------------

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_deadline_handler(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        self._warn_body()
        if self.cycle is not None and not self.cycle.response_started:
            assert self.body_deadline is not None
            self.transport.write(
                _json_response(
                    408,
                    b"Request Timeout",
                    {"error": f"the whole body must arrive within {self.body_deadline:g} s of the headers",
                     "field": None},
                    self.server_state.default_headers,
                )
            )
        # else the app answered already (without reading the whole body) or is answering: nothing more
        # can be said on this connection, whose request never ends
        self.transport.close()

    # -- fairness between clients ----------------------------------------------------------------------

    def _idle_rank(self) -> tuple[int, float] | None:
        """How willingly this connection is closed to admit another: None while it is busy (a request being
        read or answered, or already closing); (0, since) for one that never sent a byte, (1, since) for a
        keep-alive connection idle at least IDLE_GRACE_S; the older ``since``, the sooner."""
        if self._refused or self.transport is None or self.transport.is_closing():
            return None
        if not self._received_any:
            return (0, self._idle_since)
        if (self._in_headers or self._in_body or self._header_timer is not None or self.pipeline
                or not self._response_done() or time.monotonic() - self._idle_since < IDLE_GRACE_S):
            return None
        return (1, self._idle_since)

    def _make_room(self) -> bool:
        """Whether this new connection may be served: within both caps, or after closing one idle connection
        (the newcomer's peer's over the per-client cap; the peer holding the most over the total cap)."""
        if self.max_connections is None and self.max_client_connections is None:
            return True
        live = [c for c in self.connections
                if isinstance(c, LimitedHttpToolsProtocol) and not c.transport.is_closing()]
        if self.max_client_connections is not None:
            own = [c for c in live if c._peer == self._peer]
            if len(own) >= self.max_client_connections:
                return self._evict(own)
        if self.max_connections is not None and len(live) >= self.max_connections:
            by_peer: dict[str | None, list[LimitedHttpToolsProtocol]] = {}
            for c in live:
                by_peer.setdefault(c._peer, []).append(c)
            for group in sorted(by_peer.values(), key=len, reverse=True):
                if self._evict(group):
                    return True
            return False
        return True

    def _evict(self, candidates: list[LimitedHttpToolsProtocol]) -> bool:
        ranked = [(rank, c) for c in candidates if (rank := c._idle_rank()) is not None]
        if not ranked:
            return False
        victim = min(ranked, key=lambda rc: rc[0])[1]
        self._warn_evicted()
        victim.transport.close()  # as uvicorn's keep-alive timeout closes it; it never sent a request
        return True

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self.transport = transport
        if not self._make_room():
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def _refuse(self, transport: asyncio.Transport) -> None:
        # Not added to server_state.connections: it is not a connection uvicorn serves or shuts down.
        self._refused = True
        self.transport = transport
        self.flow = FlowControl(transport)
        self._warn_refused()
        transport.write(
            _json_response(
                503,
                b"Service Unavailable",
                {"error": "too many connections", "field": None},
                self.server_state.default_headers,
            )
        )
        if transport.can_write_eof():  # plain TCP: FIN after the 503, keep reading briefly, then close
            transport.write_eof()
            self._linger_timer = self.loop.call_later(REFUSED_LINGER_S, transport.close)
        else:  # TLS: close() still flushes the 503 first
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # discard whatever the refused client sends
        if self._header_timer is None and not self._in_body and self._response_done():
            # First byte of the next request on a keep-alive connection: uvicorn's data_received is about to
            # cancel its keep-alive timer, so from here on the headers must arrive within header_timeout.
            self._arm_header_timer()
        if data:
            self._bytes_since_armed = True
            self._received_any = True
        super().data_received(data)

    # uvicorn declares ``-> None``; asyncio's protocol returns "keep the transport open for writing"
    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._refused:
            return None  # let the transport close now that the client is done
        if (self.cycle is not None and not self.cycle.response_complete and not self._in_headers
                and not self._in_body and not self.pipeline):
            # A complete request is being answered and the client shut its write side (a half-close):
            # answer it, then close (on_response_complete). A request cut short can never complete.
            self._peer_eof = True
            return True
        return None  # the transport closes; an unfinished request's app sees http.disconnect

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._refused:
            self.transport.close()
            return
        super().shutdown()

    # -- parser callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_headers = True
        if self._response_done():  # e.g. the tail of a body after an early response, then a new request
            self._arm_header_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._in_headers = False
        self._in_body = True
        if self.body_deadline is not None:
            self._cancel_body_timer()
            self._body_timer = self.loop.call_later(self.body_deadline + BODY_GRACE_S,
                                                    self._body_deadline_handler)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        if self._peer_eof:  # the client sent its last byte long ago: nothing more can come
            self.server_state.total_requests += 1
            self.transport.close()
            return
        super().on_response_complete()
        # A pipelined request whose headers were still incomplete while the previous response was being
        # produced: its header deadline starts now.
        if self._in_headers and not self.transport.is_closing():
            self._arm_header_timer()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_header_timer()  # the transport moves to the websocket protocol; our connection_lost won't run
        self._cancel_body_timer()
        super().handle_websocket_upgrade()


# -- installation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    max_connections: int
    keep_alive: float | None = None
    max_client_connections: int | None = MAX_CLIENT_CONNECTIONS
    body_deadline: float | None = BODY_DEADLINE_S


_limits: Limits | None = None
_base: type[uvicorn.Config] | None = None  # the uvicorn.Config that install() replaced


def installed_limits() -> Limits | None:
    """The limits the patched ``uvicorn.Config`` applies, or None when :func:`install` has not run."""
    return _limits if getattr(uvicorn.Config, _MARKER, False) else None


def body_deadline() -> float:
    """Seconds a request's whole body has after its headers: the installed limit, else the default (the
    key gate answers 408 at this deadline; the protocol closes the connection ``BODY_GRACE_S`` later)."""
    limits = installed_limits()
    if limits is not None and limits.body_deadline is not None:
        return limits.body_deadline
    return BODY_DEADLINE_S


def _make_config_class(base: type[uvicorn.Config]) -> type[uvicorn.Config]:
    signature = inspect.signature(base)

    class LimitedConfig(base):  # type: ignore[valid-type, misc]
        """``uvicorn.Config`` that serves with :class:`LimitedHttpToolsProtocol` and the installed limits."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            limits = _limits
            assert limits is not None
            bound = signature.bind(*args, **kwargs)
            http = bound.arguments.get("http", "auto")
            if not (isinstance(http, type) and issubclass(http, LimitedHttpToolsProtocol)):
                if http not in ("auto", "httptools"):
                    logger.warning("http=%r replaced by %s (serving.http_limits)", http,
                                   LimitedHttpToolsProtocol.__name__)
                bound.arguments["http"] = LimitedHttpToolsProtocol
            if bound.arguments.get("http2"):
                logger.warning("http2=True: uvicorn then ignores `http`, so serving.http_limits does not apply")
            if limits.keep_alive is not None:
                bound.arguments["timeout_keep_alive"] = limits.keep_alive
            super().__init__(*bound.args, **bound.kwargs)
            self.header_timeout = limits.header_timeout
            self.max_connections = limits.max_connections
            self.max_client_connections = limits.max_client_connections
            self.body_deadline = limits.body_deadline

    setattr(LimitedConfig, _MARKER, True)
    return LimitedConfig


def _positive_seconds(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be {'None or ' if optional else ''}a positive number of seconds, "
                         f"got {value!r}")


def _count(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be {'None or ' if optional else ''}an integer >= 1, got {value!r}")


def install(header_timeout: float, max_connections: int, keep_alive: float | None = None,
            max_client_connections: int | None = MAX_CLIENT_CONNECTIONS,
            body_deadline: float | None = BODY_DEADLINE_S) -> None:
    """Make every ``uvicorn.Config`` built from now on in this process serve HTTP with these limits.

    Call it in the BentoML worker process before the worker builds its ``uvicorn.Config`` (e.g. at import
    of the service module). Idempotent: a second call only replaces the limits (for configs built after
    it) and never wraps ``uvicorn.Config`` twice. ``keep_alive``, when given, overrides the
    ``timeout_keep_alive`` the caller passes (BentoML's default is 5 s). ``max_client_connections``
    (connections one peer address may hold, at most ``max_connections``) and ``body_deadline`` may be
    None: no per-client cap, no total body deadline.
    """
    global _limits, _base

    _positive_seconds("header_timeout", header_timeout)
    _count("max_connections", max_connections)
    _positive_seconds("keep_alive", keep_alive, optional=True)
    _count("max_client_connections", max_client_connections, optional=True)
    _positive_seconds("body_deadline", body_deadline, optional=True)

    clients = None if max_client_connections is None else min(max_client_connections, max_connections)
    _limits = Limits(float(header_timeout), max_connections, None if keep_alive is None else float(keep_alive),
                     clients, None if body_deadline is None else float(body_deadline))
    if not getattr(uvicorn.Config, _MARKER, False):
        _base = uvicorn.Config
        # setattr: mypy refuses an assignment to a class's name, which is exactly what this does
        setattr(uvicorn, "Config", _make_config_class(_base))  # noqa: B010


def uninstall() -> None:
    """Undo :func:`install` (for tests): restore the ``uvicorn.Config`` that was there before."""
    global _limits, _base

    if getattr(uvicorn.Config, _MARKER, False) and _base is not None:
        setattr(uvicorn, "Config", _base)  # noqa: B010
    _limits, _base = None, None
