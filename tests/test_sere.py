"""SERE: overlap geometry, relations and losses against hand-computed values and a NumPy re-implementation, the
released code's outputs (tests/data/official/), the heads' batch statistics, and the method on the engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_engine import SERE_OVER, random_views, toy_cfg

from evaluate.cli import main as cli_main
from evaluate.protocols.sere_relation import relation_differences
from pretrain.engine import Trainer
from pretrain.heads import SEREHead
from pretrain.losses.sere import (
    channel_relation,
    pixel_relation,
    relation_cross_entropy,
    resample_relation,
    sere_channel_loss,
    sere_pixel_loss,
)
from pretrain.overlap import overlap_grids
from pretrain.syncbn import WorldBatchNorm2d

OFFICIAL = Path(__file__).parent / "data" / "official" / "sere_losses.pt"


def grids(a, b, fa=False, fb=False, size=3):
    return overlap_grids(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32),
                         torch.tensor([fa]), torch.tensor([fb]), size)  # fmt: skip


def xy(values_x, values_y):
    """A (1, S, S, 2) grid from its column x values and row y values."""
    gx, gy = torch.tensor(values_x), torch.tensor(values_y)
    s = len(values_x)
    return torch.stack([gx[None, :].expand(s, s), gy[:, None].expand(s, s)], dim=-1)[None]


# ---------------------------------------------------------------------------------------------- geometry

# crop a: x in [0, 40), y in [10, 30) (40 x 20); crop b: x in [20, 60), y in [0, 20); overlap x [20, 40), y [10, 20)
A, B = (0.0, 10.0, 40.0, 30.0), (20.0, 0.0, 60.0, 20.0)


def test_overlap_grid_by_hand():
    ga, gb = grids(A, B)
    # in a: u = 0.5, 0.75, 1.0 -> x = 0, 0.5, 1; v = 0, 0.25, 0.5 -> y = -1, -0.5, 0
    torch.testing.assert_close(ga, xy([0.0, 0.5, 1.0], [-1.0, -0.5, 0.0]))
    # in b: u = 0, 0.25, 0.5 -> x = -1, -0.5, 0; v = 0.5, 0.75, 1 -> y = 0, 0.5, 1
    torch.testing.assert_close(gb, xy([-1.0, -0.5, 0.0], [0.0, 0.5, 1.0]))


def test_overlap_grid_flip_of_one_and_of_both():
    ga, gb = grids(A, B, fa=True)
    torch.testing.assert_close(ga, xy([0.0, -0.5, -1.0], [-1.0, -0.5, 0.0]))  # u -> 1 - u: x -> -x
    torch.testing.assert_close(gb, xy([-1.0, -0.5, 0.0], [0.0, 0.5, 1.0]))  # the other crop is untouched
    ga, gb = grids(A, B, fa=True, fb=True)
    torch.testing.assert_close(ga, xy([0.0, -0.5, -1.0], [-1.0, -0.5, 0.0]))
    torch.testing.assert_close(gb, xy([1.0, 0.5, 0.0], [0.0, 0.5, 1.0]))


def test_no_overlap_fills_minus_two_and_touching_boxes_do_not_overlap():
    for b in [(50.0, 40.0, 60.0, 50.0), (40.0, 10.0, 50.0, 30.0)]:  # disjoint; sharing only the edge x = 40
        ga, gb = grids(A, b, size=4)
        assert ga.shape == gb.shape == (1, 4, 4, 2)
        assert torch.equal(ga, torch.full_like(ga, -2.0)) and torch.equal(gb, torch.full_like(gb, -2.0))


def test_grid_is_per_sample_and_edge_inclusive():
    box_a = torch.tensor([A, (0.0, 0.0, 100.0, 100.0)])
    box_b = torch.tensor([B, (0.0, 0.0, 100.0, 100.0)])
    ga, gb = overlap_grids(box_a, box_b, torch.tensor([False, False]), torch.tensor([False, True]), 13)
    assert ga.shape == (2, 13, 13, 2)
    line = torch.linspace(-1, 1, 13)
    torch.testing.assert_close(ga[1, 0, :, 0], line)  # identical full crops: the whole [-1, 1] edge to edge
    torch.testing.assert_close(gb[1, 0, :, 0], line.flip(0))
    torch.testing.assert_close(ga[1, :, 0, 1], line)


def test_border_samples_are_half_attenuated():
    """A constant relation sampled on a full-crop grid: values at +-1 are halved per axis (align_corners=False and
    zero padding), so border query/key pairs get 1/2 .. 1/16 of the value."""
    h = w = 4
    rel = torch.ones(1, 2, h * w, h * w)
    box = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    g, _ = overlap_grids(box, box, torch.tensor([False]), torch.tensor([False]), 5)
    out = resample_relation(rel, (h, w), g)
    a = torch.tensor([0.5, 1.0, 1.0, 1.0, 0.5])
    f = (a[:, None] * a[None, :]).flatten()  # per grid point: 1/2 on an edge, 1/4 in a corner
    torch.testing.assert_close(out[0, 0], f[:, None] * f[None, :])
    assert float(out.min()) == pytest.approx(1 / 16) and float(out.max()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- NumPy reference


def np_grid_sample(img: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bilinear sampling of (C, H, W) at (S, S, 2) normalised (x, y), align_corners=False, zero padding."""
    c, hh, ww = img.shape
    out = np.zeros((c, *grid.shape[:2]))
    for r in range(grid.shape[0]):
        for k in range(grid.shape[1]):
            x = ((grid[r, k, 0] + 1) * ww - 1) / 2
            y = ((grid[r, k, 1] + 1) * hh - 1) / 2
            x0, y0 = math.floor(x), math.floor(y)
            for xi, yi in [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]:
                wgt = (1 - abs(x - xi)) * (1 - abs(y - yi))
                if 0 <= xi < ww and 0 <= yi < hh:
                    out[:, r, k] += wgt * img[:, yi, xi]
    return out


