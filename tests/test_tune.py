"""LR range test and batch-size test on the real recipe, on tiny subsets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from clfops import config as C
from clfops.tracking import client
from clfops.tuning import TuningError
from clfops.tuning.batch_size_find import batch_size_find, pick_batch_size, write_batch_size
from clfops.tuning.lr_find import lr_find, resolve_lr_auto, suggest_lr
from conftest import run_cli

SMALL = ["data.train_limit=400", "data.batch_size=64", "trainer.precision=32-true"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_lr_find_cli_plot_json_mlflow_and_suggestion_inside_tested_range(tmp_path: Path, store: str) -> None:
    out = tmp_path / "lrf"
    args = ["--steps", "40", "--min-lr", "1e-5", "--max-lr", "0.5", "--out", str(out), "--log-mlflow"]
    proc = run_cli("lr-find", *SMALL, f"tracking.uri={store}", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "lr_find.json").read_text())
    lr = data["suggested_lr"]
    assert 1e-5 <= min(data["lrs"]) <= lr <= max(data["lrs"]) <= 0.5
    assert lr in data["lrs"] and len(data["lrs"]) == len(data["losses"]) > 13
    assert (out / "lr_find.png").read_bytes()[:8] == PNG
    assert f"suggested optimizer.lr={lr:.3g}" in proc.stdout
    run_id = proc.stdout.split("MLflow run ")[1].split()[0]
    c = client(store)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lr-find"
    assert run.data.metrics["lr_find/suggested_lr"] == pytest.approx(lr)
    assert len(c.get_metric_history(run_id, "lr_find/loss")) == len(data["losses"])
    assert {a.path for a in c.list_artifacts(run_id)} >= {"lr_find.png", "lr_find.json"}


def test_suggestion_is_the_steepest_descent_per_decade() -> None:
    # A loss that falls fastest (per decade of LR) at 1e-3 on an exponential sweep, then blows up.
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = [2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) + (5.0 if lr > 0.3 else 0.0) for lr in lrs]
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3, rel=0.2)
    losses[50] = float("nan")  # a non-finite point is skipped, not picked
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3, rel=0.2)
    assert suggest_lr(lrs[:12], losses[:12]) is None  # too few points after skipping the first 10


@pytest.mark.slow
def test_lr_find_diverging_range_gives_no_suggestion_and_bad_range_is_refused(tmp_path: Path, compose) -> None:
    cfg = compose("data.train_limit=300")
    result = lr_find(cfg, 1e2, 1e6, 20, tmp_path)  # AdamW at LR 100+: the loss explodes in a couple of steps
    assert result.diverged and result.suggestion is None and len(result.losses) < 20
    with pytest.raises(TuningError, match="min-lr"):
        lr_find(cfg, 1e-1, 1e-3, 20, tmp_path)


@pytest.mark.slow
def test_optimizer_lr_auto_becomes_a_number_recorded_as_tuning_lr_found(tmp_path: Path) -> None:
    base = [f"run.root={tmp_path / 'runs'}", *SMALL]
    assert resolve_lr_auto(base) == (base, None)
    overrides, lr = resolve_lr_auto([*base, "optimizer.lr=auto"], steps=30)
    assert lr is not None and 1e-6 <= lr <= 1.0
    cfg = C.compose("train", overrides)
    assert cfg.optimizer.lr == lr and cfg.tuning.lr_found == lr
    assert "optimizer.lr=auto" not in overrides


@pytest.mark.slow
def test_batch_size_find_has_a_row_per_size_and_a_pick(tmp_path: Path, compose) -> None:
    cfg = compose("data.train_limit=300")
    rows = batch_size_find(cfg, [32, 16], warmup=1, steps=2)
    assert [r.batch_size for r in rows] == [16, 32]
    assert all(r.status == "ok" and r.img_s and r.img_s > 0 and r.step_ms for r in rows)
    choice = pick_batch_size(rows)
    assert choice["largest_fit"] == 32 and choice["recommended"] in (16, 32) and choice["fastest"] in (16, 32)
    data = json.loads(write_batch_size(rows, choice, cfg, tmp_path / "out").read_text())
    assert [r["batch_size"] for r in data["rows"]] == [16, 32] and data["recommended"] == choice["recommended"]
    with pytest.raises(TuningError):
        batch_size_find(cfg, [], warmup=1, steps=2)
