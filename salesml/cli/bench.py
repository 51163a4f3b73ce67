"""``salesml bench``: the benchmarks of the top-level ``benchmarks`` package (a checkout's, not the
wheel's), imported inside each command."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from salesml.cli.base import console, out
from salesml.cli.base import settings as _settings

app = typer.Typer(help="Benchmarks: each works in its own $SALESML_HOME/bench/<name> (the demo's stores stay as "
                       "they are) and writes its report under $SALESML_HOME/reports.", no_args_is_help=True)


@app.command("features")
def bench_features(
    accounts: Annotated[int, typer.Option(help="Accounts to simulate (x weeks = behaviour rows).")] = 12_500,
    weeks: Annotated[int, typer.Option()] = 104,
    label_rows: Annotated[int, typer.Option(help="Label rows in the point-in-time join.")] = 200_000,
) -> None:
    """Simulator, materialize, point-in-time join and online-read timings."""
    from benchmarks.features import run

    report = run(_settings(), accounts=accounts, weeks=weeks, label_rows=label_rows, log=console.print)
    out.print(report.read_text())


@app.command("training")
def bench_training(
    accounts: Annotated[int, typer.Option()] = 3000,
    leads: Annotated[int, typer.Option()] = 20000,
) -> None:
    """Model quality vs the simulator's truth and baselines; assignment solver speed."""
    from benchmarks.training import run

    report = run(_settings(), accounts=accounts, leads=leads, log=console.print)
    out.print(report.read_text())


@app.command("exports")
def bench_exports(
    shapes: Annotated[str, typer.Option(help="Comma-separated: snapshot, prospects, purchases.")] =
        "snapshot,prospects,purchases",
    n: Annotated[Optional[int], typer.Option(help="Entities per export (default: each generator's).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    trials: Annotated[int, typer.Option(help="Optuna trials per tuned model.")] = 30,
) -> None:
    """Exports unlike the simulator: platform (train, tune) vs tuned XGBoost / logistic on the raw columns vs truth."""
    from benchmarks.exports import run

    report = run(_settings(), tuple(x.strip() for x in shapes.split(",")), n=n, seed=seed, trials=trials,
                 log=console.print)
    out.print(report.read_text())


@app.command("serving")
def bench_serving(
    seconds: Annotated[float, typer.Option(help="Seconds per measured cell.")] = 8.0,
) -> None:
    """/health latency and throughput (HTTP and in-process, 1 and 16 clients, 1 and 100 accounts), ours beside
    a bare BentoML service over the same boosters (/health, /intent, /match), push latency as the live store
    grows, /health under concurrent pushes and a 1,000-lead /match."""
    from benchmarks.serving import run

    report = run(_settings(), seconds=seconds, log=console.print)
    out.print(report.read_text())


@app.command("load")
def bench_load(
    idle: Annotated[int, typer.Option(help="Idle sockets the attacker holds open.")] = 700,
    clients: Annotated[int, typer.Option(help="Legitimate clients calling /health.")] = 16,
    seconds: Annotated[float, typer.Option(help="Seconds the clients call beside the attacker.")] = 30.0,
    baseline_seconds: Annotated[float, typer.Option(help="Seconds they call alone first.")] = 10.0,
    max_connections: Annotated[Optional[int], typer.Option(
        help="Connections per worker (default: the service's setting); a small one makes a short run bite.")] = None,
    small: Annotated[bool, typer.Option("--small", help="A short run: 60 idle sockets, 4 clients, 3 s, a cap of "
                                                        "16 connections per worker.")] = False,
) -> None:
    """The key-less lockout as a load test: idle sockets and trickled bodies from one client while
    legitimate clients call /health; every legitimate call answered (count, errors), p50/p99."""
    from benchmarks.serving import run_load

    if small:
        idle, clients, seconds, baseline_seconds = 60, 4, 3.0, 2.0
        max_connections = max_connections or 16
    report = run_load(_settings(), idle=idle, clients=clients, seconds=seconds, baseline_seconds=baseline_seconds,
                      max_connections=max_connections, log=console.print)
    out.print(report.read_text())


@app.command("scoring")
def bench_scoring(
    sizes: Annotated[str, typer.Option(help="Book sizes to score, comma-separated.")] = "100000,1000000",
) -> None:
    """The scheduled scoring job's rate (CHS with attribution) at each size, in memory."""
    from benchmarks.scoring import run

    report = run(_settings(), sizes=tuple(int(x) for x in sizes.split(",")), log=console.print)
    out.print(report.read_text())


@app.command("drift")
def bench_drift(
    sizes: Annotated[str, typer.Option(help="Comma-separated window sizes.")] = "10000,100000,1000000",
) -> None:
    """Drift-check time at 10k / 100k / 1M rows against Evidently's default DataDriftPreset."""
    from benchmarks.drift import run

    report = run(_settings(), sizes=tuple(int(x) for x in sizes.split(",")), log=console.print)
    out.print(report.read_text())


@app.command("experiments")
def bench_experiments() -> None:
    """Runtime of the CHS three-variant example spec with 1,000 bootstrap resamples on demo-sized data."""
    from benchmarks.experiments import run

    report = run(_settings(), log=console.print)
    out.print(report.read_text())


@app.command("tuning")
def bench_tuning(
    trials: Annotated[int, typer.Option(help="No-op trials per storage and measurement.")] = 200,
) -> None:
    """Optuna overhead per trial of the shared-study worker loop, SQLite vs PostgreSQL (throwaway database)."""
    from benchmarks.tuning import run

    report = run(_settings(), trials=trials, log=console.print)
    out.print(report.read_text())
