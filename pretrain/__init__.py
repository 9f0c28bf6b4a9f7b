"""sslbench pretraining: one engine; a method is backbone + heads + loss + view plan on it (BAM, DINO and iBOT today;
SERE and ADCLR are built on the same token-level contract). Imports only ``sslcore`` below it, never ``evaluate``
(except the CLI layer, which wires the protocol's k-NN vote into the training monitor)."""

SSLBENCH_PACKAGE = True
