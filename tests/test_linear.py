"""Linear probing: the stacked grid equals separately trained heads, slices, selection, held-out split, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evaluate.protocols.linear import HeadGrid, HeadGroup, cosine, grid_groups, heldout_split, select, train_heads


def _batches(x, y, batch):
    def gen(epoch):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            yield x[idx], y[idx]

    return gen


@pytest.mark.parametrize(("schedule", "bn"), [("epoch", False), ("iter", False), ("epoch", True)])
def test_grid_equals_separately_trained_heads(schedule, bn):
    """bn: each reference head is BAM's ``BatchNorm1d(affine=False, eps=1e-6)`` + Linear, trained in train mode."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=gen, dtype=torch.float64) * 3 + 1, torch.randint(0, 3, (40,), generator=gen)
    groups = [HeadGroup("a", 0, 4), HeadGroup("b", 2, 6)]
    lrs = [0.5, 0.05, 0.005]
    grid = HeadGrid(groups, lrs, num_classes=3, seed=1, bn=bn).double()
    # reference: one nn.Linear per head with its own torch SGD (lr_h * cosine, momentum, weight decay)
    refs = []
    for g, w, b in zip(groups, grid.weights, grid.biases):
        for i, lr in enumerate(lrs):
            linear = torch.nn.Linear(g.stop - g.start, 3).double()
            linear.weight.data.copy_(w[i].detach())
            linear.bias.data.copy_(b[i].detach())
            norm = torch.nn.BatchNorm1d(g.stop - g.start, affine=False, eps=1e-6).double()
            head = torch.nn.Sequential(norm, linear) if bn else linear
            refs.append((g, lr, head, torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=1e-2)))
    epochs, batch = 3, 16
    steps = -(-len(x) // batch)
    train_heads(grid, _batches(x, y, batch), epochs, steps, {}, 0.9, 1e-2, schedule, progress=False)
    step = 0
    for epoch in range(epochs):
        for xb, yb in _batches(x, y, batch)(epoch):
            factor = cosine(step, epochs * steps) if schedule == "iter" else cosine(epoch, epochs)
            for g, lr, head, opt in refs:
                opt.param_groups[0]["lr"] = lr * factor
                opt.zero_grad()
                F.cross_entropy(head(xb[:, g.start : g.stop]), yb).backward()
                opt.step()
            step += 1
    grid.eval()
    with torch.no_grad():
        logits = grid(x)  # (H, B, C); BN heads with their running statistics
    for h, (g, _, head, _) in enumerate(refs):
        gi, li = divmod(h, len(lrs))
        linear = head[1] if bn else head
        torch.testing.assert_close(grid.weights[gi][li].detach(), linear.weight.detach(), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grid.biases[gi][li].detach(), linear.bias.detach(), rtol=1e-9, atol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(logits[h], head.eval()(x[:, g.start : g.stop]), rtol=1e-9, atol=1e-12)
    if bn:  # the running statistics moved from (0, 1) towards the data's (1, 9)
        assert grid.bn_mean0.mean() > 0.3 and grid.bn_var0.mean() > 2.0


def test_grid_groups_slices_of_the_bank():
    # bank = [CLS_{L-3}, CLS_{L-2}, CLS_{L-1}, CLS_L, mean], D = 4
    groups = {g.name: (g.start, g.stop) for g in grid_groups(4, [1, 4], [False, True], n_bank=4)}
    assert groups == {"blocks1": (12, 16), "blocks1_avg": (12, 20), "blocks4": (0, 16), "blocks4_avg": (0, 20)}
    grid = HeadGrid([HeadGroup(n, a, b) for n, (a, b) in groups.items()], [1e-3] * 13, num_classes=5)
    assert len(grid.head_names) == 52
    assert grid(torch.randn(7, 20)).shape == (52, 7, 5)


def test_selection_paper_vs_last_and_heldout():
    table = torch.tensor([[10.0, 50.0, 20.0], [30.0, 40.0, 45.0], [35.0, 41.0, 44.0]])  # (epochs, heads)
    assert select(table) == (0, 1)  # best (epoch, head) anywhere: DINO v1 / iBOT convention
    assert select(table, last_only=True) == (2, 2)  # best head at the last evaluation: DINOv2
    tie = torch.tensor([[1.0, 3.0], [3.0, 2.0]])
    assert select(tie) == (0, 1)  # first maximum in row-major order


def test_heldout_split_is_a_seeded_partition():
    train, held = heldout_split(100, 0.1, seed=3)
    assert len(held) == 10 and sorted(train + held) == list(range(100))
    assert heldout_split(100, 0.1, seed=3) == (train, held)
    assert heldout_split(100, 0.1, seed=4)[1] != held
    assert heldout_split(10, 0.0, seed=0) == (list(range(10)), [])


def test_heads_learn_separable_data_and_lr_matters():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=gen) * 2
    y = torch.arange(5).repeat(40)
    x = centers[y] + 0.3 * torch.randn(200, 16, generator=gen)
    grid = HeadGrid([HeadGroup("all", 0, 16)], [1e-6, 0.5], num_classes=5)
    start = grid.weights[0].detach().clone()
    tables = train_heads(grid, _batches(x, y, 32), 10, 7, {"train": (x, y)}, progress=False)
    assert tables["train"].shape == (10, 2)
    assert tables["train"][-1, 1] == 100.0  # the useful lr separates the clusters
    moved = (grid.weights[0].detach() - start).abs().amax(dim=(1, 2))
    assert moved[0] < 1e-3 < 0.1 < moved[1] and moved[1] > 1e3 * moved[0]  # each head follows its own lr


def test_report_labels_paper_and_heldout_selection():
    from evaluate.protocols.linear import report

    test = torch.tensor([[10.0, 50.0], [30.0, 40.0]])
    held = torch.tensor([[90.0, 10.0], [20.0, 30.0]])  # held-out prefers head 0 at epoch 1
    metrics, chosen = report({"test": test, "heldout": held}, ["a", "b"], [0.1, 0.2], last_only=False)
    assert metrics == {"top1": 50.0, "top1_heldout": 10.0}
    assert chosen["paper"] == {"head": "b", "epoch": 1, "lr": 0.2, "test_top1": 50.0}
    assert chosen["heldout"] == {"head": "a", "epoch": 1, "lr": 0.1, "heldout_top1": 90.0}
    metrics, _ = report({"test": test}, ["a", "b"], [0.1, 0.2], last_only=True)
    assert metrics == {"top1": 40.0}
