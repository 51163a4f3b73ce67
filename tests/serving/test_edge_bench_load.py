"""`salesml bench load`, run short on the served test environment: the real service, a key-less attacker
on the same address holding more idle sockets than the service's (lowered) connection cap and trickling
two bodies, beside legitimate /health clients. Every legitimate call is answered, and the report says
so with its figures. `make bench` runs the full size (700 sockets, 16 clients, 30 s)."""

from __future__ import annotations

import json

import pytest

from salesml.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]


def test_edge_bench_load_short_run_answers_every_legitimate_call(served_settings, tmp_path):
    from benchmarks.serving import run_load

    caller = Settings(home=tmp_path)  # where the report goes, as $SALESML_HOME of `salesml bench load`
    report = run_load(caller, idle=60, clients=4, seconds=3.0, baseline_seconds=1.0, home=served_settings,
                      max_connections=16, log=lambda _: None)
    assert report == caller.reports_dir / "bench_load.md"
    figures = json.loads(report.with_suffix(".json").read_text())
    assert figures["max connections per worker"] == 16 and figures["idle sockets"] == 60
    attacked = figures["attacked"]
    assert attacked["answered"] > 0 and attacked["unanswered"] == 0, attacked
    assert figures["every legitimate call answered"] is True
    assert 0 < attacked["p50 ms"] <= attacked["p99 ms"] <= attacked["max ms"]
    assert figures["alone"]["unanswered"] == 0
    attacker = figures["attacker"]
    # 60 sockets against 2 workers x 16: the caps bit, and the server closed the attacker's silent sockets
    assert attacker["opened"] >= 60 and attacker["closed by the server"] > 0
    assert {t["key"] for t in figures["trickles"]} == {True, False}
    text = report.read_text()
    assert "**Every legitimate call answered: yes**" in text
    assert "p99" in text and "Trickled bodies" in text
