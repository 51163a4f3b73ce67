"""What every ``salesml`` command group shares: the consoles, this invocation's settings, the
progress bar, quiet library logs.  Its own module so that command groups in other modules
(``salesml.cli_actions``) use them without importing ``salesml.cli``, which imports them."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console()
# Libraries whose warnings and INFO chatter (Feast "experimental", ibis, pandera, SQLAlchemy, MLflow
# schema hints, alembic migrations) would bury the one line that matters; --verbose shows them.
NOISY_LOGGERS = ("feast", "mlflow", "alembic", "bentoml", "evidently", "sqlalchemy", "ibis", "pandera",
                 "urllib3", "distributed", "numexpr", "py.warnings", "httpx")
overrides: dict[str, str] = {}  # global options of this invocation, applied to its settings


def quiet(verbose: bool) -> None:
    import logging
    import os
    import warnings

    if verbose:
        return
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # subprocesses (bentoml serve) too
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # MLflow resets its loggers when imported
    logging.captureWarnings(True)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def settings():
    from salesml.settings import Settings

    return Settings(**overrides)


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def fail(exc) -> None:
    """Print the error (it names what is wrong) and exit 2: bad input, nothing was changed."""
    console.print(str(exc), soft_wrap=True, markup=False, highlight=False, style="red")
    raise typer.Exit(code=2)
