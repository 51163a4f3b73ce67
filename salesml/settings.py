"""One typed settings object, read from the environment (``SALESML_*``) or a ``.env`` file.

Nothing here touches the disk or the network at import time; ``Settings.ensure_dirs`` is
called by the commands that write.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = REPO_ROOT / "features"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALESML_", env_file=".env", extra="ignore")

    home: Path = Field(Path("var"), description="Working folder for data, stores, runs, reports.")
    feast_yaml: Path = Field(
        FEATURE_REPO / "feature_store.yaml",
        description="Feast config; features/feature_store.team.yaml switches to Redis + SQL registry.",
    )
    redis_url: str = "127.0.0.1:6379"
    feast_registry_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    feast_project: str = "salesml"
    mlflow_tracking_uri: str | None = None
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
    # Drift monitoring (``salesml drift check``).
    drift_share: float = Field(0.05, description="Dataset drift when at least this share of features drift.")
    drift_per_column: dict[str, dict] = Field(
        default_factory=dict,
        description='Per-feature test overrides, e.g. {"api_calls":{"method":"psi","threshold":0.2}}.',
    )
    drift_max_rows: int | None = Field(100_000, description="Rows sampled from larger windows (DKW-bounded error).")
    drift_max_auc_drop: float = Field(0.05, description="Performance drift when ROC-AUC falls by more than this.")
    drift_webhook_url: str | None = Field(None, description="POST drift alerts here (JSON) as well as to the log.")

    @cached_property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw"

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
            "SALESML_FEAST_REGISTRY_URL": self.feast_registry_url,
        }

    def export_feast_env(self) -> None:
        os.environ.update(self.feast_env())


def get_settings() -> Settings:
    return Settings()
