"""Only clfops' own UserError family is a one-line `clfops: error: ...` with exit 2; any other exception is a bug
and shows its traceback (exit 1). `clfops --debug` / CLFOPS_DEBUG=1 show the traceback of a user error too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# `clfops sync DIR` on a folder that is not a run dir: TrackingError (a UserError) before anything loads torch.
NOT_A_RUN_DIR = "not a clfops run dir"

# `clfops runs` with the run-dir lister replaced by one that fails the way a library bug does.
BUG = """
import sys
import clfops.tracking.rundirs as rundirs

def broken(root):
    raise ValueError("operands could not be broadcast together")  # what a bug inside numpy looks like

rundirs.list_runs = broken
from clfops.cli import entry
sys.argv = ["clfops", *sys.argv[1:]]
entry()
"""


def clfops(*args: str, cwd: Path, debug_env: str | None = None, code: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "CLFOPS_DEBUG"}
    if debug_env is not None:
        env["CLFOPS_DEBUG"] = debug_env
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "clfops.cli", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_user_error_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = clfops("sync", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"clfops: error: {tmp_path}: {NOT_A_RUN_DIR} (no config.yaml)"]


@pytest.mark.parametrize(("argv", "env"), [(["--debug"], None), ([], "1")], ids=["--debug", "CLFOPS_DEBUG=1"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path, argv: list[str], env: str | None) -> None:
    proc = clfops(*argv, "sync", str(tmp_path), cwd=tmp_path, debug_env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", proc.stderr
    assert any(line.startswith("clfops.tracking.store.TrackingError:") for line in lines), proc.stderr
    assert lines[-1].startswith("clfops: error: ") and NOT_A_RUN_DIR in lines[-1]


def test_clfops_debug_0_is_off(tmp_path: Path) -> None:
    proc = clfops("sync", str(tmp_path), cwd=tmp_path, debug_env="0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_a_bug_shows_its_traceback_and_exits_1(tmp_path: Path) -> None:
    """A ValueError from a library is not a user mistake: it must not be turned into a tidy one-liner."""
    proc = clfops("runs", "--root", str(tmp_path), cwd=tmp_path, code=BUG)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback (most recent call last):" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "ValueError: operands could not be broadcast together"
    assert "clfops: error" not in proc.stderr


def test_config_mistakes_found_in_training_code_are_user_errors() -> None:
    """Checks that used to raise ValueError (and reached the user only because the CLI turned every ValueError
    into one line) raise clfops' own errors now."""
    import torch
    from omegaconf import OmegaConf

    from clfops.config import ConfigError
    from clfops.data import DataError, Source, Split
    from clfops.data.loader import make_splits
    from clfops.errors import UserError
    from clfops.training.callbacks import ema_callback
    from clfops.training.schedules import OptimizerSettings, SchedulerSettings, build_optimizer, build_scheduler

    assert issubclass(ConfigError, UserError) and issubclass(DataError, UserError)
    ema = OmegaConf.create({"enabled": True, "decay": 2.0, "start_step": 0})
    with pytest.raises(ConfigError, match=r"trainer\.ema\.decay=2\.0: must be in \(0, 1\)"):
        ema_callback(ema, swa_enabled=False)
    images = Split(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64))
    source = Source(name="tiny", train=images, test=images, classes=["a"], sha256="")
    with pytest.raises(DataError, match=r"data\.val_fraction=1.5: must be in \[0, 1\)"):
        make_splits(source, 1.5, 0, 100)
    with pytest.raises(DataError, match=r"data\.train_limit=1: need at least 2 images"):
        make_splits(source, 0.2, 0, 1)
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"optimizer\.name='lion': valid choices are sgd, adam, adamw"):
        build_optimizer(net, OptimizerSettings(name="lion", lr=0.1, weight_decay=0.0))
    optimizer = build_optimizer(net, OptimizerSettings(name="sgd", lr=0.1, weight_decay=0.0))
    with pytest.raises(ConfigError, match=r"scheduler\.name='wavy': valid choices are none, step"):
        build_scheduler(optimizer, SchedulerSettings(name="wavy"), steps_per_epoch=10, epochs=2)
