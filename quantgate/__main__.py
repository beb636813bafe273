"""``python -m quantgate``: the same as the ``quantgate`` command, where no console script is installed."""

from quantgate.cli import main

main()
