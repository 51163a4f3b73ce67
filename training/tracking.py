"""The thin MLflow layer: tracking URI, experiments (tagged for review), runs, lineage, packaged models.

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

    library_output(settings)
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

    library_output(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def library_output(settings: Settings) -> None:
    """What MLflow and Python warnings may print in this process: everything with ``settings.verbose``,
    else no artifact progress bars ("Downloading artifacts", read at each download) and Python warnings
    routed to the ``py.warnings`` logger at ERROR level, so that a library resetting the warning filters
    when imported (Feast's ``simplefilter("once", DeprecationWarning)``) does not bring them back
    (pydantic deprecations in the service log). Called by ``configure`` and ``client``, which every
    process that uses MLflow goes through (commands, the scoring service's workers). MLflow's
    registration notices: ``register_model``."""
    import logging
    import os

    loud = settings.verbose
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "true" if loud else "false"
    logging.captureWarnings(not loud)
    logging.getLogger("py.warnings").setLevel(logging.NOTSET if loud else logging.ERROR)


def register_model(settings: Settings, model_uri: str, name: str) -> int | str:
    """Register ``model_uri`` (``models:/<model id>``) as a new version of ``name`` in this settings'
    registry; the new version. MLflow prints its notices ("Successfully registered model 'intent'.",
    "Created version '1' of model 'intent'.") outside logging, on a stream of its own: they are printed
    with ``settings.verbose`` only (the stream is switched for the call alone: MLflow switches it back on
    by itself in places, so a process-wide switch does not hold)."""
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    mlflow = configure(settings)
    held = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = settings.verbose
    try:
        return mlflow.register_model(model_uri, name).version  # as the registry gives it (the store: an int)
    finally:
        MLFLOW_LOGGING_STREAM.enabled = held


# The MLflow UI's experiment type (the tag its type selector writes): "custom_model_development"
# (machine learning) or "genai_development". MLflow 3.17's UI chooses an experiment's landing page
# from its workflow switch (URL ``workflowType``, else the browser's saved choice, else GenAI), so
# ``review_path`` links carry the switch as well.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# A saved view of the runs table (the UI's "Views" menu): an experiment tag
# ``mlflow.sharedViewState.<id>`` holding {name, createdAt, updatedAt, state}, opened by
# ``?viewStateShareKey=<id>``. It shows the metrics a reviewer compares, first, and the description.
# Two views: newest runs first (the landing page), and best test ROC-AUC first (``salesml experiment
# screenshot``). The order lives in the view: an ``orderByKey`` in the URL beside ``viewStateShareKey``
# makes MLflow 3.17 drop the view's columns and show its defaults (no metric column).
REVIEW_VIEW = "salesml-training"
BEST_VIEW = "salesml-training-best"
REVIEW_METRICS = ("test_roc_auc", "baseline_logistic_test_roc_auc", "oracle_test_roc_auc", "test_ece")
_VIEWS = {  # id -> (name in the Views menu, the metric ordering it, best first; None: newest runs first)
    REVIEW_VIEW: ("Training runs (salesml)", None),
    BEST_VIEW: ("Best test ROC-AUC first (salesml)", "test_roc_auc"),
}
_VIEW_TAG = f"mlflow.sharedViewState.{REVIEW_VIEW}"
_VIEW_VERSION = 1  # bump when the views' state changes: experiments holding an older one get the new one


def _review_view_state(order_by_metric: str | None = None) -> dict:
    columns = [*(f"metrics.`{m}`" for m in REVIEW_METRICS),
               *(f"attributes.`{a}`" for a in ("Description", "Models", "Dataset"))]
    order = ("attributes.start_time", False) if order_by_metric is None else (f"metrics.`{order_by_metric}`", False)
    # Ordered first: the table renders only the columns that fit the window.
    return {"selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", "attributes.`Created`", *columns],
            "orderByKey": order[0], "orderByAsc": order[1]}


def experiment_tags(now_ms: int | None = None) -> dict[str, str]:
    """The tags every experiment of the project carries: its kind (model training) and the review views."""
    import json
    import time

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    tags = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
    for view_id, (name, metric) in _VIEWS.items():
        view = {"name": name, "createdAt": now_ms, "updatedAt": now_ms,
                "state": json.dumps(_review_view_state(metric)), "salesml_view_version": _VIEW_VERSION}
        tags[f"mlflow.sharedViewState.{view_id}"] = json.dumps(view)
    return tags


def _stale_tags(tags: dict[str, str]) -> dict[str, str]:
    """The project's tags an existing experiment lacks or holds in an older form. A view a user saved
    over ours (it no longer carries our version mark) is theirs and stays."""
    import json

    want = experiment_tags()
    stale = {k: v for k, v in want.items() if k not in tags}
    if tags.get(EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND) != MODEL_TRAINING_KIND:
        stale[EXPERIMENT_KIND_TAG] = want[EXPERIMENT_KIND_TAG]
    for view_tag in (f"mlflow.sharedViewState.{v}" for v in _VIEWS):
        if view_tag not in tags:
            continue
        try:
            held = json.loads(tags[view_tag]).get("salesml_view_version")
        except (ValueError, AttributeError):
            held = None
        if isinstance(held, int) and held < _VIEW_VERSION:
            stale[view_tag] = want[view_tag]
    return stale


def review_path(experiment_id: str, order_by_metric: str | None = None) -> str | None:
    """The page a reviewer should land on, relative to the MLflow UI's base URL: the experiment's
    training runs (machine-learning workflow) in a review view, metrics first; newest first, or best
    ``order_by_metric`` first where a view orders by it (None for a metric no view orders by)."""
    view = next((v for v, (_, metric) in _VIEWS.items() if metric == order_by_metric), None)
    if view is None:
        return None
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={view}"


def _ensure_experiment(settings: Settings, name: str) -> str:
    """Get or create an experiment with the project's tags: the one way the project obtains one."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, artifact_location=_artifact_location(settings, name),
                                       tags=experiment_tags())
        except MlflowException:  # created by another process in the meantime
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in _stale_tags(exp.tags).items():
        c.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def use_experiment(settings: Settings, name: str) -> str:
    """Select (creating if needed) an experiment, tagged as model training (``experiment_tags``).

    Against a local store its artifacts live under SALESML_HOME (without an explicit location a
    SQLite-backed MLflow writes ./mlruns wherever the command happens to run); against a
    tracking server the server's artifact root holds them (``mlflow-artifacts:/``, proxied), so
    every client of a shared server sees them. Two workers creating it at once is fine.
    """
    import mlflow

    exp_id = _ensure_experiment(settings, name)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def experiment_id(settings: Settings, name: str) -> str:
    """``use_experiment`` through this settings' client, leaving the process-wide tracking URI and
    active experiment alone (for jobs that log with an ``MlflowClient``)."""
    return _ensure_experiment(settings, name)


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


def training_dataset(frame: pd.DataFrame, name: str | None = None):
    """The training set as an MLflow dataset (its ``digest`` is what runs record and tuning studies check)."""
    from mlflow.data.pandas_dataset import from_pandas

    from training.data import LABEL

    return from_pandas(frame, name=name, targets=LABEL)


def training_set_digest(frame: pd.DataFrame) -> str:
    return training_dataset(frame).digest


def log_training_set(frame: pd.DataFrame, name: str, feature_service: str, window: str) -> str:
    """``mlflow.log_input`` with the frame's digest, the Feast service and the time window."""
    import mlflow

    dataset = training_dataset(frame, name)
    mlflow.log_input(dataset, context="training", tags={"feast_feature_service": feature_service,
                                                         "time_window": window})
    mlflow.set_tags({"dataset_digest": dataset.digest, "feast_feature_service": feature_service,
                     "data_window": window})
    return dataset.digest


# What the logged model's code imports (training/pyfunc_model.py and the modules of ``model_code``),
# fitting and explaining included; tests/training/test_portable.py reads their imports to check it.
MODEL_PACKAGES = ("mlflow", "xgboost", "scikit-learn", "scipy", "skops", "pandas", "numpy")


def model_code() -> list[str]:
    """The ``training`` modules logged with a model, as file names: training/portable.py and the
    modules it imports when imported, transitively, read from their source. Imports inside functions
    (fitting, settings, the Feast layer map) are not followed: scoring does not run them."""
    import ast

    here = Path(__file__).resolve().parent

    def imported(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
                isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            return []
        return [m for child in ast.iter_child_nodes(node) for m in imported(child)]

    found, todo = {"__init__.py", "portable.py"}, ["portable.py"]
    while todo:
        tree = ast.parse((here / todo.pop()).read_text())
        for parts in (m.split(".") for node in tree.body for m in imported(node)):
            name = f"{parts[1]}.py" if parts[0] == "training" and len(parts) > 1 else None
            if name and name not in found and (here / name).exists():
                found.add(name)
                todo.append(name)
    return sorted(found)


def pip_requirements() -> list[str]:
    """The packages the logged model's code imports (MODEL_PACKAGES; not feast, bentoml & co.), pinned to
    this environment's versions, the lock file's where it was installed with ``make install``. Given
    explicitly, this also skips MLflow's slow requirement inference."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in MODEL_PACKAGES]


def log_model(model, example: pd.DataFrame, registered_name: str | None = None):
    """Log the scoring model as an MLflow model from code (``training/pyfunc_model.py``) with its
    portable files (``training.portable``), its code (``model_code``), requirements, signature and input
    example; optionally register it. It loads with ``mlflow.pyfunc.load_model`` wherever its
    requirements are installed, without this repository."""
    import os
    import shutil
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from training import portable

    example = example.head(5)
    # Features may be missing at serving time: declare every numeric input as double.
    example = example.astype({c: "float64" for c in example.columns
                              if pd.api.types.is_integer_dtype(example[c].dtype)})
    signature = infer_signature(example, model.predict_proba(example))
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        files = portable.save(model, Path(tmp) / portable.ARTIFACT)
        code = Path(tmp) / "code" / "training"  # the package ``training``: its modules import each other by that name
        code.mkdir(parents=True)
        for module in model_code():
            shutil.copy2(here / module, code / module)
        # MLflow would otherwise copy the uv.lock of the working directory (this repository's, with feast,
        # bentoml & co.) into the model, for restoring its environment with `uv sync`.
        held = os.environ.get("MLFLOW_UV_AUTO_DETECT")
        os.environ["MLFLOW_UV_AUTO_DETECT"] = "false"
        try:
            return mlflow.pyfunc.log_model(
                name="model", python_model=str(here / "pyfunc_model.py"), artifacts={portable.ARTIFACT: str(files)},
                signature=signature, input_example=example, registered_model_name=registered_name,
                pip_requirements=pip_requirements(), code_paths=[str(code)],
            )
        finally:
            if held is None:
                os.environ.pop("MLFLOW_UV_AUTO_DETECT", None)
            else:
                os.environ["MLFLOW_UV_AUTO_DETECT"] = held


def load_scoring_model(model_uri: str):
    """The project's scoring object (``ScoringModel``, ``LinearScoringModel`` or ``HealthModel``) of a
    logged model: ``models:/name/version``, ``models:/name@alias``, ``runs:/...`` or a local MLflow model
    folder (a Bento's). Rebuilt from the model's portable files by ``training.portable.load``, the
    function the logged model itself loads with, so serving scores exactly what the registry holds.
    ValueError for a model logged before models were portable (a pickled Python object)."""
    import tempfile

    import mlflow
    from mlflow.models import Model

    from training import portable

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(model_uri)
        if not local.is_dir():
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        conf = Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
        held = (conf.get("artifacts") or {}).get(portable.ARTIFACT)
        if held is None:
            raise ValueError(f"{model_uri} has no portable scoring files (it was logged as a pickled Python "
                             "object by an older version): train it again")
        return portable.load(local / held["path"])


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


def load_reference(name: str, version: str, settings: Settings) -> pd.DataFrame:
    """The reference frame of a registered model version; ValueError when it has none. Read through
    ``client(settings)``: the store ``settings`` names, whatever the process-wide tracking URI says."""
    import tempfile

    c = client(settings)
    mv = c.get_model_version(name, str(version))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = c.download_artifacts(mv.run_id, REFERENCE_ARTIFACT, tmp)
        except Exception as exc:  # MLflow raises several kinds for a missing artifact
            raise ValueError(f"model {name} version {version} has no reference set ({REFERENCE_ARTIFACT} in run "
                             f"{mv.run_id}): retrain it to record one") from exc
        return pd.read_parquet(local)
