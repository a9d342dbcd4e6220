"""Fine-tuning with 10% of the labels: pretrained checkpoints vs the same ViT at random initialisation,
side by side in one run (same labelled subset, same schedule, same val images).

    .venv/bin/python benchmarks/finetune_fmnist.py runs/eval-fmnist/simclr runs/eval-fmnist/mae \
        --data data/fmnist --label-fraction 0.1 --epochs 5 --val-limit 5000

Prints one line per fine-tuning epoch and a final table (val top-1 of each encoder and its gain over
random init). Run `bash benchmarks/eval_fmnist.sh` first for the checkpoints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sslray.cluster import init_ray, use_loopback
from sslray.eval.features import baseline_encoders, find_encoder
from sslray.eval.finetune import FinetuneConfig
from sslray.eval.protocols import EvalContext, EvalOptions, EvalSplits, run_finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", default="data/fmnist")
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--val-limit", type=int, default=5000)
    args = parser.parse_args()
    use_loopback()
    init_ray(num_cpus=2)

    encoders = [find_encoder(run) for run in args.runs]
    encoders.append(baseline_encoders(encoders[0].recipe)[0])  # random init of the same architecture
    names = [run.name for run in args.runs] + ["random init"]
    splits = EvalSplits.of(encoders[0], args.data, None, args.val_limit)
    results = []
    for name, encoder in zip(names, encoders):
        options = EvalOptions(finetune=FinetuneConfig(epochs=args.epochs, label_fraction=args.label_fraction))
        start = time.perf_counter()
        outcome = run_finetune(
            encoder,
            splits,
            options,
            EvalContext(
                on_epoch=lambda s, n=name: print(
                    f"{n}: epoch {s['epoch']}/{args.epochs}  loss {s['train_loss']:.4f}"
                    f"  train top1 {s['train_top1']:.3f}"
                    f"  val top1 {s['val_top1']:.3f}",
                    flush=True,
                )
            ),
        )
        results.append((name, outcome.result, time.perf_counter() - start))
    baseline = results[-1][1]["val_top1"]
    print(
        f"\nfine-tune, {args.label_fraction:.0%} of the labels ({results[0][1]['train_images']} images), "
        f"{args.epochs} epochs, val {results[0][1]['val_images']} images"
    )
    print(f"{'encoder':<14}{'val top1':>10}{'vs random init':>16}{'minutes':>9}")
    for name, result, seconds in results:
        print(f"{name:<14}{result['val_top1']:>10.4f}{result['val_top1'] - baseline:>+16.4f}{seconds / 60:>9.1f}")


if __name__ == "__main__":
    main()
