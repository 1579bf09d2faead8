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
