"""The score store on tiny inline runs: dated files, atomic replacement, one account's history."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow as pa
import pytest

from salesml.settings import Settings
from serving import scores

D1, D2, D3 = date(2026, 9, 7), date(2026, 9, 14), date(2026, 9, 21)


def _run(as_of: date, scores_by_account: dict[str, float], levels: dict[str, str] | None = None) -> pd.DataFrame:
    ids = list(scores_by_account)
    return pd.DataFrame({"account_id": ids, "as_of": as_of, "scored_at": pd.Timestamp.now(tz="UTC"),
                         "model_version": "3", "weights_version": "2026Q3", "run_id": f"run-{as_of}",
                         "score": [scores_by_account[i] for i in ids],
                         "level": [(levels or {}).get(i, "yellow") for i in ids],
                         "churn_probability": 0.2, "early_warning": pd.array([False] * len(ids), dtype="boolean"),
                         "change_points": 1.0, "change_text": "CHS +1.0: behaviour +1.0 (api_calls +40%)"})


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


def test_runs_are_dated_files_read_back_in_order(settings):
    for d, s in ((D2, 52.0), (D1, 50.0), (D3, 47.5)):
        scores.write(settings, "chs", d, _run(d, {"A1": s, "A2": 70.0}))
    assert scores.runs(settings, "chs") == [D1, D2, D3]
    assert scores.latest(settings, "chs") == D3
    assert scores.previous(settings, "chs", D3) == D2
    assert scores.previous(settings, "chs", D1) is None
    assert scores.previous(settings, "chs", date(2026, 9, 15)) == D2  # strictly before, any date
    assert scores.read(settings, "chs", D1)["score"].tolist() == [50.0, 70.0]
    assert scores.runs(settings, "intent") == []
    with pytest.raises(FileNotFoundError, match="no chs scores for 2026-09-08.*2026-09-07, 2026-09-14"):
        scores.read(settings, "chs", date(2026, 9, 8))
    with pytest.raises(ValueError, match="model 'lead_match'"):
        scores.runs(settings, "lead_match")


def test_rewriting_a_date_replaces_it_and_keeps_the_others(settings):
    scores.write(settings, "chs", D1, _run(D1, {"A1": 50.0}))
    scores.write(settings, "chs", D2, _run(D2, {"A1": 51.0}))
    scores.write(settings, "chs", D2, _run(D2, {"A1": 40.0, "A2": 60.0}))
    assert scores.runs(settings, "chs") == [D1, D2]
    assert scores.read(settings, "chs", D2)["score"].tolist() == [40.0, 60.0]
    assert scores.read(settings, "chs", D1)["score"].tolist() == [50.0]
    assert sorted(p.name for p in scores.model_dir(settings, "chs").iterdir()) == ["2026-09-07.parquet",
                                                                                  "2026-09-14.parquet"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(settings):
    path = scores.write(settings, "chs", D1, _run(D1, {"A1": 50.0}))
    before = path.read_bytes()
    broken = _run(D1, {"A1": 10.0, "A2": 20.0}).assign(change_text=["fine", {"not": "text"}])  # mixed types
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        scores.write(settings, "chs", D1, broken)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert scores.read(settings, "chs", D1)["score"].tolist() == [50.0]


def test_level_counts_per_run(settings):
    scores.write(settings, "chs", D1, _run(D1, {"A1": 70.0, "A2": 40.0}, {"A1": "green", "A2": "orange"}))
    scores.write(settings, "chs", D2, _run(D2, {"A1": 30.0, "A2": 40.0}, {"A1": "red", "A2": "orange"}))
    counts = scores.level_counts(settings)
    assert list(counts.columns) == ["green", "yellow", "orange", "red"]
    assert counts.loc[D1].tolist() == [1, 0, 1, 0] and counts.loc[D2].tolist() == [0, 0, 1, 1]
    fig = scores.plot_levels(counts)
    assert len(fig.axes[0].patches) == 8  # one bar per level and run


def _export(folder, tables: dict[str, pd.DataFrame]):
    folder.mkdir(parents=True)
    for name, df in tables.items():
        df.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_history_places_each_event_in_its_interval_and_names_absent_tables(settings, tmp_path):
    export = _export(tmp_path / "export", {
        "contracts": pd.DataFrame({"contract_id": ["C1", "C1", "C2"], "account_id": ["A1", "A1", "A2"],
                                   "tier": ["pro", "pro", "basic"],
                                   "start_date": [_ts("2025-10-01")] * 3,
                                   "end_date": [_ts("2026-09-10")] * 2 + [_ts("2026-09-12")],
                                   "snapshot_at": [_ts("2026-08-01"), _ts("2026-09-01"), _ts("2026-09-01")]}),
        "interactions": pd.DataFrame({"interaction_id": ["I1", "I2", "I3", "I4"],
                                      "account_id": ["A1", "A1", "A2", "A1"],
                                      "occurred_at": [_ts("2026-09-14 12:00"), _ts("2026-09-15"), _ts("2026-09-16"),
                                                      _ts("2026-10-01")],
                                      "channel": ["call", "qbr", "email", "email"], "notes": ["private"] * 4}),
    })
    settings.record_export_dir(export)
    for d, s in ((D1, 50.0), (D2, 48.0), (D3, 51.5)):
        scores.write(settings, "chs", d, _run(d, {"A1": s, "A2": 60.0}))
    h = scores.history(settings, "A1")
    assert h.timeline["as_of"].tolist() == [D1, D2, D3]
    assert h.timeline["score"].tolist() == [50.0, 48.0, 51.5]
    assert h.timeline["change_text"].iloc[1].startswith("CHS +1.0")
    ev = h.events.set_index("kind")
    # the renewal on 09-10 lies in (D1, D2]; the call at noon on D2 still belongs to D2's run (end of day)
    assert ev.loc["renewal", "as_of"] == D2 and ev.loc["renewal", "detail"] == "C1 pro"
    calls = h.events[h.events["kind"] == "interaction"].set_index("detail")["as_of"]
    assert calls["call"] == D2 and calls["qbr"] == D3 and pd.isna(calls["email"])  # email: after the last run
    assert "A2" not in " ".join(h.events["detail"]) and "private" not in h.events.to_string()  # notes never
    assert h.sources["contracts"] == "2 row(s)" and h.sources["interactions"] == "3 row(s)"
    assert h.sources["churn_events"].startswith("absent: the export") and "churn_events" not in set(h.events["source"])
    assert h.sources["live usage"].startswith("absent")
    fig = scores.plot_timeline(h)
    assert fig.axes[0].get_title() == "Customer health of A1"


def test_history_of_an_unknown_account_is_empty(settings, tmp_path):
    settings.record_export_dir(_export(tmp_path / "export", {}))
    scores.write(settings, "chs", D1, _run(D1, {"A1": 50.0}))
    h = scores.history(settings, "nobody")
    assert h.timeline.empty and h.events.empty
    assert all(v.startswith("absent") for v in h.sources.values())
    scores.plot_timeline(h)  # an empty figure, not an error
