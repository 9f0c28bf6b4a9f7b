"""sslbench evaluation harness: checkpoint adapters, protocols, result records, tables, figures and the CLI."""

SSLBENCH_PACKAGE = True
