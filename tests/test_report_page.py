"""report.html and its per-class chart as a reader sees them: split and precision stated, values escaped,
F1 labels readable next to bars that reach 1.0."""

from __future__ import annotations

from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from clfops.evaluation import html, plots


def _report(classes: list[str]) -> dict[str, Any]:
    prf = {"precision": 0.9, "recall": 0.8, "f1": 0.85}
    per_class = {name: {**prf, "support": 10} for name in classes}
    return {
        "classes": classes, "images": 12345, "accuracy": 0.9, "top3_accuracy": 0.95, "top5_accuracy": 0.99,
        "log_loss": 0.3, "ece": 0.02, "ece_bins": 15, "macro_avg": prf, "weighted_avg": prf,
        "per_class": per_class, "precision": "bf16-mixed",
    }  # fmt: skip


def test_page_states_split_and_precision_and_escapes_everything() -> None:
    classes = ["<script>alert(1)</script>", "a&b"]
    provenance = {"Model source": "run dir <x>", "Evaluation data": "ds val (the data has no test split: …)"}
    confused = [{"true": "<i>", "predicted": "a&b", "count": 3, "rate": 0.3}]
    page = html.render_html(_report(classes), {}, confused, provenance, "seed: <1>", "report <title>")
    assert "Scored on ds val (the data has no test split: …)\n (12,345 images) in bf16-mixed\n precision" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<i>" not in page and "a&amp;b" in page and "run dir &lt;x&gt;" in page and "seed: &lt;1&gt;" in page
    assert "<title>report &lt;title&gt;</title>" in page


def test_per_class_f1_labels_sit_beside_their_bars_even_at_one(monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"")
    f1 = [1.0, 0.999, 0.97, 0.5, 0.0]
    plots.per_class_png([f"class {i}" for i in range(len(f1))], f1, macro_f1=0.69)
    fig = figures[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text() in {f"{v:.3f}" for v in f1}]
    assert len(labels) == len(f1)
    axes_box = ax.get_window_extent(renderer)
    for bar, label in zip(ax.patches, labels, strict=True):
        text_box, bar_box = label.get_window_extent(renderer), bar.get_window_extent(renderer)
        assert text_box.x0 >= bar_box.x1 - 0.5, label.get_text()  # beside the bar, not over it
        assert text_box.x1 <= axes_box.x1, label.get_text()  # inside the plot, not cut off
    assert ax.get_legend() is None  # no legend box over the bars; the macro F1 is in the title
    assert "macro F1 0.690" in ax.get_title()
