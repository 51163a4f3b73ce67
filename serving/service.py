"""BentoML service: JSON endpoints over ``serving.core.ScoringCore``.

Start it with ``salesml serve`` or ``bentoml serve serving.service:SalesScoring``.  Every
scoring endpoint needs an API key (``X-API-Key`` or ``Authorization: Bearer``); the gate
middleware answers 401/413/415 before a body is parsed and writes the access log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import date, datetime, timezone
from datetime import time as dtime
from typing import Annotated, Literal, Optional, Union

import bentoml
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints
from starlette.responses import JSONResponse

from salesml.contract import ID_MAX_LENGTH, ID_PATTERN
from salesml.settings import Settings
from serving.auth import KeyFileError, KeyStore, effective_role, key_from_headers

log = logging.getLogger("salesml.serving")
_LIMITS = Settings()
MAX_BATCH = _LIMITS.max_batch
# The scope each endpoint needs (serving.auth.SCOPES says which role has which).
SCOPE = {"/intent": "read", "/match": "read", "/health": "read", "/events": "write", "/outcomes": "write"}
PROTECTED = set(SCOPE)

Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(max_length=500)]
Value = Union[Number, bool, Text, None]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Row = Annotated[dict[FeatureName, Value], Field(max_length=100)]
Ids = Annotated[list[Id], Field(min_length=1, max_length=MAX_BATCH)]
Rows = Annotated[list[Row], Field(min_length=1, max_length=MAX_BATCH)]
View = Literal["sales", "csm", "admin"]


class Outcome(BaseModel):
    entity_type: Literal["lead", "account"]
    entity_id: Id
    outcome: Literal["converted", "churned"]
    value: bool
    occurred_at: AwareDatetime


def error(ctx, status: int, field: str | None, message: str, **extra) -> JSONResponse:
    # BentoML copies ctx.response.status_code onto whatever an API returns, so set both.
    ctx.response.status_code = status
    return JSONResponse({"error": message, "field": field, **extra}, status_code=status)


class Gate:
    """ASGI middleware: API key -> caller (401), body size (413) and type (415), request id,
    access log.  The body is read here (at most ``max_body_bytes``) and replayed to the app."""

    def __init__(self, app, settings: Settings | None = None):
        self.app = app
        self.settings = settings or Settings()
        self.keys = KeyStore(self.settings.api_keys_path)
        self._log = None

    @property
    def access_log(self):
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
        recorded, pending = False, {}

        def record() -> bool:
            """The call's access-log row, committed once; False when it could not be written."""
            nonlocal recorded
            if recorded:
                return True
            recorded = True
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
            """The answer goes out only once its access-log row is committed: an acknowledged call always
            has its row (a kill right after the reply cannot lose it), and a call whose row cannot be
            written is answered 503 instead of its data (every access to scores is attributable)."""
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                pending["start"] = message
                return
            start = pending.pop("start", None)
            if message["type"] == "http.response.body" and not message.get("more_body") and start is not None:
                if not record():
                    status["code"] = 503
                    body = b'{"error": "the access log could not be written; nothing was answered", "field": null}'
                    start = {**start, "status": 503, "headers": [
                        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", request_id.encode())]}
                    message = {"type": "http.response.body", "body": body}
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
            if scope["method"] != "POST":
                status["code"] = 405
                return await self._reply(send_logged, 405, {"error": "use POST", "field": None}, request_id,
                                         headers=[(b"allow", b"POST")])
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
            while True:
                try:
                    message = await asyncio.wait_for(receive(), self.settings.serve_body_timeout)
                except asyncio.TimeoutError:
                    status["code"] = 408
                    return await self._reply(send_logged, 408, {"error": f"the body did not arrive within "
                                                                  f"{self.settings.serve_body_timeout:g} s",
                                                         "field": None}, request_id, headers=[(b"connection",
                                                                                                b"close")])
                if message["type"] == "http.disconnect":
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
            except ValueError as exc:
                status["code"] = 400
                return await self._reply(send_logged, 400, {"error": f"the body is not valid JSON: {exc}",
                                                            "field": None}, request_id)
            state["entities"] = _entities_in(doc)
            needed = SCOPE[scope["path"]]
            if not caller.may(needed):  # after the body is read: the refusal names the entities asked for
                status["code"] = 403
                return await self._reply(send_logged, 403, {
                    "error": f"role '{caller.role}' may not call {scope['path']}: it needs the '{needed}' scope",
                    "field": "X-API-Key"}, request_id)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

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
            record()  # calls that ended without a full answer (a disconnect, an error) get their row too


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


def _entities_in(doc) -> list[str]:
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
    return [str(x)[:ID_MAX_LENGTH] for x in found if isinstance(x, (str, int))][:MAX_BATCH]


def _since(value: date | None) -> datetime | None:
    return None if value is None else datetime.combine(value, dtime.max, tzinfo=timezone.utc)


class ScoringService(bentoml.Service):
    """BentoML's service with the bounds and declarations its app lacks (``serving.asgi``)."""

    def to_asgi(self, is_main: bool = True):
        from serving.asgi import KnownRoutesOnly, quiet_rejections
        from serving.http_limits import install

        quiet_rejections()
        # header-read timeout and connection cap: BentoML's worker builds its uvicorn.Config right after this
        install(header_timeout=_LIMITS.serve_header_timeout, max_connections=_LIMITS.serve_max_connections)
        return KnownRoutesOnly(super().to_asgi(is_main=is_main))

    @property
    def openapi_spec(self):
        from serving.asgi import amend_openapi

        settings = Settings()
        try:  # the project's custom columns join the /events row schema; none without a project file
            extra = settings.project().extra_columns()
        except Exception:  # noqa: BLE001 - the document must render even where the project file is broken
            extra = {}
        return amend_openapi(super().openapi_spec, settings.max_batch, extra)


@bentoml.service(
    name="salesml-scoring", service_class=ScoringService, workers=_LIMITS.serve_workers, threads=_LIMITS.serve_threads,
    traffic={"timeout": 60, "max_concurrency": _LIMITS.serve_max_concurrency},
    # BentoML skips its concurrency limit on the livez path, "/health" unless told: ours is a scoring endpoint.
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    http={"host": _LIMITS.serve_host},  # plain `bentoml serve` binds loopback too; --host overrides
)
class SalesScoring:
    """Intent, lead matching and Customer Health Score, with live Feast features."""

    def __init__(self) -> None:
        from serving.core import ScoringCore

        self.settings = Settings()
        self.core = None
        self.load_error = None
        try:
            self.core = ScoringCore.load(self.settings)
        except Exception as exc:  # stay up, not ready, and say why
            log.exception("scoring core failed to load")
            self.load_error = f"{type(exc).__name__}: {exc}"

    def __is_ready__(self) -> bool:
        return self.core is not None and self.core.ready

    def _prepare(self, ctx, entities: list[str], requested: str | None):
        """(caller, role, request id) or an error response."""
        state = ctx.request.state
        state.entities = [str(e) for e in entities if e is not None][:MAX_BATCH]  # rows= without ids name none
        if self.core is None:
            return error(ctx, 503, None, f"not ready: {self.load_error}")
        caller = getattr(state, "caller", None)
        if caller is None:  # only reachable without the Gate middleware
            return error(ctx, 401, "X-API-Key", "missing or unknown API key")
        try:
            role = effective_role(caller, requested)
        except PermissionError as exc:
            return error(ctx, 403, "view", str(exc))
        return caller, role, getattr(state, "request_id", None)

    @staticmethod
    def _one_of(ctx, ids, rows, ids_name: str):
        if (ids is None) == (rows is None):
            return error(ctx, 400, ids_name, f"give exactly one of '{ids_name}' or 'rows'")
        return None

    @bentoml.api(route="/intent")
    def intent(self, ctx: bentoml.Context, lead_ids: Optional[Ids] = None, rows: Optional[Rows] = None,
               view: Optional[View] = None) -> dict:
        """Purchase-intent probability, band and drivers for leads (by id, or feature rows)."""
        bad = self._one_of(ctx, lead_ids, rows, "lead_ids")
        if bad:
            return bad
        prep = self._prepare(ctx, lead_ids or [r.get("lead_id") for r in rows], view)
        if isinstance(prep, JSONResponse):
            return prep
        caller, role, rid = prep
        return self._call(ctx, lambda: self.core.intent(caller, lead_ids, rows, role, rid))

    @bentoml.api(route="/match")
    def match(self, ctx: bentoml.Context, lead_ids: Ids, rep_ids: Optional[Ids] = None, assign: bool = False,
              top: Annotated[int, Field(ge=1, le=50)] = 5, view: Optional[View] = None) -> dict:
        """Ranked reps per lead with expected conversion and reasons; ``assign`` adds a
        capacity-respecting proposal for the batch (a proposal only: nothing is assigned)."""
        prep = self._prepare(ctx, lead_ids, view)
        if isinstance(prep, JSONResponse):
            return prep
        caller, role, rid = prep
        return self._call(ctx, lambda: self.core.match(caller, lead_ids, rep_ids, assign, top, role, rid))

    @bentoml.api(route="/health")
    def health(self, ctx: bentoml.Context, account_ids: Optional[Ids] = None, rows: Optional[Rows] = None,
               since: Optional[date] = None, view: Optional[View] = None) -> dict:
        """CHS 0-100, level, churn probability, layer sub-scores, early warning; with ``since``
        also the change since that date and its attribution by layer and feature."""
        bad = self._one_of(ctx, account_ids, rows, "account_ids")
        if bad:
            return bad
        if since is not None and rows is not None:
            return error(ctx, 400, "since", "'since' needs account_ids: past features are looked up by id")
        prep = self._prepare(ctx, account_ids or [r.get("account_id") for r in rows], view)
        if isinstance(prep, JSONResponse):
            return prep
        caller, role, rid = prep
        return self._call(ctx, lambda: self.core.health(caller, account_ids, rows, _since(since), role, rid))

    @bentoml.api(route="/events")
    def events(self, ctx: bentoml.Context, table: Literal["lead_events", "usage_weekly"], rows: Rows) -> dict:
        """Live behaviour rows (the raw-data contract's columns), pushed to the online store."""
        key = "lead_id" if table == "lead_events" else "account_id"
        prep = self._prepare(ctx, [str(r.get(key)) for r in rows], None)
        if isinstance(prep, JSONResponse):
            return prep
        caller, _, rid = prep
        return self._call(ctx, lambda: self.core.events(caller, table, [dict(r) for r in rows], rid))

    @bentoml.api(route="/outcomes")
    def outcomes(self, ctx: bentoml.Context, outcomes: Annotated[list[Outcome], Field(min_length=1,
                                                                                       max_length=MAX_BATCH)]) -> dict:
        """Observed outcomes (converted / churned) for A/B analysis and performance drift."""
        prep = self._prepare(ctx, [o.entity_id for o in outcomes], None)
        if isinstance(prep, JSONResponse):
            return prep
        caller, _, rid = prep
        return self._call(ctx, lambda: self.core.outcomes(caller, [o.model_dump() for o in outcomes], rid))

    @staticmethod
    def _call(ctx, fn):
        from salesml.validation import ContractError
        from serving.core import ModelUnavailable, RequestError

        try:
            return fn()
        except ModelUnavailable as exc:
            return error(ctx, 503, None, str(exc))
        except ContractError as exc:
            return error(ctx, 400, "rows", "rows violate the raw-data contract: " + "; ".join(
                str(v) for v in exc.violations[:5]), violations=[str(v) for v in exc.violations][:50])
        except RequestError as exc:
            return error(ctx, 400, exc.field, str(exc))


SalesScoring.add_asgi_middleware(Gate)
