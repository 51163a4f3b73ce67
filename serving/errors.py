"""What the scoring core answers instead of a score: its errors, in a module of their own so that the
actions (warnings, live checks) can raise and catch them without importing the core (the import
contract "core-actions" in pyproject.toml keeps the two apart)."""

from __future__ import annotations


class ModelUnavailable(RuntimeError):
    """The model has no champion in the registry (an export that does not feed it, or not trained yet)."""


class RequestError(ValueError):
    """A request the core cannot answer as asked (a 4xx): ``field`` names the part of the body at fault."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


class UnknownFeature(RequestError):
    """A request row names a feature the model does not know, or gives it a value of the wrong type."""

    def __init__(self, message: str):
        super().__init__("rows", message)
