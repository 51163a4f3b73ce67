"""The ``salesml`` command line: one tool, a subcommand group per stage.

Heavy libraries (Feast, MLflow, XGBoost...) are imported inside the commands so that
``salesml --help`` and small commands answer fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli_base import console, out
from salesml.cli_base import fail as _fail_on_contract
from salesml.cli_base import overrides as _overrides
from salesml.cli_base import progress as _progress
from salesml.cli_base import quiet as _quiet
from salesml.cli_base import settings as _settings
from salesml.modelspec import MODEL_NAMES

app = typer.Typer(help="Sales-intelligence ML platform: data, features, models, serving, drift.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Raw data: generate simulated exports, validate real ones.", no_args_is_help=True)
features_app = typer.Typer(help="Feast feature store: build, apply, materialize, training sets.",
                           no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(help="Benchmarks that write reports under $SALESML_HOME/reports.", no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(bench_app, name="bench")
experiment_app = typer.Typer(help="A/B sandbox: compare feature-set and model variants honestly.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
drift_app = typer.Typer(help="Drift monitoring with Evidently on the served traffic.", no_args_is_help=True)
app.add_typer(drift_app, name="drift")
keys_app = typer.Typer(help="API keys for the scoring service (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
team_app = typer.Typer(help="Team profile services: PostgreSQL databases, the MLflow server, Redis.",
                       no_args_is_help=True)
app.add_typer(team_app, name="team")

MODEL_HELP = " | ".join(MODEL_NAMES)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library warnings and logs.")] = False,
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="When the export was taken (UTC date/timestamp); same as SALESML_EXPORT_AS_OF or "
                        "export.as_of in salesml.yaml. Outcome windows are judged complete against it.")] = None,
) -> None:
    """Sales-intelligence ML platform: data, features, models, serving, drift."""
    _quiet(verbose)
    _overrides.clear()
    if as_of:
        _overrides["export_as_of"] = as_of


@data_app.command("generate")
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
        from salesml.simulator_shapes import SHAPES

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


@data_app.command("validate")
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
    from features.training_sets import optional_columns

    optional: dict[str, set[str]] = {}
    for spec in specs.values():
        for table, cols in optional_columns(spec).items():
            optional.setdefault(table, set()).update(cols)
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
    if report.missing:
        out.print(f"  not in this export: {', '.join(report.missing)}")
    if not model:
        for name, spec in specs.items():
            lacking = [t for t in spec.tables.required if t not in report.frames]
            out.print(f"  model {name:<10} " + (f"needs {', '.join(lacking)}" if lacking else "can be trained"))
    if report.violations:
        console.print(f"[red]{len(report.violations)} contract violation(s) in {directory}:[/red]")
        for v in report.violations:
            console.print(f"  - {v}")
        raise typer.Exit(code=1)
    if not report.frames:
        console.print(f"[red]{directory}: no contract table found[/red]")
        raise typer.Exit(code=1)
    out.print(f"{directory}: all {len(report.frames)} tables satisfy the contract"
              + (f" for model {model}" if model else ""))


@data_app.command("contract")
def data_contract() -> None:
    """Print the raw-data contract as Markdown (the source of docs/data-contract.md)."""
    from salesml.contract_doc import contract_markdown

    print(contract_markdown(), end="")


@features_app.command("build")
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
    except (ProjectError, SpecError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    out.print(f"feature files in {settings.feature_data_dir}; later commands read the export {target.resolve()}")


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, feature views and services in the Feast registry."""
    from features.store import apply

    apply(_settings(), progress=out.print)


@features_app.command("materialize")
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


@features_app.command("training-set")
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
    except ContractError as exc:
        _fail_on_contract(exc)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    target = output or settings.root / "data" / "training" / f"{model}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    ts.frame.to_parquet(target, index=False)
    rate = ts.frame[ts.label].mean()
    out.print(f"{model}: {len(ts.frame):,} rows x {len(ts.feature_columns)} features "
              f"(service '{ts.feature_service}', {ts.start:%Y-%m-%d} .. {ts.end:%Y-%m-%d}, "
              f"positive rate {rate:.1%}, duplicates collapsed {ts.duplicates_collapsed}) -> {target}")


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
    study: Annotated[Optional[str], typer.Option(help="Study name (workers sharing one study use the same).")] = None,
    raw: Annotated[Optional[Path], typer.Option(help="Export folder with the label tables.")] = None,
    register: Annotated[bool, typer.Option(help="Retrain the best parameters and register them as challenger "
                                                "(parallel workers: --no-register, then one final run).")] = True,
    heartbeat: Annotated[float, typer.Option(help="Seconds between a running trial's heartbeats.")] = 10.0,
    grace: Annotated[float, typer.Option(help="Seconds without heartbeat before a trial counts as dead.")] = 60.0,
) -> None:
    """Optuna study (TPE, pruning) shared by any number of workers; best parameters registered as challenger."""
    from training.tuning import run

    summary = run(_settings(), model, trials, seed=seed, raw_dir=raw, study_name=study, log=out.print,
                  register=register, heartbeat=heartbeat, grace=grace)
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


