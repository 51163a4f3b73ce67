"""The serving bench's anchor: the thinnest BentoML service over the champions' boosters (or, for a numeric
logistic champion, its imputer, scaler and coefficients as plain arrays: ``anchor.json`` says which).

``salesml bench serving`` starts it beside ``salesml serve`` (``bentoml serve
benchmarks.bare_service:BareScoring``) and measures both with the same client code. At start each
worker loads, from the folder named by ``SALESML_BARE_DIR`` (``benchmarks.serving_bare.export_anchor``
writes it from the bench home's champions): ``anchor.json`` (per model its iteration range, threads
and kind), each model's booster as XGBoost JSON (``<model>.json``) and its features in memory
(``<model>.npz``: the entity ids and the float matrix in the booster's column order, categoricals as
their codes, as the online store held them). Every call is a dictionary look-up and one
``inplace_predict``: no key, no log, no drivers, no Feast; the answer is probabilities only.

Workers and threads per worker come from ``SALESML_BARE_WORKERS`` / ``SALESML_BARE_THREADS`` (the
bench passes the scoring service's ``serve_workers`` / ``serve_threads``). It imports nothing of
this project.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import bentoml
import numpy as np

DIR_ENV = "SALESML_BARE_DIR"
WORKERS = int(os.environ.get("SALESML_BARE_WORKERS", "1"))
THREADS = int(os.environ.get("SALESML_BARE_THREADS", "1"))


class Anchor:
    """One model: its booster and its feature rows by entity id (``pairs``: per lead, one row per rep)."""

    def __init__(self, folder: Path, name: str, meta: dict):
        self.linear = meta.get("kind") == "linear"
        with np.load(folder / f"{name}.npz", allow_pickle=False) as data:
            self.x = np.ascontiguousarray(data["x"], dtype=np.float64)
            self.row = {str(i): k for k, i in enumerate(data["ids"].tolist())}
            self.reps = [str(r) for r in data["reps"].tolist()] if "reps" in data else []
            if self.linear:  # a numeric logistic champion: median imputer (+ missing indicators), scaler, dot
                self.median, self.mean, self.scale = data["median"], data["mean"], data["scale"]
                self.coef, self.indicators = data["coef"], data["indicators"]
                self.intercept = float(data["intercept"][0])
        if not self.linear:
            import xgboost as xgb

            self.booster = xgb.Booster()
            self.booster.load_model(str(folder / f"{name}.json"))
            if meta.get("nthread"):
                self.booster.set_param({"nthread": int(meta["nthread"])})
            self.trees = (int(meta["iteration_range"][0]), int(meta["iteration_range"][1]))

    def rows(self, ids: list[str]) -> list[int]:
        return [self.row[i] for i in ids]

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.linear:
            missing = np.isnan(x)
            u = np.hstack([np.where(missing, self.median, x), missing[:, self.indicators].astype(np.float64)])
            return 1.0 / (1.0 + np.exp(-(((u - self.mean) / self.scale) @ self.coef + self.intercept)))
        return self.booster.inplace_predict(x, iteration_range=self.trees)


def _load() -> tuple[dict[str, Anchor], dict[str, str]]:
    folder = Path(os.environ[DIR_ENV])
    manifest = json.loads((folder / "anchor.json").read_text())
    return ({name: Anchor(folder, name, meta) for name, meta in manifest["models"].items()},
            dict(manifest.get("skipped", {})))


@bentoml.service(name="salesml-bare", workers=WORKERS, threads=THREADS,
                 # BentoML's livez path is /health unless told: here it is a scoring endpoint, as in ours
                 endpoints={"livez": "/livez", "readyz": "/readyz"})
class BareScoring:
    def __init__(self) -> None:
        self.models, self.skipped = _load()

    def _model(self, name: str) -> Anchor:
        if name not in self.models:
            why = self.skipped.get(name, "not exported")
            raise bentoml.exceptions.ServiceUnavailable(f"no anchor for {name}: {why}")
        return self.models[name]

    @bentoml.api(route="/health")
    def health(self, account_ids: list[str]) -> dict:
        """Churn probability (the CHS booster) per account."""
        m = self._model("chs")
        return {"probabilities": m.predict(m.x[m.rows(account_ids)]).tolist()}

    @bentoml.api(route="/intent")
    def intent(self, lead_ids: list[str]) -> dict:
        """Conversion probability (the intent booster) per lead."""
        m = self._model("intent")
        return {"probabilities": m.predict(m.x[m.rows(lead_ids)]).tolist()}

    @bentoml.api(route="/match")
    def match(self, lead_ids: list[str], top: int = 3) -> dict:
        """Per lead, the ``top`` reps by probability (the lead_match booster over the lead's row with every rep)."""
        m = self._model("lead_match")
        k = m.rows(lead_ids)
        reps = len(m.reps)
        p = m.predict(m.x[k].reshape(len(k) * reps, -1)).reshape(len(k), reps)
        order = np.argsort(-p, axis=1, kind="stable")[:, :top]
        return {"results": [{"rep_ids": [m.reps[j] for j in order[i]], "probabilities": p[i, order[i]].tolist()}
                            for i in range(len(k))]}
