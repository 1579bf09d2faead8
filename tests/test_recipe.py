"""`recipe: auto`: the defaults for this machine's arithmetic, chosen once at compose and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clfops import config as C
from clfops.config.recipe import machine_recipe
from clfops.hardware import resolve_precision
from conftest import TINY, run_cli


def test_auto_follows_the_precision_this_machine_trains_in() -> None:
    cfg = C.compose("train", [])
    expected = "fp32" if resolve_precision("auto", "auto") == "32-true" else "bf16"
    assert cfg.recipe == expected  # resolved, never left as auto
    assert machine_recipe("32-true", "cpu") == "fp32"
    assert machine_recipe("bf16-mixed", "cpu") == "bf16"
    # Precision named by hand picks the recipe made for it, on any machine.
    assert C.compose("train", ["trainer.precision=32-true"]).recipe == "fp32"
    assert C.compose("train", ["trainer.precision=bf16-mixed"]).recipe == "bf16"


@pytest.mark.parametrize(("recipe", "width", "hidden", "epochs"), [("fp32", 24, 256, 5), ("bf16", 32, 128, 6)])
def test_each_recipe_sets_its_keys(recipe: str, width: int, hidden: int, epochs: int) -> None:
    cfg = C.compose("train", [f"recipe={recipe}"])
    args = cfg.model.args
    assert (cfg.recipe, args.width, args.hidden, cfg.trainer.max_epochs) == (recipe, width, hidden, epochs)


def test_the_command_line_wins_and_other_models_keep_their_defaults() -> None:
    cfg = C.compose("train", ["recipe=fp32", "model.args.width=32"])
    assert (cfg.model.args.width, cfg.trainer.max_epochs) == (32, 5)
    cfg = C.compose("train", ["recipe=fp32", "trainer.max_epochs=6"])
    assert (cfg.model.args.width, cfg.trainer.max_epochs) == (24, 6)
    cfg = C.compose("train", ["recipe=fp32", "model=cnn"])  # the recipe tunes quick_cnn only
    assert cfg.trainer.max_epochs == 6 and cfg.recipe == "fp32"


def test_a_bad_recipe_is_one_line(tmp_path: Path) -> None:
    res = run_cli("train", "recipe=fast", f"run.root={tmp_path / 'runs'}", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == "clfops: error: recipe: expected one of: auto, fp32, bf16, got 'fast'"
    assert not (tmp_path / "runs").exists()


def test_cfg_job_shows_the_chosen_recipe(tmp_path: Path) -> None:
    res = run_cli("train", "--cfg", "job", "recipe=fp32", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "\nrecipe: fp32\n" in res.stdout and "width: 24" in res.stdout and "max_epochs: 5" in res.stdout


@pytest.mark.slow
def test_a_run_records_its_recipe_and_a_resume_keeps_it(compose, store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from clfops.training.train import train

    summary = train(compose("run.name=r", "recipe=fp32"))
    run_dir = Path(summary["run_dir"])
    assert summary["recipe"] == "fp32"
    assert json.loads((run_dir / "summary.json").read_text())["recipe"] == "fp32"
    assert "recipe: fp32" in (run_dir / "config.yaml").read_text()
    assert MlflowClient(store).get_run(summary["run_id"]).data.params["recipe"] == "fp32"
    with pytest.raises(C.ConfigError, match="recipe: the run trains recipe fp32; a resume keeps it"):
        C.resume_config(C.from_yaml(run_dir / "config.yaml"), ["recipe=bf16"])

    # A fine-tune of it on another machine's recipe (bf16: width 32) trains the parent's width 24: the shapes
    # are the parent's, so model.args the command line does not name come from its manifest.
    child = train(compose("run.name=child", "recipe=bf16", f"model.init={run_dir}"), ["recipe=bf16"])
    assert "width: 24" in (Path(child["run_dir"]) / "config.yaml").read_text()
    assert MlflowClient(store).get_run(child["run_id"]).data.params["model.args.width"] == "24"
    # Naming another width is a clash: one line, exit 2, no run dir.
    root = tmp_path / "clash"
    res = run_cli(
        "train", *TINY, f"model.init={run_dir}", "model.args.width=32", f"run.root={root}",
        f"tracking.uri={store}", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "model.args.width=32: drop it to keep the parent's shapes" in res.stderr and "width': 24" in res.stderr
    assert not root.exists()
