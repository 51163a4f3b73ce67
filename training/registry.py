"""The registry's records: promotion (challenger replaces champion only with evidence, the decision
logged), the one place aliases move (each move kept in an alias history), and the descriptions that
runs and model versions carry for a reviewer."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from training.metrics import classification_metrics
from training.tracking import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from salesml.settings import Settings

MIN_AUC_GAIN = 0.005  # challenger must beat champion's test ROC-AUC by this much
MAX_ECE_LOSS = 0.01  # ... and may not be worse calibrated by more than this


@dataclass
class Decision:
    model: str
    promote: bool
    reason: str
    champion_version: str | None  # None: no champion yet
    challenger_version: str
    champion_metrics: dict
    challenger_metrics: dict


def decide(name: str, y: np.ndarray, p_champion: np.ndarray | None, p_challenger: np.ndarray,
           champion_version: str | None, challenger_version: str,
           min_gain: float = MIN_AUC_GAIN, max_ece_loss: float = MAX_ECE_LOSS) -> Decision:
    """Pure decision on the same test rows."""
    ch = classification_metrics(y, p_challenger)
    if p_champion is None:
        return Decision(name, True, "no champion yet: the first model becomes champion",
                        None, challenger_version, {}, ch)
    cm = classification_metrics(y, p_champion)
    gain = ch["roc_auc"] - cm["roc_auc"]
    if gain < min_gain:
        reason = f"ROC-AUC gain {gain:+.4f} below the required {min_gain:+.4f}"
        return Decision(name, False, reason, champion_version, challenger_version, cm, ch)
    if ch["ece"] > cm["ece"] + max_ece_loss:
        reason = f"calibration worse: ECE {cm['ece']:.4f} -> {ch['ece']:.4f}"
        return Decision(name, False, reason, champion_version, challenger_version, cm, ch)
    reason = f"ROC-AUC {cm['roc_auc']:.4f} -> {ch['roc_auc']:.4f}, ECE {cm['ece']:.4f} -> {ch['ece']:.4f}"
    return Decision(name, True, reason, champion_version, challenger_version, cm, ch)


def promote(settings: Settings, name: str, raw_dir: Path | None = None, min_gain: float = MIN_AUC_GAIN) -> Decision:
    """Compare challenger and champion on the latest test window; move ``champion`` if earned."""
    import mlflow

    from features.training_sets import build_training_set
    from training import tracking
    from training.data import LABEL, time_split

    tracking.configure(settings)
    client = tracking.client(settings)
    aliases = client.get_registered_model(name).aliases
    if CHALLENGER not in aliases:
        raise ValueError(f"model '{name}' has no challenger to promote")
    ts = build_training_set(settings, name, raw_dir=raw_dir or settings.raw_dir)
    test = time_split(ts.frame).test
    y = test[LABEL].to_numpy()

    def scores(alias):
        return mlflow.pyfunc.load_model(f"models:/{name}@{alias}").predict(test)

    p_champ = scores(CHAMPION) if CHAMPION in aliases else None
    decision = decide(name, y, None if p_champ is None else np.asarray(p_champ),
                      np.asarray(scores(CHALLENGER)), aliases.get(CHAMPION), aliases[CHALLENGER], min_gain)
    window = f"{test['event_timestamp'].min():%Y-%m-%d}..{test['event_timestamp'].max():%Y-%m-%d}"
    tracking.use_experiment(settings, "salesml-promotions")
    with mlflow.start_run(run_name=f"promote-{name}") as run:
        mlflow.set_tags({"model": name, "decision": "promote" if decision.promote else "keep"})
        mlflow.log_params({"champion_version": decision.champion_version,
                           "challenger_version": decision.challenger_version,
                           "min_auc_gain": min_gain, "reason": decision.reason[:250],
                           "test_window": window})
        for tag, m in (("champion", decision.champion_metrics), ("challenger", decision.challenger_metrics)):
            mlflow.log_metrics({f"{tag}_{k}": v for k, v in m.items() if np.isfinite(v)})
        note = promotion_note(decision, window, min_gain)
        mlflow.set_tag(NOTE_TAG, note)
        run_id = run.info.run_id
        if decision.promote:
            set_alias(settings, name, CHAMPION, decision.challenger_version, f"promoted: {decision.reason}", run_id)
            remove_alias(settings, name, CHALLENGER, f"promoted to champion: {decision.reason}", run_id)
        _append_note(client, name, decision.challenger_version, f"{_today()} {note} (promotion run {run_id})")
        if decision.promote and decision.champion_version:
            _append_note(client, name, decision.champion_version,
                         f"{_today()} replaced as champion by version {decision.challenger_version} "
                         f"(promotion run {run_id}): {decision.reason}")
    return decision


# --- descriptions: what the UI shows as a run's description and a model version's description ---

NOTE_TAG = "mlflow.note.content"
_NOTE_LIMIT = 4900  # model version descriptions are VARCHAR(5000) in MLflow's SQL stores


def _bounded(text: str, limit: int = _NOTE_LIMIT) -> str:
    """Keep the head (what was trained) and the tail (the latest decisions) of a long note."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]}\n...\n{text[-half:]}"


