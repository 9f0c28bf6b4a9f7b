"""sslbench pretraining: one engine, method modules (BAM, ADCLR, SERE, DINO, iBOT) composed of backbone, heads,
loss and crops."""

SSLBENCH_PACKAGE = True
