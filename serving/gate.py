"""The key gate: ASGI middleware in front of the scoring endpoints.

API key -> caller (401), method (405 with Allow), content type (415), body size (413) and read
time (408: a pause longer than ``serve_body_timeout``, or a body not complete within the total body
deadline of ``serving.http_limits``), JSON (400, also for JSON nested deeper than ``MAX_JSON_DEPTH``),
the endpoint's scope (403); a request id on every answer; BentoML's 400 bodies in the service's one
error shape; and one access-log row per call, committed before the answer leaves (an answer whose row
cannot be written is a 503). A client that disconnects before its answer has its row with status 499
("client closed request", as nginx logs it), not a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from salesml.contract import ID_MAX_LENGTH
from salesml.settings import Settings
from serving.asgi import GET_AS_POST as ASGI_GET_AS_POST
from serving.auth import KeyFileError, KeyStore, key_from_headers
from serving.http_limits import body_deadline

if TYPE_CHECKING:
    from serving.predlog import PredictionLog

log = logging.getLogger("salesml.serving")
# The scope each endpoint needs (serving.auth.SCOPES says which role has which).
SCOPE = {"/intent": "read", "/match": "read", "/health": "read", "/health/history": "read", "/warnings": "read",
         "/events": "write", "/outcomes": "write", "/interventions": "intervene"}
PROTECTED = set(SCOPE)
# Read-only endpoints that also answer GET: the query string is the JSON body's fields (a repeated
# name keeps its last value), validated exactly as the POST body is.
GET_AS_POST = set(ASGI_GET_AS_POST)
# Deepest nesting of arrays and objects a request body may have: the deepest the API's bodies need is 3
# (``{"rows": [{...}]}``); a body nested 1,000 deep would exhaust the parser's recursion.
MAX_JSON_DEPTH = 32
# The access log's status of a call whose client went away before its answer (nginx's "client closed request").
CLIENT_CLOSED = 499


class Gate:
    """ASGI middleware: API key -> caller (401), body size (413) and type (415), request id,
    access log.  The body is read here (at most ``max_body_bytes``) and replayed to the app."""

    def __init__(self, app, settings: Settings | None = None):
        self.app = app
        self.settings = settings or Settings()
        self.keys = KeyStore(self.settings.api_keys_path)
        self._log: PredictionLog | None = None

    @property
    def access_log(self) -> PredictionLog:
        if self._log is None:
            from serving.predlog import PredictionLog

            self._log = PredictionLog(self.settings.prediction_log_path, synchronous=self.settings.log_synchronous)
        return self._log

    async def _reply(self, send, status: int, body: dict, request_id: str, headers=()):
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode()),
                                (b"content-length", str(len(data)).encode()), *headers]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in PROTECTED:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = uuid.uuid4().hex
        caller, status = None, {"code": 500}
        state = scope.setdefault("state", {})
        t0 = time.perf_counter()
        recorded = False
        pending: dict[str, Any] = {}  # the held status line ("start"), and what became of the answer
        gone = False  # the client disconnected before an answer started

        def record() -> bool:
            """The call's access-log row, committed once; False when it could not be written."""
            nonlocal recorded
            if recorded:
                return True
            recorded = True
            if gone:
                status["code"] = CLIENT_CLOSED
            client = scope.get("client")
            try:
                self.access_log.append_access({
                    "ts": datetime.now(timezone.utc), "request_id": request_id,
                    "api_key_id": caller.key_id if caller else None, "role": caller.role if caller else None,
                    "endpoint": scope["path"], "entities": state.get("entities", []), "status": status["code"],
                    "client": f"{client[0]}:{client[1]}" if client else None,
                    "detail": f"{1000 * (time.perf_counter() - t0):.1f} ms"})
                return True
            except Exception:
                log.exception("access log write failed")
                return False

        async def send_logged(message):
            """No byte of the answer leaves before its access-log row is committed: an acknowledged call
            always has its row (a kill right after the reply cannot lose it), and a call whose row cannot
            be written is answered 503 instead of its data (every access to scores is attributable).

            The row is committed when the answer's first part comes, before the status line goes out, not
            at its last part: BentoML sends a JSON answer as its status with a ``content-length``, the body
            (``more_body``) and then an empty last part, and the client has the whole answer with the body
            part, before the last part is even sent."""
            if pending.get("withheld"):  # the app's answer was replaced by the 503: the rest of it is dropped
                return
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                pending["start"] = message
                pending["started"] = True
                return
            start = pending.pop("start", None)
            if start is not None and not record():
                status["code"] = 503
                body = b'{"error": "the access log could not be written; nothing was answered", "field": null}'
                start = {**start, "status": 503, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode())]}
                message = {"type": "http.response.body", "body": body}
                pending["withheld"] = True
            if start is not None:
                await send(start)
            await send(message)

        try:
            try:
                caller = self.keys.resolve(key_from_headers(headers))
            except KeyFileError as exc:  # refuse every call, say why, keep serving the probes
                log.error("%s", exc)
                status["code"] = 503
                return await self._reply(send_logged, 503, {"error": "the service's API key file is unreadable; "
                                                              "an operator must fix it", "field": None}, request_id)
            if caller is None:
                status["code"] = 401
                return await self._reply(send_logged, 401, {"error": "missing or unknown API key: send X-API-Key",
                                                     "field": "X-API-Key"}, request_id)
            if scope["method"] == "GET" and scope["path"] in GET_AS_POST:
                scope, receive, headers = _get_as_post(scope)
            if scope["method"] != "POST":
                allow = "GET, POST" if scope["path"] in GET_AS_POST else "POST"
                status["code"] = 405
                return await self._reply(send_logged, 405, {"error": f"use {allow.replace(', ', ' or ')}",
                                                            "field": None}, request_id,
                                         headers=[(b"allow", allow.encode())])
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                status["code"] = 415
                return await self._reply(send_logged, 415, {"error": f"Content-Type must be application/json, "
                                                              f"got '{ctype or 'none'}'",
                                                     "field": "Content-Type"}, request_id)
            limit = self.settings.max_body_bytes
            if int(headers.get("content-length") or 0) > limit:
                status["code"] = 413
                return await self._reply(send_logged, 413, {"error": f"body larger than {limit} bytes",
                                                     "field": None}, request_id)
            chunks, size = [], 0
            pause, total = self.settings.serve_body_timeout, body_deadline()
            deadline = t0 + total  # the whole body, however it trickles
            while True:
                wait = min(pause, deadline - time.perf_counter())
                try:
                    if wait <= 0:
                        raise asyncio.TimeoutError
                    message = await asyncio.wait_for(receive(), wait)
                except asyncio.TimeoutError:
                    status["code"] = 408
                    error = (f"the whole body must arrive within {total:g} s of the headers" if wait < pause
                             else f"the body did not arrive within {pause:g} s")
                    return await self._reply(send_logged, 408, {"error": error, "field": None}, request_id,
                                             headers=[(b"connection", b"close")])
                if message["type"] == "http.disconnect":
                    gone = True
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    status["code"] = 413
                    return await self._reply(send_logged, 413, {"error": f"body larger than {limit} bytes",
                                                         "field": None}, request_id)
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            try:
                doc = json.loads(body)
                too_deep = _deeper_than(doc, MAX_JSON_DEPTH)
            except ValueError as exc:
                status["code"] = 400
                return await self._reply(send_logged, 400, {"error": f"the body is not valid JSON: {exc}",
                                                            "field": None}, request_id)
            except RecursionError:  # the parser gave up: far deeper than the limit
                too_deep = True
            if too_deep:
                status["code"] = 400
                return await self._reply(send_logged, 400, {"error": f"the body nests arrays and objects deeper "
                                                                     f"than {MAX_JSON_DEPTH} levels",
                                                            "field": None}, request_id)
            state["entities"] = _entities_in(doc, self.settings.max_batch)
            needed = SCOPE[scope["path"]]
            if not caller.may(needed):  # after the body is read: the refusal names the entities asked for
                status["code"] = 403
                return await self._reply(send_logged, 403, {
                    "error": f"role '{caller.role}' may not call {scope['path']}: it needs the '{needed}' scope",
                    "field": "X-API-Key"}, request_id)
            sent = False

            async def replay():
                nonlocal sent, gone
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                message = await receive()
                if message["type"] == "http.disconnect" and "started" not in pending:
                    gone = True
                return message

            held = {}

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"x-request-id", request_id.encode())]}
                    if message["status"] == 400:  # BentoML's validation error: rewritten below to our shape
                        held["start"], held["body"] = message, b""
                        return
                if "start" in held and message["type"] == "http.response.body":
                    held["body"] += message.get("body", b"")
                    if message.get("more_body"):
                        return
                    start, data = held.pop("start"), _error_shape(held.pop("body"))
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    await send_logged({**start, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
                    message = {"type": "http.response.body", "body": data}
                await send_logged(message)

            state.update(caller=caller, request_id=request_id)
            await self.app(scope, replay, send_with_id)
        finally:
            if not recorded and not gone:  # the app ended without answering (an error): the server says 500
                status["code"] = 500
            record()  # calls that ended without a full answer (a disconnect, an error) get their row too


def _get_as_post(scope):
    """(scope, receive, headers) of a GET with a query string as the POST with that JSON body."""
    from urllib.parse import parse_qsl

    fields = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    body = json.dumps(fields).encode()
    kept = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
    scope = {**scope, "method": "POST", "query_string": b"",
             "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, receive, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _error_shape(data: bytes) -> bytes:
    """A 400 body in the service's one error shape: ``error``, ``field`` (the first field at fault, dotted)
    and, from pydantic, ``detail`` (every error with its location)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return json.dumps({"error": data.decode("utf-8", "replace")[:500], "field": None}).encode()
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):  # BentoML wraps some errors in a list
        doc = doc[0]
    if not isinstance(doc, dict):
        return json.dumps({"error": str(doc)[:500], "field": None}).encode()
    if "field" not in doc:
        detail = doc.get("detail") if isinstance(doc.get("detail"), list) else []
        loc = [str(p) for p in (detail[0].get("loc") or [])] if detail and isinstance(detail[0], dict) else []
        loc = [p for p in loc if p not in ("body",)]
        doc = {"error": str(doc.get("error", "invalid request")), "field": ".".join(loc) or None,
               **({"detail": detail} if detail else {})}
        if detail:
            doc["error"] += ": " + "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}"
                                            for d in detail[:5] if isinstance(d, dict))
    return json.dumps(doc).encode()


def _deeper_than(doc: object, limit: int) -> bool:
    """Whether a parsed JSON document nests arrays and objects more than ``limit`` deep (``[]`` is 1 deep)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _entities_in(doc, limit: int) -> list[str]:
    """The entity ids a request body names, as far as it parses: refused and rejected calls are
    attributable too (the API method replaces them with the validated ids)."""
    if not isinstance(doc, dict):
        return []
    found = []
    for name in ("account_ids", "lead_ids"):
        if isinstance(doc.get(name), list):
            found += doc[name]
    for name, keys in (("rows", ("account_id", "lead_id")), ("outcomes", ("entity_id",))):
        if isinstance(doc.get(name), list):
            found += [r.get(k) for r in doc[name] if isinstance(r, dict) for k in keys if k in r]
    return [str(x)[:ID_MAX_LENGTH] for x in found if isinstance(x, (str, int))][:limit]
