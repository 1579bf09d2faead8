"""The files of one evaluation in `--out`, each written atomically: JSON, CSVs, PNGs and report.html."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from clfops.evaluation import html, plots
from clfops.evaluation.metrics import PredictionArrays, confusion, most_confused, reliability_bins
from clfops.safe_files import atomic_write_bytes, atomic_write_text


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def confident_mistakes(arrays: PredictionArrays, count: int) -> np.ndarray:
    """Indices of the `count` wrong predictions with the highest confidence (ties: lower index first)."""
    wrong = np.flatnonzero(~arrays.correct)
    order = np.argsort(-arrays.confidence[wrong], kind="stable")
    return wrong[order[:count]]


def figures(
    arrays: PredictionArrays,
    report: dict[str, Any],
    images: np.ndarray,
    grid: int,
    uncalibrated: PredictionArrays | None = None,
) -> tuple[dict[str, bytes], np.ndarray, list[dict[str, Any]]]:
    """All PNGs of the report, plus the confusion matrix and the most-confused pairs they were drawn from.
    `uncalibrated`: the raw softmax's arrays, drawn beside the calibrated ones in the reliability diagram."""
    classes = list(report["classes"])
    cm = confusion(arrays, len(classes))
    mistakes = confident_mistakes(arrays, grid)
    pngs = {
        "confusion_matrix.png": plots.confusion_matrix_png(cm, classes),
        "per_class.png": plots.per_class_png(
            classes, [report["per_class"][c]["f1"] for c in classes], report["macro_avg"]["f1"]
        ),
        "confidence.png": plots.confidence_png(
            arrays.confidence,
            arrays.correct,
            reliability_bins(arrays, report["ece_bins"]),
            report["ece"],
            plots.Uncalibrated(
                reliability_bins(uncalibrated, report["ece_bins"]), report["ece_uncalibrated"], report["temperature"]
            )
            if uncalibrated is not None
            else None,
        ),
        "misclassified_examples.png": plots.misclassified_png(
            images[mistakes],
            [classes[t] for t in arrays.targets[mistakes]],
            [classes[p] for p in arrays.predicted[mistakes]],
            [float(c) for c in arrays.confidence[mistakes]],
            [int(i) for i in mistakes],
        ),
    }
    return pngs, cm, most_confused(cm, classes)


def write_outputs(
    out_dir: Path,
    arrays: PredictionArrays,
    report: dict[str, Any],
    images: np.ndarray,
    provenance: dict[str, str],
    config_yaml: str | None,
    grid: int,
    save_predictions: bool,
    uncalibrated: PredictionArrays | None = None,
) -> list[Path]:
    """Write every output file; returns their paths (report.html last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = list(report["classes"])
    pngs, cm, pairs = figures(arrays, report, images, grid, uncalibrated)
    texts = {
        "classification_report.json": json.dumps(report, indent=2),
        "confusion_matrix.csv": _csv(
            [["true \\ predicted", *classes]] + [[c, *row] for c, row in zip(classes, cm.tolist(), strict=True)]
        ),
        "most_confused.csv": _csv(
            [["true", "predicted", "count", "rate"]]
            + [[p["true"], p["predicted"], p["count"], f"{p['rate']:.6f}"] for p in pairs]
        ),
    }
    if save_predictions:
        rows = zip(arrays.targets.tolist(), arrays.predicted.tolist(), arrays.confidence.tolist(), strict=True)
        texts["predictions.csv"] = _csv(
            [["index", "true", "predicted", "confidence"]]
            + [[i, classes[t], classes[p], f"{c:.6f}"] for i, (t, p, c) in enumerate(rows)]
        )
    written = []
    for name, text in texts.items():
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    for name, png in pngs.items():
        atomic_write_bytes(out_dir / name, png)
        written.append(out_dir / name)
    title = f"Evaluation: {provenance.get('Model', 'model')} on {provenance.get('Evaluation data', 'data')}"
    page = html.render_html(report, pngs, pairs, provenance, config_yaml, title)
    atomic_write_text(out_dir / "report.html", page)
    written.append(out_dir / "report.html")
    return written
