"""The command line stays light: no heavy library is imported to print help."""

import subprocess
import sys

from typer.testing import CliRunner

from salesml.cli import app


def test_help_lists_stages():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("data", "features", "bench"):
        assert group in result.output


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from salesml.cli import app\n"
        "CliRunner().invoke(app, ['features', '--help'])\n"
        "heavy = [m for m in ('feast', 'mlflow', 'xgboost', 'bentoml', 'evidently', 'optuna', 'duckdb', 'pandas')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unknown_model_is_a_clear_error():
    result = CliRunner().invoke(app, ["features", "training-set", "--model", "nope"])
    assert result.exit_code == 2
    assert "unknown model 'nope'" in result.output
