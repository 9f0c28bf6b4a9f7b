"""Regenerate ``results/reference/*.yaml`` from the shared transcription of the papers' tables.

Usage: ``python scripts/make_reference.py [/path/to/published_results.yaml]``

The committed YAML files are the data; this script only documents how they were derived. Numbers, table layouts
and column keys are taken over as transcribed (``null`` = lost in the paper's text extraction, ``"-"`` = a printed
dash, other strings as printed); the free-text notes of the transcription are replaced by the short protocol
settings written below, so that each table carries the evaluation settings a reader needs to compare a number.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent.parent / "shared" / "reference" / "published_results.yaml"

PAPERS = {
    "bam": {
        "title": "Unsupervised Representation Learning by Balanced Self Attention Matching",
        "citation": "Shalam & Korman, ECCV 2024, arXiv:2408.02014",
        "code": "https://github.com/DanielShalam/BAM",
        "caveat": "most BAM numbers were typeset in math mode and did not survive text extraction (null); "
        "in rows that lost some cells the surviving numbers may sit in the wrong column (position_uncertain)",
    },
    "adclr": {
        "title": "Patch-Level Contrasting without Patch Correspondence for Accurate and Dense Contrastive "
        "Representation Learning",
        "citation": "Zhang, Zhu, Zhao & Yan, ICLR 2023, arXiv:2306.13337",
        "code": "https://github.com/Sherrylone/Query_Contrastive",
    },
    "sere": {
        "title": "Exploring Feature Self-relation for Self-supervised Transformer (v1)",
        "citation": "Li, Gao & Cheng, arXiv:2206.05184v1 (TPAMI 2023 as SERE)",
        "code": "https://github.com/MCG-NKU/SERE",
    },
    "readme": {
        "title": "Numbers from the README files of the official repositories",
        "citation": "official repository READMEs (repository and version per table)",
        "code": None,
    },
}

# Protocol settings per table, key: value facts (our wording). Short structured fields of the transcription
# (evaluation, metric, arch, epochs, batch, dataset) are copied; prose is replaced by these entries.
SETTINGS: dict[str, dict[str, object]] = {
    "bam.table1_ablation": {
        "head": "linear probe on the frozen backbone",
        "rows": "full model, then one ingredient off per row",
    },
    "bam.table2_linear": {
        "head": "linear probe, projector removed",
        "linear_epochs": 100,
        "linear_optimizer": "SGD",
        "linear_lr": 0.002,
        "linear_batch": 1024,
        "epochs_column": "pre-training epochs",
    },
    "bam.table3_finetune": {"recipe": "DeiT defaults", "finetune_epochs": 150, "epochs_column": "pre-training epochs"},
    "bam.table4_semisup": {
        "recipe": "end-to-end fine-tuning on the SimCLR label subsets",
        "optimizer": "AdamW",
        "lr": 5.0e-5,
        "batch": 512,
        "epochs": 100,
        "warmup_epochs": 5,
        "random_erasing": 0.25,
        "drop_path": 0.1,
        "mixup": 0.8,
        "cutmix": 1.0,
        "caveat": "sub-column labels lost; assigned to the 1% and 10% subsets",
    },
    "bam.table5_transfer_linear": {
        "head": "multinomial logistic regression (L2, L-BFGS) on frozen features",
        "augmentation": "none",
        "selection": "C on val, refit on train+val, report test",
    },
    "bam.table5_transfer_finetune": {
        "recipe": "MoCo v3 transfer fine-tuning (lr scaled by a lost factor)",
        "dash": "not reported for ViT rows",
    },
    "bam.table6_davis": {
        "method": "label propagation between frames on frozen patch tokens (DINO protocol)",
        "columns": "4 values of one propagation parameter (name lost) x 3 metrics (one label lost)",
    },
    "bam.table7_coco_ade20k": {
        "coco_head": "Cascade Mask R-CNN",
        "ade20k_head": "UperNet",
        "caveat": "surviving numbers of MAE/DINO/BAM rows have unknown columns; kept in "
        "printed_numbers_in_order, values left null",
    },
    "bam.table8_architectures": {"head": "linear probe", "pretrain_epochs": 300},
    "adclr.table1_in1k_linear_finetune": {
        "linear_augmentation": "random-resized-crop + flip; centre crop at test",
        "finetune_recipe": "iBOT fine-tuning, 100 epochs",
        "markers": "dagger: DALL-E tokenizer; double dagger: arXiv preprint; *: with the iBOT MIM loss",
    },
    "adclr.table2_knn_linear": {
        "epoch_column": "effective epochs (views seen, iBOT convention), in attrs",
        "knn_k": "not stated",
        "markers": "*: with the iBOT MIM loss",
    },
    "adclr.table3_coco_maskrcnn": {
        "head": "Mask R-CNN + FPN, 1x schedule",
        "multi_scale_train": "short side 480-800",
        "batch": 32,
        "lr": 3.0e-4,
        "layer_decay": 0.75,
        "split": "COCO val2017",
    },
    "adclr.table4_ade20k": {"heads": "Semantic FPN 40k iterations or UperNet 160k (column Arch)"},
    "adclr.table5_transfer": {
        "recipe": "fine-tuning on the target dataset (DINO/iBOT recipe)",
        "caveat": "caption says linear, text says fine-tuning",
    },
    "adclr.table6_query_crop_ratio": {"query_crop_scale": "(0.05, s)", "global_crop_scale": "(0.4, 1)"},
    "adclr.table7_local_views": {
        "gpus": 16,
        "global_crops": "2 x 224",
        "local_crops": "0/2/6/10 x 96",
        "columns": "top-1 and pre-training hours at 100 and 300 epochs, memory in GB",
    },
    "sere.table1_transfer": {
        "seg_head": "UperNet, 512 crops, batch 16 (VOC 20k, ADE20K 160k iterations)",
        "det_head": "Cascade Mask R-CNN, 1x, batch 16",
        "split": "val",
    },
    "sere.table2_in1k_finetune_imagenets": {
        "finetune": "all layers, AdamW, batch 512, lr 1e-3 cosine to 1e-6",
        "imagenet_s": "1x1 conv head, 100 epochs, AdamW, batch 256, lr 5e-4, layer decay 0.5, wd 0.05",
    },
    "sere.table3_mocov3": {},
    "sere.table4_relation_difference": {
        "pixel": "over the overlap region",
        "channel": "over all regions",
        "direction": "lower is better",
    },
    "sere.table5_asymmetric_loss": {"caveat": "third column printed as 'F' but holds ImageNet-S300 mIoU"},
    "sere.table6_representations": {"first_row": "random initialisation, fine-tuned downstream"},
    "sere.table7_heads": {"default_M": 6},
    "sere.table8_temperatures": {"defaults": "t_p 0.5, t_c 0.1 (row printed twice)"},
    "bam.readme_checkpoints": {"head": "linear probe (head shipped with the checkpoint)"},
    "sere.readme_finetune": {"recipe": "MAE fine-tuning, 100 epochs", "models": "iBOT+SERE (released code)"},
    "sere.readme_imagenets": {
        "dataset": "ImageNet-S919",
        "variants": "SSL: SERE backbone; SSL+Sup: IN-1k fine-tuned first",
    },
    "ibot.readme": {"coco_head": "Cascade Mask R-CNN", "ade20k_head": "UperNet"},
    "dino.readme": {"knn_k": 20},
    "selfpatch.readme": {"coco_head": "Mask R-CNN 1x", "ade20k_heads": "Semantic-FPN 40k, UperNet 160k"},
}

PROTOCOL_KEYS = ("evaluation", "metric", "arch", "pretrain_epochs", "pretrain_batch", "pretrain_dataset")
ROW_KEYS = (
    "method",
    "marker",
    "arch",
    "pretrain_epochs",
    "batch",
    "group",
    "settings",
    "attrs",
    "values",
    "source",
    "position_uncertain",
    "printed_numbers_in_order",
)


class _Flow(dict):
    """A mapping dumped on one line (table rows and columns)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, True))


