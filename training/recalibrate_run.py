"""MLflow layer for the quarterly CHS weight recalibration (``salesml recalibrate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from salesml.settings import Settings
from training.recalibration import (
    Recalibration,
    WeightStore,
    quarters_in,
    recalibrate,
    summary_table,
    weights_plot,
)


def weight_store(settings: Settings) -> WeightStore:
    return WeightStore(settings.chs_weights_dir)


def load_health_model(settings: Settings, alias: str = "champion"):
    """The registered CHS model (a ``HealthModel``), rebuilt as serving rebuilds it."""
    from training import tracking

    tracking.configure(settings)
    return tracking.load_scoring_model(f"models:/chs@{alias}")


def _log(result: Recalibration, prefix: str = "") -> None:
    import mlflow

    mlflow.log_params({f"{prefix}current_weight_{k}": v for k, v in result.current.items()})
    mlflow.log_params({f"{prefix}proposed_weight_{k}": v for k, v in result.proposed.items()})
    mlflow.log_params({f"{prefix}accepted": result.accepted, f"{prefix}reason": result.reason[:250]})
    for tag, m in (("current", result.current_backtest), ("proposed", result.proposed_backtest)):
        mlflow.log_metrics({f"{prefix}backtest_{tag}_{k}": v for k, v in m.items() if np.isfinite(v)})


def run(settings: Settings, quarter: str | None = None, walk_forward: bool = False, raw_dir: Path | None = None,
        log: Callable[[str], None] = print) -> list[Recalibration]:
    import mlflow

    from features.training_sets import build_training_set
    from training import tracking

    model = load_health_model(settings)
    spec = settings.spec("chs", raw_dir)
    frame = build_training_set(settings, "chs", raw_dir=raw_dir, spec=spec).frame
    store = weight_store(settings)
    current = (store.current() or {}).get("weights") or model.weights
    quarters = quarters_in(frame, spec.horizon_days) if walk_forward else [quarter]
    if not quarters or quarters == [None]:
        raise ValueError("give --quarter 2025Q3 or --walk-forward")
    chosen = [q for q in quarters if q is not None]
    tracking.use_experiment(settings, "salesml-chs-recalibration")
    results = []
    with mlflow.start_run(run_name="walk-forward" if walk_forward else f"recalibrate-{quarter}"):
        mlflow.set_tags({"model": "chs", "git_commit": tracking.git_commit()})
        for q in chosen:
            r = recalibrate(model, frame, q, spec.horizon_days, current)
            results.append(r)
            log(f"{q}: {'accepted' if r.accepted else 'kept current'} - {r.reason}; "
                f"weights {r.weights}")
            if walk_forward:
                with mlflow.start_run(run_name=f"recalibrate-{q}", nested=True):
                    _log(r)
            else:
                _log(r)
            if r.accepted:
                store.save(q, r.proposed, {"quarter": q, "backtest": r.proposed_backtest,
                                           "replaced": r.current})
                store.set_current(q)
                current = r.proposed
        table = summary_table(results)
        mlflow.log_text(table.to_markdown(index=False), "recalibration.md")
        rows = [{"quarter": r.quarter, "weights": r.weights} for r in results]
        tracking.save_figure(weights_plot(rows), "chs_weights_by_quarter", settings.reports_dir / "recalibration")
    return results
