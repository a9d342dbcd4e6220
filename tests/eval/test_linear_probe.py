"""Linear probe on real Fashion-MNIST images: raw pixels and a frozen random CNN, plus the pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sslray.data.readers import fashion_mnist_arrays
from sslray.errors import UserError
from sslray.eval.linear_probe import (
    LinearProbe,
    ProbeConfig,
    ProbeData,
    evaluate_head,
    feature_batches,
    train_linear_probe,
)
from sslray.eval.supervised import topk_correct

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def fmnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """2000 train / 500 val images [N, 28, 28] in [0, 1] and their labels, from the real test split."""
    images, labels = fashion_mnist_arrays("test")
    x = torch.from_numpy(images[:2500].astype(np.float32) / 255.0)
    y = torch.from_numpy(labels[:2500])
    return x[:2000], y[:2000], x[2000:], y[2000:]


def test_probe_on_raw_pixels_learns_and_reports_every_epoch(fmnist):
    train_x, train_y, val_x, val_y = fmnist
    train_x, val_x = train_x.flatten(1), val_x.flatten(1)  # [N, 784]
    cfg = ProbeConfig(epochs=4, batch_size=256, warmup_epochs=1)
    seen = []
    data = ProbeData.of_features((train_x, train_y), (val_x, val_y), NUM_CLASSES, cfg)
    assert (data.num_features, data.steps_per_epoch) == (784, 8)
    result = train_linear_probe(data, cfg, on_epoch=seen.append)

    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert seen == result.history
    last = result.history[-1]
    assert last["val_top1"] > 0.75  # chance is 0.1; a linear model on pixels reaches ~0.82 here
    assert last["val_top5"] >= last["val_top1"]
    assert last["train_loss"] < result.history[0]["train_loss"]
    # lr of each epoch's last step: linear warm-up over the 8 steps of epoch 1 to 0.1 * 256 / 256, then cosine
    assert [h["lr"] for h in result.history] == pytest.approx(
        [0.1 * 7 / 8] + [0.1 * (1 + math.cos(math.pi * (s - 8) / 24)) / 2 for s in (15, 23, 31)]
    )
    assert result.val_predictions.shape == (500,) and result.val_predictions.dtype == torch.long
    assert (result.val_predictions == val_y).float().mean().item() == pytest.approx(last["val_top1"])


def test_probe_on_features_of_a_frozen_cnn_recomputed_each_epoch(fmnist):
    """The augmented-probe path: features come from a frozen network on freshly flipped images."""
    train_x, train_y, val_x, val_y = fmnist
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
    ).eval()
    for p in cnn.parameters():
        p.requires_grad_(False)
    images = train_x[:, None]
    with torch.no_grad():
        val_features = cnn(val_x[:, None])

    def batches(epoch: int):
        flip = torch.Generator().manual_seed(epoch)
        for index in torch.randperm(len(images), generator=flip).split(200):
            view = images[index]
            flipped = torch.rand(len(index), generator=flip) < 0.5
            view = torch.where(flipped[:, None, None, None], view.flip(-1), view)
            with torch.no_grad():  # yielding inside no_grad leaves grad mode off for the consumer
                yield cnn(view), train_y[index]

    cfg = ProbeConfig(epochs=3, batch_size=200)
    result = train_linear_probe(
        ProbeData(batches, 128, NUM_CLASSES, steps_per_epoch=10, val_features=val_features, val_labels=val_y), cfg
    )
    assert result.history[-1]["val_top1"] > 0.65  # chance 0.1; ~0.78 measured


@pytest.mark.parametrize("optimizer,base_lr", [("sgd", 0.1), ("lars", 20.0), ("adamw", 1e-3)])
def test_each_optimizer_lowers_the_training_loss(fmnist, optimizer, base_lr):
    train_x, train_y, _, _ = fmnist
    cfg = ProbeConfig(epochs=3, batch_size=256, optimizer=optimizer, base_lr=base_lr)
    result = train_linear_probe(
        ProbeData(feature_batches(train_x.flatten(1), train_y, 256, 0), 784, NUM_CLASSES, 8), cfg
    )
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] < np.log(NUM_CLASSES) + 0.5
    assert result.history[-1]["val_top1"] is None and result.val_predictions is None


def test_probe_is_reproducible_from_its_seed(fmnist):
    train_x, train_y, _, _ = fmnist
    x, y = train_x[:500].flatten(1), train_y[:500]

    def run(seed: int):
        cfg = ProbeConfig(epochs=2, batch_size=128, seed=seed)
        return train_linear_probe(ProbeData(feature_batches(x, y, 128, seed), 784, NUM_CLASSES, 4), cfg)

    a, b, c = run(0), run(0), run(1)
    assert a.history == b.history
    assert torch.equal(a.head.linear.weight, b.head.linear.weight)
    assert not torch.equal(a.head.linear.weight, c.head.linear.weight)


def test_probe_batchnorm_has_no_affine_parameters_and_folds_into_the_linear_layer():
    torch.manual_seed(0)
    probe = LinearProbe(16, 5)
    assert probe.bn.weight is None and probe.bn.bias is None
    assert {name for name, _ in probe.named_parameters()} == {"linear.weight", "linear.bias"}
    assert probe.linear.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert torch.all(probe.linear.bias == 0)

    features = torch.randn(64, 16) * 50 + 3  # a badly scaled representation
    probe(features)  # one training step's forward updates the running statistics
    probe.eval()
    scale = (probe.bn.running_var + probe.bn.eps).rsqrt()
    weight = probe.linear.weight * scale
    bias = probe.linear.bias - weight @ probe.bn.running_mean
    torch.testing.assert_close(probe(features), features @ weight.T + bias, rtol=1e-4, atol=1e-5)


def test_probe_batchnorm_running_statistics_are_the_feature_statistics(fmnist):
    """Cumulative BN statistics: after one epoch they match the features' own mean and variance, however
    far those are from BN's initial (0, 1)."""
    train_x, train_y, _, _ = fmnist
    features = train_x.flatten(1)[:, 300:340] * 0.01 + 0.3  # variance ~1e-5, far from the initial 1
    result = train_linear_probe(
        ProbeData(feature_batches(features, train_y, 250, 0), 40, NUM_CLASSES, steps_per_epoch=8),
        ProbeConfig(epochs=1, batch_size=250),
    )
    bn = result.head.bn
    torch.testing.assert_close(bn.running_mean, features.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_var, features.var(0), rtol=0.02, atol=1e-9)


