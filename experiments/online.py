"""Online A/B analysis from the serving logs: exposures per variant, outcome rates, the
difference with its CI, and whether the planned sample size has been reached.

An entity's exposure is its first logged prediction for the model; it counts as a success when
an outcome of the model's kind (``churned`` for chs, ``converted`` for intent / lead_match) with
value true is logged for it after that exposure.  No winner is declared before both arms reach
the sample size that a two-proportion test needs for the minimum detectable effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments import stats
from salesml.settings import Settings


@dataclass
class OnlineResult:
    model: str
    arms: pd.DataFrame  # variant, version(s), exposed, successes, rate
    test: dict | None  # two-proportion test challenger vs champion
    required_per_arm: int
    reached: bool
    verdict: str
    mixed_entities: int  # entities seen in both arms (a re-salted split), left out

    def to_markdown(self) -> str:
        lines = [f"# Online A/B analysis: {self.model}", "", self.arms.to_markdown(index=False, floatfmt=".4f"), "",
                 f"Planned sample size per arm: {self.required_per_arm:,}; reached: {'yes' if self.reached else 'no'}.",
                 ""]
        if self.test:
            t = self.test
            lines += [f"Challenger - champion outcome rate: {t['diff']:+.4f} (95% CI {t['ci_low']:+.4f} .. "
                      f"{t['ci_high']:+.4f}, p = {t['p_value']:.4g}).", ""]
        if self.mixed_entities:
            lines += [f"{self.mixed_entities} entities were served by both arms and are left out.", ""]
        return "\n".join(lines + [f"**Verdict:** {self.verdict}", ""])


def analyze(log, model: str, mde: float, alpha: float = 0.05, power: float = 0.8,
            base_rate: float | None = None, spec=None) -> OnlineResult:
    """Pure over a PredictionLog: exposures, outcomes, the test and the verdict."""
    from salesml.modelspec import load_spec

    serving = (spec or load_spec(model)).serving
    entity_type, outcome, higher_better = serving.entity_type, serving.outcome, serving.higher_is_better
    preds = log.predictions(model=model)
    if preds.empty:
        raise ValueError(f"the prediction log has no predictions for model '{model}'")
    preds = preds[preds["variant"].isin(["champion", "challenger"])]
    arms_of = preds.groupby("entity_id")["variant"].nunique()
    mixed = set(arms_of[arms_of > 1].index)
    first = (preds[~preds["entity_id"].isin(mixed)].sort_values("ts")
             .groupby("entity_id", as_index=False).first()[["entity_id", "ts", "variant", "version"]])
    out = log.outcomes(entity_type=entity_type)
    if not out.empty:
        out = out[(out["outcome"] == outcome) & (out["value"].astype(bool))]
        hit = first.merge(out[["entity_id", "occurred_at"]], on="entity_id", how="left")
        hit = hit[hit["occurred_at"] > hit["ts"]].drop_duplicates("entity_id")
        first["success"] = first["entity_id"].isin(set(hit["entity_id"]))
    else:
        first["success"] = False
    arms = (first.groupby("variant")
            .agg(versions=("version", lambda v: ",".join(sorted(set(map(str, v))))),
                 exposed=("entity_id", "size"), successes=("success", "sum"))
            .reindex(["champion", "challenger"]).fillna({"exposed": 0, "successes": 0}).reset_index())
    arms["rate"] = arms["successes"] / arms["exposed"].where(arms["exposed"] > 0)
    champ, chall = arms.set_index("variant").loc["champion"], arms.set_index("variant").loc["challenger"]
    base = base_rate if base_rate is not None else (float(champ["rate"]) if champ["exposed"] else float("nan"))
    if not 0 < base < 1:
        base = 0.5  # nothing observed yet: the most conservative planning rate
    need = stats.two_proportion_sample_size(base, mde, alpha, power)
    reached = champ["exposed"] >= need and chall["exposed"] >= need
    test = None
    if champ["exposed"] > 0 and chall["exposed"] > 0:
        test = stats.two_proportion_test(int(chall["successes"]), int(chall["exposed"]),
                                         int(champ["successes"]), int(champ["exposed"]), alpha)
    if chall["exposed"] == 0:
        verdict = "no challenger traffic: configure SALESML_CHALLENGER_SHARE for this model"
    elif not reached or test is None:
        verdict = (f"no winner yet: {int(champ['exposed']):,} / {int(chall['exposed']):,} exposures, "
                   f"{need:,} per arm needed to detect {mde:+.3f} at alpha {alpha} and power {power}")
    elif test["p_value"] < alpha and (test["ci_low"] > 0 or test["ci_high"] < 0):
        better_up = test["diff"] > 0
        winner = "challenger" if better_up == higher_better else "champion"
        verdict = f"{winner} is better (p = {test['p_value']:.4g}, CI excludes 0)"
    else:
        verdict = f"no detectable difference at the planned size (p = {test['p_value']:.4g})"
    return OnlineResult(model, arms, test, need, bool(reached), verdict, len(mixed))


def run(settings: Settings, model: str, mde: float, alpha: float = 0.05,
        power: float = 0.8) -> tuple[OnlineResult, Path]:
    from serving.predlog import PredictionLog

    if not settings.prediction_log_path.exists():
        raise ValueError(f"no prediction log at {settings.prediction_log_path}: serve some traffic first")
    result = analyze(PredictionLog(settings.prediction_log_path), model, mde, alpha, power, spec=settings.spec(model))
    path = settings.reports_dir / f"online_ab_{model}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.to_markdown())
    return result, path
