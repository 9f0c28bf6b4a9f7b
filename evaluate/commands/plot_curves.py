"""``sslbench plot curves``: see :mod:`evaluate.figures`."""

from evaluate.figures import add_curves_arguments as add_arguments
from evaluate.figures import run_curves as run_cli

__all__ = ["add_arguments", "run_cli"]
