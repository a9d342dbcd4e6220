"""Fine-tuning on real Fashion-MNIST images: label subsets, layer-wise lr decay, and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sslray.data.readers import fashion_mnist_arrays
from sslray.errors import UserError
from sslray.eval.finetune import (
    Classifier,
    FinetuneConfig,
    FinetuneData,
    finetune,
    finetune_param_groups,
    label_subset,
)
from sslray.eval.linear_probe import feature_batches
from sslray.eval.supervised import Optimization, train_epoch
from sslray.nn.backbones import ResNetBackbone
from sslray.nn.vit import ViTBackbone

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def fmnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1000 train / 500 val normalised images [N, 1, 28, 28] and labels, from the real test split."""
    images, labels = fashion_mnist_arrays("test")
    x = (torch.from_numpy(images[:1500].astype(np.float32))[:, None] / 255.0 - 0.2860) / 0.3530
    y = torch.from_numpy(labels[:1500])
    return x[:1000], y[:1000], x[1000:], y[1000:]


class SmallCNN(nn.Module):
    """A non-ViT backbone small enough to train on a CPU in a second."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 32
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_label_subset_is_stratified_deterministic_and_skips_unlabelled(fmnist):
    _, train_y, _, _ = fmnist
    labels = train_y.clone()
    labels[::7] = -1  # some unlabelled images
    counts = torch.bincount(labels[labels >= 0], minlength=NUM_CLASSES)

    chosen = label_subset(labels, 0.1, seed=0)
    assert torch.equal(chosen, chosen.sort().values) and len(chosen.unique()) == len(chosen)
    assert bool((labels[chosen] >= 0).all())
    expected = [max(1, int(0.1 * n + 0.5)) for n in counts.tolist()]
    assert torch.bincount(labels[chosen], minlength=NUM_CLASSES).tolist() == expected
    assert torch.equal(label_subset(labels, 0.1, seed=0), chosen)
    assert not torch.equal(label_subset(labels, 0.1, seed=1), chosen)

    one_percent = label_subset(labels, 0.01, seed=0)  # ~0.9 images per class rounds to 1, never 0
    assert torch.bincount(labels[one_percent], minlength=NUM_CLASSES).tolist() == [1] * NUM_CLASSES
    assert set(one_percent.tolist()) <= set(chosen.tolist())  # nested: the 1% images are among the 10%
    assert torch.equal(label_subset(labels, 1.0, seed=5), (labels >= 0).nonzero().squeeze(1))


def test_label_subset_rounds_half_up_and_rejects_bad_fractions():
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, -1, -1])  # 2 of class 0, 5 of class 1
    chosen = label_subset(labels, 0.5, seed=0)
    assert torch.bincount(labels[chosen]).tolist() == [1, 3]  # 0.5 * 5 = 2.5 -> 3
    assert len(label_subset(torch.tensor([-1, -1]), 0.5, seed=0)) == 0
    with pytest.raises(UserError, match="label_fraction"):
        label_subset(labels, 0.0, seed=0)


def test_vit_layer_decay_scales_fall_by_layer_decay_per_block_from_the_head_down():
    torch.manual_seed(0)
    model = Classifier(ViTBackbone("tiny", img_size=16, patch_size=4, in_chans=1, depth=2), NUM_CLASSES)
    groups = finetune_param_groups(model, FinetuneConfig(layer_decay=0.5, weight_decay=0.05))
    name_of = {id(p): n for n, p in model.named_parameters()}
    scale = {name_of[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    decay = {name_of[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(scale) == sorted(trainable)  # every trainable parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    assert "backbone.vit.pos_embed" not in scale  # the fixed sin-cos table is frozen
    assert scale["head.weight"] == scale["head.bias"] == 1.0
    assert scale["backbone.vit.blocks.1.attn.qkv.weight"] == 0.5
    assert scale["backbone.vit.norm.weight"] == 0.5  # timm groups the final norm with the last block
    assert scale["backbone.vit.blocks.0.mlp.fc1.weight"] == 0.5**2
    assert scale["backbone.vit.patch_embed.proj.weight"] == scale["backbone.vit.cls_token"] == 0.5**3
    assert decay["head.weight"] == decay["backbone.vit.blocks.0.attn.qkv.weight"] == 0.05
    for name in (
        "head.bias",
        "backbone.vit.cls_token",
        "backbone.vit.blocks.0.norm1.weight",
        "backbone.vit.blocks.1.attn.qkv.bias",
        "backbone.vit.norm.bias",
    ):
        assert decay[name] == 0.0, name


def test_resnet_groups_have_equal_scales_and_no_decay_on_norms_and_biases():
    model = Classifier(ResNetBackbone(18, in_chans=1, small_stem=True), NUM_CLASSES)
    groups = finetune_param_groups(model, FinetuneConfig(layer_decay=0.5))
    assert {g["lr_scale"] for g in groups} == {1.0}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for g in groups:
        assert g["weight_decay"] == (0.05 if all(p.ndim > 1 for p in g["params"]) else 0.0)


def test_train_epoch_applies_each_groups_lr_scale():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr_scale": 1.0}, {"params": [model.bias], "lr_scale": 0.25}], lr=123.0
    )
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    before_w, before_b = model.weight.detach().clone(), model.bias.detach().clone()
    nn.functional.cross_entropy(model(x), y).backward()
    grad_w, grad_b = model.weight.grad.clone(), model.bias.grad.clone()
    model.zero_grad()

    _, step, lr = train_epoch(model, [(x, y)], Optimization(optimizer, lambda s: 0.1 * (s + 1), "cpu"), step=4)
    assert (step, lr) == (5, pytest.approx(0.5))
    torch.testing.assert_close(model.weight.detach(), before_w - 0.5 * grad_w)
    torch.testing.assert_close(model.bias.detach(), before_b - 0.125 * grad_b)


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_finetuning_lowers_train_loss_and_beats_chance(fmnist, kind):
    train_x, train_y, val_x, val_y = fmnist
    torch.manual_seed(0)
    if kind == "vit":
        backbone, base_lr = ViTBackbone("tiny", img_size=28, patch_size=7, in_chans=1, depth=2), 5e-3
    else:
        backbone, base_lr = SmallCNN(), 3e-2
    model = Classifier(backbone, NUM_CLASSES)
    assert model.head.weight.abs().max().item() < 1e-4  # MAE's near-zero head init
    cfg = FinetuneConfig(epochs=3, batch_size=50, base_lr=base_lr)
    seen = []
    data = FinetuneData(
        feature_batches(train_x, train_y, 50, 0), 20, val_batches=lambda: zip(val_x.split(200), val_y.split(200))
    )
    result = finetune(model, data, cfg, on_epoch=seen.append)

    assert [h["epoch"] for h in result.history] == [1, 2, 3] and seen == result.history
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_top1"] > 0.25  # chance is 0.1; ~0.45 measured
    assert torch.equal(result.val_labels, val_y)
    assert (result.val_predictions == val_y).float().mean().item() == pytest.approx(result.history[-1]["val_top1"])


def test_finetune_without_val_batches_reports_none():
    torch.manual_seed(0)
    images, labels = torch.randn(40, 1, 8, 8), torch.arange(40) % 4
    model = Classifier(SmallCNN(), 4)
    result = finetune(
        model, FinetuneData(feature_batches(images, labels, 20, 0), 2), FinetuneConfig(epochs=1, batch_size=20)
    )
    assert result.val_predictions is None and result.val_labels is None
    assert result.history[0]["val_top1"] is None and result.history[0]["train_top1"] is not None


@pytest.mark.parametrize(
    "field,value",
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("base_lr", -1e-3),
        ("weight_decay", -0.1),
        ("layer_decay", 0.0),
        ("layer_decay", 1.5),
        ("warmup_epochs", 21),
        ("label_smoothing", 1.0),
        ("label_fraction", 0.0),
        ("label_fraction", 1.01),
        ("seed", -1),
    ],
)
def test_bad_finetune_config_is_a_user_error_naming_field_and_value(field, value):
    cfg = FinetuneConfig(**{field: value})
    with pytest.raises(UserError, match=rf"fine-tune\.{field}: {value!r}"):
        cfg.validate("fine-tune")
    FinetuneConfig().validate("fine-tune")  # the defaults are valid
