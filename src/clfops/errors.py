"""The one base class for mistakes a user can fix (bad override, missing file, unknown run id, …).

The CLI prints `clfops: error: <message>` and exits 2 for any `UserError`, without importing the module that
raised it; every such message is one line that names what is wrong and what to do.
"""


class UserError(Exception):
    """A user-facing error: str(err) is the one-line message."""


class RunFailed(Exception):
    """A run that could not finish for a reason outside the config (a training process died, the loss
    diverged): the CLI prints the one-line message and exits 1; the run is marked FAILED."""
