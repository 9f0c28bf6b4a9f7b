"""``sslbench plot entropy``: see :mod:`evaluate.figures`."""

from evaluate.figures import add_entropy_arguments as add_arguments
from evaluate.figures import run_entropy as run_cli

__all__ = ["add_arguments", "run_cli"]