def convert_table(table: dict) -> dict:
    protocol = {k: table["protocol"][k] for k in PROTOCOL_KEYS if k in table.get("protocol", {})}
    protocol.update(SETTINGS[table["id"]])
    rows = [_Flow({k: row[k] for k in ROW_KEYS if k in row}) for row in table["rows"]]
    return {
        "id": table["id"],
        "paper": table["paper"],
        "paper_table": table["paper_table"],
        "kind": table["kind"],
        "title": table["title"],
        "source": table["source"],
        "protocol": protocol,
        "columns": [_Flow(c) for c in table["columns"]],
        "rows": rows,
    }


def main(source: Path = DEFAULT_SOURCE, out_dir: Path = REPO / "results" / "reference") -> None:
    data = yaml.safe_load(source.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    for paper, meta in PAPERS.items():
        if paper == "readme":
            tables = [t for t in data["tables"] if t["kind"] == "readme"]
        else:
            tables = [t for t in data["tables"] if t["paper"] == paper and t["kind"] != "readme"]
        doc = {"schema": "sslbench-reference/v1", "paper": paper, **{k: v for k, v in meta.items() if v}}
        doc["tables"] = [convert_table(t) for t in tables]
        header = (
            f"# Published numbers: {meta['title']}.\n# Generated by scripts/make_reference.py; schema and "
            "conventions in evaluate/reporting/reference.py (null = lost in extraction, '-' = printed dash).\n"
        )
        text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=400, allow_unicode=True)
        (out_dir / f"{paper}.yaml").write_text(header + text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
