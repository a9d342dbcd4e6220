"""The measured inputs of docs/scaling.md, and the scaling model computed from them.

    .venv/bin/python benchmarks/scaling.py --out DIR                      # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/scaling.py --out DIR2 --from DIR/scaling.json --gpu-rate mae_224=3000  # model only

Writes ``DIR/scaling.json`` (every figure), ``DIR/scaling.md`` (the tables docs/scaling.md quotes) and
``DIR/scaling_cores_per_gpu.png``. Nothing is downloaded; the images are synthetic JPEGs drawn by
``benchmarks/gpu.py`` and converted with ``sslray data prepare folder``, so Ray Data decodes them for real.

What is measured here, in one process and one local Ray with every CPU core of the machine:

1. Feed: decode + augment images/s per CPU core of sslray's Ray Data pipeline (``gpu.py``'s
   ``measure_feed``: the worker's ``rank_views_dataset`` iterated with no model while a placement group
   holds the Train worker's CPU; images / CPU seconds of Ray's worker processes), for the paper recipes'
   views: SimCLR 2 x 224, MAE 1 x 224, DINO 2 x 224 + 10 x 96, and SimCLR / MAE at 32 px.
2. Steps on CPU (every core, fp32): images/s of the training step of SimCLR ResNet-50, MAE ViT-B/16 and
   DINO ViT-B/16 at 224 px (``gpu.py``'s ``plain_loop``: random uint8 views, no data loading) and of the
   evaluation forward pass (``method.embed``, one 224 px view).
3. Per image, FLOPs of the training step (forward + backward) and of the evaluation forward, counted by
   ``torch.utils.flop_counter`` on the real modules; checkpoint bytes (``write_checkpoint``, sslray's
   own) after one optimizer step of each paper recipe.
4. Bytes a batch holds in Ray's object store: the uint8 views' shapes (exact, not sampled).

What is not measured here (no GPU on this machine): images/s of a GPU. The model takes it as an input,
``--gpu-rate CASE=IMAGES_PER_S``; its default for SimCLR ResNet-50 is NVIDIA's published ResNet-50
training rate on one A100 80GB with mixed precision (2,470 img/s, DeepLearningExamples, PyTorch
ResNet50 v1.5 README, "Training performance: NVIDIA DGX A100"), halved for SimCLR's two views; the ViT
cases default to that figure scaled by the ratio of training FLOPs per image counted here, i.e. the same
GPU efficiency as ResNet-50 (an estimate; ViTs usually reach a higher share of a GPU's peak than
ResNets, so it errs low; `make bench-gpu` measures the real rate on a lent GPU, "plain img/s").
CPU step times do not stand in for GPU ones (how well each network uses a device differs by device).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import augment_throughput  # noqa: E402  (the peer: torchvision.transforms.v2 per sample)
import gpu as gpu_bench  # noqa: E402  (the GPU benchmark's data, feed and plain loop)

REPO = gpu_bench.REPO
PAPER = REPO / "search_spaces" / "paper"

# The anchor GPU rate: ResNet-50 v1.5 training, 1 x A100 80GB, mixed precision, 2,470 images/s
# (NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README). SimCLR runs the network on two views.
A100_RESNET50_AMP_IMAGES_PER_S = 2470.0
# ImageNet-1k's training JPEGs: 138 GB / 1,281,167 files (what a real feed reads from storage).
IN1K_JPEG_BYTES = 138e9 / 1_281_167
IN1K_IMAGES = 1_281_167
KNN_IMAGES = 10_000 + 2_000  # the online kNN's default bank + queries (data.knn_bank_limit, knn_query_limit)
# Ray Data's batches a Train worker holds ahead: the local shuffle buffer (4 batches) filled 1.5 times
# over by the batcher, plus the batch in use (docs/benchmarks.md, "GPU": first batch after ~7 batches).
BUFFERED_BATCHES = 7
PER_GPU_BATCH = 512  # the paper recipes' 4096 over 8 workers
# GPU machines (vCPUs, GPUs) as sold; Ray counts a vCPU as one CPU.
INSTANCES = {"p4d.24xlarge (8 x A100)": (96, 8), "p5.48xlarge (8 x H100)": (192, 8)}
ANCHOR_INSTANCE = "p4d.24xlarge (8 x A100)"  # the machine of the anchor GPU rate
DATA_NODE_VCPUS = 16  # jobs/cluster.yaml's data node: c5.4xlarge
RAY_DAEMON_CPUS = 2  # left on a GPU node for raylet, object store, agents and the Train worker's threads


@dataclass(frozen=True)
class FeedCase:
    name: str
    title: str
    recipe: Path
    view_px: int
    overrides: tuple[str, ...] = ()


FEEDS = (
    FeedCase("simclr_224", "SimCLR 2 x 224", PAPER / "simclr_in1k_resnet50.yaml", 224),
    FeedCase("mae_224", "MAE 1 x 224", PAPER / "mae_in1k_vitb16.yaml", 224),
    FeedCase("dino_224", "DINO 2 x 224 + 10 x 96", PAPER / "dino_in1k_vitb16.yaml", 224),
    FeedCase("simclr_32", "SimCLR 2 x 32", PAPER / "simclr_in1k_resnet50.yaml", 32),
    FeedCase("mae_32", "MAE 1 x 32", PAPER / "mae_in1k_vitb16.yaml", 32, ("backbone.patch_size=4",)),
)
# The cases whose training step (and so GPU rate) the model needs: the 224 px feeds.
STEPS = {"simclr_224": "SimCLR ResNet-50", "mae_224": "MAE ViT-B/16", "dino_224": "DINO ViT-B/16"}
PEER_IMAGES = {224: 128, 32: 2048}  # images the peer makes views of, per case
STEP_BATCH = {"dino_224": 4}  # images per timed CPU step (8 otherwise): DINO's 12 crops cost ~10x a SimCLR image


@dataclass(frozen=True)
class DataSize:
    images: int
    sides: tuple[int, int]
    rows_per_group: int
    batch: int
    feed_images: int
    max_seconds: float


DATA = {
    224: DataSize(images=768, sides=(256, 500), rows_per_group=32, batch=32, feed_images=512, max_seconds=60.0),
    32: DataSize(images=4096, sides=(36, 64), rows_per_group=256, batch=256, feed_images=3584, max_seconds=60.0),
}


def recipe_of(case: FeedCase, data_path: Path, batch: int, limit: int):
    from sslray.recipe import load_recipe

    return load_recipe(
        case.recipe,
        [
            *case.overrides,
            f"data.path={data_path}",
            f"data.limit={limit}",
            "data.knn_bank=null",
            "data.knn_query=null",
            f"data.augment.size={case.view_px}",
            f"backbone.img_size={case.view_px}",
            f"train.batch_size={batch}",
            "train.precision=fp32",
            "train.sync_batchnorm=false",
            "scaling.num_workers=1",
            "scaling.use_gpu=false",
        ],
    )


def peer_per_core(recipe, data_path: Path, images: int) -> float:
    """The peer: the same views made per sample by ``torchvision.transforms.v2`` from torchvision's JPEG
    decoder (``augment_throughput.EncodedImages``, the DataLoader side of that benchmark), in this
    process on one torch thread: images per CPU second, as sslray's per-core figure is."""
    files = sorted(str(f) for f in data_path.glob("*.parquet"))
    dataset = augment_throughput.EncodedImages(files, recipe.data.augment.view_specs(), recipe.data.channels)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset[0]  # first-call set-up
        count = min(images, len(dataset) - 1)
        start = time.process_time()
        for index in range(1, count + 1):
            dataset[index]
        return round(count / (time.process_time() - start), 2)
    finally:
        torch.set_num_threads(threads)


