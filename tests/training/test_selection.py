"""Model selection on validation: the preferred candidate within the margin, baselines that beat it block it."""

from __future__ import annotations

import pytest

from salesml.modelspec import load_spec
from training.pipeline import select


@pytest.fixture
def spec():
    return load_spec("intent")  # candidates xgboost, xgboost_unconstrained, logistic; margin 0.01


def test_the_constrained_model_is_kept_within_the_margin(spec):
    s = select(spec, {"xgboost": 0.800, "xgboost_unconstrained": 0.805, "logistic": 0.79, "rules": 0.70}, ["rules"])
    assert s.chosen == "xgboost" and s.registrable and not s.notes


def test_a_candidate_beyond_the_margin_wins_and_the_run_says_the_constraints_cost(spec):
    s = select(spec, {"xgboost": 0.780, "xgboost_unconstrained": 0.800, "logistic": 0.795}, [])
    assert s.chosen == "xgboost_unconstrained"
    assert "constrained xgboost trails xgboost_unconstrained by 0.0200" in s.notes[0]


def test_the_best_candidate_wins_when_it_leads_everyone_by_more_than_the_margin(spec):
    s = select(spec, {"xgboost": 0.70, "xgboost_unconstrained": 0.71, "logistic": 0.76}, [])
    assert s.chosen == "logistic" and s.registrable


def test_a_baseline_beating_the_choice_by_more_than_the_margin_blocks_registration(spec):
    s = select(spec, {"xgboost": 0.70, "xgboost_unconstrained": 0.70, "logistic": 0.69, "rules": 0.75}, ["rules"])
    assert not s.registrable
    assert "baseline rules beats xgboost on validation (0.7500 vs 0.7000" in s.reason
    close = select(spec, {"xgboost": 0.745, "xgboost_unconstrained": 0.70, "logistic": 0.69, "rules": 0.75},
                   ["rules"])
    assert close.registrable  # within the margin: not beaten


def test_the_margin_comes_from_the_spec():
    strict = load_spec("chs").model_copy(update={"selection_margin": 0.0})
    s = select(strict, {"xgboost": 0.800, "xgboost_unconstrained": 0.801, "logistic": 0.7}, [])
    assert s.chosen == "xgboost_unconstrained"
