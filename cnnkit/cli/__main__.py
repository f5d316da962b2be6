"""`python -m cnnkit.cli`: the command line, as `python -m cnnkit` and the `cnnkit` script run it."""

from . import main

main()
