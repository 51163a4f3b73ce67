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
from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from datetime import time as dtime
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Optional, TypeVar, Union

import bentoml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from starlette.responses import JSONResponse

from salesml.contract import ID_MAX_LENGTH, ID_PATTERN
from salesml.settings import Settings
from serving.actions.rules import WarningError
from serving.auth import Caller, effective_role
from serving.auth import view as view_of
from serving.gate import Gate

if TYPE_CHECKING:
    from serving.actions.warnings import WarningStore
    from serving.core import ScoringCore

    # What an endpoint returns: its JSON body, or an error response (``error``).
    Answer = Union[dict[str, Any], JSONResponse]
else:
    Answer = dict  # what BentoML declares as the 200 body; a Response is sent as it is

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


class Prepared(NamedTuple):
    """What an endpoint works with once ``SalesScoring._prepare`` let the request through."""

    core: ScoringCore
    caller: Caller
    role: str
    request_id: str | None


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


def strict_input(spec: type[bentoml.IODescriptor]) -> type[bentoml.IODescriptor]:
    """An endpoint's request model as its OpenAPI document states it: a field the endpoint does not take
    (in the JSON body, or in a GET's query string, which the gate turns into the body) is refused, and
    so is ``null`` for an optional field (400 naming it): leave a field out to mean "not given"."""

    class Input(spec):  # the name BentoML gives every request model
        model_config = ConfigDict(extra="forbid")

        @field_validator("*", mode="before")
        @classmethod
        def _not_null(cls, value: object, info: ValidationInfo) -> object:
            if value is None:  # a default is not validated: only an explicit null reaches this
                raise ValueError(f"'{info.field_name}' may not be null; leave it out instead")
            return value

    return Input


F = TypeVar("F", bound=Callable[..., Any])


def api(route: str) -> Callable[[F], F]:
    """``bentoml.api`` for a public endpoint, with its request model made strict (``strict_input``)."""

    def wrap(fn: F) -> F:
        method = bentoml.api(route=route)(fn)
        method.input_spec = strict_input(method.input_spec)
        return method  # BentoML's APIMethod, which the service class holds in the function's place

    return wrap


# What a sales key reads as a rep's reasons in /match: plain words, never the model's feature names
# (those, with their effects, are the drivers a csm or admin key sees). A feature not listed here (a
# project's custom column) reads as its view's phrase.
SALES_REASONS = {
    "industry_match": "knows the lead's industry", "product_match": "sells the lead's product",
    "region_match": "works in the lead's region", "load_ratio": "has room for new leads",
    "open_leads": "has room for new leads", "capacity": "has room for new leads",
    "win_rate_90d": "wins often lately", "avg_close_cycle_days": "closes deals quickly",
    "seniority_rank": "is experienced", "rep_region": "the rep's region", "rep_industries": "the rep's industries",
    "rep_products": "the rep's products",
}
SALES_REASONS_BY_VIEW = {"lead_activity": "the lead's recent activity", "lead_profile": "the lead's profile",
                         "rep_state": "the rep's track record", "lead_rep_fit": "fit between lead and rep"}
SALES_REASON_OTHER = "the lead's profile"


def sales_reason(feature: str) -> str:
    """A /match reason in words (``SALES_REASONS``), by feature name."""
    from features.transforms import FEATURE_TYPES

    if feature in SALES_REASONS:
        return SALES_REASONS[feature]
    view = next((v for v, names in FEATURE_TYPES.items() if feature in names), None)
    return SALES_REASONS_BY_VIEW.get(view or "", SALES_REASON_OTHER)


def sales_match(result: dict) -> dict:
    """A /match answer as a sales key reads it: each ranked rep's reasons in words, once each."""
    for item in result.get("results") or []:
        for rep in (item or {}).get("ranked_reps") or []:
            rep["reasons"] = list(dict.fromkeys(sales_reason(f) for f in rep.get("reasons") or []))
    return result


FEATURE_LIST = "; expected some of "  # serving.core's unknown-feature message: the model's features follow


def for_role(result: dict, role: str) -> dict:
    """``run_core``'s result for a caller of ``role``: only an admin key's 400 lists the model's features
    (a sales or csm key reads which field is wrong, not the model's make-up)."""
    bad = result.get(ERROR_KEY)
    if role != "admin" and bad and FEATURE_LIST in bad.get("error", ""):
        text = bad["error"].split(FEATURE_LIST)[0]
        result = {ERROR_KEY: {**bad, "error": f"{text} (an admin key's answer lists the features the model takes)"}}
    return result


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


