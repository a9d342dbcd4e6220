"""Reference points for an online kNN figure: the same weighted kNN (k=200, T=0.1) on the same bank
and query splits, over (a) raw pixels and (b) the recipe's backbone at random initialisation.
A pretrained backbone is worth something only above both.

    .venv/bin/python benchmarks/knn_baselines.py search_spaces/simclr_fmnist.yaml [key=value ...]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from sslray.cluster import init_ray  # noqa: E402
from sslray.eval.knn import KNNConfig, knn_accuracy  # noqa: E402
from sslray.methods.registry import build_method  # noqa: E402
from sslray.recipe import load_recipe  # noqa: E402
from sslray.train.online_eval import embed_split, online_knn  # noqa: E402


class RawPixels(torch.nn.Module):
    """'Backbone' that returns the flattened normalised image."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def main() -> None:
    recipe = load_recipe(sys.argv[1], sys.argv[2:])
    init_ray(num_cpus=os.cpu_count())
    torch.manual_seed(recipe.train.seed)
    data, train = recipe.data, recipe.train
    bank, bank_labels = embed_split(RawPixels(), recipe, data.knn_bank, data.knn_bank_limit, "cpu")
    query, query_labels = embed_split(RawPixels(), recipe, data.knn_query, data.knn_query_limit, "cpu")
    pixels = knn_accuracy(bank, bank_labels, query, query_labels, cfg=KNNConfig(train.knn_k, train.knn_temperature))
    random_init = online_knn(build_method(recipe.to_dict()), recipe, torch.device("cpu"))
    print(f"kNN baselines (k={train.knn_k}, T={train.knn_temperature}, bank {len(bank)} x query {len(query)}):")
    print(f"  raw pixels:                       knn_top1 {pixels['knn_top1']:.4f}")
    print(f"  {recipe.backbone.name} at random init:   knn_top1 {random_init['knn_top1']:.4f}")


if __name__ == "__main__":
    main()
