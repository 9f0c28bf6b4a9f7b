"""LARS (BAM's ResNet-50 optimizer, Barlow Twins' form) against its formula and against SGD where they coincide."""

from __future__ import annotations

import torch

from pretrain.optim import LARS, build_optimizer


def test_lars_matches_the_formula_and_sgd_on_1d_parameters():
    torch.manual_seed(0)
    w, b = torch.randn(4, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    w_ref = w.detach().clone()
    b_sgd = b.detach().clone().requires_grad_(True)
    opt = LARS([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}], lr=0.5, momentum=0.9)
    sgd = torch.optim.SGD([b_sgd], lr=0.5, momentum=0.9)
    mu_w = torch.zeros_like(w_ref)
    for _ in range(3):
        gw, gb = torch.randn(4, 3), torch.randn(4)
        w.grad, b.grad, b_sgd.grad = gw.clone(), gb.clone(), gb.clone()
        opt.step()
        sgd.step()
        u = gw + 0.1 * w_ref
        u = u * (0.001 * w_ref.norm() / u.norm())
        mu_w = 0.9 * mu_w + u
        w_ref = w_ref - 0.5 * mu_w
        torch.testing.assert_close(w.detach(), w_ref, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(b.detach(), b_sgd.detach(), rtol=0, atol=0)  # 1-D: no decay, no adaptation
    assert set(opt.state[w]) == {"mu"}


def test_lars_keeps_zero_parameters_and_zero_updates_finite():
    w = torch.zeros(2, 2, requires_grad=True)
    opt = LARS([w], lr=1.0)
    w.grad = torch.ones(2, 2)
    opt.step()  # ||p|| = 0: trust ratio 1, plain momentum step
    torch.testing.assert_close(w.detach(), -torch.ones(2, 2))
    assert isinstance(build_optimizer("adamw", [{"params": [w]}], (0.9, 0.999), 0.9, 1e-3), torch.optim.AdamW)
    assert isinstance(build_optimizer("lars", [{"params": [w]}], (0.9, 0.999), 0.9, 1e-3), LARS)
