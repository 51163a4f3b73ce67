"""Runtime of the CHS three-variant example (1,000 bootstrap resamples) on demo-sized data.
Writes ``$SALESML_HOME/reports/bench_experiments.md``."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from salesml.settings import Settings

SPEC = Path(__file__).resolve().parent / "specs" / "chs_layers.yaml"
DEMO = dict(accounts=600, leads=2500, reps=40, weeks=104, seed=7)  # as the Makefile's DEMO_ARGS


def run(settings: Settings, log: Callable[[str], None] = print) -> Path:
    from experiments.sandbox import run_experiment
    from experiments.spec import load_spec
    from features.store import apply, build_feature_files
    from salesml.simulator import generate

    settings.ensure_dirs()
    home = Settings(home=settings.root / "bench" / "experiments")
    home.ensure_dirs()
    log(f"experiments bench: demo-sized export {DEMO}")
    generate(home.raw_dir, **DEMO)
    build_feature_files(home, home.raw_dir, progress=lambda _: None)
    apply(home, progress=lambda _: None)
    spec = load_spec(SPEC)
    t0 = time.perf_counter()
    result = run_experiment(home, spec, log=log)
    secs = time.perf_counter() - t0
    decisions = pd.DataFrame([{"variant": k, **{c: d[c] for c in ("versus", "winner", "estimate", "ci_low",
                                                                   "ci_high", "p_adjusted")}}
                              for k, d in result["decisions"].items()])
    lines = ["# Experiments benchmark", "",
             f"Measured {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC on {platform.machine()}, Python "
             f"{platform.python_version()}; command: `make bench` (`salesml bench experiments`).", "",
             f"`salesml experiment run experiments/specs/chs_layers.yaml` on the demo export ({DEMO['accounts']} "
             f"accounts, {DEMO['weeks']} weeks): 3 variants x {spec.fits_per_variant} training seeds, "
             f"{spec.bootstrap.resamples} paired bootstrap resamples, report and MLflow runs included: "
             f"**{secs:.1f} s**.", "", decisions.to_markdown(index=False, floatfmt=".4f"), ""]
    report = settings.reports_dir / "bench_experiments.md"
    report.write_text("\n".join(lines))
    log(f"report: {report}")
    return report
