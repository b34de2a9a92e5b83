"""Command modules of the ``regframe`` command line: each has ``add_parser(subparsers)`` and ``run(args, out)``."""
