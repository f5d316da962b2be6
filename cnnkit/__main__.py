"""`python -m cnnkit` (and `torchrun ... -m cnnkit run ...`): the command line."""

from .cli import main

main()
