"""Training frames -> model inputs: time split and the feature matrix (pure functions).

``prepare_features`` is the one place where a frame of Feast features becomes a model input;
the packaged model calls it at serving time too, so training and serving cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TIME = "event_timestamp"
LABEL = "label"
IN_SAMPLE = "in_sample"  # the drift reference's column marking the rows the model was fitted on


@dataclass
class FeatureSpec:
    numeric: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)  # column -> known levels

    @property
    def columns(self) -> list[str]:
        return self.numeric + list(self.categorical)

    def to_dict(self) -> dict:
        return {"numeric": self.numeric, "categorical": self.categorical}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(list(d["numeric"]), {k: list(v) for k, v in d["categorical"].items()})


# Raw string columns that only serve the on-demand fit features, never the model directly.
NOT_FEATURES = {"rep_industries", "rep_products", "rep_region"}


def infer_spec(frame: pd.DataFrame, feature_columns: list[str]) -> FeatureSpec:
    numeric, categorical = [], {}
    for col in feature_columns:
        if col in NOT_FEATURES:
            continue
        s = frame[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            numeric.append(col)
        else:
            categorical[col] = sorted(s.dropna().astype(str).unique().tolist())
    return FeatureSpec(numeric, categorical)


def prepare_features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Numeric columns as float64 (missing stays NaN), categoricals with the training levels."""
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise KeyError(f"input is missing feature column(s): {', '.join(missing)}")
    if not spec.categorical and all(frame[c].dtype.kind == "f" for c in spec.numeric):
        # the common serving case: one block copy instead of a column-by-column build
        return pd.DataFrame(frame[spec.numeric].to_numpy(np.float64), index=frame.index, columns=spec.numeric)
    cols: dict[str, object] = {}
    for col in spec.numeric:
        s = frame[col]
        if s.dtype.kind == "f":
            cols[col] = s.to_numpy(dtype="float64", copy=False)
        elif s.dtype.kind in "iub":
            cols[col] = s.to_numpy(dtype="float64")
        else:  # objects, nullable dtypes: anything non-numeric becomes NaN
            cols[col] = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    for col, levels in spec.categorical.items():
        cols[col] = pd.Categorical(frame[col].astype("object"), categories=levels)
    return pd.DataFrame(cols, index=frame.index, columns=spec.columns)


def feature_matrix(columns, spec: FeatureSpec, n: int) -> np.ndarray:
    """``prepare_features`` as one float matrix in ``spec.columns`` order, for the boosters' numpy input:
    numbers as float64 (missing, or anything that is not a number, as NaN), a categorical as its
    level's position among the training levels (the code pandas gives it there; unknown or missing:
    NaN). ``columns`` maps each column to ``n`` values: a frame, or Feast's ``to_dict()``.

    The one-account path of serving reads through this instead of a frame (a frame per request
    cost more than the model)."""
    x = np.empty((n, len(spec.columns)), dtype=np.float64)
    for j, col in enumerate(spec.numeric):
        values = columns[col]
        try:  # floats, ints, bools and None (-> NaN) in one conversion
            x[:, j] = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):  # text among them: what is not a number is missing
            x[:, j] = pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan)
    for j, (col, levels) in enumerate(spec.categorical.items(), start=len(spec.numeric)):
        index = {level: float(k) for k, level in enumerate(levels)}
        x[:, j] = [index.get(v, np.nan) if isinstance(v, str) else np.nan for v in columns[col]]
    return x


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_start: pd.Timestamp | None
    test_start: pd.Timestamp | None
    method: str = "time"  # time | grouped_random
    note: str = ""  # why this method, for the output and the run

    def windows(self) -> dict[str, str]:
        fmt = "%Y-%m-%d"
        return {"split": self.method,
            "train_window": f"{self.train[TIME].min():{fmt}}..{self.train[TIME].max():{fmt}}",
            "valid_window": f"{self.valid[TIME].min():{fmt}}..{self.valid[TIME].max():{fmt}}",
            "test_window": f"{self.test[TIME].min():{fmt}}..{self.test[TIME].max():{fmt}}",
        }


MIN_LABEL_TIMES = 3


def split_frame(frame: pd.DataFrame, keys: list[str], seed: int = 0,
                valid_fraction: float = 0.2, test_fraction: float = 0.2) -> Split:
    """A time split where the export has the history for one, else a grouped stratified split.

    With at least 3 distinct label times (and both classes in every window) the newest rows are
    the test window, as in ``time_split``. A cross-sectional export (one snapshot, or too few
    observation times) is split at random by entity instead, stratified by label, so no entity is
    in two parts; the result says which and why.
    """
    times = frame[TIME].nunique()
    if times >= MIN_LABEL_TIMES:
        try:
            return time_split(frame, valid_fraction, test_fraction)
        except ValueError as exc:
            why = str(exc)
    else:
        why = f"{times} distinct label time(s), a time split needs at least {MIN_LABEL_TIMES}"
    return grouped_split(frame, keys, seed, valid_fraction, test_fraction, note=why)


def grouped_split(frame: pd.DataFrame, keys: list[str], seed: int, valid_fraction: float = 0.2,
                  test_fraction: float = 0.2, note: str = "") -> Split:
    from sklearn.model_selection import StratifiedGroupKFold

    if frame[LABEL].nunique() < 2 or frame[LABEL].value_counts().min() < 10:
        raise ValueError(f"too few rows of one label class for a grouped random split ({note}); use more data")
    group = frame[keys[0]].astype(str).to_numpy()
    folds = round(1 / test_fraction)
    idx = np.arange(len(frame))
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    rest, test = next(outer.split(idx, frame[LABEL], group))
    inner = StratifiedGroupKFold(n_splits=max(2, round((1 - test_fraction) / valid_fraction)), shuffle=True,
                                 random_state=seed)
    tr, va = next(inner.split(rest, frame[LABEL].iloc[rest], group[rest]))
    train, valid, held = (frame.iloc[i].reset_index(drop=True) for i in (rest[tr], rest[va], test))
    return Split(train, valid, held, None, None, "grouped_random",
                 f"{note}: stratified random split grouped by {keys[0]}")


def time_split(frame: pd.DataFrame, valid_fraction: float = 0.2, test_fraction: float = 0.2) -> Split:
    """Split by label time: oldest rows train, then validation, newest test. Never random.

    Boundaries fall between distinct timestamps, so rows observed at the same moment stay
    together.
    """
    times = np.sort(frame[TIME].unique())
    if len(times) < 3:
        raise ValueError(f"need at least 3 distinct label times to split by time, got {len(times)}")
    ordered = frame.sort_values(TIME, kind="stable")
    cum = ordered.groupby(TIME).size().cumsum() / len(ordered)
    valid_start = cum.index[np.searchsorted(cum.to_numpy(), 1 - valid_fraction - test_fraction, side="right")]
    test_start = cum.index[np.searchsorted(cum.to_numpy(), 1 - test_fraction, side="right")]
    if not (times[0] < valid_start < test_start):
        raise ValueError("too few distinct label times for a train/validation/test split")
    t = ordered[TIME]
    parts = ordered[t < valid_start], ordered[(t >= valid_start) & (t < test_start)], ordered[t >= test_start]
    for name, part in zip(("train", "validation", "test"), parts):
        if part[LABEL].nunique() < 2:
            raise ValueError(f"the {name} window has only one label class; use more data")
    train, valid, test = (p.reset_index(drop=True) for p in parts)
    return Split(train, valid, test, pd.Timestamp(valid_start), pd.Timestamp(test_start), "time",
                 "newest label times are the test window")
