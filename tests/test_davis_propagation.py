"""DAVIS label propagation: the neighbourhood mask, joint top-k, the batched core against a plain per-frame loop
(DINO's algorithm written out in the test), and end-to-end runs on ShapesWorld video."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from evaluate.protocols.davis import propagation as P
from evaluate.protocols.davis.data import read_label, resized_shape
from evaluate.protocols.davis.run import DavisConfig, run


def test_neighborhood_mask_matches_window_loops():
    h, w, size = 3, 4, 1
    mask = P.neighborhood_mask(h, w, size)
    assert mask.shape == (12, 12)
    ref = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(max(0, i - size), min(h, i + size + 1)):
                for q in range(max(0, j - size), min(w, j + size + 1)):
                    ref[i, j, p, q] = 1
    torch.testing.assert_close(mask, ref.reshape(12, 12))
    assert mask[0].sum() == 4 and mask[5].sum() == 9  # corner (0,0), interior (1,1)
    assert torch.equal(mask, mask.T)
    assert P.neighborhood_mask(h, w, 0) is None
    assert P.neighborhood_mask(h, w, 5).sum() == 144  # window wider than the grid


def test_context_slots():
    assert P.context_slots(1, 7) == [0]
    assert P.context_slots(3, 7) == [0, 1, 2]
    assert P.context_slots(10, 7) == [0, 3, 4, 5, 6, 7, 8, 9]
    assert P.context_slots(10, 0) == [0]


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_weights_are_normalised_and_topk_is_joint_over_context_frames():
    b, c, n, d, k = 2, 3, 12, 8, 5
    target, sources = _unit(b, n, d, seed=1), _unit(b, c, n, d, seed=2)
    weights = P.propagation_weights(target, sources, topk=k)
    assert weights.shape == (b, n, c * n)
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, n))
    assert ((weights > 0).sum(-1) == k).all()  # exactly k kept over all context frames together
    aff = torch.exp(torch.einsum("bid,bcjd->bicj", target, sources) / 0.1).reshape(b, n, c * n)
    top = aff.topk(k, dim=-1)
    expected = torch.zeros_like(aff).scatter(-1, top.indices, top.values)
    torch.testing.assert_close(weights, expected / expected.sum(-1, keepdim=True))
    # the kept entries of one target come from several frames (joint, not per-frame top-k)
    frames_used = {int(i) // n for i in top.indices[0].flatten()}
    assert len(frames_used) > 1


def test_weights_respect_mask_and_padding():
    b, c, n, d = 1, 3, 12, 4
    target, sources = _unit(b, n, d, seed=3), _unit(b, c, n, d, seed=4)
    mask = P.neighborhood_mask(3, 4, 1)
    valid = torch.tensor([[True, True, False]])
    weights = P.propagation_weights(target, sources, valid, mask, topk=50).reshape(b, n, c, n)
    assert (weights[:, :, 2] == 0).all()  # padding slot
    assert (weights[0, :, :2] * (1 - mask)[:, None, :] == 0).all()  # outside the window
    # topk larger than the allowed set keeps every allowed entry
    assert ((weights[0] > 0).sum((-1, -2)) == 2 * mask.sum(-1)).all()
    torch.testing.assert_close(weights.sum((-1, -2)), torch.ones(b, n))


def reference_propagation(features, first, grid, n_last_frames, topk, size):
    """DINO's algorithm as a plain loop: a queue of (feature, soft label), per-context affinities, stacked top-k."""
    h, w = grid
    n = h * w
    mask = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            if abs(i // w - j // w) <= size and abs(i % w - j % w) <= size:
                mask[i, j] = 1
    queue, out = [], [first]
    for t in range(1, features.shape[0]):
        ctx_feats = [features[0]] + [q[0] for q in queue]
        ctx_labels = [first] + [q[1] for q in queue]
        tgt = F.normalize(features[t], dim=1)
        affs = []
        for feat in ctx_feats:  # sources x targets, one context frame at a time
            aff = torch.exp(F.normalize(feat, dim=1) @ tgt.T / 0.1)
            affs.append(aff * mask if size > 0 else aff)
        aff = torch.cat(affs)  # (C*N, N)
        kth = aff.topk(topk, dim=0).values.min(dim=0).values
        aff[aff < kth] = 0
        aff = aff / aff.sum(0, keepdim=True)
        label = torch.cat(ctx_labels).T @ aff  # (K, N)
        out.append(label.T)
        if n_last_frames > 0:
            if len(queue) == n_last_frames:
                queue.pop(0)
            queue.append((features[t], label.T))
    return torch.stack(out)


@pytest.mark.parametrize(
    ("n_last", "topk", "size", "budget"),
    [(7, 5, 12, 1 << 30), (2, 5, 1, 1 << 30), (3, 1, 0, 1), (0, 3, 2, 1 << 30), (1, 20, 2, 1)],
)
def test_batched_propagation_equals_a_per_frame_loop(n_last, topk, size, budget, device):
    grid, t, d, k = (4, 5), 9, 16, 3
    features = torch.randn(t, 20, d, generator=torch.Generator().manual_seed(5))
    first = F.one_hot(torch.randint(0, k, (20,), generator=torch.Generator().manual_seed(6)), k).float()
    ours = P.propagate(
        features.to(device),
        first.to(device),
        grid,
        n_last_frames=n_last,
        topk=topk,
        size_mask_neighborhood=size,
        budget_bytes=budget,
    ).cpu()
    ref = reference_propagation(features, first, grid, n_last, topk, size)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.sum(-1), torch.ones(t, 20))  # soft labels stay distributions


