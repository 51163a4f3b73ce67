"""``salesml score``: the scheduled scoring of the whole book (CHS raises warnings) and an account's history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from salesml.cli.base import console, fail, out, progress, settings, warning_store

app = typer.Typer(help="Scheduled scoring of the whole book, and score history.", no_args_is_help=True)


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
        dates: list[date | None] = [end - timedelta(weeks=k) for k in range(backfill - 1, -1, -1)]
    else:
        dates = [when]  # None: the latest complete week (``score_book``)
    for d in dates:
        _score_one(s, core, model, d)


def _score_one(s, core, model: str, when) -> None:
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

    with warning_store(s) as store:
        raised = warn_from_run(store, run)
        sent = deliver_pending(store, s)
    by_level: dict[str, int] = {}
    for w in raised:
        by_level[w["level"]] = by_level.get(w["level"], 0) + 1
    out.print(f"warnings raised: {len(raised)} {by_level or ''}; webhook: {sent}", markup=False, highlight=False)


@app.command("chs")
def score_chs(
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="Score the book at this date (default: the export's end).")] = None,
    backfill: Annotated[int, typer.Option(help="Weekly runs ending at the date (a first history).")] = 1,
) -> None:
    """Every active account: CHS, level, layers, drivers, the change since the last run; raises warnings."""
    _score("chs", as_of, backfill)


@app.command("intent")
def score_intent(
    as_of: Annotated[Optional[str], typer.Option(
        "--as-of", help="Score the open leads at this date (default: the export's end).")] = None,
    backfill: Annotated[int, typer.Option(help="Weekly runs ending at the date.")] = 1,
) -> None:
    """Every open lead: probability of conversion, band, drivers."""
    _score("intent", as_of, backfill)


@app.command("history")
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
