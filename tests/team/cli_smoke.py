"""Run ``salesml`` commands one after the other in this process (Typer's runner: the libraries are
imported once) against the home that ``SALESML_HOME`` names, and print one JSON line per command:
its argv, exit code, the tail of its output and, for an exception other than a clean exit, its
traceback.  ``tests/team/test_readme_commands.py`` runs it in a subprocess, so the commands share no
state with the test session.

Usage: ``python cli_smoke.py PLAN.json`` where the plan is a list of argv lists; ``{warning_id}``,
``{account_id}`` and ``{playbook}`` in an argv are filled in from the home when the command runs.
"""

from __future__ import annotations

import json
import sys
import traceback


def _placeholders() -> dict[str, str]:
    """Values that only the home knows: an open warning, an account of the export, a playbook."""
    from salesml.cli import base
    from salesml.validation import find_table_file

    settings = base.settings()
    values: dict[str, str] = {}
    import pandas as pd

    from serving.actions.warnings import open_warning_store

    with open_warning_store(settings) as store:
        listed = store.inbox(status="open", limit=1)
        values["playbook"] = store.playbooks.items[0].id
    if listed:
        values["warning_id"] = listed[0]["warning_id"]
    path = find_table_file(settings.export_dir, "accounts")
    if path is not None:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        values["account_id"] = str(frame["account_id"].iloc[0])
    return values


def main(plan_path: str) -> None:
    from typer.testing import CliRunner

    from salesml.cli import app, base

    runner = CliRunner()
    values: dict[str, str] = {}
    for argv in json.loads(open(plan_path).read()):
        if any("{" in a for a in argv) and not values:
            values = _placeholders()
        argv = [a.format(**values) for a in argv]
        base.overrides.clear()  # a global option of one invocation must not reach the next one
        result = runner.invoke(app, argv, catch_exceptions=True)
        error = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            error = "".join(traceback.format_exception(*result.exc_info))[-4000:]
        print(json.dumps({"argv": argv, "code": result.exit_code, "output": result.output[-8000:],
                          "traceback": error}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
