"""Estimators: XGBoost with early stopping, baselines, and the packaged scoring model.

Pure: frames and parameters in, fitted objects out.  No MLflow here (see training/tracking.py).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from training.data import LABEL, FeatureSpec, prepare_features

if TYPE_CHECKING:
    from xgboost import XGBClassifier

    from salesml.settings import Settings

DEFAULT_XGB = {
    "n_estimators": 600, "learning_rate": 0.05, "max_depth": 4, "min_child_weight": 5.0,
    "subsample": 0.9, "colsample_bytree": 0.8, "reg_lambda": 1.0, "reg_alpha": 0.0,
}


@dataclass
class ScoringModel:
    """What gets registered: the feature spec and the booster, scoring probabilities.

    ``predict_proba`` and ``contributions`` take a frame of raw Feast feature columns and run
    ``prepare_features`` themselves, so serving passes exactly what Feast returns.
    """

    name: str
    spec: FeatureSpec
    booster: XGBClassifier
    monotone: dict[str, int] = field(default_factory=dict)

    @property
    def _trees(self) -> tuple[int, int]:
        """The trees early stopping kept (the booster holds a few more after the best one)."""
        best = getattr(self.booster, "best_iteration", None)
        return (0, best + 1) if best is not None else (0, 0)

    def _x(self, frame: pd.DataFrame, prepared: bool = False) -> pd.DataFrame:
        if prepared:  # a frame prepare_features already made, maybe for a wider spec
            return frame if list(frame.columns) == self.spec.columns else frame[self.spec.columns]
        return prepare_features(frame, self.spec)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Probabilities from a float matrix in ``spec.columns`` order (numeric-only models)."""
        return self.booster.get_booster().inplace_predict(x, iteration_range=self._trees)

    def predict_proba(self, frame: pd.DataFrame, prepared: bool = False) -> np.ndarray:
        x = self._x(frame, prepared)
        booster = self.booster.get_booster()
        if not self.spec.categorical:  # a plain float matrix is ~4x faster to score than a frame
            return booster.inplace_predict(x.to_numpy(np.float64), iteration_range=self._trees)
        return self.booster.predict_proba(x)[:, 1]

    # --- numpy input (``training.data.feature_matrix``): what serving's per-request path calls ----------
    matrix_ready = True  # every ScoringModel scores a feature matrix (categoricals as level codes)

    def predict_codes(self, x: np.ndarray) -> np.ndarray:
        """``predict_proba`` of ``feature_matrix`` output, the same numbers without a frame."""
        return self.booster.get_booster().inplace_predict(x, iteration_range=self._trees)

    def contributions_codes(self, x: np.ndarray) -> np.ndarray:
        """``contributions`` of ``feature_matrix`` output, without the bias, as a (rows x columns)
        float32 array. Numeric models from ``treeshap.MIN_ROWS`` rows: the exact bulk TreeSHAP of
        ``training/treeshap.py``; else XGBoost's own on a one-thread DMatrix (its multithreaded set-up
        for one row cost ~12 ms on a loaded host; this ~0.3 ms)."""
        import xgboost as xgb

        from training import treeshap

        if not self.spec.categorical and len(x) >= treeshap.MIN_ROWS:
            return treeshap.contributions(self, pd.DataFrame(x, columns=self.spec.columns))
        booster = self.booster.get_booster()
        dm = xgb.DMatrix(x, feature_names=booster.feature_names, feature_types=booster.feature_types,
                         enable_categorical=bool(self.spec.categorical), nthread=1)
        return booster.predict(dm, pred_contribs=True, iteration_range=self._trees)[:, :-1]

    def contributions(self, frame: pd.DataFrame, prepared: bool = False) -> pd.DataFrame:
        """Per-feature contributions in log-odds (TreeSHAP); the ``bias`` column is the base value."""
        import xgboost as xgb

        x = self._x(frame, prepared)
        if self.spec.categorical:
            dm = xgb.DMatrix(x, enable_categorical=True)
        else:
            dm = xgb.DMatrix(x.to_numpy(np.float64), feature_names=list(x.columns))
        contrib = self.booster.get_booster().predict(dm, pred_contribs=True, iteration_range=self._trees)
        return pd.DataFrame(contrib, columns=list(x.columns) + ["bias"], index=frame.index)


def train_threads(settings: Settings | None = None) -> int:
    """XGBoost threads: ``settings.train_threads`` (``SALESML_TRAIN_THREADS``, default 1).

    Without ``settings`` a fresh ``Settings()`` reads the environment now (about 3 ms), so a value
    set for one run (the scoring benchmark sets it around each) is seen by the next call.
    On 2 shared cores, OpenMP threads spin-wait for each other: with one core busy elsewhere a
    2-thread fit ran ~80x slower than a 1-thread fit here.  Raise it on a dedicated machine.
    """
    if settings is None:
        from salesml.settings import Settings

        settings = Settings()
    return settings.train_threads


