"""``sslbench ckpt inspect``: see :mod:`evaluate.checkpoints.cli`."""

from evaluate.checkpoints.cli import add_inspect_arguments as add_arguments
from evaluate.checkpoints.cli import run_inspect as run_cli

__all__ = ["add_arguments", "run_cli"]