def _today() -> str:
    return f"{datetime.now(timezone.utc):%Y-%m-%d}:"


def training_note(summary: dict, windows: dict[str, str], data_window: str, split_note: str = "",
                  alias_reason: str | None = None, register: bool = True) -> str:
    """Pure: a training run's description from the values ``pipeline.run`` computed (its summary,
    the split's windows, the data window) and why the model was or was not registered/promoted."""
    s = summary
    auc = s["test_roc_auc"]
    head = f"{s['model']} ({s['chosen']}): test ROC-AUC {auc:.4f}"
    if np.isfinite(s.get("test_ece", np.nan)):
        head += f", ECE {s['test_ece']:.4f}"
    base = {k[len("baseline_"):-len("_test_roc_auc")]: v for k, v in s.items()
            if k.startswith("baseline_") and k.endswith("_test_roc_auc") and np.isfinite(v)}
    against = [f"vs baseline {b} {v:.4f} ({auc - v:+.4f})" for b, v in sorted(base.items())] or ["no baseline fitted"]
    truth = s.get("oracle_test_roc_auc")
    if truth is not None and np.isfinite(truth):
        against.append(f"vs the truth (the generating process's own probabilities) {truth:.4f} "
                       f"({auc / truth:.0%} of the attainable)")
    else:
        against.append("truth unknown (no simulator ground truth for this export)")
    split = (f"Split {windows.get('split', s.get('split'))}: train {windows.get('train_window')}, "
             f"valid {windows.get('valid_window')}, test {windows.get('test_window')}"
             + (f" ({split_note})" if split_note else "") + ".")
    data = f"Data window {data_window} (training set digest {s.get('dataset_digest', '?')})."
    selection = f"Selection: {s.get('selection', '')}."
    if s.get("registered"):
        outcome = f"Registered as version {s['version']}: {alias_reason or s.get('alias') or 'no alias'}."
    elif not register:
        outcome = "Not registered: registration was not requested."
    else:
        outcome = "Not registered: a baseline beats the chosen model on validation (see Selection)."
    return _bounded("\n\n".join([f"{head}; " + "; ".join(against) + ".", split, data, selection, outcome]))


def promotion_note(decision: Decision, test_window: str, min_gain: float = MIN_AUC_GAIN) -> str:
    """Pure: one line on a promotion decision, for the promotion run and the versions involved."""
    verdict = (f"promoted version {decision.challenger_version} to champion" if decision.promote
               else f"kept champion version {decision.champion_version}; version "
                    f"{decision.challenger_version} stays challenger")
    return (f"Promotion of {decision.model} on the test window {test_window} (required ROC-AUC gain "
            f"{min_gain:+.4f}, ECE loss at most {MAX_ECE_LOSS:.4f}): {verdict}: {decision.reason}.")


def describe_training(settings: Settings, summary: dict, split, data_window: str, alias_reason: str | None = None,
                      register: bool = True) -> str:
    """Write ``training_note`` as the run's description and, when registered, the version's."""
    from training import tracking

    note = training_note(summary, split.windows(), data_window, split.note, alias_reason, register)
    client = tracking.client(settings)
    client.set_tag(summary["run_id"], NOTE_TAG, note)
    if summary.get("registered") and summary.get("version"):
        client.update_model_version(summary["model"], str(summary["version"]), description=note)
    return note


def _append_note(client, name: str, version: str, line: str) -> None:
    """Add a line to a version's description and to its training run's description."""
    from mlflow.exceptions import MlflowException

    mv = client.get_model_version(name, str(version))
    client.update_model_version(name, str(version), description=_bounded(f"{mv.description or ''}\n\n{line}".strip()))
    if mv.run_id:
        try:
            run_note = client.get_run(mv.run_id).data.tags.get(NOTE_TAG, "")
        except MlflowException:  # the run was deleted
            return
        client.set_tag(mv.run_id, NOTE_TAG, _bounded(f"{run_note}\n\n{line}".strip()))


# --- aliases: the one place they move, and their history ---

HISTORY_TAG = "salesml.alias_history"  # on each model version: JSON list of its alias spells
_HISTORY_LIMIT = 200  # spells kept per version (a version rarely holds more than a few)
HISTORY_COLUMNS = ["alias", "version", "from", "to", "reason", "by", "run_id", "end_reason"]


