"""Shared fixtures: the real configs composed with small, fast overrides; runs and MLflow store in tmp."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clfops import config as C

REPO = Path(__file__).resolve().parents[1]
CLFOPS = [sys.executable, "-m", "clfops.cli"]

# A run small enough for a test (~5 s on 2 cores) that still exercises every stage of `clfops train`.
TINY = [
    "data.train_limit=600",
    "data.val_fraction=0.2",  # 480 train / 120 val: the tiny split tests count on (the default is 0.1)
    "data.test_limit=2000",  # scoring 10k test images (+ report) would dominate a tiny run
    "data.batch_size=64",
    "data.eval_batch_size=500",
    "trainer.max_epochs=1",
    "logging.progress=none",
    "trainer.precision=32-true",
]


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store for this test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def compose(tmp_path: Path, store: str):
    """compose(*overrides) -> DictConfig: the real configs, tiny settings, runs + store under tmp_path."""

    def _compose(*overrides: str, tiny: bool = True):
        base = [f"run.root={tmp_path / 'runs'}", f"tracking.uri={store}"]
        return C.compose("train", [*base, *(TINY if tiny else []), *overrides])

    return _compose


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300):
    """Run `clfops ARGS…` as a real subprocess; returns CompletedProcess with text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*CLFOPS, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextlib.contextmanager
def pg_database(port: int = 5432, maintenance_db: str = "test") -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1 (trust auth), dropped afterwards whoever is still connected."""
    import psycopg

    name = f"clfops_test_{uuid.uuid4().hex[:12]}"
    admin = f"host=127.0.0.1 port={port} user=postgres dbname={maintenance_db} connect_timeout=5"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
