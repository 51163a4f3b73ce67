"""``salesml data``: simulated exports, validation against the raw-data contract, the contract as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli.base import MODEL_HELP, console, out
from salesml.cli.base import progress as _progress
from salesml.cli.base import settings as _settings
from salesml.modelspec import MODEL_NAMES

app = typer.Typer(help="Raw data: generate simulated exports, validate real ones.", no_args_is_help=True)


@app.command("generate")
def data_generate(
    accounts: Annotated[int, typer.Option(help="Number of customer accounts.")] = 500,
    leads: Annotated[int, typer.Option(help="Number of leads.")] = 2000,
    reps: Annotated[int, typer.Option(help="Number of sales reps.")] = 40,
    weeks: Annotated[int, typer.Option(help="Weeks of history.")] = 104,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="Output folder (default: $SALESML_HOME/data/raw).")] = None,
    end: Annotated[str, typer.Option(help="Monday that ends the simulated window (UTC).")] = "2026-09-28",
    drift_after: Annotated[Optional[str], typer.Option(help="Shift chosen distributions after this date.")] = None,
    importance_shift_after: Annotated[Optional[str], typer.Option(
        help="From this date relationships drive churn more and usage less.")] = None,
    truth_samples: Annotated[int, typer.Option(
        help="Monte Carlo paths per observation for the knowable churn truth (0 skips it).")] = 64,
    shape: Annotated[Optional[str], typer.Option(
        help="Instead of our simulator's export, one shaped like a customer's: snapshot (one contract snapshot, "
             "23 company-specific columns), prospects (a lead list without web events or reps), purchases "
             "(weekly orders only, churn = 26 weeks without one), with their salesml.yaml. --accounts sets "
             "their size.")] = None,
) -> None:
    """Write a simulated CRM + product-analytics export that satisfies the contract."""
    import time

    from salesml import simulator

    settings = _settings()
    target = out_dir or settings.raw_dir
    if shape is not None:
        from salesml.simulator.shapes import SHAPES

        if shape not in SHAPES:
            console.print(f"[red]--shape must be one of {', '.join(SHAPES)}, got '{shape}'[/red]")
            raise typer.Exit(code=2)
        made = SHAPES[shape](Path(target), n=accounts, seed=seed)
        for name, n in made["tables"].items():
            out.print(f"  {name:<18} {n:>12,} rows")
        out.print(f"wrote a '{shape}' export with its salesml.yaml to {target} (label rate "
                  f"{made['label_rate']:.1%}, truth ROC-AUC {made['truth_auc']:.3f})")
        return
    t0 = time.perf_counter()
    with _progress() as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        counts = simulator.generate(Path(target), accounts=accounts, leads=leads, reps=reps,
                                    weeks=weeks, seed=seed, end=end, drift_after=drift_after,
                                    progress=progress, importance_shift_after=importance_shift_after,
                                    truth_samples=truth_samples)
    secs = time.perf_counter() - t0
    total = sum(counts.values())
    for name, n in counts.items():
        out.print(f"  {name:<18} {n:>12,} rows")
    out.print(f"wrote {total:,} rows to {target} in {secs:.1f} s ({total / secs:,.0f} rows/s)")


@app.command("validate")
def data_validate(
    directory: Annotated[Path, typer.Argument(help="Folder of CSV or parquet tables.")],
    model: Annotated[Optional[str], typer.Option(
        help=f"Check only what this model reads ({MODEL_HELP}); default: every table present.")] = None,
) -> None:
    """Check an export against the raw-data contract (and salesml.yaml's custom columns) in one run:
    every violation of every table (table, column, rows), every column it will ignore; exit 1 on any."""
    from salesml.modelspec import SpecError
    from salesml.project import ProjectError
    from salesml.validation import read_export

    settings = _settings()
    try:
        project = settings.project(directory)
        specs = {m: settings.spec(m, directory) for m in ([model] if model else MODEL_NAMES)}
    except (ProjectError, SpecError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    from features.training_sets import label_problems, optional_columns
    from features.transforms import FED_BY_OMITTABLE

    optional: dict[str, set[str]] = {}
    for spec in specs.values():
        for table, names in optional_columns(spec).items():
            optional.setdefault(table, set()).update(names)
    if model:
        spec = specs[model]
        report = read_export(directory, tables=spec.tables.all, required_tables=spec.tables.required,
                             extra=project.extra_columns(), optional=optional)
    else:
        report = read_export(directory, required_tables=[], extra=project.extra_columns(), optional=optional)
    if project.source:
        out.print(f"  configuration {project.source}")
    for name, df in report.frames.items():
        custom = len(project.custom_columns.get(name, {}))
        out.print(f"  ok  {name:<18} {len(df):>10,} rows" + (f" ({custom} custom columns)" if custom else ""))
    for table, cols in report.ignored.items():
        if cols:
            out.print(f"  ignored: {table}.{', '.join(cols)} (not in the contract nor under custom_columns.{table})")
    for name, df in report.frames.items():
        for col, feeds in FED_BY_OMITTABLE.get(name, {}).items():
            if col not in df.columns:
                out.print(f"  left out: {name}.{col}: " + (f"empty features: {', '.join(feeds)}" if feeds
                                                            else "no built-in feature reads it"))
    if report.missing:
        out.print(f"  not in this export: {', '.join(report.missing)}")
    columns = {name: list(df.columns) for name, df in report.frames.items()}
    unlabelled = {name: label_problems(spec, columns) for name, spec in specs.items()}
    if not model:
        for name, spec in specs.items():
            lacking = [t for t in spec.tables.required if t not in report.frames]
            verdict = (f"needs {', '.join(lacking)}" if lacking else
                       f"cannot be trained: {'; '.join(unlabelled[name])}" if unlabelled[name] else "can be trained")
            out.print(f"  model {name:<10} {verdict}")
    if report.violations:
        console.print(f"[red]{len(report.violations)} contract violation(s) in {directory}:[/red]")
        for v in report.violations:
            console.print(f"  - {v}")
        raise typer.Exit(code=1)
    # --model asks about one model; otherwise a model the project configures (models.<name> in
    # salesml.yaml) that its export cannot label is a configuration error, not a note.
    failing = [m for m in ([model] if model else [m for m in specs if m in project.models]) if unlabelled[m]]
    for name in failing:
        console.print(f"{directory}: model {name} cannot be trained on this export:", style="red", markup=False)
        for problem in unlabelled[name]:
            console.print(f"  - {problem}", markup=False, highlight=False, style="red")
    if failing:
        raise typer.Exit(code=1)
    if not report.frames:
        console.print(f"[red]{directory}: no contract table found[/red]")
        raise typer.Exit(code=1)
    out.print(f"{directory}: all {len(report.frames)} tables satisfy the contract"
              + (f" for model {model}" if model else ""))


@app.command("contract")
def data_contract() -> None:
    """Print the raw-data contract as Markdown (the source of docs/data-contract.md)."""
    from salesml.contract_doc import contract_markdown

    print(contract_markdown(), end="")
