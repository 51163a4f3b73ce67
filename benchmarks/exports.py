"""``salesml bench exports``: the platform on exports shaped unlike its simulator, against what a data
scientist would fit directly on the export's own columns.

For each shape of ``salesml.simulator.shapes`` (a single-snapshot subscription export, a prospect
list without web events, a purchases-only business) the export goes through the documented
configuration only (its ``salesml.yaml``): features build, the training set through Feast,
``salesml train`` (default parameters) and ``salesml tune`` (Optuna, then the same selection).
Beside it, on the very same rows and split, a tuned XGBoost and a tuned logistic regression fitted
directly on the export's raw columns: static tables joined by key, timed tables as of the
observation (their timestamps become ages in days), nothing else engineered. And the truth's AUC.
Each shape works in its own home, ``$SALESML_HOME/bench/exports/<shape>`` (``benchmarks.home``);
the report is ``$SALESML_HOME/reports/bench_exports.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from salesml.settings import Settings

# model, tables joined as they are (table -> time column for an as-of join, None for a static join)
SHAPES: dict[str, tuple[str, dict[str, str | None]]] = {
    "snapshot": ("chs", {"accounts": None, "contracts": "snapshot_at"}),
    "prospects": ("intent", {"leads": None}),
    "purchases": ("chs", {"accounts": None, "usage_weekly": "week_start"}),
}


def direct_frame(rows: pd.DataFrame, raw: Path, key: str, tables: dict[str, str | None]) -> pd.DataFrame:
    """The export's own columns for each observation row: what a model on the raw files sees."""
    from salesml.contract import TABLES
    from salesml.validation import read_export

    report = read_export(raw, tables=list(tables), required_tables=list(tables),
                         extra=_project(raw).extra_columns(), optional={t: set(TABLES[t].omittable) for t in tables})
    if report.violations:
        raise ValueError("; ".join(map(str, report.violations[:5])))
    obs = rows[[key, "event_timestamp"]].reset_index(drop=True).astype({"event_timestamp": "datetime64[us, UTC]",
                                                                         key: object})
    out = obs.copy()
    for name, at in tables.items():
        df = report.frames[name].drop(columns=[c for c in ("name", "notes") if c in report.frames[name]])
        df = df.drop(columns=[c for c in df.columns if c.endswith("_id") and c != key]).astype({key: object})
        if at is None:
            joined = obs.merge(df.drop_duplicates(key), on=key, how="left")
        else:
            known = df.assign(_known=df[at] + (pd.Timedelta(days=7) if name == "usage_weekly" else pd.Timedelta(0)))
            known = known.astype({"_known": "datetime64[us, UTC]"}).sort_values("_known")
            joined = pd.merge_asof(obs.reset_index().sort_values("event_timestamp"), known, left_on="event_timestamp",
                                   right_on="_known", by=key, direction="backward").sort_values("index")
            joined = joined.drop(columns=["index", "_known"]).reset_index(drop=True)
        for col in joined.columns:
            if col in (key, "event_timestamp"):
                continue
            s = joined[col]
            if pd.api.types.is_datetime64_any_dtype(s):  # a date becomes its age at the observation
                s = (joined["event_timestamp"] - s).dt.total_seconds() / 86400
            out[f"{name}.{col}"] = s.to_numpy()
    return out.drop(columns=[key, "event_timestamp"])


def _project(raw: Path):
    from salesml.project import config_path, load_project

    return load_project(config_path(raw))


def _typed(x: pd.DataFrame) -> pd.DataFrame:
    x = x.copy()
    for c in x.columns:
        if x[c].dtype == object or str(x[c].dtype) in ("string", "boolean"):
            x[c] = x[c].astype("string").astype("category")
        else:
            x[c] = pd.to_numeric(x[c], errors="coerce").astype("float64")
    return x


def tuned_xgboost(x: dict[str, pd.DataFrame], y: dict[str, np.ndarray], trials: int, seed: int) -> float:
    import optuna
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from training.tuning import suggest

    def fit(params):
        m = xgb.XGBClassifier(n_estimators=1000, early_stopping_rounds=40, enable_categorical=True,
                              tree_method="hist", eval_metric="logloss", random_state=seed, n_jobs=1, **params)
        m.fit(x["train"], y["train"], eval_set=[(x["valid"], y["valid"])], verbose=False)
        return m

    def objective(trial):
        return roc_auc_score(y["valid"], fit(suggest(trial)).predict_proba(x["valid"])[:, 1])

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return float(roc_auc_score(y["test"], fit(study.best_params).predict_proba(x["test"])[:, 1]))


