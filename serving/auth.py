"""API keys and roles, and the field-level view each role gets.

Keys live in a JSON file (``Settings.api_keys_path``) as SHA-256 digests, never in clear:
``salesml serve add-key --role csm --name success-console`` prints the key once.  Keys are 32
random bytes, so a plain digest is enough (there is nothing to brute-force).

Roles, narrowest first:

- ``sales``: scores, probabilities, levels, bands, trends (change totals) and rep proposals;
- ``csm``: also layer sub-scores, feature-level drivers, the input feature values (behaviour
  details) and attribution by feature;
- ``admin``: also the account's recent relationship notes (free text from the CRM).

A request may ask for a narrower view (``view``); asking for a wider one than the key's role
is refused with 403.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

ROLES = ("sales", "csm", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Caller:
    key_id: str
    role: str


class KeyStore:
    """Hashed API keys; reloads the file when it changes, so added keys work without a restart."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._by_digest: dict[str, Caller] = {}

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._by_digest, self._mtime = {}, None
            return
        if mtime != self._mtime:
            entries = json.loads(self.path.read_text() or "[]")
            self._by_digest = {e["sha256"]: Caller(e["key_id"], e["role"]) for e in entries}
            self._mtime = mtime

    def resolve(self, key: str | None) -> Caller | None:
        if not key:
            return None
        self._load()
        return self._by_digest.get(digest(key))

    def add(self, role: str, name: str) -> tuple[str, str]:
        """A new key for ``role``: returns (key_id, key); only the digest is stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        entries = json.loads(self.path.read_text() or "[]") if self.path.exists() else []
        key_id = f"{name}-{secrets.token_hex(3)}"
        key = f"sml_{secrets.token_urlsafe(32)}"
        entries.append({"key_id": key_id, "role": role, "sha256": digest(key)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2))
        tmp.replace(self.path)
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
    if requested not in RANK:
        raise ValueError(f"view must be one of {', '.join(ROLES)}")
    if RANK[requested] > RANK[caller.role]:
        raise PermissionError(f"role '{caller.role}' may not request the '{requested}' view")
    return requested


# Fields removed from each scoring result below a role (keys of the result dicts).
HIDDEN = {
    "sales": {"drivers", "layers", "features", "attribution", "notes"},
    "csm": {"notes"},
    "admin": set(),
}


def view(result: dict, role: str) -> dict:
    hidden = HIDDEN[role]
    out = {k: v for k, v in result.items() if k not in hidden}
    change = out.get("change")
    if isinstance(change, dict) and "layers" in hidden:  # sales sees the trend, not its make-up
        out["change"] = {k: change[k] for k in ("since", "previous_score", "points") if k in change}
    return out
