"""``sslbench ckpt init``: see :mod:`evaluate.checkpoints.cli`."""

from evaluate.checkpoints.cli import add_init_arguments as add_arguments
from evaluate.checkpoints.cli import run_init as run_cli

__all__ = ["add_arguments", "run_cli"]
