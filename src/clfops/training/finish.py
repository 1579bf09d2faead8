"""What a finished run leaves beside its checkpoints: the test report of the best weights, the model manifest,
the pictures (learning curves, augmentation preview), the run files logged to MLflow, and where the time went.
`clfops train` calls these on rank 0 after fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from clfops import config as C
from clfops.data import Source
from clfops.data.augment import Augment
from clfops.data.loader import Splits
from clfops.safe_files import atomic_write_bytes
from clfops.serving.saved_model import Manifest
from clfops.tracking import Tracker
from clfops.training.build import augment_config, normalisation
from clfops.training.module import Classifier
from clfops.training.timings import StageClock


def test_best(
    cfg: DictConfig,
    run_dir: Path,
    source: Source,
    splits: Splits,
    module: Classifier,
    manifest: Manifest,
    tracker: Tracker | None,
    precision: str,
) -> dict[str, float]:
    """The best weights on the test set, through `clfops evaluate`'s own code: report files in RUN_DIR/eval,
    and `test/*` (the same names as val/*) plus `eval/*` (top-k, log-loss, ECE, per-class F1) metrics.
    `precision` is the training's: bf16 autocast where validation ran in it (a 16-mixed GPU run tests in fp32)."""
    from clfops.evaluation.evaluate import Provenance, evaluate_net

    provenance = Provenance(
        source=f"run dir {run_dir}",
        model=cfg.model.name,
        data=data_split(source.name, splits.test_split),
        data_sha256=source.sha256,
        run_id=tracker.run_id if tracker else None,
        tracking_uri=tracker.uri if tracker else None,
        manifest=manifest,
        config_yaml=C.to_yaml(cfg),
        precision=precision,
    )
    result = evaluate_net(module.net, manifest, splits.test, run_dir / "eval", provenance, cfg.data.eval_batch_size)
    report = result.report
    test = {"test/acc": report["accuracy"], "test/loss": report["log_loss"]}
    test |= {f"test/{m}": report["macro_avg"][m] for m in ("precision", "recall", "f1")}
    if tracker is not None:
        tracker.log_artifacts(run_dir / "eval", "eval")
    return test | result.metrics


def data_split(name: str, test_split: str) -> str:
    """The report's `Evaluation data`: `fashion_mnist test`, or says that val stood in for a missing test split."""
    return f"{name} {test_split}" + (
        " (the data has no test split: test metrics come from val)" if test_split == "val" else ""
    )


def manifest_for(cfg: DictConfig, source: Source, module: Classifier, tracker: Tracker | None) -> Manifest:
    return Manifest(
        model=cfg.model.name,
        model_args=C.to_container(cfg.model.args),
        classes=list(source.classes),
        in_channels=source.channels,
        image_size=list(source.size),
        mean=list(module.settings.mean),
        std=list(module.settings.std),
        test_flip=module.augment.config.test_flip,
        data_sha256=source.sha256,
        run_id=tracker.run_id if tracker else "",
    )


def write_pictures(cfg: DictConfig, run_dir: Path, splits: Splits) -> None:
    """learning_curves.png always; augment_preview.png when the run augments (what the model saw)."""
    from clfops.evaluation.plots import learning_curves_png
    from clfops.tracking.rundirs import read_metrics
    from clfops.training.preview import preview_grid

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


def timings(summary: dict[str, Any], clock: StageClock, startup_s: float | None) -> dict[str, float | None]:
    """Where the wall time went (seconds): what the speed issue asks to report, one number per stage."""
    fit, val = summary["train_seconds"], summary.get("validation_seconds", 0.0)
    return {
        "startup": startup_s,
        "data": summary["data_seconds"],
        "tracking_start": clock.seconds["tracking_start"],
        "train": round(fit - val, 3),
        "validation": val,
        "test": summary.get("test_seconds"),
        "pictures": clock.seconds["pictures"],
        "model_log": summary.get("model_log_seconds"),
        # train() start -> model logged; `startup` (interpreter + imports) comes before it.
        "total_in_process": round(
            summary["total_seconds"] + clock.seconds["pictures"] + (summary.get("model_log_seconds") or 0.0), 3
        ),
    }
