"""The one base class for mistakes a user can fix (bad override, missing file, unknown run id, …).

The CLI prints `clfops: error: <message>` and exits 2 for any `UserError`, without importing the module that
raised it; every such message is one line that names what is wrong and what to do.
"""


class UserError(Exception):
    """A user-facing error: str(err) is the one-line message."""
