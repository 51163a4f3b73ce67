"""BentoML service: JSON endpoints over ``serving.core.ScoringCore``.

Start it with ``salesml serve`` or ``bentoml serve serving.service:SalesScoring``.  Every
scoring endpoint needs an API key (``X-API-Key`` or ``Authorization: Bearer``); the gate
middleware answers 401/413/415 before a body is parsed and writes the access log.
"""

from __future__ import annotations

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

from salesml.settings import Settings
from serving.auth import KeyStore, effective_role, key_from_headers

log = logging.getLogger("salesml.serving")
_LIMITS = Settings()
MAX_BATCH = _LIMITS.max_batch
PROTECTED = {"/intent", "/match", "/health", "/events", "/outcomes"}

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
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

    async def _reply(self, send, status: int, body: dict, request_id: str):
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode()),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in PROTECTED:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = uuid.uuid4().hex
        caller = self.keys.resolve(key_from_headers(headers))
        status = {"code": 500}
        state = scope.setdefault("state", {})
        t0 = time.perf_counter()
        try:
            if caller is None:
                status["code"] = 401
                return await self._reply(send, 401, {"error": "missing or unknown API key: send X-API-Key",
                                                     "field": "X-API-Key"}, request_id)
            if scope["method"] != "POST":
                status["code"] = 405
                return await self._reply(send, 405, {"error": "use POST", "field": None}, request_id)
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                status["code"] = 415
                return await self._reply(send, 415, {"error": f"Content-Type must be application/json, "
                                                              f"got '{ctype or 'none'}'",
                                                     "field": "Content-Type"}, request_id)
            limit = self.settings.max_body_bytes
            if int(headers.get("content-length") or 0) > limit:
                status["code"] = 413
                return await self._reply(send, 413, {"error": f"body larger than {limit} bytes",
                                                     "field": None}, request_id)
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    status["code"] = 413
                    return await self._reply(send, 413, {"error": f"body larger than {limit} bytes",
                                                         "field": None}, request_id)
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"x-request-id", request_id.encode())]}
                await send(message)

            state.update(caller=caller, request_id=request_id)
            await self.app(scope, replay, send_with_id)
        finally:
            try:
                self.access_log.append_access({
                    "ts": datetime.now(timezone.utc), "request_id": request_id,
                    "api_key_id": caller.key_id if caller else None, "role": caller.role if caller else None,
                    "endpoint": scope["path"], "entities": state.get("entities", []), "status": status["code"],
                    "detail": f"{1000 * (time.perf_counter() - t0):.1f} ms"})
            except Exception:  # the access log must never take a response down with it
                log.exception("access log write failed")


def _since(value: date | None) -> datetime | None:
    return None if value is None else datetime.combine(value, dtime.max, tzinfo=timezone.utc)


@bentoml.service(name="salesml-scoring", traffic={"timeout": 60}, workers=1)
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
        state.entities = list(entities)[:MAX_BATCH]
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
        from serving.core import ModelUnavailable, UnknownFeature

        try:
            return fn()
        except ModelUnavailable as exc:
            return error(ctx, 503, None, str(exc))
        except ContractError as exc:
            return error(ctx, 400, "rows", "rows violate the raw-data contract",
                         violations=[str(v) for v in exc.violations][:50])
        except (UnknownFeature, KeyError) as exc:
            return error(ctx, 400, "rows", str(exc).strip("'\""))


SalesScoring.add_asgi_middleware(Gate)
