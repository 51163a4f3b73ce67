"""The loop replay: exact truth from the hazards, draws that follow it, and an estimator that recovers it."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from experiments.playbooks import estimate_effects
from salesml.simulator.playbooks import LoopConfig, PlaybookTruth, replay, synthetic_hazards, write_truth

START = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday
PLAYBOOKS = ("monitor", "self-service-guide", "csm-call", "executive-response")
# helpful, useless, harmful, mildly helpful: the ids are a parameter, these are not the shipped defaults' order
HR = {"monitor": 1.0, "self-service-guide": 0.4, "csm-call": 1.8, "executive-response": 0.7}
H = 26


@functools.lru_cache(maxsize=4)
def _hazards(n: int, weeks: int, seed: int):
    return synthetic_hazards(n, weeks, START, seed)  # built once per shape and seed


def world(n=3000, weeks=60, holdout=0.3, seed=0, hazard_seed=0):
    """Synthetic hazards (n accounts x weeks) and one warning per account, raised at a random time of a
    random week with a full horizon left; the playbook follows the account's hazard (riskier accounts get
    heavier playbooks, as levels do) and ~``holdout`` of the warnings are held out at random."""
    acc, base, hazards = _hazards(n, weeks, hazard_seed)
    rng = np.random.default_rng(seed)
    week = rng.integers(0, weeks - H + 1, n)
    raised = START + pd.to_timedelta(7 * week + rng.uniform(0, 7, n), unit="D")
    level = np.digitize(base, np.quantile(base, [0.25, 0.5, 0.75]))
    warnings = pd.DataFrame({
        "warning_id": [f"W{i:05d}" for i in range(n)], "account_id": acc, "kind": "level",
        "old_level": "green", "new_level": np.array(["green", "yellow", "orange", "red"])[level],
        "score": 100 * (1 - base), "playbook_id": np.array(PLAYBOOKS)[level], "playbook_version": "1",
        "holdout": rng.random(n) < holdout, "owner": [f"CSM{i % 7}" for i in range(n)],
        "raised_at": raised, "due_at": raised + pd.Timedelta(hours=4)})
    return warnings, hazards.copy()


def config(seed=0, **kw):
    return LoopConfig(seed=seed, horizon_weeks=H, playbooks={
        p: PlaybookTruth(hazard_ratio=HR[p], p_not_applicable=0.1, not_applicable_reason=f"{p} does not fit")
        for p in PLAYBOOKS}, **kw)


def as_of_after(warnings):
    return warnings["raised_at"].max() + pd.Timedelta(weeks=H, days=1)


def test_truth_is_exact_for_a_constant_hazard():
    h, hr = 0.02, 0.4
    warnings, hazards = world(n=4, weeks=40, holdout=0.0)
    hazards["churn_hazard"] = h
    cfg = LoopConfig(seed=1, horizon_weeks=H, delay_sigma=0.0, delay_median_hours=3.0,
                     playbooks={p: PlaybookTruth(hazard_ratio=hr, p_not_applicable=0.0) for p in PLAYBOOKS})
    r = replay(warnings, hazards, cfg)
    p_none = 1 - (1 - h) ** H
    p_as = 1 - (1 - h) * (1 - h) ** (hr * (H - 1))  # week 0 holds the intervention; the playbook acts from week 1
    assert np.allclose(r.warnings["p_no_playbook"], p_none)
    assert np.allclose(r.warnings["p_as_replayed"], p_as)
    assert np.allclose(r.truth.dropna()["true_effect"], p_as - p_none)
    # a delay of 8 days puts the intervention in horizon week 1: the playbook acts from week 2
    late = replay(warnings, hazards, cfg.model_copy(update={"delay_median_hours": 8 * 24.0}))
    assert np.allclose(late.warnings["p_as_replayed"], 1 - (1 - h) ** 2 * (1 - h) ** (hr * (H - 2)))


def test_interventions_follow_the_warnings():
    warnings, hazards = world(n=800, holdout=0.3, seed=3)
    r = replay(warnings, hazards, config(seed=3))
    prompted = warnings.loc[~warnings["holdout"], "warning_id"]
    assert set(r.interventions["warning_id"]) == set(prompted)  # none for held-out warnings
    iv = r.interventions.merge(warnings, on="warning_id", suffixes=("", "_w"))
    assert (iv["by"] == iv["owner"]).all() and (iv["at"] > iv["raised_at"]).all()
    assert iv.loc[~iv["not_applicable"], "playbook_id"].eq(iv.loc[~iv["not_applicable"], "playbook_id_w"]).all()
    assert iv.loc[iv["not_applicable"], "playbook_id"].isna().all()
    assert iv.loc[iv["not_applicable"], "reason"].str.endswith("does not fit").all()
    assert 0.05 < iv["not_applicable"].mean() < 0.15
    assert abs(np.median((iv["at"] - iv["raised_at"]).dt.total_seconds() / 3600) - 3.0) < 0.5
    # not-applicable prompts have no effect: as replayed == without playbook
    na = r.warnings[r.warnings["not_applicable"]]
    assert np.allclose(na["p_as_replayed"], na["p_no_playbook"])
    assert r.truth.set_index("playbook_id")["n"].sum() == len(prompted)


def test_draws_follow_the_exact_probabilities():
    warnings, hazards = world(n=3000, holdout=0.3, seed=4)
    r = replay(warnings, hazards, config(seed=4))
    w = r.warnings
    se = np.sqrt((w["p_as_replayed"] * (1 - w["p_as_replayed"])).sum()) / len(w)
    assert abs(w["churned"].mean() - w["p_as_replayed"].mean()) < 4 * se
    o = r.outcomes.merge(warnings[["warning_id", "raised_at"]], on="warning_id")
    assert (o["churned_at"] > o["raised_at"]).all()
    assert (o["churned_at"] <= o["raised_at"] + pd.Timedelta(weeks=H)).all()
    assert set(o["warning_id"]) == set(w.loc[w["churned"], "warning_id"])


def test_same_seed_same_replay_and_hazard_ratio_one_means_no_effect():
    warnings, hazards = world(n=500, seed=5)
    a, b = replay(warnings, hazards, config(seed=9)), replay(warnings, hazards, config(seed=9))
    pd.testing.assert_frame_equal(a.outcomes, b.outcomes)
    pd.testing.assert_frame_equal(a.interventions, b.interventions)
    null = LoopConfig(seed=9, horizon_weeks=H, playbooks={p: PlaybookTruth(hazard_ratio=1.0) for p in PLAYBOOKS})
    n = replay(warnings, hazards, null)
    assert np.allclose(n.truth["true_effect"], 0.0)
    # common random numbers: the held-out warnings' outcomes do not depend on the playbooks' effects
    held = set(warnings.loc[warnings["holdout"], "warning_id"])
    pd.testing.assert_frame_equal(a.outcomes[a.outcomes["warning_id"].isin(held)].reset_index(drop=True),
                                  n.outcomes[n.outcomes["warning_id"].isin(held)].reset_index(drop=True))


def test_skips_and_refusals(tmp_path):
    warnings, hazards = world(n=50, weeks=40, seed=6)
    late = warnings.iloc[:3].assign(raised_at=START + pd.Timedelta(weeks=30))
    ghost = warnings.iloc[3:4].assign(account_id="NOPE")
    w = pd.concat([late, ghost, warnings.iloc[4:]], ignore_index=True)
    r = replay(w, hazards, config())
    assert r.skipped == {"horizon runs past the last hazard week": 3, "account not in hazards": 1}
    assert len(r.warnings) == 46
    soon = warnings["raised_at"].iloc[0] + pd.Timedelta(weeks=2)
    again = pd.concat([warnings, warnings.iloc[:1].assign(warning_id="W-again", raised_at=soon)])
    with pytest.raises(ValueError, match="inside an earlier warning"):
        replay(again, hazards, config())
    with pytest.raises(ValueError, match="no truth for"):
        replay(warnings.assign(playbook_id="mystery"), hazards, config())
    path = write_truth(r, tmp_path)
    assert path == tmp_path / "truth" / "truth_playbook_effects.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), r.truth)


def _estimate(seed):
    warnings, hazards = world(seed=seed, hazard_seed=seed % 2)
    r = replay(warnings, hazards, config(seed=seed))
    table = estimate_effects(r.warnings, r.outcomes, horizon_days=7 * H, as_of=as_of_after(warnings))
    return table.merge(r.truth[["playbook_id", "hazard_ratio", "true_effect"]], on="playbook_id")


def test_estimator_recovers_the_planted_effects():
    t = _estimate(seed=0).set_index("playbook_id")
    assert (t["ci_low"] <= t["true_effect"]).all() and (t["true_effect"] <= t["ci_high"]).all()
    assert t.loc["csm-call", "verdict"] == "harmful"
    assert t.loc["self-service-guide", "verdict"] == "helpful"
    assert t.loc["monitor", "verdict"] == "inconclusive"
    assert (t["n_incomplete"] == 0).all() and (t["n_prompted"] + t["n_holdout"] == 750).all()


def test_interval_coverage_is_near_nominal_over_seeds():
    """20 seeds (two hazard tables; warning times, holdout, delays, marks and churn drawn anew each time):
    each playbook's 95% interval covers its true effect in >= 17 of them (P(<= 16 of 20 | 95%) ~ 1.6%);
    the harmful and helpful ones are flagged in most, the useless one rarely."""
    tables = pd.concat([_estimate(seed=s) for s in range(100, 120)])
    covered = (tables["ci_low"] <= tables["true_effect"]) & (tables["true_effect"] <= tables["ci_high"])
    per = covered.groupby(tables["playbook_id"]).sum()
    assert (per >= 17).all(), per.to_dict()
    verdicts = tables.groupby("playbook_id")["verdict"].value_counts().unstack(fill_value=0)
    assert verdicts.loc["csm-call", "harmful"] >= 17 and verdicts.loc["self-service-guide", "helpful"] >= 17
    assert verdicts.loc["monitor"].get("inconclusive", 0) >= 17


def test_replay_command_on_the_warnings_store(tmp_path, monkeypatch):
    """`salesml playbooks replay --record` on a store of real warnings and a simulator truth folder: the
    estimates beside their truth, the truth table written, the interventions recorded (the fuse sees them)."""
    from typer.testing import CliRunner

    from salesml.cli import app
    from salesml.settings import Settings
    from serving.actions.warnings import open_warning_store

    monkeypatch.setenv("SALESML_HOME", str(tmp_path))
    monkeypatch.setenv("SALESML_PLAYBOOK_HOLDOUT_SHARE", "0.3")
    settings = Settings()
    runner = CliRunner()
    missing = runner.invoke(app, ["playbooks", "replay"])
    assert missing.exit_code != 0 and "truth_churn_weekly" in missing.output
    n, weeks = 1200, 40
    acc, base, hazards = _hazards(n, weeks, 5)
    (settings.raw_dir / "truth").mkdir(parents=True)
    hazards.to_parquet(settings.raw_dir / "truth" / "truth_churn_weekly.parquet")
    level = np.array(["yellow", "orange", "red"])[np.digitize(base, np.quantile(base, [1 / 3, 2 / 3]))]
    with open_warning_store(settings) as store:
        transitions = pd.DataFrame({"account_id": acc, "old_level": "green", "new_level": level,
                                    "score": 100 * (1 - base), "change_text": "CHS fell", "as_of": "2025-01-13"})
        store.raise_warnings(transitions.iloc[:-100], source="run", now=START + pd.Timedelta(days=7, hours=9))
        late = START + pd.Timedelta(weeks=weeks - 2)  # no 26 weeks of hazards after: skipped, and said
        store.raise_warnings(transitions.iloc[-100:].assign(as_of=str(late.date())), source="run", now=late)

    result = runner.invoke(app, ["playbooks", "replay", "--record", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert f"replayed {n - 100:,} of {n:,} warnings" in result.output and "100 horizon runs past" in result.output
    truth = pd.read_parquet(settings.raw_dir / "truth" / "truth_playbook_effects.parquet").set_index("playbook_id")
    assert truth.loc["self-service-guide", "true_effect"] > 0 > truth.loc["csm-call", "true_effect"]
    for pid in ("self-service-guide", "csm-call", "executive-response"):
        assert pid in result.output
    with open_warning_store(settings) as store:
        handled = store.frame()
        assert (handled["status"] != "open").sum() >= 0.6 * (n - 100)  # prompted ones got their intervention
        assert (handled.loc[handled["holdout"], "status"] == "open").all()
