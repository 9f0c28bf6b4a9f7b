"""``sslbench results ls``: see :mod:`evaluate.results`."""

from evaluate.results import add_ls_arguments as add_arguments
from evaluate.results import run_ls as run_cli

__all__ = ["add_arguments", "run_cli"]
