"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=st_hooks``): generated requests name real entities.

The OpenAPI document cannot list the export's accounts, leads and reps, so a generated id is almost
never known and every write would stop at the foreign-key check. This hook keeps each generated
body's shape and values and swaps only what must refer to the export: entity ids (picked from the
known ones by a hash of the generated id, so runs are reproducible), an outcome's kind (the one its
entity type has), and times (a generated time is moved into the export's range; a week start to a
Monday). ``SALESML_ST_KNOWN`` names a JSON file: {"accounts": [...], "leads": [...], "reps": [...],
"since": "YYYY-MM-DD", "at": "ISO time", "week": "ISO Monday", "warnings": [warning ids]}."""

from __future__ import annotations

import hashlib
import json
import os

import schemathesis

KNOWN = json.loads(open(os.environ["SALESML_ST_KNOWN"]).read()) if os.environ.get("SALESML_ST_KNOWN") else {}
KINDS = {"lead": "converted", "account": "churned"}


def _pick(kind: str, value) -> str:
    pool = KNOWN[kind]
    return pool[int(hashlib.sha256(repr(value).encode()).hexdigest(), 16) % len(pool)]


def _ids(body: dict, name: str, kind: str) -> None:
    if isinstance(body.get(name), list):
        body[name] = [_pick(kind, v) for v in body[name]]


def _rows(body: dict, key: str, kind: str) -> None:
    for row in body.get("rows") or []:
        if isinstance(row, dict) and key in row:
            row[key] = _pick(kind, row[key])


@schemathesis.hook
def map_body(ctx, body):
    if not KNOWN or not isinstance(body, dict):
        return body
    path = ctx.operation.path
    if path == "/health":
        _ids(body, "account_ids", "accounts")
        _rows(body, "account_id", "accounts")
        if body.get("since") is not None:
            body["since"] = KNOWN["since"]
    elif path in ("/intent", "/match"):
        _ids(body, "lead_ids", "leads")
        _ids(body, "rep_ids", "reps")
        _rows(body, "lead_id", "leads")
    elif path == "/health/history":
        if "account_id" in body:
            body["account_id"] = _pick("accounts", body["account_id"])
    elif path == "/warnings":
        body.pop("owner", None)  # a generated owner owns nothing: the filter would always answer []
    elif path == "/interventions":
        body["warning_id"] = _pick("warnings", body.get("warning_id"))
        body.pop("at", None)  # now: a generated time is before the warning or in the future
        # an intervention that applies no playbook: the fuse of the shared environment stays as it is
        body.pop("playbook_id", None)
        body["not_applicable"] = False
    elif path == "/outcomes":
        for o in body.get("outcomes") or []:
            if isinstance(o, dict) and o.get("entity_type") in KINDS:
                o["entity_id"] = _pick(f"{o['entity_type']}s", o.get("entity_id"))
                o["outcome"] = KINDS[o["entity_type"]]
                o["occurred_at"] = KNOWN["at"]
    elif path == "/events":
        for i, row in enumerate(body.get("rows") or []):
            if not isinstance(row, dict):
                continue
            if "lead_id" in row:
                row["lead_id"] = _pick("leads", row["lead_id"])
            if "event_id" in row:
                row["event_id"] = f"E-st-{hashlib.sha256(repr((row['event_id'], i)).encode()).hexdigest()[:16]}"
            if "account_id" in row:
                row["account_id"] = _pick("accounts", row["account_id"])
            if "occurred_at" in row:
                row["occurred_at"] = KNOWN["at"]
            if "week_start" in row:
                row["week_start"] = KNOWN["week"]
    return body


@schemathesis.hook
def map_query(ctx, query):
    if KNOWN and isinstance(query, dict) and ctx.operation.path == "/warnings":
        query.pop("owner", None)  # as for the POST body: a generated owner owns nothing
    return query
