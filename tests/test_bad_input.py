"""Issue 17, bad input: each class of malformed input gets one line, exit 2, and no lost or stale files."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from test_checkpoints import random_backbone

from evaluate.checkpoints import load_backbone, sha256_cached
from evaluate.cli import main
from sslcore.config import load_config
from sslcore.errors import ConfigError, DataError, SSLBenchError
from sslcore.io import (
    atomic_torch_save,
    atomic_write_text,
    check_writable,
    load_torch_file,
    remove_stale_temporaries,
    stale_temporaries,
)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = atomic_write_text(tmp_path / "x.txt", "hello")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_stale_temporaries_of_killed_writes_are_found_and_removed(tmp_path):
    (tmp_path / ".checkpoint.pth.abc123.tmp").write_bytes(b"x" * 100)
    (tmp_path / ".backbone.pth.zz.tmp").write_bytes(b"y")
    keep = atomic_torch_save({"a": torch.ones(1)}, tmp_path / "checkpoint.pth")
    assert [p.name for p in stale_temporaries(tmp_path, ["checkpoint.pth"])] == [".checkpoint.pth.abc123.tmp"]
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".backbone.pth.zz.tmp", ".checkpoint.pth.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"] and keep.is_file()


def test_check_writable_refuses_a_path_under_a_file_and_creates_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SSLBenchError, match=r"output directory .*file/out: not writable \(.*file is not a directory"):
        check_writable(blocker / "out", "output directory")
    fresh = tmp_path / "a" / "b"
    assert check_writable(fresh, "cache") == fresh and not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"PK\x03\x04broken zip", "cannot read checkpoint"), (b"\x80\x02garbage", "cannot read")],
)
def test_damaged_torch_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(content)
    with pytest.raises(SSLBenchError, match=message) as info:
        load_torch_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_sha256_cache_sees_a_replaced_file_with_the_same_size_and_mtime(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 64)
    first = sha256_cached(path)
    stat = path.stat()
    other = tmp_path / "new.pth"
    other.write_bytes(b"b" * 64)
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, path)  # same path, size and mtime: another model
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sha256_cached(path) != first


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad, capsys):
    state = random_backbone(0)
    state["blocks.1.mlp.fc1.weight"][0, 0] = bad
    path = tmp_path / "nan.pth"
    torch.save({"model": state | {"head.weight": torch.zeros(2, 32), "head.bias": torch.zeros(2)}}, path)
    with pytest.raises(SSLBenchError, match=r"non-finite values \(NaN/Inf\): blocks.1.mlp.fc1.weight"):
        load_backbone(path, num_heads=2)
    assert main(["ckpt", "inspect", str(path), "--num-heads", "2"]) == 2
    captured = capsys.readouterr()
    assert "status:      does NOT load strictly" in captured.out
    assert captured.err.count("\n") == 1 and "non-finite" in captured.err


def test_trust_pickle_cannot_come_from_a_file(tmp_path):
    from evaluate.protocols.knn import KNNConfig

    path = tmp_path / "x.yaml"
    path.write_text("backbone:\n  trust_pickle: true\n")
    with pytest.raises(ConfigError, match=r"x.yaml: backbone.trust_pickle: can only be given on the command line"):
        load_config(KNNConfig, path)
    assert load_config(KNNConfig, None, ["backbone.trust_pickle=true"]).backbone.trust_pickle is True


def _copy_split(shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root / "classification", root)
    return root


def test_empty_image_is_skipped_counted_and_recorded(shapes_root, tmp_path):
    from evaluate.protocols.knn import KNNConfig, run
    from evaluate.reporting.records import read_records
    from pretrain.vit import ARCHS, SSLViT

    root = _copy_split(shapes_root, tmp_path)
    victim = sorted((root / "train").rglob("*.png"))[0]
    victim.write_bytes(b"")
    cfg = load_config(KNNConfig, None, [f"data.root={root}", f"out={tmp_path / 'o'}", "ks=[5]"])
    cfg.features.progress = False
    run(cfg, backbone=SSLViT(ARCHS["vit_femto"]))
    (record, *_) = read_records()
    assert record["skipped_images"] == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_is_one_line_naming_it(shapes_root, tmp_path, capsys, workers):
    from pretrain.vit import build_vit, export_backbone

    root = _copy_split(shapes_root, tmp_path)
    victim = sorted((root / "val").rglob("*.png"))[3]
    victim.write_bytes(b"this is not an image")
    ckpt = tmp_path / "m.pth"
    torch.save(export_backbone(build_vit("vit_femto")), ckpt)
    argv = ["eval", "knn", str(ckpt), "--data", str(root), "features.progress=false", f"features.num_workers={workers}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == f"sslbench: error: {victim}: unreadable image (UnidentifiedImageError); remove or replace the file"
    )


def test_davis_checks_every_annotation_before_writing_masks(shapes_root, tmp_path):
    from evaluate.protocols.davis.run import DavisConfig, run
    from pretrain.vit import ARCHS, SSLViT

    davis = tmp_path / "davis"
    shutil.copytree(shapes_root / "davis", davis)
    seqs = sorted(p for p in (davis / "Annotations" / "480p").iterdir())
    last_seq = seqs[-1]
    sorted(last_seq.glob("*.png"))[-1].unlink()  # the last sequence lacks an annotation for its last frame
    out = tmp_path / "out"
    with pytest.raises(DataError, match="no annotation for frame"):
        run(DavisConfig(davis_root=str(davis), out=str(out), short_side=64), model=SSLViT(ARCHS["vit_femto"]))
    assert not out.exists() or not any(out.rglob("*.png"))  # nothing propagated before the check


def test_davis_warns_on_a_frame_missing_mid_sequence(shapes_root, tmp_path):
    from evaluate.protocols.davis.data import check_sequences, read_split

    davis = tmp_path / "davis"
    shutil.copytree(shapes_root / "davis", davis)
    name = read_split(davis, "val")[0]
    frames = sorted((davis / "JPEGImages" / "480p" / name).glob("*.jpg"))
    frames[2].unlink()
    (davis / "Annotations" / "480p" / name / f"{frames[2].stem}.png").unlink(missing_ok=True)
    warnings = check_sequences(davis, [name])
    assert warnings == [f"{name}: frame {frames[2].stem} missing mid-sequence (1 missing)"]


def test_an_error_after_a_progress_bar_starts_on_its_own_line(capsys, monkeypatch):
    from tqdm.auto import tqdm

    import evaluate.cli as cli

    def failing(args):
        bar = tqdm(total=10, desc="work", leave=False)
        bar.update(3)
        raise SSLBenchError("boom")

    monkeypatch.setattr(cli, "build_parser", lambda argv: _FakeParser(failing))
    assert cli.main(["x"]) == 2
    err = capsys.readouterr().err
    assert err.split("\r")[-1] == "sslbench: error: boom\n"  # the bar's line was cleared before the message


class _FakeParser:
    def __init__(self, run):
        self.run = run

    def parse_args(self, argv):
        import argparse

        return argparse.Namespace(_run=self.run, verbose=False, quiet=True)


def test_records_are_appended_last(shapes_root, tmp_path, monkeypatch):
    """A run whose outputs cannot be written leaves no record behind (the k-NN run used to append first)."""
    import evaluate.protocols.evalrun as evalrun
    from evaluate.protocols.knn import KNNConfig, run
    from evaluate.reporting.records import read_records
    from pretrain.vit import ARCHS, SSLViT

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(evalrun, "atomic_write_json", broken)
    cfg = load_config(KNNConfig, None, [f"data.root={shapes_root / 'classification'}", f"out={tmp_path / 'o'}"])
    cfg.features.progress = False
    with pytest.raises(OSError, match="disk full"):
        run(cfg, backbone=SSLViT(ARCHS["vit_femto"]))
    assert read_records() == []