@pytest.mark.parametrize("topk", [5, 4])
def test_tied_affinities_keep_every_tied_entry_as_dino(topk):
    # frame 1 repeats frame 0, so from frame 2 on every similarity to them comes in equal pairs: with an odd top-k
    # the k-th and (k+1)-th values tie at the boundary (DINO keeps both); with an even one they do not
    grid, t, d, k = (4, 5), 6, 16, 3
    features = torch.randn(t, 20, d, generator=torch.Generator().manual_seed(7))
    features[1] = features[0]
    first = F.one_hot(torch.randint(0, k, (20,), generator=torch.Generator().manual_seed(8)), k).float()
    logits = P.affinity_logits(F.normalize(features[2:3], dim=-1), F.normalize(features[None, :2], dim=-1))
    ties = P.topk_weights(logits, topk)[2]
    assert bool(ties.all()) == (topk % 2 == 1)
    ours = P.propagate(features, first, grid, n_last_frames=3, topk=topk, size_mask_neighborhood=0)
    ref = reference_propagation(features, first, grid, 3, topk, 0)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_sparse_weights_equal_the_dense_matrix():
    b, c, n, d, k = 2, 3, 12, 8, 5
    target, sources = _unit(b, n, d, seed=9), _unit(b, c, n, d, seed=10)
    mask = P.neighborhood_mask(3, 4, 1)
    dense = P.propagation_weights(target, sources, mask=mask, topk=k)
    weights, index, ties = P.topk_weights(P.affinity_logits(target, sources, mask), k)
    assert not ties.any()
    torch.testing.assert_close(torch.zeros_like(dense).scatter_(-1, index, weights), dense)


def test_upsample_argmax_normalises_each_channel():
    # grid 1x3, patch 1: raw argmax would be [0, 0, 1]; per-channel min-max turns the middle to channel 1
    soft = torch.tensor([[[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]]])
    assert P.upsample_argmax(soft, (1, 3), 1).tolist() == [[[0, 1, 1]]]
    # an all-zero channel never wins; upsampling by 2 keeps the layout
    soft = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    idx = P.upsample_argmax(soft, (1, 2), 2)
    assert idx.shape == (1, 2, 4) and idx[0, :, 0].tolist() == [0, 0] and idx[0, :, -1].tolist() == [2, 2]


