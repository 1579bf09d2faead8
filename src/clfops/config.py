"""Configuration: the only module that imports Hydra.

`compose("train", overrides)` turns `configs/` plus command-line overrides (Hydra's grammar) into one
resolved, validated `DictConfig`. Every mistake a user can make here (unknown group choice, unknown key,
wrong type, missing required value) becomes a `ConfigError` whose message is one line naming the key and
what is valid, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from clfops.errors import UserError

CONFIG_ENV = "CLFOPS_CONFIG_DIR"


class ConfigError(UserError):
    """A user mistake in overrides or config files; str(err) is the one-line message."""


def config_dir() -> Path:
    """Where the configs live: $CLFOPS_CONFIG_DIR, else the repository's configs/ (editable install)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2] / "configs"


def group_choices(directory: Path | None = None) -> dict[str, list[str]]:
    """Config groups and their choices, read from the file tree (no Hydra import: used by --help)."""
    root = directory or config_dir()
    groups: dict[str, list[str]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        groups[sub.name] = sorted(f.stem for f in sub.glob("*.yaml"))
    return groups


def compose(name: str, overrides: list[str]) -> DictConfig:
    """Compose configs/<name>.yaml with `overrides`, resolve interpolations and check types."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=name, overrides=list(overrides))
            defaults = hydra_compose(config_name=name, overrides=_group_overrides(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(_one_line(err, overrides)) from None
    finally:
        GlobalHydra.instance().clear()
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config: {_first_line(str(err))}") from None
    _check_types(cfg, defaults, prefix="")
    _check_missing(cfg, prefix="")
    if name == "train":
        check_train_limits(cfg)
    return cfg


def resume_config(saved: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The config a resumed run continues with: the checkpoint's own, plus this command's overrides."""
    base = OmegaConf.create(saved)
    groups = group_choices()
    merged = base
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key == "resume":
            continue
        if key in groups:
            raise ConfigError(f"{key}: cannot switch config group when resuming (start a new run instead)")
        try:
            patch = OmegaConf.from_dotlist([item.lstrip("+")])
            OmegaConf.set_struct(merged, True)
            merged = OmegaConf.merge(merged, patch)
        except Exception as err:
            raise ConfigError(f"{key}: {_first_line(str(err))}") from None
    _check_types(merged, base, prefix="")
    OmegaConf.set_struct(merged, False)
    check_train_limits(merged)
    return merged


def check_run_name(name: Any) -> None:
    """run.name is one path component: a run never lands outside run.root (../x, /abs) or in a subfolder."""
    if name is None:
        return
    text = str(name)  # run.name=nan is a float, run.name=7 an int
    if text in ("", ".", "..") or "/" in text or "\\" in text or "\0" in text:
        raise ConfigError(
            f"run.name={text!r}: must be a single folder name (no '/', not empty, '.' or '..'); "
            "choose where run dirs go with run.root=DIR"
        )


def check_train_limits(cfg: DictConfig) -> None:
    """What keeps a run inside its folder and its time: checked before a run dir or MLflow run exists."""
    check_run_name(OmegaConf.select(cfg, "run.name"))
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"trainer.max_epochs={epochs}: must be an integer of at least 1 (-1 would never stop)")
    keep = OmegaConf.select(cfg, "checkpoint.keep_periodic")
    if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise ConfigError(f"checkpoint.keep_periodic={keep}: must be an integer of at least 1 (the newest N kept)")


def _group_overrides(overrides: list[str]) -> list[str]:
    """Only the overrides that pick a group file (e.g. `model=cnn`): they define the expected types."""
    groups = group_choices()
    picked = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in groups or key.startswith("experiment"):
            picked.append(item)
    return picked


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


def _check_missing(cfg: DictConfig, prefix: str) -> None:
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{prefix}{key} is required: add {prefix}{key}=VALUE to the command")
        value = cfg[key]
        if isinstance(value, DictConfig):
            _check_missing(value, f"{prefix}{key}.")


def _kind(value: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if isinstance(value, (DictConfig, dict)):
        return "a mapping"
    if isinstance(value, (ListConfig, list)):
        return "a list"
    return names.get(type(value), type(value).__name__)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _one_line(err: Exception, overrides: list[str]) -> str:
    """Hydra's multi-line messages, folded to one line that names the key and the valid choices."""
    text = str(err)
    missing = re.search(r"Could not find '([^'/]+)/([^']+)'", text) or re.search(
        r"In '[^']+': Could not find '([^'/]+)/([^']+)'", text
    )
    if missing:
        group, choice = missing.group(1), missing.group(2)
        valid = ", ".join(group_choices().get(group, []))
        return f"{group}={choice}: no such choice; valid {group} choices: {valid}"
    struct = re.search(r"Key '([^']+)' is not in struct", text)
    if struct or "Could not override" in text or "Could not append to config" in text:
        key = re.search(r"Could not (?:override|append to config)\.? ?'?([^'.\s]+(?:\.[^'\s]+)*)", text)
        name = key.group(1) if key else (struct.group(1) if struct else "?")
        return f"{name}: unknown config key; see `clfops train --cfg job` for the valid keys"
    if "mismatched input" in text or "no viable alternative" in text or "extraneous input" in text:
        bad = next((o for o in overrides if o in text), " ".join(overrides))
        return f"cannot parse override {bad!r}: use key=value (e.g. optimizer.lr=0.01)"
    return f"config: {_first_line(text)}"


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
