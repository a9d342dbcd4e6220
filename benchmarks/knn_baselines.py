"""Reference points for an online kNN figure: the same weighted kNN (k=200, T=0.1) on the same bank
and query splits, over (a) raw pixels and (b) the recipe's backbone at random initialisation.
A pretrained backbone is worth something only above both.

    .venv/bin/python benchmarks/knn_baselines.py search_spaces/simclr_fmnist.yaml [key=value ...]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sslray.cluster import init_ray  # noqa: E402
from sslray.recipe import load_recipe  # noqa: E402
from sslray.train.online_eval import OnlineEval, baselines  # noqa: E402


def main() -> None:
    recipe = load_recipe(sys.argv[1], sys.argv[2:])
    init_ray(num_cpus=os.cpu_count())
    online = OnlineEval(recipe)
    found = baselines(online)
    print(f"kNN baselines ({online.describe()}):")
    print(f"  raw pixels:                       knn_top1 {found['raw-pixels']['knn_top1']:.4f}")
    print(f"  {recipe.backbone.name} at random init:   knn_top1 {found['random-init']['knn_top1']:.4f}")


if __name__ == "__main__":
    main()
