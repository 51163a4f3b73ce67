"""``salesml drift check``: served traffic (the prediction log) against the reference set of the
model version that served it, Evidently reports, alerts, and an optional retraining trigger.

``run_check`` composes three steps: ``observe`` reads the window and the reference set, ``assess``
compares them (pure: frames in, an ``Assessment`` out), ``publish`` writes the reports, the MLflow
run and the alert.

Exit codes (so a scheduler can act): 0 no drift, 3 drift detected, 4 empty window, 5 columns
missing from the window, 6 no reference set for the served version, 2 other bad input.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from drift.evidently_check import DriftConfig, DriftResult
    from salesml.settings import Settings

EXIT_OK, EXIT_BAD, EXIT_DRIFT, EXIT_EMPTY, EXIT_COLUMNS, EXIT_NO_REFERENCE = 0, 2, 3, 4, 5, 6


class DriftInputError(ValueError):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class Window:
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, window: str | None, start: str | None, end: str | None) -> Window:
        now = datetime.now(timezone.utc)
        if start or end:
            try:
                s = pd.Timestamp(start, tz="UTC") if start else pd.Timestamp("1970-01-01", tz="UTC")
                e = pd.Timestamp(end, tz="UTC") if end else pd.Timestamp(now)
            except ValueError as exc:
                raise DriftInputError(f"--from/--to must be dates or timestamps: {exc}", EXIT_BAD) from None
            return cls(s.to_pydatetime(), e.to_pydatetime())
        try:
            days = pd.Timedelta(window or "7d")
        except ValueError:
            raise DriftInputError(f"--window must look like 7d or 36h, got '{window}'", EXIT_BAD) from None
        return cls(now - days.to_pytimedelta(), now)


NO_ID = {"", "nan", "None", "<NA>"}  # entity_id logged for rows scored without an id


def served_window(log, model: str, window: Window, prediction: str) -> tuple[pd.DataFrame, str]:
    """The window's served rows (features, prediction) and the version that served most of them.

    An entity scored several times in the window (a console refreshing one account) counts once, with its
    latest prediction: the drift tests assume independent rows, and copies of one row would make an
    unchanged distribution look significantly different. Rows scored without an id all count.
    """
    frame = log.feature_frame(model, window.start, window.end)
    if frame.empty:
        raise DriftInputError(f"no {model} predictions between {window.start:%Y-%m-%d %H:%M} and "
                              f"{window.end:%Y-%m-%d %H:%M} UTC: the window is empty", EXIT_EMPTY)
    version = frame["version"].astype(str).value_counts().idxmax()
    frame = frame[frame["version"].astype(str) == version].rename(columns={prediction: "prediction"})
    ids = frame["entity_id"].astype(str)
    repeated = ~ids.isin(NO_ID) & frame.assign(_id=ids).sort_values("ts").duplicated("_id", keep="last")
    return frame[~repeated].copy(), version


def attach_outcomes(log, kind: str, days: int, frame: pd.DataFrame) -> pd.DataFrame:
    """``label`` = the entity's outcome (``kind``) within ``days`` after the prediction, where the
    horizon has already passed or the outcome is in; rows still waiting get no label."""
    out = log.outcomes()
    if out.empty:
        return frame
    out = out[out["outcome"] == kind]
    if out.empty:
        return frame
    m = frame[["entity_id", "ts"]].reset_index().merge(out[["entity_id", "occurred_at", "value"]], on="entity_id")
    m = m[(m["occurred_at"] > m["ts"]) & (m["occurred_at"] <= m["ts"] + timedelta(days=days))]
    hit = m[m["value"].astype(bool)].groupby("index").size()
    matured = frame["ts"] + timedelta(days=days) <= pd.Timestamp.now(tz="UTC")
    label = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    label[matured] = 0
    label[hit.index] = 1
    return frame.assign(label=label) if label.notna().any() else frame


def alert(settings: Settings, model: str, summary: dict) -> dict:
    """Append the alert to the alerts log and, if configured, POST it to the webhook."""
    body = {"time": datetime.now(timezone.utc).isoformat(), "model": model, **summary}
    path = settings.root / "drift" / "alerts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(body, default=str) + "\n")
    if settings.drift_webhook_url:
        req = urllib.request.Request(settings.drift_webhook_url, data=json.dumps(body, default=str).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body["webhook_status"] = r.status
        except OSError as exc:  # the alert is in the log either way
            body["webhook_error"] = str(exc)
    return body


@dataclass
class Observed:
    """What the check reads (``observe``): the served window of the version that served most of it, with
    outcomes where they are in, and that version's reference set."""

    current: pd.DataFrame
    version: str
    reference: pd.DataFrame
    outside: dict[str, int] = field(default_factory=dict)  # served rows left out: reason -> rows


