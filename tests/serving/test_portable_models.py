"""Every registered model loads and scores in a fresh environment of its logged requirements alone,
without this repository, and gives the probability the scoring service gives for the same row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from salesml.settings import REPO_ROOT
from serving.auth import Caller

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.mlflow]

ADMIN = Caller("t-admin", "admin")
MODELS = ("intent", "lead_match", "chs")

# Run by the fresh environment's Python in an empty folder: the model folder, the input row, where
# to write the probability. ``mlflow.pyfunc.load_model`` puts the model's own code on the path.
SCRIPT = """
import importlib.util, json, sys
from pathlib import Path
for name in ("serving", "salesml", "features"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable: the repository is on the path"
import mlflow.pyfunc, numpy as np, pandas as pd
model_dir, row, out = sys.argv[1:]
model = mlflow.pyfunc.load_model(model_dir)
import training.portable
assert Path(training.portable.__file__).resolve().is_relative_to(Path(model_dir).resolve()), training.portable.__file__
p = np.asarray(model.predict(pd.read_pickle(row)), dtype=np.float64).ravel()
Path(out).write_text(json.dumps([float(v) for v in p]))
"""


def _uv() -> str:
    local = REPO_ROOT / ".tools" / "bin" / "uv"  # make install bootstraps it
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (make install bootstraps it into .tools/bin)")
    return found


def _ids(settings, table: str, col: str, n: int) -> list[str]:
    return pd.read_parquet(settings.raw_dir / f"{table}.parquet", columns=[col])[col].tail(n).tolist()


def _served_rows(core, settings) -> dict[str, tuple[pd.DataFrame, float, str]]:
    """Per model: the frame serving scores for one entity, the probability the core answers for it
    and the version it served."""
    from features.transforms import lead_rep_fit

    lead, acc = _ids(settings, "leads", "lead_id", 1)[0], _ids(settings, "accounts", "account_id", 1)[0]
    rep = core.active_reps[0]
    out = {}
    r = core.intent(ADMIN, [lead])["results"][0]
    out["intent"] = (core.online(core.specs["intent"].feature_service, "lead_id", [lead]), r["probability"],
                     r["model"]["version"])
    r = core.health(ADMIN, [acc])["results"][0]
    out["chs"] = (core.online(core.specs["chs"].feature_service, "account_id", [acc]), r["churn_probability"],
                  r["model"]["version"])
    # a lead x rep pair as ScoringCore.match builds it
    leads = core.online(core.specs["intent"].feature_service, "lead_id", [lead]).drop(columns="_known")
    pairs = leads.merge(core.online_reps([rep]).drop(columns="_known"), how="cross")
    pairs = pd.concat([pairs, lead_rep_fit(pairs)], axis=1)
    r = core.match(ADMIN, [lead], rep_ids=[rep], top=1)["results"][0]
    assert r["ranked_reps"][0]["rep_id"] == rep
    out["lead_match"] = (pairs, r["ranked_reps"][0]["expected_conversion"], r["model"]["version"])
    return out


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory, served_settings, core):
    """The served versions' MLflow models downloaded, and one virtual environment (uv, from its cache)
    with the union of their requirements: (python, {model: folder}, rows, timings)."""
    import mlflow

    root = tmp_path_factory.mktemp("portable")
    rows = _served_rows(core, served_settings)
    folders, requirements, timings = {}, {}, {}
    for name in MODELS:
        folders[name] = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{rows[name][2]}", dst_path=str(root / name)))
        requirements[name] = (folders[name] / "requirements.txt").read_text().split()
    union = sorted({r for reqs in requirements.values() for r in reqs})
    assert all(set(reqs) == set(union) for reqs in requirements.values()), requirements
    assert not [r for r in union if r.split("==")[0].lower() in ("feast", "bentoml", "salesml")], union
    (root / "requirements.txt").write_text("\n".join(union) + "\n")
    uv, t = _uv(), time.perf_counter()
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(root / "requirements.txt")],
                   check=True, timeout=600)
    timings["venv_s"] = time.perf_counter() - t
    yield python, folders, rows, timings
    shutil.rmtree(root / "venv", ignore_errors=True)  # about 1.3 GB: not kept with pytest's last temp folders


def test_each_model_scores_without_the_repository_as_serving_does(fresh_env, tmp_path):
    python, folders, rows, timings = fresh_env
    from mlflow.models import Model

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "score.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = ""
    for name in MODELS:
        frame, served, _ = rows[name]
        inputs = Model.load(str(folders[name])).signature.inputs.input_names()
        row = frame[[c for c in inputs if c in frame.columns]]
        # the signature declares every numeric input a double (training.tracking.log_model)
        row = row.astype({c: "float64" for c in row.columns if pd.api.types.is_integer_dtype(row[c].dtype)
                          or pd.api.types.is_bool_dtype(row[c].dtype)})
        row.to_pickle(tmp_path / f"{name}.pkl")
        t = time.perf_counter()
        run = subprocess.run([str(python), "score.py", str(folders[name]), str(tmp_path / f"{name}.pkl"),
                              str(tmp_path / f"{name}.json")], cwd=run_dir, env=env, capture_output=True,
                             text=True, timeout=300)
        timings[f"{name}_s"] = time.perf_counter() - t
        assert run.returncode == 0, run.stderr[-4000:]
        (p,) = json.loads((tmp_path / f"{name}.json").read_text())
        assert np.isclose(p, served, rtol=0, atol=1e-9), (name, p, served)
    print("portable models:", {k: round(v, 1) for k, v in timings.items()})


def test_served_models_reproduce_the_training_runs_predictions(core):
    """Rebuilt from the portable files, each served model scores its training reference rows as the
    model in memory at training time did (training.pipeline.reference_frame)."""
    from training.tracking import load_reference

    for name in MODELS:
        loaded = core.models[name]["champion"]
        ref = load_reference(name, loaded.version, core.settings)
        np.testing.assert_array_equal(np.asarray(loaded.model.predict_proba(ref), dtype=np.float64),
                                      ref["prediction"].to_numpy(np.float64))
