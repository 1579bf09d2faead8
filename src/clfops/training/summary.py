"""summary.json: what one finished run reports, built once from the run's results and written once.

`train(cfg)` returns `RunSummary.as_dict()`, the same content as the file: callers (CLI, sweeps, tests,
benchmarks) index it like `summary["test_acc"]`. Keys that do not apply to a run are left out rather than
written as null (`model_uri`/`model_log_seconds`/`model_version` when no model was logged, `tracking_offline`
unless the server was lost), so the file holds the same keys it always held.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clfops.tracking import rundirs as runs
from clfops.training.context import Hardware, RunContext
from clfops.training.finish import Tested

_ABSENT_WHEN_NONE = ("model_uri", "model_log_seconds", "model_version", "onnx_model_uri")


@dataclass(frozen=True)
class ModelLog:
    """What logging the pyfunc model to MLflow gave (all None when it was not logged)."""

    uri: str | None = None  # models:/m-…
    seconds: float | None = None
    version: str | None = None  # registry version, with tracking.register_as
    onnx_uri: str | None = None  # models:/m-… of the torch-free ONNX model (tracking.log_onnx)

    @classmethod
    def from_registry(cls, out: dict[str, Any]) -> ModelLog:
        """`registry.register.log_run_model`'s dict: {} when nothing was logged (offline, or a warned failure)."""
        return cls(
            out.get("model_uri"), out.get("model_log_seconds"), out.get("model_version"), out.get("onnx_model_uri")
        )


@dataclass(frozen=True)
class Timings:
    """Where the wall time went, seconds per stage (what the speed issue asks to report)."""

    startup: float | None  # interpreter + imports + config, before `train` (None off Linux)
    data: float
    tracking_start: float
    train: float  # fit minus its validation passes
    validation: float
    test: float  # best weights loaded, model files, test set + report
    pictures: float
    model_log: float | None  # the pyfunc model, the ONNX export and model, the registry version: all of it
    total_in_process: float  # `train` start -> model logged; `startup` comes before it


@dataclass(frozen=True)
class RunSummary:
    run_dir: str
    run_id: str | None  # None: tracking off
    test_acc: float
    test_loss: float
    test_f1: float  # macro average
    test_top3_acc: float
    test_ece: float
    best_val_acc: float | None  # None when the run never validated (data.val_fraction=0)
    recipe: str | None  # fp32 or bf16: the defaults for this machine's arithmetic (config/recipe.py); None:
    # a run resumed from a config written before recipes existed
    epochs: int
    processes: int
    train_seconds: float  # `trainer.fit` wall time, validation included
    validation_seconds: float
    test_seconds: float
    images: dict[str, int]  # train / val / test
    test_split: str  # "test", or "val" when the data has no test split (test/* were scored on val)
    classes: list[str]
    data_sha256: str
    best_checkpoint: str  # best.ckpt, else last.ckpt ("" when neither was written)
    model_dir: str
    data_seconds: float
    total_seconds: float  # `train` start -> tested and saved
    model_uri: str | None
    model_log_seconds: float | None
    model_version: str | None
    onnx_model_uri: str | None
    timings: Timings
    hardware: Hardware  # device ("cuda:0", "cpu"), its name, precision, a DDP run's backend (nccl/gloo)
    tracking_offline: bool  # the MLflow run lacks part of this run: `clfops sync RUN_DIR` completes it

    @classmethod
    def build(cls, ctx: RunContext, tested: Tested, model: ModelLog, offline: bool) -> RunSummary:
        """`ctx.setup.clock` has lapped data, tracking_start, fit_and_test, pictures and model_log."""
        clock, m = ctx.setup.clock, tested.metrics
        laps, total = clock.seconds, clock.at["fit_and_test"]  # total: `train` start -> tested and saved
        timings = Timings(
            startup=ctx.setup.startup_s,
            data=laps["data"],
            tracking_start=laps["tracking_start"],
            train=round(tested.train_seconds - tested.validation_seconds, 3),
            validation=tested.validation_seconds,
            test=tested.test_seconds,
            pictures=laps["pictures"],
            model_log=laps["model_log"] if model.seconds is not None else None,
            total_in_process=round(clock.at["model_log"], 3),
        )
        splits = ctx.splits
        return cls(
            run_dir=str(ctx.run_dir),
            run_id=ctx.tracker.run_id if ctx.tracker else None,
            test_acc=m["test/acc"],
            test_loss=m["test/loss"],
            test_f1=m["test/f1"],
            test_top3_acc=m["test/top3_acc"],
            test_ece=m["test/ece"],
            best_val_acc=tested.best_val_acc,
            recipe=ctx.cfg.get("recipe"),
            epochs=tested.epochs,
            processes=tested.processes,
            train_seconds=tested.train_seconds,
            validation_seconds=tested.validation_seconds,
            test_seconds=tested.test_seconds,
            images={"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
            test_split=splits.test_split,
            classes=list(ctx.source.classes),
            data_sha256=ctx.source.sha256,
            best_checkpoint=tested.best_checkpoint,
            model_dir=str(tested.model_dir),
            data_seconds=laps["data"],
            total_seconds=total,
            model_uri=model.uri,
            model_log_seconds=model.seconds,
            model_version=model.version,
            onnx_model_uri=model.onnx_uri,
            timings=timings,
            hardware=tested.hardware,
            tracking_offline=offline,
        )

    def as_dict(self) -> dict[str, Any]:
        """The plain dict `train` returns and summary.json holds (keys in the file's order)."""
        out = asdict(self)
        for key in _ABSENT_WHEN_NONE:
            if out[key] is None:
                del out[key]
        if not self.tracking_offline:
            del out["tracking_offline"]
        return out

    def write(self) -> None:
        """RUN_DIR/summary.json, atomically (readers see the whole file or none), credentials redacted."""
        runs.write_text(Path(self.run_dir) / "summary.json", json.dumps(self.as_dict(), indent=2))
