"""Cost of the online kNN per epoch: the kNN splits decoded once and kept (what the worker does) next to
a new Ray Data pipeline per evaluation (what it did before), side by side in one run, on the quickstart's
recipe (2-block ViT-Tiny, 28 px, bank 1,000 x queries 500), with one training epoch of the same recipe
timed as the yardstick. Goal (issue 16): an evaluation costs <= 10% of an epoch.

    .venv/bin/python benchmarks/online_eval.py [--evaluations 4] [key=value ...]

Needs `make data`. Prints seconds per evaluation for both ways (and the first evaluation now, which
decodes the crops in-process), their ratio, and each as a share of the epoch's training time (the
``seconds`` metric of ``sslray train`` on the same recipe, epoch 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from sslray.cluster import init_ray  # noqa: E402
from sslray.methods.registry import build_method  # noqa: E402
from sslray.recipe import load_recipe  # noqa: E402
from sslray.train import online_eval  # noqa: E402
from sslray.tune.space import load_space  # noqa: E402

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


def timed_evaluations(recipe, keep: bool, count: int) -> list[float]:
    """Seconds of ``count`` evaluations of one random-init network. ``keep=True``: what the worker does
    (small crops decoded in-process once, then kept); ``keep=False``: the way before, a new Ray Data
    pipeline for every evaluation."""
    kept_bytes, local_bytes = online_eval.MAX_KEPT_BYTES, online_eval.LOCAL_DECODE_BYTES
    if not keep:
        online_eval.MAX_KEPT_BYTES = online_eval.LOCAL_DECODE_BYTES = -1
    try:
        torch.manual_seed(0)
        method, online = build_method(recipe), online_eval.OnlineEval(recipe)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            online(method)
            times.append(time.perf_counter() - start)
        return times
    finally:
        online_eval.MAX_KEPT_BYTES, online_eval.LOCAL_DECODE_BYTES = kept_bytes, local_bytes


def epoch_seconds(recipe_file: Path, overrides: list[str]) -> float:
    """Training seconds of epoch 2 of ``sslray train`` on the recipe (epoch 1 is warm-up), no kNN."""
    from sslray.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        code = main(["train", str(recipe_file), "--out", str(run), "train.epochs=2", "train.knn_every=0", *overrides])
        assert code == 0, f"sslray train exited {code}"
        state = sorted(run.glob("checkpoints/*/state.json"))[-1]
        return float(json.loads(state.read_text())["history"][-1]["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the quickstart's first trial")
    args = parser.parse_args()
    init_ray(num_cpus=os.cpu_count())
    trial = load_space(QUICKSTART).first_recipe().to_dict()
    trial["method"] = {"name": "simclr", "temperature": 0.2, "proj_hidden_dim": 256, "proj_dim": 64}
    trial["optim"]["base_lr"] = 1e-3
    with tempfile.TemporaryDirectory() as tmp:
        import yaml

        recipe_file = Path(tmp) / "recipe.yaml"
        recipe_file.write_text(yaml.safe_dump(trial))
        recipe = load_recipe(recipe_file, args.overrides)
        per_pipeline = timed_evaluations(recipe, keep=False, count=args.evaluations)
        kept = timed_evaluations(recipe, keep=True, count=args.evaluations)
        epoch = epoch_seconds(recipe_file, args.overrides)
    # The first kept evaluation decodes; the later ones are what every further epoch pays.
    later, pipeline = statistics.median(kept[1:]), statistics.median(per_pipeline)
    print(
        f"recipe: quickstart's first trial as SimCLR, bank {recipe.data.knn_bank_limit} x "
        f"queries {recipe.data.knn_query_limit}, {recipe.data.augment.size} px"
    )
    print(f"epoch (training only, epoch 2):          {epoch:7.2f} s")
    print(
        f"evaluation, new pipeline each time:      {pipeline:7.2f} s  ({pipeline / epoch:.1%} of the epoch)  "
        f"[{', '.join(f'{t:.2f}' for t in per_pipeline)}]"
    )
    print(
        f"evaluation, crops kept (after the first): {later:7.2f} s  ({later / epoch:.1%} of the epoch)  "
        f"[{', '.join(f'{t:.2f}' for t in kept)}]"
    )
    print(f"first evaluation now (decodes in-process): {kept[0]:7.2f} s  ({kept[0] / epoch:.1%} of the epoch)")
    print(f"ratio kept / new pipeline:               {later / pipeline:7.3f}")


if __name__ == "__main__":
    main()
