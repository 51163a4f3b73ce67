"""The ``salesml`` command line: one tool, a subcommand group per stage.

This package holds the root ``app`` and its wiring; each stage's commands live in a module of
their own (``data``, ``features``, ``train``, ``serve``, ``experiments``, ``drift``, ``score``,
``warnings``, ``playbooks``, ``team``, ``bench``), what they share in ``base``.
Heavy libraries (Feast, MLflow, XGBoost...) are imported inside the commands so that
``salesml --help`` and small commands answer fast.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from salesml.cli import (
    bench,
    data,
    drift,
    experiments,
    features,
    models,
    playbooks,
    score,
    serve,
    team,
    train,
    warnings,
)
from salesml.cli.base import overrides, quiet

app = typer.Typer(help="Sales-intelligence ML platform: data, features, models, serving, drift.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
# Commands of the root group first (train, tune, promote, recalibrate, serve, serve-demo, serve-stop),
# then the groups, in the order `salesml --help` lists them.
app.add_typer(train.app)
app.add_typer(serve.app)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(bench.app, name="bench")
app.add_typer(experiments.app, name="experiment")
app.add_typer(drift.app, name="drift")
app.add_typer(serve.keys_app, name="keys")
app.add_typer(team.app, name="team")
app.add_typer(score.app, name="score")
app.add_typer(warnings.app, name="warnings")
app.add_typer(playbooks.app, name="playbooks")
app.add_typer(models.app, name="models")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library warnings and logs.")] = False,
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="When the export was taken (UTC date/timestamp); same as SALESML_EXPORT_AS_OF or "
                        "export.as_of in salesml.yaml. Outcome windows are judged complete against it.")] = None,
) -> None:
    """Sales-intelligence ML platform: data, features, models, serving, drift."""
    overrides.clear()
    quiet(verbose)
    if as_of:
        overrides["export_as_of"] = as_of
