"""Configuration: the only module that imports Hydra.

`compose("train", overrides)` turns the packaged configs (src/clfops/configs, shipped in the wheel and found
by Hydra as `pkg://clfops.configs`) plus the user's own config folders (`--config-dir`, $CLFOPS_CONFIG_DIR:
added to the search path, never replacing the packaged groups) plus command-line overrides (Hydra's grammar)
into one resolved, validated `DictConfig`. Every mistake a user can make here (unknown group choice, unknown key,
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


PACKAGE = "clfops.configs"  # the packaged configs, as Hydra's pkg:// search path names them
HYDRA_HINT = (
    "clfops composes configs with Hydra but runs no Hydra app, so hydra.* settings have no effect: "
    "the run dir is run.root=DIR run.name=NAME, your own config folders come with --config-dir DIR"
)


def config_dir() -> Path:
    """The packaged configs: a plain folder inside the installed package (wheels install unzipped)."""
    return Path(__file__).resolve().parent / "configs"


def user_config_dirs(extra: str | Path | list[str | Path] | None = None) -> list[Path]:
    """The user's config folders: `extra` (--config-dir, the API's config_dir), then $CLFOPS_CONFIG_DIR
    (several joined by os.pathsep). Each must exist; they ADD groups and choices to the packaged ones."""
    given: list[str | Path] = [] if extra is None else list(extra) if isinstance(extra, list) else [extra]
    env = os.environ.get(CONFIG_ENV, "")
    given += [p for p in env.split(os.pathsep) if p]
    dirs: list[Path] = []
    for item in given:
        path = Path(item).expanduser().resolve()
        if not path.is_dir():
            where = "--config-dir" if item not in env.split(os.pathsep) else f"${CONFIG_ENV}"
            raise ConfigError(f"{where} {item}: no such directory (give a folder holding e.g. experiment/NAME.yaml)")
        if path not in dirs and path != config_dir():
            dirs.append(path)
    return dirs


def group_choices(extra_dirs: list[Path] | None = None) -> dict[str, list[str]]:
    """Config groups and their choices: the packaged ones plus the user's folders' (no Hydra import: --help)."""
    roots = [config_dir(), *(user_config_dirs() if extra_dirs is None else extra_dirs)]
    groups: dict[str, set[str]] = {}
    for root in roots:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            groups.setdefault(sub.name, set()).update(f.stem for f in sub.glob("*.yaml"))
    return {group: sorted(choices) for group, choices in sorted(groups.items())}


def check_overrides(overrides: list[str], multirun: bool = False) -> None:
    """Refuse, in one line, what Hydra's command line means but compose cannot do: hydra.* and sweeps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    for item in overrides:
        if item.lstrip("+~").startswith("hydra.") or item.lstrip("+~").split("=", 1)[0] == "hydra":
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
        raise ConfigError(f"config: {_first_line(str(err))}") from None
    _check_missing(cfg, prefix="")
    validate_ranges(cfg)
    if name == "train":
        check_train_limits(cfg)
    return cfg


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def register_schemas() -> None:
    """The structured configs (clfops.schema) that configs/*.yaml name in their defaults lists."""
    from clfops.schema import register

    register()


def validate_ranges(cfg: DictConfig) -> None:
    """Ranges and choices declared on the schema's fields (types were checked by OmegaConf while composing)."""
    from clfops.schema import SchemaError, validate

    try:
        validate(cfg)
    except SchemaError as err:
        raise ConfigError(str(err)) from None


def override(cfg: DictConfig, item: str) -> DictConfig:
    """A copy of a composed `cfg` with one `key=value` more, refused exactly as `compose` would refuse it
    (OmegaConf's type check against the schema, then the range pass), without composing again (~0.5 s)."""
    from omegaconf.errors import OmegaConfBaseException

    out = cfg.copy()
    try:
        OmegaConf.set_struct(out, True)
        out = OmegaConf.merge(out, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        raise ConfigError(_schema_error(err) or f"{item.split('=', 1)[0]}: {_first_line(str(err))}") from None
    validate_ranges(out)
    return out


def _schema_error(err: Exception) -> str | None:
    """OmegaConf's type refusal (a ValidationError under Hydra's error), as `KEY: expected TYPE, got VALUE`."""
    from omegaconf.errors import ValidationError

    from clfops.schema import expected_type, show

    cause = err if isinstance(err, ValidationError) else err.__cause__
    if not isinstance(cause, ValidationError) or not getattr(cause, "full_key", None):
        return None
    expected = expected_type(cause.object_type, cause.key, cause.ref_type)
    return f"{cause.full_key}: expected {expected}, got {show(cause.value)}"


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
