"""BentoML service: JSON endpoints over ``serving.core.ScoringCore``.

Start it with ``salesml serve`` or ``bentoml serve serving.service:SalesScoring``.  Every
endpoint needs an API key (``X-API-Key`` or ``Authorization: Bearer``) with the endpoint's scope;
the key gate (``serving.gate``) checks it and writes the access log.

``/match`` is scored by a second service, ``Matching``, in its own process at a lower CPU
priority (``SALESML_SERVE_MATCH_NICE``): a 1,000-lead match is about a second of CPU, and in a
worker's threads it held the GIL and a core that ``/health`` and ``/intent`` calls were waiting for.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import date, datetime, timezone
from datetime import time as dtime
from typing import Annotated, Literal, Optional, Union

import bentoml
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints
from starlette.responses import JSONResponse

from salesml.contract import ID_MAX_LENGTH, ID_PATTERN
from salesml.settings import Settings
from serving.auth import effective_role
from serving.auth import view as view_of
from serving.gate import Gate

log = logging.getLogger("salesml.serving")
_LIMITS = Settings()
MAX_BATCH = _LIMITS.max_batch

Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(max_length=500)]
Value = Union[Number, bool, Text, None]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Row = Annotated[dict[FeatureName, Value], Field(max_length=100)]
Ids = Annotated[list[Id], Field(min_length=1, max_length=MAX_BATCH)]
Rows = Annotated[list[Row], Field(min_length=1, max_length=MAX_BATCH)]
View = Literal["sales", "csm", "admin"]


WarningId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^w-[0-9a-f]+$")]
PlaybookId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]


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


ERROR_KEY = "_error"  # how Matching hands an error answer back across the process boundary


def run_core(fn) -> dict:
    """``fn()``'s answer, or ``{ERROR_KEY: {...}}`` for what the caller got wrong or a model that is missing."""
    from salesml.validation import ContractError
    from serving.core import ModelUnavailable, RequestError

    try:
        return fn()
    except ModelUnavailable as exc:
        return {ERROR_KEY: {"status": 503, "field": None, "error": str(exc)}}
    except ContractError as exc:
        return {ERROR_KEY: {"status": 400, "field": "rows", "error": "rows violate the raw-data contract: " + "; ".join(
            str(v) for v in exc.violations[:5]), "violations": [str(v) for v in exc.violations][:50]}}
    except RequestError as exc:
        return {ERROR_KEY: {"status": 400, "field": exc.field, "error": str(exc)}}


def answer(ctx, result: dict):
    """``run_core``'s result as the HTTP answer."""
    bad = result.get(ERROR_KEY) if isinstance(result, dict) else None
    if bad is None:
        return result
    extra = {k: v for k, v in bad.items() if k not in ("status", "field", "error")}
    return error(ctx, bad["status"], bad["field"], bad["error"], **extra)


def _json_value(v):
    """A stored value as JSON: dates and times as ISO text, missing as null."""
    import math

    import pandas as pd

    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT or v is pd.NA:
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


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


@bentoml.service(name="salesml-matching", workers=1, threads=2, traffic={"timeout": 60})
class Matching:
    """Scores ``/match`` for ``SalesScoring``, which checked the key and the request: an internal
    service (BentoML serves it on a local socket) with the models of its own."""

    def __init__(self) -> None:
        from serving.bento import pinned
        from serving.core import ScoringCore

        self.core, self.load_error = None, None
        if bentoml.server_context.service_name == "salesml-matching":  # its own process, not a test's
            os.nice(_LIMITS.serve_match_nice)
        try:
            self.core = ScoringCore.load(Settings(), only=("lead_match",), pinned=pinned(Matching.bento))
        except Exception as exc:  # noqa: BLE001 - answered as 503 per call, like SalesScoring
            log.exception("matching: scoring core failed to load")
            self.load_error = f"{type(exc).__name__}: {exc}"

    @bentoml.api
    def match(self, key_id: str, caller_role: str, lead_ids: list[str], rep_ids: Optional[list[str]], assign: bool,
              top: int, role: str, request_id: Optional[str]) -> dict:
        from serving.auth import Caller

        if self.core is None:
            return {ERROR_KEY: {"status": 503, "field": None, "error": f"not ready: {self.load_error}"}}
        caller = Caller(key_id=key_id, role=caller_role)
        return run_core(lambda: self.core.match(caller, lead_ids, rep_ids, assign, top, role, request_id))


