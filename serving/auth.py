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

Owner and team (``salesml keys add --role csm --name ana --owner csm-007 --team emea``): the person a
key stands for (the ``csm_id`` the warnings store names as a warning's owner) and the team (the
owner's region, ``serving.actions.owners``). They scope the warnings loop: a csm key records
interventions, and a sales key reads the inbox, only for warnings whose owner is the key's owner or
whose team is the key's team (``Caller.reaches``); an admin key reaches every warning. A key with
neither (every key created before keys had owners, and an integration such as a console that
serves many people) is *unscoped*: it reaches every warning, as keys did before (`salesml keys add`
says so when it makes one). The fuse counts a key's not-applicable marks as those of
its owner, or of the key itself when it has none.

The key file must decode as UTF-8 JSON (a list of entries), with every digest and every key id
once: a file that cannot be read (binary, UTF-16, a directory, no permission), an empty file, a
missing one (deleted, or none made yet) or a duplicate digest is a ``KeyFileError``, and the gate
refuses every call with 503 until it is fixed (never "the later entry wins").
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
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, StringConstraints, TypeAdapter, ValidationError

VIEWS = ("sales", "csm", "admin")  # narrowest first
RANK = {r: i for i, r in enumerate(VIEWS)}
SCOPES = {"sales": frozenset({"read"}), "csm": frozenset({"read", "intervene"}),
          "admin": frozenset({"read", "write", "intervene"}), "ingest": frozenset({"write"})}
ROLES = tuple(SCOPES)


class KeyFileError(RuntimeError):
    """The API key file cannot be read as a list of keys (or is missing, empty, or names a key twice)."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Caller:
    key_id: str
    role: str
    owner: str | None = None
    team: str | None = None

    def may(self, scope: str) -> bool:
        return scope in SCOPES.get(self.role, ())

    @property
    def scoped(self) -> bool:
        """Whether the key reaches only its owner's and team's warnings (admin and unscoped keys reach all)."""
        return self.role != "admin" and (self.owner is not None or self.team is not None)

    def reaches(self, owner: str, team: str) -> bool:
        """Whether this key may act on (or read) a warning owned by ``owner`` in ``team``."""
        return not self.scoped or owner == self.owner or (self.team is not None and team == self.team)

    @property
    def person(self) -> str:
        """Who the key's marks count as (the fuse): its owner, else the key itself."""
        return self.owner if self.owner is not None else self.key_id


Role = Literal["sales", "csm", "admin", "ingest"]
assert get_args(Role) == ROLES, "serving.auth: Role and SCOPES must name the same roles"
Name = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]


class _Entry(BaseModel):
    key_id: Name
    role: Role
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    owner: Name | None = None
    team: Name | None = None


_ENTRIES = TypeAdapter(list[_Entry])
_FIX = "Restore it from a backup, or move it away and create new keys with `salesml keys add`"


def _unreadable(path: Path, why: str) -> KeyFileError:
    return KeyFileError(f"API key file {path} is unreadable ({why}). {_FIX}")


def _read(path: Path) -> str:
    """The file's text; a KeyFileError for whatever keeps it from being UTF-8 text (never a UnicodeError)."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise _unreadable(path, "it is a directory") from None
    except OSError as exc:
        raise _unreadable(path, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _unreadable(path, f"not UTF-8 text: byte {exc.start} is {raw[exc.start:exc.start + 1]!r}") from None


def _parse(path: Path, text: str) -> list[_Entry]:
    if not text.strip():
        raise _unreadable(path, "it is empty")
    try:
        entries = _ENTRIES.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise _unreadable(path, f"{exc.error_count()} problem(s); first at entry {where}: {first['msg']}") from None
    for field in ("sha256", "key_id"):
        seen: dict[str, int] = {}
        for i, e in enumerate(entries):
            value = getattr(e, field)
            if value in seen:
                shown = e.key_id if field == "key_id" else f"{value[:12]}... (key ids {entries[seen[value]].key_id}, "\
                                                             f"{e.key_id})"
                raise _unreadable(path, f"entries {seen[value]} and {i} have the same {field} {shown}; "
                                        f"remove the one that is wrong")
            seen[value] = i
    return entries


class KeyStore:
    """Hashed API keys; reloads the file when it changes, so added keys work without a restart."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._by_digest: dict[str, Caller] = {}

    def _load(self) -> None:
        """Re-read the file when it changed; raises KeyFileError when it is unreadable, empty or missing
        (kept so until fixed: a failed read caches nothing)."""
        try:
            st = self.path.stat()
        except OSError as exc:
            self._by_digest, self._stamp = {}, None
            what = "it does not exist" if isinstance(exc, FileNotFoundError) else f"{type(exc).__name__}: {exc}"
            raise _unreadable(self.path, what) from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._by_digest, self._stamp = {}, None
            entries = _parse(self.path, _read(self.path))
            self._by_digest = {e.sha256: Caller(e.key_id, e.role, e.owner, e.team) for e in entries}
            self._stamp = stamp

    def check(self) -> int:
        """How many keys the file holds (0: no file yet); raises KeyFileError when it exists but is
        unreadable or empty (checked at start-up)."""
        self._stamp = None
        if not self.path.exists() and not self.path.is_symlink():
            return 0
        self._load()
        return len(self._by_digest)

    def callers(self) -> list[Caller]:
        """Every key's id, role, owner and team."""
        self._load()
        return list(self._by_digest.values())

    def resolve(self, key: str | None) -> Caller | None:
        if not key:
            return None
        self._load()
        return self._by_digest.get(digest(key))

    def add(self, role: str, name: str, owner: str | None = None, team: str | None = None) -> tuple[str, str]:
        """A new key for ``role`` (standing for ``owner``, in ``team``): returns (key_id, key); only the
        digest is stored. An empty file is taken as one with no keys (creating one is how it is fixed);
        an unreadable one is refused."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        for field, value in (("owner", owner), ("team", team)):
            if value is not None and not value.strip():
                raise ValueError(f"{field} must not be blank")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key_id = f"{name}-{secrets.token_hex(3)}"
        key = f"sml_{secrets.token_urlsafe(32)}"
        # Read-modify-write under an exclusive lock, then an atomic replace: concurrent `keys add`
        # calls each keep their key, and a reader never sees a half-written file.
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            text = _read(self.path) if self.path.exists() else ""
            entries = [e.model_dump(exclude_none=True) for e in _parse(self.path, text)] if text.strip() else []
            entries.append({"key_id": key_id, "role": role, "sha256": digest(key),
                            **({"owner": owner.strip()} if owner else {}), **({"team": team.strip()} if team else {})})
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
