"""``sslbench demo``: ShapesWorld -> pretraining -> ``eval full`` -> the demo's report."""
