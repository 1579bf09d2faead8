"""Tuning: LR and batch-size finders, `clfops compare`, `clfops sweep` (Optuna) and their search spaces.

`TuningError` lives here, in a module that imports nothing heavy, so the CLI can name it without Lightning.
"""

from clfops.errors import UserError


class TuningError(UserError):
    """A tuning/study request that cannot be done as asked (bad range, space file, --vary): one line."""
