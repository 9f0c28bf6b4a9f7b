"""The GPU acceptance run's ``learning`` stage (benchmarks/gpu/learning.py): recipes stretched, runs side by side,
measured against their step 0 and raw pixels; rehearsed here on the CPU at the demo's --quick sizes."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
sys.path.insert(0, str(REPO / "benchmarks"))

import acceptance as A  # noqa: E402
import learning as L  # noqa: E402

from evaluate.demo.pipeline import recipe  # noqa: E402
from pretrain.config import PretrainConfig  # noqa: E402
from sslcore.config import load_config  # noqa: E402


def test_stretch_scales_every_epoch_schedule_of_a_recipe_with_its_length():
    dino = L.stretch(load_config(PretrainConfig, recipe("dino")), 200)  # 10x the recipe's 20 epochs
    assert dino.train.epochs == 200 and dino.knn.every_epochs == 40
    assert dino.optim.warmup_epochs == 30 and dino.optim.freeze_last_layer_epochs == 10
    assert dino.dino.warmup_teacher_temp_epochs == 50
    assert dino.optim.lr == load_config(PretrainConfig, recipe("dino")).optim.lr  # nothing else moves
    bam = load_config(PretrainConfig, recipe("bam"))
    long = L.stretch(bam, 60)
    assert long.ccrop.warmup_epochs == 3 * bam.ccrop.warmup_epochs and long.ccrop.interval == 3 * bam.ccrop.interval
    assert long.bam.eps_warmup_epochs == 3 * bam.bam.eps_warmup_epochs
    assert L.stretch(bam, 20) == dataclasses.replace(bam, knn=dataclasses.replace(bam.knn, every_epochs=4))


def test_unknown_learning_runs_are_refused_with_the_known_names():
    with pytest.raises(ValueError, match=r"unknown \['sere-typo'\].*learning_runs: bam, dino"):
        A.parse_sets(["learning_runs=dino,sere-typo"], A.GPU)
    assert A.parse_sets(["learning_runs=dino,adclr"], A.GPU).learning_runs == ("dino", "adclr")
    assert "learning" in A.STAGES and "learning" not in A.DEFAULT_STAGES


def test_entropy_note_reads_the_last_step_of_a_log(tmp_path):
    log = tmp_path / "log.jsonl"
    steps = [{"kind": "meta"}, {"kind": "step", "teacher_entropy": 1.0, "teacher_num_outputs": 1024.0},
             {"kind": "step", "teacher_entropy": 6.0, "teacher_num_outputs": 1024.0}, {"kind": "epoch"}]  # fmt: skip
    log.write_text("".join(json.dumps(s) + "\n" for s in steps))
    assert L.last_step(log)["teacher_entropy"] == 6.0 and L.last_step(tmp_path / "none.jsonl") == {}
    assert L.entropy_note(L.last_step(log)) == "teacher entropy 87% of ln K"  # 6 / ln 1024
    assert L.entropy_note({"diag/source_entropy": 4.5, "diag/uniform_entropy": 5.0}) == "source entropy 90% of uniform"


def test_a_failed_run_is_not_measured_even_with_a_checkpoint(tmp_path):
    cfg = load_config(PretrainConfig, recipe("dino"), [f"train.out={tmp_path}"])
    (tmp_path / "checkpoint.pth").write_bytes(b"not read")
    run = L.Run("dino", "dino", cfg, status="failed (exit 1)")
    assert L.backbone_of(run) is None and run.status == "failed (exit 1)"
    elsewhere = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out=str(tmp_path / "empty")))
    assert L.backbone_of(dataclasses.replace(run, status="stopped", cfg=elsewhere)) is None  # no checkpoint yet


def test_paired_differences_per_object_with_their_standard_error(tmp_path):
    a = {"v0_1": 60.0, "v0_2": 50.0, "v1_1": 70.0, "only_a": 10.0}
    b = {"v0_1": 58.0, "v0_2": 51.0, "v1_1": 66.0, "only_b": 90.0}
    mean, se, higher, lower, count = L.paired(a, b)  # differences 2, -1, 4 over the 3 shared objects
    assert (count, higher, lower) == (3, 2, 1) and mean == pytest.approx(5 / 3)
    sd = ((2 - 5 / 3) ** 2 + (-1 - 5 / 3) ** 2 + (4 - 5 / 3) ** 2) ** 0.5 / 2**0.5
    assert se == pytest.approx(sd / 3**0.5)
    assert all(x != x for x in L.paired({"x": 1.0}, {"x": 2.0})[:2])  # one object: no standard error
    run = tmp_path / "runs" / "dino" / "davis" / "nlast7-topk5-nbhd12"
    run.mkdir(parents=True)
    (run / "per-sequence_results-val.csv").write_text("Sequence,J-Mean,F-Mean\nv0_1,0.5,0.7\nv0_2,0.25,0.75\n")
    assert L.per_object_jf(tmp_path / "runs" / "dino") == {"v0_1": pytest.approx(60.0), "v0_2": pytest.approx(50.0)}
    assert L.per_object_jf(tmp_path / "none") == {}


@pytest.mark.slow
def test_the_learning_stage_trains_side_by_side_and_measures_against_step0_and_pixels(tmp_path, monkeypatch):
    store = tmp_path / "records"
    monkeypatch.setenv("SSLBENCH_RESULTS", str(store))
    monkeypatch.setenv("SSLBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "learning"
    names = ("dino", "sere", "sere-a0b0")
    rows = L.run_learning(out, device="cpu", epochs=2, deadline_s=600, quick=True, names=names)
    by = {figure: (value, ratio, note) for figure, value, _unit, ratio, note in rows}
    assert by["pretraining wall time"][1] == "3/3 finished"
    # DINO and SERE build the same network at step 0: one step-0 row; raw pixels are measured once too
    assert [f for f in by if f.endswith("-step0: k-NN top-1")] == ["dino-step0: k-NN top-1"]
    pixels = by["raw-pixels-16px: k-NN top-1"][0]
    step0 = by["dino-step0: k-NN top-1"][0]
    assert by["dino-step0: k-NN top-1"][1] == f"{step0 - pixels:+.1f} vs pixels"
    for name in names:
        knn, ratio, note = by[f"{name}: k-NN top-1"]
        assert 0 <= knn <= 100 and note.startswith("demo split ") and "; finished; DAVIS J&F " in note
        assert "teacher entropy" in note
        assert ratio == f"{knn - step0:+.1f} vs step 0, {knn - pixels:+.1f} vs pixels"
    assert "DAVIS J&F adclr - dino" not in by  # only pairs that ran
    # the dense comparisons: paired over the larger set's objects (4 tiny videos), against the runs' own CSVs
    objects = {n: L.per_object_jf(out / "eval-large" / "runs" / n / "davis") for n in (*names, "dino-step0")}
    assert len(objects["sere"]) >= 4 and objects["sere"].keys() == objects["sere-a0b0"].keys()
    for name, control in (("sere", "sere-a0b0"), ("dino", "dino-step0")):
        mean, se, higher, lower, count = L.paired(objects[name], objects[control])
        value, ratio, note = by[f"DAVIS J&F {name} - {control}"]
        assert value == mean and ratio == f"SE {se:.2f}"
        assert note == f"paired over {count} objects of the larger set: {higher} higher, {lower} lower"
    records = [json.loads(line) for path in store.glob("*.jsonl") for line in path.read_text().splitlines()]
    measured = {(r["checkpoint"]["name"], r["protocol"]) for r in records}
    assert {("sere-a0b0", "knn"), ("sere-a0b0", "davis"), ("raw-pixels-16px", "knn")} <= measured
    # k-NN on both sets: the demo split (the note) and the larger one (the value), each its own record
    large = str(out / "data" / "large" / "classification")
    knn_roots = {r["settings"]["data"]["root"] for r in records if r["protocol"] == "knn"}
    assert large in knn_roots and len(knn_roots) == 2
    assert len(list((out / "data" / "large" / "classification" / "val").rglob("*.png"))) == 40  # tiny preset
    davis_roots = {r["settings"]["davis_root"] for r in records if r["protocol"] == "davis"}
    assert davis_roots == {str(out / "data" / "shapesworld" / "davis"), str(out / "data" / "large" / "davis")}
    # each run is its recipe, stretched: SERE's control has no relation losses, and both trained 2 epochs
    saved = load_config(PretrainConfig, out / "pretrain" / "sere-a0b0.yaml")
    assert saved.sere.alpha == saved.sere.beta == 0 and saved.train.epochs == 2
    # a run stopped at the deadline is measured from its last checkpoint: the same teacher as its export
    run = L.Run("dino", "dino", load_config(PretrainConfig, out / "pretrain" / "dino.yaml"), status="stopped")
    (out / "pretrain" / "dino" / "backbone.pth").rename(out / "finished.pth")
    exported = L.backbone_of(run)
    assert run.status == "stopped at epoch 2 of 2"
    got, want = torch.load(exported, weights_only=False), torch.load(out / "finished.pth", weights_only=False)
    assert got["state_dict"].keys() == want["state_dict"].keys()
    assert all(torch.equal(got["state_dict"][k], want["state_dict"][k]) for k in want["state_dict"])
