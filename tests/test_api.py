"""The Python API against the CLI on the same model; user config folders; Hydra's multirun grammar."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

import clfops
from conftest import TINY, run_cli


def test_import_clfops_loads_no_torch() -> None:
    code = "import clfops, sys; clfops.RunResult; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> clfops.RunResult:
    root = tmp_path_factory.mktemp("api")
    return clfops.train([*TINY, f"run.root={root / 'runs'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}"])


def test_train_returns_the_run(trained: clfops.RunResult) -> None:
    summary = json.loads((trained.run_dir / "summary.json").read_text())
    assert trained.test_acc == summary["test_acc"] and 0.1 < trained.test_acc <= 1
    assert trained.run_id == summary["run_id"] and trained.summary["run_id"] == trained.run_id
    assert trained.model_uri
    uri = f"sqlite:///{trained.run_dir.parents[1] / 'mlflow.db'}"
    metrics = MlflowClient(uri).get_run(trained.run_id).data.metrics
    assert metrics["test/acc"] == pytest.approx(trained.test_acc)


def test_evaluate_matches_the_cli(trained: clfops.RunResult, tmp_path: Path) -> None:
    result = clfops.evaluate(trained.run_dir, data="test", out=tmp_path / "api")
    proc = run_cli("evaluate", "--run-dir", str(trained.run_dir), "--out", str(tmp_path / "cli"))
    assert proc.returncode == 0, proc.stderr
    cli_report = json.loads((tmp_path / "cli" / "classification_report.json").read_text())
    assert result.report["accuracy"] == pytest.approx(cli_report["accuracy"])
    assert (tmp_path / "api" / "classification_report.json").is_file()


def test_predict_matches_the_cli_for_paths_arrays_and_pil(trained: clfops.RunResult, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    paths = []
    for i, a in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    frame = clfops.predict(str(trained.run_dir), [str(p) for p in paths], top_k=2)
    proc = run_cli("predict", "--run-dir", str(trained.run_dir), *map(str, paths), "--out", str(tmp_path / "p.json"))
    assert proc.returncode == 0, proc.stderr
    cli = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert list(frame["file"]) == [row["file"] for row in cli]
    assert list(frame["class"]) == [row["class"] for row in cli]
    assert np.allclose(frame["probability"], [row["probability"] for row in cli], atol=1e-6)
    assert list(frame["class_2"]) == [row["top_k"][1]["class"] for row in cli]
    from_array = clfops.predict(trained.run_dir, arrays)
    with warnings.catch_warnings():  # a PIL image's pixels are read-only: no "non-writable array" warning
        warnings.simplefilter("error")
        from_pil = clfops.predict(trained.run_dir, Image.fromarray(arrays[0]))
    assert np.allclose(from_array["probability"], frame["probability"], atol=1e-6)
    assert from_pil["class"][0] == frame["class"][0]
    from_folder = clfops.predict(trained.run_dir, tmp_path)
    assert len(from_folder) == 3


def test_load_model_takes_uint8_and_gives_probabilities(trained: clfops.RunResult) -> None:
    import torch

    for ref in (trained.run_dir, trained.run_dir / "checkpoints" / "best.ckpt"):
        model = clfops.load_model(ref)
        assert model.classes[0] == "T-shirt/top" and len(model.classes) == 10
        probs = model(torch.zeros((2, 1, 28, 28), dtype=torch.uint8))
        assert probs.dtype == torch.float64  # as `clfops predict` computes them: the same numbers
        assert probs.shape == (2, 10) and torch.allclose(probs.sum(1), torch.ones(2, dtype=torch.float64))


def test_api_mistakes_raise_user_errors(tmp_path: Path) -> None:
    with pytest.raises(clfops.UserError, match="not an MLflow run id"):
        clfops.load_model(tmp_path / "nope")
    with pytest.raises(clfops.UserError, match="no such choice"):
        clfops.train(["model=nope"])
    with pytest.raises(clfops.UserError, match="no such directory"):
        clfops.train([], config_dir=tmp_path / "missing")
    assert not (tmp_path / "runs").exists()


def _user_configs(root: Path) -> Path:
    conf = root / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "model").mkdir()
    (conf / "model" / "tiny_mlp.yaml").write_text("name: mlp\nargs:\n  hidden: 32\n  dropout: 0.0\n")
    (conf / "experiment" / "my.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny_mlp\nrun:\n  name: mine\n"
    )
    return conf


@pytest.mark.slow
def test_config_dir_adds_user_groups_to_the_packaged_ones(tmp_path: Path) -> None:
    conf = _user_configs(tmp_path)
    shown = run_cli("train", "--config-dir", "conf", "+experiment=my", "optimizer=sgd", "--cfg", "job", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "hidden: 32" in shown.stdout and "name: sgd" in shown.stdout  # user's model + packaged optimizer
    from_env = run_cli("train", "+experiment=my", "--cfg", "job", cwd=tmp_path, env={"CLFOPS_CONFIG_DIR": str(conf)})
    assert from_env.returncode == 0 and "hidden: 32" in from_env.stdout
    info = run_cli("lr-find", "--config-dir", "conf", "+experiment=nope", cwd=tmp_path)
    assert info.returncode == 2 and "valid experiment choices: cifar_resnet, mnist_cnn, my" in info.stderr
    missing = run_cli("train", "--config-dir", "absent", cwd=tmp_path)
    assert missing.returncode == 2 and "absent: no such directory" in missing.stderr
    trained = run_cli(
        "train", "--config-dir", "conf", "+experiment=my", *TINY, f"tracking.uri=sqlite:///{tmp_path}/m.db",
        cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "hidden: 32" in (tmp_path / "runs" / "mine" / "config.yaml").read_text()
    result = clfops.train(
        [*TINY, "+experiment=my", "tracking.enabled=false", f"run.root={tmp_path}/r"], config_dir=conf
    )
    assert result.run_dir == tmp_path / "r" / "mine" and result.run_id is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["optimizer.lr=1e-3,3e-3"], "several values make a grid; run it with -m"),
        (["hydra.run.dir=out"], "the run dir is run.root=DIR run.name=NAME"),
        (["--cfg", "all"], "--cfg all: clfops runs no Hydra app"),
        (["--hydra-help"], "--hydra-help: not an option"),
    ],
)
def test_hydra_conventions_refused_in_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    proc = run_cli("train", *args, cwd=tmp_path)
    assert proc.returncode == 2 and expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_info_and_resolve(tmp_path: Path) -> None:
    info = run_cli("train", "--info", cwd=tmp_path)
    assert info.returncode == 0 and "pkg://clfops.configs" in info.stdout and "quick_cnn" in info.stdout
    resolved = run_cli("train", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert resolved.returncode == 0 and "seed: 0" in resolved.stdout


@pytest.mark.slow
def test_multirun_runs_the_grid_under_one_parent(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(
        "train", "-m", "optimizer.lr=1e-3,3e-3", "model=mlp,quick_cnn", *TINY, f"tracking.uri={store}", cwd=tmp_path,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "comparison" in proc.stdout and "optimizer.lr=0.003 model=quick_cnn" in proc.stdout
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("clfops.study.kind") == "multirun"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.001", "0.001", "0.003", "0.003"]
    assert {r.info.status for r in children} == {"FINISHED"}
    (study,) = (tmp_path / "studies").iterdir()
    assert len((study / "comparison.csv").read_text().splitlines()) == 5
