"""The `clfops` command line: one thin function per command, no ML code, no heavy imports at module level.

`clfops --help` and `clfops train --help` import only click: torch, Lightning and MLflow load inside the
command that needs them. Every user mistake arrives as a `UserError` whose message is one line; it is printed
as `clfops: error: ...` with exit code 2 (no traceback unless --debug); any other exception is a bug and shows
its traceback (base.friendly). Commands live in training.py, evaluation.py, registry.py, server.py, tuning.py
and data.py; importing them registers them on `main`.
"""

import sys

import click

from clfops.cli import data, evaluation, export, registry, server, show, training, tuning  # noqa: F401 — registers the commands
from clfops.cli.base import main, quick_exit

__all__ = ["entry", "main"]


def entry() -> None:
    """The `clfops` executable: `main`, then a quick exit once a command has loaded torch (see quick_exit).

    Click's own usage errors (an unknown option, a value outside an option's choices, a missing argument) are
    printed like every other user mistake: one line naming what is wrong and where help is, exit 2."""
    try:
        code = main.main(prog_name="clfops", standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except click.exceptions.NoArgsIsHelpError as err:  # bare `clfops` or a bare group: the help, as click does
        click.echo(err.format_message())
        code = err.exit_code
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "clfops"
        click.echo(f"clfops: error: {err.format_message()} (see '{command} --help')", err=True)
        code = err.exit_code
    except click.ClickException as err:
        click.echo(f"clfops: error: {err.format_message()}", err=True)
        code = err.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        code = 1
    except SystemExit as done:
        code = done.code
    if "torch" in sys.modules:
        quick_exit(code)
    sys.exit(code)
