"""A real export on the documented path (issue 22 item 11): what `data validate` says must be what
`features build` and `features training-set` then do, and a mistake is named before anything is built."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from salesml.cli import app
from salesml.simulator.shapes import prospect_list, purchases_only, snapshot_subscription


def _text(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _cli(home: Path, *args: str):
    return CliRunner(env={"SALESML_HOME": str(home)}).invoke(app, list(args))


def _misnamed_activity(folder: Path) -> Path:
    """A purchases-only export whose salesml.yaml names an activity column the usage table lacks."""
    purchases_only(folder, n=60, seed=4)
    cfg = yaml.safe_load((folder / "salesml.yaml").read_text())
    cfg["models"]["chs"]["churn"]["activity"] = "order"  # the column is 'orders'
    (folder / "salesml.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def test_a_misnamed_churn_activity_fails_validate_and_build_with_its_name(tmp_path):
    raw, home = _misnamed_activity(tmp_path / "raw"), tmp_path / "home"
    for args in (["data", "validate", str(raw), "--model", "chs"], ["data", "validate", str(raw)]):
        result = _cli(home, *args)
        assert result.exit_code == 1, result.output
        assert "usage_weekly has no column 'order' (has account_id, week_start" in _text(result)
        assert "model chs cannot be trained" in _text(result)
    built = _cli(home, "features", "build", "--raw", str(raw))
    assert built.exception is None or isinstance(built.exception, SystemExit), built.exception
    assert built.exit_code == 2, built.output
    assert "usage_weekly has no column 'order'" in _text(built) and "Binder" not in _text(built)
    assert not list((home / "data" / "features").glob("*.parquet"))  # nothing half-built


def test_training_set_after_a_failed_build_names_the_folder_it_read_and_why(tmp_path):
    raw, home = _misnamed_activity(tmp_path / "raw"), tmp_path / "home"
    assert _cli(home, "features", "build", "--raw", str(raw)).exit_code == 2
    for state in ("does not exist", "holds none of its tables"):
        result = _cli(home, "features", "training-set", "--model", "chs")
        assert result.exit_code == 2, result.output
        text = _text(result)
        assert "declare export.as_of" not in text
        assert f"{home / 'data' / 'raw'} (the home's default export folder: no `features build` has succeeded" in text
        assert state in text
        (home / "data" / "raw").mkdir(parents=True, exist_ok=True)  # then it exists but is empty


def test_plain_validate_says_chs_cannot_be_trained_on_a_leads_only_export(tmp_path):
    prospect_list(tmp_path, n=200, seed=1)
    everything = _cli(tmp_path / "home", "data", "validate", str(tmp_path))
    assert everything.exit_code == 0, everything.output  # the export itself is fine: intent can be trained
    assert "model intent can be trained" in _text(everything)
    assert ("model chs cannot be trained: model 'chs' is observed on usage_weekly or contracts "
            "(label.observe.tables); the export has neither") in _text(everything)
    only = _cli(tmp_path / "home", "data", "validate", str(tmp_path), "--model", "chs")
    assert only.exit_code == 1
    assert "observed on usage_weekly or contracts" in _text(only)


def test_a_left_out_contract_column_names_the_features_it_leaves_empty(tmp_path):
    snapshot_subscription(tmp_path, n=300, seed=2)
    contracts = pd.read_csv(tmp_path / "contracts.csv").drop(columns=["tier"])
    contracts.to_csv(tmp_path / "contracts.csv", index=False)
    result = _cli(tmp_path / "home", "data", "validate", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "left out: contracts.tier: empty features: tier_rank" in _text(result)
    assert "left out: contracts.annual_value" not in _text(result)


def _frames() -> dict[str, pd.DataFrame]:
    import tempfile

    from salesml.contract import TABLES
    from salesml.simulator import generate
    from salesml.validation import read_export

    with tempfile.TemporaryDirectory() as d:
        generate(Path(d), accounts=30, leads=60, reps=5, weeks=16, seed=3, truth_samples=0)
        return read_export(Path(d), optional={t.name: set(t.omittable) for t in TABLES.values()}).frames


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return _frames()


def test_the_left_out_column_map_is_what_the_build_does(frames):
    """Every omittable contract column is in FED_BY_OMITTABLE, and dropping it empties exactly the
    stored features listed there (the lead-rep fit flags are computed at request time)."""
    from features.store import empty_features
    from features.transforms import FEATURE_TYPES, FED_BY_OMITTABLE, build_all
    from salesml.contract import TABLES

    assert {t: set(c) for t, c in FED_BY_OMITTABLE.items()} == {
        t.name: set(t.omittable) for t in TABLES.values() if t.omittable}
    assert not empty_features(build_all(frames))
    for table, columns in FED_BY_OMITTABLE.items():
        for column, feeds in columns.items():
            cut = {**frames, table: frames[table].drop(columns=[column])}
            emptied = {c for cols in empty_features(build_all(cut)).values() for c in cols}
            assert emptied == set(feeds) - set(FEATURE_TYPES["lead_rep_fit"]), (table, column)
