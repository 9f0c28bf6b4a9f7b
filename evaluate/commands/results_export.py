"""``sslbench results export``: see :mod:`evaluate.results`."""

from evaluate.results import add_export_arguments as add_arguments
from evaluate.results import run_export as run_cli

__all__ = ["add_arguments", "run_cli"]
