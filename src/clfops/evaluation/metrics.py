"""The numbers of an evaluation, from logits and targets: scikit-learn and torchmetrics, nothing hand-rolled.

`evaluate_predictions` is the one implementation `clfops evaluate` and the end of `clfops train` share.
It returns plain JSON-ready data (`classification_report.json` is exactly this dict); the arrays the plots
need (confusion matrix, confidences, reliability bins) come from `prediction_arrays`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix, log_loss, top_k_accuracy_score
from torchmetrics.functional.classification import multiclass_calibration_error

from clfops.serving.inference import probabilities
from clfops.tracking.metric_names import PER_CLASS_F1

ECE_BINS = 15
TOP_K = (1, 3, 5)


@dataclass(frozen=True)
class PredictionArrays:
    """Per-image arrays derived once from the logits (float64 probabilities for exact log-loss)."""

    probs: np.ndarray  # (N, K) float64, softmax of the logits
    targets: np.ndarray  # (N,) int64
    predicted: np.ndarray  # (N,) int64, argmax
    confidence: np.ndarray  # (N,) float64, probability of the predicted class

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.targets


def prediction_arrays(logits: torch.Tensor, targets: torch.Tensor) -> PredictionArrays:
    if logits.ndim != 2 or targets.ndim != 1 or len(logits) != len(targets):
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match")
    probs = probabilities(logits)  # the one softmax: float64, as `clfops predict` and the pyfunc model
    predicted = probs.argmax(axis=1)
    return PredictionArrays(
        probs=probs,
        targets=targets.detach().cpu().numpy().astype(np.int64),
        predicted=predicted.astype(np.int64),
        confidence=probs[np.arange(len(probs)), predicted],
    )


def top_k_accuracy(arrays: PredictionArrays, k: int) -> float:
    """Fraction of images whose true class is among the k most probable; 1.0 once k >= number of classes."""
    num_classes = arrays.probs.shape[1]
    if k >= num_classes:
        return 1.0
    if k == 1:
        return float(arrays.correct.mean())
    return float(top_k_accuracy_score(arrays.targets, arrays.probs, k=k, labels=np.arange(num_classes)))


def expected_calibration_error(arrays: PredictionArrays, n_bins: int = ECE_BINS) -> float:
    """ECE (L1, equal-width confidence bins), torchmetrics' definition (Guo et al. 2017)."""
    probs = torch.from_numpy(arrays.probs)
    ece = multiclass_calibration_error(
        probs, torch.from_numpy(arrays.targets), num_classes=probs.shape[1], n_bins=n_bins, norm="l1"
    )
    return float(ece)


def reliability_bins(arrays: PredictionArrays, n_bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin: count, mean confidence, accuracy (for the reliability diagram; empty bins kept)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)  # left-closed bins as torchmetrics' bucketize(right=True)
    which = np.clip(np.searchsorted(edges, arrays.confidence, side="right") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        out.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": n,
                "confidence": float(arrays.confidence[mask].mean()) if n else 0.0,
                "accuracy": float(arrays.correct[mask].mean()) if n else 0.0,
            }
        )
    return out


def evaluate_predictions(
    logits: torch.Tensor, targets: torch.Tensor, classes: list[str], n_bins: int = ECE_BINS
) -> dict[str, Any]:
    """Everything `classification_report.json` holds: per-class P/R/F1/support, averages, top-k, log-loss, ECE."""
    return report_from_arrays(prediction_arrays(logits, targets), classes, n_bins)


def report_from_arrays(
    arrays: PredictionArrays,
    classes: list[str],
    n_bins: int = ECE_BINS,
    uncalibrated: PredictionArrays | None = None,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """`evaluate_predictions` on already-derived arrays (the evaluation path derives them once for the plots).
    `arrays` come from the calibrated logits; `uncalibrated` from the same logits times `temperature` (the raw
    softmax), for log-loss and ECE before calibration (None: the same as `arrays`)."""
    num_classes = len(classes)
    if arrays.probs.shape[1] != num_classes:
        raise ValueError(f"logits have {arrays.probs.shape[1]} columns for {num_classes} classes")
    labels = np.arange(num_classes)
    raw = uncalibrated if uncalibrated is not None else arrays
    sk = classification_report(arrays.targets, arrays.predicted, labels=labels, output_dict=True, zero_division=0.0)

    def row(entry: dict[str, float]) -> dict[str, float]:
        return {
            "precision": float(entry["precision"]),
            "recall": float(entry["recall"]),
            "f1": float(entry["f1-score"]),
            "support": int(entry["support"]),
        }

    report: dict[str, Any] = {
        "images": len(arrays.targets),
        "classes": list(classes),
        "accuracy": float(arrays.correct.mean()),
        **{f"top{k}_accuracy": top_k_accuracy(arrays, k) for k in TOP_K},
        "log_loss": float(log_loss(arrays.targets, arrays.probs, labels=labels)),
        "ece": expected_calibration_error(arrays, n_bins),
        "ece_bins": n_bins,
        "temperature": float(temperature),
        "log_loss_uncalibrated": float(log_loss(raw.targets, raw.probs, labels=labels)),
        "ece_uncalibrated": expected_calibration_error(raw, n_bins),
        "macro_avg": row(sk["macro avg"]),
        "weighted_avg": row(sk["weighted avg"]),
        "per_class": {name: row(sk[str(i)]) for i, name in enumerate(classes)},
    }
    return report


def confusion(arrays: PredictionArrays, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    return confusion_matrix(arrays.targets, arrays.predicted, labels=np.arange(num_classes))


def most_confused(cm: np.ndarray, classes: list[str], top: int = 20) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images: (true, predicted, count, share of the true class)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = []
    for flat in order:
        t, p = divmod(int(flat), cm.shape[1])
        if off[t, p] == 0:
            break
        support = int(cm[t].sum())
        rows.append({"true": classes[t], "predicted": classes[p], "count": int(off[t, p]), "rate": off[t, p] / support})
    return rows


def _metric_key(name: str) -> str:
    """Class names -> MLflow-safe metric name parts ("T-shirt/top" -> "T-shirt_top")."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", name)


def report_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """The flat metrics logged to MLflow from a report, under `prefix` ("test/" at the end of training,
    "eval/" for `clfops evaluate`): one name per quantity, listed in tracking/metric_names.py and README.md."""
    out = {
        f"{prefix}acc": float(report["accuracy"]),
        f"{prefix}loss": float(report["log_loss"]),
        f"{prefix}loss_uncalibrated": float(report["log_loss_uncalibrated"]),
        f"{prefix}ece": float(report["ece"]),
        f"{prefix}ece_uncalibrated": float(report["ece_uncalibrated"]),
    }
    out.update({f"{prefix}{m}": float(report["macro_avg"][m]) for m in ("precision", "recall", "f1")})
    # Support-weighted recall is accuracy: not logged twice.
    out.update({f"{prefix}weighted_{m}": float(report["weighted_avg"][m]) for m in ("precision", "f1")})
    out.update({f"{prefix}top{k}_acc": float(report[f"top{k}_accuracy"]) for k in TOP_K if k > 1})  # top1 = acc
    for name, entry in report["per_class"].items():
        out[f"{prefix}{PER_CLASS_F1}{_metric_key(name)}"] = float(entry["f1"])
    return out
