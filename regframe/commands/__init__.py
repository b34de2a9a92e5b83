"""Command modules of the ``regframe`` command line (one module per command: ``add_parser``, ``run``)."""
