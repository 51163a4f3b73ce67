"""Playbook effects vs the holdout: hand counts, left-out windows, no-estimate cases, and the MLflow record."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from experiments.playbooks import EXPERIMENT, estimate_effects, first_per_window, log_effects, render
from experiments.stats import two_proportion_test

T0 = pd.Timestamp("2026-01-05 09:00", tz="UTC")
AS_OF = pd.Timestamp("2026-04-01", tz="UTC")


def warning(wid, acc, pb, holdout, raised, version="1"):
    return {"warning_id": wid, "account_id": acc, "kind": "level", "old_level": "green", "new_level": "orange",
            "score": 40.0, "playbook_id": pb, "playbook_version": version, "holdout": holdout, "owner": "CSM1",
            "raised_at": raised, "due_at": raised + pd.Timedelta(hours=4)}


def hand_case():
    d = pd.Timedelta(days=1)
    warnings = pd.DataFrame([
        warning("w1", "a1", "csm-call", False, T0),             # churns day 15: counted
        warning("w2", "a2", "csm-call", False, T0),             # churned BEFORE the warning: not counted
        warning("w3", "a3", "csm-call", True, T0),              # churns day 55: after the 30-day horizon
        warning("w4", "a4", "csm-call", True, T0),              # churns day 5: counted
        warning("w5", "a5", "csm-call", True, T0),              # no churn
        warning("w6", "a6", "csm-call", False, T0 + 30 * d),    # churns exactly at the horizon's end: counted
        warning("w7", "a1", "csm-call", True, T0 + 10 * d),     # inside w1's window: dropped (overlap)
        warning("w8", "a8", "csm-call", False, AS_OF - 10 * d),  # window still open on AS_OF: incomplete
        warning("w9", "a9", "monitor", False, T0),              # no held-out monitor warning
    ])
    outcomes = pd.DataFrame({"account_id": ["a1", "a2", "a3", "a4", "a6", "a8"],
                             "churned_at": [T0 + 15 * d, T0 - d, T0 + 55 * d, T0 + 5 * d, T0 + 60 * d,
                                            AS_OF - 5 * d]})
    return warnings, outcomes


def test_hand_count():
    warnings, outcomes = hand_case()
    t = estimate_effects(warnings, outcomes, horizon_days=30, as_of=AS_OF).set_index("playbook_id")
    call = t.loc["csm-call"]
    # prompted w1 (churned), w2 (no), w6 (churned) -> 2/3; held out w3 (no), w4 (churned), w5 (no) -> 1/3
    assert (call["n_prompted"], call["churned_prompted"], call["n_holdout"], call["churned_holdout"]) == (3, 2, 3, 1)
    assert call["rate_prompted"] == pytest.approx(2 / 3) and call["rate_holdout"] == pytest.approx(1 / 3)
    assert call["effect"] == pytest.approx(1 / 3)
    ref = two_proportion_test(2, 3, 1, 3)
    assert (call["ci_low"], call["ci_high"], call["p_value"]) == pytest.approx((ref["ci_low"], ref["ci_high"],
                                                                                ref["p_value"]))
    assert call["ci_low"] < 0 < call["ci_high"] and call["verdict"] == "inconclusive"
    assert not call["harmful"] and not call["helpful"]
    assert (call["n_incomplete"], call["n_overlap_dropped"], call["holdout_share"]) == (1, 1, 0.5)
    mon = t.loc["monitor"]
    assert mon["verdict"] == "no estimate" and math.isnan(mon["effect"]) and "holdout share 0" in mon["note"]
    assert (mon["n_prompted"], mon["n_holdout"]) == (1, 0)
    assert t.attrs["horizon_days"] == 30


def test_overlap_keep_counts_every_warning():
    warnings, outcomes = hand_case()
    call = estimate_effects(warnings, outcomes, horizon_days=30, as_of=AS_OF, overlap="keep") \
        .set_index("playbook_id").loc["csm-call"]
    # w7 (held out, a1 churns on day 15 = 5 days after it) now counts: held out 2/4
    assert (call["n_holdout"], call["churned_holdout"], call["n_overlap_dropped"]) == (4, 2, 0)


def test_first_per_window_depends_on_times_only():
    d = pd.Timedelta(days=1)
    w = pd.DataFrame({"warning_id": list("abcde"), "account_id": ["x", "x", "x", "x", "y"],
                      "raised_at": [T0, T0 + 10 * d, T0 + 30 * d, T0 + 45 * d, T0 + 5 * d]})
    assert first_per_window(w, 30 * d).tolist() == [True, False, True, False, True]


def test_flags_and_by_version():
    rows = ([warning(f"p{i}", f"p{i}", "exec", False, T0, "2") for i in range(200)]
            + [warning(f"h{i}", f"h{i}", "exec", True, T0, "2") for i in range(200)])
    churned = [f"p{i}" for i in range(120)] + [f"h{i}" for i in range(40)]  # 60% vs 20%: harmful
    outcomes = pd.DataFrame({"account_id": churned, "churned_at": T0 + pd.Timedelta(days=3)})
    t = estimate_effects(pd.DataFrame(rows), outcomes, horizon_days=30, as_of=AS_OF, by_version=True)
    assert list(t[["playbook_id", "playbook_version"]].iloc[0]) == ["exec", "2"]
    assert t["harmful"].iloc[0] and t["verdict"].iloc[0] == "harmful" and t["ci_low"].iloc[0] > 0
    flipped = outcomes.assign(account_id=[c.translate(str.maketrans("ph", "hp")) for c in churned])
    t2 = estimate_effects(pd.DataFrame(rows), flipped, horizon_days=30, as_of=AS_OF)
    assert t2["helpful"].iloc[0] and t2["ci_high"].iloc[0] < 0


def test_nothing_complete_yet():
    warnings, outcomes = hand_case()
    t = estimate_effects(warnings, outcomes, horizon_days=30, as_of=T0 + pd.Timedelta(days=1))
    assert (t["verdict"] == "no estimate").all()
    assert t["note"].str.contains("no warning with a complete outcome window").all()
    assert t["n_incomplete"].sum() == len(warnings) - 1  # w7 is still dropped as an overlap
    md = render(t)
    assert "no estimate" in md and "Left out: 8 warning(s)" in md


@pytest.mark.integration  # a real MLflow store: creating its SQLite tables takes ~5 s of CPU
@pytest.mark.mlflow
def test_log_effects_writes_a_run(tmp_path):
    import mlflow

    from salesml.settings import Settings
    from training import tracking

    settings = Settings(home=tmp_path)
    warnings, outcomes = hand_case()
    table = estimate_effects(warnings, outcomes, horizon_days=30, as_of=AS_OF)
    try:
        run_id = log_effects(settings, table, as_of=AS_OF, extra_params={"source": "hand case"})
        client = tracking.client(settings)
        run = client.get_run(run_id)
        assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
        m, p = run.data.metrics, run.data.params
        assert m["effect__csm-call"] == pytest.approx(1 / 3)
        assert m["ci_low__csm-call"] == pytest.approx(table["ci_low"].iloc[0])
        assert m["ci_high__csm-call"] == pytest.approx(table["ci_high"].iloc[0])
        assert m["n__csm-call"] == 6 and m["n__monitor"] == 1 and "effect__monitor" not in m
        assert p["horizon_days"] == "30" and p["source"] == "hand case" and p["as_of"].startswith("2026-04-01")
        paths = {a.path for d in ("plots", "effects") for a in client.list_artifacts(run_id, d)}
        assert {"plots/playbook_effects.png", "effects/effects.csv", "effects/effects.md"} <= paths
        png = client.download_artifacts(run_id, "plots/playbook_effects.png", str(tmp_path / "dl"))
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
