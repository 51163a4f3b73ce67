"""The one way into Feast: the store of the settings, opened on their Feast yaml.

Below both ``store`` (build, apply, materialize, push) and ``training_sets`` (point-in-time
retrieval), which use it; ``features.store.open_store`` is the same function.
"""

from __future__ import annotations

from pathlib import Path

from salesml.settings import Settings


def open_store(settings: Settings):
    from feast import FeatureStore

    settings.ensure_dirs()
    # Relative source paths in features/definitions.py resolve against repo_path.  Feast expands
    # the yaml's ${VARS} once, here.
    with settings.feast_environment():
        return FeatureStore(repo_path=str(settings.feature_data_dir), fs_yaml_file=Path(settings.feast_yaml))
