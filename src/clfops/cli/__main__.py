"""`python -m clfops.cli`."""

from clfops.cli import entry

entry()
