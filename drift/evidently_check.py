"""Reference-vs-current drift check on Evidently 0.7 (no MLflow, no CLI).

``check()`` builds one Evidently ``Report`` with an explicit per-column test for every feature
(``evidently.metrics.ValueDrift(column=..., method=..., threshold=...)``), the same kind of test on
the prediction column, and ``evidently.metrics.DriftedColumnsCount`` for the dataset verdict. Every
score, per-column drifted flag, the drifted share and the dataset verdict are read back from the
snapshot (``Snapshot.dict()``: metric values and test statuses); nothing is recomputed here.

Scores are what the Evidently stattest returns: a distance for ``wasserstein`` (normed by the
reference standard deviation), ``jensenshannon``, ``psi``, ``hellinger``, ... (drifted when the
distance is >= the threshold) or a p-value for ``ks``, ``chisquare``, ``z``, ... (drifted when the
p-value is < the threshold).

Quality (ROC-AUC, precision and recall at a probability threshold) is computed with Evidently's
classification metrics (``evidently.metrics.RocAuc``, ``Precision``, ``Recall`` over a
``DataDefinition`` with a ``BinaryClassification(target=label, prediction_probas=prediction)``), not
sklearn. It runs in a second report (``DriftResult.quality_snapshot``) because it only uses the rows
whose label is known, while drift uses every row; current values come from that snapshot's dict and
reference values from ``snapshot.context.get_reference_metric_result``.

Sampling (``DriftConfig.max_rows``): a frame with more rows than ``max_rows`` is replaced by a seeded
uniform random sample of ``max_rows`` rows drawn without replacement (reference and current drawn
independently from one ``numpy.random.default_rng(seed)``). Error bound: if a window's rows are
i.i.d. draws from a distribution F, a random subset chosen independently of the values is again an
i.i.d. sample, so the Dvoretzky-Kiefer-Wolfowitz inequality (Massart's constant) applies to the
sample's empirical CDF F_n:

    P( sup_x |F_n(x) - F(x)| > eps ) <= 2 exp(-2 n eps^2),  i.e.  sup_x |F_n - F| <= sqrt(ln(2/delta) / (2n))

with probability at least 1 - delta. At n = 100,000 and delta = 0.001 this is sqrt(ln(2000) / 200,000)
= 0.0062 (the one-sided bound, sqrt(ln(1/delta) / (2n)), is 0.0059). With both windows sampled, the
Kolmogorov-Smirnov statistic sup|F_ref - F_cur| of the samples is within 2 x 0.0062 = 0.0123 of the
population value with probability >= 1 - 2 delta (triangle inequality, union bound); category
frequencies (jensenshannon, psi on categories) are each within 2 eps as well. DKW bounds the sup-norm
of the CDF error only: Wasserstein-1 is the integral of |F_ref - F_cur| over x, so for a feature with
range R its sampling error is at most (eps_ref + eps_cur) * R / sd_ref in normed units (plus the error
of the reference sd); for unbounded features DKW gives no bound on it. Where a bound applies, a verdict
can flip only for a score within that margin of its threshold.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently import __version__ as evidently_version
from evidently.legacy.calculations.stattests.registry import get_registered_stattest
from evidently.legacy.core import ColumnType
from evidently.metrics import DriftedColumnsCount, Precision, Recall, RocAuc, ValueDrift

NUMERIC = "numeric"
CATEGORICAL = "categorical"
_EVIDENTLY_TYPE = {NUMERIC: ColumnType.Numerical, CATEGORICAL: ColumnType.Categorical}


@dataclass
class DriftConfig:
    """Drift tests. Numeric defaults match Evidently's own choice for > 1,000 reference rows."""

    drift_share: float = 0.3  # dataset drift when >= this share of features drift
    numeric_method: str = "wasserstein"  # Wasserstein distance normed by the reference sd; drifted when >= 0.1
    numeric_threshold: float = 0.1
    categorical_method: str = "jensenshannon"  # Jensen-Shannon distance; drifted when >= 0.1
    categorical_threshold: float = 0.1
    per_column: dict[str, dict] = field(default_factory=dict)  # {"api_calls": {"method": "psi", "threshold": 0.2}}
    prediction_column: str | None = "prediction"
    max_rows: int | None = None  # sample each frame above this many rows (seeded, without replacement)
    seed: int = 0


