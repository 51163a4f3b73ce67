"""``salesml models``: what the registry says of a model over time (which version held which alias, and why)."""

from __future__ import annotations

from typing import Annotated

import typer

from salesml.cli.base import MODEL_HELP, console, fail, markdown_table, out, settings

app = typer.Typer(help="Registered models: the alias history (champion / challenger over time).",
                  no_args_is_help=True)


@app.command("history")
def models_history(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    limit: Annotated[int, typer.Option(help="Newest spells shown.")] = 50,
) -> None:
    """Which version held `champion` and `challenger` from when to when, set by what, and why it ended."""
    from training.registry import alias_history

    s = settings()
    try:
        history = alias_history(s, model)
    except ValueError as exc:
        fail(exc)
    if history.empty:
        fail(f"model '{model}' has no alias recorded yet: `salesml train {model}` registers and aliases a version")
    rows = history.head(limit).assign(
        **{"from": lambda f: f["from"].map(lambda t: "unknown" if t is None or t != t else f"{t:%Y-%m-%d %H:%M}"),
           "to": lambda f: f["to"].map(lambda t: "now" if t is None else f"{t:%Y-%m-%d %H:%M}")})
    cols = ["alias", "version", "from", "to", "reason", "end_reason", "by", "run_id"]
    out.print(markdown_table(rows.fillna("").to_dict("records"), cols), soft_wrap=True, markup=False,
              highlight=False)
    console.print(f"{len(history):,} spells in all; times in UTC")