@dataclass
class Assessment:
    """What comparing a window with its reference found (``assess``); nothing is written.

    ``result`` holds the per-column tests (``result.columns``) and the Evidently snapshots, whose
    ``html()`` is the report; ``drift`` is the verdict: dataset, prediction or performance drift."""

    result: DriftResult
    features: list[str]
    label: str | None  # the outcome column compared for performance, when enough outcomes are in
    auc_drop: float | None  # reference ROC-AUC minus the window's, when outcomes are in
    performance_drift: bool
    prediction_drift: bool
    drift: bool

    @property
    def drifted_columns(self) -> list[str]:
        return self.result.columns.loc[self.result.columns["drifted"], "column"].tolist()

    @property
    def moved_clocks(self) -> list[str]:
        """Clocks (features that grow with time) whose test is significant: reported, not in the verdict."""
        clocks = self.result.clocks
        return [] if clocks is None else clocks.loc[clocks["significant"], "column"].tolist()

    def html(self) -> str:
        return self.result.snapshot.get_html_str(as_iframe=False)

    def summary(self, model: str, version: str, window: Window) -> dict:
        r = self.result
        return {"model": model, "version": version, "window": [window.start.isoformat(), window.end.isoformat()],
                "rows": r.rows, "drifted_share": r.drifted_share, "dataset_drift": r.dataset_drift,
                "drifted_columns": self.drifted_columns, "clocks": r.tests.get("clocks", []),
                "moved_clocks": self.moved_clocks, "prediction_drift": self.prediction_drift,
                "auc_drop": self.auc_drop, "performance_drift": self.performance_drift, "drift": self.drift}


def drift_config(settings: Settings, features: list[str] | None = None) -> DriftConfig:
    """The check's tests from the settings; the clocks among ``features`` are the feature definitions'
    (``features.transforms.CLOCK_FEATURES``)."""
    from drift.evidently_check import DriftConfig
    from features.transforms import CLOCK_FEATURES

    return DriftConfig(alpha=settings.drift_alpha, drift_share=settings.drift_share,
                       per_column=settings.drift_per_column, max_rows=settings.drift_max_rows,
                       clocks=frozenset(CLOCK_FEATURES & set(features or ())),
                       period_days=settings.drift_period_days, period_min_rows=settings.drift_period_min_rows)


MIN_OUTCOMES = 50  # matured outcomes in the window before performance is compared


def assess(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig, max_auc_drop: float,
           version: str = "?") -> Assessment:
    """Pure: the served window ``current`` against the ``reference`` set of ``version`` (named in messages).

    The features are the reference's model inputs; performance is compared when at least ``MIN_OUTCOMES``
    rows of ``current`` carry a ``label``. DriftInputError for a window that cannot be compared."""
    from drift.evidently_check import check
    from training.data import IN_SAMPLE

    if IN_SAMPLE in reference:  # predictions (and quality) of the rows the model was fitted on say nothing of new rows
        in_sample = reference[IN_SAMPLE].fillna(False).astype(bool)
        reference = reference.drop(columns=IN_SAMPLE).assign(prediction=reference["prediction"].mask(in_sample))
    current = current.drop(columns=[IN_SAMPLE], errors="ignore")
    features = [c for c in reference.columns if c not in ("event_timestamp", "label", "prediction")]
    missing = [c for c in features if c not in current.columns]
    if missing:
        raise DriftInputError(f"the window lacks feature column(s) {', '.join(missing)} that version {version} "
                              f"was trained on", EXIT_COLUMNS)
    current = current.copy()
    for column in features:  # a feature that is null in every served row comes back from the log as objects
        if current[column].dtype == object and current[column].isna().all():
            current[column] = current[column].astype("float64" if pd.api.types.is_numeric_dtype(reference[column])
                                                      else object)
    if set(config.clocks) - set(features):  # a clock this model does not read (e.g. the intent model)
        config = replace(config, clocks=frozenset(set(config.clocks) & set(features)))
    label = "label" if "label" in current and current["label"].notna().sum() >= MIN_OUTCOMES else None
    cur = current[current["label"].notna()] if label else current
    try:
        result = check(reference, cur.astype({"label": int}) if label else cur, features, config, label=label)
    except ValueError as exc:  # e.g. a feature with no values in the window, or numeric in one and text in the other
        raise DriftInputError(f"cannot compare the window with the reference set: {exc}", EXIT_BAD) from None
    auc_drop = None
    if result.quality and "roc_auc" in result.quality.get("current", {}):
        auc_drop = result.quality["reference"]["roc_auc"] - result.quality["current"]["roc_auc"]
    performance = auc_drop is not None and auc_drop > max_auc_drop
    prediction = bool(result.prediction_drift and result.prediction_drift["drifted"])
    return Assessment(result, features, label, auc_drop, performance, prediction,
                      bool(result.dataset_drift or prediction or performance))


