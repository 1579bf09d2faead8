"""`python -m clfops.cli`."""

from clfops.cli import main

main()