@dataclass
class DriftResult:
    columns: pd.DataFrame  # column, type, method, threshold, score, drifted (bool)
    drifted_share: float
    dataset_drift: bool
    prediction_drift: dict | None  # {"method", "threshold", "score", "drifted"}
    quality: dict | None  # {"reference": {...}, "current": {...}}: roc_auc, precision, recall, threshold, rows
    snapshot: object  # the Evidently drift snapshot (HTML / JSON / workspace)
    rows: dict  # {"reference": n, "current": n, "sampled": bool}
    quality_snapshot: object | None = None  # the Evidently classification snapshot when quality was computed


def column_type(reference: pd.Series, current: pd.Series) -> str:
    """numeric for numeric dtypes (bool excluded), categorical for bool/object/string/category."""
    kinds = {_kind(reference), _kind(current)}
    if None in kinds:
        bad = reference.dtype if _kind(reference) is None else current.dtype
        raise ValueError(f"column {reference.name!r} has unsupported dtype {bad} (numeric or categorical only)")
    if len(kinds) > 1:
        raise ValueError(
            f"column {reference.name!r} is {_kind(reference)} ({reference.dtype}) in reference "
            f"but {_kind(current)} ({current.dtype}) in current"
        )
    return kinds.pop()


def _kind(series: pd.Series) -> str | None:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMERIC
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_string_dtype(dtype):
        return CATEGORICAL
    return None


def _test_for(column: str, kind: str, config: DriftConfig) -> tuple[str, float]:
    method, threshold = (
        (config.numeric_method, config.numeric_threshold)
        if kind == NUMERIC
        else (config.categorical_method, config.categorical_threshold)
    )
    override = config.per_column.get(column, {})
    method = override.get("method", method)
    threshold = float(override.get("threshold", threshold))
    # Fails early, with Evidently's list of available tests, on an unknown name or one that does not fit the type.
    get_registered_stattest(method, _EVIDENTLY_TYPE[kind])
    return method, threshold


