"""The pretraining engine, tested with a toy method defined here (independent of BAM).

``ToyDINO``: DINO-style cross-entropy between the teacher's centred/sharpened global views and every other student
view, plus an InfoNCE term between the student's two global views over the *gathered* world batch, so both
collectives (a batch centre through ``all_reduce``, keys through a differentiable ``all_gather``) are exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evaluate.cli import main as cli_main
from pretrain.config import PretrainConfig
from pretrain.dist import Distributed
from pretrain.ema import ema_update
from pretrain.engine import NonFiniteLossError, Trainer, clip_gradients, param_groups
from pretrain.methods import method_class
from pretrain.methods.base import SSLMethod
from pretrain.networks import CLSProjectionNet
from pretrain.views import Batch, ViewPlan, random_batch
from pretrain.vit import build_vit
from sslcore.config import load_config
from sslcore.errors import DataError, SSLBenchError

REPO = Path(__file__).resolve().parent.parent


class ToyDINO(SSLMethod):
    nan_at_step: int | None = None

    def __init__(self, cfg: PretrainConfig) -> None:
        backbone = build_vit(cfg.model.arch, drop_path_rate=cfg.model.drop_path)
        super().__init__(cfg, CLSProjectionNet(backbone, {"proj": nn.Linear(backbone.embed_dim, 16)}))

    def loss(self, student, batch, ctx):
        views = batch.views
        b, g = views[0].shape[0], self.cfg.data.global_crops
        s = student(views)["cls"].float()
        with torch.no_grad():
            t = (self.teacher if self.teacher is not None else self.student)(views[:g])["cls"].float()
            center = ctx.all_reduce(t.sum(0), "sum") / (t.shape[0] * ctx.world_size)
            t_prob = F.softmax((t - center) / 0.04, dim=-1).chunk(g)
        s_logp = F.log_softmax(s / 0.1, dim=-1).chunk(len(views))
        terms = [-(tp * s_logp[v]).sum(-1).mean() for i, tp in enumerate(t_prob) for v in range(len(views)) if v != i]
        dino = torch.stack(terms).mean()
        z = F.normalize(s[: 2 * b], dim=-1)
        keys = ctx.all_gather(z[b:])  # (world * B, D), rank-major
        logits = z[:b] @ keys.T / 0.2
        nce = F.cross_entropy(logits, torch.arange(b) + ctx.rank * b)
        loss = dino + 0.5 * nce
        if self.nan_at_step is not None and ctx.step == self.nan_at_step:
            loss = loss * float("nan")
        return loss, {"diag/nce": nce.detach()}


class ToyNaN(ToyDINO):
    nan_at_step = 4


def toy_cfg(tmp: Path, root: str = "", **over) -> PretrainConfig:
    overrides = {
        "method": "test_engine:ToyDINO",
        "model.arch": "vit_femto",
        "data.root": root,
        "data.global_size": 32,
        "data.local_size": 16,
        "data.local_crops": 2,
        "data.num_workers": 0,
        "train.out": str(tmp / "run"),
        "train.epochs": 3,
        "train.batch_size": 16,
        "train.precision": "fp32",
        "train.threads": 1,
        "train.log_every": 1,
        "train.checkpoint_every_steps": 3,
        "optim.warmup_epochs": 1,
        "optim.lr": 1e-3,
        "optim.clip_grad": 0.3,
        "ema.momentum": 0.99,
    }
    overrides.update(over)
    return load_config(PretrainConfig, None, [f"{k}={v}" for k, v in overrides.items()])


def random_views(batch: int, seed: int, cfg: PretrainConfig | None = None) -> Batch:
    """Noise crops (2 x 32 px + 2 x 16 px) laid out as ``cfg``'s method plans them (masks for iBOT)."""
    g = torch.Generator().manual_seed(seed)
    plan = method_class(cfg.method).view_plan(cfg) if cfg is not None else ViewPlan(2, 2, patch_size=8)
    return random_batch(plan, batch, 32, 16, generator=g)


