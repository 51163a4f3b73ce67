"""Playbooks per warning level: configuration, versioned, read from one YAML file.

The shipped file is ``salesml/specs/playbooks.yaml``; ``settings.playbooks_file`` points to a
project's own. The file has a top-level ``version`` (raised on every edit) and a list of
playbooks, each with ``id``, ``title``, ``steps`` (list of strings) and ``levels`` (a subset of
green/yellow/orange/red). A warning records the playbook id and the file version it was offered
with, so an effect measured later belongs to the text people actually saw.

Several playbooks may serve one level; ``pick`` offers the first one in file order that is not
frozen (the fuse in ``serving.actions.warnings``). When every playbook of a level is frozen, or the level
has none, nothing is offered and ``pick`` says why.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from salesml.settings import Settings

SHIPPED = Path(__file__).resolve().parents[1] / "salesml" / "specs" / "playbooks.yaml"
LEVELS = ("green", "yellow", "orange", "red")  # order matters: later is worse
Level = Literal["green", "yellow", "orange", "red"]


class PlaybookError(ValueError):
    """A playbooks file that cannot be used: ``file``, ``playbook`` (id or #position) and ``field`` say where."""

    def __init__(self, file: Path | str, playbook: str | None, field: str | None, message: str):
        where = ", ".join(x for x in (f"playbook {playbook}" if playbook else None,
                                      f"field {field}" if field else None) if x)
        super().__init__(f"{file}: {where + ': ' if where else ''}{message}")
        self.file, self.playbook, self.field = str(file), playbook, field


class Playbook(BaseModel, extra="forbid"):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str = Field(min_length=1)
    steps: list[str] = Field(min_length=1)
    levels: list[Level] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _steps_not_blank(cls, steps: list[str]) -> list[str]:
        if any(not s.strip() for s in steps):
            raise ValueError("every step needs some text")
        return steps

    @field_validator("levels")
    @classmethod
    def _levels_once(cls, levels: list[str]) -> list[str]:
        if len(set(levels)) != len(levels):
            raise ValueError("a level is listed twice")
        return levels


class PlaybookFile(BaseModel, extra="forbid"):
    version: int | str
    playbooks: list[Playbook] = Field(min_length=1)


@dataclass(frozen=True)
class Offer:
    """What ``pick`` decided for a level: a playbook, or none and why."""

    playbook: Playbook | None
    version: str
    note: str | None = None  # why nothing is offered


@dataclass(frozen=True)
class Playbooks:
    version: str
    items: tuple[Playbook, ...]
    source: str

    def get(self, playbook_id: str) -> Playbook | None:
        return next((p for p in self.items if p.id == playbook_id), None)

    def for_level(self, level: str) -> list[Playbook]:
        return [p for p in self.items if level in p.levels]

    def pick(self, level: str, frozen: Collection[str] = ()) -> Offer:
        """The playbook offered for ``level``: the first in file order that is not frozen."""
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}: expected one of {', '.join(LEVELS)}")
        serving = self.for_level(level)
        if not serving:
            return Offer(None, self.version, f"no playbook is configured for level {level}")
        for p in serving:
            if p.id not in frozen:
                return Offer(p, self.version)
        return Offer(None, self.version, f"every playbook for level {level} is frozen for review "
                                         f"({', '.join(p.id for p in serving)}); none offered")


def parse_playbooks(data, source: Path | str) -> Playbooks:
    """Validate already-parsed YAML; errors name the file, the playbook and the field."""
    try:
        parsed = PlaybookFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]  # the first problem, precisely located, beats a wall of them
        loc = list(err["loc"])
        playbook, field = None, ".".join(str(x) for x in loc) or None
        if len(loc) >= 2 and loc[0] == "playbooks" and isinstance(loc[1], int):
            raw = data["playbooks"][loc[1]] if isinstance(data, dict) else None
            pid = raw.get("id") if isinstance(raw, dict) else None
            playbook = str(pid) if isinstance(pid, str) and pid else f"#{loc[1] + 1}"
            field = ".".join(str(x) for x in loc[2:]) or None
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise PlaybookError(source, playbook, field, f"{err['msg']}{more}") from None
    seen: set[str] = set()
    for p in parsed.playbooks:
        if p.id in seen:
            raise PlaybookError(source, p.id, "id", "the id is used by more than one playbook")
        seen.add(p.id)
    return Playbooks(str(parsed.version), tuple(parsed.playbooks), str(source))


def read_playbooks(path: Path | str) -> Playbooks:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlaybookError(path, None, None, f"cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise PlaybookError(path, None, None, f"is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise PlaybookError(path, None, None, "expected a mapping with 'version' and 'playbooks'")
    return parse_playbooks(data, path)


def load_playbooks(settings: Settings | None = None) -> Playbooks:
    """The playbooks of ``settings.playbooks_file``, or the four shipped ones (no settings, or no file set)."""
    path = (settings.playbooks_file if settings is not None else None) or SHIPPED
    return read_playbooks(path)
