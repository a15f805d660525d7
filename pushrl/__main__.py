"""``python -m pushrl``: the command line (see :mod:`pushrl.cli.main`)."""

from pushrl.cli.main import main

main()
