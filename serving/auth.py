"""API keys, roles, what each role may do, and the field-level view each role gets.

Keys live in a JSON file (``Settings.api_keys_path``) as SHA-256 digests, never in clear:
``salesml keys add --role csm --name success-console`` prints the key once.  Keys are 32
random bytes, so a plain digest is enough (there is nothing to brute-force).

Roles and their scopes (``read``: the scoring endpoints, score history and the warnings inbox;
``write``: ``/events`` and ``/outcomes``, which change what a score sees; ``intervene``:
``/interventions``, recording what was done about a warning):

- ``sales`` (read): scores, probabilities, levels, bands, trends (change totals) and rep proposals;
  warnings without their attribution text;
- ``csm`` (read, intervene): also layer sub-scores, feature-level drivers, the input feature values
  (behaviour details) and attribution by feature;
- ``admin`` (read, write, intervene): also the account's recent relationship notes (free text from the CRM);
- ``ingest`` (write): pipelines and the CRM connector that push live events and outcomes; it reads
  no score.

A request may ask for a narrower view (``view``); asking for a wider one than the key's role
is refused with 403.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints, TypeAdapter, ValidationError

VIEWS = ("sales", "csm", "admin")  # narrowest first
RANK = {r: i for i, r in enumerate(VIEWS)}
SCOPES = {"sales": frozenset({"read"}), "csm": frozenset({"read", "intervene"}),
          "admin": frozenset({"read", "write", "intervene"}), "ingest": frozenset({"write"})}
ROLES = tuple(SCOPES)


class KeyFileError(RuntimeError):
    """The API key file exists but cannot be read as a list of keys."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Caller:
    key_id: str
    role: str

    def may(self, scope: str) -> bool:
        return scope in SCOPES.get(self.role, ())


class _Entry(BaseModel):
    key_id: Annotated[str, StringConstraints(min_length=1)]
    role: Literal[ROLES]  # type: ignore[valid-type]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


_ENTRIES = TypeAdapter(list[_Entry])


def _parse(path: Path, text: str) -> list[_Entry]:
    try:
        return _ENTRIES.validate_json(text or "[]")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise KeyFileError(f"API key file {path} is unreadable ({exc.error_count()} problem(s); first at entry "
                           f"{where}: {first['msg']}). Restore it from a backup, or move it away and create "
                           f"new keys with `salesml keys add`") from None


class KeyStore:
    """Hashed API keys; reloads the file when it changes, so added keys work without a restart."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._by_digest: dict[str, Caller] = {}

    def _load(self) -> None:
        """Re-read the file when it changed; raises KeyFileError when it is corrupt (kept so until fixed)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._by_digest, self._mtime = {}, None
            return
        if mtime != self._mtime:
            entries = _parse(self.path, self.path.read_text())
            self._by_digest = {e.sha256: Caller(e.key_id, e.role) for e in entries}
            self._mtime = mtime

    def check(self) -> int:
        """How many keys the file holds; raises KeyFileError when it is corrupt (checked at start-up)."""
        self._mtime = None
        self._load()
        return len(self._by_digest)

    def resolve(self, key: str | None) -> Caller | None:
        if not key:
            return None
        self._load()
        return self._by_digest.get(digest(key))

    def add(self, role: str, name: str) -> tuple[str, str]:
        """A new key for ``role``: returns (key_id, key); only the digest is stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key_id = f"{name}-{secrets.token_hex(3)}"
        key = f"sml_{secrets.token_urlsafe(32)}"
        # Read-modify-write under an exclusive lock, then an atomic replace: concurrent `keys add`
        # calls each keep their key, and a reader never sees a half-written file.
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = [e.model_dump() for e in _parse(self.path, self.path.read_text())] if self.path.exists() else []
            entries.append({"key_id": key_id, "role": role, "sha256": digest(key)})
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(entries, indent=2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        return key_id, key


def key_from_headers(headers) -> str | None:
    """``X-API-Key: KEY`` or ``Authorization: Bearer KEY``."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def effective_role(caller: Caller, requested: str | None) -> str:
    """The view to render: the caller's role, or a narrower one it asked for."""
    if requested is None:
        return caller.role
    if caller.role not in RANK:
        raise PermissionError(f"role '{caller.role}' reads no scores")
    if requested not in RANK:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}")
    if RANK[requested] > RANK[caller.role]:
        raise PermissionError(f"role '{caller.role}' may not request the '{requested}' view")
    return requested


# Fields removed from each scoring result below a role (keys of the result dicts).
HIDDEN = {
    "sales": {"drivers", "layers", "features", "attribution", "notes", "change_text"},
    "csm": {"notes"},
    "admin": set(),
    # never reached: ingest reads no score
    "ingest": {"drivers", "layers", "features", "attribution", "notes", "change_text"},
}


def view(result: dict, role: str) -> dict:
    hidden = HIDDEN[role]
    out = {k: v for k, v in result.items() if k not in hidden}
    change = out.get("change")
    if isinstance(change, dict) and "layers" in hidden:  # sales sees the trend, not its make-up
        out["change"] = {k: change[k] for k in ("since", "previous_score", "points") if k in change}
    return out
