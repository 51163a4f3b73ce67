"""``salesml serve | serve-demo | serve-stop | bento-models`` (root commands, merged by ``salesml.cli``) and
``salesml keys``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from salesml.cli.base import console, fail, out
from salesml.cli.base import settings as _settings

app = typer.Typer()
keys_app = typer.Typer(help="API keys for the scoring service (stored hashed).", no_args_is_help=True)


@app.command("serve")
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default SALESML_SERVE_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default SALESML_SERVE_PORT, 3000).")] = None,
) -> None:
    """Start the BentoML scoring service (intent, match, health, events, outcomes)."""
    import os
    import sys

    from salesml.settings import REPO_ROOT
    from serving.auth import KeyFileError, KeyStore

    settings = _settings()
    settings.ensure_dirs()
    try:  # a corrupt key file would refuse every call: say so now, not per request
        KeyStore(settings.api_keys_path).check()
    except KeyFileError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True, markup=True)
        raise typer.Exit(code=2) from None
    env = {**os.environ, "SALESML_HOME": str(settings.root),
           **({"SALESML_EXPORT_AS_OF": settings.export_as_of} if settings.export_as_of else {})}
    args = [sys.executable, "-m", "bentoml", "serve", "serving.service:SalesScoring",
            "--host", host or settings.serve_host, "--port", str(port or settings.serve_port),
            "--working-dir", str(REPO_ROOT)]
    console.print(f"serving on http://{host or settings.serve_host}:{port or settings.serve_port} "
                  f"(OpenAPI at /docs.json); keys in {settings.api_keys_path}")
    os.execve(sys.executable, args, env)


@app.command("serve-demo")
def serve_demo(port: Annotated[Optional[int], typer.Option(help="Port (default SALESML_SERVE_PORT).")] = None) -> None:
    """Start the service in the background, create a demo key, call every endpoint once."""
    from serving.auth import KeyStore
    from serving.runner import sample_calls, start_background, stop

    settings = _settings()
    stop(settings)  # a server left from an earlier demo
    console.print("starting the scoring service (loads 3 models from the MLflow registry) ...")
    try:
        pid, port = start_background(settings, port)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from None
    key_id, key = KeyStore(settings.api_keys_path).add("admin", "demo")
    sample_calls(settings, port, key, show=lambda s: out.print(s, soft_wrap=True, highlight=False, markup=False))
    out.print(f"\nThe service is running on http://127.0.0.1:{port} (pid {pid}; OpenAPI at /docs.json, "
              f"Prometheus at /metrics).\nDemo key ({key_id}, role admin): {key}\n"
              f"Stop it with: make serve-stop")


@app.command("serve-stop")
def serve_stop() -> None:
    """Stop the background service started by `salesml serve-demo`."""
    from serving.runner import stop

    out.print("stopped" if stop(_settings()) else "no background service was running")


@app.command("bento-models")
def bento_models() -> None:
    """Import each model's registry champion into the BentoML model store, for `bentoml build` to pin
    in the Bento (make bento)."""
    from serving.bento import import_champions

    try:
        tags = import_champions(_settings())
    except ValueError as exc:
        fail(exc)
    for tag in tags:
        out.print(tag)


@keys_app.command("add")
def keys_add(
    role: Annotated[str, typer.Option(help="sales | csm (read scores) | admin (read + write) | ingest (write: "
                                           "/events, /outcomes)")],
    name: Annotated[str, typer.Option(help="Who holds the key (an application or a person).")],
    owner: Annotated[Optional[str], typer.Option(
        help="The person the key stands for: the csm_id warnings name as their owner. A csm or sales key with "
             "an owner or a team reaches only its owner's and team's warnings.")] = None,
    team: Annotated[Optional[str], typer.Option(help="The owner's team (the region warnings are reported "
                                                     "under).")] = None,
) -> None:
    """Create an API key; it is printed once and stored only as a SHA-256 digest."""
    from serving.auth import KeyFileError, KeyStore

    settings = _settings()
    try:
        key_id, key = KeyStore(settings.api_keys_path).add(role, name, owner=owner, team=team)
    except (ValueError, KeyFileError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    reach = (f"owner {owner or '-'}, team {team or '-'}" if owner or team
             else "unscoped: reaches every warning" if role in ("sales", "csm") else "")
    console.print(f"key id {key_id}, role {role}{'; ' + reach if reach else ''}; store the key now, it is not "
                  f"kept in clear:")
    out.print(key)

