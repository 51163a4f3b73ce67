"""``salesml features``: build the feature files, apply the Feast definitions, materialize, training sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli.base import MODEL_HELP, console, out
from salesml.cli.base import fail as _fail_on_contract
from salesml.cli.base import progress as _progress
from salesml.cli.base import settings as _settings

app = typer.Typer(help="Feast feature store: build, apply, materialize, training sets.", no_args_is_help=True)


@app.command("build")
def features_build(
    raw: Annotated[Optional[Path], typer.Option(help="Export folder (default: $SALESML_HOME/data/raw).")] = None,
) -> None:
    """Validate the export and compute the offline feature files behind the Feast sources."""
    from features.store import build_feature_files
    from salesml.modelspec import SpecError
    from salesml.project import ProjectError
    from salesml.validation import ContractError

    settings = _settings()
    target = raw or settings.export_dir
    try:
        build_feature_files(settings, target, progress=out.print)
    except ContractError as exc:
        _fail_on_contract(exc)
    except (ProjectError, SpecError, ValueError) as exc:  # e.g. label.churn.activity names no usage column
        _fail_on_contract(exc)
    out.print(f"feature files in {settings.feature_data_dir}; later commands read the export {target.resolve()}")


@app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and services in the Feast registry."""
    from features.store import apply

    apply(_settings(), progress=out.print)


@app.command("materialize")
def features_materialize() -> None:
    """Load the latest feature values into the online store."""
    import time

    from features.store import materialize

    settings = _settings()
    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("materialize", total=None)

        def progress(view: str, done: int, total: int) -> None:
            bar.update(task, description=f"materialize {view}", completed=done, total=total)

        try:
            counts = materialize(settings, progress=progress)
        except FileNotFoundError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(code=2) from None
    for view, n in counts.items():
        out.print(f"  {view:<14} {n:>10,} entities online")
    out.print(f"materialized in {time.perf_counter() - t0:.1f} s")


@app.command("training-set")
def features_training_set(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    feature_service: Annotated[Optional[str], typer.Option(
        help="Feast feature service (default: the model's).")] = None,
    output: Annotated[Optional[Path], typer.Option("--out", help="Parquet file to write.")] = None,
    raw: Annotated[Optional[Path], typer.Option(
        help="Export folder with the label tables (default: the one `features build` read).")] = None,
) -> None:
    """Build a labelled point-in-time training set through Feast."""
    from features.training_sets import build_training_set
    from salesml.validation import ContractError

    settings = _settings()
    try:
        ts = build_training_set(settings, model, raw_dir=raw, feature_service=feature_service)
    except (ContractError, ValueError) as exc:  # names the export folder read, and why that one
        _fail_on_contract(exc)
    target = output or settings.root / "data" / "training" / f"{model}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    ts.frame.to_parquet(target, index=False)
    rate = ts.frame[ts.label].mean()
    out.print(f"{model}: {len(ts.frame):,} rows x {len(ts.feature_columns)} features "
              f"(service '{ts.feature_service}', {ts.start:%Y-%m-%d} .. {ts.end:%Y-%m-%d}, "
              f"positive rate {rate:.1%}, duplicates collapsed {ts.duplicates_collapsed}) -> {target}")
