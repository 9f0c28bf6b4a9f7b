"""sslbench's shared core: user-facing errors, atomic I/O and typed configuration.

The bottom layer of the project: ``pretrain`` and ``evaluate`` both import it, it imports neither.
"""

SSLBENCH_PACKAGE = True
