"""The CLI answers --help without importing torch, Lightning or MLflow."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "mlflow", "hydra")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    code = (
        "import sys\nfrom clfops.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def test_train_help_lists_groups_and_choices() -> None:
    proc = subprocess.run([sys.executable, "-m", "clfops.cli", "train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for text in ("model", "fast_cnn", "resnet18", "scheduler", "onecycle", "plateau", "augment", "strong"):
        assert text in proc.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evaluate", "--run-dir", "x", "--precision", "bogus"], "Invalid value for '--precision'"),
        (["promote", "--bogus"], "No such option '--bogus'"),
        (["predict"], "Missing argument 'SOURCES...'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_option_mistakes_are_one_line_with_exit_2(argv: list[str], expected: str) -> None:
    """Click's own usage errors read like every other clfops error: one line, naming where help is."""
    proc = subprocess.run([sys.executable, "-m", "clfops.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clfops: error: ") and expected in lines[0], proc.stderr
    assert "--help" in lines[0] and "Traceback" not in proc.stderr


def test_bare_command_prints_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "clfops.cli"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout.startswith("Usage: clfops") and "train" in proc.stdout