def observe(settings: Settings, model: str, window: Window) -> Observed:
    """The edge that reads: the prediction log's window (with outcomes) and the serving version's reference
    set from the registry (through ``tracking.client(settings)``)."""
    from mlflow.exceptions import MlflowException

    from salesml.modelspec import SpecError
    from serving.predlog import PredictionLog
    from training import tracking

    try:
        spec = settings.spec(model)
    except SpecError as exc:
        raise DriftInputError(str(exc), EXIT_BAD) from None
    if not settings.prediction_log_path.exists():
        raise DriftInputError(f"no prediction log at {settings.prediction_log_path}", EXIT_EMPTY)
    plog = PredictionLog(settings.prediction_log_path)
    current, version = served_window(plog, model, window, spec.serving.prediction)
    current, outside = in_population(settings, spec, current, window)
    settings.ensure_dirs()
    try:
        reference = tracking.load_reference(model, version, settings)
    except ValueError as exc:
        raise DriftInputError(str(exc), EXIT_NO_REFERENCE) from None
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise DriftInputError(f"version {version} of model {model} served the window but is not in the model "
                              "registry: there is no reference set to compare with", EXIT_NO_REFERENCE) from None
    current = attach_outcomes(plog, spec.serving.outcome, spec.horizon_days, current)
    return Observed(current, version, reference, outside)


def in_population(settings: Settings, spec, current: pd.DataFrame,
                  window: Window) -> tuple[pd.DataFrame, dict[str, int]]:
    """The served rows of entities in the model's population, and the count of the others by reason.

    The reference holds what the model was trained on: accounts still customers (and not lapsed), leads
    still open. A console may well ask about a churned account or a converted lead, but its features are a
    former customer's, and comparing them with the training window would report the book's churn as drift.
    The rules are the scoring book's (``serving.scoring_book.gone_by``, the export's outcomes by the window's
    end; the spec's inactivity rule on the served row)."""
    from serving.scoring_book import gone_by

    gone = gone_by(settings, spec, pd.Timestamp(window.end))
    reason = current["entity_id"].astype(str).map(gone)
    churn = spec.label.churn
    if churn is not None and "weeks_since_active" in current:
        lapsed = pd.to_numeric(current["weeks_since_active"], errors="coerce") >= churn.inactive_weeks
        reason = reason.mask(reason.isna() & lapsed, f"lapsed (no activity for {churn.inactive_weeks} weeks)")
    outside = {str(k): int(v) for k, v in reason.value_counts().items()}
    kept = current[reason.isna()].copy()
    if kept.empty:
        raise DriftInputError(f"all {len(current):,} served rows of the window are of entities outside the "
                              f"model's population ({', '.join(f'{k} {v}' for k, v in outside.items())}): "
                              "nothing to compare", EXIT_EMPTY)
    return kept, outside


