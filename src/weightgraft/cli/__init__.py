"""The ``graft`` command line: one module per command, each a thin shell over one library call."""
