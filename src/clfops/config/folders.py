"""Where configs are found: the packaged ones (src/clfops/configs, shipped in the wheel and found by Hydra as
`pkg://clfops.configs`) and the user's own folders (`--config-dir`, $CLFOPS_CONFIG_DIR), which ADD groups and
choices to the packaged ones, never replace them. No Hydra import: `clfops train --help` lists the choices."""

from __future__ import annotations

import os
from pathlib import Path

from clfops.config.checks import ConfigError

CONFIG_ENV = "CLFOPS_CONFIG_DIR"


def config_dir() -> Path:
    """The packaged configs: a plain folder inside the installed package (wheels install unzipped)."""
    return Path(__file__).resolve().parent.parent / "configs"


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