# ---------------------------------------------------------------------------------------------- units


def test_param_groups_no_decay_on_1d_and_frozen_excluded():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    model[2].weight.requires_grad_(False)
    decay, no_decay = param_groups(model)
    assert [tuple(p.shape) for p in decay["params"]] == [(3, 4)]
    assert sorted(tuple(p.shape) for p in no_decay["params"]) == [(2,), (3,), (3,), (3,)]
    assert no_decay["weight_decay"] == 0.0


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    t0, s0 = teacher.weight.detach().clone(), student.weight.detach().clone()
    ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, 0.9 * t0 + 0.1 * s0)
    ema_update(teacher, student, 1.0)  # momentum 1 freezes the teacher
    assert torch.allclose(teacher.weight, 0.9 * t0 + 0.1 * s0)
    ema_update(teacher, student, 0.0)  # momentum 0 copies the student
    assert torch.equal(teacher.weight, student.weight)


def test_clip_gradients_global_and_per_param():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.5])  # norms 5 and 0.5
    norm = clip_gradients([a, b], 1.0, "global")
    assert norm == pytest.approx((25 + 0.25) ** 0.5)
    assert float(torch.cat([a.grad, b.grad]).norm()) == pytest.approx(1.0, rel=1e-5)
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.5])
    clip_gradients([a, b], 1.0, "per_param")
    assert float(a.grad.norm()) == pytest.approx(1.0, rel=1e-5)  # capped
    assert torch.equal(b.grad, torch.tensor([0.0, 0.5]))  # under the cap: untouched


def test_trainer_schedules_and_teacher_free(tmp_path):
    cfg = toy_cfg(tmp_path, **{"train.batch_size": 32, "optim.lr": 8e-4, "optim.min_lr": 1e-5})
    trainer = Trainer(cfg, iters_per_epoch=4)
    assert len(trainer.lr_schedule) == 12
    assert trainer.lr_schedule[3] == pytest.approx(8e-4 * 32 / 256)  # end of the 1-epoch warm-up
    assert trainer.momentum_schedule[0] == pytest.approx(0.99)
    loss, _ = trainer.train_step(random_views(32, 0))
    assert np.isfinite(loss) and trainer.step == 1
    assert trainer.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.04)
    assert trainer.optimizer.param_groups[1]["weight_decay"] == 0.0
    free = Trainer(toy_cfg(tmp_path, **{"ema.enabled": False}), iters_per_epoch=4)
    assert free.method.teacher is None
    assert np.isfinite(free.train_step(random_views(16, 0))[0])


def test_freeze_last_layer_for_the_first_epochs(tmp_path):
    over = {"optim.freeze_last_layer_epochs": 1, "optim.last_layer": "heads.proj.", "optim.warmup_epochs": 0}
    trainer = Trainer(toy_cfg(tmp_path, **over), iters_per_epoch=1)
    head = trainer.method.student.heads["proj"].weight.detach().clone()
    block = trainer.method.student.backbone.blocks[0].mlp.fc1.weight.detach().clone()
    trainer.train_step(random_views(16, 2))  # epoch 0: the head is frozen, the backbone trains
    assert torch.equal(trainer.method.student.heads["proj"].weight, head)
    assert not torch.equal(trainer.method.student.backbone.blocks[0].mlp.fc1.weight, block)
    trainer.train_step(random_views(16, 3))  # epoch 1: the head trains too
    assert not torch.equal(trainer.method.student.heads["proj"].weight, head)
    with pytest.raises(SSLBenchError, match="optim.last_layer"):
        Trainer(toy_cfg(tmp_path, **{**over, "optim.last_layer": "nothing."}), iters_per_epoch=1)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_step_on_cpu(tmp_path, precision):
    trainer = Trainer(toy_cfg(tmp_path, **{"train.precision": precision}), iters_per_epoch=2)
    loss, diag = trainer.train_step(random_views(16, 1))
    assert np.isfinite(loss) and "grad_norm" in diag
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":
        assert trainer.scaler.get_scale() > 1.0  # the loss was scaled (2**16 at the start)


