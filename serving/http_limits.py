"""Resource bounds for the HTTP server that BentoML runs in each worker process.

BentoML's worker (``_bentoml_impl/worker/service.py``) builds ``uvicorn.Config(...)`` itself and passes no
option that reaches uvicorn's ``limit_concurrency``, and uvicorn's HTTP protocols arm no timer before the
first request: a client that connects and sends nothing, or sends half its headers and pauses, holds a
socket (and a file descriptor) for ever. This module closes those two holes:

* a **header read timeout**: a new connection must deliver complete request headers within
  ``header_timeout`` seconds of being accepted; a keep-alive connection, once the first byte of its next
  request arrives, likewise. Data trickling in does not extend the deadline. Idle keep-alive connections
  keep uvicorn's own ``timeout_keep_alive`` behaviour (our timer is armed by the first byte, which is
  exactly when uvicorn cancels its keep-alive timer and stops bounding the connection);
* a **connection cap**: at most ``max_connections`` open HTTP connections per worker process (per
  ``uvicorn.Server``); a connection beyond the cap is answered at once with ``503`` and closed.

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

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["LimitedHttpToolsProtocol", "Limits", "install", "installed_limits", "uninstall"]

logger = logging.getLogger("uvicorn.error")

# How long a refused connection stays half-closed (our FIN sent, still reading) so that the client's
# request bytes are absorbed instead of provoking a TCP RST that could destroy the 503 before it is read.
REFUSED_LINGER_S = 0.5

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
    """uvicorn's httptools protocol plus a header read timeout and a per-process connection cap.

    Limits are read from the config: ``config.header_timeout`` (seconds, or None for no timeout) and
    ``config.max_connections`` (or None for no cap); a plain ``uvicorn.Config`` has neither, and then this
    class behaves exactly like ``HttpToolsProtocol``.
    """

    _warn_refused = _ThrottledWarning("refused HTTP connections over max_connections with 503")
    _warn_timeout = _ThrottledWarning("closed HTTP connections that did not send request headers in time")

    def __init__(self, config, server_state, app_state, _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout: float | None = getattr(config, "header_timeout", None)
        self.max_connections: int | None = getattr(config, "max_connections", None)
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._bytes_since_armed = False
        self._in_headers = False  # parser between on_message_begin and on_headers_complete
        self._in_body = False  # parser between on_headers_complete and on_message_complete
        self._refused = False

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

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
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
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None  # let the transport close now that the client is done
        return super().eof_received()  # type: ignore[func-returns-value]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
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
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request whose headers were still incomplete while the previous response was being
        # produced: its header deadline starts now.
        if self._in_headers and not self.transport.is_closing():
            self._arm_header_timer()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_header_timer()  # the transport moves to the websocket protocol; our connection_lost won't run
        super().handle_websocket_upgrade()


# -- installation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    max_connections: int
    keep_alive: float | None = None


_limits: Limits | None = None


def installed_limits() -> Limits | None:
    """The limits the patched ``uvicorn.Config`` applies, or None when :func:`install` has not run."""
    import uvicorn

    return _limits if getattr(uvicorn.Config, _MARKER, False) else None


def _make_config_class(base: type) -> type:
    signature = inspect.signature(base.__init__)

    class LimitedConfig(base):  # type: ignore[misc, valid-type]
        """``uvicorn.Config`` that serves with :class:`LimitedHttpToolsProtocol` and the installed limits."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            limits = _limits
            assert limits is not None
            bound = signature.bind(self, *args, **kwargs)
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
            args, kwargs = bound.args[1:], bound.kwargs
            super().__init__(*args, **kwargs)
            self.header_timeout = limits.header_timeout
            self.max_connections = limits.max_connections

    setattr(LimitedConfig, _MARKER, True)
    LimitedConfig._salesml_base = base  # type: ignore[attr-defined]
    return LimitedConfig


def install(header_timeout: float, max_connections: int, keep_alive: float | None = None) -> None:
    """Make every ``uvicorn.Config`` built from now on in this process serve HTTP with these limits.

    Call it in the BentoML worker process before the worker builds its ``uvicorn.Config`` (e.g. at import
    of the service module). Idempotent: a second call only replaces the limits (for configs built after
    it) and never wraps ``uvicorn.Config`` twice. ``keep_alive``, when given, overrides the
    ``timeout_keep_alive`` the caller passes (BentoML's default is 5 s).
    """
    global _limits

    if isinstance(header_timeout, bool) or not (isinstance(header_timeout, int | float)
                                                and math.isfinite(header_timeout) and header_timeout > 0):
        raise ValueError(f"header_timeout must be a positive number of seconds, got {header_timeout!r}")
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, int | float)
                                   or not math.isfinite(keep_alive) or keep_alive <= 0):
        raise ValueError(f"keep_alive must be None or a positive number of seconds, got {keep_alive!r}")

    import uvicorn

    _limits = Limits(float(header_timeout), max_connections, None if keep_alive is None else float(keep_alive))
    if not getattr(uvicorn.Config, _MARKER, False):
        uvicorn.Config = _make_config_class(uvicorn.Config)


def uninstall() -> None:
    """Undo :func:`install` (for tests): restore the ``uvicorn.Config`` that was there before."""
    global _limits
    import uvicorn

    if getattr(uvicorn.Config, _MARKER, False):
        uvicorn.Config = uvicorn.Config._salesml_base  # type: ignore[attr-defined]
    _limits = None
