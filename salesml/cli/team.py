"""``salesml team``: the team profile's services (``salesml.team``)."""

from __future__ import annotations

import typer

from salesml.cli.base import console, out
from salesml.cli.base import settings as _settings

app = typer.Typer(help="Team profile services: PostgreSQL databases, the MLflow server, Redis.", no_args_is_help=True)


@app.command("up")
def team_up() -> None:
    """Check PostgreSQL/Redis, create the profile's databases, start the MLflow server (idempotent)."""
    from salesml.team import ServiceError, up

    try:
        up(_settings(), show=out.print)
    except ServiceError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=3) from None


@app.command("down")
def team_down() -> None:
    """Stop the MLflow server that `salesml team up` started (databases and Redis keys are kept)."""
    from salesml.team import down

    down(_settings(), show=out.print)
