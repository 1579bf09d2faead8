"""The default recipe for this machine's arithmetic: `recipe: auto` (train.yaml) resolved once, at compose.

The packaged defaults (quick_cnn width 32, 6 epochs) were tuned where bf16 is native (AMX/AVX512-BF16 CPUs,
GPUs): there they beat the plain reference script. A CPU without native bf16 trains in fp32 (precision=auto),
where bf16 would be ~5x slower, and the same 6 epochs cost 1.6x the reference's whole run (docs/benchmarks.md,
2026-12-03). Its own recipe, `fp32`, trades width for epochs: quick_cnn at width 24 costs ~0.68x a width-32
step in fp32 on AVX2 (the 14x14 conv is 56 % of the multiply-adds and scales with width squared) and reaches
the same accuracy in fewer multiply-adds (the search is in docs/benchmarks.md); its fc layer at 256 (+8 % a
step) gives every seed 0.93 in 5 epochs.

`auto` becomes `fp32` when the run's precision (trainer.precision, trainer.accelerator) resolves to 32-true,
else `bf16`; the chosen name replaces `auto` in the config, so `--cfg job`, config.yaml, summary.json and the
MLflow params show it, and a resume (which reads config.yaml) or a re-run on the same machine trains the same
recipe. `recipe=bf16` or `recipe=fp32` picks one by hand.

A recipe (configs/_recipes/NAME.yaml) only tunes the model it names (`model.name`); with another model it
changes nothing. It never replaces a key the command line names: `model.args.width=32` or
`trainer.max_epochs=6` win over it. A fine-tune (`model.init`) trains the parent's `model.args` whatever the
recipe set (training/finetune.py: find_parent).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from clfops.config.convert import flatten, names
from clfops.config.folders import config_dir

RECIPES = ("fp32", "bf16")  # configs/_recipes/<name>.yaml; `auto` resolves to one of them


def resolve_recipe(cfg: DictConfig, overrides: list[str]) -> None:
    """Replace `cfg.recipe: auto` by the machine's recipe and set the recipe's keys, in place."""
    name = str(cfg.recipe)
    if name == "auto":
        name = machine_recipe(str(cfg.trainer.precision), str(cfg.trainer.accelerator))
    cfg.recipe = name
    values = OmegaConf.load(config_dir() / "_recipes" / f"{name}.yaml")
    if values.get("model", {}).get("name") != cfg.model.name:
        return
    for key, value in flatten(values).items():
        if key != "model.name" and not names(key, overrides):
            OmegaConf.update(cfg, key, value, merge=False)


def machine_recipe(precision: str, accelerator: str) -> str:
    """`fp32` where this precision setting trains in fp32 on this machine, else `bf16`. Imports torch."""
    from clfops.hardware import resolve_precision

    return "fp32" if resolve_precision(precision, accelerator) == "32-true" else "bf16"
