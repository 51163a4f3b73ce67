"""The A/B sandbox: every variant on identical point-in-time training sets and time splits,
paired statistics on the same test rows, and a record a reviewer can read in the MLflow UI.

``compare`` is pure (variant scores in, statistics and a decision out); ``run_experiment`` adds
Feast in and MLflow + reports out.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from experiments import stats
from experiments.spec import ExperimentSpec, Variant
from salesml.settings import Settings

EXPERIMENT = "salesml-experiments"


def _metric_fns() -> dict[str, Callable]:
    from sklearn.metrics import average_precision_score

    return {
        "roc_auc": stats.fast_auc,
        "pr_auc": lambda y, p: float(average_precision_score(y, p)),
        "brier": stats.brier_score,
        "log_loss": stats.log_loss,
    }


@dataclass
class Comparison:
    per_variant: pd.DataFrame  # variant x (metric, ci) and warning precision / recall
    pairs: pd.DataFrame  # bootstrap differences vs the control, with DeLong and adjusted p
    decisions: dict[str, dict]  # challenger variant -> decision vs the control
    y: np.ndarray
    scores: dict[str, np.ndarray]
    extra: dict = field(default_factory=dict)


def compare(spec: ExperimentSpec, y: np.ndarray, scores: dict[str, np.ndarray]) -> Comparison:
    """Paired comparison of every variant with the first one (the control) on the same rows."""
    fns: dict[str, Callable] = {m: _metric_fns()[m] for m in spec.metrics}
    b = spec.bootstrap
    mean = {k: (v.mean(axis=0) if v.ndim == 2 else v) for k, v in scores.items()}  # the fits' ensemble
    rows = []
    for name, p in scores.items():
        row: dict[str, object] = {"variant": name}
        for m, fn in fns.items():
            est, lo, hi = stats.bootstrap_metric_ci(y, p, fn, n_resamples=b.resamples, seed=b.seed, alpha=b.alpha)
            row.update({m: est, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
        cut = np.quantile(mean[name], 1 - spec.operating_share)
        pr = stats.precision_recall_at(y, mean[name] >= cut)
        row.update({f"warning_{k}": v for k, v in pr.items()})
        rows.append(row)
    per_variant = pd.DataFrame(rows)

    control = spec.variants[0].name
    boot = stats.paired_bootstrap(y, scores, fns, n_resamples=b.resamples, seed=b.seed, alpha=b.alpha)
    pairs = boot[boot["variant_a"] == control].copy()
    others = [v.name for v in spec.variants[1:]]
    delong = {o: stats.delong_test(y, mean[o], mean[control]) for o in others}  # reference only
    # a challenger's difference is (challenger - control)
    pairs = pairs.assign(
        variant_a=pairs["variant_b"], variant_b=control, estimate=-pairs["estimate"],
        ci_low=-pairs["ci_high"], ci_high=-pairs["ci_low"])
    rule = spec.decision
    primary = pairs[pairs["metric"] == rule.metric].set_index("variant_a").reindex(others)
    # decisions rest on the bootstrap over test rows and training seeds; DeLong (test rows only) is reported
    raw_p = [float(primary.loc[o, "p_value"]) for o in others]
    adjusted = dict(zip(others, stats.holm(raw_p)))
    pairs["p_adjusted"] = np.nan
    mask = pairs["metric"] == rule.metric
    pairs.loc[mask, "p_adjusted"] = pairs.loc[mask, "variant_a"].map(adjusted)
    pairs["delong_p"] = pairs["variant_a"].map({o: d["p_value"] for o, d in delong.items()}).where(
        pairs["metric"] == "roc_auc")
    decisions = {}
    for o in others:
        r = primary.loc[o]
        d = stats.decide({"estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                          "p_adjusted": adjusted[o]}, rule.model_dump())
        winner = {"A": o, "B": control}.get(d["decision"])
        decisions[o] = {"versus": control, "winner": winner, "decision": d["decision"], "reason": d["reason"],
                        "estimate": float(r["estimate"]), "ci_low": float(r["ci_low"]),
                        "ci_high": float(r["ci_high"]), "p_adjusted": adjusted[o],
                        "delong_p": delong[o]["p_value"]}
    return Comparison(per_variant, pairs.reset_index(drop=True), decisions, y, mean)


# --- fitting one variant --------------------------------------------------------------------
def _round_robin_scores(keys: pd.DataFrame) -> np.ndarray:
    """A router that ignores fit: each pair's rank comes from its place in the rotation only."""
    text = keys.astype(str).agg("|".join, axis=1)
    return np.array([int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) / 16**8 for t in text])


