"""Runtime of the CHS three-variant example (1,000 bootstrap resamples) on demo-sized data.
Works in its own home, ``$SALESML_HOME/bench/experiments`` (``benchmarks.home``); writes
``$SALESML_HOME/reports/bench_experiments.md``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from salesml.settings import Settings

SPEC = Path(__file__).resolve().parent.parent / "experiments" / "specs" / "chs_layers.yaml"
# as the Makefile's DEMO_ARGS
DEMO: dict[str, Any] = {"accounts": 600, "leads": 2500, "reps": 40, "weeks": 104, "seed": 7}


def run(settings: Settings, log: Callable[[str], None] = print) -> Path:
    from benchmarks.home import bench_home, measured, simulated_store, write_report
    from experiments.sandbox import run_experiment
    from experiments.spec import load_spec

    home = bench_home(settings, "experiments")
    log(f"experiments bench: demo-sized export {DEMO}")
    simulated_store(home, **DEMO)
    spec = load_spec(SPEC)
    t0 = time.perf_counter()
    result = run_experiment(home, spec, log=log)
    secs = time.perf_counter() - t0
    decisions = pd.DataFrame([{"variant": k, **{c: d[c] for c in ("versus", "winner", "estimate", "ci_low",
                                                                   "ci_high", "p_adjusted")}}
                              for k, d in result["decisions"].items()])
    lines = ["# Experiments benchmark", "",
             f"{measured()}; command: `make bench` (`salesml bench experiments`).", "",
             f"`salesml experiment run experiments/specs/chs_layers.yaml` on the demo export ({DEMO['accounts']} "
             f"accounts, {DEMO['weeks']} weeks): 3 variants x {spec.fits_per_variant} training seeds, "
             f"{spec.bootstrap.resamples} paired bootstrap resamples, report and MLflow runs included: "
             f"**{secs:.1f} s**.", "", decisions.to_markdown(index=False, floatfmt=".4f"), ""]
    return write_report(settings, "experiments", lines, log)
