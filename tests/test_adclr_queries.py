"""ADCLR's query crops and unidirectional cross-attention (paper §3.2, appendix code), on a CPU-sized ViT.

The attention rule is checked as behaviour, not as code: with queries appended the CLS/patch outputs are bit-identical
to the model without queries; a query's output does not move when another query's pixels change (and does under the
PQCL rule); it moves when its own pixels or the image change; gradients reach the shared patch embedding through the
queries. The data pipeline's query crops are checked against a direct crop of the original image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from pretrain.config import DataConfig
from pretrain.crops import MultiCropAugment
from pretrain.data import MultiCropDataset
from pretrain.views import ViewPlan, collate, random_batch
from pretrain.vit import ARCHS, EXTRA_ATTN_RULES, build_vit, extra_attention_mask

FEMTO = ARCHS["vit_femto"]  # patch 8, width 32, 2 blocks, 2 heads
UNIDIRECTIONAL = ("oneway", "raw", "patches", "all")


def _model(drop_path: float = 0.0):
    torch.manual_seed(0)
    return build_vit(FEMTO, drop_path_rate=drop_path)


def _inputs(q: int = 4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, q, 3, 8, 8, generator=g)


def test_mask_rules_row_by_row():
    n_img, q = 3, 2  # CLS + 2 patches, 2 queries
    m = {rule: extra_attention_mask(n_img, q, rule).int().tolist() for rule in EXTRA_ATTN_RULES}
    image_rows = [[1, 1, 1, 0, 0]] * 3
    assert m["oneway"] == image_rows + [[1, 1, 1, 1, 0], [1, 1, 1, 0, 1]]  # {RP, QP_i} -> QP_i
    assert m["raw"] == image_rows + [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]  # Eq. 5: CLS + patches
    assert m["patches"] == image_rows + [[0, 1, 1, 0, 0], [0, 1, 1, 0, 0]]  # appendix code: patches only
    assert m["all"] == image_rows + [[1, 1, 1, 1, 1]] * 2  # PQCL release
    assert m["bidirectional"] == [[1] * 5] * 5
    with pytest.raises(ValueError, match="extra_attn must be one of"):
        extra_attention_mask(3, 2, "both")


@pytest.mark.parametrize("rule", UNIDIRECTIONAL)
@pytest.mark.parametrize("train", [False, True])
def test_image_outputs_are_bit_identical_with_and_without_queries(rule, train):
    """Eval, and train mode with stochastic depth (same seed: the queries draw no extra random numbers)."""
    model = _model(drop_path=0.3 if train else 0.0).train(train)
    x, crops = _inputs()
    torch.manual_seed(5)
    plain = model.forward_tokens(x, taps=[0])
    torch.manual_seed(5)
    out = model.forward_tokens(x, extra=model.embed_queries(crops), extra_attn=rule, taps=[0])
    assert torch.equal(out.cls, plain.cls) and torch.equal(out.patch, plain.patch)
    assert torch.equal(out.prenorm_patch, plain.prenorm_patch) and torch.equal(out.taps[0], plain.taps[0])
    assert out.extra.shape == (2, 4, FEMTO.embed_dim)


def test_bidirectional_attention_lets_queries_change_the_image_tokens():
    model = _model().eval()
    x, crops = _inputs()
    plain = model.forward_tokens(x)
    out = model.forward_tokens(x, extra=model.embed_queries(crops), extra_attn="bidirectional")
    assert not torch.allclose(out.cls, plain.cls, atol=1e-4)
    assert out.extra.shape == (2, 4, FEMTO.embed_dim)


@pytest.mark.parametrize("rule", UNIDIRECTIONAL)
def test_a_query_depends_on_its_own_pixels_and_the_image_and_on_other_queries_only_under_pqcl(rule):
    model = _model().eval()
    x, crops = _inputs()
    with torch.no_grad():
        base = model.forward_tokens(x, extra=model.embed_queries(crops), extra_attn=rule).extra
        other = crops.clone()
        other[:, 1:] = torch.randn_like(other[:, 1:])  # every query but query 0 changes
        moved_others = model.forward_tokens(x, extra=model.embed_queries(other), extra_attn=rule).extra
        own = crops.clone()
        own[:, 0] = torch.randn_like(own[:, 0])
        moved_own = model.forward_tokens(x, extra=model.embed_queries(own), extra_attn=rule).extra
        moved_image = model.forward_tokens(torch.randn_like(x), extra=model.embed_queries(crops), extra_attn=rule).extra
    if rule == "all":
        assert not torch.allclose(moved_others[:, 0], base[:, 0], atol=1e-4)
    else:
        assert torch.equal(moved_others[:, 0], base[:, 0])
    assert not torch.allclose(moved_own[:, 0], base[:, 0], atol=1e-4)
    assert torch.equal(moved_own[:, 1:], base[:, 1:]) == (rule != "all")
    assert not torch.allclose(moved_image, base, atol=1e-4)


def test_a_query_alone_equals_the_same_query_among_others():
    """Batching Q queries together is the same as Q separate one-query passes (no query-query path)."""
    model = _model().eval()
    x, crops = _inputs()
    with torch.no_grad():
        together = model.forward_tokens(x, extra=model.embed_queries(crops)).extra
        alone = model.forward_tokens(x, extra=model.embed_queries(crops[:, 2:3])).extra
    torch.testing.assert_close(alone[:, 0], together[:, 2], rtol=0, atol=2e-6)


@pytest.mark.parametrize("rule", ["oneway", "all"])
def test_gradients_reach_the_patch_embedding_through_the_queries(rule):
    model = _model()
    x, crops = _inputs()
    crops.requires_grad_(True)
    out = model.forward_tokens(x, extra=model.embed_queries(crops), extra_attn=rule)
    out.extra.square().sum().backward()
    assert crops.grad is not None and crops.grad.abs().sum() > 0  # the only way in is the patch embedding
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.pos_embed.grad.abs().sum() > 0  # through the image tokens the queries read
    # the image outputs take no gradient from a loss on the queries' pixels path: CLS loss leaves crops untouched
    crops.grad = None
    out = model.forward_tokens(x, extra=model.embed_queries(crops), extra_attn=rule)
    out.cls.sum().backward()
    assert crops.grad is None or crops.grad.abs().sum() == 0


def test_queries_get_no_positional_embedding_and_use_the_shared_projection():
    model = _model().eval()
    _, crops = _inputs()
    with torch.no_grad():
        emb = model.embed_queries(crops)
        direct = F.conv2d(crops.flatten(0, 1), model.patch_embed.proj.weight, model.patch_embed.proj.bias)
    torch.testing.assert_close(emb, direct.reshape(2, 4, -1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="query crops must be"):
        model.embed_queries(torch.randn(2, 4, 3, 16, 16))


def test_last_block_query_attention_is_returned_and_follows_the_rule():
    model = _model().eval()
    x, crops = _inputs(3)
    with torch.no_grad():
        out = model.forward_tokens(x, extra=model.embed_queries(crops), attn=True)
    n_img = 1 + 16
    assert out.extra_attn.shape == (2, FEMTO.num_heads, 3, n_img + 3)
    torch.testing.assert_close(out.extra_attn.sum(-1), torch.ones(2, FEMTO.num_heads, 3))
    off_diagonal = out.extra_attn[..., n_img:] * (1 - torch.eye(3))
    assert off_diagonal.abs().max() == 0 and (out.extra_attn[..., n_img:].diagonal(dim1=-2, dim2=-1) > 0).all()


# ---------------------------------------------------------------------------------------------- data


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def test_dataset_query_crops_are_one_patch_crops_of_the_original_image(tmp_path):
    path = tmp_path / "a" / "img.png"
    path.parent.mkdir()
    _image().save(path)
    data = DataConfig(global_size=32, local_crops=1, local_size=16)
    plan = ViewPlan(2, 1, patch_size=8, query_crops=5, query_scale=(0.05, 0.15))
    ds = MultiCropDataset([(str(path), 0)], MultiCropAugment(data), seed=3, plan=plan)
    item = ds[(0, 2)]
    assert item["queries"].shape == (5, 3, 8, 8) and item["query_boxes"].shape == (5, 4)
    boxes = item["query_boxes"]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (48 * 64)
    assert ((area > 0.03) & (area < 0.17)).all()  # (0.05, 0.15) up to integer rounding of the sides
    img = _image()
    for crop, (left, top, right, bottom) in zip(item["queries"], boxes.int().tolist()):
        ref = TF.resized_crop(img, top, left, bottom - top, right - left, [8, 8], InterpolationMode.BICUBIC)
        ref = TF.normalize(TF.to_tensor(ref), list(data.mean), list(data.std))
        torch.testing.assert_close(crop, ref)
    again = ds[(0, 2)]
    assert torch.equal(again["queries"], item["queries"]) and not torch.equal(ds[(0, 3)]["queries"], item["queries"])
    # a plan without queries gives the very same views (queries are drawn last)
    plain = MultiCropDataset([(str(path), 0)], MultiCropAugment(data), seed=3, plan=ViewPlan(2, 1, patch_size=8))[
        (0, 2)
    ]
    assert plain["queries"] is None and all(torch.equal(a, b) for a, b in zip(plain["views"], item["views"]))
    batch = collate([item, again], num_global=2)
    assert batch.queries.shape == (2, 5, 3, 8, 8) and batch.query_boxes.shape == (2, 5, 4)
    assert batch.rows(slice(0, 1)).queries.shape == (1, 5, 3, 8, 8)


def test_random_batch_carries_query_crops_when_planned():
    plan = ViewPlan(2, 2, patch_size=8, query_crops=3)
    batch = random_batch(plan, 4, 32, 16, generator=torch.Generator().manual_seed(0))
    assert batch.queries.shape == (4, 3, 3, 8, 8) and batch.query_boxes.shape == (4, 3, 4)
    assert (batch.query_boxes >= 0).all() and (batch.query_boxes <= 32).all()
    plain = random_batch(ViewPlan(2, 2, patch_size=8), 4, 32, 16, generator=torch.Generator().manual_seed(0))
    assert plain.queries is None and torch.equal(plain.globals[0], batch.globals[0])


def test_bidirectional_attention_maps_put_image_mass_on_the_queries():
    model = _model().eval()
    x, crops = _inputs(3)
    with torch.no_grad():
        out = model.forward_tokens(x, extra=model.embed_queries(crops), extra_attn="bidirectional", attn=True)
        plain = model.forward_tokens(x, attn=True)
    assert out.attn.shape == plain.attn.shape and (out.attn.sum(-1) < 1 - 1e-4).all()  # the rest is on the queries
    torch.testing.assert_close(plain.attn.sum(-1), torch.ones_like(plain.attn.sum(-1)))
    torch.testing.assert_close(out.extra_attn.sum(-1), torch.ones(2, FEMTO.num_heads, 3))


def test_all_rule_block_equals_the_released_pqcl_block():
    """``query_block`` under ``extra_attn="all"`` against ``models/pos_transformer.py::Block`` of the PQCL release
    (tests/data/official/pqcl_block.pt, written by scripts/reference/official_pqcl_block.py): same weights, same image
    tokens and queries, same outputs; the image stream equals the block without queries, and the paper's ``oneway``
    rule gives other query outputs."""
    from functools import partial
    from pathlib import Path

    from timm.models.vision_transformer import Block

    from pretrain.vit import query_block

    ref = torch.load(Path(__file__).parent / "data" / "official" / "pqcl_block.pt", weights_only=True)
    block = Block(16, 2, mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)).eval()
    block.load_state_dict(ref["state_dict"])
    x, queries = ref["x"], ref["queries"]
    n, q = x.shape[1], queries.shape[1]
    with torch.no_grad():
        out_x, out_q = query_block(block, x, queries, extra_attention_mask(n, q, "all")[n:])
        _, oneway_q = query_block(block, x, queries, extra_attention_mask(n, q, "oneway")[n:])
        torch.testing.assert_close(block(x), ref["image_out_alone"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_x, ref["image_out"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_q, ref["query_out"], rtol=1e-5, atol=1e-6)
    assert float((oneway_q - ref["query_out"]).abs().max()) > 1e-2
