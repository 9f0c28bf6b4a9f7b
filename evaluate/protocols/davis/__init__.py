"""DAVIS-2017 semi-supervised video object segmentation from frozen ViT patch features.

* :mod:`evaluate.protocols.davis.data`: the DAVIS directory layout (real DAVIS-2017 or ShapesWorld video).
* :mod:`evaluate.protocols.davis.propagation`: DINO's label propagation as pure tensor functions.
* :mod:`evaluate.protocols.davis.metrics`: the official J&F metric (region IoU and boundary F-measure), pure numpy.
* :mod:`evaluate.protocols.davis.features`: per-frame patch features, cached on disk.
* :mod:`evaluate.protocols.davis.run`: the protocol (features -> propagation -> PNGs -> J&F -> records).
* :mod:`evaluate.protocols.davis.cli` / :mod:`evaluate.protocols.davis.score_cli`: ``sslbench eval davis`` and ``sslbench eval davis-score``.
"""
