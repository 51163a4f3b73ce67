"""``salesml experiment``: the A/B sandbox, the online analysis, a screenshot of the MLflow UI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli.base import MODEL_HELP, console, out
from salesml.cli.base import fail as _fail_on_contract
from salesml.cli.base import settings as _settings

app = typer.Typer(help="A/B sandbox: compare feature-set and model variants honestly.", no_args_is_help=True)


@app.command("run")
def experiment_run(
    spec: Annotated[Path, typer.Argument(help="Experiment spec (YAML), e.g. experiments/specs/chs_layers.yaml.")],
    raw: Annotated[Optional[Path], typer.Option(help="Export folder with the label tables.")] = None,
) -> None:
    """Run every variant on identical training sets and splits; paired bootstrap + DeLong; MLflow + report."""
    from experiments.sandbox import run_experiment
    from experiments.spec import SpecError, load_spec
    from salesml.validation import ContractError

    try:
        result = run_experiment(_settings(), load_spec(spec), raw_dir=raw, log=console.print)
    except ContractError as exc:
        _fail_on_contract(exc)
    except (SpecError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    for variant, d in result["decisions"].items():
        verdict = f"{d['winner']} is better" if d["winner"] else "no detectable difference"
        out.print(f"{variant} vs {d['versus']}: {verdict} (difference {d['estimate']:+.4f}, "
                  f"95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], adjusted p {d['p_adjusted']:.4g})")
    out.print(f"report: {result['report']}; MLflow parent run {result['run_id']}")


@app.command("analyze-online")
def experiment_analyze_online(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    mde: Annotated[float, typer.Option(help="Minimum detectable effect (absolute outcome-rate difference).")] = 0.05,
    alpha: Annotated[float, typer.Option()] = 0.05,
    power: Annotated[float, typer.Option()] = 0.8,
) -> None:
    """Champion vs challenger on served traffic: exposures, outcome rates, CI, planned sample size."""
    from experiments.online import run

    try:
        result, path = run(_settings(), model, mde, alpha, power)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    out.print(result.to_markdown())
    out.print(f"report: {path}")


@app.command("screenshot")
def experiment_screenshot(
    experiment: Annotated[str, typer.Option(help="MLflow experiment to show.")] = "salesml-experiments",
    metric: Annotated[str, typer.Option(help="Order runs by this metric, best first (test_roc_auc: the saved "
                                             "review view; another metric lists runs flat).")] = "test_roc_auc",
) -> None:
    """Open the MLflow UI on the project's tracking store in headless Chromium; save a screenshot under reports/."""
    import mlflow

    from experiments import ui
    from training import tracking

    settings = _settings()
    tracking.configure(settings)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        console.print(f"[red]no MLflow experiment '{experiment}' in {settings.tracking_uri}[/red]")
        raise typer.Exit(code=2)
    proc, base = ui.start_mlflow_ui(settings.tracking_uri, None)
    try:
        path = ui.screenshot(ui.experiment_url(base, exp.experiment_id, metric),
                             settings.reports_dir / f"mlflow_ui_{experiment}.png")
    finally:
        ui.stop(proc)
    out.print(f"screenshot: {path}")
