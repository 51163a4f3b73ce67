"""``salesml warnings`` and ``salesml playbooks``: the inbox, interventions, escalation, delivery,
the time-to-intervention report, the fuse, and each playbook's measured effect.

Every command opens the warnings store of the settings (``serving.actions.warnings``); errors about
a warning or a playbook name the field at fault and exit 2 with nothing changed.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli_base import console, fail, out, settings

warnings_app = typer.Typer(help="Health warnings: inbox, interventions, escalation, delivery, report.",
                           no_args_is_help=True)
playbooks_app = typer.Typer(help="Playbooks per level: list, the fuse (flag / unfreeze), measured effects.",
                            no_args_is_help=True)


def _store(s=None):
    from serving.actions.playbooks import PlaybookError
    from serving.actions.warnings import open_warning_store

    try:
        return open_warning_store(s or settings())
    except PlaybookError as exc:
        fail(exc)


def _when(value: str | None, name: str) -> datetime | None:
    import pandas as pd

    if value is None:
        return None
    try:
        t = pd.Timestamp(value)
    except ValueError:
        fail(f"{name}: not a date or timestamp: {value!r}")
    return (t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")).to_pydatetime()


def _table(rows: list[dict], columns: list[str]) -> str:
    import pandas as pd

    if not rows:
        return "(none)"
    return pd.DataFrame(rows)[columns].to_markdown(index=False)


@warnings_app.command("list")
def warnings_list(
    owner: Annotated[Optional[str], typer.Option(help="Only this owner's warnings.")] = None,
    status: Annotated[Optional[str], typer.Option(help="open | handled | not_applicable | escalated")] = None,
    level: Annotated[Optional[str], typer.Option(help="yellow | orange | red")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """The warnings inbox, newest first (held-out warnings show no playbook, as their owners see them)."""
    with _store() as store:
        rows = store.inbox(owner=owner, status=status, level=level, limit=limit)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    for r in rows:
        r["playbook"] = (r["playbook"] or {}).get("id") or "-"
    out.print(_table(rows, ["warning_id", "account_id", "old_level", "new_level", "score", "owner", "playbook",
                            "raised_at", "due_at", "status"]), soft_wrap=True, markup=False, highlight=False)


@warnings_app.command("show")
def warnings_show(warning_id: Annotated[str, typer.Argument(help="The warning's id (w-...).")]) -> None:
    """One warning as its owner sees it, with its interventions."""
    from serving.actions.warnings import public_view

    with _store() as store:
        record = store.get(warning_id)
    if record is None:
        fail(f"warning_id: no warning {warning_id!r}")
    out.print_json(json.dumps({**public_view(record), "interventions": record["interventions"]}, default=str))


@warnings_app.command("intervene")
def warnings_intervene(
    warning_id: Annotated[str, typer.Argument(help="The warning's id (w-...).")],
    by: Annotated[str, typer.Option(help="Who acted (a person's or a team's id).")],
    at: Annotated[Optional[str], typer.Option(help="When (UTC timestamp); default now.")] = None,
    playbook: Annotated[Optional[str], typer.Option(help="The playbook applied.")] = None,
    not_applicable: Annotated[bool, typer.Option("--not-applicable", help="The playbook does not fit.")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why (required with --not-applicable).")] = None,
) -> None:
    """Record what was done about a warning (5 'not applicable' marks in a row freeze a playbook)."""
    from serving.actions.rules import WarningError

    with _store() as store:
        try:
            done = store.intervene(warning_id, by, _when(at, "at"), playbook_id=playbook,
                                   not_applicable=not_applicable, reason=reason)
        except WarningError as exc:
            fail(f"{exc.field}: {exc}")
    from serving.actions.warnings import public_view

    out.print_json(json.dumps({**public_view(done), "interventions": done["interventions"]}, default=str))


@warnings_app.command("escalate")
def warnings_escalate(
    now: Annotated[Optional[str], typer.Option(help="Judge 'overdue' at this time (default now).")] = None,
) -> None:
    """Escalate open warnings past due without an intervention (once each), then deliver the events."""
    from serving.actions.webhook import deliver_pending

    s = settings()
    with _store(s) as store:
        escalated = store.escalate(_when(now, "now"))
        sent = deliver_pending(store, s)
    console.print(f"{len(escalated)} warning(s) escalated; webhook: {sent}")


@warnings_app.command("deliver")
def warnings_deliver(
    retry_failed: Annotated[bool, typer.Option(help="Also retry events whose attempts were all spent.")] = False,
) -> None:
    """Deliver pending warning events to the webhook (SALESML_WARNING_WEBHOOK_URL); every attempt is logged."""
    from serving.actions.webhook import deliver_pending

    s = settings()
    with _store(s) as store:
        sent = deliver_pending(store, s, retry_failed=retry_failed)
    console.print(f"webhook: {sent}")


@warnings_app.command("report")
def warnings_report(
    now: Annotated[Optional[str], typer.Option(help="Judge 'overdue' at this time (default now).")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the markdown here.")] = None,
) -> None:
    """Time to first intervention per level, playbook and team (never per person); overdue warnings."""
    from serving.actions.report import render_markdown, report
    from serving.actions.rules import now_utc

    s = settings()
    when = _when(now, "now") or now_utc()
    with _store(s) as store:
        text = render_markdown(report(store, when, s.warning_due_hours), when, s.warning_due_hours)
    if out_file:
        out_file.write_text(text)
    out.print(text, soft_wrap=True, markup=False, highlight=False)


@playbooks_app.command("list")
def playbooks_list() -> None:
    """The playbooks in force (file and version) and their fuse state."""
    s = settings()
    with _store(s) as store:
        books, states = store.playbooks, store.playbook_states().set_index("playbook_id")
    out.print(f"playbooks version {books.version} ({books.source})")
    rows = []
    for p in books.items:
        st = states.loc[p.id] if p.id in states.index else None
        rows.append({"id": p.id, "levels": ", ".join(p.levels), "title": p.title,
                     "not applicable in a row": int(st["consecutive_not_applicable"]) if st is not None else 0,
                     "frozen": bool(st["frozen"]) if st is not None else False,
                     "flagged": (st["flagged_reason"] if st is not None else None) or ""})
    out.print(_table(rows, list(rows[0]) if rows else []), soft_wrap=True, markup=False, highlight=False)


@playbooks_app.command("flag")
def playbooks_flag(
    playbook_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why it goes to review.")],
) -> None:
    """Freeze a playbook and send it for review."""
    from serving.actions.rules import WarningError

    with _store() as store:
        try:
            out.print_json(json.dumps(store.flag_playbook(playbook_id, reason), default=str))
        except WarningError as exc:
            fail(f"{exc.field}: {exc}")


@playbooks_app.command("unfreeze")
def playbooks_unfreeze(
    playbook_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="The review's decision.")],
) -> None:
    """Offer a frozen playbook again after its review."""
    from serving.actions.rules import WarningError

    with _store() as store:
        try:
            out.print_json(json.dumps(store.unfreeze_playbook(playbook_id, reason), default=str))
        except WarningError as exc:
            fail(f"{exc.field}: {exc}")


@playbooks_app.command("effects")
def playbooks_effects(
    alpha: Annotated[float, typer.Option(help="1 - confidence of the intervals.")] = 0.05,
    log: Annotated[bool, typer.Option(help="Log the table and a forest plot to MLflow (salesml-playbooks).")] = True,
    flag: Annotated[bool, typer.Option(help="Freeze and flag for review the playbooks found harmful.")] = True,
) -> None:
    """Each playbook's effect on churn within the CHS horizon: prompted vs held-out warnings."""
    import pandas as pd

    from experiments.playbooks import churn_outcomes, estimate_effects, log_effects, render

    s = settings()
    as_of = pd.Timestamp(s.export_as_of, tz="UTC") if s.export_as_of else pd.Timestamp.now(tz="UTC")
    horizon = s.spec("chs").label.horizon_days
    with _store(s) as store:
        warnings = store.frame()
        if warnings.empty:
            fail("no warnings yet: run `salesml score chs` on two or more dates first")
        outcomes, sources = churn_outcomes(s)
        table = estimate_effects(warnings, outcomes, horizon_days=horizon, as_of=as_of, alpha=alpha)
        harmful = table.loc[table["harmful"], "playbook_id"].tolist()
        if flag:
            for pid in harmful:
                store.flag_playbook(pid, f"harmful: prompted warnings churned more than held-out ones "
                                         f"(effect interval above 0, as of {as_of:%Y-%m-%d})")
    console.print(f"outcomes: {sources}; horizon {horizon} days; as of {as_of:%Y-%m-%d %H:%M} UTC")
    out.print(render(table), soft_wrap=True, markup=False, highlight=False)
    if harmful:
        console.print(f"harmful, {'frozen and flagged for review' if flag else 'not flagged (--no-flag)'}: "
                      f"{', '.join(harmful)}")
    if log:
        run_id = log_effects(s, table, as_of=as_of, extra_params={"holdout_share": s.playbook_holdout_share})
        console.print(f"logged to MLflow experiment salesml-playbooks, run {run_id}")


