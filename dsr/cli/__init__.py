"""The ``dsr`` command line: a thin typer layer over the library functions."""
