"""The thin MLflow layer: tracking URI, runs, lineage, packaged models, registry aliases.

Importing this module configures nothing; ``configure`` is called by the commands.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from salesml.settings import REPO_ROOT, Settings

CHAMPION, CHALLENGER = "champion", "challenger"


def configure(settings: Settings):
    import mlflow

    settings.ensure_dirs()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow


def client(settings: Settings):
    """An MlflowClient bound to this settings' tracking server *and* registry.

    ``MlflowClient(tracking_uri=...)`` alone takes the registry from the process-wide
    ``mlflow.set_registry_uri`` (or MLFLOW_REGISTRY_URI), which may name another store.
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def use_experiment(settings: Settings, name: str) -> str:
    """Select (creating if needed) an experiment.

    Against a local store its artifacts live under SALESML_HOME (without an explicit location a
    SQLite-backed MLflow writes ./mlruns wherever the command happens to run); against a
    tracking server the server's artifact root holds them (``mlflow-artifacts:/``, proxied), so
    every client of a shared server sees them. Two workers creating it at once is fine.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=_artifact_location(settings, name))
        except MlflowException:  # created by another process in the meantime
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def experiment_id(settings: Settings, name: str) -> str:
    """``use_experiment`` through this settings' client, leaving the process-wide tracking URI and
    active experiment alone (for jobs that log with an ``MlflowClient``)."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=_artifact_location(settings, name))
    except MlflowException:  # created by another process in the meantime
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _artifact_location(settings: Settings, name: str) -> str | None:
    remote = settings.tracking_uri.startswith(("http://", "https://", "databricks"))
    return None if remote else (settings.root / "mlartifacts" / name).as_uri()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_training_set(frame: pd.DataFrame, name: str, feature_service: str, window: str) -> str:
    """``mlflow.log_input`` with the frame's digest, the Feast service and the time window."""
    import mlflow

    dataset = mlflow.data.from_pandas(frame, name=name, targets="label")
    mlflow.log_input(dataset, context="training", tags={"feast_feature_service": feature_service,
                                                         "time_window": window})
    mlflow.set_tags({"dataset_digest": dataset.digest, "feast_feature_service": feature_service,
                     "data_window": window})
    return dataset.digest


def _pyfunc_class():
    import mlflow.pyfunc

    class SalesModel(mlflow.pyfunc.PythonModel):
        """Probability of the positive outcome from a frame of Feast feature columns."""

        def __init__(self, model):
            self.model = model

        def predict(self, context, model_input: pd.DataFrame, params=None):
            return self.model.predict_proba(model_input)

    return SalesModel


def pip_requirements() -> list[str]:
    """Pinned from the running environment: skips MLflow's slow requirement inference."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in
            ("mlflow", "xgboost", "scikit-learn", "pandas", "numpy", "pydantic-settings", "duckdb")]


def log_model(model, example: pd.DataFrame, registered_name: str | None = None):
    """Log the scoring model as a pyfunc with signature and input example; optionally register."""
    import mlflow
    from mlflow.models import infer_signature

    example = example.head(5)
    # Features may be missing at serving time: declare every numeric input as double.
    example = example.astype({c: "float64" for c in example.columns
                              if pd.api.types.is_integer_dtype(example[c].dtype)})
    signature = infer_signature(example, model.predict_proba(example))
    return mlflow.pyfunc.log_model(
        name="model", python_model=_pyfunc_class()(model), signature=signature,
        input_example=example, registered_model_name=registered_name,
        pip_requirements=pip_requirements(),
        code_paths=[str(REPO_ROOT / "training"), str(REPO_ROOT / "salesml")],
    )


def set_alias_if_first(name: str, version: str | int) -> str:
    """The first model of a name becomes champion; later ones become challenger."""
    from mlflow import MlflowClient

    client = MlflowClient()
    aliases = client.get_registered_model(name).aliases
    alias = CHALLENGER if CHAMPION in aliases else CHAMPION
    client.set_registered_model_alias(name, alias, str(version))
    return alias


def save_figure(fig, name: str, local_dir: Path | None = None) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, f"plots/{name}.png")
    if local_dir is not None:
        local_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(local_dir / f"{name}.png", dpi=110)
    plt.close(fig)


REFERENCE_ARTIFACT = "reference/reference.parquet"


def log_reference(frame: pd.DataFrame) -> None:
    """Store the drift reference (training-window inputs and predictions) with the run, so every
    registered version carries the distribution it was trained on."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="reference")


def load_reference(name: str, version: str) -> pd.DataFrame:
    """The reference frame of a registered model version; ValueError when it has none."""
    import mlflow
    from mlflow import MlflowClient

    mv = MlflowClient().get_model_version(name, str(version))
    try:
        local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=REFERENCE_ARTIFACT)
    except Exception as exc:  # MLflow raises several kinds for a missing artifact
        raise ValueError(f"model {name} version {version} has no reference set ({REFERENCE_ARTIFACT} in run "
                         f"{mv.run_id}): retrain it to record one") from exc
    return pd.read_parquet(local)