@playbooks_app.command("replay")
def playbooks_replay(
    seed: Annotated[int, typer.Option(help="Seed of the replay's draws (delays, marks, churn).")] = 0,
    delay_median_hours: Annotated[float, typer.Option(help="Median hours from a warning to its intervention.")] = 3.0,
    record: Annotated[bool, typer.Option(help="Record the replayed interventions in the warnings store "
                                              "(the fuse acts on them).")] = False,
) -> None:
    """Simulated exports only: play what CSMs do about the store's warnings and which accounts churn
    after, with the simulator's planted playbook effects; estimate each effect beside its truth."""
    import pandas as pd

    from experiments.playbooks import estimate_effects, first_per_window
    from salesml.simulator_playbooks import LoopConfig, record_interventions, replay, write_truth

    s = settings()
    hazards_path = s.export_dir / "truth" / "truth_churn_weekly.parquet"
    if not hazards_path.exists():
        fail(f"no simulator truth at {hazards_path.name} in the export's truth/ folder: the replay needs the "
             "simulator's weekly churn hazards; on a real export use `salesml playbooks effects`")
    weeks = s.spec("chs").label.horizon_days // 7
    with _store(s) as store:
        warnings = store.frame()
        if warnings.empty:
            fail("no warnings yet: run `salesml score chs` on two or more dates first")
        kept = warnings[first_per_window(warnings, pd.Timedelta(weeks=weeks))]
        try:
            played = replay(kept, pd.read_parquet(hazards_path), LoopConfig(
                seed=seed, delay_median_hours=delay_median_hours, horizon_weeks=weeks))
        except ValueError as exc:
            fail(f"replay: {exc}")
        skipped = ", ".join(f"{n:,} {why}" for why, n in played.skipped.items())
        console.print(f"replayed {len(played.warnings):,} of {len(warnings):,} warnings "
                      f"({len(warnings) - len(kept):,} later ones in an account's {weeks}-week window"
                      f"{'; skipped: ' + skipped if skipped else ''})")
        if played.warnings.empty:
            fail(f"nothing to replay: a warning needs {weeks} weeks of the export's hazards after it; score "
                 f"earlier dates (`salesml score chs --as-of DATE`)")
        path = write_truth(played, s.export_dir)
        if record:
            done, refused = record_interventions(store, played)
            console.print(f"recorded {done:,} interventions in the warnings store; {refused:,} refused (the "
                          "playbook was frozen by then)")
    as_of = played.warnings["raised_at"].max() + pd.Timedelta(weeks=weeks, days=1)
    table = estimate_effects(played.warnings, played.outcomes, horizon_days=7 * weeks, as_of=as_of)
    both = table.merge(played.truth[["playbook_id", "hazard_ratio", "true_effect"]], on="playbook_id")
    both["covered"] = (both["ci_low"] <= both["true_effect"]) & (both["true_effect"] <= both["ci_high"])
    cols = ["playbook_id", "hazard_ratio", "true_effect", "effect", "ci_low", "ci_high", "verdict", "covered",
            "n_prompted", "n_holdout"]
    out.print(both[cols].to_markdown(index=False, floatfmt=".3f"), soft_wrap=True, markup=False, highlight=False)
    console.print(f"truth written to {path.relative_to(s.export_dir)} in the export")


