"""Images/s of sslray's Ray Data augmentation pipeline vs a torch DataLoader with per-sample
torchvision.transforms.v2, on the same prepared Fashion-MNIST shards, the same view recipe and the same
number of CPUs, measured side by side in one run (interleaved repeats, best of each).

    .venv/bin/python benchmarks/augment_throughput.py [--images 20000] [--cpus 2] [--channels 3]

Both sides decode the same PNG bytes with the same decoder and make the same two SimCLR-style views
(random resized crop, flip, colour jitter p=0.8, grayscale p=0.2, blur p=0.5) as uint8; each timed pass
covers the whole dataset, pipeline start-up included (``ray.init`` excluded: it happens once per job).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms.v2 as T  # noqa: E402
from torchvision.io import ImageReadMode, decode_image  # noqa: E402

from sslray.cluster import init_ray  # noqa: E402
from sslray.data.augment import AugmentConfig, ViewSpec  # noqa: E402
from sslray.data.pipeline import EpochViews, MapTasks, open_prepared, views_dataset  # noqa: E402
from sslray.data.shards import ShardOptions, prepare  # noqa: E402

BATCH = 256


def per_sample_transform(spec: ViewSpec) -> T.Compose:
    """The torchvision.transforms.v2 pipeline equivalent to one ``ViewSpec``."""
    kernel = max(3, int(0.1 * spec.size) // 2 * 2 + 1)
    return T.Compose(
        [
            T.RandomResizedCrop(spec.size, scale=spec.scale, ratio=spec.ratio, antialias=True),
            T.RandomHorizontalFlip(spec.flip_p),
            T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p),
            T.RandomGrayscale(spec.gray_p),
            T.RandomApply([T.GaussianBlur(kernel, spec.blur_sigma)], p=spec.blur_p),
            T.RandomSolarize(128, spec.solarize_p),
        ]
    )


class EncodedImages(torch.utils.data.Dataset):
    def __init__(self, files: list[str], specs: list[ViewSpec], channels: int):
        self.images = [b for f in files for b in pq.read_table(f, columns=["image"])["image"].to_pylist()]
        self.labels = [x for f in files for x in pq.read_table(f, columns=["label"])["label"].to_pylist()]
        self.transforms = [per_sample_transform(s) for s in specs]
        self.mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(torch.frombuffer(bytearray(self.images[i]), dtype=torch.uint8), mode=self.mode)
        views = {f"view_{v}": t(image) for v, t in enumerate(self.transforms)}
        views["label"] = self.labels[i]
        return views


def time_pass(batches) -> tuple[float, int]:
    start = time.perf_counter()
    count = 0
    checksum = 0
    for batch in batches:
        count += len(batch["label"])
        checksum += int(batch["view_0"][:, 0, 0, 0].sum())  # touch the data like a consumer would
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--recipe", default="simclr", choices=["simclr", "byol", "mae"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    specs = AugmentConfig(recipe=args.recipe, size=args.size).view_specs()
    with tempfile.TemporaryDirectory() as tmp:
        prepare(
            "fashion-mnist",
            tmp,
            split="train",
            limit=args.images,
            options=ShardOptions(rows_per_shard=2_000, log=lambda m: None),
        )
        path = os.path.join(tmp, "train")
        files = open_prepared(path).files
        init_ray(num_cpus=args.cpus)
        loader = torch.utils.data.DataLoader(
            EncodedImages(files, specs, args.channels),
            batch_size=BATCH,
            num_workers=args.cpus,
            persistent_workers=False,
        )
        results = {"dataloader": [], "ray": []}
        for _ in range(args.repeats):
            results["dataloader"].append(time_pass(loader))
            ds = views_dataset(path, EpochViews(specs, channels=args.channels), MapTasks(batch_size=BATCH))
            results["ray"].append(time_pass(ds.iter_torch_batches(batch_size=BATCH)))

    rate = {k: max(n / s for s, n in runs) for k, runs in results.items()}
    assert all(n == args.images for runs in results.values() for _, n in runs), results
    print(
        f"augment throughput: Fashion-MNIST {args.images:,} images, recipe {args.recipe} "
        f"({len(specs)} views, {args.size} px, {args.channels} ch), {args.cpus} CPUs, best of {args.repeats}"
    )
    print(f"  torch DataLoader + per-sample transforms.v2 ({args.cpus} workers): {rate['dataloader']:>9,.0f} img/s")
    print(f"  sslray Ray Data, batched per-sample transforms ({args.cpus} CPUs): {rate['ray']:>9,.0f} img/s")
    print(f"  ratio sslray / DataLoader: {rate['ray'] / rate['dataloader']:.2f}x")


if __name__ == "__main__":
    main()
