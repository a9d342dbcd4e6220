import pytest
import torch
from torch import nn

from sslray.errors import UserError
from sslray.nn.optim import LARS, OptimizerConfig, build_optimizer, param_groups, scaled_lr, set_lr
from sslray.sections import section_from_dict


class WithNoDecayList(nn.Module):
    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, 4))
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def no_weight_decay(self):
        return {"token"}


def test_param_groups_exclude_bias_norm_and_listed_names():
    model = nn.Sequential(WithNoDecayList(), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    model.append(frozen)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model[0].fc.weight, model[1].weight])
    assert ids(no_decay["params"]) == ids(
        [
            model[0].token,
            model[0].fc.bias,
            model[0].norm.weight,
            model[0].norm.bias,
            model[1].bias,
            model[2].weight,
            model[2].bias,
        ]
    )
    assert decay["lars_adapt"] and not no_decay["lars_adapt"]


def test_scaled_lr_is_linear_in_batch():
    assert scaled_lr(0.3, 256) == pytest.approx(0.3)
    assert scaled_lr(0.3, 4096) == pytest.approx(4.8)


def lars_step_by_hand(w, g, lr, wd, eta, adapt):
    update = g + wd * w
    if adapt:
        update = update * eta * w.norm() / update.norm()
    return w - lr * update  # first step: momentum buffer = update


@pytest.mark.parametrize("adapt", [True, False])
def test_lars_first_step_matches_the_formula(adapt):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4))
    w.grad = torch.randn(3, 4)
    expected = lars_step_by_hand(w.detach().clone(), w.grad.clone(), 0.5, 1e-2, 0.001, adapt)
    LARS([{"params": [w], "weight_decay": 1e-2, "lars_adapt": adapt}], lr=0.5, trust_coefficient=0.001).step()
    assert torch.allclose(w.detach(), expected, atol=1e-7)


def test_lars_momentum_accumulates():
    w = nn.Parameter(torch.ones(2))
    optimizer = LARS([{"params": [w], "lars_adapt": False}], lr=1.0, momentum=0.9)
    for _ in range(2):
        w.grad = torch.ones(2)
        optimizer.step()
    # step 1: buf = 1 -> w = 0; step 2: buf = 0.9 + 1 = 1.9 -> w = -1.9
    assert torch.allclose(w.detach(), torch.full((2,), -1.9))


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("lars", LARS), ("sgd", torch.optim.SGD)])
def test_build_optimizer_scales_lr_and_trains(name, cls):
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    optimizer = build_optimizer(model, OptimizerConfig(name=name, base_lr=0.1), batch_size=512)
    assert isinstance(optimizer, cls)
    assert all(g["lr"] == pytest.approx(0.2) for g in optimizer.param_groups)
    before = model[0].weight.detach().clone()
    model(torch.randn(16, 3)).pow(2).mean().backward()
    optimizer.step()
    assert not torch.equal(before, model[0].weight)
    set_lr(optimizer, 0.01)
    assert all(g["lr"] == 0.01 for g in optimizer.param_groups)


def test_optimizer_config_errors_name_the_key():
    with pytest.raises(UserError, match="optim.name"):
        section_from_dict(OptimizerConfig, {"name": "adam"}, "optim")
    with pytest.raises(UserError, match="optim.base_lr"):
        OptimizerConfig(base_lr=-1.0)
