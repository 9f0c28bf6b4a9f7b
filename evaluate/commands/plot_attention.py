"""``sslbench plot attention``: see :mod:`evaluate.figures`."""

from evaluate.figures import add_attention_arguments as add_arguments
from evaluate.figures import run_attention as run_cli

__all__ = ["add_arguments", "run_cli"]
