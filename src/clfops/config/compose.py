"""Composing a config with Hydra (the only module that calls it; schema.py only fills its ConfigStore).

`compose("train", overrides)` turns the packaged configs plus the user's own config folders (folders.py) plus
command-line overrides (Hydra's grammar) into one resolved, validated `DictConfig`. Every mistake a user can make
here (unknown group choice, unknown key, wrong type, missing required value) becomes a `ConfigError` whose message
is one line naming the key and what is valid, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from clfops.config.checks import ConfigError, check_missing, check_train_limits, first_line, validate_ranges
from clfops.config.convert import override_key
from clfops.config.fields import expected_type, show
from clfops.config.folders import group_choices, user_config_dirs
from clfops.config.recipe import resolve_recipe

PACKAGE = "clfops.configs"  # the packaged configs, as Hydra's pkg:// search path names them
HYDRA_HINT = (
    "clfops composes configs with Hydra but runs no Hydra app, so hydra.* settings have no effect: "
    "the run dir is run.root=DIR run.name=NAME, your own config folders come with --config-dir DIR"
)


def check_overrides(overrides: list[str], multirun: bool = False) -> None:
    """Refuse, in one line, what Hydra's command line means but compose cannot do: hydra.* and sweeps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for item in overrides:
        if override_key(item).split(".")[0] == "hydra":
            raise ConfigError(f"{item}: {HYDRA_HINT}")
        if item.startswith("-"):
            raise ConfigError(f"{item}: not an option of this command (see --help); overrides are key=value")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(_one_line(err, overrides)) from None
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        raise ConfigError(f"{sweeps[0]}: several values make a grid; run it with -m (--multirun)")


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """`a=1,2 b=x,y c=3` -> one override list per point of the grid (Hydra's BasicSweeper order)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    check_overrides(overrides, multirun=True)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        batches = BasicSweeper.split_arguments(parsed, None)
    except HydraException as err:
        raise ConfigError(_one_line(err, overrides)) from None
    return [list(job) for batch in batches for job in batch]


def compose(name: str, overrides: list[str], config_dirs: list[Path] | None = None) -> DictConfig:
    """Compose <name>.yaml with `overrides`, resolve interpolations and check types.

    `config_dirs`: the user's folders (default: user_config_dirs(), i.e. $CLFOPS_CONFIG_DIR), appended to
    Hydra's search path after the packaged configs (`hydra.searchpath`, as a Hydra app's --config-dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_overrides(overrides)
    register_schemas()
    dirs = user_config_dirs() if config_dirs is None else config_dirs
    search = [f"hydra.searchpath=[{','.join(_quote(f'file://{d}') for d in dirs)}]"] if dirs else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=PACKAGE, version_base="1.3"):
            cfg = hydra_compose(config_name=name, overrides=[*search, *overrides])
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(_schema_error(err) or _one_line(err, overrides, dirs)) from None
    finally:
        GlobalHydra.instance().clear()
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config: {first_line(str(err))}") from None
    check_missing(cfg)
    validate_ranges(cfg)
    if name == "train":
        resolve_recipe(cfg, overrides)  # `recipe: auto` -> this machine's recipe, written into cfg
        check_train_limits(cfg)
    return cfg


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register_schemas() -> None:
    """The structured configs (schema.py) that configs/*.yaml name in their defaults lists."""
    from clfops.config.schema import register

    register()


def override(cfg: DictConfig, item: str) -> DictConfig:
    """A copy of a composed `cfg` with one `key=value` more, refused exactly as `compose` would refuse it
    (OmegaConf's type check against the schema, then the range pass), without composing again (~0.5 s)."""
    from omegaconf.errors import OmegaConfBaseException

    out = cfg.copy()
    try:
        OmegaConf.set_struct(out, True)
        out = OmegaConf.merge(out, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        raise ConfigError(_schema_error(err) or f"{item.split('=', 1)[0]}: {first_line(str(err))}") from None
    validate_ranges(out)
    return out


def _schema_error(err: Exception) -> str | None:
    """OmegaConf's type refusal (a ValidationError under Hydra's error), as `KEY: expected TYPE, got VALUE`."""
    from omegaconf.errors import ValidationError

    cause = err if isinstance(err, ValidationError) else err.__cause__
    if not isinstance(cause, ValidationError) or not getattr(cause, "full_key", None):
        return None
    expected = expected_type(cause.object_type, cause.key, cause.ref_type)
    return f"{cause.full_key}: expected {expected}, got {show(cause.value)}"


def _one_line(err: Exception, overrides: list[str], dirs: list[Path] | None = None) -> str:
    """Hydra's multi-line messages, folded to one line that names the key and the valid choices."""
    text = str(err)
    missing = re.search(r"Could not find '([^'/]+)/([^']+)'", text) or re.search(
        r"In '[^']+': Could not find '([^'/]+)/([^']+)'", text
    )
    if missing:
        group, choice = missing.group(1), missing.group(2)
        valid = ", ".join(group_choices(dirs).get(group, []))
        own = f"your own: --config-dir DIR with DIR/{group}/{choice}.yaml"
        return f"{group}={choice}: no such choice; valid {group} choices: {valid} ({own})"
    struct = re.search(r"Key '([^']+)' is not in struct", text)
    if struct or "Could not override" in text or "Could not append to config" in text:
        key = re.search(r"Could not (?:override|append to config)\.? ?'?([^'.\s]+(?:\.[^'\s]+)*)", text)
        name = key.group(1) if key else (struct.group(1) if struct else "?")
        return f"{name}: unknown config key; see `clfops train --cfg job` for the valid keys"
    if "mismatched input" in text or "no viable alternative" in text or "extraneous input" in text:
        bad = next((o for o in overrides if o in text), " ".join(overrides))
        return f"cannot parse override {bad!r}: use key=value (e.g. optimizer.lr=0.01)"
    return f"config: {first_line(text)}"