# ---------------------------------------------------------------------------------------------- gloo


BAM_OVER = {"method": "bam", "model.pos_embed": "sincos", "bam.proj_hidden": 64, "bam.proj_out": 64, "bam.top_k": 8}
DINO_OVER = {
    "method": "dino",
    "dino.out_dim": 64,
    "dino.hidden_dim": 32,
    "dino.bottleneck_dim": 16,
    "dino.norm_last_layer": False,
    "dino.teacher_temp": 0.07,
    "dino.warmup_teacher_temp_epochs": 2,
    "optim.clip_mode": "per_param",
}
IBOT_OVER = {**DINO_OVER, "method": "ibot", "ibot.patch_out_dim": 64}
# SERE's heads hold BatchNorms over the world batch (student and train-mode teacher): the gloo test covers SyncBN
SERE_OVER = {
    **IBOT_OVER,
    "method": "sere",
    "sere.alpha": 0.2,
    "sere.beta": 0.5,
    "sere.global_grid": 3,
    "sere.local_grid": 2,
}
SERE_DINO_OVER = {**SERE_OVER, "sere.base": "dino", "sere.alpha": 1.0, "sere.beta": 1.0}
# every registered method (and the engine's toy) through the engine's contract tests
ADCLR_OVER = {**DINO_OVER, "method": "adclr", "adclr.query_crops": 3}
ADCLR_STAR_OVER = {**ADCLR_OVER, "adclr.mim": True, "adclr.attention": "all", "ibot.patch_out_dim": 64}
# BAM with the pooled-feature backbones (ResNet: BatchNorm over the world batch, LARS and a ReLU projector as the
# ResNet-50 recipe; both: ContrastiveCrop from activation maps)
BAM_CAFORMER_OVER = {
    "method": "bam",
    "model.arch": "caformer_tiny",
    "bam.proj_hidden": 64,
    "bam.proj_out": 64,
    "bam.top_k": 8,
}
BAM_RESNET_OVER = {
    **BAM_CAFORMER_OVER,
    "model.arch": "resnet_tiny",
    "optim.name": "lars",
    "optim.lr": 0.3,
    "bam.proj_act": "relu",
}
METHOD_OVERRIDES = {
    "toy": {},
    "bam": BAM_OVER,
    "bam_resnet": BAM_RESNET_OVER,
    "bam_caformer": BAM_CAFORMER_OVER,
    "dino": DINO_OVER,
    "dino_sinkhorn": {**DINO_OVER, "dino.centering": "sinkhorn_knopp"},  # DINOv2's option: collectives in the target
    "ibot": IBOT_OVER,
    "adclr": ADCLR_OVER,
    "adclr_star": ADCLR_STAR_OVER,
    "sere": SERE_OVER,
    "sere_dino": SERE_DINO_OVER,
}
# the resume test also runs one method with the batch renderer (query crops, masks and views made in the engine)
RESUME_OVERRIDES = {**METHOD_OVERRIDES, "adclr_batch_render": {**ADCLR_OVER, "data.render": "batch"}}


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str, tmp: str, over: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cfg = toy_cfg(Path(tmp), **{**over, "train.batch_size": 4})
    trainer = Trainer(cfg, dist=Distributed(rank=rank, world_size=world), iters_per_epoch=5)
    views = random_views(8, 3, cfg).rows(slice(rank * 4, (rank + 1) * 4))
    loss, _ = trainer.forward_backward(views)
    grads = {n: p.grad.clone() for n, p in trainer.method.student.named_parameters() if p.grad is not None}
    trainer.train_step(views)  # and one full step (clip, AdamW, EMA) on the same batch
    if rank == 0:
        teacher = {n: p.detach().clone() for n, p in trainer.method.teacher.named_parameters()}
        state = {k: v.clone() for k, v in trainer.method.method_state().items()}
        torch.save({"loss": loss, "grads": grads, "teacher": teacher, "state": state}, Path(out_dir) / "rank0.pt")
    dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("name", list(METHOD_OVERRIDES))
