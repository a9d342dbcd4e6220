import torch
from torch import nn

from sslray.nn.momentum import build_target, update_momentum


def small_net():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))


def test_target_is_a_frozen_copy():
    online = small_net()
    target = build_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for o, t in zip(online.parameters(), target.parameters()):
        assert torch.equal(o, t) and o.data_ptr() != t.data_ptr()


def test_update_momentum_matches_the_ema_formula_and_copies_buffers():
    torch.manual_seed(0)
    online, target = small_net(), small_net()
    online(torch.randn(8, 4))  # changes online BN running statistics
    before = [t.clone() for t in target.parameters()]
    update_momentum(online, target, 0.9)
    for t_new, t_old, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t_new, 0.9 * t_old + 0.1 * o)
    for o_buf, t_buf in zip(online.buffers(), target.buffers()):
        assert torch.equal(o_buf, t_buf)


def test_momentum_one_keeps_target_and_zero_copies_online():
    online, target = small_net(), small_net()
    frozen = [t.clone() for t in target.parameters()]
    update_momentum(online, target, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), frozen))
    update_momentum(online, target, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))


def test_target_gets_no_gradient_through_a_loss():
    online = small_net()
    target = build_target(online)
    x = torch.randn(8, 4)
    loss = ((online(x) - target(x)) ** 2).sum() + target(x).sum()
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in online.parameters())
