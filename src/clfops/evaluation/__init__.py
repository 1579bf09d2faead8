"""The evaluation report: numbers (`metrics`), figures (`plots`, matplotlib Agg), files (`outputs`), the
self-contained page (`html`), and finding the model and data to evaluate (`inputs`).

This module stays import-light (no torch): the CLI imports `EvaluateError` from it to recognise user errors.
"""

from clfops.errors import UserError


class EvaluateError(UserError):
    """`clfops evaluate` cannot go on (no model given, data that does not fit the model): one line for the user."""