def test_two_gloo_processes_equal_one_process(tmp_path, name):
    """Same global batch of 8: 2 gloo ranks x 4 images == 1 process x 8 (loss, gradients, teacher and method state
    after a step).

    BAM's columns are gathered over ranks and its Sinkhorn column sums all-reduced, so its target is global; DINO's
    and iBOT's centers average the world batch; SERE's BatchNorms (student and train-mode teacher) normalise over it.
    """
    over = METHOD_OVERRIDES[name]
    import torch.multiprocessing as mp

    args = (2, str(tmp_path / "init"), str(tmp_path), str(tmp_path), over)
    mp.spawn(_gloo_worker, args=args, nprocs=2, join=True)
    got = torch.load(tmp_path / "rank0.pt", weights_only=True)
    cfg = toy_cfg(tmp_path, **{**over, "train.batch_size": 8})
    trainer = Trainer(cfg, iters_per_epoch=5)
    views = random_views(8, 3, cfg)
    loss, _ = trainer.forward_backward(views)  # like the ranks: this updates the centers once, train_step again
    assert torch.allclose(got["loss"], loss, atol=1e-6), (float(got["loss"]), float(loss))
    grads = {n: p.grad for n, p in trainer.method.student.named_parameters() if p.grad is not None}
    assert got["grads"].keys() == grads.keys() and len(grads) > 10
    # a ResNet's BatchNorm statistics are sums over ranks (WorldBatchNorm2d) vs one BatchNorm2d: rounding only, which
    # backpropagation spreads over a whole tensor, so its bound scales with the tensor (1e-5 of its largest element;
    # 4.4e-5 of 8.7 seen on one host, where an absolute 2e-5 passed on another)
    for param, g in grads.items():
        atol = 1e-5 * float(g.abs().max()) if name == "bam_resnet" else 1e-6
        diff = float((got["grads"][param] - g).abs().max())
        assert torch.allclose(got["grads"][param], g, atol=atol, rtol=1e-4), (param, diff)
    trainer.train_step(views)
    for key, p in trainer.method.teacher.named_parameters():
        assert torch.allclose(got["teacher"][key], p, atol=1e-6), key
    state = trainer.method.method_state()
    assert got["state"].keys() == state.keys() and (
        name in ("toy", "bam", "bam_resnet", "bam_caformer") or "center" in state
    )
    for key, value in state.items():
        assert torch.allclose(got["state"][key], value, atol=1e-6), key


# ---------------------------------------------------------------------------------------------- end to end


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    flat = {f"student.{k}": v for k, v in state["student"].items()}
    flat.update({f"teacher.{k}": v for k, v in state["teacher"].items()})
    flat.update({f"method_state.{k}": v for k, v in state["method_state"].items()})
    flat.update(
        {f"backbone.{k}": v for k, v in torch.load(out / "backbone.pth", weights_only=True)["state_dict"].items()}
    )
    return flat


def _steps(out: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if r["kind"] == "step"]


