"""``salesml train | tune | promote | recalibrate``: commands of the root group (``salesml.cli`` merges
``app`` into it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli.base import MODEL_HELP, console, out
from salesml.cli.base import fail as _fail_on_contract
from salesml.cli.base import settings as _settings

app = typer.Typer()


@app.command("train")
def train(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    seed: Annotated[int, typer.Option(help="Random seed (same seed + data, same metrics).")] = 42,
    raw: Annotated[Optional[Path], typer.Option(help="Export folder with the label tables.")] = None,
) -> None:
    """Train a model on its Feast training set, log the run to MLflow, register it."""
    from salesml.validation import ContractError
    from training.pipeline import run

    settings = _settings()
    try:
        summary = run(settings, model, seed=seed, raw_dir=raw, log=console.print)
    except ContractError as exc:
        _fail_on_contract(exc)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    out.print(f"run {summary['run_id']}: {model} v{summary['version']} ({summary['alias']}), "
              f"test ROC-AUC {summary['test_roc_auc']:.3f}; tracking store {settings.tracking_uri}")


@app.command("tune")
def tune(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    trials: Annotated[int, typer.Option(help="Finished trials the study must hold (all workers together).")] = 20,
    seed: Annotated[int, typer.Option()] = 42,
    study: Annotated[Optional[str], typer.Option(
        help="Study name (workers sharing one study use the same). Default: salesml-<model>-<training set "
             "digest>-seed<seed>, so new data or another --seed starts a fresh study; a named study measured on "
             "another training set or seed is refused.")] = None,
    raw: Annotated[Optional[Path], typer.Option(help="Export folder with the label tables.")] = None,
    register: Annotated[bool, typer.Option(help="Retrain the best parameters and register them as challenger "
                                                "(parallel workers: --no-register, then one final run).")] = True,
    heartbeat: Annotated[float, typer.Option(help="Seconds between a running trial's heartbeats.")] = 10.0,
    grace: Annotated[float, typer.Option(help="Seconds without heartbeat before a trial counts as dead.")] = 60.0,
) -> None:
    """Optuna study (TPE, pruning) shared by any number of workers; best parameters registered as challenger."""
    from training.tuning import StudyMismatch, run

    try:
        summary = run(_settings(), model, trials, seed=seed, raw_dir=raw, study_name=study, log=out.print,
                      register=register, heartbeat=heartbeat, grace=grace)
    except StudyMismatch as exc:  # a named study measured on another training set or seed
        _fail_on_contract(exc)
    out.print(f"study {summary['study']}: best valid ROC-AUC {summary['best_value']:.4f} with {summary['best_params']}")


@app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    min_gain: Annotated[float, typer.Option(help="Required test ROC-AUC gain over the champion.")] = 0.005,
    raw: Annotated[Optional[Path], typer.Option(help="Export folder with the label tables.")] = None,
) -> None:
    """Move `champion` to the challenger only if it is better on the latest test window."""
    from training.registry import promote as do_promote

    try:
        d = do_promote(_settings(), model, raw_dir=raw, min_gain=min_gain)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    verdict = f"promoted v{d.challenger_version} to champion" if d.promote else "champion kept"
    out.print(f"{model}: {verdict} ({d.reason})")


@app.command("recalibrate")
def recalibrate(
    quarter: Annotated[Optional[str], typer.Option(help="Quarter to recalibrate at its close, e.g. 2025Q3.")] = None,
    walk_forward: Annotated[bool, typer.Option("--walk-forward", help="Replay every quarter in the data.")] = False,
    raw: Annotated[Optional[Path], typer.Option(help="Export folder with the label tables.")] = None,
) -> None:
    """Refit the CHS layer weights on outcomes known at a quarter's close; keep them only if the backtest improves."""
    from training.recalibrate_run import run

    try:
        results = run(_settings(), quarter=quarter, walk_forward=walk_forward, raw_dir=raw, log=out.print)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    accepted = [r.quarter for r in results if r.accepted]
    out.print(f"{len(results)} quarter(s) recalibrated; new weights accepted for: {', '.join(accepted) or 'none'}")
