"""The config a resumed run continues with: the checkpoint's own, plus this command's overrides, each keeping
its saved type (no schema: a checkpoint's config may predate it)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from clfops.config.checks import ConfigError, check_train_limits, first_line
from clfops.config.convert import override_key
from clfops.config.folders import group_choices


def resume_config(saved: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The config a resumed run continues with: the checkpoint's own, plus this command's overrides."""
    base = OmegaConf.create(saved)
    groups = group_choices()
    merged = base
    for item in overrides:
        key = override_key(item)
        if key == "resume":
            continue
        if key in groups:
            raise ConfigError(f"{key}: cannot switch config group when resuming (start a new run instead)")
        if key == "recipe" and item.split("=", 1)[1] != str(base.get("recipe")):  # its keys shaped the weights
            raise ConfigError(
                f"recipe: the run trains recipe {base.get('recipe')}; a resume keeps it (start a new run)"
            )
        try:
            patch = OmegaConf.from_dotlist([item.lstrip("+")])
            OmegaConf.set_struct(merged, True)
            merged = OmegaConf.merge(merged, patch)
        except Exception as err:
            raise ConfigError(f"{key}: {first_line(str(err))}") from None
    _check_types(merged, base, prefix="")
    OmegaConf.set_struct(merged, False)
    check_train_limits(merged)
    return merged


def _check_types(cfg: Any, default: Any, prefix: str) -> None:
    """A value whose default is a number/bool/string must keep that type (ints are accepted as floats)."""
    if isinstance(cfg, DictConfig) and isinstance(default, DictConfig):
        for key in cfg:
            if key in default:
                _check_types(cfg[key], default[key], f"{prefix}{key}.")
        return
    if isinstance(cfg, (DictConfig, ListConfig)) or isinstance(default, (DictConfig, ListConfig)):
        if default is not None and type(cfg) is not type(default) and cfg is not None:
            raise ConfigError(f"{prefix[:-1]}: expected {_kind(default)}, got {cfg!r}")
        return
    if default is None or cfg is None:
        return
    ok = type(cfg) is type(default) or (isinstance(default, float) and type(cfg) is int)
    if not ok:
        raise ConfigError(f"{prefix[:-1]}: expected {_kind(default)}, got {cfg!r} (default {default!r})")


def _kind(value: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if isinstance(value, (DictConfig, dict)):
        return "a mapping"
    if isinstance(value, (ListConfig, list)):
        return "a list"
    return names.get(type(value), type(value).__name__)
