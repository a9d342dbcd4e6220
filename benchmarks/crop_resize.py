"""Crop + resize of sslray's views, two ways side by side on the same decoded images, the same boxes and
one thread: the batched float ``roi_align`` (``batched_transforms.crop_and_resize``, the only way until
``PER_IMAGE_CROP_MIN_SIZE`` existed) and torchvision's ``resized_crop`` image by image on uint8
(``batched_transforms.resized_crops``); then a whole SimCLR view (crop, flip, jitter, grayscale, blur)
made each way (``augment.crop_views`` picks the faster one by view size from what this prints), and
MAE's crop-and-flip view through the float path and through ``render_view``'s uint8 shortcut.

    .venv/bin/python benchmarks/crop_resize.py [--fmnist data/fmnist/train]

Cases: Fashion-MNIST (28 px, 1 channel: `make data` prepares it), synthetic JPEGs of 36-64 px made into
32 px views and of 256-500 px made into 224 px views (drawn by ``benchmarks/gpu.py``). Timings are CPU
seconds of this process (``time.process_time``), best of 3 interleaved repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu as gpu_bench  # noqa: E402  (synthetic JPEGs)

from sslray.data import augment as A  # noqa: E402
from sslray.data import batched_transforms as BT  # noqa: E402
from sslray.data.augment import AugmentConfig, ViewSpec  # noqa: E402
from sslray.data.pipeline import SHRINK_FACTOR, _columns, first_rows, open_prepared  # noqa: E402

REPEATS = 3
CROPS = {  # uint8 images, boxes, size -> float views in [0, 1]
    "batched": lambda images, boxes, size: BT.crop_and_resize(images.float().div_(255), boxes, size),
    "per_image": lambda images, boxes, size: BT.resized_crops(images, boxes, size).float().div_(255),
}


def render_view_by(way: str, images, sizes, spec: ViewSpec, ids) -> torch.Tensor:
    """``augment.render_view`` with its crop+resize forced one way (its size threshold moved for the call)."""
    threshold = BT.PER_IMAGE_CROP_MIN_SIZE
    BT.PER_IMAGE_CROP_MIN_SIZE = 0 if way == "per_image" else 1 << 30
    try:
        return A.render_view(images, sizes, spec, BT.PerSampleRandom(BT.sample_keys(ids, 0, 0, 0)))
    finally:
        BT.PER_IMAGE_CROP_MIN_SIZE = threshold


def best_ms_per_image(functions: dict, images: int) -> dict[str, float]:
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(REPEATS):
        for name, function in functions.items():
            start = time.process_time()
            function()
            best[name] = min(best[name], time.process_time() - start)
    return {name: seconds / images * 1e3 for name, seconds in best.items()}


def case(title: str, prepared_path: Path, rows: int, size: int, channels: int) -> dict:
    table = next(first_rows(open_prepared(str(prepared_path)), rows))
    encoded, _, ids = _columns(table)
    images, sizes = A.decode_images(encoded, channels, SHRINK_FACTOR * size)
    spec = ViewSpec(size=size)  # SimCLR's view (Chen et al., 2020)
    boxes = BT.random_resized_crop_boxes(
        BT.PerSampleRandom(BT.sample_keys(ids, 0, 0, 0)), sizes[:, 0], sizes[:, 1], spec.scale, spec.ratio
    )
    crop = best_ms_per_image({way: lambda f=f: f(images, boxes, size) for way, f in CROPS.items()}, len(images))
    view = best_ms_per_image(
        {way: lambda way=way: render_view_by(way, images, sizes, spec, ids) for way in CROPS}, len(images)
    )
    old, new = (f(images, boxes, size) for f in CROPS.values())
    # MAE's view (crop + flip, no colour op) through the float path (a colour op at p ~ 0 forces it) and
    # through render_view's uint8 shortcut, which is what sslray takes from PER_IMAGE_CROP_MIN_SIZE up.
    (mae,) = AugmentConfig(recipe="mae", size=size).view_specs()
    mae_view = best_ms_per_image(
        {
            "float path": lambda: A.render_view(
                images,
                sizes,
                dataclasses.replace(mae, jitter_p=1e-12),
                BT.PerSampleRandom(BT.sample_keys(ids, 0, 0, 0)),
            ),
            "sslray": lambda: A.render_view(images, sizes, mae, BT.PerSampleRandom(BT.sample_keys(ids, 0, 0, 0))),
        },
        len(images),
    )
    return {
        "mae_view": mae_view,
        "title": title,
        "images": len(images),
        "crop": crop,
        "view": view,
        "mean_abs_diff_grey_levels": float((old - new).abs().mean() * 255),
        "uses": "per image" if size >= BT.PER_IMAGE_CROP_MIN_SIZE else "batched",
    }


def synthetic(root: Path, sides: tuple[int, int], images: int, rows: int) -> Path:
    sizes = gpu_bench.Sizes(images, sides, rows, 0, 0, 0, 0.0, 0, 0, 0.0, 0.0, 0.0)
    path, _ = gpu_bench.make_dataset(root, sizes)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fmnist", type=Path, default=Path("data/fmnist/train"), help="prepared Fashion-MNIST")
    args = parser.parse_args()
    if not (args.fmnist / "dataset.json").exists():
        print(f"crop_resize.py: --fmnist {args.fmnist}: no prepared dataset there; run `make data`", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sslray-crop-bench-") as tmp:
        small = Path(tmp) / "small"
        large = Path(tmp) / "large"
        small.mkdir()
        large.mkdir()
        rows.append(case("Fashion-MNIST -> 28 px, 1 ch", args.fmnist, 1024, 28, 1))
        rows.append(case("JPEG 36-64 px -> 32 px, 3 ch", synthetic(small, (36, 64), 1024, 1024), 1024, 32, 3))
        rows.append(case("JPEG 256-500 px -> 224 px, 3 ch", synthetic(large, (256, 500), 64, 64), 64, 224, 3))
    print("\nms per image, one thread, best of 3 (batched = float roi_align, per image = uint8 resized_crop)")
    print(
        "| images | batch | crop+resize: batched | per image | per image faster by | whole SimCLR view: batched "
        "| per image | faster by | mean abs diff (grey levels) | sslray uses |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        c, v = r["crop"], r["view"]
        print(
            f"| {r['title']} | {r['images']} | {c['batched']:.3f} | {c['per_image']:.3f} | "
            f"{c['batched'] / c['per_image']:.2f}x | {v['batched']:.3f} | {v['per_image']:.3f} | "
            f"{v['batched'] / v['per_image']:.2f}x | {r['mean_abs_diff_grey_levels']:.2f} | {r['uses']} |"
        )
    print("\nMAE's view (crop + flip), ms per image: through the float path, and as sslray renders it")
    print("| images | float path | sslray | faster by |")
    print("|---|---:|---:|---:|")
    for r in rows:
        m = r["mae_view"]
        print(f"| {r['title']} | {m['float path']:.3f} | {m['sslray']:.3f} | {m['float path'] / m['sslray']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
