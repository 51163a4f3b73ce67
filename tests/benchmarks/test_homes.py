"""Benchmarks work in homes of their own: a bench run leaves the demo's stores under $SALESML_HOME as
they were and adds only its report (and its own home under bench/)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from salesml.settings import Settings

# What `make demo` leaves under $SALESML_HOME, stood in for by files of known content and age.
DEMO_FILES = ("data/raw/accounts.parquet", "data/features/behaviour.parquet", "data/features/lead_activity.parquet",
              "feast/registry.db", "feast/online_store.db", "mlflow.db", "optuna.db", "state.json",
              "serving/api_keys.json", "serving/predictions.db", "chs_weights/current.json")
OLD = 1_600_000_000  # 2020-09-13: any write would move the mtime


def _demo_home(root: Path) -> Path:
    for rel in DEMO_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"the demo's {rel}".encode())
        os.utime(path, (OLD, OLD))
    return root


def _outside_bench(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` but the benchmarks' homes and the reports: content hash, mtime."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()
            and p.relative_to(root).parts[0] not in ("bench", "reports")}


def test_bench_home_keeps_every_store_in_its_folder(tmp_path, monkeypatch):
    """Even when the environment points the demo at shared stores (team profile, an MLflow server,
    a key file, a webhook), a bench home keeps all of its own under bench/<name>, locally."""
    from benchmarks.home import bench_home
    from serving.runner import server_env

    for k, v in {"PROFILE": "team", "MLFLOW_TRACKING_URI": "sqlite:////elsewhere/mlflow.db",
                 "OPTUNA_STORAGE": "sqlite:////elsewhere/optuna.db", "API_KEYS_FILE": "/elsewhere/keys.json",
                 "PREDICTION_LOG": "/elsewhere/predictions.db", "WARNING_WEBHOOK_URL": "http://hooks.example/w",
                 "SERVE_THREADS": "3"}.items():
        monkeypatch.setenv(f"SALESML_{k}", v)
    demo = Settings(home=tmp_path)
    assert demo.profile == "team" and demo.tracking_uri.startswith("sqlite:////elsewhere")
    home = bench_home(demo, "serving")
    mine = tmp_path.resolve() / "bench" / "serving"
    assert home.root == mine and home.profile == "local"
    for path in (home.raw_dir, home.feature_data_dir, home.feast_dir, home.serving_dir, home.api_keys_path,
                 home.prediction_log_path, home.scores_dir, home.actions_dir, home.chs_weights_dir):
        assert Path(path).is_relative_to(mine), path
    assert home.tracking_uri == f"sqlite:///{mine / 'mlflow.db'}"
    assert home.optuna_storage_url == f"sqlite:///{mine / 'optuna.db'}"
    assert "type: sqlite" in home.feast_yaml.read_text()  # the online store is a file in its feast/
    assert home.warning_webhook_url is None and home.serve_threads == 3  # no messages; limits kept
    # `salesml serve` started on the bench home (serving and scoring benches) runs with it too
    env = server_env(home)
    for k in [k for k in os.environ if k.startswith("SALESML_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("SALESML_"):
            monkeypatch.setenv(k, v)
    served = Settings()
    assert (served.root, served.profile, served.tracking_uri, served.api_keys_path, served.warning_webhook_url) == (
        home.root, "local", home.tracking_uri, home.api_keys_path, None)


@pytest.mark.slow
@pytest.mark.integration
def test_features_bench_leaves_the_demo_untouched(tmp_path):
    """The feature-store bench (simulate, build, apply, materialize, joins, online reads) at a tiny
    size: the demo's files are byte for byte and mtime for mtime as they were; the report is new."""
    from benchmarks import features

    root = _demo_home(tmp_path / "home")
    before = _outside_bench(root)
    report = features.run(Settings(home=root), accounts=30, weeks=16, label_rows=200, log=lambda _: None,
                          redis=False)
    assert _outside_bench(root) == before
    assert report == root.resolve() / "reports" / "bench_features.md"
    assert "Point-in-time training set" in report.read_text()
    assert (root / "bench" / "features" / "feast" / "online_store.db").exists()
    assert sorted(p.name for p in (root / "reports").iterdir()) == ["bench_features.md"]
