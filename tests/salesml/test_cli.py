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


def test_every_stage_module_is_wired_in():
    """The root app gathers the commands of each module of ``salesml.cli``, under their names."""
    import typer.main

    root = typer.main.get_command(app)
    assert list(root.commands) == [
        "train", "tune", "promote", "recalibrate", "serve", "serve-demo", "serve-stop", "bento-models",  # root
        "data", "features", "bench", "experiment", "drift", "keys", "team", "score", "warnings", "playbooks",
        "models"]
    assert list(root.commands["bench"].commands) == [
        "features", "training", "exports", "serving", "load", "scoring", "drift", "experiments", "tuning"]


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


def test_help_imports_neither_the_simulator_nor_the_benchmarks():
    """They are a checkout's tools, not in the wheel: the command line imports them inside the commands."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from salesml.cli import app\n"
        "for args in (['--help'], ['bench', '--help'], ['data', 'generate', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
        "print(','.join(m for m in sys.modules if m.startswith(('salesml.simulator', 'benchmarks'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_m_salesml_cli_is_the_salesml_command():
    out = subprocess.run([sys.executable, "-m", "salesml.cli", "--help"], capture_output=True, text=True, check=True)
    assert "Sales-intelligence ML platform" in out.stdout


def test_unknown_model_is_a_clear_error():
    result = CliRunner().invoke(app, ["features", "training-set", "--model", "nope"])
    assert result.exit_code == 2
    assert "unknown model 'nope'" in result.output
