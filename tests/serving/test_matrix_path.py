"""The request path without frames (``Batch``, ``feature_matrix``, the models' ``*_codes``) answers what
the frame path answers: the same accounts and leads scored both ways, every field, every role.

The frame path (``ScoringCore.frame_path = True``) is the oracle: it is the path every earlier answer
came from (``prepare_features``, ``predict_proba``, ``contributions``, ``HealthModel.health``)."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from serving.auth import Caller
from training.data import FeatureSpec, feature_matrix, prepare_features

ROLES = [Caller("t-admin", "admin"), Caller("t-csm", "csm"), Caller("t-sales", "sales")]
SINCE = datetime(2025, 9, 1, tzinfo=timezone.utc)


def _both(core, call):
    """``call(core)`` through the matrix path, then through the frame path (restored afterwards)."""
    assert not core.frame_path
    fast = call(core)
    core.frame_path = True
    try:
        slow = call(core)
    finally:
        core.frame_path = False
    return fast, slow


def _same(fast, slow, path="answer"):
    """Equal, floats within 1e-9 (probabilities; scores and effects are rounded alike and compare exactly)."""
    if isinstance(slow, dict):
        assert isinstance(fast, dict) and fast.keys() == slow.keys(), (path, sorted(fast), sorted(slow))
        for k in slow:
            _same(fast[k], slow[k], f"{path}.{k}")
    elif isinstance(slow, list):
        assert isinstance(fast, list) and len(fast) == len(slow), path
        for i, (a, b) in enumerate(zip(fast, slow)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(slow, float):
        assert isinstance(fast, float) and abs(fast - slow) <= 1e-9, (path, fast, slow)
    else:
        assert fast == slow, (path, fast, slow)


def _accounts_with_history(settings) -> list[str]:
    usage = pd.read_parquet(settings.raw_dir / "usage_weekly.parquet", columns=["account_id", "week_start"])
    span = usage.groupby("account_id")["week_start"].agg(["min", "max"])
    end = usage["week_start"].max()
    return span[(span["min"] < pd.Timestamp(SINCE) - pd.Timedelta(weeks=2))
                & (span["max"] >= end)].index.astype(str).tolist()




@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
def test_every_account_and_200_leads_answer_alike_both_ways(core, served_settings):
    accounts = pd.read_parquet(served_settings.raw_dir / "accounts.parquet")["account_id"].astype(str).tolist()
    leads = pd.read_parquet(served_settings.raw_dir / "leads.parquet")["lead_id"].astype(str).tolist()[:200]
    assert core.models["chs"]["champion"].model.matrix_ready and core.models["intent"]["champion"].model.matrix_ready
    for caller in ROLES:
        fast, slow = _both(core, lambda c, caller=caller: c.health(caller, accounts + ["A9999999"], request_id="r",
                                                                   record=False))
        assert len(slow["results"]) == len(accounts) + 1 and "error" in slow["results"][-1]
        _same(fast, slow, f"health[{caller.role}]")
        fast, slow = _both(core, lambda c, caller=caller: c.intent(caller, leads + ["L9999999"], request_id="r"))
        _same(fast, slow, f"intent[{caller.role}]")
    for assign in (False, True):  # the lead x rep pairs scored as a matrix: the same ranking, reasons, proposal
        fast, slow = _both(core, lambda c, assign=assign: c.match(ROLES[1], leads[:60] + ["L9999999"], top=3,
                                                                  assign=assign, request_id="r"))
        _same(fast, slow, f"match[assign={assign}]")
        if assign:  # the sum over the leads proposed: it was NaN whenever a lead was left unassigned
            total = sum(p["expected_conversion"] for p in fast["assignment"]["proposals"] if p["rep_id"] is not None)
            assert fast["assignment"]["expected_conversions"] == pytest.approx(total)
    # a change since a date: the previous features of every account read at once, attributed alike
    with_history = _accounts_with_history(served_settings)[:60]  # the frame path attributes one by one: slow
    assert len(with_history) >= 50, len(with_history)
    for caller in (ROLES[0], ROLES[2]):  # sales sees the change without its layers
        fast, slow = _both(core, lambda c, caller=caller: c.health(caller, with_history, since=SINCE, request_id="r",
                                                                   record=False))
        assert all("change" in r for r in slow["results"])
        _same(fast, slow, f"health since[{caller.role}]")
    # rows given in the request (the features read back online, some left out, a flag as true/false)
    frame = core.online(core.specs["chs"].feature_service, "account_id", accounts[:30]).drop(columns="_known")
    spec = core.models["chs"]["champion"].model.spec
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items() if k in spec.columns}
            for r in frame.to_dict("records")]
    for r in rows[::3]:
        r.pop(spec.numeric[0], None)
    fast, slow = _both(core, lambda c: c.health(ROLES[1], rows=copy.deepcopy(rows), request_id="r", record=False))
    _same(fast, slow, "health rows")


def test_feature_matrix_reads_values_as_prepare_features_does():
    spec = FeatureSpec(["a", "b", "flag"], {"plan": ["basic", "pro"], "region": ["eu", "us"]})
    columns = {"a": [1, None, 3.5, float("nan")], "b": [2.0, "x", None, 4], "flag": [True, False, None, 1],
               "plan": ["pro", "gold", None, "basic"], "region": ["us", 5, "eu", None]}
    x = feature_matrix(columns, spec, 4)
    prepared = prepare_features(pd.DataFrame(columns), spec)
    for j, c in enumerate(spec.numeric):
        np.testing.assert_array_equal(x[:, j], prepared[c].to_numpy(np.float64))
    for j, c in enumerate(spec.categorical, start=len(spec.numeric)):
        codes = prepared[c].cat.codes.to_numpy().astype(float)
        codes[codes < 0] = np.nan
        np.testing.assert_array_equal(x[:, j], codes)


def _training_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"usage": rng.normal(size=n), "seats": rng.integers(0, 50, n).astype(float),
                          "plan": rng.choice(["basic", "pro", "max"], n)})
    frame.loc[rng.random(n) < 0.2, "usage"] = np.nan
    logit = frame["usage"].fillna(0) + (frame["plan"] == "pro")
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.mark.parametrize("categorical", [True, False])
def test_boosters_and_linear_models_score_a_matrix_as_they_score_a_frame(categorical):
    from training.models import fit_linear_model, fit_xgboost

    frame = _training_frame()
    spec = FeatureSpec(["usage", "seats"], {"plan": ["basic", "max", "pro"]} if categorical else {})
    models = [fit_xgboost(frame[:300], frame[300:], spec, seed=1, params={"n_estimators": 40})]
    if not categorical:  # a linear model with one-hot levels keeps sklearn's frame path (matrix_ready False)
        models.append(fit_linear_model(frame[:300], spec, seed=1, name="linear"))
    for model in models:
        assert model.matrix_ready
        x = feature_matrix(frame, spec, len(frame))
        np.testing.assert_allclose(model.predict_codes(x), model.predict_proba(frame), rtol=0, atol=1e-12)
        frame_contrib = model.contributions(frame).drop(columns="bias").to_numpy()
        np.testing.assert_allclose(model.contributions_codes(x), frame_contrib, rtol=0, atol=1e-9)
        many = pd.concat([frame] * 3, ignore_index=True)  # >= treeshap.MIN_ROWS: the bulk TreeSHAP
        np.testing.assert_allclose(model.contributions_codes(feature_matrix(many, spec, len(many))),
                                   model.contributions(many).drop(columns="bias").to_numpy(), rtol=0, atol=1e-9)
    if categorical:
        assert not fit_linear_model(frame[:300], spec, seed=1, name="linear").matrix_ready


@pytest.mark.parametrize("full_kind", ["xgboost", "linear"])
def test_a_health_model_scores_a_matrix_as_it_scores_a_frame(full_kind):
    """The CHS composition (layer sub-scores, weights, churn, drivers; the change attributed row by row
    against all rows at once), with an XGBoost full model (the served test home's CHS full model is the
    logistic one) and a linear one."""
    from training.chs import HealthModel
    from training.models import fit_linear_model, fit_xgboost

    frame = _training_frame(seed=4)
    full_spec = FeatureSpec(["usage", "seats"], {} if full_kind == "linear" else {"plan": ["basic", "max", "pro"]})
    fit = dict(seed=2, params={"n_estimators": 30})
    layers = {"behaviour": fit_xgboost(frame[:300], frame[300:], FeatureSpec(["usage"]), name="b", **fit),
              "contract": fit_xgboost(frame[:300], frame[300:], FeatureSpec(["seats"], dict(full_spec.categorical)),
                                      name="c", **fit)}
    full = (fit_linear_model(frame[:300], full_spec, seed=2, name="full") if full_kind == "linear"
            else fit_xgboost(frame[:300], frame[300:], full_spec, name="full", **fit))
    model = HealthModel(layers, full, base_logit=-0.3, weights={"behaviour": 0.6, "contract": 0.4})
    assert model.matrix_ready
    turn = np.arange(len(frame)) % 3
    frame["early_warning"] = np.where(turn == 0, 1.0, np.where(turn == 1, 0.0, np.nan))
    x = feature_matrix(frame, full_spec, len(frame))
    _same(model.health_codes(x, frame["early_warning"].tolist()), model.health(frame))
    before, after = frame.iloc[:40].reset_index(drop=True), frame.iloc[40:80].reset_index(drop=True)
    rows, scores = model.attribute_change_rows(before, after)
    for i in range(40):
        _same(rows[i], model.attribute_change(before.iloc[i], after.iloc[i]), f"change[{i}]")
        assert scores[i] == model.health(before.iloc[[i]])[0]["score"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.mlflow
def test_the_online_read_per_view_returns_what_feast_returns(core, served_settings, monkeypatch):
    """``online_batch`` selects each view from Feast's SQLite tables (in several statements here); Feast's
    own ``get_online_features(...).to_dict()`` gives the same values, unknown and repeated ids included."""
    import serving.core

    monkeypatch.setattr(serving.core, "SQLITE_KEYS_PER_SELECT", 7)
    accounts = pd.read_parquet(served_settings.raw_dir / "accounts.parquet")["account_id"].astype(str).tolist()[:40]
    leads = pd.read_parquet(served_settings.raw_dir / "leads.parquet")["lead_id"].astype(str).tolist()[:40]
    for model, key, ids in (("chs", "account_id", accounts), ("intent", "lead_id", leads)):
        ids = ids + [ids[0], "X0000000"]
        service = core.specs[model].feature_service
        assert core._online_views(service) is not None  # plain views: the per-view read is the one taken
        batch = core.online_batch(service, key, ids)
        feast = core.store.get_online_features(features=core._service(service),
                                               entity_rows=[{key: i} for i in ids]).to_dict()
        assert set(batch.columns) == set(feast)
        for name, values in feast.items():
            assert batch.columns[name] == values, (model, name)
        assert batch.known.tolist() == [True] * (len(ids) - 1) + [False]
        # and the frame built from it (``online``, the frame path's and /match's read) as Feast's to_df() gives it
        from features.training_sets import numbers_as_floats

        feast_frame = numbers_as_floats(core.store.get_online_features(
            features=core._service(service), entity_rows=[{key: i} for i in ids]).to_df(), core._service(service))
        feast_frame["_known"] = feast_frame.drop(columns=key).notna().any(axis=1)
        frame = core.online(service, key, ids)
        assert set(frame.columns) == set(feast_frame.columns)
        pd.testing.assert_frame_equal(frame[list(feast_frame.columns)], feast_frame)
    reps = list(core.active_reps) + ["R9999999"]  # the reps' state, read the same way for /match
    names = [f"rep_state:{f.name}" for f in core.store.get_feature_view("rep_state").features]
    feast_reps = core.store.get_online_features(features=names, entity_rows=[{"rep_id": r} for r in reps]).to_df()
    feast_reps["_known"] = feast_reps.drop(columns="rep_id").notna().any(axis=1)
    ours = core.online_reps(reps)
    assert set(ours.columns) == set(feast_reps.columns) and ours["_known"].tolist()[-1] is False
    pd.testing.assert_frame_equal(ours[list(feast_reps.columns)], feast_reps)
    assert core._online_views(core.specs["lead_match"].feature_service) is None  # its on-demand view: Feast


def test_stored_values_read_as_feast_converts_them():
    from feast.protos.feast.types.Value_pb2 import Null, Value
    from feast.type_map import feast_value_type_to_python_type

    from serving.core import _python_value

    values = [Value(double_val=1.5), Value(float_val=0.1), Value(int64_val=-7), Value(int32_val=3),
              Value(bool_val=True), Value(bool_val=False), Value(string_val="pro"), Value(string_val=""), Value(),
              Value(null_val=Null.NULL), Value(unix_timestamp_val=1_700_000_000), Value(bytes_val=b"x")]
    for v in values:
        assert _python_value(v, feast_value_type_to_python_type) == feast_value_type_to_python_type(v), v
    assert _python_value(None, feast_value_type_to_python_type) is None
