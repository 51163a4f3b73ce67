"""``salesml drift``: the drift check on served traffic and the Evidently UI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli.base import MODEL_HELP, console, out
from salesml.cli.base import settings as _settings

app = typer.Typer(help="Drift monitoring with Evidently on the served traffic.", no_args_is_help=True)


@app.command("check")
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


@app.command("ui")
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