def oracle_features(patch: int, short_side: int, channels: int = 8):
    """Features = the GT one-hot labels of each frame, nearest-downsampled to the patch grid."""

    def fn(seq):
        labels = [read_label(p) for p in seq.annotations]
        height, width = labels[0].shape
        th, tw = resized_shape(height, width, short_side)
        grid = (th // patch, tw // patch)
        small = [np.array(Image.fromarray(lab).resize((grid[1], grid[0]), Image.NEAREST)) for lab in labels]
        feats = torch.stack([F.one_hot(torch.from_numpy(s.astype(np.int64)).reshape(-1), channels) for s in small])
        return {"features": feats.float(), "grid": grid, "patch": patch, "size": (th, tw), "orig_size": (height, width)}

    return fn


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    """ShapesWorld video small enough for a patch-1 oracle on CPU (24x64 frames, 8 frames, 2 sequences)."""
    from evaluate.shapesworld.generate import PRESETS, generate

    spec = dataclasses.replace(PRESETS["tiny"], davis_val=2, davis_frames=8, davis_height=24, davis_width=64)
    root = tmp_path_factory.mktemp("video") / "sw"
    generate(root, spec, seed=1, parts=("davis",), workers=1)
    return root / "davis"


@pytest.mark.slow
def test_oracle_features_score_near_one(small_video, tmp_path):
    cfg = DavisConfig(davis_root=str(small_video), out=str(tmp_path / "full"), short_side=24)
    full = run(cfg, features_fn=oracle_features(1, 24), checkpoint_info={"name": "oracle"})[0]["metrics"]
    assert full["J&F-Mean"] > 99.0 and full["J-Recall"] == 100.0  # measured: exactly 100.0
    cfg = DavisConfig(davis_root=str(small_video), out=str(tmp_path / "half"), short_side=24)
    half = run(cfg, features_fn=oracle_features(2, 24), checkpoint_info={"name": "oracle"})[0]["metrics"]
    # labels downsampled x2 lose the small ShapesWorld objects' edges in J (measured J&F 80.1, F 97.9)
    assert half["J&F-Mean"] > 75.0 and half["F-Mean"] > 90.0


@pytest.mark.slow
def test_cli_end_to_end_with_a_random_checkpoint(shapes_root, tmp_path, monkeypatch):
    from evaluate.cli import main
    from evaluate.protocols.davis import features
    from evaluate.protocols.davis.data import read_split
    from evaluate.reporting.records import read_records

    ckpt, out, davis = tmp_path / "rand.pth", tmp_path / "out", shapes_root / "davis"
    assert main(["ckpt", "init", "--arch", "vit_femto", str(ckpt)]) == 0
    args = ["eval", "davis", "--checkpoint", str(ckpt), "--davis-root", str(davis), "--out", str(out)]
    assert main([*args, "--short-side", "48", "--n-last-frames", "1,7"]) == 0
    records = read_records()
    assert len(records) == 2 * 7
    assert {r["settings"]["n_last_frames"] for r in records} == {1, 7}
    assert all(r["dataset"] == "shapesworld-davis" and r["unit"] == "%" and r["split"] == "val" for r in records)
    assert all(len(r["checkpoint"]["sha256"]) == 64 and r["checkpoint"]["name"] == "rand" for r in records)
    jf = [r["value"] for r in records if r["metric"] == "J&F-Mean"]
    assert all(0.0 <= v <= 100.0 for v in jf)
    for seq in read_split(davis, "val"):
        gt = sorted((davis / "Annotations" / "480p" / seq).glob("*.png"))
        pred = sorted((out / "nlast7-topk5-nbhd12" / seq).glob("*.png"))
        assert [p.name for p in pred] == [p.name for p in gt]
        assert all(Image.open(p).mode == "P" and Image.open(p).size == Image.open(gt[0]).size for p in pred)
        np.testing.assert_array_equal(read_label(pred[0]), read_label(gt[0]))  # frame 0 is the GT
    assert (out / "nlast1-topk5-nbhd12" / "global_results-val.csv").is_file()
    assert (out / "config.yaml").is_file()
    # a sweep of propagation settings reuses the cached features: the backbone is never run again
    monkeypatch.setattr(features, "extract", lambda *a, **k: pytest.fail("features recomputed"))
    assert main([*args, "--short-side", "48", "--topk", "1,3"]) == 0
    assert len(read_records()) == 4 * 7
    # bad input: one line, exit 2
    assert main([*args, "--short-side", "48", "--split", "nope"]) == 2
    assert main([*args[:3], str(tmp_path / "missing.pth"), "--davis-root", str(davis)]) == 2
    assert main([*args, "--set", "topk=[0]"]) == 2


def test_resize_rule_and_layout_errors(shapes_root, tmp_path):
    from evaluate.protocols.davis.data import first_labels, load_sequence, read_frame, read_split
    from sslcore.errors import DataError

    assert resized_shape(480, 854) == (480, 832)
    assert resized_shape(480, 910) == (480, 896)
    assert resized_shape(480, 1152) == (480, 1152)
    assert resized_shape(854, 480) == (832, 480)  # portrait: the width is the short side
    assert resized_shape(96, 160, short_side=96) == (96, 128)
    davis = shapes_root / "davis"
    seq = load_sequence(davis, read_split(davis, "val")[0], annotations="all")
    frame, size = read_frame(seq.frames[0], short_side=48)
    assert frame.shape == (3, 48, 64) and size == (48, 64)
    # the two normalisations differ only in the red channel's std (0.229 vs DINO's 0.228)
    dino, _ = read_frame(seq.frames[0], short_side=48, normalize="dino")
    torch.testing.assert_close(dino[0] * 0.228, frame[0] * 0.229)
    torch.testing.assert_close(dino[1:], frame[1:])
    full, small = first_labels(seq.annotations[0], (6, 8))
    assert small.shape == (6, 8) and full.shape == (48, 64) and set(np.unique(small)) <= set(np.unique(full))
    with pytest.raises(DataError, match="split file not found .*available: train, val"):
        read_split(davis, "test")
    with pytest.raises(DataError, match="missing frames of sequence 'nope'"):
        load_sequence(davis, "nope")
    empty = tmp_path / "D"
    (empty / "JPEGImages" / "480p" / "s").mkdir(parents=True)
    (empty / "JPEGImages" / "480p" / "s" / "00000.jpg").write_bytes((seq.frames[0]).read_bytes())
    with pytest.raises(DataError, match="missing annotations of sequence 's'"):
        load_sequence(empty, "s")
    with pytest.raises(DataError, match="empty .* resize"):
        read_frame(seq.frames[0], short_side=8)  # long side floors to 0
