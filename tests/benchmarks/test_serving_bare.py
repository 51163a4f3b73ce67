"""`salesml bench serving`'s part beside a bare BentoML service, run short on the served test environment:
the real service and the bare one over the same champions, started as the bench starts them. The bare
one answers, with the probabilities ours answers; the bench's section has both rows and their ratio. No
timing is asserted: the goals are the bench's to judge (`make bench` runs the full method)."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


def test_the_bare_service_scores_as_ours_and_the_bench_reports_both(served_settings):
    from benchmarks.serving_bare import BesideRun, side_by_side, start_anchor
    from salesml.processes import free_port
    from serving.auth import KeyStore
    from serving.core import ScoringCore
    from serving.runner import post, start_background, stop

    home = served_settings
    key = KeyStore(home.api_keys_path).add("csm", "test-beside")[1]
    features_only = ScoringCore.load(home, only=("lead_match",))  # the anchor reads the online store through it
    anchor, bare = start_anchor(home, features_only, log=lambda _: None)
    try:
        _, port = start_background(home, free_port())
        bare.wait()
        lead = anchor.ids["intent"][0]
        ours = post(port, "/intent", {"lead_ids": [lead]}, key)
        theirs = post(bare.port, "/intent", {"lead_ids": [lead]}, key)
        assert ours[0] == theirs[0] == 200, (ours, theirs)
        assert theirs[1]["probabilities"][0] == pytest.approx(ours[1]["results"][0]["probability"], abs=1e-6)
        # the test home's CHS champion is a numeric logistic model: the bare service does its arithmetic
        assert anchor.kinds == {"chs": "linear", "intent": "xgboost", "lead_match": "xgboost"}, anchor.kinds
        for account in anchor.ids["chs"][:5]:
            ours = post(port, "/health", {"account_ids": [account]}, key)
            theirs = post(bare.port, "/health", {"account_ids": [account]}, key)
            assert theirs[1]["probabilities"][0] == pytest.approx(ours[1]["results"][0]["churn_probability"], abs=1e-9)
        figures = side_by_side(home, anchor, port, bare.port, key,
                               BesideRun(calls=5, warmup=2, clients=2, seconds=0.3, batch_seconds=0.1),
                               log=lambda _: None)
    finally:
        bare.stop()
        stop(home)
    text = "\n".join(figures["lines"])
    assert text.startswith("## Beside a bare BentoML service")
    for endpoint, model in (("/health", "chs"), ("/intent", "intent"), ("/match", "lead_match")):
        row = figures["endpoints"][endpoint]
        assert row["ours"]["calls"] == 5 and row["ours"]["calls at clients"] > 0
        table = text.split(f"### {endpoint},")[1].split("###")[0]
        assert re.search(r"^\| ours \(`salesml serve`\) \| [\d.,]+ \|", table, re.M), table
        if model in anchor.skipped:
            assert "bare" not in row and "| bare BentoML | — |" in table
            assert f"**No bare anchor for `{model}`**" in text
            continue
        assert row["bare"]["calls"] == 5 and row["bare"]["calls at clients"] > 0
        assert row["ratio"]["p50 ms"] == pytest.approx(row["ours"]["p50 ms"] / row["bare"]["p50 ms"])
        assert re.search(r"^\| bare BentoML \| [\d.,]+ \|", table, re.M), table
        assert re.search(r"^\| ratio, ours / bare \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", table, re.M), table
        agree = figures["agreement"][endpoint]
        assert agree["max abs diff"] <= 1e-6 and agree["same reps"] is not False, agree
    assert "Goals: p50 within 2x" in text.split("### /intent,")[1]
    assert figures["batch"]["calls"] >= 1 and figures["batch"]["accounts/s"] > 0
    assert "error" not in figures["since"], figures["since"]
    assert "accounts/s** over HTTP; goal >= 20,000" in text and "goal >= 2,000" in text
