"""The `clfops` command group and the error handling every command shares.

`clfops --help` and `clfops train --help` import only click: torch, Lightning and MLflow load inside the
command that needs them. Every user mistake arrives here as an exception whose message is one line; it is
printed as `clfops: error: ...` with exit code 2 (never a traceback).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from clfops.errors import RunFailed, UserError

EXIT_USAGE = 2
STORE_HELP = "Tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one line + exit 2, Ctrl-C into exit 130."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as err:
            # 128 + signal number, the shell's convention: 130 for Ctrl-C, 143 for SIGTERM.
            signum = getattr(err, "signum", 2)
            click.echo(f"clfops: {err or 'interrupted'}", err=True)
            sys.exit(128 + signum)
        except Exception as err:
            if isinstance(err, RunFailed):  # diverged, a training process died: the run is FAILED, exit 1
                click.echo(f"clfops: error: {err}", err=True)
                sys.exit(1)
            if isinstance(err, (UserError, ValueError)):
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                click.echo(f"clfops: error: {message}", err=True)
                sys.exit(EXIT_USAGE)
            raise

    return wrapper


def quick_exit(code: int | str | None) -> None:
    """End the process as Python would, minus tearing down its modules: ~1-1.5 s after a torch + Lightning +
    MLflow command on 2 cores (an import-only script: 1.1 s from its last atexit handler to the shell).

    What normal shutdown does that matters is done first, in the same order, by the interpreter's own
    functions: `threading._shutdown` (thread-pool exit hooks, then a join of every non-daemon thread), the
    atexit handlers (MLflow's async logging flush among them), then the log handlers and stdio are flushed.
    Only freeing the interpreter's objects is skipped: the OS reclaims the memory, and every file clfops
    writes was already written atomically and closed. Where those functions are missing: a normal exit.
    """
    shutdown_threads = getattr(threading, "_shutdown", None)
    run_atexit = getattr(atexit, "_run_exitfuncs", None)
    if shutdown_threads is None or run_atexit is None or threading.current_thread() is not threading.main_thread():
        sys.exit(code)
    shutdown_threads()
    run_atexit()
    logging.shutdown()
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clfops")
def main() -> None:
    """clfops: train, track, evaluate, promote and serve PyTorch image classifiers."""
    import logging

    logger = logging.getLogger("clfops")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
