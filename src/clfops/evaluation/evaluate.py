"""`clfops evaluate`: the full evaluation report of a trained model, on disk, in MLflow and as one HTML page.

The path: find the model (run dir, checkpoint, MLflow run or model URI -> `serving.resolve.resolve_model`, the
resolver `clfops predict` uses too) -> the data (`inputs`: test/val split of what it was trained on, another data
set, or a folder) -> batched logits (`serving.inference.predict_logits`, the one inference path of training,
predict and serving) -> numbers (`metrics`, scikit-learn + torchmetrics) -> files (`report_files`) -> optionally
MLflow.

`evaluate_net` is the part `clfops train` reuses on its test split, so both commands report the same numbers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from clfops.data import Split
from clfops.evaluation import EvaluateError
from clfops.evaluation.inputs import EvalData, load_eval_data
from clfops.evaluation.metrics import prediction_arrays, report_from_arrays, report_metrics
from clfops.evaluation.report_files import write_outputs
from clfops.serving.inference import PRECISIONS, predict_logits
from clfops.serving.resolve import ModelRef, ResolvedModel, resolve_model
from clfops.serving.saved_model import Manifest

__all__ = ["EvalRequest", "EvalResult", "EvaluateError", "Provenance", "evaluate", "evaluate_net", "predict_logits"]


@dataclass
class EvalRequest:
    """What `clfops evaluate` was asked; exactly one of run_dir / checkpoint / run_id / model_uri."""

    run_dir: Path | None = None
    checkpoint: Path | None = None
    run_id: str | None = None
    model_uri: str | None = None
    data: str = "test"  # test | val | a data set name | an image folder
    batch_size: int = 256
    out: Path | None = None  # default RUN_DIR/eval (or ./eval when the model has no local run dir)
    log_mlflow: bool = False
    tracking_uri: str | None = None  # default: the run's own store (run.json), else $MLFLOW_TRACKING_URI
    grid: int = 16  # misclassified examples shown
    save_predictions: bool = False
    # auto: the model's run's own trainer.precision where its config is known (its test report is reproduced
    # exactly), else training's rule (bf16 where the CPU has it natively, else fp32); 32-true: fp32 anywhere.
    precision: str = "auto"


@dataclass
class Provenance:
    """Where the model and the data came from; shown in report.html."""

    source: str
    model: str
    data: str
    data_sha256: str
    run_id: str | None = None
    tracking_uri: str | None = None
    manifest: Manifest | None = None
    config_yaml: str | None = None
    precision: str = "32-true"  # of the inference: "32-true" or "bf16-mixed"
    device: str = "cpu"  # where the inference ran: "cpu", or "cuda:0" for the test report of a run trained there

    def table(self) -> dict[str, str]:
        rows = {"Model": self.model, "Model source": self.source, "MLflow run": self.run_id or "-"}
        rows.update({"Tracking URI": self.tracking_uri or "-", "Evaluation data": self.data})
        rows["Evaluation data sha256"] = self.data_sha256
        if self.manifest is not None:
            rows["Trained on data sha256"] = self.manifest.data_sha256 or "-"
            rows["Weights sha256"] = self.manifest.sha256 or "(from checkpoint)"
            rows["Classes"] = ", ".join(self.manifest.classes)
            rows["Input"] = (
                f"{self.manifest.in_channels} x {self.manifest.image_size[0]} x {self.manifest.image_size[1]}"
            )
            rows["clfops version (training)"] = self.manifest.clfops_version
        rows["Precision"] = self.precision
        rows["Device"] = self.device
        rows["Evaluated at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        return rows


@dataclass
class EvalResult:
    report: dict[str, Any]  # = classification_report.json
    metrics: dict[str, float]  # eval/* (test/* in training) as logged to MLflow: README.md's metric names
    out_dir: Path
    files: list[Path]
    images_per_second: float
    source: str = ""
    mlflow_run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None  # (N, K) float64, the rows of predictions.csv in the same order


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS and precision != "auto":
        raise EvaluateError(f"--precision {precision}: choose auto, {' or '.join(PRECISIONS)}")


def evaluate_net(
    net: nn.Module,
    manifest: Manifest,
    split: Split,
    out_dir: Path,
    provenance: Provenance,
    batch_size: int = 256,
    grid: int = 16,
    save_predictions: bool = False,
    metrics_prefix: str = "eval/",
) -> EvalResult:
    """Predict `split` (labels in the model's class order), compute the report and write every file.
    `metrics_prefix`: "eval/" for `clfops evaluate`, "test/" for training's own test report."""
    t0 = time.perf_counter()
    # calibrated logits (the manifest's T), on the CPU whichever device computed them
    logits = predict_logits(net, manifest, split.x, batch_size, provenance.precision, provenance.device)
    seconds = time.perf_counter() - t0
    arrays = prediction_arrays(logits, split.y)
    temperature = float(manifest.temperature)
    # The raw softmax, for the before/after calibration numbers: logits x T undoes the division (float rounding).
    raw = prediction_arrays(logits * temperature, split.y) if temperature != 1.0 else None
    report = report_from_arrays(arrays, list(manifest.classes), uncalibrated=raw, temperature=temperature)
    report["precision"] = provenance.precision  # bf16 and fp32 may disagree on a few near-tied images
    report["device"] = provenance.device  # so may a GPU and a CPU
    files = write_outputs(
        out_dir, arrays, report, split.x.numpy(), provenance.table(), provenance.config_yaml, grid, save_predictions,
        raw,
    )  # fmt: skip
    speed = len(split) / max(seconds, 1e-9)
    metrics = report_metrics(report, metrics_prefix)
    return EvalResult(report, metrics, out_dir, files, speed, provenance.source, probabilities=arrays.probs)


def _inference_precision(asked: str, run_config: Any) -> str:
    """`auto`: the precision the model's run tested in, where its config is known (its trainer.precision, with
    training's rule for `auto`), so its test report is reproduced exactly; else training's rule on this CPU."""
    from clfops.hardware import resolve_precision

    if asked != "auto":
        return asked
    trained = str(run_config.trainer.precision) if run_config is not None else "auto"
    return "bf16-mixed" if resolve_precision(trained, "cpu").startswith("bf16") else "32-true"


def _model_ref(request: EvalRequest) -> ModelRef:
    paths = (request.run_dir, request.checkpoint)
    run_dir, checkpoint = (str(p) if p is not None else None for p in paths)
    return ModelRef.from_options(run_dir, checkpoint, request.run_id, request.model_uri)


def _slug(data: str) -> str:
    """'test' -> '' (RUN_DIR/eval), 'val' -> '-val', '/x/my images' -> '-my_images'."""
    if data == "test":
        return ""
    return "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).name or "data")


def evaluate(request: EvalRequest) -> EvalResult:
    """`clfops evaluate`: resolve model and data, evaluate, write the report, log to MLflow when asked."""
    from clfops import config as C
    from clfops.hardware import configure_threads

    if request.batch_size < 1 or request.grid < 0:
        raise EvaluateError(f"--batch-size {request.batch_size} / --top-k-grid {request.grid}: need >= 1 / >= 0")
    configure_threads(None)
    _check_precision(request.precision)  # before a model is resolved (maybe downloaded)
    model = resolve_model(_model_ref(request), request.tracking_uri)
    precision = _inference_precision(request.precision, model.config)
    data = load_eval_data(request.data, model)
    base = model.run_dir if model.run_dir is not None and model.run_dir.is_dir() else Path(".")
    out_dir = Path(request.out) if request.out else base / f"eval{_slug(request.data)}"
    provenance = Provenance(
        source=model.description,
        model=model.manifest.model,
        data=f"{data.label} ({len(data.split):,} images)",
        data_sha256=data.sha256,
        run_id=model.run_id,
        tracking_uri=model.tracking_uri,
        manifest=model.manifest,
        config_yaml=C.to_yaml(model.config) if model.config is not None else None,
        precision=precision,
    )
    result = evaluate_net(
        model.net, model.manifest, data.split, out_dir, provenance, request.batch_size, request.grid,
        request.save_predictions,
    )  # fmt: skip
    if request.log_mlflow:
        result.mlflow_run_id = _log_mlflow(request, model, data, result)
    return result


def _log_mlflow(request: EvalRequest, model: ResolvedModel, data: EvalData, result: EvalResult) -> str:
    """Back to the model's own run when evaluating its own test split; otherwise a new evaluation run in the
    same experiment, linked to the source run (tags clfops.source_run_id + mlflow.parentRunId)."""
    from clfops.tracking import TrackingError, find_run, log_evaluation

    uri = request.tracking_uri or model.tracking_uri
    ref = None
    if model.run_id:
        try:
            ref = find_run(uri, model.run_id)
        except TrackingError:
            result.notes.append(f"run {model.run_id} is not in the tracking store: logged to a new run instead")
    tags = {
        "clfops.eval.data": data.label,
        "clfops.eval.data_sha256": data.sha256,
        "clfops.eval.source": model.description,
    }
    if ref is not None and data.is_training_test:
        return log_evaluation(ref.uri, ref.run_id, ref.experiment_name, tags, result.metrics, result.files)
    cfg = model.config
    experiment = ref.experiment_name if ref else ((cfg.tracking.experiment or cfg.data.name) if cfg else "evaluation")
    tags.update({"mlflow.runName": f"eval{_slug(request.data) or '-test'}", "mlflow.source.name": "clfops evaluate"})
    if ref is not None:
        tags.update({"clfops.source_run_id": ref.run_id, "mlflow.parentRunId": ref.run_id})
    return log_evaluation(ref.uri if ref else uri, None, experiment, tags, result.metrics, result.files)


def print_summary(result: EvalResult) -> None:
    """The short table on the terminal (rich; plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    r = result.report
    table = Table(title=f"Evaluation of {result.source}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("images", f"{r['images']:,}"),
        ("accuracy", f"{r['accuracy']:.4f}"),
        ("top-3 / top-5 accuracy", f"{r['top3_accuracy']:.4f} / {r['top5_accuracy']:.4f}"),
        ("macro F1", f"{r['macro_avg']['f1']:.4f}"),
        ("weighted F1", f"{r['weighted_avg']['f1']:.4f}"),
        ("log-loss", f"{r['log_loss']:.4f}"),
        (f"ECE ({r['ece_bins']} bins)", f"{r['ece']:.4f}  (uncalibrated {r['ece_uncalibrated']:.4f})"),
        ("temperature", f"{r['temperature']:.4f}"),
        ("throughput", f"{result.images_per_second:,.0f} img/s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console = Console(width=100)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"report: {result.out_dir / 'report.html'}")
    if result.mlflow_run_id:
        console.print(f"MLflow run: {result.mlflow_run_id}")