def _log_run(settings: Settings, model: str, version: str, stamp: str, assessment: Assessment,
             files: list[Path]) -> str:
    """The check as a run of the ``salesml-drift`` experiment, through this settings' client."""
    import time

    from mlflow.entities import Metric, RunStatus
    from mlflow.tracking.context.registry import resolve_tags

    from training import tracking

    client = tracking.client(settings)
    run = client.create_run(tracking.experiment_id(settings, "salesml-drift"), run_name=f"drift-{model}-{stamp}",
                            tags=resolve_tags({"model": model, "version": version, "drift": str(assessment.drift)}))
    run_id = run.info.run_id
    try:
        r = assessment.result
        metrics = {"drifted_share": r.drifted_share, "current_rows": r.rows["current"],
                   **({"auc_drop": assessment.auc_drop} if assessment.auc_drop is not None else {})}
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for path in files:
            client.log_artifact(run_id, str(path), "drift")
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id)
    return run_id


def publish(settings: Settings, model: str, version: str, window: Window, assessment: Assessment,
            outside: dict[str, int] | None = None) -> dict:
    """The edge that writes: the Evidently report (HTML) and JSON summary under the reports folder, the
    Evidently workspace, an MLflow run, and an alert when drifted. Returns the check's summary."""
    from drift.evidently_check import add_to_workspace, save

    stamp = f"{window.start:%Y%m%dT%H%M}-{window.end:%Y%m%dT%H%M}"
    out = settings.reports_dir / "drift" / model
    out.mkdir(parents=True, exist_ok=True)
    html, js = out / f"drift_{stamp}.html", out / f"drift_{stamp}.json"
    save(assessment.result, html, js)
    add_to_workspace(assessment.result, settings.root / "evidently", f"salesml-{model}")
    summary = {**assessment.summary(model, version, window), "outside_population": dict(outside or {}),
               "report": str(html), "summary": str(js)}
    _log_run(settings, model, version, stamp, assessment, [html, js])
    if assessment.drift:
        summary["alert"] = alert(settings, model, dict(summary))
    return summary


def run_check(settings: Settings, model: str, window: Window, retrain: bool = False, log_fn=print) -> tuple[int, dict]:
    """The whole check (``observe``, ``assess``, ``publish``, the optional retrain); returns (exit code, summary)."""
    seen = observe(settings, model, window)
    log_fn(f"drift: {model} v{seen.version}, {len(seen.current):,} served rows (one per scored entity) against "
           f"{len(seen.reference):,} reference rows; tests at a {settings.drift_alpha:g} false-alarm level")
    assessment = assess(seen.reference, seen.current, drift_config(settings, list(seen.reference.columns)),
                        settings.drift_max_auc_drop, seen.version)
    summary = publish(settings, model, seen.version, window, assessment, seen.outside)
    if assessment.drift and retrain:
        from training.pipeline import run as train

        log_fn(f"drift: retraining {model} on the latest window (registered as challenger)")
        trained = train(settings, model, register=True, force_alias="challenger", log=log_fn)
        summary["retrained"] = {"version": trained["version"], "alias": trained["alias"]}
    return (EXIT_DRIFT if assessment.drift else EXIT_OK), summary


def verdict_table(summary: dict, columns: pd.DataFrame | None = None) -> str:
    lines = [f"model {summary['model']} v{summary['version']}: "
             f"{'DRIFT' if summary['drift'] else 'no drift'}",
             f"  features drifted: {len(summary['drifted_columns'])} ({summary['drifted_share']:.0%}): "
             f"{', '.join(summary['drifted_columns']) or '-'}",
             f"  prediction drift: {'yes' if summary['prediction_drift'] else 'no'}",
             *([f"  clocks (grow with time, not in the verdict): {', '.join(summary['clocks'])}; moved: "
                f"{', '.join(summary.get('moved_clocks') or []) or '-'}"] if summary.get("clocks") else []),
             *([f"  left out (outside the model's population, not compared): "
                f"{', '.join(f'{k} {v:,}' for k, v in summary['outside_population'].items())}"]
               if summary.get("outside_population") else []),
             "  performance: " + ("no outcomes yet" if summary["auc_drop"] is None
                                   else f"ROC-AUC drop {summary['auc_drop']:+.3f}"
                                        f"{' (drift)' if summary['performance_drift'] else ''}"),
             f"  report: {summary['report']}"]
    return "\n".join(lines)
