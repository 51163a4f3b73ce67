"""The team profile's services: the databases on PostgreSQL, the MLflow tracking server, Redis.

``salesml team up`` (``make team-up``) checks that PostgreSQL and Redis answer, creates the
databases the profile points at (Feast SQL registry, MLflow backend store, Optuna studies; one
database each, as MLflow and Optuna both keep an ``alembic_version`` table) and starts
``mlflow server`` on them in the background; ``salesml team down`` stops it. Under the local
profile there is nothing to start and both commands say so. Dask needs nothing here: training
starts a ``LocalCluster`` per run unless ``SALESML_DASK_SCHEDULER`` names a running scheduler.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from salesml.processes import (
    ProcessExited,
    answers,
    kill_process_group,
    mlflow_bin,
    mlflow_server_env,
    wait_until_ready,
)
from salesml.settings import Settings


class ServiceError(RuntimeError):
    """A service of the team profile is unreachable or would not start."""


def _sync_url(url: str) -> str:
    """A libpq URL (``postgresql://``) from a SQLAlchemy one (``postgresql+psycopg://``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_urls(settings: Settings) -> dict[str, str]:
    """The PostgreSQL databases this configuration uses, by component."""
    urls = {"feast registry": settings.feast_registry if _feast_uses_sql(settings) else None,
            "mlflow backend": settings.mlflow_backend if uses_mlflow_server(settings) else None,
            "optuna storage": settings.optuna_storage_url}
    return {k: v for k, v in urls.items() if v and v.startswith("postgresql")}


def _feast_uses_sql(settings: Settings) -> bool:
    return "registry_type: sql" in Path(settings.feast_yaml).read_text()


def uses_mlflow_server(settings: Settings) -> bool:
    """True when the tracking URI is the server that ``salesml team up`` manages."""
    return settings.tracking_uri.rstrip("/") == f"http://{settings.mlflow_server_host}:{settings.mlflow_server_port}"


def _admin_url(url: str) -> str:
    """The libpq URL of the ``postgres`` maintenance database on the server of ``url``."""
    from sqlalchemy.engine import make_url

    return _sync_url(str(make_url(url).set(database="postgres")))


def create_database(url: str) -> bool:
    """Create the database a SQLAlchemy URL names unless it exists; True if it was created."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(_admin_url(url), autocommit=True, connect_timeout=5) as con:
        if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        con.execute(f'CREATE DATABASE "{name}"')
        return True


def drop_database(url: str) -> None:
    """Drop the database a SQLAlchemy URL names, closing its open sessions (throwaway databases)."""
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(_admin_url(url), autocommit=True, connect_timeout=5) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def ensure_databases(settings: Settings) -> list[str]:
    """Create each database of ``postgres_urls`` that does not exist yet; the names created."""
    import psycopg
    from sqlalchemy.engine import make_url

    created = []
    for component, url in postgres_urls(settings).items():
        try:
            if create_database(url):
                created.append(str(make_url(url).database))
        except psycopg.OperationalError as exc:
            raise ServiceError(f"PostgreSQL for the {component} ({make_url(url).render_as_string()}) "
                               f"is not reachable: {str(exc).strip()}") from None
    return created


def _redis_address(redis_url: str) -> tuple[str, int]:
    """(host, port) of a Feast Redis connection string (``host:port[,option=value...]``)."""
    host, _, port = redis_url.split(",")[0].rpartition(":")
    return host or "127.0.0.1", int(port or 6379)


def check_redis(settings: Settings) -> None:
    """Fail with a clear message when the team Feast store's Redis does not answer."""
    if "type: redis" not in Path(settings.feast_yaml).read_text():
        return
    try:
        with socket.create_connection(_redis_address(settings.redis_url), timeout=3):
            return
    except OSError as exc:
        raise ServiceError(f"Redis (the Feast online store) is not reachable at {settings.redis_url}: {exc}") from None


def delete_feast_keys(redis_url: str, project: str) -> int:
    """Delete the Redis keys of one Feast project (its name is part of every key); how many."""
    import redis

    host, port = _redis_address(redis_url)
    client = redis.Redis(host=host, port=port)
    keys = [k for k in client.scan_iter(count=1000) if project.encode() in k]
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i:i + 10_000])
    return len(keys)


def _dirs(settings: Settings) -> Path:
    d = settings.root / "team"
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class ServerState:
    url: str
    pid: int | None
    log: Path
    started: bool


def start_mlflow_server(settings: Settings, timeout: float = 180.0) -> ServerState:
    """Start ``mlflow server`` (PostgreSQL backend, proxied artifact root) detached; wait for /health."""
    import subprocess

    url = f"http://{settings.mlflow_server_host}:{settings.mlflow_server_port}"
    folder = _dirs(settings)
    pid_path, log_path = folder / "mlflow-server.pid", folder / "mlflow-server.log"
    if answers(f"{url}/health"):
        pid = int(pid_path.read_text()) if pid_path.exists() else None
        return ServerState(url, pid, log_path, started=False)
    artifacts = settings.mlflow_artifacts
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    cmd = [mlflow_bin(), "server", "--backend-store-uri", settings.mlflow_backend,
           "--artifacts-destination", artifacts, "--serve-artifacts",
           "--host", settings.mlflow_server_host, "--port", str(settings.mlflow_server_port), "--workers", "2"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=mlflow_server_env())
    pid_path.write_text(str(proc.pid))
    try:
        if wait_until_ready(proc, f"{url}/health", timeout):
            return ServerState(url, proc.pid, log_path, started=True)
    except ProcessExited as exc:
        pid_path.unlink(missing_ok=True)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise ServiceError(f"mlflow server exited with {exc.returncode}; log {log_path}:\n{tail}") from None
    stop_mlflow_server(settings)
    raise ServiceError(f"mlflow server did not answer {url}/health within {timeout:.0f} s; log {log_path}")


def stop_mlflow_server(settings: Settings) -> bool:
    pid_path = settings.root / "team" / "mlflow-server.pid"
    if not pid_path.exists():
        return False
    pid = int(pid_path.read_text())
    pid_path.unlink()
    return kill_process_group(pid)


def up(settings: Settings, show=print) -> None:
    """Everything the configured profile needs, started or checked; idempotent."""
    if settings.profile == "local" and not postgres_urls(settings) and not uses_mlflow_server(settings):
        show("profile local: SQLite/file stores under SALESML_HOME, nothing to start")
        return
    check_redis(settings)
    created = ensure_databases(settings)
    for name in created:
        show(f"created PostgreSQL database {name}")
    for component, url in postgres_urls(settings).items():
        show(f"{component}: {url}")
    if uses_mlflow_server(settings):
        state = start_mlflow_server(settings)
        verb = "started" if state.started else "already running"
        show(f"mlflow server {verb} at {state.url} (backend {settings.mlflow_backend}, "
             f"artifacts {settings.mlflow_artifacts}; log {state.log})")
    elif settings.tracking_uri.startswith("http"):
        show(f"MLflow tracking server (not managed here): {settings.tracking_uri}")
    engine = (f"xgboost.dask on {settings.dask_scheduler}" if settings.dask_scheduler
              else f"xgboost.dask on a LocalCluster of {settings.dask_workers} workers per run"
              ) if settings.train_engine == "dask" else "xgboost in-process"
    show(f"training engine: {engine}; Feast config {Path(settings.feast_yaml).name}")


def down(settings: Settings, show=print) -> None:
    show("mlflow server stopped" if stop_mlflow_server(settings) else "no mlflow server was running")
