"""`clfops ui` as users meet it: the link lands on the training runs table (headless Chromium), runs say who
ran them, and SIGTERM stops the whole process tree and frees the port."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from clfops.tracking.tracker import Tracker
from conftest import CLFOPS, free_port


def _descendants(pid: int) -> set[int]:
    """Every live (not zombie) process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """A new server can listen on `port` (SO_REUSEADDR, as uvicorn: the browser's closed connections may
    leave TIME_WAIT entries, which do not keep a server from starting)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def _chromium(url: str, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "Debian chromium is not installed (`make test` installs it as root)"
    args = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=30000", "--window-size=1400,900", *mode, url,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.multiprocess
def test_ui_lands_on_training_runs_and_sigterm_stops_everything(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.start(store, "fashion_mnist", "tiny-cnn", {}, 10.0)
    c = MlflowClient(store)
    c.log_param(tracker.run_id, "model.name", "cnn")
    c.log_metric(tracker.run_id, "test/acc", 0.875)
    c.set_terminated(tracker.run_id)
    exp = c.get_experiment_by_name("fashion_mnist")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert c.get_run(tracker.run_id).data.tags["mlflow.user"] == getpass.getuser()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen(
        [*CLFOPS, "ui", "--port", str(port), "--uri", store], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        first = ui.stdout.readline() if ui.stdout else ""
        url = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
        assert url in first, first
        deadline = time.monotonic() + 180  # the server's start-up: wait for it, assert nothing about its speed
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "mlflow ui never answered"
                time.sleep(0.5)
        dom = _chromium(url, tmp_path, "--dump-dom").stdout
        assert "tiny-cnn" in dom and "Run Name" in dom, dom[-3000:]  # the runs table, with our run
        assert not re.search(r">\s*Traces\s*0\s*<|Detect Issues", dom)  # not the GenAI overview
        shot = tmp_path / "ui.png"
        _chromium(url, tmp_path, f"--screenshot={shot}")
        img = np.asarray(Image.open(shot).convert("L"))
        assert img.shape == (900, 1400) and img.std() > 10

        tree = _descendants(ui.pid)
        assert tree, "clfops ui started no mlflow process"
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
        survivors = [pid for pid in tree if _alive(pid)]
        assert not survivors, survivors
        assert _port_free(port)
    finally:
        if ui.poll() is None:
            ui.kill()