def tuned_logistic(x: dict[str, pd.DataFrame], y: dict[str, np.ndarray], trials: int, seed: int) -> float:
    import optuna
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = [c for c in x["train"].columns if str(x["train"][c].dtype) == "category"]
    nums = [c for c in x["train"].columns if c not in cats]
    # sklearn's imputers want np.nan in object columns, not pd.NA
    as_obj = {k: v.assign(**{c: v[c].astype(object).where(v[c].notna(), np.nan) for c in cats}) for k, v in x.items()}

    def fit(c, penalty):
        pre = ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                                  StandardScaler()), nums),
            ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                                  OneHotEncoder(handle_unknown="ignore", min_frequency=5)), cats)])
        lr = LogisticRegression(C=c, l1_ratio=1.0 if penalty == "l1" else 0.0, solver="liblinear",
                                max_iter=2000, random_state=seed)
        return make_pipeline(pre, lr).fit(as_obj["train"], y["train"])

    def objective(trial):
        m = fit(trial.suggest_float("C", 1e-3, 100.0, log=True), trial.suggest_categorical("penalty", ["l1", "l2"]))
        return roc_auc_score(y["valid"], m.predict_proba(as_obj["valid"])[:, 1])

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = fit(study.best_params["C"], study.best_params["penalty"])
    return float(roc_auc_score(y["test"], best.predict_proba(as_obj["test"])[:, 1]))


def run_shape(settings: Settings, shape: str, n: int | None, seed: int, trials: int,
              log: Callable[[str], None]) -> dict:
    import optuna

    from benchmarks.home import bench_home
    from features.store import apply, build_feature_files
    from features.training_sets import build_training_set
    from salesml.simulator.shapes import SHAPES as GENERATORS
    from training import tuning
    from training.pipeline import fit_and_evaluate
    from training.truth import oracle_probabilities

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    model, tables = SHAPES[shape]
    s = bench_home(settings, f"exports/{shape}")  # its own stores: the demo's stay as they are
    raw = s.root / "export"
    gen = GENERATORS[shape](raw, **({"n": n} if n else {}), seed=seed)
    build_feature_files(s, raw, progress=lambda _: None)
    apply(s, progress=lambda _: None)
    spec = s.spec(model, raw)
    ts = build_training_set(s, model, raw_dir=raw, spec=spec)
    t0 = time.perf_counter()
    result = fit_and_evaluate(spec, ts.frame, ts.feature_columns, seed)
    fit_s = time.perf_counter() - t0
    split = result.split
    log(f"{shape}: platform {result.selection.chosen} test ROC-AUC {result.metrics['test_roc_auc']:.4f} "
        f"({split.method} split); tuning {trials} trials")
    tuned = tuning.run(s, model, trials, seed=seed, raw_dir=raw, log=lambda _: None)["retrained"]
    key = spec.key
    x = {w: _typed(direct_frame(getattr(split, w), raw, key, tables)) for w in ("train", "valid", "test")}
    for w in ("valid", "test"):  # categories as in training, as a model in production would see them
        x[w] = x[w].astype({c: pd.CategoricalDtype(x["train"][c].cat.categories) for c in x["train"].columns
                            if str(x["train"][c].dtype) == "category"})
    y = {w: getattr(split, w)["label"].to_numpy() for w in ("train", "valid", "test")}
    direct_xgb = tuned_xgboost(x, y, trials, seed)
    direct_lr = tuned_logistic(x, y, max(10, trials // 2), seed)
    oracle = oracle_probabilities(spec, split.test, raw)
    from sklearn.metrics import roc_auc_score

    truth = float(roc_auc_score(y["test"], oracle)) if oracle is not None else float("nan")
    best_direct = max(direct_xgb, direct_lr)
    best_platform = max(result.metrics["test_roc_auc"], tuned["test_roc_auc"])
    return {"export": shape, "model": model, "rows": len(ts.frame), "test rows": len(split.test),
            "split": split.method, "raw columns": x["train"].shape[1],
            "platform features": len(result.model.spec.columns),
            "platform train": result.metrics["test_roc_auc"], "chosen": result.selection.chosen,
            "platform tuned": tuned["test_roc_auc"], "tuned chosen": tuned["chosen"],
            "direct XGBoost (tuned)": direct_xgb, "direct logistic (tuned)": direct_lr,
            "truth": truth, "platform - best direct": best_platform - best_direct,
            "generator truth AUC (all rows)": gen["truth_auc"], "train fit seconds": fit_s}


def run(settings: Settings, shapes: tuple[str, ...] = tuple(SHAPES), n: int | None = None, seed: int = 0,
        trials: int = 30, log: Callable[[str], None] = print) -> Path:
    from benchmarks.home import measured, write_report

    rows = []
    for shape in shapes:
        log(f"bench exports: {shape}")
        rows.append(run_shape(settings, shape, n, seed, trials, log))
    table = pd.DataFrame(rows)
    lines = ["# Exports unlike the simulator: platform vs direct models", "",
             f"{measured()}; command: `make bench` (`salesml bench exports`), seed {seed}, "
             f"{trials} Optuna trials per tuned model.", "",
             "Each export goes through its `salesml.yaml` only. Platform train = `salesml train` (default "
             "parameters, candidates chosen on validation); platform tuned = `salesml tune` then the same "
             "selection. Direct = fitted on the export's raw columns (static tables joined by key, timed "
             "tables as of the observation), same rows and split, tuned on the same validation window. Truth = "
             "the generator's probability on the test rows. Goal: the platform within 0.01 of the better direct "
             "model (last-but-two column, the better platform figure minus the better direct one).", "",
             table.to_markdown(index=False, floatfmt=".4f"), ""]
    return write_report(settings, "exports", lines, log)
