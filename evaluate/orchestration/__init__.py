"""``sslbench eval full``: suites, the job graph, the protocol job shell, executors and the run report."""