@bentoml.service(
    name="salesml-scoring", service_class=ScoringService, workers=_LIMITS.serve_workers, threads=_LIMITS.serve_threads,
    traffic={"timeout": 60, "max_concurrency": _LIMITS.serve_max_concurrency},
    # BentoML skips its concurrency limit on the livez path, "/health" unless told: ours is a scoring endpoint.
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    http={"host": _LIMITS.serve_host},  # plain `bentoml serve` binds loopback too; --host overrides
)
class SalesScoring:
    """Intent, lead matching and Customer Health Score, with live Feast features."""

    matching = bentoml.depends(Matching)

    def __init__(self) -> None:
        from serving.bento import pinned
        from serving.core import ScoringCore

        self.settings = Settings()
        self.core = None
        self.load_error = None
        self.warnings = self.deliverer = self.warnings_error = None
        try:
            self.core = ScoringCore.load(self.settings, pinned=pinned(SalesScoring.bento))
        except Exception as exc:  # stay up, not ready, and say why
            log.exception("scoring core failed to load")
            self.load_error = f"{type(exc).__name__}: {exc}"
        try:  # the inbox, and a thread that delivers its events so that no request waits on the webhook
            from serving.actions.warnings import open_warning_store
            from serving.actions.webhook import BackgroundDeliverer

            self.warnings = open_warning_store(self.settings)
            self.deliverer = BackgroundDeliverer(self.warnings, self.settings).start()
            if self.core is not None:  # /health offers no playbook the fuse froze
                self.core.frozen_playbooks = self.warnings.frozen_playbooks
        except Exception as exc:  # a broken playbooks file: scores still answer, /warnings says why
            log.exception("warnings store failed to open")
            self.warnings_error = f"{type(exc).__name__}: {exc}"

    @bentoml.on_shutdown
    def _stop_deliverer(self) -> None:
        if self.deliverer is not None:
            self.deliverer.stop()

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
    async def match(self, ctx: bentoml.Context, lead_ids: Ids, rep_ids: Optional[Ids] = None, assign: bool = False,
              top: Annotated[int, Field(ge=1, le=50)] = 5, view: Optional[View] = None) -> dict:
        """Ranked reps per lead with expected conversion and reasons; ``assign`` adds a
        capacity-respecting proposal for the batch (a proposal only: nothing is assigned)."""
        prep = self._prepare(ctx, lead_ids, view)
        if isinstance(prep, JSONResponse):
            return prep
        caller, role, rid = prep
        if bentoml.server_context.service_name is None:  # in-process (tests' ASGI client): no Matching process
            return answer(ctx, await asyncio.to_thread(
                run_core, lambda: self.core.match(caller, lead_ids, rep_ids, assign, top, role, rid)))
        return answer(ctx, await self.matching.to_async.match(
            key_id=caller.key_id, caller_role=caller.role, lead_ids=lead_ids, rep_ids=rep_ids, assign=assign,
            top=top, role=role, request_id=rid))

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

    @bentoml.api(route="/health/history")
    def health_history(self, ctx: bentoml.Context, account_id: Id, view: Optional[View] = None) -> dict:
        """An account's timeline from the scheduled runs (``salesml score chs``): per run its score,
        level and the change since the run before with its attribution (layers and text: not for
        sales), and the events of each interval (renewals, interactions, pushed usage)."""
        from serving.scores import history

        prep = self._prepare(ctx, [account_id], view)
        if isinstance(prep, JSONResponse):
            return prep
        _, role, rid = prep
        h = history(self.settings, account_id)
        if h.timeline.empty:
            return error(ctx, 404, "account_id", f"no scheduled run scored account {account_id!r} "
                                                 "(run `salesml score chs`)")
        layers = role != "sales"  # as /health: sales sees the trend, not its make-up
        timeline = []
        for r in h.timeline.to_dict("records"):
            row = {k: _json_value(v) for k, v in r.items()
                   if layers or not (k.startswith("change_") and k != "change_points")}
            timeline.append(row)
        events = [{k: _json_value(v) for k, v in e.items()} for e in h.events.to_dict("records")]
        return {"request_id": rid, "account_id": account_id, "timeline": timeline,
                "events": events if layers else [{k: e[k] for k in ("at", "kind", "as_of") if k in e}
                                                 for e in events],
                "sources": h.sources, "thresholds": h.thresholds}

    @bentoml.api(route="/events")
    def events(self, ctx: bentoml.Context, table: Literal["lead_events", "usage_weekly"], rows: Rows) -> dict:
        """Live behaviour rows (the raw-data contract's columns), pushed to the online store. Usage
        rows rescore their accounts: a level that worsened raises its warning at once."""
        key = "lead_id" if table == "lead_events" else "account_id"
        prep = self._prepare(ctx, [str(r.get(key)) for r in rows], None)
        if isinstance(prep, JSONResponse):
            return prep
        caller, _, rid = prep
        result = self._call(ctx, lambda: self.core.events(caller, table, [dict(r) for r in rows], rid))
        if isinstance(result, dict) and table == "usage_weekly" and self.warnings is not None:
            result["warnings"] = self._live_warnings(result["entities_updated"])
        return result

    def _live_warnings(self, account_ids: list[str]) -> dict:
        from datetime import datetime, timezone

        from serving.actions.live import live_warnings

        try:  # the push is stored already: a failed check is said in the answer, not turned into an error
            summary = live_warnings(self.core, self.warnings, account_ids, datetime.now(timezone.utc))
        except Exception as exc:  # noqa: BLE001
            log.exception("live warning check failed")
            return {"error": f"the live warning check failed ({type(exc).__name__}); the next run will see it"}
        if summary["raised"]:
            self.deliverer.notify()
        return summary

    @bentoml.api(route="/warnings")
    def warnings_inbox(self, ctx: bentoml.Context, owner: Optional[Id] = None,
                       status: Optional[Literal["open", "handled", "not_applicable", "escalated"]] = None,
                       level: Optional[Literal["yellow", "orange", "red"]] = None,
                       limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 100, view: Optional[View] = None) -> dict:
        """The warnings inbox, newest first: account, old and new level, score, attribution text
        (not for sales), the level's playbook, owner, raised and due times, status."""
        prep = self._prepare(ctx, [], view)
        if isinstance(prep, JSONResponse):
            return prep
        _, role, rid = prep
        if self.warnings is None:
            return error(ctx, 503, None, f"warnings unavailable: {self.warnings_error}")
        rows = self.warnings.inbox(owner=owner, status=status, level=level, limit=limit)
        return {"request_id": rid, "warnings": [view_of(w, role) for w in rows]}

    @bentoml.api(route="/interventions")
    def interventions(self, ctx: bentoml.Context, warning_id: WarningId, at: Optional[AwareDatetime] = None,
                      playbook_id: Optional[PlaybookId] = None, not_applicable: bool = False,
                      reason: Optional[Text] = None) -> dict:
        """Record what was done about a warning: the playbook applied, or "not applicable" with a
        reason; who is the calling key. Five "not applicable" marks in a row freeze a playbook."""
        from serving.actions.rules import WarningError
        from serving.actions.warnings import public_view

        prep = self._prepare(ctx, [warning_id], None)
        if isinstance(prep, JSONResponse):
            return prep
        caller, _, rid = prep
        if self.warnings is None:
            return error(ctx, 503, None, f"warnings unavailable: {self.warnings_error}")
        try:
            done = self.warnings.intervene(warning_id, caller.key_id, at, playbook_id=playbook_id,
                                           not_applicable=not_applicable, reason=reason)
        except WarningError as exc:
            return error(ctx, 404 if exc.field == "warning_id" and "unknown" in str(exc) else 400, exc.field,
                         str(exc))
        # as its owner sees it: a held-out warning shows no playbook, nor that it is held out
        return {"request_id": rid, "warning": {**public_view(done), "interventions": done["interventions"]}}

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
        return answer(ctx, run_core(fn))


SalesScoring.add_asgi_middleware(Gate)
