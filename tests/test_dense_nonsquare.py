"""Issue 17 item 6: the full-size segmentation configs' test pipelines on non-square images (ADE20K 512x683 after
resizing, VOC, ImageNet-S at (1024, 256)): no crash at the end of training, and predictions at the original size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_dense import CONFIGS, build_model

SEG = sorted(
    p for p in CONFIGS.glob("*/*.py") if "shapesworld" not in p.name and p.parent.name in ("ade20k", "voc", "imagenets")
)


def _write_pair(root: Path, width: int, height: int) -> tuple[str, str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    img, seg = root / "img.jpg", root / "seg.png"
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(img)
    Image.fromarray(rng.integers(0, 5, (height, width), dtype=np.uint8)).convert("RGB").save(seg)
    return str(img), str(seg)


@pytest.mark.slow
@pytest.mark.parametrize("config", SEG, ids=[p.stem for p in SEG])
def test_full_size_test_pipeline_on_a_non_square_image(config, tmp_path):
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate

    cfg, model = build_model(config)
    model.eval()
    width, height = 500, 375  # a VOC/ADE-like 4:3 photo: 683x512 after (2048, 512), 341x256 after (1024, 256)
    img, seg = _write_pair(tmp_path, width, height)
    pipeline = Compose(cfg.test_pipeline)
    loads = [t for t in cfg.test_pipeline if "Annotations" in t["type"]]
    reduce_zero = bool(loads and loads[0].get("reduce_zero_label", False))
    sample = pipeline({"img_path": img, "seg_map_path": seg, "reduce_zero_label": reduce_zero, "seg_fields": []})
    h, w = sample["inputs"].shape[-2:]
    assert (h % 16 or w % 16) and h != w  # the case that used to crash: not a multiple of the patch size
    with torch.no_grad():
        (out,) = model.test_step(pseudo_collate([sample]))
    assert tuple(out.pred_sem_seg.data.shape[-2:]) == (height, width)  # scored at the original size
    assert out.seg_logits.data.isfinite().all()


FULL = sorted(p for p in CONFIGS.glob("*/*.py") if "shapesworld" not in p.name and p.parent.name != "_base_")


@pytest.mark.parametrize("config", FULL, ids=[p.stem for p in FULL])
def test_fewer_gpus_than_the_protocol_warn_and_record_the_effective_batch(config, caplog):
    from mmengine.config import Config

    from evaluate.protocols.dense.runner import effective_batch

    cfg = Config.fromfile(str(config))
    per_gpu = cfg.train_dataloader.batch_size
    reference = cfg.auto_scale_lr.base_batch_size
    assert reference % per_gpu == 0  # every full-size config states its protocol's total batch
    with caplog.at_level("WARNING", logger="sslbench"):
        one = effective_batch(cfg, 1)
    assert one == {"effective_batch": per_gpu, "reference_batch": reference, "lr_scaled": False}
    assert "differs from the protocol's" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sslbench"):
        assert effective_batch(cfg, reference // per_gpu)["effective_batch"] == reference
    assert caplog.text == ""
