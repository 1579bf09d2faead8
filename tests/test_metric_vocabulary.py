"""One metric vocabulary (README "Metrics") and calibrated confidence, read back through MlflowClient."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from clfops.evaluation.calibration import fit_temperature, nll
from clfops.evaluation.inputs import load_eval_data
from clfops.serving.inference import predict_logits
from clfops.serving.resolve import ModelRef, resolve_model
from clfops.serving.saved_model import read_manifest
from clfops.tracking.metric_names import ALIASES, QUANTITIES, canonical, same_quantity, upgrade
from clfops.training.train import train

README = Path(__file__).resolve().parents[1] / "README.md"


def test_old_names_read_as_todays() -> None:
    assert canonical("eval/accuracy") == canonical("eval/top1_accuracy") == "eval/acc"
    assert canonical("eval/macro_f1") == "eval/f1" and canonical("test/acc") == "test/acc"
    assert same_quantity("eval/log_loss") == ["eval/loss", "test/loss"]
    assert same_quantity("test/ece") == ["test/ece", "eval/ece"] and same_quantity("lr") == ["lr"]
    # A run logged before the change: per-step `train/loss` and the epoch's `train/loss_epoch`.
    old = {"train/loss": 0.9, "train/loss_epoch": 0.7, "eval/accuracy": 0.8, "eval/top1_accuracy": 0.8}
    assert upgrade(old) == {"train/loss_step": 0.9, "train/loss": 0.7, "eval/acc": 0.8}
    # Both spellings logged (an old run evaluated by a new clfops): today's name keeps its own value.
    assert upgrade({"eval/accuracy": 0.1, "eval/acc": 0.2}) == {"eval/acc": 0.2}


def test_the_readme_table_lists_every_name_once() -> None:
    table = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    names = [re.match(r"\| `([^`]+)`", line)[1] for line in table]  # type: ignore[index]
    assert len(names) == len(set(names))
    for quantity in QUANTITIES:
        assert f"test/{quantity}" in names, quantity
    for old in ALIASES:
        assert old not in names, old  # old names are aliases only, never documented as current


def test_temperature_minimises_nll_and_keeps_the_argmax() -> None:
    gen = torch.Generator().manual_seed(0)
    calibrated = 3.0 * torch.randn(4000, 5, generator=gen)
    targets = torch.multinomial(torch.softmax(calibrated, 1), 1, generator=gen).squeeze(1)  # T = 1 is right
    under = calibrated * 0.3  # an under-confident model of the same data: its best temperature is 0.3
    t = fit_temperature(under, targets)
    assert 0.25 < t < 0.35
    assert nll(under, targets, t) < nll(under, targets) and nll(under, targets, t) <= nll(under, targets, t * 1.1)
    assert torch.equal((under / t).argmax(1), under.argmax(1))
    assert fit_temperature(under[:0], targets[:0]) == 1.0


@pytest.mark.slow
def test_a_short_run_has_one_vocabulary_and_calibrated_confidence(compose, store: str) -> None:
    # 2 epochs of 8 steps, the step points every 50 steps: none, so before the change no `train/loss` at all.
    summary = train(compose("trainer.max_epochs=2", "tracking.log_every_n_steps=50"))
    client = MlflowClient(store)
    run = client.get_run(summary["run_id"])
    metrics = run.data.metrics
    epochs = client.get_metric_history(summary["run_id"], "train/loss")
    assert len(epochs) == 2 and len({m.step for m in epochs}) == 2  # one point per epoch
    assert "train/loss_step" not in metrics
    # One name per quantity: no old name, no Lightning suffix, no eval/* copy of training's test/*.
    assert not [k for k in metrics if k in ALIASES or k.endswith("_epoch") or k.startswith("eval/")]
    assert {f"test/{q}" for q in QUANTITIES} <= set(metrics)
    # Calibration: fitted on val, stored in the manifest, applied to every probability; the argmax unchanged.
    manifest = read_manifest(Path(summary["run_dir"]) / "model")
    assert manifest.temperature != 1.0 and metrics["val/temperature"] == pytest.approx(manifest.temperature)
    assert metrics["test/ece"] <= metrics["test/ece_uncalibrated"]
    assert metrics["test/loss"] <= metrics["test/loss_uncalibrated"]
    model = resolve_model(ModelRef.from_options(summary["run_dir"], None, None, None), None)
    test = load_eval_data("test", model).split
    calibrated = predict_logits(model.net, model.manifest, test.x)
    raw = predict_logits(model.net, dataclasses.replace(model.manifest, temperature=1.0), test.x)
    assert torch.equal(calibrated.argmax(1), raw.argmax(1))
    assert float((raw.argmax(1) == test.y).double().mean()) == pytest.approx(metrics["test/acc"], abs=1e-12)
    report = json.loads((Path(summary["run_dir"]) / "eval" / "classification_report.json").read_text())
    assert report["temperature"] == pytest.approx(manifest.temperature)
    html = (Path(summary["run_dir"]) / "eval" / "report.html").read_text()
    assert f"{manifest.temperature:.4f}" in html and "Temperature" in html


@pytest.mark.slow
def test_calibrate_false_keeps_the_raw_softmax(compose, store: str) -> None:
    summary = train(compose("model.calibrate=false"))
    metrics = MlflowClient(store).get_run(summary["run_id"]).data.metrics
    assert read_manifest(Path(summary["run_dir"]) / "model").temperature == 1.0
    assert metrics["test/ece"] == metrics["test/ece_uncalibrated"] and metrics["val/temperature"] == 1.0
