"""What a finished run leaves beside its checkpoints: the best weights tested and saved (model files, the test
report, `test/*` metrics), the pictures (learning curves, augmentation preview) and the run files logged to
MLflow. `clfops train` calls these on rank 0 after fit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from clfops import config as C
from clfops.data.augment import Augment
from clfops.safe_files import atomic_write_bytes
from clfops.serving.saved_model import Manifest, save_model
from clfops.tracking import Tracker
from clfops.training.build import augment_config, normalisation
from clfops.training.context import Fitted, Hardware, RunContext
from clfops.training.module import Classifier
from clfops.training.progress_bar import stage_bar
from clfops.training.recorder import EpochStats


@dataclass(frozen=True)
class Tested:
    """The best weights after fit: where they are, how they scored, how long fit and test took."""

    metrics: dict[str, float]  # test/* (README.md's metric table) and val/temperature
    best_val_acc: float | None  # the checkpoint's monitored score; None when the run never validated
    epochs: int
    processes: int
    train_seconds: float  # `trainer.fit` wall time, validation included
    validation_seconds: float
    test_seconds: float  # best weights loaded, model files, test set + report
    best_checkpoint: str  # best.ckpt, else last.ckpt ("" when neither was written)
    model_dir: Path
    hardware: Hardware  # the device, its name, the precision and a DDP run's process-group backend


def test_and_save(ctx: RunContext, fitted: Fitted) -> Tested:
    """The best weights: model files, the test report and `test/*` metrics (metrics.csv, MLflow, TensorBoard)."""
    trainer, ckpt, module = fitted.trainer, fitted.checkpoint, fitted.module
    val_s = next((c.validation_seconds for c in trainer.callbacks if isinstance(c, EpochStats)), 0.0)
    t_test = time.perf_counter()
    best = ckpt.best_model_path or ckpt.last_model_path
    best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    if best:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    manifest = manifest_for(ctx, module)
    inference = "bf16-mixed" if str(trainer.precision).startswith("bf16") else "32-true"  # as validation ran
    # On the device validation ran on: Lightning's teardown moved the module back to the CPU, predict_logits moves
    # the net there again; the saved weights are CPU tensors all the same (save_model), so any machine serves them.
    hardware = Hardware.of(trainer, ctx.precision)
    if ctx.cfg.model.calibrate:
        manifest.temperature = fit_temperature_on_val(ctx, module, manifest, inference, hardware.device)
    model_dir = save_model(ctx.run_dir / "model", module.net, manifest)
    with stage_bar(ctx.cfg.logging.progress, f"test {len(ctx.splits.test):,} images"):  # a terminal's test bar
        test = test_best(ctx, module, manifest, inference, hardware.device)
    test["val/temperature"] = manifest.temperature
    fitted.logger.log_metrics(test, step=trainer.global_step)  # metrics.csv + MLflow + TensorBoard, like the rest
    fitted.logger.save(durable=True)
    return Tested(
        metrics=test,
        best_val_acc=best_val,
        epochs=trainer.current_epoch,
        processes=trainer.world_size,
        train_seconds=round(fitted.seconds, 3),
        validation_seconds=round(val_s, 3),
        test_seconds=round(time.perf_counter() - t_test, 3),
        best_checkpoint=best,
        model_dir=model_dir,
        hardware=hardware,
    )


def fit_temperature_on_val(
    ctx: RunContext, module: Classifier, manifest: Manifest, precision: str, device: str
) -> float:
    """The temperature that calibrates the best weights, fitted on the validation split's logits (the one
    inference path, as validation ran; `manifest` still has temperature 1, so these are the raw logits)."""
    from clfops.evaluation.calibration import fit_temperature
    from clfops.serving.inference import predict_logits

    val = ctx.splits.val
    logits = predict_logits(module.net, manifest, val.x, ctx.cfg.data.eval_batch_size, precision, device)
    return fit_temperature(logits, val.y)


def test_best(ctx: RunContext, module: Classifier, manifest: Manifest, precision: str, device: str) -> dict[str, float]:
    """The best weights on the test set, through `clfops evaluate`'s own code: report files in RUN_DIR/eval,
    and the `test/*` metrics (README.md's metric table; the same quantity names as val/* and eval/*).
    `precision` and `device` are the training's: bf16 autocast where validation ran in it (a 16-mixed GPU run
    tests in fp32), on its device."""
    from clfops.evaluation.evaluate import Provenance, evaluate_net

    tracker, run_dir = ctx.tracker, ctx.run_dir
    provenance = Provenance(
        source=f"run dir {run_dir}",
        model=ctx.cfg.model.name,
        data=data_split(ctx.source.name, ctx.splits.test_split),
        data_sha256=ctx.source.sha256,
        run_id=tracker.run_id if tracker else None,
        tracking_uri=tracker.uri if tracker else None,
        manifest=manifest,
        config_yaml=C.to_yaml(ctx.cfg),
        precision=precision,
        device=device,
    )
    batch = ctx.cfg.data.eval_batch_size
    split, out = ctx.splits.test, run_dir / "eval"
    result = evaluate_net(module.net, manifest, split, out, provenance, batch, metrics_prefix="test/")
    if tracker is not None:
        tracker.log_artifacts(run_dir / "eval", "eval")
    return dict(result.metrics)


def data_split(name: str, test_split: str) -> str:
    """The report's `Evaluation data`: `fashion_mnist test`, or says that val stood in for a missing test split."""
    return f"{name} {test_split}" + (
        " (the data has no test split: test metrics come from val)" if test_split == "val" else ""
    )


def manifest_for(ctx: RunContext, module: Classifier) -> Manifest:
    source = ctx.source
    return Manifest(
        model=ctx.cfg.model.name,
        model_args=C.to_container(ctx.cfg.model.args),
        classes=list(source.classes),
        in_channels=source.channels,
        image_size=list(source.size),
        mean=list(module.settings.mean),
        std=list(module.settings.std),
        test_flip=module.augment.config.test_flip,
        data_sha256=source.sha256,
        run_id=ctx.tracker.run_id if ctx.tracker else "",
    )


def write_pictures(ctx: RunContext) -> None:
    """learning_curves.png always; augment_preview.png when the run augments (what the model saw)."""
    from clfops.evaluation.plots import learning_curves_png
    from clfops.tracking.rundirs import read_metrics
    from clfops.training.preview import preview_grid

    cfg, run_dir, splits = ctx.cfg, ctx.run_dir, ctx.splits
    atomic_write_bytes(run_dir / "learning_curves.png", learning_curves_png(read_metrics(run_dir / "metrics.csv")))
    augment = Augment(augment_config(cfg.augment))
    if augment.enabled:
        gen = torch.Generator().manual_seed(int(cfg.seed))
        mean, std = normalisation(cfg, splits)
        preview_grid(splits.train.x[:16], augment, gen, 16, run_dir / "augment_preview.png", mean, std)


def log_run_files(tracker: Tracker, run_dir: Path) -> None:
    for name in (
        "config.yaml",
        "overrides.yaml",
        "metrics.csv",
        "summary.json",
        "model_summary.txt",
        "learning_curves.png",
        "augment_preview.png",
        "train.log",
    ):
        tracker.log_artifact(run_dir / name)
