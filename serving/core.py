"""The scoring core: a plain class that the BentoML service wraps and tests call directly.

It loads each model by registry alias (``champion``, and ``challenger`` where a share is
configured), the current CHS weights set, the Feast store and the prediction log; it reads
features online by id (or takes them from the request), routes each entity to a variant,
scores, explains, renders the caller's view and appends every prediction to the log.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np
import pandas as pd

from salesml.contract import FLOAT32_MAX, FLOAT_RULE
from salesml.modelspec import ENTITY_TABLES, ModelSpec
from salesml.modelspec import MODEL_NAMES as MODELS
from salesml.settings import Settings
from serving.auth import Caller, view
from serving.errors import ModelUnavailable, RequestError, UnknownFeature
from serving.predlog import DIRECT, PredictionLog, clean, now_utc
from training.data import feature_matrix
from training.drivers import driver_effects, driver_effects_of, top_drivers, top_drivers_of

if TYPE_CHECKING:
    from serving.playbooks import Playbooks

SQLITE_KEYS_PER_SELECT = 900  # bound parameters per statement: under the 999 of older SQLite builds

# Intent bands by probability of conversion within 90 days (score >= value).
INTENT_BANDS = (("A", 0.5), ("B", 0.3), ("C", 0.15))


@dataclass
class Loaded:
    name: str
    version: str
    variant: str  # champion | challenger
    model: Any  # ScoringModel, or HealthModel for chs

    @property
    def columns(self) -> list[str]:
        return list(self.model.spec.columns)

    @property
    def tag(self) -> dict:
        return {"name": self.name, "version": self.version, "variant": self.variant}


def bucket(salt: str, model: str, entity_id: str) -> float:
    """Deterministic position of an entity in [0, 1) for the A/B split of ``model``."""
    h = hashlib.sha256(f"{salt}:{model}:{entity_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def band(p: float) -> str:
    for name, cut in INTENT_BANDS:
        if p >= cut:
            return name
    return "D"


def _active_reps(export_dir) -> list[str]:
    from salesml.contract import TABLES
    from salesml.validation import find_table_file, read_raw, validate_table

    path = find_table_file(export_dir, "reps")
    if path is None:
        return []
    reps, _ = validate_table(read_raw(path, TABLES["reps"]), TABLES["reps"])
    active = reps["active"].fillna(False).astype(bool) if "active" in reps else pd.Series(True, index=reps.index)
    return reps.loc[active, "rep_id"].astype(str).tolist()


def _unscorable(frame: pd.DataFrame, numeric: list[str]) -> dict[int, str]:
    """Row position -> why, for the rows of ``frame`` with a numeric feature that is not a finite
    float32 (missing values are fine: the booster reads them as missing)."""
    if frame.empty or not numeric:
        return {}
    try:  # Feast's and validated rows' columns are numeric already: one conversion (~0.2 ms, not ~2.5)
        x = frame[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):  # text among them: what is not a number is not this check's to judge
        x = frame[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return _unscorable_matrix(x, numeric)


def _unscorable_matrix(x: np.ndarray, numeric: list[str]) -> dict[int, str]:
    """``_unscorable`` of a feature matrix whose first columns are ``numeric`` (``feature_matrix``)."""
    if not len(x) or not numeric:
        return {}
    part = x[:, :len(numeric)]
    with np.errstate(invalid="ignore"):
        wrong = ~np.isnan(part) & (~np.isfinite(part) | (np.abs(part) > FLOAT32_MAX))
    out = {}
    for k in np.flatnonzero(wrong.any(axis=1)):
        j = int(np.flatnonzero(wrong[k])[0])
        out[int(k)] = f"feature {numeric[j]} = {part[k, j]:g} is not {FLOAT_RULE}"
    return out


# Value kinds that Feast's ``feast_value_type_to_python_type`` returns as they are (no feature type given)
PLAIN_VALUES = frozenset({"double_val", "float_val", "int64_val", "int32_val", "bool_val", "string_val"})


def _python_value(v, convert):
    """A stored ValueProto (or None) as Feast's ``to_dict()`` gives it: plain numbers and text read
    directly (a third of a 1,000-account read went into the general conversion), the rest by ``convert``."""
    if v is None:
        return None
    kind = v.WhichOneof("val")
    if kind is None:
        return None
    return getattr(v, kind) if kind in PLAIN_VALUES else convert(v)


@dataclass
class Batch:
    """A request's entities and their features without a frame: ``columns`` maps each feature to one
    value per entity (Feast's ``to_dict()`` of an online read, or the request's rows as a frame);
    ``known`` is False where no view holds the entity."""

    key: str
    ids: list[str]
    columns: Any
    known: np.ndarray
    direct: bool = False  # the request gave the rows itself
    _matrices: dict = field(default_factory=dict)

    def matrix(self, spec) -> np.ndarray:
        """Every entity's model input for ``spec`` (built once per spec and request)."""
        if id(spec) not in self._matrices:
            self._matrices[id(spec)] = (spec, feature_matrix(self.columns, spec, len(self.ids)))
        return self._matrices[id(spec)][1]

    def features(self, i: int, x: np.ndarray, spec) -> dict:
        """The features an answer shows for entity ``i`` (``x`` its model input row): numbers as the
        model read them, categoricals as stored."""
        values = x[:len(spec.numeric)].tolist()  # finite or NaN: the unscorable rows are out
        out: dict = {c: (v if v == v else None) for c, v in zip(spec.numeric, values)}
        for c in spec.categorical:
            out[c] = clean(self.columns[c][i])
        return out

    def frame(self, rows: list[int]) -> pd.DataFrame:
        """The rows ``rows`` as a frame of the raw values (for the attribution of a change)."""
        return pd.DataFrame({c: [self.columns[c][i] for i in rows] for c in self.columns if c != self.key},
                            index=[self.ids[i] for i in rows])