# runner_connection: BentoML 1.4.39's client of a dependency closes its aiohttp session every 100 requests
# (or 5 minutes) to open a fresh one, and the close cuts the requests still in flight on it: with 16
# clients on /match, 39 of 387 calls answered 500 (ServerDisconnectedError; BentoML issues #5540, #5544,
# PR #5698). The session is never refreshed here: Matching is one local process that does not move.
@bentoml.service(name="salesml-matching", workers=1, threads=2, traffic={"timeout": 60},
                 runner_connection={"max_requests": 2**31 - 1, "max_age": 1e12})
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
            bento = Matching.bento  # type: ignore[attr-defined]  # a bentoml.Service (bentoml.service is untyped)
            self.core = ScoringCore.load(Settings(), only=("lead_match",), pinned=pinned(bento))
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
            bento = SalesScoring.bento  # type: ignore[attr-defined]  # a bentoml.Service (bentoml.service is untyped)
            self.core = ScoringCore.load(self.settings, pinned=pinned(bento))
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

    def _prepare(self, ctx: bentoml.Context, entities: Sequence[object], requested: str | None
                 ) -> JSONResponse | Prepared:
        """The loaded core, the caller, its view and the request id; or an error response."""
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
        return Prepared(self.core, caller, role, getattr(state, "request_id", None))

    @staticmethod
    def _one_of(ctx: bentoml.Context, ids: list[str] | None, rows: list[dict] | None, ids_name: str
                ) -> JSONResponse | None:
        if (ids is None) == (rows is None):
            return error(ctx, 400, ids_name, f"give exactly one of '{ids_name}' or 'rows'")
        return None

    @api("/intent")
    def intent(self, ctx: bentoml.Context, lead_ids: Optional[Ids] = None, rows: Optional[Rows] = None,
               view: Optional[View] = None) -> Answer:
        """Purchase-intent probability, band and drivers for leads (by id, or feature rows)."""
        bad = self._one_of(ctx, lead_ids, rows, "lead_ids")
        if bad:
            return bad
        prep = self._prepare(ctx, lead_ids or [r.get("lead_id") for r in rows or []], view)
        if isinstance(prep, JSONResponse):
            return prep
        core, caller, role, rid = prep
        return self._call(ctx, lambda: core.intent(caller, lead_ids, rows, role, rid), role)

    @api("/match")
    async def match(self, ctx: bentoml.Context, lead_ids: Ids, rep_ids: Optional[Ids] = None, assign: bool = False,
              top: Annotated[int, Field(ge=1, le=50)] = 5, view: Optional[View] = None) -> Answer:
        """Ranked reps per lead with expected conversion and reasons; ``assign`` adds a
        capacity-respecting proposal for the batch (a proposal only: nothing is assigned)."""
        prep = self._prepare(ctx, lead_ids, view)
        if isinstance(prep, JSONResponse):
            return prep
        core, caller, role, rid = prep
        if bentoml.server_context.service_name is None:  # in-process (tests' ASGI client): no Matching process
            result = await asyncio.to_thread(
                run_core, lambda: core.match(caller, lead_ids, rep_ids, assign, top, role, rid))
        else:
            result = await self.matching.to_async.match(
                key_id=caller.key_id, caller_role=caller.role, lead_ids=lead_ids, rep_ids=rep_ids, assign=assign,
                top=top, role=role, request_id=rid)
        result = for_role(result, role)
        return answer(ctx, sales_match(result) if role == "sales" else result)

    @api("/health")
    def health(self, ctx: bentoml.Context, account_ids: Optional[Ids] = None, rows: Optional[Rows] = None,
               since: Optional[date] = None, view: Optional[View] = None) -> Answer:
        """CHS 0-100, level, churn probability, layer sub-scores, early warning; with ``since``
        also the change since that date and its attribution by layer and feature."""
        bad = self._one_of(ctx, account_ids, rows, "account_ids")
        if bad:
            return bad
        if since is not None and rows is not None:
            return error(ctx, 400, "since", "'since' needs account_ids: past features are looked up by id")
        prep = self._prepare(ctx, account_ids or [r.get("account_id") for r in rows or []], view)
        if isinstance(prep, JSONResponse):
            return prep
        core, caller, role, rid = prep
        return self._call(ctx, lambda: core.health(caller, account_ids, rows, _since(since), role, rid), role)

    @api("/health/history")
    def health_history(self, ctx: bentoml.Context, account_id: Id, view: Optional[View] = None) -> Answer:
        """An account's timeline from the scheduled runs (``salesml score chs``): per run its score,
        level and the change since the run before with its attribution (layers and text: not for
        sales), and the events of each interval (renewals, interactions, pushed usage)."""
        from serving.scores import history

        prep = self._prepare(ctx, [account_id], view)
        if isinstance(prep, JSONResponse):
            return prep
        _, _, role, rid = prep
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

    @api("/events")
    def events(self, ctx: bentoml.Context, table: Literal["lead_events", "usage_weekly"], rows: Rows) -> Answer:
        """Live behaviour rows (the raw-data contract's columns), pushed to the online store. Usage
        rows rescore their accounts: a level that worsened raises its warning at once."""
        key = "lead_id" if table == "lead_events" else "account_id"
        prep = self._prepare(ctx, [str(r.get(key)) for r in rows], None)
        if isinstance(prep, JSONResponse):
            return prep
        core, caller, _, rid = prep
        result = self._call(ctx, lambda: core.events(caller, table, [dict(r) for r in rows], rid))
        if isinstance(result, dict) and table == "usage_weekly" and self.warnings is not None:
            result["warnings"] = self._live_warnings(core, self.warnings, result["entities_updated"])
        return result

    def _live_warnings(self, core: ScoringCore, warnings: WarningStore, account_ids: list[str]) -> dict:
        from datetime import datetime, timezone

        from serving.actions.live import live_warnings

        try:  # the push is stored already: a failed check is said in the answer, not turned into an error
            summary = live_warnings(core, warnings, account_ids, datetime.now(timezone.utc))
        except Exception as exc:  # noqa: BLE001
            log.exception("live warning check failed")
            return {"error": f"the live warning check failed ({type(exc).__name__}); the next run will see it"}
        if summary["raised"] and self.deliverer is not None:
            self.deliverer.notify()
        return summary

    @api("/warnings")
    def warnings_inbox(self, ctx: bentoml.Context, owner: Optional[Id] = None,
                       status: Optional[Literal["open", "handled", "not_applicable", "escalated"]] = None,
                       level: Optional[Literal["yellow", "orange", "red"]] = None,
                       limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 100, view: Optional[View] = None) -> Answer:
        """The warnings inbox, newest first: account, old and new level, score, attribution text
        (not for sales), the level's playbook, owner, raised and due times, status."""
        prep = self._prepare(ctx, [], view)
        if isinstance(prep, JSONResponse):
            return prep
        _, caller, role, rid = prep
        if self.warnings is None:
            return error(ctx, 503, None, f"warnings unavailable: {self.warnings_error}")
        try:  # a key with an owner or a team reads its owner's and its team's warnings only
            rows = self.warnings.inbox(owner=owner, status=status, level=level, limit=limit, caller=caller)
        except WarningError as exc:
            return error(ctx, exc.status, exc.field, str(exc))
        return {"request_id": rid, "warnings": [view_of(w, role) for w in rows]}

    @api("/interventions")
    def interventions(self, ctx: bentoml.Context, warning_id: WarningId, at: Optional[AwareDatetime] = None,
                      playbook_id: Optional[PlaybookId] = None, not_applicable: bool = False,
                      reason: Optional[Text] = None) -> Answer:
        """Record what was done about a warning: the playbook applied, or "not applicable" with a
        reason; who is the calling key. "Not applicable" marks from enough distinct people freeze a
        playbook (the fuse); a key's marks are rate-limited."""
        from serving.actions.warnings import public_view

        prep = self._prepare(ctx, [warning_id], None)
        if isinstance(prep, JSONResponse):
            return prep
        _, caller, _, rid = prep
        if self.warnings is None:
            return error(ctx, 503, None, f"warnings unavailable: {self.warnings_error}")
        try:  # the caller's reach, time skew and mark rate are checked (serving.actions.warnings)
            done = self.warnings.intervene(warning_id, caller, at, playbook_id=playbook_id,
                                           not_applicable=not_applicable, reason=reason)
        except WarningError as exc:
            return error(ctx, exc.status, exc.field, str(exc))
        # as its owner sees it: a held-out warning shows no playbook, nor that it is held out
        return {"request_id": rid, "warning": {**public_view(done), "interventions": done["interventions"]}}

    @api("/outcomes")
    def outcomes(self, ctx: bentoml.Context,
                 outcomes: Annotated[list[Outcome], Field(min_length=1, max_length=MAX_BATCH)]) -> Answer:
        """Observed outcomes (converted / churned) for A/B analysis and performance drift."""
        prep = self._prepare(ctx, [o.entity_id for o in outcomes], None)
        if isinstance(prep, JSONResponse):
            return prep
        core, caller, _, rid = prep
        return self._call(ctx, lambda: core.outcomes(caller, [o.model_dump() for o in outcomes], rid))

    @staticmethod
    def _call(ctx: bentoml.Context, fn: Callable[[], dict], role: str = "admin") -> Answer:
        return answer(ctx, for_role(run_core(fn), role))


# bentoml.service is untyped here: mypy still sees the class it turned into a bentoml.Service
SalesScoring.add_asgi_middleware(Gate)  # type: ignore[attr-defined]
