"""Where each paper-table column is found in the results store.

A paper column maps to a tuple of :class:`Source` alternatives, tried in order; the first with a record for the
checkpoint fills the cell, and the cell's footnote names the protocol, dataset and metric actually used. Datasets
are listed paper dataset first, then the ShapesWorld stand-in (e.g. ``("imagenet", "shapesworld")``), so a demo run
fills the ImageNet column with its ShapesWorld number and says so. A column absent from :data:`COLUMN_SOURCES` has no
sslbench protocol (VOC, ImageNet-S...): its measured cells read ``n/a``. Fine-tuning
columns prefer records of the paper's own recipe (``settings.recipe``), then any fine-tuning record.

:data:`EXTRA_COLUMNS` appends columns that the paper does not have but that sslbench measures for the same question
(e.g. DAVIS J&F at sslbench's settings, since BAM's DAVIS table varies a parameter whose name was lost).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from evaluate.datasets.registry import metric_of


@dataclasses.dataclass(frozen=True)
class Source:
    """A measured number: ``protocol`` records on the first of ``datasets`` that has one, metric ``metric``, whose
    settings contain every ``(key, value)`` of ``settings`` (a tuple value: any of its items)."""

    protocol: str
    datasets: tuple[str, ...]
    metric: str
    settings: tuple[tuple[str, Any], ...] = ()

    def matches(self, settings: dict[str, Any]) -> bool:
        return all(settings.get(k) in v if isinstance(v, tuple) else settings.get(k) == v for k, v in self.settings)


IMAGENET = ("imagenet", "shapesworld")
COCO = ("coco2017", "shapesworld-coco")
ADE = ("ade20k", "shapesworld-ade20k")
DAVIS = ("davis2017", "shapesworld-davis")
IMAGENET_S = ("imagenet-s919", "imagenet-s", "imagenet", "shapesworld")  # SERE Table 4: ImageNet-S val images

# ADCLR, SERE, iBOT and DINO probe with DINO's recipe: prefer sslbench's "dino" variant without BAM's BN head.
LINEAR = (
    Source("linear", IMAGENET, "top1", (("variant", "dino"), ("bn_head", False))),
    Source("linear", IMAGENET, "top1", (("variant", "dino"),)),
    Source("linear", IMAGENET, "top1"),
)
# BAM probes with its own eval_linear (Table 9(b)): DINO's recipe with a BN head at lr 0.002, or 0.3 for a ResNet-50
# (the suite's linear-bam, whose family_settings give a ResNet checkpoint its lr).
BAM_LINEAR = (
    Source("linear", IMAGENET, "top1", (("variant", "dino"), ("bn_head", True), ("lr", (0.002, 0.3)))),
    *LINEAR,
)
KNN = (Source("knn", IMAGENET, "top1@k20"),)


# Fine-tuning records name their recipe (evaluate/protocols/finetune/recipes): each paper's own recipe first, then any.
def _finetune(recipe: str, metric: str = "top1", datasets: tuple[str, ...] = IMAGENET) -> tuple[Source, ...]:
    return (Source("finetune", datasets, metric, (("recipe", recipe),)), Source("finetune", datasets, metric))


FINETUNE = (Source("finetune", IMAGENET, "top1"),)

# COCO columns read records of their paper's detector only (``settings.config``, the config file's stem): Cascade Mask
# R-CNN (BAM, SERE, iBOT; the ShapesWorld stand-in is a Cascade too), or Mask R-CNN for ADCLR's Table 3 (ADCLR's
# stated fine-tuning first, then SelfPatch's released config) and SelfPatch's README (the other way round).
CASCADE = (
    "cascade_mask_rcnn_vit_small_giou_4conv1f_coco_1x",
    "cascade_mask_rcnn_vit_base_giou_4conv1f_coco_1x",
    "cascade_mask_rcnn_vit_shapesworld",
)
ADCLR_MASK_RCNN, SELFPATCH_MASK_RCNN = "mask_rcnn_vit_small_coco_1x_adclr", "mask_rcnn_vit_small_coco_1x"
_COCO_METRICS = {
    "box_AP": "bbox_mAP",
    "box_AP50": "bbox_mAP_50",
    "box_AP75": "bbox_mAP_75",
    "mask_AP": "segm_mAP",
    "mask_AP50": "segm_mAP_50",
    "mask_AP75": "segm_mAP_75",
}


def _coco(*configs: tuple[str, ...]) -> dict[str, tuple[Source, ...]]:
    """Column key -> sources: the COCO records of each group of configs in turn."""
    return {
        key: tuple(Source("coco", COCO, metric, (("config", group),)) for group in configs)
        for key, metric in _COCO_METRICS.items()
    }


BOX = _coco(CASCADE)
ADE_MIOU = (Source("ade20k", ADE, "mIoU"),)
ADE_MACC = (Source("ade20k", ADE, "mAcc"),)


def _semi(fraction: str, recipe: str) -> tuple[Source, ...]:
    datasets = (f"imagenet-{fraction}",)
    return (*_finetune(recipe, datasets=datasets), Source("logreg", datasets, "top1"))


def _transfer(protocol: str, datasets: dict[str, str], by_dataset: bool) -> dict[str, tuple[Source, ...]]:
    """Transfer columns: each dataset's own metric (``by_dataset``: the linear-transfer protocol of Kornblith et al.,
    mean per-class accuracy for Aircraft, Pets, Flowers and Caltech-101) or top-1 (fine-tuning papers report top-1)."""
    return {
        key: (Source(protocol, (name,), metric_of(name) if by_dataset else "top1"),) for key, name in datasets.items()
    }


_BAM_TRANSFER = {
    "food101": "food101",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "cars": "cars",
    "aircraft": "aircraft",
    "pets": "pets",
    "flowers": "flowers",
}
_ADCLR_TRANSFER = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "inat18": "inat2018",
    "inat19": "inat2019",
    "flowers": "flowers",
    "cars": "cars",
}

COLUMN_SOURCES: dict[str, dict[str, tuple[Source, ...]]] = {
    "bam.table1_ablation": {"top1": BAM_LINEAR},
    "bam.table2_linear": {"top1": BAM_LINEAR},
    "bam.table3_finetune": {"top1": _finetune("deit_bam")},
    "bam.table4_semisup": {
        "semi_1pct_top1": _semi("1pct", "bam_semisup_1pct"),
        "semi_10pct_top1": _semi("10pct", "bam_semisup_10pct"),
    },
    "bam.table5_transfer_linear": _transfer("logreg", _BAM_TRANSFER, by_dataset=True),
    "bam.table5_transfer_finetune": _transfer("finetune", _BAM_TRANSFER, by_dataset=False),
    "bam.table7_coco_ade20k": {
        "coco_box_AP": BOX["box_AP"],
        "coco_mask_AP": BOX["mask_AP"],
        "ade_mIoU": ADE_MIOU,
        "ade_mAcc": ADE_MACC,
    },
    "bam.table8_architectures": {"linear_top1": BAM_LINEAR},
    "adclr.table1_in1k_linear_finetune": {"linear_top1": LINEAR, "ft_top1": _finetune("adclr_beit_vitb")},
    "adclr.table2_knn_linear": {"knn_top1": KNN, "linear_top1": LINEAR},
    "adclr.table3_coco_maskrcnn": _coco((ADCLR_MASK_RCNN,), (SELFPATCH_MASK_RCNN,)),
    "adclr.table4_ade20k": {
        "mIoU": ADE_MIOU,
        "aAcc": (Source("ade20k", ADE, "aAcc"),),
        "mAcc": ADE_MACC,
    },
    "adclr.table5_transfer": _transfer("finetune", _ADCLR_TRANSFER, by_dataset=False),
    "adclr.table6_query_crop_ratio": {"linear_top1": LINEAR},
    "sere.table1_transfer": {"ade_mIoU": ADE_MIOU, "ade_mAcc": ADE_MACC, **BOX},
    "sere.table2_in1k_finetune_imagenets": {
        "in1k_ft_top1": _finetune("sere_vits"),
        "in1k_ft_top5": _finetune("sere_vits", "top5"),
    },
    "sere.table4_relation_difference": {  # the default tokens (final-norm patch tokens) first, then any record
        "pixel_rel_diff": (
            Source("sere-relation", IMAGENET_S, "pixel_rel_diff", (("tokens", "normed"),)),
            Source("sere-relation", IMAGENET_S, "pixel_rel_diff"),
        ),
        "channel_rel_diff": (
            Source("sere-relation", IMAGENET_S, "channel_rel_diff", (("tokens", "normed"),)),
            Source("sere-relation", IMAGENET_S, "channel_rel_diff"),
        ),
    },
    "bam.readme_checkpoints": {"linear_top1": BAM_LINEAR},
    "sere.readme_finetune": {"ft_top1": _finetune("sere_vits")},
    "ibot.readme": {
        "knn_top1": KNN,
        "linear_top1": LINEAR,
        "ft_top1": FINETUNE,
        "box_AP": BOX["box_AP"],
        "mask_AP": BOX["mask_AP"],
        "ade_mIoU": ADE_MIOU,
    },
    "dino.readme": {"knn_top1": KNN, "linear_top1": LINEAR},
    "selfpatch.readme": {
        key: sources
        for key, sources in _coco((SELFPATCH_MASK_RCNN,), (ADCLR_MASK_RCNN,)).items()
        if key in ("box_AP", "mask_AP")
    },
}

# table id -> [(column key, header, sources)] appended after the paper's columns (published rows show blanks).
EXTRA_COLUMNS: dict[str, list[tuple[str, str, tuple[Source, ...]]]] = {
    "bam.table5_transfer_linear": [
        (
            "sw_transfer",
            "ShapesWorld-transfer (sslbench)",
            (
                Source("logreg", ("shapesworld-transfer",), "top1"),
                Source("logreg", ("shapesworld-transfer",), "mean_per_class"),
            ),
        )
    ],
    "bam.table6_davis": [
        ("davis_JF", "J&F-Mean (sslbench settings)", (Source("davis", DAVIS, "J&F-Mean"),)),
        ("davis_J", "J-Mean (sslbench settings)", (Source("davis", DAVIS, "J-Mean"),)),
        ("davis_F", "F-Mean (sslbench settings)", (Source("davis", DAVIS, "F-Mean"),)),
    ],
}


def sources_for(table_id: str) -> dict[str, tuple[Source, ...]]:
    """Column key -> sources of one table, extra columns included."""
    out = dict(COLUMN_SOURCES.get(table_id, {}))
    out.update({key: sources for key, _header, sources in EXTRA_COLUMNS.get(table_id, [])})
    return out