@app.command("serve")
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default SALESML_SERVE_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default SALESML_SERVE_PORT, 3000).")] = None,
) -> None:
    """Start the BentoML scoring service (intent, match, health, events, outcomes)."""
    import os
    import sys

    from salesml.settings import REPO_ROOT
    from serving.auth import KeyFileError, KeyStore

    settings = _settings()
    settings.ensure_dirs()
    try:  # a corrupt key file would refuse every call: say so now, not per request
        KeyStore(settings.api_keys_path).check()
    except KeyFileError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True, markup=True)
        raise typer.Exit(code=2) from None
    env = {**os.environ, "SALESML_HOME": str(settings.root),
           **({"SALESML_EXPORT_AS_OF": settings.export_as_of} if settings.export_as_of else {})}
    args = [sys.executable, "-m", "bentoml", "serve", "serving.service:SalesScoring",
            "--host", host or settings.serve_host, "--port", str(port or settings.serve_port),
            "--working-dir", str(REPO_ROOT)]
    console.print(f"serving on http://{host or settings.serve_host}:{port or settings.serve_port} "
                  f"(OpenAPI at /docs.json); keys in {settings.api_keys_path}")
    os.execve(sys.executable, args, env)


@experiment_app.command("run")
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


@experiment_app.command("analyze-online")
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


@experiment_app.command("screenshot")
def experiment_screenshot(
    experiment: Annotated[str, typer.Option(help="MLflow experiment to show.")] = "salesml-experiments",
    metric: Annotated[str, typer.Option(help="Order runs by this metric (lists child runs flat).")] = "test_roc_auc",
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


@drift_app.command("check")
def drift_check(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    window: Annotated[Optional[str], typer.Option(help="Trailing window, e.g. 7d (default).")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="Window start (date or UTC timestamp).")] = None,
    to: Annotated[Optional[str], typer.Option(help="Window end.")] = None,
    retrain_on_drift: Annotated[bool, typer.Option("--retrain-on-drift",
                                                   help="Retrain and register a challenger on drift.")] = False,
) -> None:
    """Served window vs the served version's reference set. Exit 0 ok, 3 drift, 4 empty window,
    5 columns missing, 6 no reference set, 2 other bad input."""
    from drift.monitor import DriftInputError, Window, run_check, verdict_table

    try:
        code, summary = run_check(_settings(), model, Window.parse(window, from_, to), retrain_on_drift,
                                  log_fn=console.print)
    except DriftInputError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=exc.code) from None
    out.print(verdict_table(summary))
    raise typer.Exit(code=code)


@drift_app.command("ui")
def drift_ui(port: Annotated[int, typer.Option()] = 8000) -> None:
    """Start the Evidently UI on the drift workspace (snapshots over time per model)."""
    import os
    import sys

    settings = _settings()
    workspace = settings.root / "evidently"
    workspace.mkdir(parents=True, exist_ok=True)
    evidently = str(Path(sys.executable).with_name("evidently"))
    console.print(f"Evidently UI on http://127.0.0.1:{port} (workspace {workspace})")
    # Evidently's UI sends usage telemetry unless told not to; the drift data stays on this machine.
    env = {**os.environ, "DO_NOT_TRACK": os.environ.get("DO_NOT_TRACK", "1")}
    os.execve(evidently, [evidently, "ui", "--workspace", str(workspace), "--host", "127.0.0.1",
                          "--port", str(port)], env)


@app.command("serve-demo")
def serve_demo(port: Annotated[Optional[int], typer.Option(help="Port (default SALESML_SERVE_PORT).")] = None) -> None:
    """Start the service in the background, create a demo key, call every endpoint once."""
    from serving.auth import KeyStore
    from serving.runner import sample_calls, start_background, stop

    settings = _settings()
    stop(settings)  # a server left from an earlier demo
    console.print("starting the scoring service (loads 3 models from the MLflow registry) ...")
    try:
        pid, port = start_background(settings, port)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from None
    key_id, key = KeyStore(settings.api_keys_path).add("admin", "demo")
    sample_calls(settings, port, key, show=lambda s: out.print(s, soft_wrap=True, highlight=False, markup=False))
    out.print(f"\nThe service is running on http://127.0.0.1:{port} (pid {pid}; OpenAPI at /docs.json, "
              f"Prometheus at /metrics).\nDemo key ({key_id}, role admin): {key}\n"
              f"Stop it with: make serve-stop")


@app.command("serve-stop")
def serve_stop() -> None:
    """Stop the background service started by `salesml serve-demo`."""
    from serving.runner import stop

    out.print("stopped" if stop(_settings()) else "no background service was running")


@team_app.command("up")
def team_up() -> None:
    """Check PostgreSQL/Redis, create the profile's databases, start the MLflow server (idempotent)."""
    from salesml.team import ServiceError, up

    try:
        up(_settings(), show=out.print)
    except ServiceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=3) from None