def _sample(frame: pd.DataFrame, max_rows: int | None, rng: np.random.Generator) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    positions = np.sort(rng.choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[positions]


def _validate(reference, current, features, config, label):
    if len(current) == 0:
        raise ValueError("current window is empty")
    if len(reference) == 0:
        raise ValueError("reference window is empty")
    if config.max_rows is not None and config.max_rows < 1:
        raise ValueError(f"max_rows must be a positive number of rows or None, got {config.max_rows}")
    duplicated = sorted({f for f in features if features.count(f) > 1})
    if duplicated:
        raise ValueError(f"features listed more than once: {duplicated}")
    missing_current = [f for f in features if f not in current.columns]
    missing_reference = [f for f in features if f not in reference.columns]
    if missing_current or missing_reference:
        parts = []
        if missing_current:
            parts.append(f"missing from current: {missing_current}")
        if missing_reference:
            parts.append(f"missing from reference: {missing_reference}")
        raise ValueError("features " + "; ".join(parts))
    if not features:
        raise ValueError("no shared features to compare (features is empty)")
    for special, what in ((config.prediction_column, "prediction column"), (label, "label")):
        if special is not None and special in features:
            raise ValueError(f"the {what} {special!r} must not be listed among the features")
    known = set(features) | ({config.prediction_column} if config.prediction_column else set())
    unknown = sorted(set(config.per_column) - known)
    if unknown:
        raise ValueError(f"per_column names columns that are neither features nor the prediction column: {unknown}")
    for name, override in config.per_column.items():
        extra = sorted(set(override) - {"method", "threshold"})
        if extra:
            raise ValueError(f"per_column[{name!r}] has unknown keys {extra} (allowed: method, threshold)")


def check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    config: DriftConfig,
    label: str | None = None,
    threshold: float = 0.5,
) -> DriftResult:
    """Compare ``current`` against ``reference`` on ``features`` (and the prediction column when both have it).

    Raises ValueError for an empty window, features missing from either frame (named), zero features,
    unsupported dtypes, and unknown Evidently test names. Quality is computed when ``label`` and the
    prediction column (predicted probability of class 1) are in both frames; rows with a missing label
    or prediction are left out of it, and labels must be 0/1 or bool.
    """
    features = list(features)
    _validate(reference, current, features, config, label)

    rng = np.random.default_rng(config.seed)
    rows = {"reference": int(len(reference)), "current": int(len(current)), "sampled": False}
    ref = _sample(reference, config.max_rows, rng)
    cur = _sample(current, config.max_rows, rng)
    rows["sampled"] = len(ref) < len(reference) or len(cur) < len(current)

    pred = config.prediction_column
    has_pred = pred is not None and pred in ref.columns and pred in cur.columns
    tested = features + ([pred] if has_pred else [])

    kinds, tests = {}, {}
    for column in tested:
        kinds[column] = column_type(ref[column], cur[column])
        for name, frame in (("reference", ref), ("current", cur)):
            if frame[column].notna().sum() == 0:
                raise ValueError(f"column {column!r} has no non-missing values in the {name} window")
        tests[column] = _test_for(column, kinds[column], config)

    value_drifts = {c: ValueDrift(column=c, method=m, threshold=t) for c, (m, t) in tests.items()}
    count = DriftedColumnsCount(
        columns=features,
        drift_share=config.drift_share,
        num_method=config.numeric_method,
        num_threshold=config.numeric_threshold,
        cat_method=config.categorical_method,
        cat_threshold=config.categorical_threshold,
        per_column_method={c: tests[c][0] for c in features} or None,
        per_column_threshold={c: tests[c][1] for c in features} or None,
    )
    definition = DataDefinition(
        numerical_columns=[c for c in tested if kinds[c] == NUMERIC],
        categorical_columns=[c for c in tested if kinds[c] == CATEGORICAL],
    )
    report = Report([count, *value_drifts.values()], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur[tested], data_definition=definition),
        reference_data=Dataset.from_pandas(ref[tested], data_definition=definition),
        name="drift check",
    )

    payload = snapshot.dict()
    values = {m["id"]: m["value"] for m in payload["metrics"]}
    statuses: dict[str, list[str]] = {}
    for test in payload["tests"]:
        statuses.setdefault(test["metric_config"]["metric_id"], []).append(str(_status(test["status"])))

    records = []
    for column in tested:
        metric_id = value_drifts[column].metric_id
        method, test_threshold = tests[column]
        records.append(
            {
                "column": column,
                "type": kinds[column],
                "method": method,
                "threshold": test_threshold,
                "score": float(values[metric_id]),
                "drifted": _drifted(statuses, metric_id, column),
            }
        )
    table = pd.DataFrame(records, columns=["column", "type", "method", "threshold", "score", "drifted"])
    feature_table = table[table["column"].isin(features)].reset_index(drop=True)
    prediction_drift = None
    if has_pred:
        row = table[table["column"] == pred].iloc[0]
        prediction_drift = {
            "method": row["method"],
            "threshold": float(row["threshold"]),
            "score": float(row["score"]),
            "drifted": bool(row["drifted"]),
        }

    count_value = values[count.metric_id]
    drifted_share = float(count_value["share"])
    dataset_drift = _drifted(statuses, count.metric_id, "dataset")
    if int(round(count_value["count"])) != int(feature_table["drifted"].sum()):
        raise RuntimeError(
            f"Evidently's DriftedColumnsCount ({count_value['count']}) disagrees with the per-column "
            f"ValueDrift tests ({int(feature_table['drifted'].sum())}); check the stattest configuration"
        )

    quality, quality_snapshot = None, None
    if label is not None and has_pred and label in ref.columns and label in cur.columns:
        quality, quality_snapshot = _quality(ref, cur, label, pred, threshold)

    return DriftResult(
        columns=feature_table,
        drifted_share=drifted_share,
        dataset_drift=dataset_drift,
        prediction_drift=prediction_drift,
        quality=quality,
        snapshot=snapshot,
        rows=rows,
        quality_snapshot=quality_snapshot,
    )


def _status(status) -> str:
    return getattr(status, "value", status)


def _drifted(statuses: dict[str, list[str]], metric_id: str, what: str) -> bool:
    found = statuses.get(metric_id)
    if not found:
        raise RuntimeError(f"Evidently returned no test result for {what}")
    # Evidently's drift tests FAIL when drift is detected and SUCCEED otherwise.
    return "FAIL" in found


