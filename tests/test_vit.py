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
    torch.testing.assert_close(ours.tokens(x, 1)[0], theirs.forward_features(x))


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
    taps = model.tokens(x, n_last=2)
    assert len(taps) == 2 and taps[-1].shape == (3, 1 + 5 * 6, 32)
    torch.testing.assert_close(taps[-1], model.forward_features(x))
    attn = model.last_selfattention(x)
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
