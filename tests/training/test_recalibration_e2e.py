"""Recalibration on simulated data whose true layer importance changes half-way."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIFT = "2025-03-31"


def test_weights_follow_the_shift_from_behaviour_to_relationship(tmp_path):
    from features.store import apply, build_feature_files
    from features.training_sets import build_training_set
    from salesml import simulator
    from salesml.modelspec import load_spec
    from salesml.settings import Settings
    from training.chs import fit_health_model
    from training.pipeline import fit_and_evaluate
    from training.recalibration import quarter_bounds, quarters_in, recalibrate

    raw = tmp_path / "raw"
    # truth_samples=0: the weights are judged by the planted shift, not the Monte Carlo truth (34 s -> 0.4 s)
    simulator.generate(raw, accounts=1500, leads=300, reps=12, weeks=156, seed=3,
                       importance_shift_after=SHIFT, truth_samples=0)
    settings = Settings(home=tmp_path / "home")
    build_feature_files(settings, raw, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    frame = build_training_set(settings, "chs", raw_dir=raw).frame
    before_shift = frame[frame["event_timestamp"] < "2024-09-01"]  # outcomes mature before the shift
    result = fit_and_evaluate("chs", before_shift, [c for c in frame.columns
                                                   if c not in ("account_id", "event_timestamp", "label")], seed=3,
                              candidates=["xgboost"])  # the layer weights are under test, not the selection
    model = fit_health_model(result.split.train, result.split.valid, result.model, seed=3,
                             monotone=load_spec("chs").constraints)

    horizon = load_spec("chs").horizon_days
    fits = {q: recalibrate(model, frame, q, horizon).proposed for q in quarters_in(frame, horizon)}
    # the last quarter fitted wholly before the shift against the newest one
    early = fits[max(q for q in fits if quarter_bounds(q)[1] <= pd.Timestamp(SHIFT, tz="UTC"))]
    late = fits[max(fits)]
    assert late["relationship"] > early["relationship"] + 0.05
    # the layer whose true importance rose gains relative to the one whose importance fell
    assert late["relationship"] * early["behaviour"] > early["relationship"] * late["behaviour"]
