"""Shared fixtures: the real configs composed with small, fast overrides; runs and MLflow store in tmp."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clfops import config as C
from seaweed import S3_KEY, S3_SECRET, free_port, seaweed_server  # noqa: F401 (re-exported to the tests)

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
    "tracking.log_onnx=false",  # the ONNX export costs 5-15 s; tests that need it turn it on
]


# What every run of the default recipe leaves in its run dir, and logs to its MLflow run.
RUN_FILES = (
    "config.yaml",
    "overrides.yaml",
    "metrics.csv",
    "train.log",
    "summary.json",
    "model_summary.txt",
    "learning_curves.png",
    "augment_preview.png",  # the default recipe flips
)


# Fixtures that start a service imply its marker (pyproject.toml lists the markers; `make test-fast` deselects
# them), so a new test that uses one is in the right tier without a decorator.
FIXTURE_MARKERS = {
    "seaweed": "s3",
    "private_pg": "postgres",  # test_server_faults: its own PostgreSQL cluster, restarted mid-run
    "pg_server": "postgres",
}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test`: -n auto), each worker gets its own share of the cores.

    Without it two workers on 2 cores each run torch with 2 threads (configure_threads counts the cores this
    process may use), 4 spinning OpenMP threads on 2 cores, which is slower than one worker. Pinned, a worker's
    runs and the `clfops` processes it starts (affinity is inherited) use 1 thread each, and the cores stay busy
    while the other worker waits on a subprocess, a server or a database.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and len(ALL_CORES) >= count:
        os.sched_setaffinity(0, ALL_CORES[int(worker.removeprefix("gw")) % count :: count])


ALL_CORES = sorted(os.sched_getaffinity(0))
HEAVY = ("slow", "multiprocess", "postgres", "mariadb", "s3", "browser")  # what `pytest --fast` leaves out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true", help="leave out the tests marked " + ", ".join(HEAVY))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fixtures imply their markers; then the files with the most heavy tests go first.

    xdist (--dist loadfile) hands whole files to workers in this order: long files first and short ones to
    fill in at the end (longest-first scheduling) keep a worker from running the last long file alone while
    the other core idles (the first xdist runs, in file-name order, ended that way).
    """
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in FIXTURE_MARKERS:
                item.add_marker(FIXTURE_MARKERS[fixture])
    weight: dict[str, int] = {}
    for item in items:
        heavy = any(item.get_closest_marker(m) for m in HEAVY)
        weight[item.nodeid.split("::")[0]] = weight.get(item.nodeid.split("::")[0], 0) + heavy
    items.sort(key=lambda item: -weight[item.nodeid.split("::")[0]])  # stable: a file keeps its own order
    if config.getoption("fast"):  # `make test-fast`
        heavy = {item.nodeid for item in items if any(item.get_closest_marker(m) for m in HEAVY)}
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in heavy])
        items[:] = [item for item in items if item.nodeid not in heavy]


@pytest.fixture(autouse=True)
def _every_core_for_several_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """A `multiprocess` test (DDP ranks, 8 concurrent runs, a server and its clients) may use every core, not
    just its xdist worker's one: its processes would otherwise share a single core."""
    if request.node.get_closest_marker("multiprocess") is None or os.sched_getaffinity(0) == set(ALL_CORES):
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, ALL_CORES)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


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


SHARED_RUN_MODEL = "auto-registered"  # tracking.register_as of the shared run


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny trained model per test session, logging the pyfunc, torch and ONNX models and registered as
    SHARED_RUN_MODEL: its summary plus `store`. The model tests (logging, ONNX, predict, promote, serving) reuse
    it read-only, each registering under its own model name, so that they do not each pay for a training run."""
    from clfops.training.train import train

    root = tmp_path_factory.getbasetemp() / "shared-registry-run"
    done = root / "shared.json"
    if done.is_file():
        return json.loads(done.read_text())
    root.mkdir(exist_ok=True)
    store = f"sqlite:///{root / 'mlflow.db'}"
    old = Path.cwd()
    os.chdir(root)  # MLflow puts a SQLite store's artifacts under ./mlruns of the working directory
    try:
        flavors = [
            "tracking.log_torch_flavor=true",
            "tracking.log_onnx=true",
            f"tracking.register_as={SHARED_RUN_MODEL}",
        ]
        overrides = [f"run.root={root / 'runs'}", f"tracking.uri={store}", *TINY, *flavors]
        summary = train(C.compose("train", overrides))
    finally:
        os.chdir(old)
    summary["store"] = store
    done.write_text(json.dumps(summary))
    return summary


@pytest.fixture
def shared_run_store(shared_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fluent MLflow calls (pyfunc.load_model on runs:/ or models:/ URIs, create_model_version) read the shared
    run's store from the environment. A module asks for it with pytest.mark.usefixtures("shared_run_store")."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)  # a URI set in-process would take precedence
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_run["store"])


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


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[dict[str, str]]:
    """SeaweedFS (master, volume, filer, S3) on loopback ports, one bucket `mlflow`; env for boto3/MLflow."""
    with seaweed_server(tmp_path) as env:
        yield env


@pytest.fixture(autouse=True)
def _mlflow_env_restored() -> Iterator[None]:
    """Each test starts from the environment the session started with: in-process train() calls set MLflow's
    variables (tracking URI, HTTP credentials) in os.environ, and a later test's subprocess would inherit them."""
    before = {k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "CLFOPS_"))}
    yield
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "CLFOPS_"))]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)
