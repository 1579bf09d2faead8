"""A composed config in the forms the rest of clfops stores it: YAML text, a plain dict, flat MLflow params;
and the keys a command line's overrides name (`override_key`, `names`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clfops.config.checks import ConfigError


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def from_yaml(path: Path) -> DictConfig:
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: not a mapping")
    return cfg


def flatten(cfg: DictConfig | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optimizer': {'lr': 0.1}} -> {'optimizer.lr': 0.1}: the form MLflow params take."""
    data = to_container(cfg) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def override_key(item: str) -> str:
    """`+model.args.width=24` -> `model.args.width`; `~trainer.foo` -> `trainer.foo`; `model=x` -> `model`."""
    return item.split("=", 1)[0].lstrip("+~")


def names(key: str, overrides: list[str]) -> bool:
    """Whether the command line sets `key`, itself or a node above it (`model=x` names `model.args.width`)."""
    return any(key == k or key.startswith(f"{k}.") for k in map(override_key, overrides))
