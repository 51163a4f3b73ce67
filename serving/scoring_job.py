"""Scheduled scoring of the whole book: every active account (CHS) or lead (intent) at one date.

The models are the registry champions as ``ScoringCore.load`` loads them (CHS with the quarterly
weights in force and the configured level thresholds): the scores are the ones ``/health`` and
``/intent`` would give for the same features. Features come from the offline store point in time
at the end of the ``as_of`` day (UTC), all entities in one ``get_historical_features`` call.

The CHS change is attributed against the previous stored run of the model (the latest with an
earlier as_of): its features are recomputed point in time at that run's date and both dates go
through the current model, so a change reflects what moved in the data, not a model or weight
change. Where the recomputed earlier score differs from the stored one (the model, the weights
or the data behind that date changed since) the row says ``restated``; the summary counts them.

Each run: a dated score file (serving/scores.py), the latest CHS published to the ``chs_scores``
Feast view and the online store, an MLflow run in ``salesml-scoring``, and the transitions (level
worsened, early warning turned on) that serving/warnings.py turns into warnings.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from salesml.settings import Settings
from serving import scores
from serving.scoring_book import Book, end_of_day, read_book, resolve_as_of
from training.chs import DEFAULT_LEVELS
from training.models import train_threads

EXPERIMENT = "salesml-scoring"
LEVEL_ORDER = (*DEFAULT_LEVELS, "red")  # better to worse: green < yellow < orange < red
RANK = {level: i for i, level in enumerate(LEVEL_ORDER)}
CHUNK = 250_000  # most rows scored at a time: bounded memory, a progress step; threads take chunks in turn
TRANSITIONS = ["account_id", "as_of", "old_level", "new_level", "score", "previous_score", "early_warning",
               "previous_early_warning", "churn_probability", "change_text", "change_points"]


@dataclass
class ScoreRun:
    model: str
    as_of: date
    frame: pd.DataFrame  # the stored scores
    path: Path
    run_id: str  # MLflow run in salesml-scoring
    summary: dict
    transitions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRANSITIONS))
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)  # entity id, reason


class _Progress:
    """``progress(stage, done, total)``: a callable, a rich ``Progress`` (one task, updated), or None."""

    def __init__(self, target):
        self.target, self.task = target, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.target is None:
            return
        if hasattr(self.target, "add_task"):
            if self.task is None:
                self.task = self.target.add_task(stage, total=total)
            self.target.update(self.task, description=stage, completed=done, total=total)
        else:
            self.target(stage, done, total)


def score_book(settings: Settings, model: str = "chs", as_of: date | None = None, progress=None,
               core=None) -> ScoreRun:
    """Score every active entity of ``model`` ("chs" or "intent") at ``as_of`` and store the run.

    ``as_of``: default the export's declared end, else the latest feature time of the model's
    views (see ``scoring_book.resolve_as_of``). ``core``: an already loaded ``ScoringCore`` to take
    the champion from (loading one reads the registry: tens of seconds)."""
    from features.store import open_store
    from serving.core import ScoringCore

    if model not in scores.MODELS:
        raise ValueError(f"model must be one of {', '.join(scores.MODELS)}, got '{model}'")
    step = _Progress(progress)
    started = time.perf_counter()
    step("loading models", 0, 1)
    core = core or ScoringCore.load(settings, only=(model,))
    core.require(model)
    loaded = core.models[model]["champion"]
    spec = settings.spec(model)
    store = open_store(settings)
    service = store.get_feature_service(spec.feature_service)
    as_of, as_of_source = resolve_as_of(settings, spec, service, as_of)
    step("reading the book", 0, 1)
    book = read_book(settings, spec, store, service, as_of)
    if book.frame.empty:
        why = ", ".join(f"{n} {r}" for r, n in book.left_out["reason"].value_counts().items()) or "none known"
        raise ValueError(f"no active {spec.entity} to score for model '{model}' at {as_of}: of {book.size} in the "
                         f"book, left out: {why}; {book.not_yet_created} created later")
    step("scoring", 0, len(book.frame))
    if model == "chs":
        frame, prev_date = _score_chs(settings, loaded.model, book, store, service, as_of, step)
    else:
        frame, prev_date = _score_intent(loaded.model, book, step), None
    frame.insert(1, "as_of", as_of)
    frame.insert(2, "scored_at", pd.Timestamp.now(tz="UTC").floor("us"))
    frame.insert(3, "model_version", loaded.version)
    transitions = level_transitions(frame, as_of) if prev_date else pd.DataFrame(columns=TRANSITIONS)
    summary = _summary(model, as_of, as_of_source, loaded, book, frame, transitions, prev_date)
    step("storing", 0, 1)
    return _record(settings, model, as_of, frame, book, transitions, summary, started, step)


def _score_chs(settings: Settings, model, book: Book, store, service, as_of: date, step):
    """Health of every account of the book and its change since the previous stored run."""
    key = "account_id"
    prev_date = scores.previous(settings, "chs", as_of)
    prev = before = None
    if prev_date:
        prev = scores.read(settings, "chs", prev_date, [key, "score", "level", "early_warning"])
        # the same accounts, point in time at the previous run's date (rows pair by position)
        entity = pd.DataFrame({key: book.frame[key].to_numpy(), "event_timestamp": end_of_day(prev_date)})
        before = store.get_historical_features(entity_df=entity, features=service).to_df()
    return chs_frame(model, book.frame, before, prev, prev_date, step), prev_date


def chs_frame(model, frame: pd.DataFrame, before: pd.DataFrame | None = None, prev: pd.DataFrame | None = None,
              prev_date: date | None = None, step=None) -> pd.DataFrame:
    """The stored CHS columns for the accounts of ``frame`` (features, RangeIndex): health, and where
    ``prev`` (the previous run's account_id, score, level, early_warning) has the account, its change
    since then attributed from ``before`` (features at the previous run's date, row i = row i of
    ``frame``). In memory and vectorized; ``benchmark`` measures this."""
    key = "account_id"
    step = step or (lambda *_: None)
    if prev is None:
        prev = pd.DataFrame({key: pd.Series(dtype=object), "score": np.nan, "level": None, "early_warning": None})
    prev = prev.drop_duplicates(key)
    at = pd.Index(prev[key]).get_indexer(frame[key])  # each account's row in the previous run; -1: none
    has_prev = at >= 0
    threads = train_threads()
    size = max(1, min(CHUNK, -(-len(frame) // threads)))
    bounds = [(a, min(a + size, len(frame))) for a in range(0, len(frame), size)]

    def one(a: int, z: int) -> pd.DataFrame:
        part, has = frame.iloc[a:z], has_prev[a:z]
        change = None
        if has.any():
            assert before is not None  # rows with a previous run have features read at it
            b = before.iloc[a:z]
            # the whole chunk when it can: health_frame then reuses the chunk's prepared inputs
            change = model.attribute_changes(b, part) if has.all() else model.attribute_changes(b[has], part[has])
        health = model.health_frame(part)
        return health.join(change) if change is not None else health

    # chunks side by side, one XGBoost thread each: numpy and XGBoost release the interpreter lock
    _xgboost_threads(model, 1 if threads > 1 and len(bounds) > 1 else threads)
    parts, done = [None] * len(bounds), 0
    if threads == 1 or len(bounds) < 2:
        for i, (a, z) in enumerate(bounds):
            parts[i] = one(a, z)
            step("scoring", z, len(frame))
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = {pool.submit(one, a, z): i for i, (a, z) in enumerate(bounds)}
            for f in as_completed(futures):
                i = futures[f]
                parts[i] = f.result()
                done += bounds[i][1] - bounds[i][0]
                step("scoring", done, len(frame))
    out = pd.concat(parts) if parts else model.health_frame(frame)
    out.insert(0, key, frame[key].to_numpy())
    for col in ("change_points", "change_contract", "change_behaviour", "change_relationship", "before_score"):
        if col not in out:
            out[col] = np.nan
    if "change_text" not in out:
        out["change_text"] = None
    def previous(column: str, dtype, missing) -> np.ndarray:
        values = np.append(prev[column].to_numpy(dtype=dtype), np.array([missing], dtype=dtype))
        return values[at]  # -1 picks the appended "missing"

    previous_as_of = np.where(has_prev, np.asarray(prev_date, dtype=object), np.asarray(None, dtype=object))
    out["previous_as_of"] = pd.Series(previous_as_of, index=out.index, dtype=object)
    out["previous_score"] = previous("score", np.float64, np.nan)
    out["previous_level"] = previous("level", object, None)
    out["previous_early_warning"] = pd.array(previous("early_warning", object, None), dtype="boolean")
    # the earlier date scores differently now than when it ran: the model, weights or data changed since
    out["restated"] = has_prev & (out["before_score"].to_numpy() != out["previous_score"].to_numpy())
    return out.drop(columns="before_score").reset_index(drop=True)


def _xgboost_threads(model, n: int) -> None:
    """Set the prediction threads of every XGBoost booster of ``model`` (CHS: its layers and churn model)."""
    for m in [*getattr(model, "layers", {}).values(), getattr(model, "full", model)]:
        booster = getattr(m, "booster", None)
        if booster is not None and hasattr(booster, "get_booster"):
            booster.get_booster().set_param({"nthread": n})


def _score_intent(model, book: Book, step) -> pd.DataFrame:
    """Probability, band and drivers of every lead of the book (the /intent payload, as columns)."""
    from serving.core import INTENT_BANDS
    from training import treeshap
    from training.data import prepare_features
    from training.drivers import driver_columns

    frame, parts = book.frame, []
    for a in range(0, len(frame), CHUNK):
        part = frame.iloc[a:a + CHUNK]
        x = prepare_features(part, model.spec)
        p = np.asarray(model.predict_proba(x, prepared=True), dtype=np.float64)
        out = pd.DataFrame({"lead_id": part["lead_id"].to_numpy(), "probability": p,
                            "band": np.select([p >= cut for _, cut in INTENT_BANDS], [b for b, _ in INTENT_BANDS],
                                              "D").astype(object)})
        for name, column in driver_columns(treeshap.contributions(model, x), model.spec.columns, 3).items():
            out[name] = column  # the drivers /intent shows
        parts.append(out)
        step("scoring", min(a + CHUNK, len(frame)), len(frame))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["lead_id", "probability", "band"])


def level_transitions(frame: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Accounts whose level worsened or whose early warning turned on since the previous run."""
    both = frame[frame["previous_level"].notna()]
    worse = both["level"].map(RANK) > both["previous_level"].map(RANK)
    on, was_on = (both[c].fillna(False).astype(bool) for c in ("early_warning", "previous_early_warning"))
    warned = on & ~was_on
    t = both[worse.to_numpy() | warned.to_numpy()]
    out = t.rename(columns={"previous_level": "old_level", "level": "new_level"})
    return out.assign(as_of=as_of)[TRANSITIONS].reset_index(drop=True)


def _summary(model, as_of, as_of_source, loaded, book: Book, frame, transitions, prev_date) -> dict:
    s = {"model": model, "as_of": f"{as_of}", "as_of_source": as_of_source, "model_version": loaded.version,
         "book": book.size, "scored": len(frame), "left_out": book.left_out["reason"].value_counts().to_dict(),
         "not_yet_created": book.not_yet_created, "previous_as_of": f"{prev_date}" if prev_date else None}
    if model == "intent":
        s["bands"] = {b: int(n) for b, n in frame["band"].value_counts().sort_index().items()}
        return s
    s["weights_version"] = str(loaded.model.weights_version)
    s["levels"] = {lv: int((frame["level"] == lv).sum()) for lv in LEVEL_ORDER}
    if prev_date is None:
        s["note"] = "no previous run of this model: no changes attributed and no transitions"
        return s
    both = frame[frame["previous_level"].notna()]
    moves = (both["previous_level"] + "->" + both["level"]).value_counts()
    s["moves"] = {k: int(v) for k, v in moves.items() if k.split("->")[0] != k.split("->")[1]}
    s["worsened"] = int((both["level"].map(RANK) > both["previous_level"].map(RANK)).sum())
    s["improved"] = int((both["level"].map(RANK) < both["previous_level"].map(RANK)).sum())
    s["transitions"] = len(transitions)
    s["early_warning_on"] = int((transitions["early_warning"].fillna(False).astype(bool)
                                 & ~transitions["previous_early_warning"].fillna(False).astype(bool)).sum())
    s["new_since_previous"] = int(frame["previous_level"].isna().sum())
    s["restated"] = int(frame["restated"].sum())
    return s


def _record(settings: Settings, model, as_of, frame, book, transitions, summary, started, step) -> ScoreRun:
    """MLflow run, dated file, and (for the latest CHS run) the online scores. Logged through a client
    bound to ``settings``: the process-wide MLflow state (tracking URI, active run) stays as it was."""
    from mlflow.entities import Metric, Param, RunStatus

    from training import tracking

    client = tracking.client(settings)
    run = client.create_run(tracking.experiment_id(settings, EXPERIMENT), run_name=f"score-{model}-{as_of}",
                            tags={"model": model, "as_of": f"{as_of}", "git_commit": tracking.git_commit()})
    rid = run.info.run_id
    try:
        frame["run_id"] = rid
        path = scores.write(settings, model, as_of, frame)
        published = 0
        if model == "chs" and scores.latest(settings, "chs") == as_of:  # an older date re-run stays offline
            step("publishing online", 0, 1)
            published = publish(settings, frame, book.left_out, as_of)
        summary.update(path=str(path), published_online=published,
                       seconds=round(time.perf_counter() - started, 2))
        summary["per_second"] = round(len(frame) / max(summary["seconds"], 1e-9), 1)
        now = int(time.time() * 1000)
        params = {k: summary[k] for k in ("model", "as_of", "as_of_source", "model_version", "weights_version",
                                          "previous_as_of") if k in summary}
        client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in _metrics(summary).items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.log_dict(rid, summary, "summary.json")
        if model == "chs":
            import matplotlib.pyplot as plt

            fig = scores.plot_levels(scores.level_counts(settings))
            client.log_figure(rid, fig, "plots/levels_by_run.png")
            plt.close(fig)
    except BaseException:
        client.set_terminated(rid, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(rid, RunStatus.to_string(RunStatus.FINISHED))
    step("done", 1, 1)
    return ScoreRun(model, as_of, frame, path, rid, summary, transitions, book.left_out)


def _metrics(summary: dict) -> dict[str, float]:
    m = {"accounts_scored" if summary["model"] == "chs" else "leads_scored": summary["scored"],
         "left_out": sum(summary["left_out"].values()), "seconds": summary["seconds"]}
    m.update({f"left_out_{_slug(k)}": v for k, v in summary["left_out"].items()})
    m.update({f"level_{k}": v for k, v in summary.get("levels", {}).items()})
    m.update({f"band_{k}": v for k, v in summary.get("bands", {}).items()})
    m.update({f"moves_{k.replace('->', '_to_')}": v for k, v in summary.get("moves", {}).items()})
    m.update({k: summary[k] for k in ("worsened", "improved", "transitions", "early_warning_on", "restated",
                                      "new_since_previous") if k in summary})
    return {k: float(v) for k, v in m.items()}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def publish(settings: Settings, frame: pd.DataFrame, left_out: pd.DataFrame, as_of: date) -> int:
    """Write the run as ``latest.parquet`` (the ``chs_scores`` view's source) and to the online store;
    left-out accounts get a row too (no score, ``status`` the reason), so a churned account does not
    keep serving its last score. Registers the view on first use. Returns the rows written online."""
    from features.store import apply, open_store

    cols = ["score", "level", "churn_probability", "layer_contract", "layer_behaviour", "layer_relationship"]
    rows = frame[["account_id", *cols]].assign(
        early_warning=frame["early_warning"].astype("Float64").astype(float), status="scored",
        weights_version=frame["weights_version"].astype(str))
    gone = left_out.rename(columns={"reason": "status"}).assign(weights_version=None)
    latest = pd.concat([rows, gone], ignore_index=True) if len(gone) else rows
    latest["as_of"] = f"{as_of}"
    latest["model_version"] = str(frame["model_version"].iloc[0]) if len(frame) else None
    latest["event_timestamp"] = pd.Series(end_of_day(as_of), index=latest.index).astype("datetime64[us, UTC]")
    scores.write_atomic(latest, scores.latest_path(settings))
    store = open_store(settings)
    if "chs_scores" not in {v.name for v in store.list_feature_views()}:
        apply(settings, progress=lambda _: None)
        store = open_store(settings)
    store.write_to_online_store("chs_scores", latest, allow_registry_cache=False)
    return len(latest)