def test_probe_trains_on_a_batch_of_one_without_touching_running_statistics():
    probe = LinearProbe(8, 3)
    probe(torch.randn(32, 8) + 2)
    mean = probe.bn.running_mean.clone()
    logits = probe(torch.randn(1, 8))
    assert logits.shape == (1, 3) and logits.requires_grad
    assert torch.equal(probe.bn.running_mean, mean)


def test_feature_batches_cover_every_sample_once_and_reshuffle_per_epoch():
    features = torch.arange(1001, dtype=torch.float32)[:, None].repeat(1, 3)
    labels = torch.arange(1001) % 7
    batches = feature_batches(features, labels, batch_size=100, seed=3)

    def epoch_order(epoch: int) -> list[torch.Tensor]:
        out = list(batches(epoch))
        for x, y in out:
            assert torch.equal(y, x[:, 0].long() % 7)  # rows stay paired with their labels
        return [x[:, 0].long() for x, _ in out]

    first = epoch_order(0)
    assert len(first) == 11 and max(len(b) for b in first) <= 100 and min(len(b) for b in first) > 1
    assert torch.equal(torch.cat(first).sort().values, torch.arange(1001))
    assert torch.equal(torch.cat(first), torch.cat(epoch_order(0)))  # same (seed, epoch): same order
    assert not torch.equal(torch.cat(first), torch.cat(epoch_order(1)))
    other_seed = feature_batches(features, labels, batch_size=100, seed=4)
    assert not torch.equal(torch.cat(first), torch.cat([x[:, 0].long() for x, _ in other_seed(0)]))


def test_evaluate_head_matches_a_brute_force_count():
    torch.manual_seed(0)
    head = nn.Linear(12, 8)
    head.train()
    features, labels = torch.randn(300, 12), torch.randint(0, 8, (300,))
    stats = evaluate_head(head, features, labels, batch_size=64)

    logits = head(features).detach()
    assert torch.equal(stats["predictions"], logits.argmax(dim=1))
    assert stats["top1"] == pytest.approx((logits.argmax(dim=1) == labels).float().mean().item())
    rank_of_label = (logits > logits.gather(1, labels[:, None])).sum(dim=1)  # classes scored above the label
    assert stats["top5"] == pytest.approx((rank_of_label < 5).float().mean().item())
    assert stats["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert head.training  # mode restored


def test_unlabelled_rows_get_predictions_but_do_not_count(fmnist):
    train_x, train_y, val_x, val_y = fmnist
    labels = train_y[:600].clone()
    labels[::3] = -1  # a third of the images unlabelled
    cfg = ProbeConfig(epochs=2, batch_size=200)
    val_labels = val_y.clone()
    val_labels[:100] = -1
    data = ProbeData(
        feature_batches(train_x[:600].flatten(1), labels, 200, 0),
        784,
        NUM_CLASSES,
        3,
        val_features=val_x.flatten(1),
        val_labels=val_labels,
    )
    result = train_linear_probe(data, cfg)
    assert result.val_predictions.shape == (500,)
    labelled_only = evaluate_head(result.head, val_x[100:].flatten(1), val_y[100:])
    assert result.history[-1]["val_top1"] == pytest.approx(labelled_only["top1"])
    assert result.history[-1]["val_loss"] == pytest.approx(labelled_only["loss"])
    assert torch.equal(result.val_predictions[100:], labelled_only["predictions"])


def test_top5_of_fewer_than_five_classes_is_top_all():
    logits = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 3.0]])
    assert topk_correct(logits, torch.tensor([0, 1])) == [0, 2]


@pytest.mark.parametrize(
    "field,value",
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("optimizer", "adam"),
        ("base_lr", 0.0),
        ("weight_decay", -1e-4),
        ("momentum", 1.0),
        ("warmup_epochs", 41),
        ("seed", -1),
    ],
)
def test_bad_probe_config_is_a_user_error_naming_field_and_value(field, value):
    cfg = ProbeConfig(**{field: value})
    with pytest.raises(UserError, match=rf"linear\.{field}: {value!r}"):
        cfg.validate("linear")
    ProbeConfig().validate("linear")  # the defaults are valid
