"""What every ``salesml`` command group shares: the consoles, this invocation's settings, the
progress bar, quiet library logs, the exit on bad input, the warnings store.  Its own module so that
the command groups (``salesml.cli.data``, ``.features``, ...) use them without importing
``salesml.cli``, which imports them."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.console import Console

from salesml.modelspec import MODEL_NAMES

console = Console(stderr=True)
out = Console()
# Libraries whose warnings and INFO chatter (Feast "experimental", ibis, pandera, SQLAlchemy, MLflow
# schema hints, alembic migrations) would bury the one line that matters; --verbose shows them.
NOISY_LOGGERS = ("feast", "mlflow", "alembic", "bentoml", "evidently", "sqlalchemy", "ibis", "pandera",
                 "urllib3", "distributed", "numexpr", "py.warnings", "httpx")
overrides: dict[str, str] = {}  # global options of this invocation, applied to its settings
MODEL_HELP = " | ".join(MODEL_NAMES)


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


def warning_store(s=None):
    """The warnings store of ``s`` (default: this invocation's settings); a bad playbooks file exits 2."""
    from serving.actions.playbooks import PlaybookError
    from serving.actions.warnings import open_warning_store

    try:
        return open_warning_store(s or settings())
    except PlaybookError as exc:
        fail(exc)


def parse_when(value: str | None, name: str) -> datetime | None:
    """``value`` (a date or timestamp, naive = UTC) as a UTC datetime; None stays None; exit 2 naming ``name``."""
    import pandas as pd

    if value is None:
        return None
    try:
        t = pd.Timestamp(value)
    except ValueError:
        fail(f"{name}: not a date or timestamp: {value!r}")
    return (t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")).to_pydatetime()


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """``columns`` of ``rows`` as a Markdown table; ``(none)`` for no row."""
    import pandas as pd

    if not rows:
        return "(none)"
    return pd.DataFrame(rows)[columns].to_markdown(index=False)
