"""Quarterly recalibration of the CHS layer weights, with a backtest gate.

For quarter Q with close date C:
- fit set: observations whose outcome window has closed by C (obs + horizon <= C), from the
  last ``FIT_QUARTERS`` quarters of such observations, so weights follow a changing business;
- backtest set: observations whose outcome window closes during the next quarter
  (C < obs + horizon <= C + 1 quarter) - outcomes nobody knew at C.
New weights replace the current ones only if the backtest ROC-AUC of the CHS improves by at
least ``MIN_GAIN`` and warning precision does not fall; otherwise the run records why not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.chs import LAYERS, HealthModel, fit_weights, warning_metrics

FIT_QUARTERS = 4
MIN_GAIN = 0.002


def quarter_bounds(quarter: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """'2025Q3' -> (start, close) as UTC timestamps; close is the first instant after the quarter."""
    try:
        period = pd.Period(quarter.upper(), freq="Q")
    except ValueError:
        raise ValueError(f"quarter must look like 2025Q3, got '{quarter}'") from None
    start = period.start_time.tz_localize("UTC")
    return start, (period + 1).start_time.tz_localize("UTC")


@dataclass
class Recalibration:
    quarter: str
    current: dict[str, float]
    proposed: dict[str, float]
    current_backtest: dict[str, float]
    proposed_backtest: dict[str, float]
    accepted: bool
    reason: str
    fit_rows: int
    backtest_rows: int

    @property
    def weights(self) -> dict[str, float]:
        return self.proposed if self.accepted else self.current


def recalibrate(model: HealthModel, frame: pd.DataFrame, quarter: str, horizon_days: int,
                current: dict[str, float] | None = None) -> Recalibration:
    """Pure: fit weights on outcomes known at the quarter's close, backtest on the next quarter.
    ``horizon_days``: the chs spec's label horizon (an outcome is known that long after its row)."""
    current = current or model.weights
    _, close = quarter_bounds(quarter)
    horizon = pd.Timedelta(days=horizon_days)
    matured = frame["event_timestamp"] + horizon
    fit = frame[(matured <= close) & (matured > close - pd.DateOffset(months=3 * FIT_QUARTERS))]
    back = frame[(matured > close) & (matured <= close + pd.DateOffset(months=3))]
    for name, part in (("fit", fit), ("backtest", back)):
        if len(part) < 50 or part["label"].nunique() < 2:
            raise ValueError(f"quarter {quarter}: the {name} window has {len(part)} rows "
                             f"and {part['label'].nunique()} outcome class(es); need >= 50 rows and both")
    proposed = fit_weights(model.layer_scores(fit), fit["label"].to_numpy())
    y = back["label"].to_numpy()
    cur_m = warning_metrics(model.score(back, current), y, model.thresholds)
    new_m = warning_metrics(model.score(back, proposed), y, model.thresholds)
    gain = new_m["chs_roc_auc"] - cur_m["chs_roc_auc"]
    prec_ok = not (new_m["warning_precision"] < cur_m["warning_precision"] - 1e-9)
    if gain >= MIN_GAIN and prec_ok:
        accepted, reason = True, f"backtest ROC-AUC {cur_m['chs_roc_auc']:.4f} -> {new_m['chs_roc_auc']:.4f}"
    elif gain < MIN_GAIN:
        accepted, reason = False, (f"backtest ROC-AUC gain {gain:+.4f} below the required {MIN_GAIN:+.4f}: "
                                   "current weights kept")
    else:
        accepted, reason = False, (f"warning precision would fall {cur_m['warning_precision']:.3f} -> "
                                   f"{new_m['warning_precision']:.3f}: current weights kept")
    return Recalibration(quarter, dict(current), proposed, cur_m, new_m, accepted, reason, len(fit), len(back))


def quarters_in(frame: pd.DataFrame, horizon_days: int) -> list[str]:
    """Quarters whose close leaves both a fit and a backtest window inside the data."""
    horizon = pd.Timedelta(days=horizon_days)
    matured = frame["event_timestamp"] + horizon
    first, last = matured.min(), matured.max()
    out = []
    for q in pd.period_range(first.tz_localize(None), last.tz_localize(None), freq="Q"):
        _, close = quarter_bounds(str(q))
        if first + pd.DateOffset(months=3) <= close and close + pd.DateOffset(months=3) <= last + pd.Timedelta(days=1):
            out.append(str(q))
    return out


class WeightStore:
    """Versioned weight sets on disk (one JSON per quarter + ``current.json``) for serving."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def save(self, version: str, weights: dict[str, float], meta: dict) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        body = {"version": version, "weights": weights, **meta}
        path = self.root / f"{version}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2, default=str))
        tmp.replace(path)
        return path

    def set_current(self, version: str) -> None:
        tmp = self.root / "current.tmp"
        tmp.write_text(json.dumps({"version": version}))
        tmp.replace(self.root / "current.json")

    def current(self) -> dict | None:
        pointer = self.root / "current.json"
        if not pointer.exists():
            return None
        version = json.loads(pointer.read_text())["version"]
        return json.loads((self.root / f"{version}.json").read_text())

    def history(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*Q*.json"))]


def weights_plot(rows: list[dict]):
    from training.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    quarters = [r["quarter"] for r in rows]
    for layer in LAYERS:
        if all(layer in r["weights"] for r in rows):
            ax.plot(quarters, [r["weights"][layer] for r in rows], marker="o", label=layer)
    ax.set(ylim=(0, 1), ylabel="weight", title="CHS layer weights by quarter (in force after the quarter)")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def summary_table(rows: list[Recalibration]) -> pd.DataFrame:
    return pd.DataFrame([{
        "quarter": r.quarter, "accepted": r.accepted,
        **{f"w_{k}": v for k, v in r.weights.items()},
        "backtest_auc_current": r.current_backtest["chs_roc_auc"],
        "backtest_auc_proposed": r.proposed_backtest["chs_roc_auc"],
        "warning_precision": (r.proposed_backtest if r.accepted else r.current_backtest)["warning_precision"],
        "reason": r.reason,
    } for r in rows])