def np_pixel_relation(z: np.ndarray, heads: int) -> np.ndarray:  # (C, h, w) -> (M, n, n)
    c = z.shape[0]
    d = c // heads
    flat = z.reshape(c, -1)
    return np.stack([flat[m * d : (m + 1) * d].T @ flat[m * d : (m + 1) * d] / math.sqrt(d) for m in range(heads)])


def np_resample(rel: np.ndarray, hw, grid: np.ndarray) -> np.ndarray:  # (M, n, n) -> (M, S^2, S^2)
    h, w = hw
    m, n, _ = rel.shape
    s2 = grid.shape[0] * grid.shape[1]
    keys = np_grid_sample(rel.reshape(m * n, h, w), grid).reshape(m, n, s2)  # [m, query, key']
    both = np_grid_sample(keys.transpose(0, 2, 1).reshape(m * s2, h, w), grid).reshape(m, s2, s2)  # [m, key', query']
    return both.transpose(0, 2, 1)


def np_ce(student: np.ndarray, teacher: np.ndarray, temp: float) -> float:
    t = teacher / temp
    p = np.exp(t - t.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    log_q = student - student.max(-1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(-1, keepdims=True))
    return float((-(p * log_q).sum(-1)).mean())


def test_relations_match_numpy():
    torch.manual_seed(0)
    z = torch.relu(torch.randn(2, 8, 3, 4, dtype=torch.float64))
    pix = pixel_relation(z, heads=2)
    ch = channel_relation(z)
    assert pix.shape == (2, 2, 12, 12) and ch.shape == (2, 8, 8)
    for b in range(2):
        zb = z[b].numpy()
        np.testing.assert_allclose(pix[b].numpy(), np_pixel_relation(zb, 2), rtol=1e-5, atol=1e-6)
        flat = zb.reshape(8, -1)
        np.testing.assert_allclose(ch[b].numpy(), flat @ flat.T / 12, rtol=1e-5, atol=1e-6)


def test_pixel_and_channel_losses_match_numpy():
    """Two global crops (4 x 4 maps) and one local crop (2 x 2) of random tokens through fixed random head weights
    (a 1x1 conv = a C x C matrix, then ReLU); boxes with partial overlap and a flip; no-overlap pair included."""
    rng = np.random.default_rng(0)
    b, c, heads = 2, 4, 2
    weight = rng.normal(size=(c, c))
    maps = [rng.normal(size=(b, c, 4, 4)), rng.normal(size=(b, c, 4, 4)), rng.normal(size=(b, c, 2, 2))]
    t_maps = [rng.normal(size=(b, c, 4, 4)) for _ in range(2)]

    def head(x):
        return np.maximum(np.einsum("oc,bchw->bohw", weight, x), 0)

    boxes = torch.tensor(
        [[[0, 0, 64, 64], [16, 8, 80, 72], [40, 40, 72, 72]], [[0, 0, 50, 50], [10, 20, 70, 90], [60, 0, 90, 30]]],
        dtype=torch.float32,
    )  # image 1: the local crop overlaps neither... only global 2; image 0: all overlap
    flips = torch.tensor([[False, True, False], [True, False, True]])
    hws = [(4, 4), (4, 4), (2, 2)]
    s_feat = [head(m) for m in maps]
    t_feat = [head(m) for m in t_maps]
    s_pix = [pixel_relation(torch.tensor(f), heads) for f in s_feat]
    t_pix = [pixel_relation(torch.tensor(f), heads) for f in t_feat]
    got = sere_pixel_loss(s_pix, hws, t_pix, (4, 4), boxes, flips, teacher_temp=0.5, global_grid=3, local_grid=2)
    terms = []
    for q in range(2):
        for v in range(3):
            if v == q:
                continue
            size = 3 if v < 2 else 2
            gq, gv = overlap_grids(boxes[:, q], boxes[:, v], flips[:, q], flips[:, v], size)
            per_image = []
            for i in range(b):
                t_rel = np_resample(np_pixel_relation(t_feat[q][i], heads), (4, 4), gq[i].numpy())
                s_rel = np_resample(np_pixel_relation(s_feat[v][i], heads), hws[v], gv[i].numpy())
                per_image.append(np_ce(s_rel, t_rel, 0.5))
            terms.append(np.mean(per_image))
    assert float(got) == pytest.approx(np.mean(terms), rel=1e-5)
    s_ch = [channel_relation(torch.tensor(f)) for f in s_feat]
    t_ch = [channel_relation(torch.tensor(f)) for f in t_feat]
    got_ch = sere_channel_loss(s_ch, t_ch, teacher_temp=0.1)
    want = []
    for q in range(2):
        for v in range(3):
            if v != q:
                tf = t_feat[q].reshape(b, c, -1)
                sf = s_feat[v].reshape(b, c, -1)
                t_rel = tf @ tf.transpose(0, 2, 1) / tf.shape[-1]
                s_rel = sf @ sf.transpose(0, 2, 1) / sf.shape[-1]
                want.append(np.mean([np_ce(s_rel[i], t_rel[i], 0.1) for i in range(b)]))
    assert float(got_ch) == pytest.approx(np.mean(want), rel=1e-5)


def test_no_overlap_term_is_log_s_squared_without_gradient():
    torch.manual_seed(1)
    student = [torch.randn(3, 2, 16, 16, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(3, 2, 16, 16) for _ in range(2)]
    boxes = torch.tensor([[[0, 0, 10, 10], [20, 20, 30, 30]]], dtype=torch.float32).repeat(3, 1, 1)
    flips = torch.zeros(3, 2, dtype=torch.bool)
    loss = sere_pixel_loss(student, [(4, 4)] * 2, teacher, (4, 4), boxes, flips, global_grid=13)
    assert float(loss.detach()) == pytest.approx(math.log(13**2), rel=1e-6)
    loss.backward()
    assert all(torch.count_nonzero(s.grad) == 0 for s in student)


def test_teacher_is_sharpened_and_detached_student_at_temperature_one():
    s = torch.randn(2, 5, requires_grad=True)
    t = torch.randn(2, 5, requires_grad=True)
    ce = relation_cross_entropy(s, t, 0.5)
    want = -(torch.softmax(t / 0.5, -1) * torch.log_softmax(s, -1)).sum(-1).mean()
    assert float(ce.detach()) == pytest.approx(float(want.detach()))
    ce.backward()
    assert t.grad is None and s.grad is not None


# ---------------------------------------------------------------------------------------------- the released code


@pytest.fixture(scope="module")
def official():
    return torch.load(OFFICIAL, weights_only=True)


def _official_heads(state: dict, suffix: str, dim: int) -> tuple[SEREHead, SEREHead]:
    pixel, channel = SEREHead(dim), SEREHead(dim)
    for head, name in ((pixel, "pixel_sere"), (channel, "channel_sere")):
        prefix = f"{name}{suffix}."
        head.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return pixel, channel


def _maps(tokens: list[torch.Tensor]) -> torch.Tensor:  # G x (B, n, C) -> (G * B, C, s, s)
    x = torch.cat(tokens)
    side = math.isqrt(x.shape[1])
    return x.transpose(1, 2).reshape(x.shape[0], -1, side, side)


def test_grids_equal_the_official_get_grid(official):
    boxes, flips = official["boxes"], official["flips"]
    ga, gb = overlap_grids(boxes[:, 0], boxes[:, 1], flips[:, 0], flips[:, 1], 13)
    torch.testing.assert_close(ga, official["grids"]["global"][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(gb, official["grids"]["global"][1], rtol=0, atol=1e-6)
    for q in range(2):
        for v in range(3):
            g_local, g_global = overlap_grids(boxes[:, 2 + v], boxes[:, q], flips[:, 2 + v], flips[:, q], 6)
            torch.testing.assert_close(g_local, official["grids"]["local"][q * 3 + v], rtol=0, atol=1e-6)
            torch.testing.assert_close(g_global, official["grids"]["global_side"][q * 3 + v], rtol=0, atol=1e-6)
    assert bool((official["grids"]["local"][1][0] == -2).all())  # the no-overlap case is in the data


def test_heads_relations_and_losses_equal_the_official_code(official):
    """The released heads' weights (random BN affine, default conv init) on the tokens they saw, in train mode:
    sampled pixel relations, channel relations and both losses equal main_sere.py's."""
    dim, heads = official["settings"]["dim"], official["settings"]["heads"]
    ref = official["outputs"]
    feats = official["features"]
    s_pix_g, s_ch_g = _official_heads(official["student_heads"], "", dim)
    s_pix_l, s_ch_l = _official_heads(official["student_heads"], "_local", dim)
    t_pix_g, t_ch_g = _official_heads(official["teacher_heads"], "", dim)
    g_maps, l_maps, t_maps = _maps(feats[:2]), _maps(feats[2:]), _maps(official["teacher_features"])
    with torch.no_grad():
        s_pix = [
            *pixel_relation(s_pix_g(g_maps, True), heads).chunk(2),
            *pixel_relation(s_pix_l(l_maps, True), heads).chunk(3),
        ]
        s_ch = [*channel_relation(s_ch_g(g_maps, True)).chunk(2), *channel_relation(s_ch_l(l_maps, True)).chunk(3)]
        t_pix = list(pixel_relation(t_pix_g(t_maps, False), heads).chunk(2))
        t_ch = list(channel_relation(t_ch_g(t_maps, False)).chunk(2))
    torch.testing.assert_close(torch.cat(t_ch), ref["teacher_channel"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(s_ch[:2]), ref["student_channel"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(s_ch[2:]), ref["student_channel_local"], rtol=1e-5, atol=1e-5)
    boxes, flips = official["boxes"], official["flips"]
    g0, g1 = overlap_grids(boxes[:, 0], boxes[:, 1], flips[:, 0], flips[:, 1], 13)
    t_sampled = resample_relation(t_pix[0], (14, 14), g0)[0, 0], resample_relation(t_pix[1], (14, 14), g1)[1, 0]
    s_sampled = resample_relation(s_pix[0], (14, 14), g0)[0, 0], resample_relation(s_pix[1], (14, 14), g1)[1, 0]
    torch.testing.assert_close(torch.stack(t_sampled), ref["teacher_pixel_sampled"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(s_sampled), ref["student_pixel_sampled"], rtol=1e-5, atol=1e-5)
    hws = [(14, 14)] * 2 + [(6, 6)] * 3
    l_pix = sere_pixel_loss(s_pix, hws, t_pix, (14, 14), boxes, flips, teacher_temp=0.5, global_grid=13, local_grid=6)
    l_ch = sere_channel_loss(s_ch, t_ch, teacher_temp=0.1)
    assert float(l_pix) == pytest.approx(float(ref["loss_pixel"]), rel=1e-5)
    assert float(l_ch) == pytest.approx(float(ref["loss_channel"]), rel=1e-5)


# ---------------------------------------------------------------------------------------------- heads and method


def test_world_batchnorm_equals_batchnorm2d_in_one_process():
    torch.manual_seed(0)
    ref, bn = torch.nn.BatchNorm2d(5), WorldBatchNorm2d(5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-1, 1)
    bn.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 4, 2) * 3 + 1
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), bn(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    (ya * torch.arange(5.0)[None, :, None, None]).sum().backward()
    (yb * torch.arange(5.0)[None, :, None, None]).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(bn.state_dict()[key], ref.state_dict()[key])
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x), ref(x))


def _sere_trainer(tmp_path, **over):
    cfg = toy_cfg(tmp_path, **{**SERE_OVER, **over})
    return Trainer(cfg, iters_per_epoch=2), random_views(8, 0, cfg)


def test_teacher_uses_the_projection_with_batch_statistics(tmp_path):
    """After a training step the teacher's BNs are in train mode: its relations ignore the running statistics, and
    they are built on the projection output Z (the student's on the predictor output P)."""
    trainer, batch = _sere_trainer(tmp_path)
    trainer.train_step(batch)
    teacher, student = trainer.method.teacher, trainer.method.student
    bns = [m for m in teacher.modules() if isinstance(m, WorldBatchNorm2d)]
    assert len(bns) == 8 and all(m.training for m in bns)  # 4 heads x (projection, predictor)
    assert teacher.predict is False and student.predict is True
    with torch.no_grad():
        ref = teacher(batch.globals)
        for m in bns:
            m.running_mean.fill_(100.0), m.running_var.fill_(1e-4)
        again = teacher(batch.globals)
        maps = torch.cat([o.patch_map(prenorm=True) for o in teacher.backbone.forward_crops(batch.globals)])
        z = teacher.heads["channel"].projection(maps)
    assert torch.equal(ref["channel"], again["channel"]) and torch.equal(ref["pixel"], again["pixel"])
    torch.testing.assert_close(ref["channel"], channel_relation(z))
    pre = teacher.heads["channel"].projection[0](maps)  # BN with batch statistics: per-channel mean = bias
    torch.testing.assert_close(pre.mean(dim=(0, 2, 3)), teacher.heads["channel"].projection[0].bias, atol=1e-5, rtol=0)


@pytest.mark.parametrize("locals_", [1, 2, 3])
def test_local_crops_always_use_the_local_heads(tmp_path, locals_):
    """The release routes 1 or 2 local crops through the global heads (``end_idx > 2``); here they never do."""
    trainer, batch = _sere_trainer(tmp_path, **{"data.local_crops": locals_})
    trainer.forward_backward(batch)
    heads = trainer.method.student.heads
    for name in ("pixel_local", "channel_local"):
        assert heads[name].predictor[0].weight.grad.abs().sum() > 0, name
    out = trainer.method.student(batch.views, [*batch.masks, *([None] * locals_)])
    assert out["pixel_local"].shape == (8 * locals_, 2, 4, 4) and out["channel_local"].shape == (8 * locals_, 32, 32)
    assert out["pixel"].shape == (16, 2, 16, 16)


def test_no_local_crops_builds_no_local_heads(tmp_path):
    """The release's ablations and its Jittor recipe train without local crops: 2 global-global terms per loss."""
    trainer, batch = _sere_trainer(tmp_path, **{"data.local_crops": 0})
    assert sorted(trainer.method.student.heads) == ["channel", "cls", "pixel"]
    loss, diag = trainer.train_step(batch)
    assert math.isfinite(loss) and diag["loss_pixel"] > 0 and diag["loss_channel"] > 0


def test_objective_weights_and_alpha_beta_zero(tmp_path):
    """loss = base * (4 - a - b) / 2 + a * L_pix + b * L_ch, from the logged terms; a = b = 0 keeps the SERE terms
    logged but out of the gradient of the relation heads."""
    trainer, batch = _sere_trainer(tmp_path)
    loss, diag = trainer.forward_backward(batch)
    want = diag["loss_base"] * 3.3 / 2 + 0.2 * diag["loss_pixel"] + 0.5 * diag["loss_channel"]
    assert float(loss) == pytest.approx(want, rel=1e-6)
    trainer, batch = _sere_trainer(tmp_path, **{"sere.alpha": 0.0, "sere.beta": 0.0})
    loss, diag = trainer.forward_backward(batch)
    assert float(loss) == pytest.approx(2 * diag["loss_base"], rel=1e-6) and diag["loss_pixel"] > 0
    assert all(float(p.grad.abs().sum()) == 0 for n, p in trainer.method.student.named_parameters() if "pixel" in n)


# ---------------------------------------------------------------------------------------------- relation diagnostic


def test_relation_difference_is_zero_for_a_mirrored_view_and_positive_otherwise():
    """A view and its mirror image (same box, flip flags (no, yes)) have the same relations on their overlap: the
    flip-aware grid aligns them exactly; the channel relation ignores positions. Another crop differs."""
    torch.manual_seed(0)
    maps = torch.randn(2, 8, 4, 4)
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 2)[None].repeat(2, 1, 1)
    flips = torch.tensor([[False, True]] * 2)
    pixel, channel, overlap = relation_differences((maps, maps.flip(-1)), boxes, flips, 2, 5, 0.5, 0.1)
    assert bool(overlap.all())
    torch.testing.assert_close(pixel, torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(channel, torch.zeros(2), atol=1e-5, rtol=0)
    other = torch.randn(2, 8, 4, 4)
    pixel, channel, _ = relation_differences((maps, other), boxes, flips, 2, 5, 0.5, 0.1)
    assert bool((pixel > 0.05).all() and (channel > 0.05).all() and (pixel <= 2).all() and (channel <= 2).all())
    far = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])[None].repeat(2, 1, 1)
    assert not bool(relation_differences((maps, other), far, flips, 2, 5, 0.5, 0.1)[2].any())


def test_sere_relation_cli_writes_a_record(tmp_path, shapes_root, femto_file):
    root = shapes_root / "classification"
    out = tmp_path / "rel"
    args = ["eval", "sere-relation", str(femto_file), "--data", str(root), "--out", str(out)]
    assert cli_main([*args, "max_images=12", "batch_size=5", "grid=3"]) == 0
    records = [json.loads(x) for x in (tmp_path / "records" / "records.jsonl").read_text().splitlines()]
    got = {r["metric"]: r for r in records if r["protocol"] == "sere-relation"}
    assert set(got) == {"pixel_rel_diff", "channel_rel_diff"}
    assert all(r["unit"] == "absolute" and 0 < r["value"] < 2 for r in got.values())
    assert got["pixel_rel_diff"]["settings"]["images"] == 12 and got["pixel_rel_diff"]["dataset"] == "shapesworld"
    assert (out / "metrics.json").is_file()
