"""What every ``salesml`` command group shares: the consoles, this invocation's settings, the
progress bar, quiet library logs, the exit on bad input, the warnings store.  Its own module so that
the command groups (``salesml.cli.data``, ``.features``, ...) use them without importing
``salesml.cli``, which imports them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, ConsoleDimensions

from salesml.modelspec import MODEL_NAMES

if TYPE_CHECKING:
    from salesml.settings import Settings

WIDE = 240  # columns when the output is not a terminal (a pipe, a file, a CI log): no wrap at 80


class _Console(Console):
    """A rich console as wide as its terminal, or ``WIDE`` when it writes to no terminal (rich's default
    there is 80 columns, which wrapped paths and messages mid-word in logs). COLUMNS still wins."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is not None or self.is_terminal:
            return size
        return ConsoleDimensions(WIDE, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(stderr=True)
out = _Console()
# Libraries whose warnings and INFO chatter (Feast "experimental", ibis, pandera, SQLAlchemy, MLflow
# schema hints, alembic migrations) would bury the one line that matters; --verbose shows them.
NOISY_LOGGERS = ("feast", "mlflow", "alembic", "bentoml", "evidently", "sqlalchemy", "ibis", "pandera",
                 "urllib3", "distributed", "numexpr", "py.warnings", "httpx")
overrides: dict[str, Any] = {}  # global options of this invocation: Settings fields and their values
MODEL_HELP = " | ".join(MODEL_NAMES)


_verbose_env_ours = False  # whether quiet() set SALESML_VERBOSE itself (for --verbose)
# What quiet() puts in the environment (where the user set nothing) when the command is not verbose.
QUIET_ENV = {
    "PYTHONWARNINGS": "ignore",  # subprocesses (bentoml serve) too
    "MLFLOW_LOGGING_LEVEL": "ERROR",  # MLflow resets its loggers when imported
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # before any settings are read
}


def quiet(verbose: bool) -> None:
    """Library warnings, logs and progress bars off for this command, unless ``--verbose`` (or
    SALESML_VERBOSE): then its settings and the servers it starts (they inherit the environment) are
    verbose too; ``training.tracking.library_output`` applies that to MLflow in every process."""
    import logging
    import os
    import warnings

    global _verbose_env_ours
    if _verbose_env_ours:  # set by an earlier invocation in this process (tests), not by the user
        os.environ.pop("SALESML_VERBOSE", None)
        _verbose_env_ours = False
    if verbose:
        _verbose_env_ours = "SALESML_VERBOSE" not in os.environ
        os.environ["SALESML_VERBOSE"] = "true"
        return
    if _verbose_from_settings():
        return
    warnings.filterwarnings("ignore")
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    logging.captureWarnings(True)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _verbose_from_settings() -> bool:
    """``Settings.verbose`` (SALESML_VERBOSE, the project file); False where the settings do not validate:
    the command names the bad setting when it reads them."""
    from pydantic import ValidationError

    from salesml.settings import Settings

    try:
        return Settings().verbose
    except ValidationError:
        return False


def settings() -> Settings:
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
    from serving.actions.warnings import open_warning_store
    from serving.playbooks import PlaybookError

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