def view_bytes(recipe) -> int:
    """uint8 bytes of one image's views, as Ray Data hands them to the worker."""
    return sum(recipe.data.channels * spec.size**2 for spec in recipe.data.augment.view_specs())


def measure_steps(recipe, batch: int) -> dict:
    """Training step and eval forward images/s on every CPU core, fp32, random uint8 views."""
    from sslray.methods.registry import build_method

    sizes = gpu_bench.Sizes(
        images=0,
        sides=(0, 0),
        rows_per_group=0,
        view_size=recipe.data.augment.size,
        batch=batch,
        feed_images=0,
        feed_max_seconds=0.0,
        plain_warmup_steps=1,
        plain_min_steps=2,
        plain_min_seconds=5.0,
        epoch_seconds=0.0,
        minutes=0.0,
    )
    train = gpu_bench.plain_loop(recipe, torch.device("cpu"), sizes, gpu_bench.Budget(600.0))
    torch.manual_seed(0)
    method = build_method(recipe)
    size = recipe.data.augment.size
    images = torch.rand(2 * batch, recipe.data.channels, size, size)
    method.embed(images[:4])  # first-call set-up
    start, done = time.perf_counter(), 0
    while done < 2 * batch * 2 or time.perf_counter() - start < 5.0:
        method.embed(images)
        done += len(images)
    evaluate = done / (time.perf_counter() - start)
    return {
        "batch": batch,
        "train_images_per_s": train["images_per_s"],
        "train_step_ms": train["step_ms"],
        "eval_images_per_s": round(evaluate, 1),
        "threads": torch.get_num_threads(),
    }


