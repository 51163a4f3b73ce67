"""The project configuration file (``salesml.yaml``): what a user says about their own export.

Three sections, all optional:

- ``export``: ``as_of``, when the export was taken. Outcome windows are judged complete against it.
- ``custom_columns``: company-specific columns per contract table (numeric, categorical, boolean;
  event tables may add windowed aggregations). They are validated like contract columns and become
  Feast features of the models that read the table.
- ``models``: per-model overrides of the shipped model specs (``salesml/specs/*.yaml``): horizon,
  observation cadence, churn definition, monotone directions, candidates.

The file is ``SALESML_CONFIG`` when set, else ``salesml.yaml`` in the export folder. Validated with
pydantic, so a bad file names its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_NAME = "salesml.yaml"
CUSTOM_TYPES = {"numeric": "float", "categorical": "str", "boolean": "bool"}
# Tables whose rows are events in time: a custom column there may also be aggregated over a window.
EVENT_TABLES = ("usage_weekly", "interactions", "lead_events", "rep_state", "contracts")


class ProjectError(ValueError):
    pass


class Aggregation(BaseModel, extra="forbid"):
    fn: Literal["count", "sum", "mean", "last", "max", "min"]
    days: int = Field(gt=0, le=3660)

    @property
    def suffix(self) -> str:
        return f"{self.fn}_{self.days}d"


class CustomColumn(BaseModel, extra="forbid"):
    type: Literal["numeric", "categorical", "boolean"]
    nullable: bool = False
    required: bool = True
    min: float | None = None
    max: float | None = None
    values: list[str] | None = None
    aggregations: list[Aggregation] = Field(default_factory=list)
    # Models that read the column (default: every model whose entity the table belongs to).
    models: list[str] | None = None
    doc: str = ""


class ExportInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    as_of: pd.Timestamp | None = None

    @field_validator("as_of", mode="before")
    @classmethod
    def _utc(cls, v):
        return parse_as_of(v) if v is not None else None


class ProjectConfig(BaseModel, extra="forbid"):
    export: ExportInfo = Field(default_factory=ExportInfo)
    custom_columns: dict[str, dict[str, CustomColumn]] = Field(default_factory=dict)
    models: dict[str, dict] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)  # the file it came from

    @field_validator("custom_columns")
    @classmethod
    def _known_tables(cls, v):
        from salesml.contract import TABLES

        for table, cols in v.items():
            if table not in TABLES:
                raise ValueError(f"unknown table '{table}': expected one of {', '.join(TABLES)}")
            known = {c.name for c in TABLES[table].columns}
            for name, col in cols.items():
                if name in known:
                    raise ValueError(f"{table}.{name} is a contract column already; declare only extra columns")
                if col.aggregations and table not in EVENT_TABLES:
                    raise ValueError(f"{table}.{name}: aggregations need an event table "
                                     f"({', '.join(EVENT_TABLES)})")
        return v

    def extra_columns(self) -> dict[str, tuple]:
        """Custom columns as contract ``Col`` objects, per table (what validation checks)."""
        import pandera.pandas as pa

        from salesml.contract import Col

        out: dict[str, tuple] = {}
        for table, cols in self.custom_columns.items():
            items = []
            for name, c in cols.items():
                checks = []
                if c.min is not None:
                    checks.append(pa.Check.ge(c.min))
                if c.max is not None:
                    checks.append(pa.Check.le(c.max))
                if c.values:
                    checks.append(pa.Check.isin(list(c.values)))
                items.append(Col(name, CUSTOM_TYPES[c.type], required=c.required, nullable=c.nullable,
                                 checks=tuple(checks), doc=c.doc or f"custom {c.type} column"))
            out[table] = tuple(items)
        return out


def parse_as_of(value) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"export as_of must be a date or UTC timestamp, got {value!r}: {exc}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def config_path(export_dir: Path | None, explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        return Path(explicit)
    if export_dir is not None and (Path(export_dir) / CONFIG_NAME).exists():
        return Path(export_dir) / CONFIG_NAME
    return None


def load_project(path: Path | None) -> ProjectConfig:
    """The project configuration at ``path`` (None: an empty one, every default in force)."""
    if path is None:
        return ProjectConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such configuration file (SALESML_CONFIG)") from None
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProjectError(f"{path}: expected a mapping with export / custom_columns / models")
    try:
        cfg = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise ProjectError("\n".join(lines)) from None
    cfg.source = str(path)
    return cfg