def _overrides(cfg_over: dict) -> list[str]:
    return [f"{k}={v}" for k, v in cfg_over.items()]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RESUME_OVERRIDES))
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, shapes_root, name):
    """Every method: a run SIGKILLed mid-epoch and resumed ends bit-identical (weights, method state such as DINO's
    center, export, logged losses) to an uninterrupted run."""
    root = str(shapes_root / "classification" / "train")
    base = toy_cfg(tmp_path, root)
    args = {
        "method": base.method,
        "model.arch": "vit_femto",
        "data.root": root,
        "data.global_size": 32,
        "data.local_size": 16,
        "data.local_crops": 2,
        "data.num_workers": 0,
        "train.epochs": 3,
        "train.batch_size": 16,
        "train.precision": "fp32",
        "train.threads": 1,
        "train.log_every": 1,
        "train.checkpoint_every_steps": 3,
        "optim.warmup_epochs": 1,
        "optim.clip_grad": 0.3,
        "model.drop_path": 0.1,  # the global RNG matters for the trajectory
        "ccrop.enabled": True,  # boxes from the teacher after epoch 0, refreshed after epoch 1: in the checkpoint
        "ccrop.warmup_epochs": 1,
        "ccrop.interval": 1,
        "ccrop.size": 32,
        **RESUME_OVERRIDES[name],
    }
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert cli_main(["pretrain", "--out", str(ref), *_overrides(args)]) == 0

    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    cmd = [sys.executable, "-m", "sslbench_entry", "pretrain", "--out", str(killed), *_overrides(args)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = killed / "log.jsonl"  # wait for step 9 (epoch 1): the checkpoint of step 9 exists, boxes too
        while not (log.exists() and '"step": 9,' in log.read_text()):
            assert proc.poll() is None, "the run ended before step 9"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(killed / "checkpoint.pth", weights_only=True)
    sampler = state["sampler"]
    assert 9 <= state["step"] < 3 * 7 and state["step"] % 7, state["step"]  # mid-epoch, not the last
    assert state["crop_boxes"] is not None and state["crop_boxes"].shape == (120, 4)
    assert cli_main(["pretrain", "--out", str(killed), "--resume", *_overrides(args)]) == 0
    elapsed = time.time() - t0

    a, b = _final_state(ref), _final_state(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _steps(ref) == _steps(killed)  # same losses, no duplicated or missing step lines
    print(f"resume test: killed at step {state['step']} (sampler {sampler}); kill+resume took {elapsed:.1f}s")


@pytest.mark.slow
def test_non_finite_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, shapes_root, capsys):
    root = str(shapes_root / "classification" / "train")
    out = tmp_path / "nan"
    args = {
        "method": "test_engine:ToyNaN",
        "model.arch": "vit_femto",
        "data.root": root,
        "data.global_size": 32,
        "data.local_size": 16,
        "data.local_crops": 2,
        "data.num_workers": 0,
        "train.batch_size": 16,
        "train.epochs": 2,
        "train.precision": "fp32",
        "train.threads": 1,
        "train.checkpoint_every_steps": 2,
    }
    assert cli_main(["pretrain", "--out", str(out), *_overrides(args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].split("\r")[-1].startswith("sslbench: error: non-finite loss (nan) at step 4")
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    assert state["step"] == 4 and state["format"] == "sslbench-train"
    assert all(torch.isfinite(v).all() for v in state["student"].values())


def test_non_finite_raises_before_touching_weights(tmp_path):
    trainer = Trainer(toy_cfg(tmp_path, method="test_engine:ToyNaN"), iters_per_epoch=10)
    trainer.step = 4
    before = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="step 4"):
        trainer.train_step(random_views(16, 0))
    assert all(torch.equal(before[k], v) for k, v in trainer.method.state_dict().items())


@pytest.mark.slow
def test_corrupt_image_is_skipped_and_counted(tmp_path, shapes_root):
    src = sorted((shapes_root / "classification" / "train").rglob("*.png"))[:15]
    root = tmp_path / "imgs"
    for i, path in enumerate(src):
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / f"c{i % 3}" / f"{i:02d}.png")
    (root / "c0" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    cfg = toy_cfg(tmp_path, str(root), **{"train.epochs": 1, "train.batch_size": 8})
    trainer = Trainer(cfg)
    bad = next(i for i, (p, _) in enumerate(trainer.data.dataset.samples) if p.endswith("bad.png"))
    item = trainer.data.dataset[(bad, 0)]
    assert item["skipped"] == 1 and len(item["views"]) == 4
    trainer.fit()
    epoch = [json.loads(x) for x in (Path(cfg.train.out) / "log.jsonl").read_text().splitlines()][-1]
    assert epoch["kind"] == "epoch" and epoch["skipped_images"] == 1
    trainer.data.dataset.on_bad_image = "error"
    with pytest.raises(DataError, match="bad.png"):
        trainer.data.dataset[(bad, 0)]


def test_one_loader_spans_the_epochs_between_crop_box_refreshes(tmp_path, shapes_root, monkeypatch):
    """Loaders are made at the start and after each ContrastiveCrop refresh only (boxes refreshed after epochs 1 and
    3 of 5: spans [0, 1), [1, 3), [3, 5)), and every epoch's batches are its own permutation in order, as a loader
    per epoch gives them; a step that fails leaves the live loader, and the next step starts a new one there."""
    import pretrain.engine as engine

    spans, seen = [], []
    make = engine.make_loader

    def counting(dataset, sampler, *args):
        spans.append((sampler.epoch, sampler.start_batch, sampler.stop_epoch, dataset.crop_boxes is not None))
        return make(dataset, sampler, *args)

    monkeypatch.setattr(engine, "make_loader", counting)
    root = str(shapes_root / "classification" / "train")
    over = {"train.epochs": 5, "train.batch_size": 32, "ccrop.enabled": True, "ccrop.warmup_epochs": 1}
    trainer = Trainer(toy_cfg(tmp_path, root, **over, **{"ccrop.interval": 2, "ccrop.size": 32}))
    step = trainer.train_step

    def recording(batch):
        seen.append(batch.index.tolist())
        return step(batch)

    trainer.train_step = recording
    trainer.fit()
    assert spans == [(0, 0, 1, False), (1, 0, 3, True), (3, 0, 5, True)]
    sampler, ipe = trainer.data.sampler, trainer.iters_per_epoch
    for epoch in range(5):
        order = sampler.indices(epoch)
        assert seen[epoch * ipe : (epoch + 1) * ipe] == [order[b * 32 : (b + 1) * 32] for b in range(ipe)]

    spans.clear()
    trainer2 = Trainer(toy_cfg(tmp_path / "b", root, **{"train.epochs": 3, "train.batch_size": 32}))
    calls = {"n": 0}
    step2 = trainer2.train_step

    def failing_once(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("step failed")
        return step2(batch)

    trainer2.train_step = failing_once
    trainer2.out.mkdir(parents=True)
    with pytest.raises(RuntimeError, match="step failed"):
        trainer2.run_epoch(0)
    trainer2.run_epoch(0)  # resumes at step 1 of epoch 0 with a new loader
    assert spans == [(0, 0, 3, False), (0, 1, 3, False)] and trainer2.step == trainer2.iters_per_epoch


def test_train_compile_keeps_the_weights_and_checkpoint_keys(tmp_path):
    """``train.compile`` compiles student and teacher in place: same parameters, same state-dict keys as eager, so
    checkpoints and exports of a compiled run load into an eager one (the compiled step itself is checked against
    eager by the acceptance dry run, tests/test_acceptance.py)."""
    eager = Trainer(toy_cfg(tmp_path, method="bam"), iters_per_epoch=4)
    compiled = Trainer(toy_cfg(tmp_path, method="bam", **{"train.compile": True}), iters_per_epoch=4)
    for a, b in ((eager.method.student, compiled.method.student), (eager.method.teacher, compiled.method.teacher)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert compiled.method.student._compiled_call_impl is not None
    assert compiled.method.teacher._compiled_call_impl is not None and eager.method.student._compiled_call_impl is None
    assert [id(p) for p in compiled.params] == [id(p) for p in compiled.method.student.parameters() if p.requires_grad]
