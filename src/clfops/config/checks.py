"""ConfigError, and the checks a composed config passes after OmegaConf's types: required keys, the schema's
ranges and choices (fields.validate), and what keeps a run inside its folder and its time."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from clfops.config.fields import SchemaError, validate
from clfops.errors import UserError


class ConfigError(UserError):
    """A user mistake in overrides or config files; str(err) is the one-line message."""


def validate_ranges(cfg: DictConfig) -> None:
    """Ranges and choices declared on the schema's fields (types were checked by OmegaConf while composing)."""
    try:
        validate(cfg)
    except SchemaError as err:
        raise ConfigError(str(err)) from None


def check_missing(cfg: DictConfig, prefix: str = "") -> None:
    """A key the config files leave MISSING (???) must come from the command line."""
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{prefix}{key} is required: add {prefix}{key}=VALUE to the command")
        value = cfg[key]
        if isinstance(value, DictConfig):
            check_missing(value, f"{prefix}{key}.")


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


def first_line(text: str) -> str:
    """The first line of a library's message (Hydra and OmegaConf add context lines below it)."""
    return text.strip().splitlines()[0] if text.strip() else text
