"""``salesml playbooks``: the playbooks in force, the fuse (flag / unfreeze), each playbook's measured
effect, and the replay of the simulator's loop."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from salesml.cli.base import console, fail, markdown_table, out, settings, warning_store

app = typer.Typer(help="Playbooks per level: list, the fuse (flag / unfreeze), measured effects.", no_args_is_help=True)


@app.command("list")
def playbooks_list() -> None:
    """The playbooks in force (file and version) and their fuse state."""
    s = settings()
    with warning_store(s) as store:
        books, states = store.playbooks, store.playbook_states().set_index("playbook_id")
    out.print(f"playbooks version {books.version} ({books.source})")
    rows = []
    for p in books.items:
        st = states.loc[p.id] if p.id in states.index else None
        rows.append({"id": p.id, "levels": ", ".join(p.levels), "title": p.title,
                     "not applicable in a row": int(st["consecutive_not_applicable"]) if st is not None else 0,
                     "frozen": bool(st["frozen"]) if st is not None else False,
                     "flagged": (st["flagged_reason"] if st is not None else None) or ""})
    out.print(markdown_table(rows, list(rows[0]) if rows else []), soft_wrap=True, markup=False, highlight=False)


@app.command("flag")
def playbooks_flag(
    playbook_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why it goes to review.")],
) -> None:
    """Freeze a playbook and send it for review."""
    _review("flag_playbook", playbook_id, reason)


@app.command("unfreeze")
def playbooks_unfreeze(
    playbook_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="The review's decision.")],
) -> None:
    """Offer a frozen playbook again after its review."""
    _review("unfreeze_playbook", playbook_id, reason)


def _review(action: str, playbook_id: str, reason: str) -> None:
    """``WarningStore.<action>(playbook_id, reason)``, its answer printed; a refusal exits with code 2."""
    from serving.actions.rules import WarningError

    with warning_store() as store:
        try:
            out.print_json(json.dumps(getattr(store, action)(playbook_id, reason), default=str))
        except WarningError as exc:
            fail(f"{exc.field}: {exc}")


@app.command("effects")
def playbooks_effects(
    alpha: Annotated[float, typer.Option(help="1 - confidence of the intervals.")] = 0.05,
    log: Annotated[bool, typer.Option(help="Log the table and a forest plot to MLflow (salesml-playbooks).")] = True,
    flag: Annotated[bool, typer.Option(help="Freeze and flag for review the playbooks found harmful.")] = True,
) -> None:
    """Each playbook's effect on churn within the CHS horizon: prompted vs held-out warnings."""
    import pandas as pd

    from experiments.playbooks import EXPERIMENT, churn_outcomes, estimate_effects, log_effects, render

    s = settings()
    as_of = pd.Timestamp(s.export_as_of, tz="UTC") if s.export_as_of else pd.Timestamp.now(tz="UTC")
    horizon = s.spec("chs").label.horizon_days
    with warning_store(s) as store:
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
        console.print(f"logged to MLflow experiment {EXPERIMENT}, run {run_id}")


@app.command("replay")
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
    from salesml.simulator.playbooks import LoopConfig, record_interventions, replay, write_truth

    s = settings()
    hazards_path = s.export_dir / "truth" / "truth_churn_weekly.parquet"
    if not hazards_path.exists():
        fail(f"no simulator truth at {hazards_path.name} in the export's truth/ folder: the replay needs the "
             "simulator's weekly churn hazards; on a real export use `salesml playbooks effects`")
    weeks = s.spec("chs").label.horizon_days // 7
    with warning_store(s) as store:
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
