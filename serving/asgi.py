"""What BentoML's app does not bound or declare, fixed around it (``serving.service.ScoringService``).

- ``KnownRoutesOnly``: the outermost ASGI layer. BentoML's metrics middleware labels every request
  with its raw path, so 10,000 random paths made 10,000 label sets (and grew /metrics and the
  worker without bound). A path that no route of the app serves is answered 404 here, before any
  BentoML middleware counts it. The routes come from the app itself, not from a list kept by hand.
- ``amend_openapi``: the request schema of the scoring endpoints says "exactly one of ids or rows"
  (``oneOf``), and every error status the service answers is declared with the body it has.
- ``OneLineRejections``: BentoML logs each rejected request (400) with a full traceback at ERROR;
  this logging filter turns those into one line. Real failures (5xx) keep their traceback.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import attrs
from bentoml._internal.service.openapi.specification import (
    MediaType,
    OpenAPISpecification,
    Operation,
    Response,
    Schema,
)

ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in words."},
        "field": {"type": "string", "nullable": True, "description": "The request field at fault, dotted."},
        "violations": {"type": "array", "items": {"type": "string"},
                       "description": "Contract violations of pushed rows (table, column, rows)."},
        "detail": {"type": "array", "items": {"type": "object"},
                   "description": "Every validation error with its location (pydantic)."},
    },
}
ERRORS = {
    400: "Invalid request: the field at fault is named",
    401: "Missing or unknown API key",
    403: "The key's role may not do this (scope or view), or the warning belongs to another owner and team",
    404: "No such path",
    405: "Wrong method (Allow: POST; GET too where the path has a GET)",
    408: "The body did not arrive in time",
    413: "Body larger than the limit",
    415: "Content-Type is not application/json",
    429: "Too many requests in flight, or the key is over its rate of not-applicable marks",
    500: "Unexpected error (see the server log)",
    503: "Not ready, model not served, or the key file is unreadable",
    504: "The request took longer than the time limit",
}
# How a client sends its API key (serving.auth.key_from_headers); every protected path takes either.
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "An API key (`salesml keys add`); its role decides what the call may do and see."},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The same API key as `Authorization: Bearer KEY`."},
}
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
# Read-only endpoints that answer GET too (the gate turns the query string into the JSON body).
GET_AS_POST = ("/warnings",)
# Scoring endpoints that take ids or feature rows: exactly one of the two.
ONE_OF = {"/intent": "lead_ids", "/health": "account_ids"}


class KnownRoutesOnly:
    """Answer 404 to any path the wrapped Starlette app has no route for, before its middlewares run."""

    def __init__(self, app):
        self.app = app
        self._static: dict[str, set[str]] = {}

    def _static_files(self, mount) -> set[str]:
        if mount.path not in self._static:
            root = mount.app.directory
            self._static[mount.path] = {f"{mount.path}/{os.path.relpath(os.path.join(d, f), root)}"
                                        for d, _, files in os.walk(root) for f in files}
        return self._static[mount.path]

    def known(self, scope) -> bool:
        from starlette.routing import Match, Mount
        from starlette.staticfiles import StaticFiles

        for route in self.app.router.routes:
            if route.matches(scope)[0] is Match.NONE:
                continue
            if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
                if scope["path"] not in self._static_files(route):
                    continue
            return True  # a full match, or a partial one (wrong method: Starlette answers 405 with Allow)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.known(scope):
            body = b'{"error": "no such path", "field": null}'
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def column_schema(col, is_id: bool) -> dict:
    """JSON schema of one contract (or declared custom) column: type, nulls, allowed values, range."""
    from salesml.contract import ID_MAX_LENGTH, ID_PATTERN, UTC_TEXT

    out: dict = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
                 "bool": {"type": "boolean"},
                 "ts": {"type": "string", "pattern": UTC_TEXT,
                        "description": "UTC: ISO-8601 ending in Z or +00:00, or a date"}}[col.dtype].copy()
    if is_id:
        out.update(pattern=ID_PATTERN, minLength=1, maxLength=ID_MAX_LENGTH)
    for check in col.checks:
        stats = getattr(check, "statistics", None) or {}
        if "allowed_values" in stats:
            out["enum"] = list(stats["allowed_values"])
        if "min_value" in stats:
            out["minimum"] = stats["min_value"]
        if "max_value" in stats:
            out["maximum"] = stats["max_value"]
    if col.doc:
        out["description"] = col.doc
    if col.nullable:
        out["nullable"] = True
    return out


def events_body(max_batch: int, extra: dict | None = None) -> dict:
    """The /events body: a table and its rows, each row described by the contract (one variant per table)."""
    from features.store import PUSHABLE
    from salesml.contract import TABLES

    variants = []
    for table in PUSHABLE:
        spec = TABLES[table]
        cols = [*spec.columns, *(extra or {}).get(table, ())]
        ids = {*spec.key, *spec.foreign_keys}
        row = {"type": "object", "additionalProperties": False,
               "properties": {c.name: column_schema(c, c.dtype == "str" and c.name in ids) for c in cols},
               "required": [c.name for c in spec.columns if c.required and c.name not in spec.omittable]}
        variants.append({"type": "object", "required": ["table", "rows"], "additionalProperties": False,
                         "properties": {"table": {"type": "string", "enum": [table]},
                                        "rows": {"type": "array", "minItems": 1, "maxItems": max_batch,
                                                 "items": row}}})
    return {"oneOf": variants}


def _schema(doc: dict[str, Any]) -> Schema:
    """A JSON-schema dict as BentoML's ``Schema`` objects (nested)."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return _schema(v)
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = "not_" if k == "not" else k
        if k == "properties":
            out[key] = {name: _schema(p) for name, p in v.items()}
        elif k in ("items", "not", "additionalProperties") and isinstance(v, dict):
            out[key] = _schema(v)
        elif k in ("oneOf", "anyOf", "allOf"):
            out[key] = [_schema(x) for x in v]
        else:
            out[key] = v if k in ("enum", "required") else conv(v)
    return Schema(**out)


