"""The models a Bento carries, so that a Bento scores with the same versions wherever it runs.

``make bento`` imports each model's registry champion into the BentoML model store
(``import_champions``, as ``salesml-<model>``, labelled with its registry name and version);
bentofile.yaml lists ``salesml-<model>:latest``, which ``bentoml build`` resolves to the version
just imported and pins in the Bento. A service started from that Bento serves those pinned
versions (``pinned``); started from the source tree (``salesml serve``) it loads the registry's
aliases, as ``serving.core.ScoringCore.load`` does without ``pinned``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from salesml.modelspec import MODEL_NAMES
from salesml.settings import Settings

PREFIX = "salesml-"  # BentoML model names: salesml-intent, salesml-lead_match, salesml-chs
MLFLOW_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model keeps the MLflow model in a stored model
NAME_LABEL, VERSION_LABEL = "registry_model", "registry_version"


@dataclass(frozen=True)
class Pinned:
    name: str  # the registry's model name
    version: str  # its registry version, recorded with every prediction as when loaded by alias
    path: Path  # the MLflow model folder in the BentoML model store


def bento_model_name(model: str) -> str:
    return f"{PREFIX}{model}"


def import_champions(settings: Settings, models: tuple[str, ...] = MODEL_NAMES) -> list[str]:
    """Import each model's champion into the BentoML model store (``bentoml.mlflow.import_model``); the
    stored models' tags. ValueError naming the models without a champion: a Bento lists all three."""
    import bentoml
    from mlflow.exceptions import MlflowException

    from training import tracking

    tracking.configure(settings)
    client = tracking.client(settings)
    champions, missing = {}, []
    for name in models:
        try:
            champions[name] = client.get_model_version_by_alias(name, tracking.CHAMPION)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            missing.append(name)
    if missing:
        raise ValueError(f"no champion in {settings.tracking_uri} for {', '.join(missing)}: the Bento carries "
                         f"every model; train them first (salesml train {missing[0]})")
    tags = []
    for name, mv in champions.items():
        stored = bentoml.mlflow.import_model(
            bento_model_name(name), f"models:/{name}/{mv.version}",
            labels={NAME_LABEL: name, VERSION_LABEL: str(mv.version), "registry_alias": tracking.CHAMPION},
            metadata={"run_id": mv.run_id, "tracking_uri": settings.tracking_uri})
        tags.append(str(stored.tag))
    return tags


def pinned(bento) -> dict[str, Pinned] | None:
    """The models the Bento a service was loaded from carries, by registry name (the service's
    ``bento``: ``SalesScoring.bento``); None outside a Bento (``bento`` is None)."""
    if bento is None:
        return None
    import bentoml

    out = {}
    for info in bento.info.all_models:
        if not info.tag.name.startswith(PREFIX):
            continue
        stored = bentoml.models.get(info.tag)
        labels = stored.info.labels
        out[labels[NAME_LABEL]] = Pinned(labels[NAME_LABEL], labels[VERSION_LABEL], Path(stored.path_of(MLFLOW_FOLDER)))
    return out