def _registry_models(settings: Settings, only: tuple[str, ...]) -> dict[str, dict[str, Loaded]]:
    """Each model's champion (and challenger where a share is configured) by alias; a model without a
    champion is left out (an export that does not feed it: the others are served)."""
    from mlflow.exceptions import MlflowException

    from training import tracking

    client = tracking.client(settings)
    models: dict[str, dict[str, Loaded]] = {}
    for name in only:
        aliases = ["champion"] + (["challenger"] if settings.challenger_share.get(name, 0) > 0 else [])
        try:
            champion = client.get_model_version_by_alias(name, "champion")
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            continue
        models[name] = {}
        for alias in aliases:
            mv = champion if alias == "champion" else client.get_model_version_by_alias(name, alias)
            # by version, not alias: the version logged with each prediction is the one loaded
            model = tracking.load_scoring_model(f"models:/{name}/{mv.version}")
            models[name][alias] = Loaded(name, str(mv.version), alias, model)
    return models


class ScoringCore:
    def __init__(self, settings: Settings, models: dict[str, dict[str, Loaded]], store, log: PredictionLog,
                 active_reps: list[str], raw_dir=None, specs: dict[str, ModelSpec] | None = None):
        self.settings = settings
        self.models = models
        self.store = store
        self.log = log
        self.active_reps = active_reps
        self.raw_dir = raw_dir or settings.export_dir
        self.specs = specs or {m: settings.spec(m, self.raw_dir) for m in MODELS}
        self._services: dict[str, Any] = {}
        # False: models that score a feature matrix (every XGBoost model, numeric linear ones) answer
        # without a per-request frame. True: the frame path for every model (kept as the tests' oracle).
        self.frame_path = False
        self.playbooks: Playbooks | None
        from serving.playbooks import PlaybookError, load_playbooks

        try:  # each level's playbook (salesml/specs/playbooks.yaml or SALESML_PLAYBOOKS_FILE)
            self.playbooks, self.playbooks_error = load_playbooks(settings), None
        except PlaybookError as exc:  # scores still answer; the playbook field says why it is empty
            self.playbooks, self.playbooks_error = None, str(exc)
        self.frozen_playbooks: Callable[[], set[str]] = set  # the service points it at the warnings store

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: Settings | None = None, only: tuple[str, ...] = MODELS, pinned: dict | None = None
             ) -> ScoringCore:
        """Models, CHS weights, Feast store, prediction log, active reps. ``only``: the models to load (the
        /match process needs lead_match alone). ``pinned``: the models a Bento carries (``serving.bento.pinned``),
        served as champions; without it (outside a Bento) the champion, and the challenger where a share is
        configured, by alias from the MLflow registry. Either way ``tracking.load_scoring_model`` rebuilds
        each model from its portable files."""
        from features.store import open_store
        from training import tracking
        from training.recalibrate_run import weight_store

        settings = settings or Settings()
        tracking.configure(settings)
        if pinned is not None:
            models = {name: {"champion": Loaded(name, p.version, "champion", tracking.load_scoring_model(str(p.path)))}
                      for name, p in pinned.items() if name in only}
        else:
            models = _registry_models(settings, only)
        if not models:
            raise ModelUnavailable(f"no model has a champion in {settings.tracking_uri}: run `salesml train` first")
        current = weight_store(settings).current()
        if current and "chs" in models:  # the quarterly weights set in force, for every CHS variant
            for loaded in models["chs"].values():
                loaded.model = replace(loaded.model, weights=dict(current["weights"]),
                                       weights_version=str(current["version"]))
        for loaded in models.get("chs", {}).values():
            loaded.model = replace(loaded.model, thresholds=dict(settings.chs_levels))
        active = _active_reps(settings.export_dir) if "lead_match" in models else []
        log = PredictionLog(settings.prediction_log_path, synchronous=settings.log_synchronous)
        return cls(settings, models, open_store(settings), log, active, settings.export_dir)

    @property
    def ready(self) -> bool:
        return any(self.models.get(m, {}).get("champion") for m in MODELS) and self.store is not None

    def require(self, model: str) -> None:
        if not self.models.get(model, {}).get("champion"):
            raise ModelUnavailable(f"model '{model}' is not served: it has no champion in the registry "
                                   f"(train it with `salesml train {model}`)")

    def describe(self) -> dict:
        return {m: [v.tag for v in variants.values()] for m, variants in self.models.items()}

    # --- routing and features -------------------------------------------------------------------
    def route(self, model: str, entity_id: str) -> Loaded:
        variants = self.models[model]
        share = self.settings.challenger_share.get(model, 0.0)
        if "challenger" in variants and bucket(self.settings.experiment_salt, model, entity_id) < share:
            return variants["challenger"]
        return variants["champion"]

    def _service(self, name: str):
        if name not in self._services:
            self._services[name] = self.store.get_feature_service(name)
        return self._services[name]

    def online(self, service: str, key: str, ids: list[str]) -> pd.DataFrame:
        """Online features by id; ``_known`` is False where no view holds the entity."""
        from features.training_sets import numbers_as_floats

        batch = self.online_batch(service, key, ids)  # Feast's read minus its response objects (below)
        df = numbers_as_floats(pd.DataFrame(batch.columns), self._service(service))  # counts, flags as floats
        df["_known"] = batch.known
        return df

    def online_batch(self, service: str | None, key: str, ids: list[str], view: str | None = None) -> Batch:
        """``online`` without a frame, values as Feast's ``to_dict()`` gives them (the casts to model inputs
        happen once, in ``feature_matrix``; the frame and its casts cost ~6 ms). On Feast's SQLite online
        store each view is selected from Feast's own table (``_read_sqlite_view``: 0.1 ms for one account
        and 89 ms for 1,000 where ``get_online_features`` took 0.5 and 322 ms); elsewhere, and for a service
        with an on-demand view, ``get_online_features`` (on Redis it reads every view of a request in one
        pipelined round trip)."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore
        from feast.type_map import feast_value_type_to_python_type

        ids = [str(i) for i in ids]
        columns: dict[str, list] = {key: ids}
        if view is not None:  # one view's features (the reps' state), not a service's
            fv = self.store.get_feature_view(view)
            views: list[tuple[Any, list[str]]] | None = [(fv, [f.name for f in fv.features])]
            features: Any = [f"{view}:{f.name}" for f in fv.features]
        else:
            views, features = self._online_views(cast(str, service)), self._service(cast(str, service))
        online_store = self.store._get_provider().online_store
        if views is None or not isinstance(online_store, SqliteOnlineStore):
            columns = self.store.get_online_features(features=features, entity_rows=[{key: i} for i in ids]).to_dict()
        else:
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            entity_keys = [EntityKey(join_keys=[key], entity_values=[Value(string_val=i)]) for i in ids]
            for view, names in views:
                for name, values in self._read_sqlite_view(online_store, view, names, entity_keys).items():
                    columns[name] = [_python_value(v, feast_value_type_to_python_type) for v in values]
        known = np.zeros(len(ids), dtype=bool)
        for c, values in columns.items():
            if c != key:
                known |= np.fromiter((v is not None and v == v for v in values), dtype=bool, count=len(ids))
        return Batch(key, ids, columns, known)

    def _read_sqlite_view(self, online_store, view, names: list[str], entity_keys: list) -> dict[str, list]:
        """Feature name -> one stored ValueProto (or None) per entity key, selected from the view's table in
        Feast's SQLite online store, rows as Feast wrote them (its ``online_read`` also sorts them and turns
        every row's timestamp into a datetime: 201 ms for 1,000 accounts where this takes 89)."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.sqlite import _quote_id, _table_id
        from feast.protos.feast.types.Value_pb2 import Value

        config = self.store.config
        wanted: dict[str, list] = {name: [None] * len(entity_keys) for name in names}
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys]
        at: dict[bytes, list[int]] = {}
        for j, k in enumerate(keys):
            at.setdefault(k, []).append(j)
        table = _quote_id(_table_id(config.project, view, config.registry.enable_online_feature_view_versioning))
        unique = list(at)
        for a in range(0, len(unique), SQLITE_KEYS_PER_SELECT):
            part = unique[a:a + SQLITE_KEYS_PER_SELECT]
            sql = (f"SELECT entity_key, feature_name, value FROM {table} "
                   f"WHERE entity_key IN ({','.join('?' * len(part))})")
            for k, name, blob in online_store._get_conn(config).execute(sql, part):
                if name in wanted:
                    value = Value()
                    value.ParseFromString(blob)
                    for j in at[k]:
                        wanted[name][j] = value
        return wanted

    def _online_views(self, service: str) -> list[tuple[Any, list[str]]] | None:
        """(feature view, feature names) per projection of ``service``; None where one is on-demand."""
        cache = self.__dict__.setdefault("_views_of", {})
        if service not in cache:
            from feast.errors import FeatureViewNotFoundException
            from feast.feature_view import FeatureView

            views: list[tuple[Any, list[str]]] | None = []
            for proj in self._service(service).feature_view_projections:
                try:
                    view = self.store.get_feature_view(proj.name)
                except FeatureViewNotFoundException:  # an on-demand view: Feast reads the service whole
                    views = None
                    break
                if not isinstance(view, FeatureView) or proj.name_alias:
                    views = None
                    break
                assert views is not None
                views.append((view, [f.name for f in proj.features]))
            cache[service] = views
        return cache[service]

    def _rows_batch(self, rows: list[dict], spec, key: str, service: str) -> Batch:
        frame = self._rows_frame(rows, spec, key, service)
        return Batch(key, frame[key].astype(str).tolist(), frame, np.ones(len(frame), dtype=bool), direct=True)

    def _matrix(self, model: str) -> bool:
        return not self.frame_path and all(getattr(v.model, "matrix_ready", False)
                                           for v in self.models[model].values())

    def _matrix_groups(self, model: str, batch: Batch, results: list):
        """``_groups`` of a batch: (variant, row positions, their model input), an unscorable row
        getting its own error in ``results``."""
        by: dict[str, list[int]] = {}
        for i in np.flatnonzero(batch.known):
            by.setdefault(self.route(model, batch.ids[i]).variant, []).append(int(i))
        groups = []
        for v, idx in by.items():
            loaded = self.models[model][v]
            x = batch.matrix(loaded.model.spec)[idx]
            bad = _unscorable_matrix(x, list(loaded.model.spec.numeric))
            for k, why in bad.items():
                entity, key = batch.ids[idx[k]], batch.key
                results[idx[k]] = {key: entity, "error": f"{key} {entity} cannot be scored: its stored {why}"}
            keep = [k for k in range(len(idx)) if k not in bad]
            if keep:
                groups.append((loaded, [idx[k] for k in keep], x[keep]))
        return groups

    @staticmethod
    def _unknown_batch(batch: Batch, results: list) -> None:
        for i in np.flatnonzero(~batch.known):
            results[i] = {batch.key: batch.ids[i], "error": f"unknown {batch.key}: no features online"}

    def _service_features(self, service: str) -> set[str]:
        """Every feature the service serves (a model may use fewer: those empty in training are left out)."""
        return {f.name for p in self._service(service).feature_view_projections for f in p.features}

    def _rows_frame(self, rows: list[dict], spec, key: str, service: str | None = None) -> pd.DataFrame:
        columns = list(spec.columns)
        known = set(columns) | (self._service_features(service) if service else set())
        unknown = sorted({k for r in rows for k in r if k not in known and k != key})
        if unknown:
            raise UnknownFeature(f"rows: unknown feature(s) {', '.join(unknown)}; "
                                 f"expected some of {', '.join(columns)}")
        numeric = set(spec.numeric)
        for i, r in enumerate(rows):
            for k, v in r.items():
                if k in numeric and v is not None and not isinstance(v, bool) and (
                        isinstance(v, str) or not math.isfinite(float(v)) or abs(float(v)) > FLOAT32_MAX):
                    raise UnknownFeature(f"rows[{i}].{k}: expected a finite number within +-{FLOAT32_MAX:.4g}, "
                                         f"true/false or null, got {v!r}")
                if k in spec.categorical and v is not None and not isinstance(v, str):
                    raise UnknownFeature(f"rows[{i}].{k}: expected a string or null, got {v!r}")
        df = pd.DataFrame(rows).reindex(columns=[key, *columns])
        for c in spec.numeric:  # flags may come as true/false: every numeric feature is a float, as in training
            df[c] = np.array([np.nan if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
                              for v in df[c]], dtype=np.float64)
        df[key] = [r.get(key) or f"row-{i}" for i, r in enumerate(rows)]
        df["_known"] = True
        return df

    # --- logging --------------------------------------------------------------------------------
    def _record(self, request_id, caller: Caller, endpoint, entity_type, entity_id, loaded: Loaded | None,
                features: dict, outputs: dict, variant: str | None = None, cleaned: bool = False) -> dict:
        """``cleaned``: ``features`` is plain JSON data already (``Batch.features``)."""
        return {"request_id": request_id, "ts": now_utc(), "role": caller.role, "api_key_id": caller.key_id,
                "endpoint": endpoint, "entity_type": entity_type, "entity_id": str(entity_id),
                "model": loaded.name if loaded else endpoint, "version": loaded.version if loaded else "",
                "variant": variant or (loaded.variant if loaded else "direct"),
                "features": features if cleaned else clean(features), "outputs": clean(outputs)}

    # --- intent --------------------------------------------------------------------------------
    def intent(self, caller: Caller, lead_ids: list[str] | None = None, rows: list[dict] | None = None,
               role: str | None = None, request_id: str | None = None) -> dict:
        self.require("intent")
        request_id = request_id or uuid.uuid4().hex
        role = role or caller.role
        spec = self.models["intent"]["champion"].model.spec
        if self._matrix("intent"):
            return self._intent_matrix(caller, lead_ids, rows, role, request_id)
        frame = (self.online(self.specs["intent"].feature_service, "lead_id", lead_ids) if lead_ids
                 else self._rows_frame(rows or [], spec, "lead_id", self.specs["intent"].feature_service))
        results: list[dict | None] = [None] * len(frame)
        records = []
        for loaded, idx in self._groups("intent", frame, "lead_id", results):
            part = frame.iloc[idx]
            p = loaded.model.predict_proba(part)
            why = driver_effects(loaded.model.contributions(part).drop(columns="bias"))
            for k, i in enumerate(idx):
                row = part.iloc[k]
                out = {"lead_id": str(row["lead_id"]), "probability": float(p[k]), "band": band(float(p[k])),
                       "drivers": why[k], "features": {c: clean(row.get(c)) for c in loaded.columns},
                       "model": loaded.tag}
                results[i] = out
                records.append(self._record(request_id, caller, "intent", "lead", row["lead_id"], loaded,
                                            out["features"], {"probability": out["probability"],
                                                              "band": out["band"]},
                                            variant=DIRECT if rows is not None and not lead_ids else None))
        self._unknown(frame, "lead_id", results)
        answer = {"request_id": request_id, "results": [view(cast(dict, r), role) for r in results]}
        self.log.append_predictions(records)  # only once the answer is built: the log holds what was served
        return answer

    def _intent_matrix(self, caller: Caller, lead_ids, rows, role: str, request_id: str) -> dict:
        service = self.specs["intent"].feature_service
        batch = (self.online_batch(service, "lead_id", lead_ids) if lead_ids
                 else self._rows_batch(rows or [], self.models["intent"]["champion"].model.spec, "lead_id", service))
        results: list[dict | None] = [None] * len(batch.ids)
        records = []
        for loaded, idx, x in self._matrix_groups("intent", batch, results):
            p = loaded.model.predict_codes(x)
            why = driver_effects_of(loaded.model.contributions_codes(x), loaded.columns)
            for k, i in enumerate(idx):
                lead, prob = batch.ids[i], float(p[k])
                out = {"lead_id": lead, "probability": prob, "band": band(prob), "drivers": why[k],
                       "features": batch.features(i, x[k], loaded.model.spec), "model": loaded.tag}
                results[i] = out
                records.append(self._record(request_id, caller, "intent", "lead", lead, loaded, out["features"],
                                            {"probability": prob, "band": out["band"]},
                                            variant=DIRECT if batch.direct else None, cleaned=True))
        self._unknown_batch(batch, results)
        answer = {"request_id": request_id, "results": [view(cast(dict, r), role) for r in results]}
        self.log.append_predictions(records)  # only once the answer is built: the log holds what was served
        return answer

    def _groups(self, model: str, frame: pd.DataFrame, key: str, results: list):
        """(variant, row positions) for the known rows of ``frame`` that its model can score.

        A row holding a value the booster refuses (inf, or beyond float32: stored before the
        contract bounded pushes, or by a path that skipped it) gets its own error in ``results``
        and is left out, so the rest of the batch is scored: one entity, never the batch."""
        known = np.flatnonzero(frame["_known"].to_numpy())
        by: dict[str, list[int]] = {}
        for i in known:
            by.setdefault(self.route(model, str(frame.iloc[i][key])).variant, []).append(int(i))
        groups = []
        for v, idx in by.items():
            loaded = self.models[model][v]
            bad = _unscorable(frame.iloc[idx], [c for c in loaded.model.spec.numeric if c in frame.columns])
            for k, why in bad.items():
                entity = str(frame.iloc[idx[k]][key])
                results[idx[k]] = {key: entity, "error": f"{key} {entity} cannot be scored: its stored {why}"}
            if len(bad) < len(idx):
                groups.append((loaded, [i for k, i in enumerate(idx) if k not in bad]))
        return groups

    @staticmethod
    def _unknown(frame: pd.DataFrame, key: str, results: list) -> None:
        for i, known in enumerate(frame["_known"].to_numpy()):
            if not known:
                results[i] = {key: str(frame.iloc[i][key]), "error": f"unknown {key}: no features online"}

    # --- health --------------------------------------------------------------------------------
    def health(self, caller: Caller, account_ids: list[str] | None = None, rows: list[dict] | None = None,
               since: datetime | None = None, role: str | None = None, request_id: str | None = None,
               record: bool = True) -> dict:
        """``record=False``: score without logging a served prediction (the live warning check, which
        no client asked for, must not count in drift windows or A/B exposure)."""
        self.require("chs")
        request_id = request_id or uuid.uuid4().hex
        role = role or caller.role
        spec = self.models["chs"]["champion"].model.spec
        if self._matrix("chs"):
            return self._health_matrix(caller, account_ids, rows, since, role, request_id, record)
        frame = (self.online(self.specs["chs"].feature_service, "account_id", account_ids) if account_ids
                 else self._rows_frame(rows or [], spec, "account_id", self.specs["chs"].feature_service))
        previous = self._features_at(frame, since) if since is not None and account_ids else None
        results: list[dict | None] = [None] * len(frame)
        records = []
        frozen = self.frozen_playbooks()
        for loaded, idx in self._groups("chs", frame, "account_id", results):
            part = frame.iloc[idx]
            scored = loaded.model.health(part)
            for k, i in enumerate(idx):
                row, h = part.iloc[k], scored[k]
                acc = str(row["account_id"])
                change = None
                if previous is not None and since is not None and acc in previous.index:
                    change = (loaded.model.attribute_change(previous.loc[acc], row),
                              loaded.model.health(previous.loc[[acc]])[0]["score"])
                results[i] = self._health_answer(acc, h, {c: clean(row.get(c)) for c in loaded.columns}, loaded,
                                                 frozen, role, since, change)
                records.append(self._record(request_id, caller, "health", "account", acc, loaded,
                                            results[i]["features"], self._health_outputs(h),
                                            variant=DIRECT if rows is not None and not account_ids else None))
        self._unknown(frame, "account_id", results)
        answer = {"request_id": request_id, "results": [view(cast(dict, r), role) for r in results]}
        if record:
            self.log.append_predictions(records)  # only once the answer is built: the log holds what was served
        return answer

    def _health_matrix(self, caller: Caller, account_ids, rows, since, role: str, request_id: str,
                       record: bool) -> dict:
        service = self.specs["chs"].feature_service
        batch = (self.online_batch(service, "account_id", account_ids) if account_ids
                 else self._rows_batch(rows or [], self.models["chs"]["champion"].model.spec, "account_id", service))
        previous = None
        if since is not None and account_ids:  # one point-in-time read for every known account
            previous = self._features_at_ids([batch.ids[i] for i in np.flatnonzero(batch.known)], since)
        results: list[dict | None] = [None] * len(batch.ids)
        records = []
        frozen = self.frozen_playbooks()
        early = batch.columns["early_warning"] if "early_warning" in batch.columns else None
        for loaded, idx, x in self._matrix_groups("chs", batch, results):
            scored = loaded.model.health_codes(x, [early[i] for i in idx] if early is not None else None)
            changes: dict[int, tuple[dict, float]] = {}
            if previous is not None and since is not None:
                at = [k for k, i in enumerate(idx) if batch.ids[i] in previous.index]
                if at:
                    rows_at = [idx[k] for k in at]
                    found, before = loaded.model.attribute_change_rows(
                        previous.loc[[batch.ids[i] for i in rows_at]], batch.frame(rows_at))
                    changes = {k: (c, float(b)) for k, c, b in zip(at, found, before)}
            for k, i in enumerate(idx):
                acc, h = batch.ids[i], scored[k]
                results[i] = self._health_answer(acc, h, batch.features(i, x[k], loaded.model.spec), loaded, frozen,
                                                 role, since, changes.get(k))
                records.append(self._record(request_id, caller, "health", "account", acc, loaded,
                                            results[i]["features"], self._health_outputs(h),
                                            variant=DIRECT if batch.direct else None, cleaned=True))
        self._unknown_batch(batch, results)
        answer = {"request_id": request_id, "results": [view(cast(dict, r), role) for r in results]}
        if record:
            self.log.append_predictions(records)  # only once the answer is built: the log holds what was served
        return answer

    def _health_answer(self, acc: str, h: dict, features: dict, loaded: Loaded, frozen: set[str], role: str,
                       since: datetime | None, change: tuple[dict, float] | None) -> dict:
        """One account's /health result; ``change``: its attribution since ``since`` and the score then."""
        out = {"account_id": acc, **h, "playbook": self._playbook(h["level"], frozen), "features": features,
               "model": loaded.tag}
        if change is not None and since is not None:
            what, before = change
            out["change"] = {"since": since.isoformat(), "previous_score": before,
                             "points": what["change"], "layers": what["layers"], "text": what["text"]}
        out["notes"] = self._notes(acc) if role == "admin" else None
        return out

    @staticmethod
    def _health_outputs(h: dict) -> dict:
        return {k: h[k] for k in ("score", "level", "churn_probability", "weights_version")}

    def _playbook(self, level: str, frozen: set[str]) -> dict | None:
        if self.playbooks is None:
            return {"id": None, "version": None, "note": self.playbooks_error}
        offer = self.playbooks.pick(level, frozen)
        if offer.playbook is None:
            return {"id": None, "version": offer.version, "note": offer.note}
        return {"id": offer.playbook.id, "version": offer.version, "title": offer.playbook.title}

    def _features_at(self, frame: pd.DataFrame, when: datetime) -> pd.DataFrame:
        """Point-in-time CHS features of the known accounts at ``when`` (offline store).

        Raises RequestError (field ``since``) when ``when`` is in the future or an account has no
        feature value at that time: a previous score must not be invented from empty features."""
        return self._features_at_ids(frame.loc[frame["_known"], "account_id"].astype(str).tolist(), when)

    def _features_at_ids(self, ids: list[str], when: datetime) -> pd.DataFrame:
        if not ids:
            return pd.DataFrame()
        from features.training_sets import numbers_as_floats
        from salesml.contract import MIN_TIMESTAMP

        if when > now_utc() or when < MIN_TIMESTAMP:
            first, last = self._history_range(ids)
            raise RequestError("since", f"since {when.date()} lies outside the accounts' known history: "
                                        f"available from {first.date()} to {last.date()}")
        entity = pd.DataFrame({"account_id": ids, "event_timestamp": pd.Timestamp(when)})
        service = self._service(self.specs["chs"].feature_service)
        df = numbers_as_floats(self.store.get_historical_features(entity_df=entity, features=service).to_df(), service)
        df = df.drop_duplicates("account_id").set_index("account_id", drop=False)
        feats = [c for c in df.columns if c not in ("account_id", "event_timestamp")]
        empty = df.index[~df[feats].notna().any(axis=1)].tolist() if feats else df.index.tolist()
        if empty:
            first, last = self._history_range(empty)
            raise RequestError("since", f"since {when.date()} lies outside the known history of account(s) "
                                        f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}: "
                                        f"available from {first.date()} to {last.date()}")
        return df

    def _history_range(self, ids: list[str]) -> tuple[pd.Timestamp, pd.Timestamp]:
        """Earliest and latest feature time of these accounts over the CHS service's views (offline files)."""
        import duckdb

        service = self._service(self.specs["chs"].feature_service)
        files = [str(p) for p in (self.settings.feature_data_dir / f"{proj.name}.parquet"
                                  for proj in service.feature_view_projections) if p.exists()]
        with duckdb.connect() as con:
            found = con.execute(
                "SELECT min(event_timestamp), max(event_timestamp) FROM read_parquet(?, union_by_name=true) "
                "WHERE account_id IN (SELECT unnest(?))", [files, ids]).fetchone()
        first, last = found if found is not None else (None, None)
        now = pd.Timestamp(now_utc())
        return (pd.Timestamp(first) if first is not None else now), (pd.Timestamp(last) if last is not None else now)

    def _notes(self, account_id: str, n: int = 3) -> list[dict]:
        import pyarrow.dataset as ds

        path = self.raw_dir / "interactions.parquet"
        if not path.exists():
            return []
        t = ds.dataset(path).to_table(filter=ds.field("account_id") == account_id,
                                      columns=["occurred_at", "channel", "notes"]).to_pandas()
        t = t.dropna(subset=["notes"]).sort_values("occurred_at").tail(n)
        return [{"at": r.occurred_at.isoformat(), "channel": r.channel, "note": r.notes} for r in t.itertuples()]

    # --- lead matching -------------------------------------------------------------------------
    def match(self, caller: Caller, lead_ids: list[str], rep_ids: list[str] | None = None, assign: bool = False,
              top: int = 5, role: str | None = None, request_id: str | None = None) -> dict:
        from features.transforms import lead_rep_fit
        from training.assignment import propose_assignment

        self.require("lead_match")
        request_id = request_id or uuid.uuid4().hex
        role = role or caller.role
        reps = list(dict.fromkeys(rep_ids or self.active_reps))
        # lead-level features (the pairs' rep side is joined below): the intent model's service
        leads = self.online(self.specs["intent"].feature_service, "lead_id", lead_ids)
        rep_feats = self.online_reps(reps)
        results: list[dict | None] = [None] * len(leads)
        self._unknown(leads, "lead_id", results)
        unknown_reps = rep_feats.loc[~rep_feats["_known"], "rep_id"].tolist()
        rep_feats = rep_feats[rep_feats["_known"]]
        known_reps = rep_feats["rep_id"].tolist()
        if not known_reps and rep_ids:
            raise RequestError("rep_ids", f"none of rep_ids is a known rep: {', '.join(unknown_reps[:5])}"
                                          f"{' ...' if len(unknown_reps) > 5 else ''}")
        if not known_reps:
            raise ModelUnavailable("no active rep has features online: nothing to match leads with")
        records, proposals = [], []
        if known_reps:
            for loaded, idx in self._groups("lead_match", leads, "lead_id", results):
                part = leads.iloc[idx].drop(columns="_known")
                pairs = part.merge(rep_feats.drop(columns="_known"), how="cross")
                pairs = pd.concat([pairs, lead_rep_fit(pairs)], axis=1)
                matrix = self._matrix("lead_match")
                x = feature_matrix(pairs, loaded.model.spec, len(pairs)) if matrix else None
                pm = (loaded.model.predict_codes(x) if x is not None else loaded.model.predict_proba(pairs)
                      ).reshape(len(part), len(known_reps))
                order = np.argsort(-pm, axis=1, kind="stable")[:, :top]  # each lead's best reps
                # reasons only for the pairs shown: TreeSHAP on every lead x rep pair cost 3.4 of 4.5 s
                shown = (np.arange(len(part))[:, None] * len(known_reps) + order).ravel()
                why = (top_drivers_of(loaded.model.contributions_codes(x[shown]), loaded.model.spec.columns)
                       if x is not None else
                       top_drivers(loaded.model.contributions(pairs.iloc[shown]).drop(columns="bias")))
                lead_rows = part.to_dict("records")
                for k, i in enumerate(idx):
                    ranked = [{"rep_id": known_reps[j], "expected_conversion": float(pm[k, j]),
                               "reasons": [f for f, _ in why[k * order.shape[1] + t]]}
                              for t, j in enumerate(order[k])]
                    lead = str(lead_rows[k]["lead_id"])
                    results[i] = {"lead_id": lead, "ranked_reps": ranked, "model": loaded.tag}
                    records.append(self._record(request_id, caller, "match", "lead", lead, loaded,
                                                {c: v for c, v in lead_rows[k].items() if c != "lead_id"},
                                                {"top_rep": ranked[0]["rep_id"] if ranked else None,
                                                 "top_expected": ranked[0]["expected_conversion"] if ranked else None}))
                proposals.append((idx, pm))
        out: dict[str, Any] = {"request_id": request_id, "unknown_rep_ids": unknown_reps}
        if assign and proposals:
            full = np.zeros((len(leads), len(known_reps)))
            for idx, pm in proposals:
                full[idx] = pm
            slots = np.maximum(rep_feats["capacity"].fillna(20).to_numpy(float)
                               - rep_feats["open_leads"].fillna(0).to_numpy(float), 0).astype(int)
            known = np.zeros(len(leads), dtype=bool)  # the leads scored (not unknown, not unscorable)
            for idx, _ in proposals:
                known[idx] = True
            sol = propose_assignment(full[known], slots)
            ids = leads.loc[known, "lead_id"].astype(str).tolist()
            out["assignment"] = {
                "status": "proposal",  # nothing is assigned on anyone's behalf
                "expected_conversions": sol.total_expected(),  # over the leads assigned (NaN: unassigned)
                "proposals": [{"lead_id": lead, "rep_id": known_reps[j] if j >= 0 else None,
                               "expected_conversion": float(e) if j >= 0 else None}
                              for lead, j, e in zip(ids, sol.rep_index, sol.expected)],
            }
        out["results"] = [view(cast(dict, r), role) for r in results]
        self.log.append_predictions(records)  # only once the answer is built
        return out

    def online_reps(self, rep_ids: list[str]) -> pd.DataFrame:
        """The reps' state online (``online_batch`` of the ``rep_state`` view), ``_known`` as in ``online``."""
        batch = self.online_batch(None, "rep_id", rep_ids, view="rep_state")
        df = pd.DataFrame(batch.columns)
        df["_known"] = batch.known
        return df

    # --- events and outcomes -------------------------------------------------------------------
    def events(self, caller: Caller, table: str, rows: list[dict], request_id: str | None = None) -> dict:
        from features.store import push_events

        request_id = request_id or uuid.uuid4().hex
        pushed = push_events(self.settings, self.raw_dir, table, pd.DataFrame(rows), store=self.store)
        key = "lead_id" if table == "lead_events" else "account_id"
        return {"request_id": request_id, "accepted": len(rows),
                "entities_updated": sorted(pushed[key].astype(str).unique().tolist())}

    def outcomes(self, caller: Caller, rows: list[dict], request_id: str | None = None) -> dict:
        """Store observed outcomes after checking each one: its kind fits its entity type (the specs'
        ``serving.outcome``), the entity is in the export, and it happened between the contract's
        earliest timestamp and now. One bad outcome refuses the batch; nothing is stored then."""
        from features.store import known_ids
        from salesml.contract import FUTURE_TOLERANCE, MIN_TIMESTAMP

        request_id = request_id or uuid.uuid4().hex
        now = now_utc()
        kinds: dict[str, set[str]] = {}
        for spec in self.specs.values():
            kinds.setdefault(spec.serving.entity_type, set()).add(spec.serving.outcome)
        for i, r in enumerate(rows):
            etype = r["entity_type"]
            if r["outcome"] not in kinds.get(etype, ()):
                raise RequestError(f"outcomes[{i}].outcome", f"a {etype}'s outcome is one of "
                                   f"{', '.join(sorted(kinds.get(etype, ()))) or 'none'}, got '{r['outcome']}'")
            when = pd.Timestamp(r["occurred_at"])
            if when < MIN_TIMESTAMP or when > pd.Timestamp(now) + FUTURE_TOLERANCE:
                raise RequestError(f"outcomes[{i}].occurred_at", f"a time between {MIN_TIMESTAMP.date()} and now, "
                                   f"got {r['occurred_at']}")
            if r["entity_id"] not in known_ids(self.raw_dir, ENTITY_TABLES[etype]):
                raise RequestError(f"outcomes[{i}].entity_id", f"unknown {etype} '{r['entity_id']}': not in the "
                                   f"export's {ENTITY_TABLES[etype]} table")
        n = self.log.append_outcomes([{**r, "received_at": now, "source": caller.key_id, "request_id": request_id}
                                      for r in rows])
        return {"request_id": request_id, "stored": n}
