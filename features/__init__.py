"""The Feast feature store: definitions, sources, the offline store, the live path and training sets.

Importing this package first makes ``import feast`` cheap. Feast 0.67 decorates its definition classes
(``FeatureView``, ``OnDemandFeatureView``, ``DataSource``, ``Entity``, ``Field``, ...) with typeguard's
``@typechecked``, and typeguard 4 instruments a class by re-reading, parsing and compiling the class's
whole module once for every method: ``python -X importtime -c "import feast"`` showed
``feast.on_demand_feature_view`` alone at 1.5 s, and ``import feast`` took about 5 s of every
``salesml`` process (the CLI, each served worker, each test subprocess) on a busy 2-core machine. With
the instrumentation of Feast's own classes skipped it takes about 1.7 s there (``import feast, mlflow``
2.4 s from 6.7 s). What is lost is Feast checking the types of its own constructors' arguments at run
time; ours are built in one place (``features.definitions``) from validated configuration and checked
statically (``make lint``). typeguard keeps checking every other library that asks for it.
"""

from __future__ import annotations

import functools
from typing import Any

import typeguard


def _typechecked_except_feast(checked: Any) -> Any:
    @functools.wraps(checked)
    def typechecked(target: Any = None, **options: Any) -> Any:
        if target is None:  # ``@typechecked(...)`` with options: the decorator comes back for the target
            return functools.partial(typechecked, **options)
        if str(getattr(target, "__module__", "")).startswith("feast."):
            return target
        return checked(target, **options)

    typechecked._salesml_skips_feast = True  # type: ignore[attr-defined]  # applied once per process
    return typechecked


if not getattr(typeguard.typechecked, "_salesml_skips_feast", False):
    typeguard.typechecked = _typechecked_except_feast(typeguard.typechecked)
