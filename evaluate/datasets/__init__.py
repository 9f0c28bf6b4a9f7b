"""Datasets for the frozen-feature protocols (and fine-tuning): one interface over every layout.

* :mod:`evaluate.datasets.core`: :class:`LabeledImages` (what the feature extractor, its cache fingerprint and the
  protocols see), ImageFolder splits, SimCLR-style subsets, fingerprints;
* :mod:`evaluate.datasets.official`: the transfer datasets in their official layouts;
* :mod:`evaluate.datasets.large`: ImageNet-1k (flat val labelled from the devkit or ``LOC_val_solution.csv``) and
  iNaturalist 2018/2019;
* :mod:`evaluate.datasets.registry`: name -> reader, splits, roles, metric, expected counts; ``load_images``,
  ``build_dataset``, ``parse_data_arg``.

See ``docs/datasets.md``.
"""

from evaluate.datasets.core import (
    ArrayImages,
    ImageDataset,
    LabeledImages,
    apply_subset,
    concat,
    fingerprint,
    load_split,
    read_subset_file,
    resolve_subset,
)
from evaluate.datasets.metrics import METRICS
from evaluate.datasets.registry import (
    DATASETS,
    DataPlan,
    DatasetSpec,
    build_dataset,
    get_spec,
    load_images,
    metric_of,
    parse_data_arg,
    plan_data,
    require_spec,
)

__all__ = [
    "DATASETS",
    "METRICS",
    "ArrayImages",
    "DataPlan",
    "DatasetSpec",
    "ImageDataset",
    "LabeledImages",
    "apply_subset",
    "build_dataset",
    "concat",
    "fingerprint",
    "get_spec",
    "load_images",
    "load_split",
    "metric_of",
    "parse_data_arg",
    "plan_data",
    "read_subset_file",
    "require_spec",
    "resolve_subset",
]
