"""``salesml drift check``: served traffic (the prediction log) against the reference set of the
model version that served it, Evidently reports, alerts, and an optional retraining trigger.

Exit codes (so a scheduler can act): 0 no drift, 3 drift detected, 4 empty window, 5 columns
missing from the window, 6 no reference set for the served version, 2 other bad input.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd

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


def alert(settings, model: str, summary: dict) -> dict:
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


def run_check(settings, model: str, window: Window, retrain: bool = False, log_fn=print) -> tuple[int, dict]:
    """The whole check; returns (exit code, summary)."""
    from drift.evidently_check import DriftConfig, add_to_workspace, check, save
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
    tracking.configure(settings)
    from mlflow.exceptions import MlflowException

    try:
        reference = tracking.load_reference(model, version)
    except ValueError as exc:
        raise DriftInputError(str(exc), EXIT_NO_REFERENCE) from None
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise DriftInputError(f"version {version} of model {model} served the window but is not in the model "
                              "registry: there is no reference set to compare with", EXIT_NO_REFERENCE) from None
    features = [c for c in reference.columns if c not in ("event_timestamp", "label", "prediction")]
    missing = [c for c in features if c not in current.columns]
    if missing:
        raise DriftInputError(f"the window lacks feature column(s) {', '.join(missing)} that version {version} "
                              f"was trained on", EXIT_COLUMNS)
    for column in features:  # a feature that is null in every served row comes back from the log as objects
        if current[column].dtype == object and current[column].isna().all():
            current[column] = current[column].astype("float64" if pd.api.types.is_numeric_dtype(reference[column])
                                                      else object)
    current = attach_outcomes(plog, spec.serving.outcome, spec.horizon_days, current)
    config = DriftConfig(alpha=settings.drift_alpha, drift_share=settings.drift_share,
                         per_column=settings.drift_per_column, max_rows=settings.drift_max_rows)
    label = "label" if "label" in current and current["label"].notna().sum() >= 50 else None
    cur = current[current["label"].notna()] if label else current
    log_fn(f"drift: {model} v{version}, {len(current):,} served rows (one per scored entity) against "
           f"{len(reference):,} reference rows; tests at a {settings.drift_alpha:g} false-alarm level")
    try:
        result = check(reference, cur.astype({"label": int}) if label else cur, features, config, label=label)
    except ValueError as exc:  # e.g. a feature with no values in the window, or numeric in one and text in the other
        raise DriftInputError(f"cannot compare the window with the reference set: {exc}", EXIT_BAD) from None
    stamp = f"{window.start:%Y%m%dT%H%M}-{window.end:%Y%m%dT%H%M}"
    out = settings.reports_dir / "drift" / model
    out.mkdir(parents=True, exist_ok=True)
    html, js = out / f"drift_{stamp}.html", out / f"drift_{stamp}.json"
    save(result, html, js)
    add_to_workspace(result, settings.root / "evidently", f"salesml-{model}")
    perf_drop = None
    if result.quality and "roc_auc" in result.quality.get("current", {}):
        perf_drop = result.quality["reference"]["roc_auc"] - result.quality["current"]["roc_auc"]
    perf_drift = perf_drop is not None and perf_drop > settings.drift_max_auc_drop
    pred_drift = bool(result.prediction_drift and result.prediction_drift["drifted"])
    drifted = bool(result.dataset_drift or pred_drift or perf_drift)
    summary = {"model": model, "version": version, "window": [window.start.isoformat(), window.end.isoformat()],
               "rows": result.rows, "drifted_share": result.drifted_share, "dataset_drift": result.dataset_drift,
               "drifted_columns": result.columns.loc[result.columns["drifted"], "column"].tolist(),
               "prediction_drift": pred_drift, "auc_drop": perf_drop, "performance_drift": perf_drift,
               "drift": drifted, "report": str(html), "summary": str(js)}
    import mlflow

    tracking.use_experiment(settings, "salesml-drift")
    with mlflow.start_run(run_name=f"drift-{model}-{stamp}"):
        mlflow.set_tags({"model": model, "version": version, "drift": str(drifted)})
        mlflow.log_metrics({"drifted_share": result.drifted_share, "current_rows": result.rows["current"],
                            **({"auc_drop": perf_drop} if perf_drop is not None else {})})
        mlflow.log_artifact(str(html), "drift")
        mlflow.log_artifact(str(js), "drift")
    if drifted:
        summary["alert"] = alert(settings, model, {k: v for k, v in summary.items() if k != "alert"})
        if retrain:
            from training.pipeline import run as train

            log_fn(f"drift: retraining {model} on the latest window (registered as challenger)")
            trained = train(settings, model, register=True, force_alias="challenger", log=log_fn)
            summary["retrained"] = {"version": trained["version"], "alias": trained["alias"]}
    return (EXIT_DRIFT if drifted else EXIT_OK), summary


def verdict_table(summary: dict, columns: pd.DataFrame | None = None) -> str:
    lines = [f"model {summary['model']} v{summary['version']}: "
             f"{'DRIFT' if summary['drift'] else 'no drift'}",
             f"  features drifted: {len(summary['drifted_columns'])} ({summary['drifted_share']:.0%}): "
             f"{', '.join(summary['drifted_columns']) or '-'}",
             f"  prediction drift: {'yes' if summary['prediction_drift'] else 'no'}",
             "  performance: " + ("no outcomes yet" if summary["auc_drop"] is None
                                   else f"ROC-AUC drop {summary['auc_drop']:+.3f}"
                                        f"{' (drift)' if summary['performance_drift'] else ''}"),
             f"  report: {summary['report']}"]
    return "\n".join(lines)
