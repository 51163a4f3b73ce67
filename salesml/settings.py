"""One typed settings object, read from the environment (``SALESML_*``) or a ``.env`` file.

Nothing here touches the disk or the network at import time; ``Settings.ensure_dirs`` is
called by the commands that write.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = REPO_ROOT / "features"


class Settings(BaseSettings):
    # populate_by_name: a field with an environment alias (config_file) is still set by its name in code.
    model_config = SettingsConfigDict(env_prefix="SALESML_", env_file=".env", extra="ignore", populate_by_name=True)

    home: Path = Field(Path("var"), description="Working folder for data, stores, runs, reports.")
    profile: Literal["local", "team"] = Field(
        "local",
        description="local: SQLite/file stores in HOME, in-process training. team: Redis online store, "
                    "Feast SQL registry + MLflow server + Optuna study on PostgreSQL, xgboost.dask training. "
                    "Any field set explicitly wins over the profile's default.",
    )
    verbose: bool = Field(False, description="Show what libraries print unasked: MLflow's artifact download "
                          "bars and registration lines, Python warnings (pydantic deprecations in the service "
                          "log). `salesml --verbose` sets it for the command and the servers it starts.")
    feast_yaml: Path = Field(
        FEATURE_REPO / "feature_store.yaml",
        description="Feast config; features/feature_store.team.yaml switches to Redis + SQL registry.",
    )
    redis_url: str = "127.0.0.1:6379"
    feast_registry_url: str | None = Field(
        None, description="SQL registry database; team default POSTGRES_URL/<TEAM_DB_PREFIX>_feast.")
    feast_project: str = "salesml"
    mlflow_tracking_uri: str | None = Field(
        None, description="Tracking + registry server; local default sqlite HOME/mlflow.db, "
                          "team default http://MLFLOW_SERVER_HOST:MLFLOW_SERVER_PORT.")
    # Team profile: one PostgreSQL server, one database per component (they each keep an alembic table).
    postgres_url: str = Field("postgresql+psycopg://postgres@127.0.0.1:5432",
                              description="PostgreSQL server (no database) for the team profile's databases.")
    team_db_prefix: str = Field("salesml", description="Team databases are <prefix>_feast, _mlflow, _optuna.")
    mlflow_server_host: str = "127.0.0.1"
    mlflow_server_port: int = 5001
    mlflow_backend_store_uri: str | None = Field(
        None, description="Backend store of `salesml team up`'s MLflow server; default POSTGRES_URL/<prefix>_mlflow.")
    mlflow_artifacts_destination: str | None = Field(
        None, description="Artifact root the MLflow server proxies (local folder or s3://...); "
                          "default HOME/mlflow-server-artifacts.")
    optuna_storage: str | None = Field(
        None, description="Optuna study storage URL; local default sqlite HOME/optuna.db, "
                          "team default POSTGRES_URL/<prefix>_optuna.")
    train_engine: Literal["local", "dask"] = Field(
        "local", description="local: xgboost in this process; dask: xgboost.dask on a Dask cluster.")
    dask_scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786); none: a LocalCluster per training run.")
    dask_workers: int = Field(2, description="Workers of the LocalCluster when no scheduler is given.")
    train_threads: int = Field(
        1, ge=1, description="XGBoost threads per fit and per scoring run (``training.models.train_threads``); on "
                             "2 shared cores OpenMP spin-waiting made 2 threads far slower than 1.")
    feast_stock_join: bool = Field(
        False, description="Point-in-time joins through Feast's own (ibis) join instead of the DuckDB ASOF JOIN "
                           "of features/offline_store.py: the reference the fast path is tested against.")
    config_file: Path | None = Field(
        None, validation_alias=AliasChoices("SALESML_CONFIG", "SALESML_CONFIG_FILE"),
        description="Project configuration (custom columns, model overrides, export end), SALESML_CONFIG "
                    "(the documented name; SALESML_CONFIG_FILE works too); default: salesml.yaml in the export "
                    "folder, if there is one.")
    export_as_of: str | None = Field(
        None, description="When the export was taken (UTC date or timestamp); overrides export.as_of "
                          "of the project configuration. Outcome windows are judged complete against it.")
    chs_levels: dict[str, float] = Field(
        default_factory=lambda: {"green": 65.0, "yellow": 50.0, "orange": 35.0},
        description='CHS warning thresholds (score >= value), e.g. {"green":65,"yellow":50,"orange":35}.',
    )
    # Serving (``salesml serve``): keys, A/B split, prediction log, request limits.
    serve_host: str = "127.0.0.1"
    serve_port: int = 3000
    api_keys_file: Path | None = Field(
        None, description="API keys (hashed) and roles; default HOME/serving/api_keys.json."
    )
    challenger_share: dict[str, float] = Field(
        default_factory=dict,
        description='Share of entities routed to the challenger per model, e.g. {"chs":0.2}; none by default.',
    )
    experiment_salt: str = Field("ab-1", description="Salt of the A/B hash: change it to re-draw the split.")
    prediction_log: Path | None = Field(None, description="SQLite prediction log; default HOME/serving/predictions.db.")
    log_synchronous: str = Field("NORMAL", description="SQLite synchronous mode: NORMAL survives a process crash, "
                                                       "FULL also a power loss.")
    max_batch: int = Field(1000, description="Most ids or rows per scoring request.")
    max_body_bytes: int = Field(1_048_576, description="Largest request body accepted.")
    serve_workers: int = Field(2, ge=1, description="Worker processes of the scoring service (each loads the models).")
    serve_match_nice: int = Field(10, ge=0, le=19, description="CPU niceness of the /match process: a 1,000-lead "
                                                               "match then yields the cores to /health and /intent.")
    serve_threads: int = Field(4, ge=1, description="Requests one worker scores at once (a slow /match or a push "
                                                     "does not hold up a /health call).")
    serve_max_concurrency: int = Field(64, ge=1, description="Requests in flight at once; more are answered 429.")
    serve_max_connections: int = Field(256, ge=1, description="Open connections per worker; more are refused.")
    serve_header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request's headers "
                                                                "(from connecting, or between keep-alive requests).")
    serve_body_timeout: float = Field(10.0, gt=0, description="Seconds a client may pause while sending a body "
                                                              "(answered 408).")
    # From score to action (``salesml score``, ``salesml warnings``): warnings, playbooks, interventions.
    playbooks_file: Path | None = Field(
        None, description="Playbooks per level (YAML); default the four shipped in salesml/specs/playbooks.yaml.")
    warning_due_hours: float = Field(4.0, gt=0, description="A warning is due this many hours after it is raised; "
                                                            "past that without an intervention it escalates.")
    warning_owner_fallback: str = Field("csm-team", description="Owner of a warning whose account has no CSM "
                                                                "in the export.")
    warning_webhook_url: str | None = Field(None, description="POST each warning and escalation here (JSON); "
                                                              "the inbox (GET /warnings) keeps them either way.")
    warning_webhook_attempts: int = Field(5, ge=1, description="Delivery attempts per webhook event "
                                                               "(exponential back-off between them).")
    warning_webhook_backoff: float = Field(1.0, ge=0, description="Seconds before the second attempt; doubles "
                                                                  "after each failure.")
    playbook_holdout_share: float = Field(0.1, ge=0, lt=1, description="Share of warnings raised without a "
                                          "playbook prompt, so each playbook's effect can be measured.")
    playbook_fuse: int = Field(5, ge=1, description="A playbook marked 'not applicable' this many times in a row "
                                                    "is frozen (no longer offered) and sent for review.")
    playbook_marks_per_key_hour: int = Field(20, ge=1, description="At most this many 'not applicable' marks "
                                                                 "per API key in any hour (429 beyond): one key "
                                                                 "cannot flood the fuse.")
    # Drift monitoring (``salesml drift check``).
    drift_alpha: float = Field(0.05, gt=0, lt=1, description="False-alarm level of a drift check: on drift-free "
                               "traffic at most this share of checks flag a feature or the prediction "
                               "(p-value tests, Bonferroni over the columns).")
    drift_share: float = Field(0.05, description="Dataset drift when at least this share of features drift.")
    drift_per_column: dict[str, dict] = Field(
        default_factory=dict,
        description='Per-feature test overrides, e.g. {"api_calls":{"method":"psi","threshold":0.2}}.',
    )
    drift_max_rows: int | None = Field(100_000, description="Larger windows are summarised per column by this many "
                                       "quantiles (empirical CDF within 1/n of the window's).")
    drift_max_auc_drop: float = Field(0.05, description="Performance drift when ROC-AUC falls by more than this.")
    drift_webhook_url: str | None = Field(None, description="POST drift alerts here (JSON) as well as to the log.")
    # Drift yardstick: a feature drifts only if further from the reference than the reference's own periods are.
    drift_period_days: float = Field(91.0, gt=0, description="Length of a reference period (a quarter: one season).")
    drift_period_min_rows: int = Field(30, ge=2, description="Rows a reference period needs to count in the yardstick.")

    @model_validator(mode="after")
    def _profile_defaults(self) -> "Settings":
        """Fill what the profile decides, leaving every field that was set explicitly alone."""
        if self.profile != "team":
            return self
        explicit = self.model_fields_set
        if "feast_yaml" not in explicit:
            self.feast_yaml = FEATURE_REPO / "feature_store.team.yaml"
        if "train_engine" not in explicit:
            self.train_engine = "dask"
        if self.mlflow_tracking_uri is None:
            self.mlflow_tracking_uri = f"http://{self.mlflow_server_host}:{self.mlflow_server_port}"
        if self.optuna_storage is None:
            self.optuna_storage = self.team_database_url("optuna")
        return self

    def team_database_url(self, component: str) -> str:
        return f"{self.postgres_url.rstrip('/')}/{self.team_db_prefix}_{component}"

    @property
    def feast_registry(self) -> str:
        return self.feast_registry_url or self.team_database_url("feast")

    @property
    def mlflow_backend(self) -> str:
        return self.mlflow_backend_store_uri or self.team_database_url("mlflow")

    @property
    def mlflow_artifacts(self) -> str:
        return self.mlflow_artifacts_destination or str(self.root / "mlflow-server-artifacts")

    @property
    def optuna_storage_url(self) -> str:
        return self.optuna_storage or f"sqlite:///{self.root / 'optuna.db'}"

    @cached_property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def state_path(self) -> Path:
        """What earlier commands recorded for later ones (the export folder ``features build`` read)."""
        return self.root / "state.json"

    @property
    def export_dir(self) -> Path:
        """The export folder later commands read: the one ``features build --raw`` recorded, else raw_dir."""
        import json

        try:
            return Path(json.loads(self.state_path.read_text())["export_dir"])
        except (OSError, ValueError, KeyError):
            return self.raw_dir

    def record_export_dir(self, directory: Path) -> None:
        import json

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"export_dir": str(Path(directory).resolve())}))
        tmp.replace(self.state_path)

    def project(self, export_dir: Path | None = None):
        """The project configuration (``salesml.project.ProjectConfig``) of the export folder."""
        from salesml.project import config_path, load_project, parse_as_of

        cfg = load_project(config_path(export_dir or self.export_dir, self.config_file))
        if self.export_as_of:
            cfg.export.as_of = parse_as_of(self.export_as_of)
        return cfg

    def spec(self, name: str, export_dir: Path | None = None):
        """The model spec of ``name`` with this project's overrides."""
        from salesml.modelspec import load_spec

        return load_spec(name, self.project(export_dir))

    @property
    def feature_data_dir(self) -> Path:
        return self.root / "data" / "features"

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def serving_dir(self) -> Path:
        return self.root / "serving"

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.serving_dir / "api_keys.json"

    @property
    def prediction_log_path(self) -> Path:
        return self.prediction_log or self.serving_dir / "predictions.db"

    @property
    def chs_weights_dir(self) -> Path:
        return self.root / "chs_weights"

    @property
    def scores_dir(self) -> Path:
        """Dated score tables of ``salesml score`` (one file per model and date)."""
        return self.root / "data" / "scores"

    @property
    def actions_dir(self) -> Path:
        """Warnings, their deliveries, interventions and playbook state."""
        return self.root / "actions"

    def ensure_dirs(self) -> None:
        for d in (self.raw_dir, self.feature_data_dir, self.feast_dir, self.reports_dir):
            d.mkdir(parents=True, exist_ok=True)

    def feast_env(self) -> dict[str, str]:
        """Values substituted into feature_store.yaml (Feast expands ``${VAR}``)."""
        return {
            "SALESML_FEAST_PROJECT": self.feast_project,
            "SALESML_FEAST_DIR": str(self.feast_dir),
            "SALESML_FEATURE_DATA": str(self.feature_data_dir),
            "SALESML_REDIS_URL": self.redis_url,
            "SALESML_FEAST_REGISTRY_URL": self.feast_registry,
        }

    @contextmanager
    def feast_environment(self) -> Iterator[None]:
        """Set ``feast_env`` while Feast reads feature_store.yaml, then restore the environment.

        Not left behind on purpose: the names double as SALESML_* settings, so a leftover value
        (another store's registry URL, say) would silently override the next ``Settings()`` made
        in this process or in a subprocess started from it.
        """
        saved = {k: os.environ.get(k) for k in self.feast_env()}
        os.environ.update(self.feast_env())
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def get_settings() -> Settings:
    return Settings()