@team_app.command("down")
def team_down() -> None:
    """Stop the MLflow server that `salesml team up` started (databases and Redis keys are kept)."""
    from salesml.team import down

    down(_settings(), show=out.print)


@keys_app.command("add")
def keys_add(
    role: Annotated[str, typer.Option(help="sales | csm (read scores) | admin (read + write) | ingest (write: "
                                           "/events, /outcomes)")],
    name: Annotated[str, typer.Option(help="Who holds the key (an application or a person).")],
) -> None:
    """Create an API key; it is printed once and stored only as a SHA-256 digest."""
    from serving.auth import KeyFileError, KeyStore

    settings = _settings()
    try:
        key_id, key = KeyStore(settings.api_keys_path).add(role, name)
    except (ValueError, KeyFileError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    console.print(f"key id {key_id}, role {role}; store the key now, it is not kept in clear:")
    out.print(key)


@bench_app.command("features")
def bench_features(
    accounts: Annotated[int, typer.Option(help="Accounts to simulate (x weeks = behaviour rows).")] = 12_500,
    weeks: Annotated[int, typer.Option()] = 104,
    label_rows: Annotated[int, typer.Option(help="Label rows in the point-in-time join.")] = 200_000,
) -> None:
    """Simulator, materialize, point-in-time join and online-read timings."""
    from features.bench import run

    report = run(_settings(), accounts=accounts, weeks=weeks, label_rows=label_rows, log=console.print)
    out.print(report.read_text())


@bench_app.command("training")
def bench_training(
    accounts: Annotated[int, typer.Option()] = 3000,
    leads: Annotated[int, typer.Option()] = 20000,
) -> None:
    """Model quality vs the simulator's truth and baselines; assignment solver speed."""
    from training.bench import run

    report = run(_settings(), accounts=accounts, leads=leads, log=console.print)
    out.print(report.read_text())


@bench_app.command("exports")
def bench_exports(
    shapes: Annotated[str, typer.Option(help="Comma-separated: snapshot, prospects, purchases.")] =
        "snapshot,prospects,purchases",
    n: Annotated[Optional[int], typer.Option(help="Entities per export (default: each generator's).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    trials: Annotated[int, typer.Option(help="Optuna trials per tuned model.")] = 30,
) -> None:
    """Exports unlike the simulator: platform (train, tune) vs tuned XGBoost / logistic on the raw columns vs truth."""
    from training.bench_exports import run

    report = run(_settings(), tuple(x.strip() for x in shapes.split(",")), n=n, seed=seed, trials=trials,
                 log=console.print)
    out.print(report.read_text())


@bench_app.command("serving")
def bench_serving(
    seconds: Annotated[float, typer.Option(help="Seconds per measured cell.")] = 8.0,
) -> None:
    """/health latency and throughput (HTTP and in-process, 1 and 16 clients, 1 and 100 accounts), push
    latency as the live store grows, /health under concurrent pushes and a 1,000-lead /match."""
    from serving.bench import run

    report = run(_settings(), seconds=seconds, log=console.print)
    out.print(report.read_text())


@bench_app.command("scoring")
def bench_scoring(
    sizes: Annotated[str, typer.Option(help="Book sizes to score, comma-separated.")] = "100000,1000000",
) -> None:
    """The scheduled scoring job's rate (CHS with attribution) at each size, in memory."""
    from serving.bench_scoring import run

    report = run(_settings(), sizes=tuple(int(x) for x in sizes.split(",")), log=console.print)
    out.print(report.read_text())


@bench_app.command("drift")
def bench_drift(
    sizes: Annotated[str, typer.Option(help="Comma-separated window sizes.")] = "10000,100000,1000000",
) -> None:
    """Drift-check time at 10k / 100k / 1M rows against Evidently's default DataDriftPreset."""
    from drift.bench import run

    report = run(_settings(), sizes=tuple(int(x) for x in sizes.split(",")), log=console.print)
    out.print(report.read_text())


@bench_app.command("experiments")
def bench_experiments() -> None:
    """Runtime of the CHS three-variant example spec with 1,000 bootstrap resamples on demo-sized data."""
    from experiments.bench import run

    report = run(_settings(), log=console.print)
    out.print(report.read_text())


@bench_app.command("tuning")
def bench_tuning(
    trials: Annotated[int, typer.Option(help="No-op trials per storage and measurement.")] = 200,
) -> None:
    """Optuna overhead per trial of the shared-study worker loop, SQLite vs PostgreSQL (throwaway database)."""
    from training.tuning_bench import run

    report = run(_settings(), trials=trials, log=console.print)
    out.print(report.read_text())


if __name__ == "__main__":
    app()


from salesml.cli_actions import playbooks_app, score_app, warnings_app  # noqa: E402  (groups of their own module)

app.add_typer(score_app, name="score")
app.add_typer(warnings_app, name="warnings")
app.add_typer(playbooks_app, name="playbooks")