score_app = typer.Typer(help="Scheduled scoring of the whole book, and score history.", no_args_is_help=True)


def _score(model: str, as_of: Optional[str], backfill: int = 1) -> None:
    from datetime import date, timedelta

    from serving.core import ScoringCore
    from serving.scoring_book import resolve_as_of

    s = settings()
    when = None
    if as_of:
        try:
            when = date.fromisoformat(as_of)
        except ValueError:
            fail(f"--as-of: not a date (YYYY-MM-DD): {as_of!r}")
    if backfill < 1:
        fail(f"--backfill: at least 1 run, got {backfill}")
    from serving.core import ModelUnavailable

    console.print("loading the champion from the registry ...")
    try:
        core = ScoringCore.load(s, only=(model,))  # the job needs its own model alone
        core.require(model)
    except ModelUnavailable as exc:
        fail(exc)
    if backfill > 1:  # weekly runs ending at the date: a history to start from on a first install
        from features.store import open_store

        spec = s.spec(model)
        store = open_store(s)
        end, _ = resolve_as_of(s, spec, store.get_feature_service(spec.feature_service), when)
        dates = [end - timedelta(weeks=k) for k in range(backfill - 1, -1, -1)]
    else:
        dates = [when]
    for d in dates:
        _score_one(s, core, model, d)