def fit_variant(model, frame: pd.DataFrame, features: list[str], v: Variant, spec: ExperimentSpec):
    """(test frame, (fits, rows) test scores) for one variant: one fit per seed. ``model``: the
    model's spec (``salesml.modelspec.ModelSpec``)."""
    from training.data import split_frame
    from training.pipeline import fit_and_evaluate

    if v.model_class == "round_robin":
        split = split_frame(frame, list(model.keys))  # the same windows fit_and_evaluate uses
        keys = [c for c in ("lead_id", "rep_id", "account_id") if c in split.test]
        return split.test, _round_robin_scores(split.test[keys])[None, :]
    fits, test = [], None
    for j in range(spec.fits_per_variant):
        result = fit_and_evaluate(model, frame, features, v.seed + 1000 * j, params=dict(v.params) or None,
                                  candidates=[v.model_class] if v.model_class in ("xgboost", "logistic") else None)
        if v.model_class not in result.test_scores:
            raise ValueError(f"variant '{v.name}': model_class '{v.model_class}' is not available for model "
                             f"'{model}' (available: {', '.join(result.test_scores)})")
        fits.append(np.asarray(result.test_scores[v.model_class], float))
        test = result.split.test
        if v.model_class != "xgboost":  # deterministic given the data: one fit is all there is
            break
    return test, np.vstack(fits)


def variant_features(v: Variant, available: list[str]) -> list[str]:
    cols = list(v.features) if v.features else list(available)
    missing = [c for c in cols + v.exclude_features if c not in available]
    if missing:
        raise ValueError(f"variant '{v.name}': feature(s) {', '.join(missing)} not in its feature service "
                         f"(has {', '.join(available)})")
    return [c for c in cols if c not in set(v.exclude_features)]


# --- the whole run -------------------------------------------------------------------------
def run_experiment(settings: Settings, spec: ExperimentSpec, raw_dir: Path | None = None,
                   log: Callable[[str], None] = print) -> dict:
    import mlflow

    from features.store import open_store
    from features.training_sets import build_training_set, label_rows, read_label_tables
    from training import tracking

    raw_dir = raw_dir or settings.export_dir
    model_spec = settings.spec(spec.model, raw_dir)
    frames = read_label_tables(settings, model_spec, raw_dir)
    labels, keys, _ = label_rows(model_spec, frames, settings.project(raw_dir).export.as_of)
    store = open_store(settings)
    tests, scores, info = {}, {}, {}
    for v in spec.variants:
        log(f"{spec.name}: variant {v.name} ({v.model_class} on {v.feature_service or spec.model})")
        ts = build_training_set(settings, spec.model, raw_dir=raw_dir, feature_service=v.feature_service,
                                store=store, labels=labels)
        frame = ts.frame.sort_values([*ts.entity_columns, "event_timestamp"], kind="stable").reset_index(drop=True)
        feats = variant_features(v, ts.feature_columns)
        test, p = fit_variant(model_spec, frame, feats, v, spec)
        tests[v.name], scores[v.name] = test, p
        info[v.name] = {"feature_service": ts.feature_service, "n_features": len(feats), "features": feats,
                        "training_rows": len(frame), "test_rows": len(test),
                        "test_window": f"{test['event_timestamp'].min():%Y-%m-%d}.."
                                       f"{test['event_timestamp'].max():%Y-%m-%d}"}
    first = tests[spec.variants[0].name]
    key_cols = [*keys, "event_timestamp"]
    for name, t in tests.items():  # paired statistics need the very same rows in the same order
        if not t[key_cols].reset_index(drop=True).equals(first[key_cols].reset_index(drop=True)):
            raise ValueError(f"variant '{name}' was tested on different rows than '{spec.variants[0].name}'")
    y = first["label"].to_numpy(int)
    log(f"{spec.name}: paired bootstrap ({spec.bootstrap.resamples} resamples) and DeLong tests")
    comp = compare(spec, y, scores)

    out_dir = settings.reports_dir / "experiments" / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(comp)
    md, html = render_report(spec, comp, info, figures)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.html").write_text(html)
    for name, fig_png in figures.items():
        (out_dir / f"{name}.png").write_bytes(fig_png)

    tracking.configure(settings)
    tracking.use_experiment(settings, EXPERIMENT)
    with mlflow.start_run(run_name=spec.name) as parent:
        mlflow.set_tags({"kind": "experiment", "model": spec.model, "git_commit": tracking.git_commit(),
                         "control": spec.variants[0].name,
                         "decisions": "; ".join(f"{o}: {d['decision']}" for o, d in comp.decisions.items())})
        mlflow.log_params({"model": spec.model, "variants": ",".join(v.name for v in spec.variants),
                           "bootstrap_resamples": spec.bootstrap.resamples, "decision_metric": spec.decision.metric,
                           "alpha": spec.decision.alpha, "operating_share": spec.operating_share,
                           "test_window": info[spec.variants[0].name]["test_window"], "test_rows": len(y)})
        for o, d in comp.decisions.items():
            mlflow.log_metrics({f"diff_{spec.decision.metric}__{o}": d["estimate"],
                                f"diff_ci_low__{o}": d["ci_low"], f"diff_ci_high__{o}": d["ci_high"],
                                f"p_adjusted__{o}": d["p_adjusted"]})
        mlflow.log_artifacts(str(out_dir), artifact_path="report")
        for v in spec.variants:
            row = comp.per_variant.set_index("variant").loc[v.name]
            with mlflow.start_run(run_name=v.name, nested=True):
                mlflow.set_tags({"kind": "experiment-variant", "experiment": spec.name, "variant": v.name,
                                 "model": spec.model})
                mlflow.log_params({"variant": v.name, "model_class": v.model_class,
                                   "feature_service": info[v.name]["feature_service"],
                                   "n_features": info[v.name]["n_features"], "seed": v.seed,
                                   **{f"param_{k}": val for k, val in v.params.items()}})
                mlflow.log_metrics({f"test_{k}": float(val) for k, val in row.items()
                                    if isinstance(val, (int, float, np.floating)) and np.isfinite(val)})
                mlflow.log_dict({"features": info[v.name]["features"]}, "features.json")
    log(f"{spec.name}: report {out_dir / 'report.html'}; MLflow run {parent.info.run_id}")
    return {"run_id": parent.info.run_id, "report": out_dir / "report.html", "decisions": comp.decisions,
            "per_variant": comp.per_variant, "pairs": comp.pairs}