def fit_xgboost(train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, seed: int,
                params: dict | None = None, monotone: dict[str, int] | None = None,
                name: str = "model", callbacks: list | None = None) -> ScoringModel:
    """XGBoost with early stopping on the validation window."""
    import xgboost as xgb

    params = {**DEFAULT_XGB, **(params or {})}
    monotone = {k: v for k, v in (monotone or {}).items() if k in spec.numeric}
    constraint = tuple(monotone.get(c, 0) for c in spec.columns) if monotone else None
    from training import engine

    params = dict(**params, objective="binary:logistic", eval_metric="logloss", tree_method="hist",
                  enable_categorical=True, max_cat_to_onehot=8, early_stopping_rounds=40,
                  random_state=seed, n_jobs=train_threads(), monotone_constraints=constraint, callbacks=callbacks)
    x_train, y_train = prepare_features(train, spec), train[LABEL].to_numpy()
    x_valid, y_valid = prepare_features(valid, spec), valid[LABEL].to_numpy()
    eng = engine.current()
    if eng.name == "dask":  # xgboost.dask on the session's cluster (training/engine.py)
        model = engine.fit_dask(eng, {**params, "n_jobs": 1}, x_train, y_train, x_valid, y_valid)
    else:
        model = xgb.XGBClassifier(**params)
        model.fit(x_train, y_train, eval_set=[(x_valid, y_valid)], verbose=False)
    return ScoringModel(name=name, spec=spec, booster=model, monotone=monotone)


@dataclass
class LogisticBaseline:
    spec: FeatureSpec
    pipeline: Any  # a fitted sklearn Pipeline (imputers, scaler, encoder, then LogisticRegression)

    def _x(self, frame: pd.DataFrame) -> pd.DataFrame:
        # sklearn's imputers and encoders want object columns, not pandas categoricals
        x = prepare_features(frame, self.spec)
        return x.astype({c: "object" for c in self.spec.categorical})

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(self._x(frame))[:, 1]


