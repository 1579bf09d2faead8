"""`clfops sweep`: space files, storage URLs, pruning, resume, parallel workers, SQLite and PostgreSQL storage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml

from clfops import config as C
from clfops.config import ConfigError
from clfops.tracking import PARENT_TAG, child_run_ids, client
from clfops.tuning import TuningError
from clfops.tuning.search_space import Param, first_values, load_space
from clfops.tuning.storage import storage_url
from clfops.tuning.sweep import SweepSettings, run_sweep
from conftest import pg_database, run_cli

# One epoch, constant LR, batch 32: enough steps for val/acc to separate a good LR from a hopeless one.
RECIPE = [
    "data.train_limit=600",
    "data.test_limit=500",  # each trial scores the test set: 500 images, not 10k
    "data.batch_size=32",
    "data.eval_batch_size=500",
    "trainer.max_epochs=1",
    "trainer.precision=32-true",
    "scheduler=none",
    "logging.progress=none",
    "tracking.log_model=false",
]
PG = ("127.0.0.1", 5432)


def _recipe(tmp_path: Path, store: str) -> list[str]:
    return [f"run.root={tmp_path / 'runs'}", f"tracking.uri={store}", *RECIPE]


def test_space_file_documented_format_and_its_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "optimizer.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
        "data.batch_size: {type: categorical, choices: [64, 128, 256]}\n"
        "model.args.width: {type: int, low: 16, high: 64, step: 16}\n"
    )
    lr, batch, width = load_space(path)
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    assert batch.choices == (64, 128, 256) and (width.kind, width.step) == ("int", 16.0)
    cfg = C.compose("train", first_values([lr, batch, width]))  # how a sweep checks its keys before running
    assert (cfg.optimizer.lr, cfg.data.batch_size, cfg.model.args.width) == (1e-4, 64, 16)
    with pytest.raises(ConfigError):
        C.compose("train", first_values([*load_space(path), Param("model.args.depth", "int", 1, 3)]))
    for bad in (
        "optimizer.lr: {type: float, low: 1e-2, high: 1e-4}",
        "optimizer.lr: {type: float, low: 0, high: 1, log: true}",
        "optimizer.lr: {type: normal, low: 0, high: 1}",
        "data.batch_size: {type: categorical, choices: []}",
        "model.args.width: {type: int, low: 1.5, high: 4}",
        "optimizer.lr: 0.1",
        "[1, 2]",
    ):
        path.write_text(bad + "\n")
        with pytest.raises(TuningError, match="--space"):
            load_space(path)


def test_storage_defaults_next_to_the_sqlite_tracking_store(tmp_path: Path) -> None:
    assert storage_url(None, f"sqlite:///{tmp_path}/mlflow.db") == f"sqlite:///{tmp_path}/optuna.db"
    assert storage_url(None, "http://127.0.0.1:5000") == "sqlite:///optuna.db"
    assert storage_url("postgresql://u:p@h:5432/d", None) == "postgresql+psycopg://u:p@h:5432/d"
    assert storage_url("sqlite:///x.db", None) == "sqlite:///x.db"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sweep_prunes_resumes_to_five_with_two_workers(tmp_path: Path, store: str, capsys) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {type: float, low: 1.0e-7, high: 1.0e-2, log: true}\n")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    # A study made elsewhere (here: by Optuna itself) with a good and a hopeless LR queued first.
    study = optuna.create_study(study_name="lr", storage=url, direction="maximize")
    study.enqueue_trial({"optimizer.lr": 3e-3})
    study.enqueue_trial({"optimizer.lr": 1e-7})
    recipe = _recipe(tmp_path, store)
    out = tmp_path / "out"
    settings = SweepSettings(3, space, recipe, "lr", url, 1, out, prune_startup=1, prune_warmup=0)
    first = run_sweep(settings)
    assert first.finished == 3 and first.best_trial == 0
    trials = optuna.load_study(study_name="lr", storage=url).get_trials()
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "PRUNED"]

    c = client(store)
    pruned = c.get_run(trials[1].user_attrs["run_id"])
    assert pruned.info.status == "KILLED" and pruned.data.tags["clfops.pruned"] == "true"
    assert "error" not in pruned.data.tags
    assert json.loads((Path(trials[1].user_attrs["run_dir"]) / "status.json").read_text())["status"] == "KILLED"
    parent_id = pruned.data.tags[PARENT_TAG]
    assert c.get_run(parent_id).info.status == "FINISHED"
    lines = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\[\d/3\] trial ", line)]
    assert len(lines) == 3 and "PRUNED" in lines[1] and "| best " in lines[2]

    # Resume the same study to 5 trials with two worker processes (one thread each on 2 cores).
    args = ["--trials", "5", "--space", str(space), "--study-name", "lr", "--storage", url, "--jobs", "2"]
    proc = run_cli("sweep", *args, "--prune-startup", "1", "--prune-warmup", "0", "--out", str(out), *recipe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 finished trials, 2 to run with 2 worker(s)" in proc.stdout
    assert len([line for line in proc.stdout.splitlines() if re.match(r"\[\d/5\] trial ", line)]) == 2
    trials = optuna.load_study(study_name="lr", storage=url).get_trials()
    assert len(trials) == 5 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert sorted(child_run_ids(store, parent_id)) == sorted(t.user_attrs["run_id"] for t in trials)
    assert all(C.from_yaml(Path(t.user_attrs["run_dir"]) / "config.yaml").trainer.num_threads == 1 for t in trials[3:])
    best = optuna.load_study(study_name="lr", storage=url).best_trial
    recipe_lines = yaml.safe_load((out / "best_overrides.yaml").read_text())
    assert f"optimizer.lr={best.params['optimizer.lr']!r}" in recipe_lines
    assert C.compose("train", recipe_lines).optimizer.lr == best.params["optimizer.lr"]  # ready to run
    assert "clfops train " in (out / "best_overrides.yaml").read_text().splitlines()[2]
    assert len((out / "trials.csv").read_text().splitlines()) == 6


@pytest.mark.slow
@pytest.mark.postgres
def test_sweep_on_postgresql_storage(tmp_path: Path, store: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    with pg_database() as db:
        url = f"postgresql://postgres@{PG[0]}:{PG[1]}/{db}"
        settings = SweepSettings(1, space, _recipe(tmp_path, store), "pg", url, 1, tmp_path / "out")
        assert run_sweep(settings).finished == 1
        settings.trials = 2  # re-attached by name: one more trial
        result = run_sweep(settings)
        assert result.finished == 2 and result.best_trial is not None
        assert result.storage.startswith("postgresql+psycopg://postgres@")
        study = optuna.load_study(study_name="pg", storage=f"postgresql+psycopg://postgres@{PG[0]}:{PG[1]}/{db}")
        assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]
        assert (tmp_path / "out" / "best_overrides.yaml").is_file()
