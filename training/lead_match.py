"""Lead x rep scoring for a batch, capacity-aware proposals with reasons, policy comparison.

The pair features come from Feast (lead views, rep state and the on-demand fit view) exactly
as in training; ``training/assignment.py`` solves the assignment.  Proposals only: nothing
here assigns a lead on anyone's behalf.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.assignment import evaluate, least_loaded, propose_assignment, round_robin
from training.drivers import top_drivers


def pair_frame(store, leads: pd.DataFrame, rep_ids: list[str], service: str) -> pd.DataFrame:
    """Point-in-time features of the feature service ``service`` (the lead-match spec's) for every
    (lead, rep) pair at each lead's ``event_timestamp``."""
    pairs = leads[["lead_id", "event_timestamp"]].merge(pd.DataFrame({"rep_id": rep_ids}), how="cross")
    return store.get_historical_features(entity_df=pairs, features=store.get_feature_service(service)).to_df()


def score_matrix(model, pairs: pd.DataFrame, lead_ids: list[str], rep_ids: list[str]) -> np.ndarray:
    p = pd.Series(model.predict_proba(pairs), index=pd.MultiIndex.from_frame(pairs[["lead_id", "rep_id"]]))
    return p.unstack("rep_id").reindex(index=lead_ids, columns=rep_ids).to_numpy(float)


def remaining_capacity(pairs: pd.DataFrame, rep_ids: list[str], default_capacity: float = 20.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(open slots, current load) per rep from the rep-state features in the pair frame."""
    state = pairs.drop_duplicates("rep_id").set_index("rep_id").reindex(rep_ids)
    load = state["open_leads"].fillna(0).to_numpy(float)
    cap = state["capacity"].fillna(default_capacity).to_numpy(float)
    return np.maximum(cap - load, 0).astype(int), load


def reasons(model, rows: pd.DataFrame, top: int = 3) -> list[list[str]]:
    """Per row, the pair features that raised its conversion most (the drivers ``/match`` shows)."""
    return [[f for f, _ in row] for row in top_drivers(model.contributions(rows).drop(columns="bias"), top)]


def propose(model, pairs: pd.DataFrame, lead_ids: list[str], rep_ids: list[str]) -> pd.DataFrame:
    """One proposal per lead: rep, expected conversion, top reasons (or unassigned)."""
    p = score_matrix(model, pairs, lead_ids, rep_ids)
    slots, _ = remaining_capacity(pairs, rep_ids)
    assign = propose_assignment(np.nan_to_num(p), slots)
    chosen = [(lead, rep_ids[j]) for lead, j in zip(lead_ids, assign.rep_index) if j >= 0]
    keyed = pairs.set_index(["lead_id", "rep_id"])
    rows = keyed.loc[chosen].reset_index() if chosen else pairs.head(0)
    why = dict(zip(map(tuple, rows[["lead_id", "rep_id"]].to_numpy()), reasons(model, rows)))
    out = []
    for lead, j, e in zip(lead_ids, assign.rep_index, assign.expected):
        rep = rep_ids[j] if j >= 0 else None
        out.append({"lead_id": lead, "proposed_rep_id": rep,
                    "expected_conversion": None if rep is None else float(e),
                    "reasons": why.get((lead, rep), []), "status": "proposal" if rep else "no capacity"})
    return pd.DataFrame(out)


def compare_policies(model, pairs: pd.DataFrame, lead_ids: list[str], rep_ids: list[str]) -> dict:
    """Optimal vs round-robin vs least-loaded on one batch, judged by the model's probabilities."""
    p = np.nan_to_num(score_matrix(model, pairs, lead_ids, rep_ids))
    slots, load = remaining_capacity(pairs, rep_ids)
    n = len(lead_ids)
    policies = {"optimal": propose_assignment(p, slots), "round_robin": round_robin(n, slots, p=p),
                "least_loaded": least_loaded(n, slots, load, p=p)}
    return {name: evaluate(a, p, slots, load) for name, a in policies.items()}


def weekly_batches(test: pd.DataFrame) -> list[pd.DataFrame]:
    """Held-out leads grouped into the weekly batches a sales manager would route."""
    week = test["event_timestamp"].dt.to_period("W")
    return [g for _, g in test.groupby(week)]


def evaluate_on_test(model, store, test: pd.DataFrame, rep_ids: list[str], service: str, max_batches: int = 12) -> dict:
    """Sum of each policy's metrics over the last weekly batches of the test window (pair features
    from ``service``, the feature service the model was trained on)."""
    totals: dict[str, dict[str, float]] = {}
    for batch in weekly_batches(test)[-max_batches:]:
        leads = batch.drop_duplicates("lead_id")
        at = leads["event_timestamp"].max()
        leads = leads.assign(event_timestamp=at)  # the batch is routed at one moment
        pairs = pair_frame(store, leads, rep_ids, service)
        for policy, m in compare_policies(model, pairs, leads["lead_id"].tolist(), rep_ids).items():
            t = totals.setdefault(policy, {"expected_conversions": 0.0, "capacity_violations": 0.0,
                                           "max_load_ratio": 0.0, "load_ratio_std": 0.0, "batches": 0.0})
            t["expected_conversions"] += m["expected_conversions"]
            t["capacity_violations"] += m["capacity_violations"]
            t["max_load_ratio"] = max(t["max_load_ratio"], m["max_load_ratio"])
            t["load_ratio_std"] += m["load_ratio_std"]
            t["batches"] += 1
    for t in totals.values():
        t["load_ratio_std"] /= max(t["batches"], 1)
    return totals