@dataclass
class LinearScoringModel:
    """A logistic regression packaged like ``ScoringModel`` (same inputs, probabilities and
    contributions), for when it wins the model selection.

    Contributions are exact for a linear model: coefficient x (standardised value - its training
    mean) per input column, summed back onto the raw feature (one-hot levels, missing indicators);
    ``bias`` is the log-odds at the training means.
    """

    name: str
    spec: FeatureSpec
    baseline: LogisticBaseline
    monotone: dict[str, int] = field(default_factory=dict)
    # the transformed training matrix's column means (fit_linear_model), the point contributions are taken from
    _mean: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def _z(self, frame: pd.DataFrame) -> np.ndarray:
        """The pipeline's transformed matrix of ``frame``. The last one is kept (by a weak reference to the
        frame): serving asks for the probability and then the contributions of the same frame, and the
        sklearn transform is most of a call's cost (~9 ms for one row)."""
        last = getattr(self, "_last_z", None)
        if last is not None and last[0]() is frame:
            return last[1]
        z = self.baseline.pipeline[:-1].transform(self.baseline._x(frame))
        z = z.toarray() if hasattr(z, "toarray") else np.asarray(z, float)
        self._last_z = (weakref.ref(frame), z)
        return z

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_last_z", None)  # a weak reference does not pickle, and the cache is per process
        return state

    def predict_proba(self, frame: pd.DataFrame, prepared: bool = False) -> np.ndarray:
        return self.baseline.pipeline[-1].predict_proba(self._z(frame))[:, 1]

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(pd.DataFrame(x, columns=self.spec.columns))

    # --- numpy input (``training.data.feature_matrix``), numeric models: the pipeline's steps in numpy ----
    @property
    def matrix_ready(self) -> bool:
        return not self.spec.categorical  # one-hot levels stay with sklearn (the frame path)

    def numpy_parts(self) -> dict[str, np.ndarray]:
        """A numeric model's fitted steps as plain arrays: the imputer's ``median`` per column and the
        columns whose missing indicators it appends (``indicators``), the scaler's ``mean`` and ``scale``,
        the regression's ``coef`` and ``intercept`` (what ``_z_codes`` computes with, and what the serving
        bench's bare service is given)."""
        num = self.baseline.pipeline[0].named_transformers_["num"]
        imputer, scaler, lr = num[0], num[-1], self.baseline.pipeline[-1]
        indicators = (imputer.indicator_.features_ if imputer.indicator_ is not None
                      else np.array([], dtype=np.int64))
        return {"median": imputer.statistics_, "indicators": indicators, "mean": scaler.mean_,
                "scale": scaler.scale_, "coef": lr.coef_[0], "intercept": lr.intercept_}

    def _z_codes(self, x: np.ndarray) -> np.ndarray:
        """The pipeline's transform of a float matrix: the median imputer (with its missing indicators,
        appended in its order) and the scaler, the same operations sklearn does (~30 us, not ~6 ms)."""
        parts = self.numpy_parts()
        missing = np.isnan(x)
        u = np.hstack([np.where(missing, parts["median"], x), missing[:, parts["indicators"]].astype(np.float64)])
        return (u - parts["mean"]) / parts["scale"]

    def predict_codes(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        lr = self.baseline.pipeline[-1]
        return expit(self._z_codes(x) @ lr.coef_.T + lr.intercept_).ravel()

    def contributions_codes(self, x: np.ndarray) -> np.ndarray:
        """``contributions`` without the bias, as a (rows x columns) array."""
        pre, lr = self.baseline.pipeline[:-1], self.baseline.pipeline[-1]
        z = self._z_codes(x)
        mean = self._mean if self._mean is not None and len(self._mean) == z.shape[1] else np.zeros(z.shape[1])
        return ((z - mean) * lr.coef_[0]) @ self._onto_columns(pre, z.shape[1])

    def contributions(self, frame: pd.DataFrame, prepared: bool = False) -> pd.DataFrame:
        pipe = self.baseline.pipeline
        pre, lr = pipe[:-1], pipe[-1]
        z = self._z(frame)
        mean = self._mean
        if mean is None or len(mean) != z.shape[1]:
            mean = np.zeros(z.shape[1])
        parts = (z - mean) * lr.coef_[0]
        out = pd.DataFrame(parts @ self._onto_columns(pre, z.shape[1]), index=frame.index,
                           columns=self.spec.columns)
        out["bias"] = float(lr.intercept_[0] + mean @ lr.coef_[0])
        return out

    def _onto_columns(self, pre, width: int) -> np.ndarray:
        """0/1 matrix (transformed column x raw feature) that sums each transformed column's part back
        onto the feature it came from; built once per model (a per-column loop cost ~35 ms per call)."""
        agg = getattr(self, "_agg", None)
        if agg is None or agg.shape[0] != width:
            index = {c: i for i, c in enumerate(self.spec.columns)}
            agg = np.zeros((width, len(self.spec.columns)))
            for j, n in enumerate(pre.get_feature_names_out()):
                agg[j, index[_source_column(n, self.spec.columns)]] = 1.0
            self._agg = agg
        return agg


def _source_column(transformed: str, columns: list[str]) -> str:
    """'num__missingindicator_api_calls' / 'cat__plan_Starter' -> the input column it came from."""
    name = transformed.split("__", 1)[-1]
    name = name.removeprefix("missingindicator_")
    return max((c for c in columns if name == c or name.startswith(c + "_")), key=len, default=columns[0])


def fit_linear_model(train: pd.DataFrame, spec: FeatureSpec, seed: int, name: str,
                     baseline: LogisticBaseline | None = None) -> LinearScoringModel:
    baseline = baseline or fit_logistic(train, spec, seed)
    model = LinearScoringModel(name, spec, baseline)
    z = baseline.pipeline[:-1].transform(baseline._x(train))
    z = z.toarray() if hasattr(z, "toarray") else np.asarray(z, float)
    model._mean = z.mean(axis=0)
    return model


def fit_logistic(train: pd.DataFrame, spec: FeatureSpec, seed: int) -> LogisticBaseline:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                            keep_empty_features=True), StandardScaler()), spec.numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore")), list(spec.categorical)),
    ])
    baseline = LogisticBaseline(spec, make_pipeline(pre, LogisticRegression(max_iter=2000, random_state=seed)))
    baseline.pipeline.fit(baseline._x(train), train[LABEL].to_numpy())
    return baseline


# Objective intent signals and their rule weights (a sales-ops scoring sheet, not learned).
INTENT_RULES = {
    "tender_signals_90d": 3.0, "budget_signals_90d": 2.0, "pricing_page_views_7d": 1.0,
    "pricing_sheet_downloads_30d": 1.5, "case_study_views_30d": 0.5, "webinar_completion_max_30d": 1.0,
}


@dataclass
class RuleBaseline:
    """Weighted count of buying signals, mapped to a probability by Platt scaling on training rows."""

    weights: dict[str, float]
    a: float = 1.0
    b: float = 0.0

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return sum(w * frame[c].fillna(0).to_numpy(float) for c, w in self.weights.items())

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * self.score(frame) + self.b)))


def fit_rule_baseline(train: pd.DataFrame, weights: dict[str, float] = INTENT_RULES) -> RuleBaseline:
    from sklearn.linear_model import LogisticRegression

    rule = RuleBaseline({k: v for k, v in weights.items() if k in train.columns})
    lr = LogisticRegression().fit(rule.score(train).reshape(-1, 1), train[LABEL].to_numpy())
    rule.a, rule.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    return rule
