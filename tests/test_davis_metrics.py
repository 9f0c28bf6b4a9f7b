"""The DAVIS J&F metric: hand-derived J/F values, the official conventions, the CSVs and the scoring CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from evaluate.cli import main
from evaluate.datasets.palette import davis_palette
from evaluate.protocols.davis import metrics as M
from evaluate.protocols.davis.data import read_label, write_label
from evaluate.protocols.davis.score import score_results
from evaluate.reporting.records import read_records
from sslcore.errors import DataError


def test_jaccard_hand_values():
    gt = np.zeros((4, 4), bool)
    gt[0, :4] = True  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[0, 2:4] = True
    pred[1, 0:2] = True  # 2 shared, union 6
    assert M.jaccard(gt, pred) == pytest.approx(2 / 6)
    empty = np.zeros((4, 4), bool)
    assert M.jaccard(empty, empty) == 1.0
    assert M.jaccard(gt, empty) == 0.0
    assert M.jaccard(empty, gt) == 0.0
    one = np.zeros((4, 4), bool)
    one[2, 2] = True
    assert M.jaccard(one, one) == 1.0
    # batched over leading axes
    np.testing.assert_allclose(M.jaccard(np.stack([gt, empty]), np.stack([pred, empty])), [2 / 6, 1.0])


def test_seg2bmap_hand_values():
    mask = np.zeros((5, 5), bool)
    mask[1:3, 1:3] = True
    expected = np.array(
        [[1, 1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=bool
    )
    np.testing.assert_array_equal(M.seg2bmap(mask), expected)
    # a 1-px object in the middle: its pixel and the N, W, NW neighbours
    dot = np.zeros((5, 5), bool)
    dot[2, 2] = True
    assert sorted(zip(*np.nonzero(M.seg2bmap(dot)))) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    # the bottom-right pixel is never a boundary; its neighbours are (last row: east rule, last column: south rule)
    corner = np.zeros((5, 5), bool)
    corner[4, 4] = True
    assert sorted(zip(*np.nonzero(M.seg2bmap(corner)))) == [(3, 3), (3, 4), (4, 3)]
    # a full-image object has no boundary at all
    assert not M.seg2bmap(np.ones((5, 5), bool)).any()


def test_disk_and_radius():
    assert M.disk(8).shape == (17, 17) and M.disk(8).sum() == 197
    np.testing.assert_array_equal(M.disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert [M.boundary_radius(480, w) for w in (854, 910, 1152)] == [8, 9, 10]
    assert M.boundary_radius(100, 100) == 2  # ceil(0.008 * 141.4)
    assert M.boundary_radius(480, 854, bound_th=3) == 3


def _band(top: int, bottom: int, size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : bottom + 1] = True
    return mask


def test_boundary_tolerance_at_known_radius():
    # 100x100: r = 2. A full-width band rows 40..59 has boundary rows 39 and 59 (200 px).
    gt = _band(40, 59)
    assert M.seg2bmap(gt).sum() == 200
    assert M.f_measure(gt, _band(42, 61)) == 1.0  # shifted by r: every boundary pixel matches
    assert M.precision_recall(gt, _band(43, 62)) == (0.0, 0.0)  # shifted by r + 1: nothing matches
    assert M.f_measure(gt, _band(43, 62)) == 0.0
    # top edge moved by 3 (unmatched), bottom edge unchanged (matched): P = R = 1/2
    assert M.precision_recall(gt, _band(43, 59)) == (0.5, 0.5)
    assert M.f_measure(gt, _band(43, 59)) == pytest.approx(0.5)
    # P != R: prediction boundary rows 39, 59 and 79 (two bands) against GT rows 39, 59
    two = _band(40, 59) | _band(80, 90)
    p, r = M.precision_recall(gt, two)
    assert (p, r) == (pytest.approx(200 / 400), 1.0)
    assert M.f_measure(gt, two) == pytest.approx(2 * 0.5 / 1.5)


def test_boundary_empty_set_conventions():
    empty = np.zeros((20, 20), bool)
    obj = np.zeros((20, 20), bool)
    obj[5:10, 5:10] = True
    assert M.precision_recall(obj, empty) == (1.0, 0.0)  # prediction empty
    assert M.precision_recall(empty, obj) == (0.0, 1.0)  # GT empty
    assert M.precision_recall(empty, empty) == (1.0, 1.0)
    assert M.f_measure(obj, empty) == 0.0 and M.f_measure(empty, obj) == 0.0 and M.f_measure(empty, empty) == 1.0
    assert M.f_measure(obj, obj) == 1.0


def test_decay_and_recall_worked_example():
    v = np.array([1, 1, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    np.testing.assert_array_equal(M.decay_bin_edges(10), [0, 2, 5, 7, 9])
    mean, recall, decay = M.statistics(v)
    assert mean == pytest.approx(v.mean())
    assert recall == pytest.approx(0.7)  # strictly greater than 0.5: 0.5 does not count
    assert decay == pytest.approx(0.6)  # mean{1,1,1} - mean{.5,.4,.3}


def test_decay_edges_match_the_official_uint8_formula_up_to_256_frames():
    for n in range(1, 257):
        official = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.uint8)
        np.testing.assert_array_equal(M.decay_bin_edges(n), official.astype(np.int64))
    assert M.decay_bin_edges(300)[-1] == 299  # the uint8 cast would wrap to 43


def _video(num_frames: int = 6, size: int = 24) -> np.ndarray:
    gt = np.zeros((num_frames, size, size), np.uint8)
    for t in range(num_frames):
        gt[t, 4:10, 2 + t : 8 + t] = 1
        gt[t, 14:20, 12:18] = 2
    return gt


def test_first_and_last_frames_are_not_scored():
    gt = _video()
    pred = gt.copy()
    pred[0] = 0  # garbage on the unscored frames
    pred[-1] = 2
    j, f = M.evaluate_sequence(gt, pred)
    assert j.shape == f.shape == (2, 4)
    np.testing.assert_array_equal(j, 1.0)
    np.testing.assert_array_equal(f, 1.0)
    pred[2] = 0  # a scored frame: both objects lost there
    j, f = M.evaluate_sequence(gt, pred)
    np.testing.assert_array_equal(j[:, 1], 0.0)
    np.testing.assert_array_equal(j[:, [0, 2, 3]], 1.0)
    # (T - 2) predicted frames are accepted as the scored frames
    j2, _ = M.evaluate_sequence(gt, pred[1:-1])
    np.testing.assert_array_equal(j, j2)


def test_objects_come_from_the_first_gt_frame_and_extra_objects_fail():
    gt = _video()
    gt[3, 0:2, 0:2] = 3  # an object appearing later is not an object of the sequence
    j, _ = M.evaluate_sequence(gt, _video())
    assert j.shape[0] == 2
    pred = _video()
    pred[2, 0, 0] = 3
    with pytest.raises(DataError, match="object index 3 .* only 2 object"):
        M.evaluate_sequence(_video(), pred)
    pred = _video()
    pred[-1, 0, 0] = 3  # the last frame is not read
    M.evaluate_sequence(_video(), pred)


def test_missing_objects_are_empty_and_void_is_background():
    gt = _video()
    pred = np.where(gt == 2, 0, gt)  # object 2 never predicted
    j, f = M.evaluate_sequence(gt, pred)
    np.testing.assert_array_equal(j[0], 1.0)
    np.testing.assert_array_equal(j[1], 0.0)
    np.testing.assert_array_equal(f[1], 0.0)
    gt_void = gt.copy()
    gt_void[:, 0, :] = 255  # void pixels count as background of the GT
    pred_void = gt.copy()
    j, _ = M.evaluate_sequence(gt_void, pred_void)
    np.testing.assert_array_equal(j, 1.0)


def test_summarize_is_object_weighted():
    a_j = np.array([[1.0, 1.0, 1.0, 1.0]])  # sequence a: one perfect object
    b_j = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # sequence b: two failed objects
    out, rows = M.summarize({"a": (a_j, a_j), "b": (b_j, 0.5 * np.ones_like(b_j))})
    assert out["J-Mean"] == pytest.approx(1 / 3)  # object-weighted (a sequence mean would give 1/2)
    assert out["F-Mean"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert out["J&F-Mean"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert out["J-Recall"] == pytest.approx(1 / 3) and out["F-Recall"] == pytest.approx(1 / 3)
    assert [r["Sequence"] for r in rows] == ["a_1", "b_1", "b_2"]


def test_palette_png_round_trip(tmp_path):
    labels = np.arange(64, dtype=np.uint8).reshape(8, 8) % 7
    labels[0, 0] = 255
    path = write_label(tmp_path / "x.png", labels, davis_palette())
    with Image.open(path) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image.getpalette()[:768]).reshape(256, 3), davis_palette())
    np.testing.assert_array_equal(read_label(path), labels)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="mode RGB"):
        read_label(tmp_path / "rgb.png")


def _gt_as_results(shapes_root, tmp_path):
    davis = shapes_root / "davis"
    results = tmp_path / "results"
    shutil.copytree(davis / "Annotations" / "480p", results)
    return davis, results


def test_identical_masks_score_one_and_csvs_are_rewritten(shapes_root, tmp_path):
    davis, results = _gt_as_results(shapes_root, tmp_path)
    (results / "global_results-val.csv").write_text("J&F-Mean\n0.123\n")  # a stale file is never read back
    summary, rows = score_results(davis, results, "val")
    assert all(v == 1.0 for k, v in summary.items() if "Decay" not in k)
    assert summary["J-Decay"] == summary["F-Decay"] == 0.0
    table = pd.read_csv(results / "global_results-val.csv")
    assert list(table.columns) == list(M.GLOBAL_COLUMNS)
    assert table["J&F-Mean"].item() == 1.0
    seq = pd.read_csv(results / "per-sequence_results-val.csv")
    assert list(seq.columns) == ["Sequence", "J-Mean", "F-Mean"]
    assert len(seq) == len(rows) and all(name.startswith("shapes-val-") for name in seq["Sequence"])


def test_score_cli_writes_records_and_fails_cleanly(shapes_root, tmp_path, capsys):
    davis, results = _gt_as_results(shapes_root, tmp_path)
    first = results / "shapes-val-000"
    frames = sorted(first.glob("*.png"))
    write_label(frames[1], np.zeros_like(read_label(frames[1])), davis_palette())  # lose every object in frame 1
    assert main(["eval", "davis-score", "--davis-root", str(davis), "--results", str(results)]) == 0
    records = read_records()
    assert {r["metric"] for r in records} == set(M.GLOBAL_COLUMNS)
    assert all(r["protocol"] == "davis" and r["dataset"] == "shapesworld-davis" and r["unit"] == "%" for r in records)
    jf = next(r["value"] for r in records if r["metric"] == "J&F-Mean")
    csv = pd.read_csv(results / "global_results-val.csv")["J&F-Mean"].item()
    assert 50 < jf < 100 and abs(jf / 100 - csv) < 5e-4
    frames[2].unlink()
    assert main(["eval", "davis-score", "--davis-root", str(davis), "--results", str(results)]) == 2
    assert "mask file not found" in capsys.readouterr().err
    assert main(["eval", "davis-score", "--davis-root", str(tmp_path / "nope"), "--results", str(results)]) == 2


def test_boundary_measure_matches_a_scipy_reference():
    """Random blobs: P/R against an independent full-frame implementation (scipy binary dilation with the disk)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for trial in range(20):
        h, w = rng.integers(20, 90, size=2)
        gt = ndimage.binary_opening(rng.random((h, w)) < 0.35 + 0.3 * (trial % 2), iterations=1)
        pred = np.roll(gt, rng.integers(-4, 5, size=2), axis=(0, 1)) ^ (rng.random((h, w)) < 0.02)
        r = M.boundary_radius(h, w)
        selem = M.disk(r).astype(bool)
        gt_b, pred_b = M.seg2bmap(gt), M.seg2bmap(pred)
        if not gt_b.any() or not pred_b.any():
            continue
        p_ref = (pred_b & ndimage.binary_dilation(gt_b, selem)).sum() / pred_b.sum()
        r_ref = (gt_b & ndimage.binary_dilation(pred_b, selem)).sum() / gt_b.sum()
        p, rec = M.precision_recall(gt, pred)
        assert (p, rec) == (pytest.approx(p_ref), pytest.approx(r_ref))