def model_costs(recipe) -> dict:
    """FLOPs per image of a training step (forward + backward) and of the evaluation forward, counted by
    ``torch.utils.flop_counter`` on the real modules, and the bytes of sslray's checkpoint files after one
    optimizer step (the optimizer state exists by then)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sslray.methods.registry import build_method
    from sslray.nn.optim import build_optimizer
    from sslray.runs.checkpoint import MODEL, OPTIMIZER, write_checkpoint

    torch.manual_seed(0)
    method = build_method(recipe)
    optimizer = build_optimizer(method, recipe.optim, 2)
    views = [torch.rand(2, recipe.data.channels, spec.size, spec.size) for spec in recipe.data.augment.view_specs()]
    with FlopCounterMode(display=False) as train:
        method(views)["loss"].backward()
    optimizer.step()
    with FlopCounterMode(display=False) as evaluate:
        method.embed(views[0])
    with tempfile.TemporaryDirectory(prefix="sslray-scaling-ckpt-") as tmp:
        folder = write_checkpoint(Path(tmp) / "c", method.state_dict(), optimizer.state_dict(), {"epoch": 1})
        sizes = {name: (folder / name).stat().st_size for name in (MODEL, OPTIMIZER)}
    return {
        "train_gflops_per_image": round(train.get_total_flops() / 2 / 1e9, 2),
        "eval_gflops_per_image": round(evaluate.get_total_flops() / 2 / 1e9, 2),
        "model_bytes": sizes[MODEL],
        "optimizer_bytes": sizes[OPTIMIZER],
        "parameters": sum(p.numel() for p in method.parameters()),
    }


# ------------------------------------------------------------------ the model


def gpu_rates(report: dict, given: dict[str, float]) -> dict[str, dict]:
    """Images/s of one GPU per 224 px case: given, or the anchor scaled by training FLOPs per image."""
    costs = report["costs"]
    simclr = A100_RESNET50_AMP_IMAGES_PER_S / 2
    rates = {}
    for name in STEPS:
        if name in given:
            rates[name] = {"images_per_s": given[name], "source": "--gpu-rate"}
        elif name == "simclr_224":
            rates[name] = {
                "images_per_s": simclr,
                "source": "A100 ResNet-50 AMP 2,470 img/s (NVIDIA), halved for 2 views",
            }
        else:
            ratio = costs["simclr_224"]["train_gflops_per_image"] / costs[name]["train_gflops_per_image"]
            rates[name] = {
                "images_per_s": round(simclr * ratio, 0),
                "source": f"SimCLR's rate x {ratio:.2f}, its training FLOPs per image / this one's (estimate)",
            }
    return rates


def model(report: dict, rates: dict[str, dict]) -> dict:
    """Cores, nodes, bytes and bandwidth per GPU and per 8-GPU node, for each 224 px case."""
    out = {}
    for name in STEPS:
        feed = report["feed"][name]
        rate = rates[name]["images_per_s"]
        cores = rate / feed["images_per_s_per_cpu"]
        batch_bytes = PER_GPU_BATCH * feed["view_bytes"]
        costs = report["costs"][name]
        # Online kNN (rank 0 alone, the other ranks wait): bank + queries forward passes on one GPU at
        # the same FLOP rate as training, against an IN-1k epoch on 8 GPUs.
        eval_s = KNN_IMAGES * costs["eval_gflops_per_image"] / (rate * costs["train_gflops_per_image"])
        eval_share = eval_s / (IN1K_IMAGES / (8 * rate))
        row = {
            "gpu_images_per_s": rate,
            "cores_per_gpu": round(cores, 1),
            "batch_bytes": batch_bytes,
            "object_store_bytes_per_worker": BUFFERED_BATCHES * batch_bytes,
            "storage_read_bytes_per_s_per_gpu": round(rate * IN1K_JPEG_BYTES),
            "knn_share_of_in1k_epoch": round(eval_share, 5),
            "in1k_epoch_s_on_8_gpus": round(IN1K_IMAGES / (8 * rate), 1),
            "checkpoint_bytes": report["costs"][name]["model_bytes"] + report["costs"][name]["optimizer_bytes"],
            "instances": {},
        }
        for instance, (vcpus, gpus) in INSTANCES.items():
            if instance != ANCHOR_INSTANCE:
                continue  # the GPU rates are an A100's; the plot shows the other machines' spare CPUs
            spare = vcpus - gpus - RAY_DAEMON_CPUS  # one CPU per Train worker, the daemons' share
            short = gpus * cores - spare
            row["instances"][instance] = {
                "data_cpus_needed": round(gpus * cores, 1),
                "spare_cpus_on_node": spare,
                "data_nodes_per_gpu_node": round(max(0.0, short) / DATA_NODE_VCPUS, 2),
            }
        out[name] = row
    return out


# ------------------------------------------------------------------ output


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    rates = torch.logspace(2, 4, 50).tolist()  # 100 .. 10,000 images/s per GPU
    for name, colour in zip(STEPS, ("tab:blue", "tab:orange", "tab:green")):
        per_core = report["feed"][name]["images_per_s_per_cpu"]
        ax.plot(rates, [r / per_core for r in rates], color=colour, label=report["feed"][name]["title"])
        at = report["model"][name]
        ax.plot([at["gpu_images_per_s"]], [at["cores_per_gpu"]], "o", color=colour)
        ax.annotate(
            f"{at['cores_per_gpu']:.0f}",
            (at["gpu_images_per_s"], at["cores_per_gpu"]),
            textcoords="offset points",
            xytext=(6, -12),
            color=colour,
        )
    for instance, (vcpus, gpus) in INSTANCES.items():
        per_gpu = (vcpus - gpus - RAY_DAEMON_CPUS) / gpus
        ax.axhline(per_gpu, color="grey", linestyle="--", linewidth=1)
        ax.text(110, per_gpu * 1.06, f"{instance}: {per_gpu:.1f} spare vCPUs per GPU", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images/s of one GPU (training step)")
    ax.set_ylabel("CPU cores to decode + augment for it")
    ax.set_title(
        "CPU cores one GPU needs for its feed (per-core rates measured here; dots: the model's GPU rates)", fontsize=9
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {report['machine']}",
        "",
        "| feed | views | sslray img/s per CPU core | peer: transforms.v2 per sample | sslray / peer "
        "| Ray Data CPUs kept busy | JPEG KB | uint8 view bytes per image |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, feed in report["feed"].items():
        lines.append(
            f"| {name} | {feed['title']} | {feed['images_per_s_per_cpu']:,.1f} | "
            f"{feed['peer_images_per_s_per_cpu']:,.1f} | "
            f"{feed['images_per_s_per_cpu'] / feed['peer_images_per_s_per_cpu']:.2f}x | {feed['cpus_busy']:.2f} of "
            f"{feed['ray_data_cpus']:g} | {feed['jpeg_kb']:.1f} | {feed['view_bytes']:,} |"
        )
    lines += [
        "",
        "| step (CPU, fp32, all cores) | batch | train img/s | eval-forward img/s | eval / train speed "
        "| train / eval GFLOPs per image | checkpoint MB (model + optimizer) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, title in STEPS.items():
        s, c = report["steps"][name], report["costs"][name]
        lines.append(
            f"| {title} | {s['batch']} | {s['train_images_per_s']:.2f} | {s['eval_images_per_s']:.1f} | "
            f"{s['eval_images_per_s'] / s['train_images_per_s']:.1f}x | "
            f"{c['train_gflops_per_image']:.1f} / {c['eval_gflops_per_image']:.1f} | "
            f"{c['model_bytes'] / 1e6:.0f} + {c['optimizer_bytes'] / 1e6:.0f} |"
        )
    lines += [
        "",
        "| case | GPU img/s (source) | cores per GPU | batch of 512 in the object store | per worker (7 batches) "
        "| storage reads per GPU (IN-1k JPEGs) | IN-1k epoch on 8 GPUs | online kNN per IN-1k epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in report["model"].items():
        lines.append(
            f"| {STEPS[name]} | {m['gpu_images_per_s']:,.0f} ({report['gpu_rates'][name]['source']}) | "
            f"{m['cores_per_gpu']:.1f} | {m['batch_bytes'] / 1e6:.0f} MB | "
            f"{m['object_store_bytes_per_worker'] / 1e9:.2f} GB | "
            f"{m['storage_read_bytes_per_s_per_gpu'] / 1e6:.0f} MB/s | {m['in1k_epoch_s_on_8_gpus']:.0f} s | "
            f"{100 * m['knn_share_of_in1k_epoch']:.2f}% |"
        )
    lines += [
        "",
        "| case | machine | data CPUs needed | spare CPUs on the GPU node | 16-vCPU data nodes per GPU node |",
    ]
    lines.append("|---|---|---:|---:|---:|")
    for name, m in report["model"].items():
        for instance, i in m["instances"].items():
            lines.append(
                f"| {STEPS[name]} | {instance} | {i['data_cpus_needed']:.0f} | {i['spare_cpus_on_node']} | "
                f"{i['data_nodes_per_gpu_node']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for scaling.json/.md/.png (new or empty)")
    parser.add_argument(
        "--from",
        dest="from_json",
        type=Path,
        help="an earlier run's scaling.json: recompute the model (e.g. with --gpu-rate) without measuring again",
    )
    parser.add_argument(
        "--gpu-rate",
        action="append",
        default=[],
        metavar="CASE=IMAGES_PER_S",
        help=f"images/s of one GPU for a case ({', '.join(STEPS)}), e.g. from `make bench-gpu`",
    )
    args = parser.parse_args()
    rates = {}
    for item in args.gpu_rate:
        name, _, value = item.partition("=")
        try:
            rates[name] = float(value)
        except ValueError:
            parser.error(f"--gpu-rate {item}: expected CASE=IMAGES_PER_S")
        if name not in STEPS or rates[name] <= 0:
            parser.error(f"--gpu-rate {item}: CASE is one of {', '.join(STEPS)} and the rate > 0")
    args.gpu_rate = rates
    if args.from_json is not None and not args.from_json.is_file():
        parser.error(f"--from: {args.from_json} is not a file")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out: {args.out} already exists and is not empty; choose a new folder")
    return args


def measure() -> dict:
    """Every measured input (feed, peer, steps, costs): ~5 min on 2 CPU cores."""
    from sslray.cluster import init_ray, use_loopback

    use_loopback()
    import ray

    from sslray.data.pipeline import open_prepared

    report: dict = {
        "machine": f"{os.cpu_count()} CPU cores ({cpu_model()}), "
        f"torch {torch.__version__}, ray {ray.__version__}, load average {os.getloadavg()[0]:.1f} at the start",
        "feed": {},
        "steps": {},
        "costs": {},
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sslray-scaling-") as tmp:
        prepared = {}
        for px, size in DATA.items():
            sizes = gpu_bench.Sizes(
                images=size.images,
                sides=size.sides,
                rows_per_group=size.rows_per_group,
                view_size=px,
                batch=size.batch,
                feed_images=size.feed_images,
                feed_max_seconds=size.max_seconds,
                plain_warmup_steps=0,
                plain_min_steps=0,
                plain_min_seconds=0.0,
                epoch_seconds=0.0,
                minutes=0.0,
            )
            root = Path(tmp) / f"px{px}"
            root.mkdir()
            path, info = gpu_bench.make_dataset(root, sizes)
            prepared[px] = (path, open_prepared(str(path)), info)
        init_ray(num_cpus=os.cpu_count())
        for case in FEEDS:
            size = DATA[case.view_px]
            path, table, info = prepared[case.view_px]
            recipe = recipe_of(case, path, size.batch, table.num_rows)
            feed = gpu_bench.measure_feed(
                recipe, table, 1.0, 2 * size.rows_per_group, size.feed_images, size.max_seconds
            )
            feed.update(title=case.title, jpeg_kb=info["mean_kb"], view_bytes=view_bytes(recipe))
            report["feed"][case.name] = feed
            print(f"feed {case.name}: {feed}", flush=True)
        ray.shutdown()
        for case in FEEDS:
            feed = report["feed"][case.name]
            recipe = recipe_of(case, prepared[case.view_px][0], DATA[case.view_px].batch, 1)
            feed["peer_images_per_s_per_cpu"] = peer_per_core(
                recipe, prepared[case.view_px][0], PEER_IMAGES[case.view_px]
            )
            print(f"peer {case.name}: {feed['peer_images_per_s_per_cpu']} img/s per CPU core", flush=True)
        torch.set_num_threads(os.cpu_count() or 1)
        for case in FEEDS:
            if case.name not in STEPS:
                continue
            path, table, _ = prepared[case.view_px]
            batch = STEP_BATCH.get(case.name, 8)
            recipe = recipe_of(case, path, batch, table.num_rows)
            report["steps"][case.name] = measure_steps(recipe, batch)
            report["costs"][case.name] = model_costs(recipe)
            print(f"step {case.name}: {report['steps'][case.name]} {report['costs'][case.name]}", flush=True)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    return report


def main() -> int:
    args = parse_args()
    report = json.loads(args.from_json.read_text()) if args.from_json else measure()
    args.out.mkdir(parents=True, exist_ok=True)
    report["gpu_rates"] = gpu_rates(report, args.gpu_rate)
    report["model"] = model(report, report["gpu_rates"])
    (args.out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "scaling.md").write_text(text)
    plot(report, args.out / "scaling_cores_per_gpu.png")
    print(text)
    print(f"results: {args.out / 'scaling.json'}, {args.out / 'scaling.md'}, {args.out / 'scaling_cores_per_gpu.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
