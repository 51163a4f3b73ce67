"""Importing ``features`` skips typeguard's instrumentation of Feast's own classes (see features/__init__.py),
and only theirs: a fresh interpreter shows both sides."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_feast_classes_are_not_instrumented_and_other_code_still_is(tmp_path):
    (tmp_path / "checked_elsewhere.py").write_text(
        textwrap.dedent(
            """
            from typeguard import typechecked

            @typechecked
            def half(x: int) -> float:
                return x / 2

            @typechecked()
            class Box:
                def put(self, x: str) -> str:
                    return x
            """
        )
    )
    probe = textwrap.dedent(
        """
        import features
        import feast
        from feast.feature_view import FeatureView
        from feast.on_demand_feature_view import OnDemandFeatureView
        from typeguard import TypeCheckError

        import checked_elsewhere

        for cls in (FeatureView, OnDemandFeatureView, feast.Entity, feast.Field, feast.FileSource):
            assert "typeguard" not in cls.__init__.__code__.co_names, cls
        for call in (lambda: checked_elsewhere.half("2"), lambda: checked_elsewhere.Box().put(3)):
            try:
                call()
            except TypeCheckError:
                pass
            else:
                raise AssertionError("typeguard stopped checking a module outside Feast")
        assert checked_elsewhere.half(3) == 1.5
        import importlib

        import typeguard

        importlib.reload(features)  # importing it again does not wrap the decorator twice
        assert not hasattr(typeguard.typechecked.__wrapped__, "__wrapped__")
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
