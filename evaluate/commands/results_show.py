"""``sslbench results show``: see :mod:`evaluate.results`."""

from evaluate.results import add_show_arguments as add_arguments
from evaluate.results import run_show as run_cli

__all__ = ["add_arguments", "run_cli"]
