"""report.html: one self-contained page (inline CSS, base64 PNGs, no scripts, no network) a person reads.

No JavaScript at all: the page renders the same in a browser, an MLflow artifact preview or a mail client,
and cannot produce console errors. Every value from the run is escaped, and every text from the run
(provenance, the training config, the title) redacted: the Tracking URI row shows USER:***@HOST.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from clfops.tracking.redact import redact_text

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2em auto; max-width: 1150px;
       color: #1d232a; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
.sub { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: right; }
th { background: #f3f5f7; } td.l, th.l { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 1em 0; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 16px; min-width: 120px; background: #f8fafc; }
.card .v { font-size: 1.5em; font-weight: 600; } .card .k { color: #57606a; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eaeef2; margin: 0.5em 0; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; border-radius: 6px; }
code { font-size: 0.9em; word-break: break-all; }
"""

CARDS = (
    ("accuracy", "Accuracy"),
    ("top3_accuracy", "Top-3 accuracy"),
    ("top5_accuracy", "Top-5 accuracy"),
    ("log_loss", "Log-loss"),
    ("ece", "ECE"),
)


def _num(value: Any, spec: str = "") -> str:
    """A number as page text: formatted, then escaped like every other value from the run."""
    return escape(format(value, spec))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _summary_table(report: dict[str, Any]) -> str:
    rows = [
        ("Images", f"{report['images']:,}"),
        ("Accuracy (top-1)", f"{report['accuracy']:.4f}"),
        ("Top-3 accuracy", f"{report['top3_accuracy']:.4f}"),
        ("Top-5 accuracy", f"{report['top5_accuracy']:.4f}"),
        ("Macro precision / recall / F1", _prf(report["macro_avg"])),
        ("Weighted precision / recall / F1", _prf(report["weighted_avg"])),
        ("Log-loss", f"{report['log_loss']:.4f}"),
        (f"Expected calibration error ({report['ece_bins']} bins)", f"{report['ece']:.4f}"),
    ]
    if "temperature" in report:  # reports written before calibration (clfops evaluate of an older run) lack it
        rows.append(("Temperature (logits / T, fitted on the validation split)", f"{report['temperature']:.4f}"))
    if "log_loss_uncalibrated" in report:
        before = f"{report['log_loss_uncalibrated']:.4f} / {report['ece_uncalibrated']:.4f}"
        rows.append(("Log-loss / ECE before calibration (T = 1)", before))
    body = "".join(f'<tr><td class="l">{escape(k)}</td><td>{escape(v)}</td></tr>' for k, v in rows)
    return f'<table id="summary"><tr><th class="l">Metric</th><th>Value</th></tr>{body}</table>'


def _prf(entry: dict[str, float]) -> str:
    return f"{entry['precision']:.4f} / {entry['recall']:.4f} / {entry['f1']:.4f}"


def _per_class_table(report: dict[str, Any]) -> str:
    head = '<tr><th class="l">Class</th><th>Precision</th><th>Recall</th><th>F1</th><th>Support</th></tr>'
    rows = []
    for name, e in report["per_class"].items():
        rows.append(
            f'<tr><td class="l">{escape(name)}</td><td>{_num(e["precision"], ".4f")}</td>'
            f"<td>{_num(e['recall'], '.4f')}</td><td>{_num(e['f1'], '.4f')}</td><td>{_num(e['support'])}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _confused_table(pairs: list[dict[str, Any]]) -> str:
    if not pairs:
        return "<p>No confusions.</p>"
    head = '<tr><th class="l">True</th><th class="l">Predicted as</th><th>Images</th><th>Share of true class</th></tr>'
    rows = [
        f'<tr><td class="l">{escape(p["true"])}</td><td class="l">{escape(p["predicted"])}</td>'
        f"<td>{_num(p['count'])}</td><td>{_num(p['rate'], '.1%')}</td></tr>"
        for p in pairs
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _provenance_table(provenance: dict[str, str]) -> str:
    rows = "".join(
        f'<tr><th class="l">{escape(k)}</th><td class="l"><code>{escape(redact_text(str(v)))}</code></td></tr>'
        for k, v in provenance.items()
    )
    return f"<table>{rows}</table>"


def render_html(
    report: dict[str, Any],
    figures: dict[str, bytes],
    most_confused: list[dict[str, Any]],
    provenance: dict[str, str],
    config_yaml: str | None,
    title: str,
) -> str:
    """The whole page. `figures` maps a file name (confusion_matrix.png, ...) to its PNG bytes."""
    title, config_yaml = redact_text(title), redact_text(config_yaml) if config_yaml else None
    source = redact_text(provenance.get("Model source", ""))
    cards = "".join(
        f'<div class="card"><div class="v">{_num(report[key], ".4f")}</div><div class="k">{escape(label)}</div></div>'
        for key, label in CARDS
    )
    sections = [
        ("Confusion matrix", "confusion_matrix.png"),
        ("Per-class F1", "per_class.png"),
        ("Confidence and calibration", "confidence.png"),
        ("Most confident mistakes", "misclassified_examples.png"),
    ]
    plots = "".join(
        f"<h2>{escape(heading)}</h2>{_img(figures[name], heading)}" for heading, name in sections if name in figures
    )
    config = f"<h3>Training config</h3><pre>{escape(config_yaml)}</pre>" if config_yaml else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="sub">{escape(source)} · {len(report["classes"])} classes</p>
<p class="sub" id="scored">Scored on {escape(provenance.get("Evaluation data", "-"))}
 ({_num(report["images"], ",")} images) in {escape(str(report.get("precision", provenance.get("Precision", "-"))))}
 precision</p>
<div class="cards">{cards}</div>
<h2>Summary</h2>{_summary_table(report)}
<h2>Per class</h2>{_per_class_table(report)}
{plots}
<h2>Most confused class pairs</h2>{_confused_table(most_confused)}
<h2>Provenance</h2>{_provenance_table(provenance)}{config}
</body></html>
"""
