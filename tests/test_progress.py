"""What a person sees while `clfops train` runs: the bar on a real terminal (tmux), and lines without one."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import CLFOPS, REPO, TINY, run_cli

# 300 images in batches of 8: 30 batches an epoch (240 train, 60 val), long enough to be seen on screen.
BAR_RUN = [o for o in TINY if not o.startswith(("logging.progress", "trainer.max_epochs", "data.batch_size"))]
BAR_RUN += ["data.train_limit=300", "trainer.max_epochs=3", "data.batch_size=8", "data.eval_batch_size=8"]
BAR_RUN += ["logging.progress=auto"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]|\x1b[=>78]")


def epoch_line(epochs: int) -> re.Pattern[str]:
    """A finished epoch's line, whole: `epoch 2/3  train/loss 0.41 … val/acc 0.84  1,812 img/s  3.1s`."""
    fields = "  ".join(f"{key} [\\d.]+" for key in ("train/loss", "train/acc", "val/loss", "val/acc"))
    return re.compile(rf"^epoch \d/{epochs}  {fields}  [\d,]+ img/s  [\d.]+s$")


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, check=True).stdout


def _train_in_tmux(tmp_path: Path) -> tuple[list[str], str, str]:
    """`clfops train` in a 160x50 tmux window: (screens captured while it ran, the whole pane after it, every
    byte it drew, escape codes removed: frames the screen captures missed, e.g. a short validation bar)."""
    socket, go, raw = f"clfops-{uuid.uuid4().hex[:8]}", tmp_path / "go", tmp_path / "pane.raw"
    args = [*CLFOPS, "train", f"run.root={tmp_path / 'runs'}", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", *BAR_RUN]
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "LANG": "C.UTF-8", "TERM": "xterm-256color"}
    command = f"while [ ! -e {go} ]; do sleep 0.05; done; cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES "
    command += f"{shlex.join(f'{k}={v}' for k, v in env.items())} {shlex.join(args)}; echo EXIT=$?; sleep 600"
    _tmux(socket, "-u", "new-session", "-d", "-x", "160", "-y", "50", command)
    screens: list[str] = []
    try:
        _tmux(socket, "pipe-pane", "-o", f"cat >> {raw}")  # before the command starts: it waits for `go`
        go.touch()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            screens.append(_tmux(socket, "capture-pane", "-p"))
            if "EXIT=" in screens[-1]:
                break
            time.sleep(0.05)
        final = _tmux(socket, "capture-pane", "-p", "-S", "-")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False)
    return screens, final, ANSI.sub("", raw.read_bytes().decode("utf-8", "replace"))


@pytest.mark.slow
def test_bar_on_a_terminal(tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is not installed (`make test-deps` installs it as root)"
    screens, final, drawn = _train_in_tmux(tmp_path)
    assert "EXIT=0" in final, final
    frames = [line.strip() for line in re.split(r"[\r\n]", drawn) if line.strip()]
    seen = [line.rstrip() for screen in screens for line in screen.splitlines()] + frames
    bar = re.compile(
        r"^epoch 2/3 \S* +\d+/30 +[\d,]+ img/s  loss [\d.]+  epoch \d+:\d\d<\d+:\d\d  run \d+:\d\d<\d+:\d\d$"
    )
    assert any(bar.match(line) for line in frames), "\n".join(frames[-30:])
    assert any(bar.match(line) for screen in screens for line in screen.splitlines()), "the bar was never on screen"
    assert any(re.match(r"^validate +\S* +\d+/8 +[\d,]+ img/s  \d+:\d\d$", line) for line in frames), (
        "no validation bar"
    )
    assert any(re.match(r"^test 2,000 images \S* +\d+:\d\d:\d\d$", line) for line in frames), "no test bar"
    assert not any("v_num" in line or "it/s" in line for line in seen)
    # Each finished epoch: its own line, whole, never glued to the bar, in the pane and in what was drawn.
    summaries = [line.rstrip() for line in final.splitlines() if "train/loss" in line]
    assert [s[:9] for s in summaries] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], final
    assert all(epoch_line(3).match(s) for s in summaries), summaries
    assert all(epoch_line(3).match(line) for line in frames if "train/loss" in line), frames
    # After the first epoch the bar never shows a reset state (`0/30` or a zero speed).
    after_first = drawn[drawn.index("epoch 1/3  train/loss") :]
    assert not re.search(r"(^|\s)0/\d+|(^|\s)0(\.0+)? img/s", after_first, re.MULTILINE), after_first
    # The bar is gone when training ends: the terminal keeps the epoch lines and the result.
    assert "test accuracy" in final and not any(re.search(r" \d+/30 ", line) for line in final.splitlines())


@pytest.mark.slow
def test_one_line_per_epoch_without_a_terminal(tmp_path: Path) -> None:
    args = [f"run.root={tmp_path / 'runs'}", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"]
    overrides = [o for o in TINY if not o.startswith(("logging.progress", "trainer.max_epochs"))]
    result = run_cli("train", *args, *overrides, "trainer.max_epochs=2", "logging.progress=auto")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "train/loss" in line]
    assert [line[:9] for line in lines] == ["epoch 1/2", "epoch 2/2"], result.stderr
    assert all(epoch_line(2).match(line) for line in lines), lines
    assert "━" not in result.stderr and "v_num" not in result.stderr