def _binary_labels(series: pd.Series, window: str) -> pd.Series:
    values = set(pd.unique(series))
    if not values <= {0, 1}:  # True == 1 and False == 0
        shown = sorted(map(str, values))[:5]
        raise ValueError(f"label values in the {window} window must be 0/1 or bool, got {shown}")
    return series.astype(int)


def _quality(ref, cur, label, pred, threshold):
    frames = {}
    for window, frame in (("reference", ref), ("current", cur)):
        known = frame[[label, pred]].dropna()
        if known.empty:
            return None, None
        frames[window] = pd.DataFrame({label: _binary_labels(known[label], window), pred: known[pred].astype(float)})
    definition = DataDefinition(
        numerical_columns=[pred],
        categorical_columns=[label],
        classification=[BinaryClassification(target=label, prediction_probas=pred, pos_label=1)],
    )
    metrics = {
        "roc_auc": RocAuc(),
        "precision": Precision(probas_threshold=threshold),
        "recall": Recall(probas_threshold=threshold),
    }
    snapshot = Report(list(metrics.values()), include_tests=True).run(
        current_data=Dataset.from_pandas(frames["current"], data_definition=definition),
        reference_data=Dataset.from_pandas(frames["reference"], data_definition=definition),
        name="quality check",
    )
    current_values = {m["id"]: m["value"] for m in snapshot.dict()["metrics"]}
    quality = {}
    for window, frame in frames.items():
        entry = {"rows": int(len(frame)), "positives": int(frame[label].sum()), "threshold": float(threshold)}
        for name, metric in metrics.items():
            if window == "current":
                value = current_values[metric.metric_id]
            else:
                value = snapshot.context.get_reference_metric_result(metric.metric_id).value
            entry[name] = _finite(value)
        quality[window] = entry
    return quality, snapshot


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None  # e.g. ROC-AUC of a window with one class


def summary(result: DriftResult) -> dict:
    """JSON-ready summary: verdict, columns table, prediction drift, quality, row counts."""
    return {
        "evidently_version": evidently_version,
        "dataset_drift": bool(result.dataset_drift),
        "drifted_share": float(result.drifted_share),
        "drifted_columns": [str(c) for c in result.columns.loc[result.columns["drifted"], "column"]],
        "rows": {k: (bool(v) if k == "sampled" else int(v)) for k, v in result.rows.items()},
        "columns": [
            {
                "column": str(r.column),
                "type": str(r.type),
                "method": str(r.method),
                "threshold": float(r.threshold),
                "score": _finite(r.score),
                "drifted": bool(r.drifted),
            }
            for r in result.columns.itertuples(index=False)
        ],
        "prediction_drift": result.prediction_drift,
        "quality": result.quality,
    }


def save(result: DriftResult, html_path: Path, json_path: Path) -> None:
    """Write the Evidently HTML report and the JSON summary.

    The drift report goes to ``html_path``; when quality was computed its Evidently report goes next to
    it as ``<stem>.quality.html`` and the summary names it under ``"quality_html"``.
    """
    html_path, json_path = Path(html_path), Path(json_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    result.snapshot.save_html(str(html_path))
    data = summary(result)
    data["html"] = html_path.name
    if result.quality_snapshot is not None:
        quality_html = html_path.with_name(f"{html_path.stem}.quality.html")
        result.quality_snapshot.save_html(str(quality_html))
        data["quality_html"] = quality_html.name
    json_path.write_text(json.dumps(data, indent=2) + "\n")


def add_to_workspace(result: DriftResult, workspace_dir: Path, project_name: str) -> str:
    """Add the drift snapshot to a local Evidently workspace (created if absent); return the project id.

    The project is found by exact name (the first match) or created. Only ``result.snapshot`` is added,
    without the input data.
    """
    from evidently.ui.workspace import Workspace

    workspace_dir = Path(workspace_dir)
    workspace_dir.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(workspace_dir))
    found = workspace.search_project(project_name)
    project = found[0] if found else workspace.create_project(project_name, description="Evidently drift checks")
    workspace.add_run(project.id, result.snapshot, include_data=False)
    return str(project.id)


__all__ = ["DriftConfig", "DriftResult", "add_to_workspace", "check", "column_type", "save", "summary"]