# --- report ----------------------------------------------------------------------------------
def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _figures(comp: Comparison) -> dict[str, bytes]:
    from training.plots import calibration, pyplot, roc_pr_curves

    plt = pyplot()
    pairs = comp.pairs
    metrics = list(dict.fromkeys(pairs["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        part = pairs[pairs["metric"] == m]
        ypos = np.arange(len(part))
        err = [part["estimate"] - part["ci_low"], part["ci_high"] - part["estimate"]]
        ax.errorbar(part["estimate"], ypos, xerr=err, fmt="o", capsize=4)
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(ypos, [f"{a} - {b}" for a, b in zip(part["variant_a"], part["variant_b"])])
        ax.set_title(f"{m}: difference, 95% CI")
    fig.tight_layout()
    return {"differences": _png(fig), "roc_pr": _png(roc_pr_curves(comp.y, comp.scores)),
            "calibration": _png(calibration(comp.y, comp.scores))}


def render_report(spec: ExperimentSpec, comp: Comparison, info: dict, figures: dict[str, bytes]) -> tuple[str, str]:
    per = comp.per_variant.copy()
    pairs = comp.pairs[["metric", "variant_a", "variant_b", "estimate", "ci_low", "ci_high", "p_value",
                        "p_adjusted", "delong_p"]]
    decisions = pd.DataFrame([{"variant": o, **d} for o, d in comp.decisions.items()])
    head = [f"# Experiment `{spec.name}` ({spec.model})", "", spec.description.strip(), "",
            f"Control: `{spec.variants[0].name}`. Test rows: {len(comp.y):,} (window "
            f"{info[spec.variants[0].name]['test_window']}), identical for every variant. "
            f"{spec.bootstrap.resamples} paired bootstrap resamples (stratified by class) that also draw one of "
            f"{spec.fits_per_variant} training seeds per variant, so the CIs carry training variance; Holm's "
            f"correction over {len(comp.decisions)} comparison(s); DeLong's test (test rows only, on the "
            f"seed-averaged scores) for reference. Decision rule: "
            f"`{spec.decision.metric}` {'higher' if spec.decision.higher_is_better else 'lower'} is better, "
            f"alpha {spec.decision.alpha}, minimum effect {spec.decision.min_effect}. Warning precision/recall: "
            f"the top {spec.operating_share:.0%} of scores flagged, Wilson 95% CIs.", ""]
    md = "\n".join(head + ["## Decisions", "", decisions.to_markdown(index=False, floatfmt=".4f"), "",
                           "## Metrics per variant (95% bootstrap CIs)", "",
                           per.to_markdown(index=False, floatfmt=".4f"),
                           "", "## Differences vs the control", "", pairs.to_markdown(index=False, floatfmt=".4f"), "",
                           *[f"![{k}]({k}.png)" for k in figures], ""])
    imgs = "".join(f'<h3>{k}</h3><img src="data:image/png;base64,{base64.b64encode(v).decode()}"/>'
                   for k, v in figures.items())
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{spec.name}</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"
            f"<h1>Experiment {spec.name} ({spec.model})</h1><p>{' '.join(head[2:])}</p>"
            f"<h2>Decisions</h2>{decisions.to_html(index=False, float_format='%.4f')}"
            f"<h2>Metrics per variant</h2>{per.to_html(index=False, float_format='%.4f')}"
            f"<h2>Differences vs the control</h2>{pairs.to_html(index=False, float_format='%.4f')}"
            f"{imgs}</body></html>")
    return md, html