def _score_one(s, core, model: str, when) -> None:
    from salesml.cli_base import progress
    from serving.scoring_job import score_book

    with progress() as bar:
        try:
            run = score_book(s, model, when, progress=bar, core=core)
        except ValueError as exc:
            fail(exc)
    summary = run.summary
    out.print(f"{model} scores at {run.as_of} ({summary.get('as_of_source', '')}): {summary['scored']:,} scored, "
              f"left out {summary['left_out'] or 'none'}; {run.path}; MLflow run {run.run_id}", soft_wrap=True,
              markup=False, highlight=False)
    for key in ("levels", "moves"):
        if summary.get(key):
            out.print(f"{key}: {summary[key]}", soft_wrap=True, markup=False, highlight=False)
    if model != "chs":
        return
    if summary.get("previous_as_of") is None:
        console.print("no earlier run: these scores set the levels later runs compare with; no warning raised")
    from serving.actions.runs import warn_from_run
    from serving.actions.webhook import deliver_pending

    with _store(s) as store:
        raised = warn_from_run(store, run)
        sent = deliver_pending(store, s)
    by_level: dict[str, int] = {}
    for w in raised:
        by_level[w["level"]] = by_level.get(w["level"], 0) + 1
    out.print(f"warnings raised: {len(raised)} {by_level or ''}; webhook: {sent}", markup=False, highlight=False)


@score_app.command("chs")
def score_chs(
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="Score the book at this date (default: the export's end).")] = None,
    backfill: Annotated[int, typer.Option(help="Weekly runs ending at the date (a first history).")] = 1,
) -> None:
    """Every active account: CHS, level, layers, drivers, the change since the last run; raises warnings."""
    _score("chs", as_of, backfill)


@score_app.command("intent")
def score_intent(
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="Score the open leads at this date (default: the export's end).")] = None,
    backfill: Annotated[int, typer.Option(help="Weekly runs ending at the date.")] = 1,
) -> None:
    """Every open lead: probability of conversion, band, drivers."""
    _score("intent", as_of, backfill)


@score_app.command("history")
def score_history(
    account_id: Annotated[str, typer.Argument(help="The account.")],
    plot: Annotated[Optional[Path], typer.Option(help="Write the timeline plot (PNG) here.")] = None,
) -> None:
    """An account's timeline: score, level and the attributed change per run, and the events between."""
    from serving.scores import history, plot_timeline

    h = history(settings(), account_id)
    if h.timeline.empty:
        fail(f"account_id: no stored run scored {account_id!r} (run `salesml score chs` first)")
    out.print(h.timeline.to_markdown(index=False), soft_wrap=True, markup=False, highlight=False)
    out.print(f"\nevents: {h.sources}", soft_wrap=True, markup=False, highlight=False)
    if len(h.events):
        out.print(h.events.tail(20).to_markdown(index=False), soft_wrap=True, markup=False, highlight=False)
    if plot:
        plot_timeline(h).savefig(plot, dpi=110, bbox_inches="tight")
        console.print(f"plot: {plot}")
