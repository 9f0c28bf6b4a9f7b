"""Evaluation protocols: frozen-feature (k-NN, linear, logistic regression, clustering, SERE relation),
DAVIS label propagation, dense tasks (mmdet/mmseg) and fine-tuning; the shared feature extractor and run shell.
"""
