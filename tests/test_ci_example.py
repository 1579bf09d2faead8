"""examples/ci/pipeline.sh end to end on a local store: aliases after every run, failing gates change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]  # real subprocesses: a training run / a model server
SCRIPT = REPO / "examples" / "ci" / "pipeline.sh"
NAME = "ci-classifier"


def pipeline(workdir: Path, store: str, **settings: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store,
        "MODEL_NAME": NAME,
        "CLFOPS": f"{sys.executable} -m clfops.cli",
        "TRAIN_ARGS": " ".join([*TINY, "data.test_limit=500"]),  # train and evaluate score 500 test images
        "STAGING_GATE": "eval/accuracy>=0.2 test/acc>=0.2",  # 1 epoch on 480 images: ~0.35 (chance 0.1)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **settings,
    }
    return subprocess.run(["bash", str(SCRIPT)], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def registry(store: str) -> tuple[dict[str, str], list[Any]]:
    c = MlflowClient(store)
    aliases = {a: str(v) for a, v in c.get_registered_model(NAME).aliases.items()}
    versions = sorted(c.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    return aliases, versions


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The full pipeline once: train, evaluate, register, staging, production."""
    workdir = tmp_path_factory.mktemp("ci")
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    proc = pipeline(workdir, store)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (workdir / "runs").iterdir()
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    return {"workdir": workdir, "store": store, "run_dir": run_dir, "run_id": run_id, "proc": proc}


def test_full_pipeline_promotes_to_staging_then_production(first: dict[str, Any]) -> None:
    aliases, versions = registry(first["store"])
    assert aliases == {"staging": "1", "production": "1"}
    (v1,) = versions
    assert v1.run_id == first["run_id"]
    assert v1.tags["promotion.staging"] == "passed" and v1.tags["promotion.production"] == "passed"
    assert "no production version yet" in v1.tags["promotion.production.reason"]
    run = MlflowClient(first["store"]).get_run(first["run_id"])
    assert "eval/acc" in run.data.metrics  # clfops evaluate --log-mlflow ran and the gate read it
    assert "from test/acc" not in v1.tags["promotion.staging.reason"]
    assert "registered model ci-classifier" in first["proc"].stdout  # the final `clfops models` table


def test_failing_production_gate_leaves_production_untouched(first: dict[str, Any]) -> None:
    # The same run again (no new training): it passes the staging gate, fails the production one.
    settings = {"RUN_ID": first["run_id"], "EVALUATE": "0", "PRODUCTION_GATE": "test/acc>=0.999"}
    proc = pipeline(first["workdir"], first["store"], **settings)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "not promoted" in proc.stderr and "test/acc" in proc.stderr
    aliases, versions = registry(first["store"])
    assert aliases == {"staging": "2", "production": "1"}  # staging moved, production did not
    v2 = versions[-1]
    assert v2.version == 2 and v2.run_id == first["run_id"]
    assert v2.tags["promotion.staging"] == "passed" and v2.tags["promotion.production"] == "failed"
    assert "does not hold" not in v2.tags["promotion.production.reason"]  # it held staging: the gate refused


def test_github_workflow_calls_the_pipeline() -> None:
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["pipeline"]["steps"]
    assert any(step.get("run") == "bash examples/ci/pipeline.sh" for step in steps)
    assert "MLFLOW_TRACKING_URI" in workflow["jobs"]["pipeline"]["env"]
