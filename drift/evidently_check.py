"""Reference-vs-current drift check on Evidently 0.7 (no MLflow, no CLI).

``check()`` builds one Evidently ``Report`` with an explicit per-column test for every feature
(``evidently.metrics.ValueDrift(column=..., method=..., threshold=...)``), the same kind of test on
the prediction column, and ``evidently.metrics.DriftedColumnsCount`` for the dataset verdict. Every
score, per-column drifted flag, the drifted share and the dataset verdict are read back from the
snapshot (``Snapshot.dict()``: metric values and test statuses); nothing is recomputed here.

Calibrated per-column tests. Every column gets a two-sample test that returns a p-value, so a
configured false-alarm level means what it says:

* numeric with more than ``discrete_max_values`` (5) distinct values: Evidently's ``ks`` (two-sample
  Kolmogorov-Smirnov, ``scipy.stats.ks_2samp``); exact under no drift for continuous values and
  conservative (fewer false alarms than the level) where values tie;
* numeric with at most 5 distinct values (0/1 flags, tiers, counts that are mostly 0) and categorical
  (including bool): ``chisquare_2sample``, the chi-square test of homogeneity of the 2 x k table of
  reference and current counts (``scipy.stats.chi2_contingency`` without continuity correction), registered
  here as an Evidently stattest so it runs inside ``ValueDrift`` and shows in the reports. For two values
  its p-value equals Evidently's ``z`` test's (pooled two-proportion z-test; chi-square = z squared).
  Evidently's own ``chisquare`` is not used: it is a goodness-of-fit test that treats the reference
  frequencies as exact, ignores the reference's own sampling noise and, on two equal-sized samples from one
  distribution, flags 20-25% of columns at a nominal 5% (``tests/drift``).

A column drifts when its p-value is below ``alpha / m`` (Bonferroni), m = the number of tested columns
(features, plus the prediction when both windows have it). Under no drift the chance that *any* column
(feature or prediction) is flagged is then at most ``alpha`` (the family-wise error rate), so the
dataset-level alarm (share of drifted features >= ``drift_share``, or the prediction drifted) fires on
at most ``alpha`` of drift-free windows whatever ``drift_share`` is. (Holm's step-down procedure raises
its first alarm exactly when Bonferroni does, so the dataset-level rate would be the same.) These are
p-values: on large windows even a small, real shift reaches significance (at 100,000 rows a two-sample KS
test at alpha / m = 0.05 / 40 flags a CDF difference of about 0.009); ``per_column`` can give a feature a
distance test (``wasserstein``, ``psi``, ... with its distance threshold, drifted when the distance is >= it)
where only a large shift should count. A distance test or an explicit threshold is outside the calibrated
family (the column still counts in m, so the others stay conservative). The level holds for windows whose
rows are independent draws, one per entity: several rows of one account in a window (weekly rows, a
console re-scoring it) are not, and make an unchanged distribution look significantly different.

Time. A served window is the book at one moment; the reference is one observation per entity spread over
the training window, so a feature that moves with time alone differs from it whatever the traffic does.
Clocks (``DriftConfig.clocks``: features that grow with elapsed time by construction, declared once in
``features.transforms.CLOCK_FEATURES``) are tested at the same level but reported apart (``DriftResult.clocks``)
and left out of the verdict and of m. Every other column must also pass a yardstick when the reference has
its time column: its distance from the reference (Kolmogorov-Smirnov statistic; total variation distance for
discrete and categorical columns) must exceed mean + 3 sd of the distances between each reference period
(``period_days``, a quarter, with at least ``period_min_rows`` values) and the rest of the reference, over at
least 3 such periods: a window no further from the reference than the reference's own seasons are is not
drift. The yardstick only clears significant columns, so the false-alarm bound above still holds; with few
rows per period it is loose (on the demo's 600 accounts a KS distance of about 0.2-0.25), and the Evidently
report shows the significance tests before it. Nullable Int64/Float64 columns are read as float64 and
nullable booleans as categories, as a training set holds them.

Quality (ROC-AUC, precision and recall at a probability threshold) is computed with Evidently's
classification metrics (``evidently.metrics.RocAuc``, ``Precision``, ``Recall`` over a
``DataDefinition`` with a ``BinaryClassification(target=label, prediction_probas=prediction)``), not
sklearn. It runs in a second report (``DriftResult.quality_snapshot``) because it only uses the rows
whose label is known, while drift uses every row; current values come from that snapshot's dict and
reference values from ``snapshot.context.get_reference_metric_result``.

Large windows (``DriftConfig.max_rows``): a window with more than k = ``max_rows`` rows is summarised,
column by column, by a deterministic k-point quantile sketch before the tests. For a numeric column with
N values (missing ones left out, their share kept), the sketch holds the order statistics at positions
floor((i + 1/2) N / k), i = 0 .. k-1, of the sorted values; a categorical or bool column gets each value
repeated in proportion to its count (largest remainders). The sketch's empirical CDF G_k is then within
1/k of the window's empirical CDF F_N at every x (sup |G_k - F_N| <= 1/k: no probability involved,
unlike a random sample), so the Kolmogorov-Smirnov statistic of two sketched windows is within 2/k
(0.00002 at k = 100,000) of the statistic of the full windows, and category shares within 1/k. The
p-value is computed at the sketch's size, which is smaller than the window's, so on a sketch a test is
(up to that 2/k) never more sensitive than on every row: a flag on the sketch is a flag on the full
window, and the false-alarm level still holds. A random sample would instead add its own sampling noise
to every statistic (DKW: sup |F_n - F_N| <= 0.0062 at n = 100,000 only with probability 0.999), and with
p-value tests at alpha / m that noise alone flips a verdict now and then. Sketching breaks the pairing of
values across columns, which the per-column tests do not use; the quality metrics, which pair each
label with its prediction, use a seeded random sample of ``max_rows`` whole rows (``seed``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently import __version__ as evidently_version
from evidently.legacy.calculations.stattests.registry import (
    StatTest,
    get_registered_stattest,
    register_stattest,
)
from evidently.legacy.core import ColumnType
from evidently.metrics import DriftedColumnsCount, Precision, Recall, RocAuc, ValueDrift
from scipy.stats import chi2_contingency

NUMERIC = "numeric"
CATEGORICAL = "categorical"
_EVIDENTLY_TYPE = {NUMERIC: ColumnType.Numerical, CATEGORICAL: ColumnType.Categorical}
CHI2_TWO_SAMPLE = "chisquare_2sample"
# Evidently stattests whose score is a p-value (drifted when below the threshold); the rest are distances.
P_VALUE_METHODS = frozenset({
    "ks", "chisquare", "z", "g_test", "fisher_exact", "TVD", "anderson", "cramer_von_mises", "epps_singleton",
    "mannw", "t_test", "empirical_mmd", CHI2_TWO_SAMPLE,
})


def _chi2_two_sample(reference: pd.Series, current: pd.Series, feature_type, threshold: float):
    """Chi-square test of homogeneity of the 2 x k table of reference and current value counts."""
    table = pd.concat([reference.value_counts(), current.value_counts()], axis=1).fillna(0).to_numpy().T
    if table.shape[1] < 2:  # one value in both windows: nothing can have moved
        return 1.0, False
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    return p_value, p_value < threshold


register_stattest(
    StatTest(
        name=CHI2_TWO_SAMPLE,
        display_name="two-sample chi-square p_value",
        allowed_feature_types=[ColumnType.Categorical, ColumnType.Numerical],
        default_threshold=0.05,
    ),
    _chi2_two_sample,
)


@dataclass
class DriftConfig:
    """Drift tests: calibrated two-sample p-value tests with a Bonferroni correction (module docstring)."""

    alpha: float = 0.05  # false-alarm level of the whole check (features + prediction), Bonferroni-corrected
    drift_share: float = 0.3  # dataset drift when >= this share of features drift
    numeric_method: str = "ks"  # two-sample Kolmogorov-Smirnov p-value
    discrete_method: str = CHI2_TWO_SAMPLE  # numeric columns with at most discrete_max_values distinct values
    discrete_max_values: int = 5  # Evidently's own cut-off between "discrete" and "continuous" numerics
    categorical_method: str = CHI2_TWO_SAMPLE  # two-sample chi-square (homogeneity) p-value
    # None: alpha / m for p-value methods, Evidently's default threshold for distance methods.
    numeric_threshold: float | None = None
    categorical_threshold: float | None = None
    per_column: dict[str, dict] = field(default_factory=dict)  # {"api_calls": {"method": "psi", "threshold": 0.2}}
    prediction_column: str | None = "prediction"
    max_rows: int | None = None  # quantile-sketch each window above this many rows (quality: a random row sample)
    seed: int = 0  # of the quality metrics' row sample
    # Features that grow with elapsed time (features.transforms.CLOCK_FEATURES): tested and reported apart,
    # outside the verdict and the correction's family.
    clocks: frozenset[str] = frozenset()
    # The yardstick (module docstring): the reference's own variation over periods of its time column.
    time_column: str | None = "event_timestamp"
    period_days: float = 91.0  # length of a reference period (a quarter: one season)
    period_min_rows: int = 30  # a period counts for a column when it has this many values of it
    period_sigmas: float = 3.0  # yardstick = mean + this many standard deviations of the periods' distances


@dataclass
class DriftResult:
    # column, type, method, threshold, score, significant, distance, yardstick, drifted (bool)
    columns: pd.DataFrame
    drifted_share: float
    dataset_drift: bool
    prediction_drift: dict | None  # {"method", "threshold", "score", "drifted"}
    quality: dict | None  # {"reference": {...}, "current": {...}}: roc_auc, precision, recall, threshold, rows
    snapshot: Any  # the Evidently drift snapshot (HTML / JSON / workspace)
    rows: dict  # {"reference": n, "current": n, "sampled": bool}
    quality_snapshot: Any = None  # the Evidently classification snapshot when quality was computed
    tests: dict = field(default_factory=dict)  # the tests' configuration: level, correction, method per column type
    clocks: pd.DataFrame | None = None  # the clocks' tests, as ``columns`` (not in the verdict)


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
    return str(kinds.pop())


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


def _test_for(column: str, kind: str, distinct: int, config: DriftConfig, family: int) -> tuple[str, float]:
    """(method, threshold) for one column; ``family`` = number of tested columns (Bonferroni's m)."""
    if kind == NUMERIC:
        discrete = distinct <= config.discrete_max_values
        method = config.discrete_method if discrete else config.numeric_method
        threshold = config.numeric_threshold
    else:
        method, threshold = config.categorical_method, config.categorical_threshold
    override = config.per_column.get(column, {})
    method = override.get("method", method)
    threshold = override.get("threshold", threshold)
    # Fails early, with Evidently's list of available tests, on an unknown name or one that does not fit the type.
    stattest = get_registered_stattest(method, _EVIDENTLY_TYPE[kind])
    if threshold is None:
        threshold = config.alpha / family if method in P_VALUE_METHODS else stattest.default_threshold
    return method, float(threshold)


def is_p_value(method: str) -> bool:
    """Whether the method's score is a p-value (drifted below the threshold) rather than a distance."""
    return method in P_VALUE_METHODS


def _sketch(frame: pd.DataFrame, k: int | None) -> pd.DataFrame:
    """Each column of a frame above ``k`` rows as a k-point quantile sketch (module docstring)."""
    n = len(frame)
    if k is None or n <= k:
        return frame
    out = {}
    for name in frame.columns:
        column = frame[name]
        values = column.dropna()
        m = min(k, max(int(round(k * len(values) / n)), 1 if len(values) else 0))
        if _kind(column) == NUMERIC:
            ordered = np.sort(values.to_numpy(dtype="float64"))
            sketch = np.full(k, np.nan)
            sketch[:m] = ordered[((np.arange(m) + 0.5) * len(ordered) / max(m, 1)).astype(np.int64)]
        else:
            counts = values.value_counts(sort=False)
            quota = counts.to_numpy(dtype="float64") * m / max(len(values), 1)
            repeats = np.floor(quota).astype(np.int64)
            repeats[np.argsort(repeats - quota, kind="stable")[: m - int(repeats.sum())]] += 1
            sketch = np.full(k, None, dtype=object)
            sketch[:m] = np.repeat(counts.index.to_numpy(dtype=object), repeats)
        out[name] = sketch
    return pd.DataFrame(out)


def _plain(column: pd.Series) -> pd.Series:
    """A nullable column of the feature files as the training set holds it: Int64/Float64 -> float64 with NaN,
    boolean -> True/False/NaN objects (a category)."""
    dtype = column.dtype
    if isinstance(dtype, pd.BooleanDtype):
        return column.astype(object).where(column.notna(), np.nan)
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(dtype):
        return column.astype("float64")
    return column


def _distance(a: pd.Series, b: pd.Series, discrete: bool) -> float:
    """How far apart two samples are: the Kolmogorov-Smirnov statistic (largest CDF gap) of a numeric column,
    the total variation distance (half the summed share differences) of a discrete or categorical one."""
    a, b = a.dropna(), b.dropna()
    if a.empty or b.empty:
        return math.nan
    if discrete:
        shares = a.value_counts(normalize=True).sub(b.value_counts(normalize=True), fill_value=0)
        return float(0.5 * shares.abs().sum())
    x, y = np.sort(a.to_numpy(dtype="float64")), np.sort(b.to_numpy(dtype="float64"))
    grid = np.concatenate([x, y])
    gap = np.searchsorted(x, grid, side="right") / len(x) - np.searchsorted(y, grid, side="right") / len(y)
    return float(np.abs(gap).max())


def _periods(reference: pd.DataFrame, config: DriftConfig) -> pd.Series | None:
    """Each reference row's period number (``period_days`` from the first timestamp), None without a time column."""
    if config.time_column is None or config.time_column not in reference.columns:
        return None
    ts = pd.to_datetime(reference[config.time_column], utc=True, errors="coerce")
    if ts.notna().sum() == 0:
        return None
    return ((ts - ts.min()) / pd.Timedelta(days=config.period_days)).apply(
        lambda v: math.floor(v) if pd.notna(v) else -1)


def _yardstick(values: pd.Series, periods: pd.Series | None, discrete: bool, config: DriftConfig) -> float:
    """mean + ``period_sigmas`` sd of the distances between each reference period and the rest of the reference
    (periods with at least ``period_min_rows`` values on both sides); NaN with fewer than 3 such periods."""
    if periods is None:
        return math.nan
    distances = []
    for period in sorted(set(periods) - {-1}):
        inside = periods == period
        if min(values[inside].notna().sum(), values[~inside].notna().sum()) < config.period_min_rows:
            continue
        distances.append(_distance(values[inside], values[~inside], discrete))
    if len(distances) < 3:
        return math.nan
    return float(np.mean(distances) + config.period_sigmas * np.std(distances, ddof=1))


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
    if not 0 < config.alpha < 1:
        raise ValueError(f"alpha must be a false-alarm level between 0 and 1, got {config.alpha}")
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
    stray = sorted(set(config.clocks) - set(features))
    if stray:
        raise ValueError(f"clocks name columns that are not features: {stray}")
    if not set(features) - set(config.clocks):
        raise ValueError(f"every feature is a clock ({sorted(features)}): nothing is left for the drift verdict")
    if not config.period_days > 0:
        raise ValueError(f"period_days must be a positive number of days, got {config.period_days}")
    if config.period_min_rows < 2:
        raise ValueError(f"period_min_rows must be at least 2, got {config.period_min_rows}")
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

    clocks = [f for f in features if f in config.clocks]
    features = [f for f in features if f not in config.clocks]  # the verdict's features
    pred = config.prediction_column
    has_pred = pred is not None and pred in reference.columns and pred in current.columns
    family = features + ([pred] if pred is not None and has_pred else [])  # the columns the correction covers
    tested = family + clocks
    reference = reference.assign(**{c: _plain(reference[c]) for c in tested})
    current = current.assign(**{c: _plain(current[c]) for c in tested})

    kinds = {}
    for column in tested:
        kinds[column] = column_type(reference[column], current[column])
        for name, frame in (("reference", reference), ("current", current)):
            if frame[column].notna().sum() == 0:
                raise ValueError(f"column {column!r} has no non-missing values in the {name} window")

    rows = {"reference": int(len(reference)), "current": int(len(current)), "sampled": False}
    ref = _sketch(reference[tested], config.max_rows)
    cur = _sketch(current[tested], config.max_rows)
    rows["sampled"] = len(ref) < len(reference) or len(cur) < len(current)

    tests, discrete = {}, {}
    for column in tested:
        distinct = pd.concat([ref[column], cur[column]], ignore_index=True).nunique() if kinds[column] == NUMERIC else 0
        tests[column] = _test_for(column, kinds[column], distinct, config, family=len(family))
        discrete[column] = kinds[column] == CATEGORICAL or distinct <= config.discrete_max_values

    value_drifts = {c: ValueDrift(column=c, method=m, threshold=t) for c, (m, t) in tests.items()}
    count = DriftedColumnsCount(
        columns=features,
        drift_share=config.drift_share,
        per_column_method={c: tests[c][0] for c in features},
        per_column_threshold={c: tests[c][1] for c in features},
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

    periods = _periods(reference, config)
    records = []
    for column in tested:
        metric_id = value_drifts[column].metric_id
        method, test_threshold = tests[column]
        significant = _drifted(statuses, metric_id, column)
        distance = _distance(ref[column], cur[column], discrete[column])
        yardstick = math.nan if column in clocks else _yardstick(reference[column], periods, discrete[column], config)
        records.append(
            {
                "column": column,
                "type": kinds[column],
                "method": method,
                "threshold": test_threshold,
                "score": float(values[metric_id]),
                "significant": significant,
                "distance": distance,
                "yardstick": yardstick,
                # significant, and further from the reference than the reference's own periods are from the rest
                "drifted": significant and not (math.isfinite(yardstick) and distance <= yardstick),
            }
        )
    table = pd.DataFrame(records, columns=COLUMNS)
    feature_table = table[table["column"].isin(features)].reset_index(drop=True)
    clock_table = table[table["column"].isin(clocks)].reset_index(drop=True)
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
    if int(round(count_value["count"])) != int(feature_table["significant"].sum()):
        raise RuntimeError(
            f"Evidently's DriftedColumnsCount ({count_value['count']}) disagrees with the per-column "
            f"ValueDrift tests ({int(feature_table['significant'].sum())}); check the stattest configuration"
        )
    if feature_table["drifted"].equals(feature_table["significant"]):  # no yardstick cleared a column
        drifted_share = float(count_value["share"])
        dataset_drift = _drifted(statuses, count.metric_id, "dataset")
    else:  # Evidently's rule (drift when the share is not below drift_share) on the columns that still drift
        drifted_share = float(feature_table["drifted"].mean())
        dataset_drift = drifted_share >= config.drift_share

    quality, quality_snapshot = None, None
    if label is not None and has_pred and label in reference.columns and label in current.columns:
        rng = np.random.default_rng(config.seed)
        quality, quality_snapshot = _quality(_sample(reference, config.max_rows, rng),
                                             _sample(current, config.max_rows, rng), label, pred, threshold)

    tests_used = {
        "alpha": float(config.alpha),
        "correction": "bonferroni",
        "family_size": len(family),
        "per_column_level": float(config.alpha / len(family)),
        "clocks": clocks,
        "yardstick": {"time_column": config.time_column if periods is not None else None,
                      "period_days": float(config.period_days), "period_min_rows": int(config.period_min_rows),
                      "sigmas": float(config.period_sigmas)},
        "drift_share": float(config.drift_share),
        "by_type": {
            f"numeric, more than {config.discrete_max_values} distinct values": config.numeric_method,
            f"numeric, at most {config.discrete_max_values} distinct values": config.discrete_method,
            "categorical or bool": config.categorical_method,
        },
        "overrides": {c: dict(o) for c, o in config.per_column.items()},
    }
    return DriftResult(
        columns=feature_table,
        drifted_share=drifted_share,
        dataset_drift=dataset_drift,
        prediction_drift=prediction_drift,
        quality=quality,
        snapshot=snapshot,
        rows=rows,
        quality_snapshot=quality_snapshot,
        tests=tests_used,
        clocks=clock_table,
    )


COLUMNS = ["column", "type", "method", "threshold", "score", "significant", "distance", "yardstick", "drifted"]


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
        entry: dict[str, Any] = {"rows": int(len(frame)), "positives": int(frame[label].sum()),
                                 "threshold": float(threshold)}
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
        "columns": [_column_summary(r) for r in result.columns.itertuples(index=False)],
        # clocks: tested at the same level, not in the verdict; moved = significant
        "clocks": [{**_column_summary(r), "moved": bool(r.significant)}
                   for r in (result.clocks if result.clocks is not None else pd.DataFrame(columns=COLUMNS))
                   .itertuples(index=False)],
        "tests": result.tests,
        "prediction_drift": result.prediction_drift,
        "quality": result.quality,
    }


def _column_summary(r) -> dict:
    return {
        "column": str(r.column),
        "type": str(r.type),
        "method": str(r.method),
        "threshold": float(r.threshold),
        "score": _finite(r.score),
        "score_is_p_value": is_p_value(str(r.method)),
        "significant": bool(r.significant),
        "distance": _finite(r.distance),
        "yardstick": _finite(r.yardstick),
        "drifted": bool(r.drifted),
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


__all__ = [
    "CHI2_TWO_SAMPLE", "DriftConfig", "DriftResult", "add_to_workspace", "check", "column_type", "is_p_value", "save",
    "summary",
]
