"""Promotion: challenger replaces champion only with evidence, and the decision is logged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.metrics import classification_metrics
from training.tracking import CHALLENGER, CHAMPION

MIN_AUC_GAIN = 0.005  # challenger must beat champion's test ROC-AUC by this much
MAX_ECE_LOSS = 0.01  # ... and may not be worse calibrated by more than this


@dataclass
class Decision:
    model: str
    promote: bool
    reason: str
    champion_version: str | None
    challenger_version: str | None
    champion_metrics: dict
    challenger_metrics: dict


def decide(name: str, y: np.ndarray, p_champion: np.ndarray | None, p_challenger: np.ndarray,
           champion_version: str | None, challenger_version: str,
           min_gain: float = MIN_AUC_GAIN, max_ece_loss: float = MAX_ECE_LOSS) -> Decision:
    """Pure decision on the same test rows."""
    ch = classification_metrics(y, p_challenger)
    if p_champion is None:
        return Decision(name, True, "no champion yet: the first model becomes champion",
                        None, challenger_version, {}, ch)
    cm = classification_metrics(y, p_champion)
    gain = ch["roc_auc"] - cm["roc_auc"]
    if gain < min_gain:
        reason = f"ROC-AUC gain {gain:+.4f} below the required {min_gain:+.4f}"
        return Decision(name, False, reason, champion_version, challenger_version, cm, ch)
    if ch["ece"] > cm["ece"] + max_ece_loss:
        reason = f"calibration worse: ECE {cm['ece']:.4f} -> {ch['ece']:.4f}"
        return Decision(name, False, reason, champion_version, challenger_version, cm, ch)
    reason = f"ROC-AUC {cm['roc_auc']:.4f} -> {ch['roc_auc']:.4f}, ECE {cm['ece']:.4f} -> {ch['ece']:.4f}"
    return Decision(name, True, reason, champion_version, challenger_version, cm, ch)


def promote(settings, name: str, raw_dir: Path | None = None, min_gain: float = MIN_AUC_GAIN) -> Decision:
    """Compare challenger and champion on the latest test window; move ``champion`` if earned."""
    import mlflow
    from mlflow import MlflowClient

    from features.training_sets import build_training_set
    from training import tracking
    from training.data import LABEL, time_split

    tracking.configure(settings)
    client = MlflowClient()
    aliases = client.get_registered_model(name).aliases
    if CHALLENGER not in aliases:
        raise ValueError(f"model '{name}' has no challenger to promote")
    ts = build_training_set(settings, name, raw_dir=raw_dir or settings.raw_dir)
    test = time_split(ts.frame).test
    y = test[LABEL].to_numpy()

    def scores(alias):
        return mlflow.pyfunc.load_model(f"models:/{name}@{alias}").predict(test)

    p_champ = scores(CHAMPION) if CHAMPION in aliases else None
    decision = decide(name, y, None if p_champ is None else np.asarray(p_champ),
                      np.asarray(scores(CHALLENGER)), aliases.get(CHAMPION), aliases[CHALLENGER], min_gain)
    tracking.use_experiment(settings, "salesml-promotions")
    with mlflow.start_run(run_name=f"promote-{name}"):
        mlflow.set_tags({"model": name, "decision": "promote" if decision.promote else "keep"})
        mlflow.log_params({"champion_version": decision.champion_version,
                           "challenger_version": decision.challenger_version,
                           "min_auc_gain": min_gain, "reason": decision.reason[:250],
                           "test_window": f"{test['event_timestamp'].min():%Y-%m-%d}.."
                                          f"{test['event_timestamp'].max():%Y-%m-%d}"})
        for tag, m in (("champion", decision.champion_metrics), ("challenger", decision.challenger_metrics)):
            mlflow.log_metrics({f"{tag}_{k}": v for k, v in m.items() if np.isfinite(v)})
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, decision.challenger_version)
            client.delete_registered_model_alias(name, CHALLENGER)
    return decision