def _command() -> str:
    """What made the change: the command line of this process (``salesml promote chs``, ``pytest ...``)."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return " ".join(argv)[:200]


def _provenance(by: str, run_id: str | None) -> str:
    return f" (by {by}" + (f", run {run_id})" if run_id else ")")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _current(client, name: str, alias: str) -> str | None:
    version = client.get_registered_model(name).aliases.get(alias)  # an int from SQL stores
    return None if version is None else str(version)


def _spells(mv) -> list[dict]:
    try:
        spells = json.loads((mv.tags or {}).get(HISTORY_TAG, "[]"))
    except ValueError:
        return []
    return spells if isinstance(spells, list) else []


def _write_spells(client, name: str, version: str, spells: list[dict]) -> None:
    # Model version tags are TEXT in MLflow's SQL stores (registered-model tags are VARCHAR(5000)).
    client.set_model_version_tag(name, str(version), HISTORY_TAG, json.dumps(spells[-_HISTORY_LIMIT:]))


def _close_spell(client, name: str, version: str, alias: str, when: str, why: str) -> None:
    spells = _spells(client.get_model_version(name, str(version)))
    open_ = [sp for sp in spells if sp.get("alias") == alias and sp.get("to") is None]
    if not open_:  # set before the history was kept: its start is unknown
        open_ = [{"alias": alias, "from": None, "to": None, "reason": "(set before the alias history was kept)",
                  "by": None, "run_id": None}]
        spells.append(open_[0])
    for sp in open_:
        sp.update({"to": when, "end_reason": why})
    _write_spells(client, name, version, spells)


def set_alias(settings: Settings, name: str, alias: str, version: str | int, reason: str, run_id: str | None = None,
              by: str | None = None) -> None:
    """Point ``alias`` at ``version`` and record it: the spell of the version it leaves ends now, the
    new version's begins, each with why and by what (this command; ``run_id``, the run that decided)."""
    from training import tracking

    client, version, when = tracking.client(settings), str(version), _now()
    previous = _current(client, name, alias)
    if previous == version:
        return
    by = by or _command()
    client.set_registered_model_alias(name, alias, version)
    if previous is not None:
        _close_spell(client, name, previous, alias, when, f"moved to version {version}: {reason}"
                     + _provenance(by, run_id))
    spells = _spells(client.get_model_version(name, version))
    spells.append({"alias": alias, "from": when, "to": None, "reason": reason, "by": by, "run_id": run_id})
    _write_spells(client, name, version, spells)


def remove_alias(settings: Settings, name: str, alias: str, reason: str, run_id: str | None = None,
                 by: str | None = None) -> None:
    """Remove ``alias`` (if set) and end its spell, recording why."""
    from training import tracking

    client = tracking.client(settings)
    previous = _current(client, name, alias)
    if previous is None:
        return
    client.delete_registered_model_alias(name, alias)
    _close_spell(client, name, previous, alias, _now(), f"removed: {reason}" + _provenance(by or _command(), run_id))


def alias_new_version(settings: Settings, name: str, version: str | int, run_id: str,
                      alias: str | None = None) -> tuple[str, str]:
    """Alias a freshly registered version: ``alias`` when given (a drift retrain: challenger, never
    champion directly), else champion for the first model of a name and challenger after that.
    Returns the alias and why, for the descriptions."""
    from training import tracking

    aliases = tracking.client(settings).get_registered_model(name).aliases
    if alias is not None:
        reason = f"registered with the requested alias {alias}"
    elif CHAMPION not in aliases:
        alias, reason = CHAMPION, f"champion: the first registered {name} model"
    else:
        alias = CHALLENGER
        reason = (f"challenger: champion version {aliases[CHAMPION]} stays until `salesml promote {name}` "
                  f"finds a test ROC-AUC gain of at least {MIN_AUC_GAIN} with ECE no worse by more than "
                  f"{MAX_ECE_LOSS}")
    set_alias(settings, name, alias, version, reason, run_id)
    return alias, reason


def alias_history(settings: Settings, model: str) -> pd.DataFrame:
    """Every spell of an alias on a version of ``model``, newest first: alias, version, from, to (None
    while current), reason, by (the command), run_id (the run that decided), end_reason.

    ValueError when no such registered model exists.
    """
    from mlflow.exceptions import MlflowException

    from training import tracking

    client = tracking.client(settings)
    try:
        client.get_registered_model(model)
    except MlflowException as exc:
        raise ValueError(f"no registered model '{model}' in {settings.tracking_uri}") from exc
    rows, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{model}'", page_token=token)
        rows += [{**{c: sp.get(c) for c in HISTORY_COLUMNS}, "version": str(mv.version)}
                 for mv in page for sp in _spells(mv)]
        token = page.token
        if not token:
            break
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["from"] = pd.to_datetime(frame["from"], utc=True)
    frame["to"] = pd.Series([None if pd.isna(t) else pd.Timestamp(t) for t in frame["to"]], dtype=object,
                            index=frame.index)
    order = frame["from"].fillna(pd.Timestamp.min.tz_localize("UTC"))
    return frame.loc[order.sort_values(ascending=False, kind="stable").index].reset_index(drop=True)
