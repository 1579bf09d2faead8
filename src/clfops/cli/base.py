"""The `clfops` command group and the error handling every command shares.

`clfops --help` and `clfops train --help` import only click: torch, Lightning and MLflow load inside the
command that needs them. Every user mistake arrives here as a `UserError` (clfops.errors) whose message is one
line; it is printed as `clfops: error: ...` with exit code 2, no traceback. Any other exception is a bug (in
clfops or a library it calls): its traceback is printed and the exit code is 1. `clfops --debug` (or
CLFOPS_DEBUG=1) prints the traceback of a user error too.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from clfops.errors import RunFailed, UserError

EXIT_USAGE = 2
STORE_HELP = "Tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
DEBUG_ENV = "CLFOPS_DEBUG"


def debugging() -> bool:
    """True under `clfops --debug ...` or with CLFOPS_DEBUG=1 in the environment."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def one_line(err: BaseException) -> str:
    """The first line of the message (a UserError's message is one line; this guards a multi-line one)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn clfops' user errors into one line + exit 2, a failed run into one line + exit 1, Ctrl-C into
    exit 130. Anything else propagates: Python prints its traceback and exits 1 (a ValueError from numpy or
    torch is a bug to report, not a user mistake to hide)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as err:
            # 128 + signal number, the shell's convention: 130 for Ctrl-C, 143 for SIGTERM.
            signum = getattr(err, "signum", 2)
            click.echo(f"clfops: {err or 'interrupted'}", err=True)
            sys.exit(128 + signum)
        except (UserError, RunFailed) as err:
            # RunFailed: diverged, a training process died; the run is FAILED, exit 1.
            if debugging():
                traceback.print_exc()
            click.echo(f"clfops: error: {one_line(err)}", err=True)
            sys.exit(1 if isinstance(err, RunFailed) else EXIT_USAGE)

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
@click.option("--debug", is_flag=True, help=f"Print the traceback of a user error too (or set {DEBUG_ENV}=1).")
def main(debug: bool) -> None:
    """clfops: train, track, evaluate, promote and serve PyTorch image classifiers."""
    import logging

    logger = logging.getLogger("clfops")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
