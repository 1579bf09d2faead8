"""The one metric vocabulary: what each logged name means, and the older names it replaces.

A name is `SOURCE/QUANTITY`. The source says who measured it: `train/` (the training loop), `val/` (each
epoch's validation), `test/` (training's test report on the best weights) and `eval/` (`clfops evaluate
--log-mlflow`). A quantity has one name under every source: `val/acc`, `test/acc` and `eval/acc` are the
same number on different data or at a different time. README.md ("Metrics") lists them all.

Older clfops runs logged some quantities under other names (`eval/accuracy`, `eval/top1_accuracy`,
`train/loss_epoch`...). `ALIASES` maps each to today's name; `canonical` (a name a user typed) and `upgrade`
(the metrics a run logged) apply it, so gates, `clfops models` and learning curves read old and new runs alike.
This module is the only place old names are known.
"""

from __future__ import annotations

from collections.abc import Mapping

# The quantities every evaluation source (test/, eval/) logs; val/ logs acc, loss, precision, recall, f1.
QUANTITIES = (
    "acc",  # top-1 accuracy (micro)
    "loss",  # cross-entropy = negative log-likelihood of the true class, per image (calibrated)
    "loss_uncalibrated",  # the same with temperature 1 (the raw softmax)
    "ece",  # expected calibration error, 15 equal-width bins, L1 (calibrated)
    "ece_uncalibrated",
    "precision",  # macro average over classes
    "recall",
    "f1",
    "weighted_precision",  # support-weighted average over classes (weighted recall = acc: not a quantity of its own)
    "weighted_f1",
    "top3_acc",
    "top5_acc",
)
PER_CLASS_F1 = "f1/"  # + the class name (characters outside [A-Za-z0-9_-. ] as '_'): `test/f1/T-shirt_top`
SOURCES = ("val", "test", "eval")

_OLD_SUFFIXES = {
    "accuracy": "acc",
    "top1_accuracy": "acc",
    "top1_acc": "acc",
    "top3_accuracy": "top3_acc",
    "top5_accuracy": "top5_acc",
    "log_loss": "loss",
    "nll": "loss",
    "macro_f1": "f1",
    "macro_precision": "precision",
    "macro_recall": "recall",
    "weighted_recall": "acc",  # support-weighted recall is accuracy
}
# Old name -> today's name. Until 2026-12 training logged `train/loss` at logging steps only and the epoch mean
# as `train/loss_epoch`; `upgrade` renames the step points of such a run to `train/loss_step`.
ALIASES: dict[str, str] = {f"{s}/{old}": f"{s}/{new}" for s in SOURCES for old, new in _OLD_SUFFIXES.items()}
ALIASES["train/loss_epoch"] = "train/loss"


# Logged by training besides the val/ test/ eval/ quantities (README's metric table).
TRAINING = ("train/loss", "train/loss_step", "train/acc", "lr", "epoch_seconds", "throughput_img_s", "overfit_gap")


def documented(name: str) -> bool:
    """Whether `name` (old or new spelling) is a metric clfops logs somewhere: a gate on it that a run lacks
    fails as "not logged"; any other name is a typo, refused as a usage error."""
    name = canonical(name)
    source, _, quantity = name.partition("/")
    if name in TRAINING or name == "val/temperature":
        return True
    return source in SOURCES and (quantity in QUANTITIES or quantity.startswith(PER_CLASS_F1))


def canonical(name: str) -> str:
    """Today's name of `name` (itself when it is not an old name)."""
    return ALIASES.get(name, name)


def upgrade(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's metrics (or one metrics.csv row) under today's names. Where a run logged both an old name and
    its new one, the new one's value is kept."""
    out: dict[str, float] = {}
    old_run = "train/loss_epoch" in metrics  # then its `train/loss` points were the per-step values
    for name, value in metrics.items():
        if old_run and name == "train/loss":
            out.setdefault("train/loss_step", value)
        elif name in ALIASES:
            out.setdefault(ALIASES[name], value)
        else:
            out[name] = value
    return out


def same_quantity(name: str) -> list[str]:
    """`name` (today's), then where the same number stands in a model's own run: `eval/X` <-> `test/X`.
    `clfops evaluate --log-mlflow` writes eval/* into the model's run only when it scored that run's own test
    split, so within one run test/X and eval/X measure the same weights on the same images."""
    name = canonical(name)
    source, _, quantity = name.partition("/")
    other = {"eval": "test", "test": "eval"}.get(source)
    return [name, f"{other}/{quantity}"] if other and quantity else [name]