def amend_openapi(spec: OpenAPISpecification, max_batch: int = 1000, extra: dict | None = None) -> Document:
    """BentoML's OpenAPI document with the one-of rules, the /events rows as the contract describes
    them (``extra``: the project's declared custom columns), every error response the service gives,
    and the API key each protected path needs (``serving.gate.PROTECTED``)."""
    from serving.gate import PROTECTED  # the gate imports this module

    error = _schema(ERROR_BODY)
    for path, item in spec.paths.items():
        op = getattr(item, "post", None)
        if not op:
            continue
        if "requestBody" in op:
            op["requestBody"]["required"] = True  # every endpoint takes a JSON body (415 without one)
        if path == "/events":
            media = op["requestBody"]["content"]["application/json"]
            op["requestBody"]["content"]["application/json"] = attrs.evolve(
                media, schema=_schema(events_body(max_batch, extra)))
        if path in ONE_OF:  # the ids without rows, or rows without the ids (nor, on /health, since)
            content = op["requestBody"]["content"]
            media = content["application/json"]
            ids = ONE_OF[path]
            by_ids = Schema(required=[ids], not_=Schema(required=["rows"]))
            by_rows = Schema(required=["rows"], not_=Schema(anyOf=[Schema(required=[ids]), Schema(required=["since"])])
                             if path == "/health" else Schema(required=[ids]))
            content["application/json"] = attrs.evolve(media, schema=attrs.evolve(
                media.schema, oneOf=[by_ids, by_rows]))
        if path in PROTECTED:
            op["security"] = SECURITY
        for code, text in ERRORS.items():
            op["responses"][code] = Response(description=text,
                                             content={"application/json": MediaType(schema=error)})
    for path in GET_AS_POST:
        post = spec.paths[path].post if path in spec.paths else None
        if post:
            spec.paths[path] = attrs.evolve(spec.paths[path], get=get_operation(post))
    return Document(**{f.name: getattr(spec, f.name) for f in attrs.fields(type(spec))})


@attrs.frozen
class Document(OpenAPISpecification):
    """BentoML's OpenAPI document with the security schemes its ``Components`` cannot hold yet."""

    def asdict(self) -> dict[str, Any]:
        out = super().asdict()
        out.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return out


def _plain(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else attrs.asdict(obj, recurse=False)


def get_operation(post: Operation | dict[str, Any]) -> dict[str, Any]:
    """The GET twin of a read-only POST operation (``serving.gate.GET_AS_POST``): each top-level field
    of its JSON body as an optional query parameter, the same responses (405 answers Allow: GET, POST)."""
    post = _plain(post)
    schema = _plain(post["requestBody"]["content"]["application/json"].schema)
    params = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = _plain(prop)
        fields = {k: v for k, v in prop.items()
                  if v is not None and k in ("type", "enum", "minimum", "maximum", "minLength", "maxLength",
                                             "pattern", "default")}
        params.append({"name": name, "in": "query", "required": False, "schema": fields,
                       **({"description": prop["title"]} if prop.get("title") else {})})
    return {"tags": post.get("tags"), "description": post.get("description"), "parameters": params,
            **({"security": post["security"]} if "security" in post else {}),
            "operationId": f"{post['operationId']}_get", "responses": dict(post["responses"])}


class OneLineRejections(logging.Filter):
    """BentoML's ``Exception on /path [POST]`` records for rejected input: one line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not str(record.msg).startswith("Exception on"):
            return True
        exc = record.exc_info[1]
        from pydantic import ValidationError

        code = 400 if isinstance(exc, ValidationError) else getattr(getattr(exc, "error_code", None), "value", 500)
        if isinstance(code, int) and code < 500:
            record.msg = "Rejected %s [%s]: %s"
            args = record.args if isinstance(record.args, tuple) else ()
            record.args = (*args[:2], str(exc).splitlines()[0][:300])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_rejections() -> None:
    """Install ``OneLineRejections`` on BentoML's HTTP app logger (once)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, OneLineRejections) for f in logger.filters):
        logger.addFilter(OneLineRejections())
