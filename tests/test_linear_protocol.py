"""Issue 17 item 2: linear probing defaults are DINO's (augmented crops, batch 1024, lr 0.001 x batch / 256, all of
train for the paper number, the held-out figure beside it), and mode=augmented is data-parallel under torchrun."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evaluate.protocols.linear import LinearConfig, head_losses, run
from evaluate.reporting.records import read_records
from pretrain.vit import ARCHS, SSLViT
from sslcore.config import load_config


def test_defaults_are_dinos_protocol():
    cfg = LinearConfig()
    assert (cfg.variant, cfg.mode, cfg.epochs, cfg.batch_size, cfg.lr) == ("dino", "augmented", 100, 1024, 0.001)
    assert (cfg.momentum, cfg.weight_decay, cfg.taps) == (0.9, 0.0, "auto")


def test_masked_head_loss_is_the_mean_over_its_own_images():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 3, generator=gen)
    labels = torch.randint(0, 3, (6,), generator=gen)
    targets = torch.stack([labels, labels.masked_fill(torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool), -100)])
    losses = head_losses(logits.transpose(0, 1), targets)  # batch-major (B, H, C)
    torch.testing.assert_close(losses[0], F.cross_entropy(logits[0], labels))
    keep = torch.tensor([1, 2, 4, 5])
    torch.testing.assert_close(losses[1], F.cross_entropy(logits[1][keep], labels[keep]))


def _cfg(shapes_root, tmp_path, *overrides):
    return load_config(
        LinearConfig,
        None,
        [
            f"data.root={shapes_root / 'classification'}",
            f"out={tmp_path / 'out'}",
            "features.progress=false",
            "epochs=3",
            "batch_size=32",
            *overrides,
        ],
    )


def test_paper_heads_train_on_all_of_train_and_heldout_is_beside(shapes_root, tmp_path):
    torch.manual_seed(0)
    model = SSLViT(ARCHS["vit_femto"])
    both = run(_cfg(shapes_root, tmp_path, "mode=cached", "heldout_fraction=0.2"), backbone=model)
    alone = run(_cfg(shapes_root, tmp_path, "mode=cached", "heldout_fraction=0"), backbone=model)
    assert set(both) == {"top1", "top1_heldout"} and set(alone) == {"top1"}
    assert both["top1"] == alone["top1"]  # the paper heads never skip the held-out images
    with_copy, without = (r for r in read_records() if r["metric"] == "top1")
    assert with_copy["settings"]["n_train"] == 120 and with_copy["settings"]["n_heldout"] == 24
    assert with_copy["settings"]["n_train_heldout_heads"] == 96 and without["settings"]["n_heldout"] == 0


def _ddp_worker(rank: int, world: int, init: str, root: str, out: str, ckpt: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = SSLViT(ARCHS["vit_femto"])
        model.load_state_dict(torch.load(ckpt, weights_only=True))
        seen = []
        original = model.forward_tokens

        def counting(x, *args, **kwargs):
            seen.append(x.shape[0])
            return original(x, *args, **kwargs)

        model.forward_tokens = counting
        cfg = load_config(
            LinearConfig,
            None,
            [f"data.root={root}", f"out={out}/r{rank}", "features.progress=false", "features.cache=false"]
            + ["epochs=2", "batch_size=32", "heldout_fraction=0"],
        )
        seen.clear()
        metrics = run(cfg, backbone=model)
        torch.save({"metrics": metrics, "seen": sum(seen)}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_augmented_mode_is_data_parallel_under_two_ranks(shapes_root, tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    torch.save(SSLViT(ARCHS["vit_femto"]).state_dict(), ckpt)
    root = str(shapes_root / "classification")
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'rdv'}", root, str(tmp_path), str(ckpt)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert r0["metrics"] == r1["metrics"]  # identical heads on both ranks
    # each rank ran the backbone on half of every epoch's 120 training images (2 epochs) plus its share of the
    # test-set features (40 images, strided): 120 + 20 each, not 240 + 40 as when every rank repeated the training
    assert (r0["seen"], r1["seen"]) == (140, 140)


def test_bam_linear_protocol_is_recorded_with_its_bn_head(shapes_root, tmp_path):
    """``lr=0.002 bn_head=true`` (BAM's eval_linear): the heads' BN statistics are trained and the record says so."""
    torch.manual_seed(0)
    model = SSLViT(ARCHS["vit_femto"])
    metrics = run(
        _cfg(shapes_root, tmp_path, "mode=cached", "heldout_fraction=0.2", "bn_head=true", "lr=0.002"), backbone=model
    )
    assert 0 <= metrics["top1"] <= 100 and 0 <= metrics["top1_heldout"] <= 100
    (record,) = (r for r in read_records() if r["metric"] == "top1")
    assert record["settings"]["bn_head"] is True and record["settings"]["lr"] == 0.002
