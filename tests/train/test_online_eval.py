"""Online evaluation on the real local Ray and real Fashion-MNIST: the kNN splits are decoded once per
run and kept (no Ray Data pipeline per epoch), and the baselines run the same protocol."""

from __future__ import annotations

import shutil

import pytest
import torch

from sslray.methods.registry import build_method
from sslray.recipe import recipe_from_dict
from sslray.train import online_eval
from sslray.train.online_eval import OnlineEval, baselines

from ..conftest import tiny_recipe


def test_the_knn_splits_are_decoded_once_and_kept(ray_local, tiny_fmnist, tmp_path):
    data = tmp_path / "fmnist"
    shutil.copytree(tiny_fmnist, data)
    recipe = recipe_from_dict(tiny_recipe(data))
    online = OnlineEval(recipe)
    torch.manual_seed(0)
    method = build_method(recipe)
    first = online(method)
    assert 0.0 <= first["knn_top1"] <= first["knn_top5"] <= 1.0 and first["embed_std"] > 0
    shutil.rmtree(data)  # a new Ray Data pipeline would fail now: the next evaluation must not need one
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.mul_(0.5)  # a changed network: the kept images are embedded again, not old features reused
    second = online(method)
    assert online.decodes == 1
    bank, query = online.splits()
    assert bank.images.dtype == torch.uint8 and bank.images.shape == (256, 1, 16, 16) and len(query.labels) == 128
    assert second["embed_std"] != first["embed_std"]


def test_baselines_are_the_online_protocol_on_random_init_and_raw_pixels(ray_local, tiny_fmnist):
    recipe = recipe_from_dict(tiny_recipe(tiny_fmnist, linear_probe_epochs=3))
    online = OnlineEval(recipe)
    found = baselines(online, linear_probe=True)
    assert set(found) == {"random-init", "raw-pixels"}
    for metrics in found.values():
        # 10 classes, 256 bank images: both are far above chance (0.1), and neither is perfect.
        assert 0.3 < metrics["knn_top1"] < 1.0 and 0.0 <= metrics["linear_top1"] <= 1.0
    # Raw pixels are the normalised crops themselves: embed_std of L2-normalised 256-d pixel vectors.
    assert online.decodes == 1  # both baselines from one decode of the splits
    query = online.normalizer.to_float(online.splits()[1].images).flatten(1)
    expected = torch.nn.functional.normalize(query, dim=1).std(dim=0).mean()
    assert found["raw-pixels"]["embed_std"] == pytest.approx(float(expected), abs=1e-5)
    assert (
        baselines(OnlineEval(recipe), linear_probe=True)["random-init"] == found["random-init"]
    )  # seeded: reproducible


def test_small_splits_are_decoded_in_process_exactly_as_ray_data_decodes_them(ray_local, tiny_fmnist, monkeypatch):
    """The first N crops in file order either way: in-process (small sets) or one Ray Data pass (large)."""
    recipe = recipe_from_dict(tiny_recipe(tiny_fmnist))
    here = online_eval.decode_split(recipe, str(tiny_fmnist / "train"), 200)
    monkeypatch.setattr(online_eval, "LOCAL_DECODE_BYTES", 0)  # every split counts as large
    by_ray_data = online_eval.decode_split(recipe, str(tiny_fmnist / "train"), 200)
    assert here.images.shape == (200, 1, 16, 16) and here.images.dtype == torch.uint8
    assert torch.equal(here.images, by_ray_data.images) and torch.equal(here.labels, by_ray_data.labels)


def test_hparams_carry_best_epoch_of_best_and_last():
    """A run that peaks before its last epoch: HParams shows the last value and the best with its epoch."""
    from sslray.train.reporting import hparams_metrics

    history = [
        {"epoch": 1, "loss": 3.0, "knn_top1": 0.40},
        {"epoch": 2, "loss": 2.5, "knn_top1": 0.52},
        {"epoch": 3, "loss": 2.1, "knn_top1": 0.52},  # a tie keeps the earlier epoch
        {"epoch": 4, "loss": 2.0, "knn_top1": 0.47},
    ]
    metrics = hparams_metrics(history)
    assert metrics["knn_top1"] == 0.47 and metrics["loss"] == 2.0
    assert (metrics["best_knn_top1"], metrics["best_epoch_knn_top1"]) == (0.52, 2.0)
    assert "best_loss" not in metrics and "best_linear_top1" not in metrics
