"""The search space of `clfops sweep`: a YAML file mapping config keys to Optuna distributions.

    optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    data.batch_size: {type: categorical, choices: [64, 128, 256]}
    model.args.width: {type: int, low: 16, high: 64, step: 16}

Mistakes in the file are refused, one line each, before any trial runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from clfops.tuning import TuningError

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    name: str  # a config key (optimizer.lr) or a config group (scheduler)
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()


def _param(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise TuningError(f"{where}: {name}: give {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
            raise TuningError(f"{where}: {name}: categorical needs choices: [a, b, ...] of plain values")
        return Param(name, kind, choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
        step = None if spec.get("step") is None else float(spec["step"])
    except (KeyError, TypeError, ValueError):
        raise TuningError(f"{where}: {name}: {kind} needs numeric low and high (and optional step)") from None
    log = bool(spec.get("log", False))
    if not low < high or (log and low <= 0) or (log and step is not None) or (step is not None and step <= 0):
        raise TuningError(f"{where}: {name}: need low < high, low > 0 with log: true, and step > 0 without log")
    if kind == "int" and not (low.is_integer() and high.is_integer() and (step or 1).is_integer()):
        raise TuningError(f"{where}: {name}: int bounds and step must be whole numbers")
    return Param(name, kind, low, high, log, step)


def load_space(path: Path) -> list[Param]:
    """The space file: `KEY: {type: float, low: 1e-4, high: 1e-2, log: true}` per line (see docs/tuning.md)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TuningError(f"--space {path}: cannot read it ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise TuningError(f"--space {path}: expected a mapping of config keys to ranges, e.g. optimizer.lr: {{...}}")
    return [_param(str(name), spec, f"--space {path}") for name, spec in data.items()]


def format_value(value: Any) -> str:
    """A sampled value as Hydra override text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def suggest(trial: optuna.Trial, space: list[Param]) -> list[str]:
    out = []
    for p in space:
        if p.kind == "categorical":
            value: Any = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            step = int(p.step or 1)
            value = trial.suggest_int(p.name, int(p.low or 0), int(p.high or 0), step=step, log=p.log)
        else:
            value = trial.suggest_float(p.name, float(p.low or 0), float(p.high or 0), step=p.step, log=p.log)
        out.append(f"{p.name}={format_value(value)}")
    return out


def first_values(space: list[Param]) -> list[str]:
    """Each parameter at its first value (low end, first choice): composing these checks the keys and types."""
    values = [p.choices[0] if p.kind == "categorical" else int(p.low or 0) if p.kind == "int" else p.low for p in space]
    return [f"{p.name}={format_value(v)}" for p, v in zip(space, values, strict=True)]
