"""``sslbench ckpt convert``: see :mod:`evaluate.checkpoints.cli`."""

from evaluate.checkpoints.cli import add_convert_arguments as add_arguments
from evaluate.checkpoints.cli import run_convert as run_cli

__all__ = ["add_arguments", "run_cli"]
