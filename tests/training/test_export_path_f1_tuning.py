"""A tuning study is tied to the training set and split its trials were measured on (issue 22 item 11):
a new seed or new data gets a fresh study; a named study measured on something else is refused."""

from __future__ import annotations

import pytest

from salesml.settings import Settings
from training import tuning

pytestmark = [pytest.mark.optuna]


def test_a_study_records_its_training_set_and_seed_and_refuses_another(tmp_path):
    settings = Settings(home=tmp_path)
    study = tuning.open_study(settings, "chs", "shared", seed=0, heartbeat=1, grace=3, digest="aaaa1111")
    assert study.user_attrs["dataset_digest"] == "aaaa1111" and study.user_attrs["seed"] == 0
    study.tell(study.ask(), 0.7)
    again = tuning.open_study(settings, "chs", "shared", seed=0, heartbeat=1, grace=3, digest="aaaa1111")
    assert len(again.get_trials()) == 1  # workers of one study on one training set share it
    for digest, seed in (("bbbb2222", 0), ("aaaa1111", 1)):
        with pytest.raises(tuning.StudyMismatch, match=r"study 'shared' holds trials measured on training set "
                           r"aaaa1111 with --seed 0; this run has training set " + digest + f" with --seed {seed}"):
            tuning.open_study(settings, "chs", "shared", seed=seed, heartbeat=1, grace=3, digest=digest)


def test_a_study_from_before_with_trials_and_no_record_is_refused(tmp_path):
    settings = Settings(home=tmp_path)
    old = tuning.open_study(settings, "chs", "old", seed=0, heartbeat=1, grace=3)
    old.tell(old.ask(), 0.7)
    with pytest.raises(tuning.StudyMismatch, match="a training set and split it does not record"):
        tuning.open_study(settings, "chs", "old", seed=0, heartbeat=1, grace=3, digest="aaaa1111")


@pytest.mark.integration
@pytest.mark.mlflow
@pytest.mark.slow
def test_tune_with_another_seed_runs_its_own_trials(tmp_path, export_dir):
    """`salesml tune intent --seed 0` then `--seed 1`: the second ran 0 trials on the first's study."""
    from features.store import apply, build_feature_files

    settings = Settings(home=tmp_path)
    build_feature_files(settings, export_dir, progress=lambda _: None)
    apply(settings, progress=lambda _: None)
    first = tuning.run(settings, "intent", trials=1, seed=0, log=lambda _: None, register=False)
    second = tuning.run(settings, "intent", trials=1, seed=1, log=lambda _: None, register=False)
    assert first["ran"] == 1 and second["ran"] == 1
    assert first["study"] != second["study"] and first["study"].endswith("-seed0")
    again = tuning.run(settings, "intent", trials=1, seed=0, log=lambda _: None, register=False)
    assert again["study"] == first["study"] and again["ran"] == 0  # same data, same split: resumed
