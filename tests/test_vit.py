from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from pretrain.vit import ARCHS, SSLViT, ViTArch, build_vit, dino_resample, export_backbone

FEMTO = ARCHS["vit_femto"]


def _reference_dino_interp(pos_embed, w, h, patch):
    """DINO's interpolate_pos_encoding, written out for the test (w: image rows, h: image columns)."""
    n = pos_embed.shape[1] - 1
    class_pos, patch_pos = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch + 0.1, h // patch + 0.1
    patch_pos = F.interpolate(
        patch_pos.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    patch_pos = patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos.unsqueeze(0), patch_pos), dim=1)


def test_state_dict_keys_are_timm_keys():
    ours = build_vit(FEMTO)
    theirs = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    assert set(ours.state_dict()) == set(theirs.state_dict())


def test_native_resolution_matches_plain_timm_forward():
    torch.manual_seed(0)
    ours = build_vit(FEMTO).eval()
    theirs = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x))
    out = ours.forward_tokens(x, taps=[-1])
    torch.testing.assert_close(out.taps[1], theirs.forward_features(x), rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([out.cls[:, None], out.patch], 1), theirs.forward_features(x), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(40, 56), (48, 32), (160, 192)])
def test_dino_resampling_equals_the_reference_formula(size):
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 16, 8)
    ours = dino_resample(pos, (size[0] // 8, size[1] // 8))
    ref = _reference_dino_interp(pos, size[0], size[1], 8)
    torch.testing.assert_close(ours, ref)


def test_dino_and_timm_resampling_differ_off_grid_and_agree_on_grid():
    torch.manual_seed(0)
    dino, timm_ = build_vit(FEMTO, "dino").eval(), build_vit(FEMTO, "timm").eval()
    timm_.load_state_dict(dino.state_dict())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(dino.forward_features(x), timm_.forward_features(x))
    x = torch.randn(1, 3, 48, 64)
    assert not torch.allclose(dino.forward_features(x), timm_.forward_features(x), atol=1e-4)


def test_taps_and_attention_shapes_and_marginals():
    model = build_vit(FEMTO).eval()
    x = torch.randn(3, 3, 40, 48)
    out = model.forward_tokens(x, taps=[-2, -1], attn=True)
    assert sorted(out.taps) == [0, 1] and out.taps[1].shape == (3, 1 + 5 * 6, 32) and out.grid == (5, 6)
    torch.testing.assert_close(out.taps[1], model.forward_features(x))
    attn = out.attn
    assert attn.shape == (3, 2, 31, 31)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 2, 31))


def test_export_payload_is_weights_only_loadable(tmp_path):
    model = build_vit(FEMTO)
    path = tmp_path / "backbone.pth"
    torch.save(export_backbone(model, {"method": "bam", "epoch": 3}), path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "sslbench-backbone" and ViTArch.from_dict(payload["arch"]) == FEMTO
    clone = SSLViT(ViTArch.from_dict(payload["arch"]), pos_interp=payload["pos_interp"])
    clone.load_state_dict(payload["state_dict"])
    with pytest.raises(ValueError, match="unknown ViT architecture key 'heads'"):
        ViTArch.from_dict({"heads": 3})


def test_returned_attention_reproduces_the_last_block_attention_output():
    """attn @ V through the projection equals timm's own Attention forward on the last block's input."""
    torch.manual_seed(0)
    model = build_vit(FEMTO).eval()
    x = torch.randn(2, 3, 40, 32)
    with torch.no_grad():
        out = model.forward_tokens(x, taps=[0], tap_norm=False, attn=True)
        block = model.blocks[-1]
        h = block.norm1(out.taps[0])
        b, n, d = h.shape
        v = block.attn.qkv(h).reshape(b, n, 3, block.attn.num_heads, -1).permute(2, 0, 3, 1, 4)[2]
        mixed = (out.attn @ v).transpose(1, 2).reshape(b, n, d)
        torch.testing.assert_close(block.attn.proj(mixed), block.attn(h), rtol=1e-5, atol=1e-6)


def test_mask_token_replaces_masked_patches_before_positions_and_gets_gradients():
    torch.manual_seed(0)
    model = SSLViT(FEMTO, mask_token=True)
    with torch.no_grad():
        model.mask_token.normal_()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = True
    emb = model.embed(x, mask)
    ref = model.patch_embed(x)  # (B, h, w, D)
    ref[0, 1, 2] = ref[1, 0, 0] = model.mask_token[0]
    torch.testing.assert_close(emb, model._pos_embed(ref))
    # an all-False mask is the unmasked path, to the bit
    plain = model.forward_tokens(x)
    none = model.forward_tokens(x, mask=torch.zeros(2, 4, 4, dtype=torch.bool))
    assert torch.equal(plain.cls, none.cls) and torch.equal(plain.patch, none.patch)
    out = model.forward_tokens(x, mask=mask)
    out.patch.sum().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    # the export never carries the mask token (timm and every evaluation load it strictly)
    assert "mask_token" not in export_backbone(model)["state_dict"]
    with pytest.raises(ValueError, match="no mask token"):
        build_vit(FEMTO).forward_tokens(x, mask=mask)


def test_prenorm_patch_is_the_last_block_before_the_final_norm():
    torch.manual_seed(0)
    model = build_vit(FEMTO).eval()
    x = torch.randn(2, 3, 32, 48)
    out = model.forward_tokens(x, taps=[-1], tap_norm=False)
    torch.testing.assert_close(out.prenorm_patch, out.taps[1][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(model.norm(out.prenorm_patch), out.patch, rtol=0, atol=0)
    assert out.patch_map().shape == (2, 32, 4, 6)
    torch.testing.assert_close(out.patch_map()[:, :, 1, 2], out.patch[:, 1 * 6 + 2])


@pytest.mark.parametrize("rule", ["oneway", "all"])
def test_extra_tokens_leave_image_tokens_unchanged_and_follow_the_attention_rule(rule):
    torch.manual_seed(0)
    model = build_vit(FEMTO).eval()
    x = torch.randn(2, 3, 32, 32)
    extra = torch.randn(2, 3, 32)
    plain = model.forward_tokens(x)
    with_extra = model.forward_tokens(x, extra=extra, extra_attn=rule)
    torch.testing.assert_close(with_extra.cls, plain.cls, rtol=0, atol=2e-6)
    torch.testing.assert_close(with_extra.patch, plain.patch, rtol=0, atol=2e-6)
    assert with_extra.extra.shape == (2, 3, 32)
    # query 0 alone equals query 0 among others under "oneway"; not under "all"
    alone = model.forward_tokens(x, extra=extra[:, :1], extra_attn=rule).extra[:, 0]
    same = torch.allclose(alone, with_extra.extra[:, 0], atol=2e-6)
    assert same == (rule == "oneway")
    # the image changes the extra tokens (they attend to it)
    other = model.forward_tokens(torch.randn(2, 3, 32, 32), extra=extra, extra_attn=rule)
    assert not torch.allclose(other.extra, with_extra.extra, atol=1e-3)


def test_forward_crops_groups_sizes_and_equals_one_call_per_crop():
    torch.manual_seed(0)
    model = build_vit(FEMTO).eval()
    crops = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    outs = model.forward_crops(crops)
    assert [o.grid for o in outs] == [(4, 4), (4, 4), (2, 2)]
    for crop, out in zip(crops, outs):
        single = model.forward_tokens(crop)
        torch.testing.assert_close(out.cls, single.cls, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.patch, single.patch, rtol=1e-5, atol=1e-6)
