"""The `clfops` command line: one thin function per command, no ML code, no heavy imports at module level.

`clfops --help` and `clfops train --help` import only click: torch, Lightning and MLflow load inside the
command that needs them. Every user mistake arrives as an exception whose message is one line; it is printed
as `clfops: error: ...` with exit code 2 (never a traceback). Commands live in runs.py, models.py, server.py,
tuning.py and data.py; importing them registers them on `main`.
"""

import sys

from clfops.cli import data, models, runs, server, tuning  # noqa: F401 — registers the commands
from clfops.cli.base import main, quick_exit

__all__ = ["entry", "main"]


def entry() -> None:
    """The `clfops` executable: `main`, then a quick exit once a command has loaded torch (see quick_exit)."""
    try:
        main()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if "torch" in sys.modules:
        quick_exit(code)
    sys.exit(code)
