"""``salesml warnings``: the inbox, interventions, escalation, delivery and the time-to-intervention
report.

Every command opens the warnings store of the settings (``serving.actions.warnings``); errors about
a warning name the field at fault and exit 2 with nothing changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli.base import console, fail, markdown_table, out, parse_when, settings, warning_store

app = typer.Typer(help="Health warnings: inbox, interventions, escalation, delivery, report.", no_args_is_help=True)


@app.command("list")
def warnings_list(
    owner: Annotated[Optional[str], typer.Option(help="Only this owner's warnings.")] = None,
    status: Annotated[Optional[str], typer.Option(help="open | handled | not_applicable | escalated")] = None,
    level: Annotated[Optional[str], typer.Option(help="yellow | orange | red")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """The warnings inbox, newest first (held-out warnings show no playbook, as their owners see them)."""
    with warning_store() as store:
        rows = store.inbox(owner=owner, status=status, level=level, limit=limit)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    for r in rows:
        r["playbook"] = (r["playbook"] or {}).get("id") or "-"
    columns = ["warning_id", "account_id", "old_level", "new_level", "score", "owner", "playbook", "raised_at",
               "due_at", "status"]
    out.print(markdown_table(rows, columns), soft_wrap=True, markup=False, highlight=False)


@app.command("show")
def warnings_show(warning_id: Annotated[str, typer.Argument(help="The warning's id (w-...).")]) -> None:
    """One warning as its owner sees it, with its interventions."""
    from serving.actions.warnings import public_view

    with warning_store() as store:
        record = store.get(warning_id)
    if record is None:
        fail(f"warning_id: no warning {warning_id!r}")
    out.print_json(json.dumps({**public_view(record), "interventions": record["interventions"]}, default=str))


@app.command("intervene")
def warnings_intervene(
    warning_id: Annotated[str, typer.Argument(help="The warning's id (w-...).")],
    by: Annotated[str, typer.Option(help="Who acted (a person's or a team's id).")],
    at: Annotated[Optional[str], typer.Option(help="When (UTC timestamp); default now.")] = None,
    playbook: Annotated[Optional[str], typer.Option(help="The playbook applied.")] = None,
    not_applicable: Annotated[bool, typer.Option("--not-applicable", help="The playbook does not fit.")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why (required with --not-applicable).")] = None,
) -> None:
    """Record what was done about a warning ('not applicable' marks by 5 different people in a row freeze
    a playbook)."""
    from serving.actions.rules import WarningError

    with warning_store() as store:
        try:
            done = store.intervene(warning_id, by, parse_when(at, "at"), playbook_id=playbook,
                                   not_applicable=not_applicable, reason=reason)
        except WarningError as exc:
            fail(f"{exc.field}: {exc}")
    from serving.actions.warnings import public_view

    out.print_json(json.dumps({**public_view(done), "interventions": done["interventions"]}, default=str))


@app.command("escalate")
def warnings_escalate(
    now: Annotated[Optional[str], typer.Option(help="Judge 'overdue' at this time (default now).")] = None,
) -> None:
    """Escalate open warnings past due without an intervention (once each), then deliver the events."""
    from serving.actions.webhook import deliver_pending

    s = settings()
    with warning_store(s) as store:
        escalated = store.escalate(parse_when(now, "now"))
        sent = deliver_pending(store, s)
    console.print(f"{len(escalated)} warning(s) escalated; webhook: {sent}")


@app.command("deliver")
def warnings_deliver(
    retry_failed: Annotated[bool, typer.Option(help="Also retry events whose attempts were all spent.")] = False,
) -> None:
    """Deliver pending warning events to the webhook (SALESML_WARNING_WEBHOOK_URL); every attempt is logged."""
    from serving.actions.webhook import deliver_pending

    s = settings()
    with warning_store(s) as store:
        sent = deliver_pending(store, s, retry_failed=retry_failed)
    console.print(f"webhook: {sent}")


@app.command("report")
def warnings_report(
    now: Annotated[Optional[str], typer.Option(help="Judge 'overdue' at this time (default now).")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the markdown here.")] = None,
) -> None:
    """Time to first intervention per level, playbook and team (never per person); overdue warnings."""
    from serving.actions.report import render_markdown, report
    from serving.predlog import now_utc

    s = settings()
    when = parse_when(now, "now") or now_utc()
    with warning_store(s) as store:
        text = render_markdown(report(store, when, s.warning_due_hours), when, s.warning_due_hours)
    if out_file:
        out_file.write_text(text)
    out.print(text, soft_wrap=True, markup=False, highlight=False)
