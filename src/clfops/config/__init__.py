"""Configuration: the only package that imports Hydra; this module only re-exports.

`compose("train", overrides)` turns the packaged configs (src/clfops/configs, found by Hydra as
`pkg://clfops.configs`) plus the user's own config folders plus command-line overrides into one resolved,
validated `DictConfig`; every mistake a user can make there is a one-line `ConfigError` (exit 2).

- compose.py: compose(), override(), check_overrides(), expand_grid() (-m grids): Hydra's side
- folders.py: the packaged configs and the user's folders (--config-dir, $CLFOPS_CONFIG_DIR), group_choices()
- resume.py: resume_config(), a checkpoint's config plus this command's overrides
- checks.py: ConfigError; required keys, ranges (validate_ranges), a run's limits (check_train_limits)
- convert.py: to_yaml, to_container, from_yaml, flatten (MLflow params); override_key, names (what overrides set)
- schema.py, groups.py: the structured config (Hydra ConfigStore) of train.yaml and of every group option
- fields.py: a field's range and choices (spec), the one pass that checks them (validate), and its words
"""

from clfops.config.checks import ConfigError, check_run_name, check_train_limits, validate_ranges
from clfops.config.compose import PACKAGE, check_overrides, compose, expand_grid, override
from clfops.config.convert import flatten, from_yaml, names, override_key, to_container, to_yaml
from clfops.config.folders import CONFIG_ENV, config_dir, group_choices, user_config_dirs
from clfops.config.resume import resume_config

__all__ = [
    "CONFIG_ENV",
    "PACKAGE",
    "ConfigError",
    "check_overrides",
    "check_run_name",
    "check_train_limits",
    "compose",
    "config_dir",
    "expand_grid",
    "flatten",
    "from_yaml",
    "group_choices",
    "names",
    "override",
    "override_key",
    "resume_config",
    "to_container",
    "to_yaml",
    "user_config_dirs",
    "validate_ranges",
]
