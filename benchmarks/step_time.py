"""ms per training step of each sslray method next to a plain reference implementation of the same math.

Usage:  .venv/bin/python benchmarks/step_time.py [--repeats 7] [--warmup 2] [--threads 2] [--only NAME]

Each case (see ``step_time_cases_contrastive.py`` and ``step_time_cases_masked.py``) gives two makers
that build a model, optimizer and fixed inputs and return a one-step function (forward + backward +
optimizer step + EMA update). The two step functions run interleaved (their order alternating each
repeat, so drifts in machine load hit both alike), and the table reports the median ms per step of
each and their ratio sslray / reference; the goal is <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script from anywhere

from step_time_cases_contrastive import CASES as CONTRASTIVE_CASES  # noqa: E402

try:
    from step_time_cases_masked import CASES as MASKED_CASES  # noqa: E402
except ImportError as err:
    MASKED_CASES = []
    print(f"note: masked-method cases not available ({err}); timing the contrastive cases only")


def time_pair(make_sslray, make_reference, repeats: int, warmup: int) -> tuple[float, float]:
    torch.manual_seed(0)
    steps = {"sslray": make_sslray(), "reference": make_reference()}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in range(repeats):
        order = list(steps) if repeat % 2 == 0 else list(reversed(steps))
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["sslray"]) * 1e3, statistics.median(times["reference"]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} interleaved repeats "
        f"after {args.warmup} warm-up steps"
    )
    print(f"| {'case':<30} | {'sslray ms':>10} | {'reference ms':>12} | {'ratio':>6} |")
    print(f"|{'-' * 32}|{'-' * 12}:|{'-' * 14}:|{'-' * 8}:|")
    for name, make_sslray, make_reference in CONTRASTIVE_CASES + MASKED_CASES:
        if args.only not in name:
            continue
        ours, reference = time_pair(make_sslray, make_reference, args.repeats, args.warmup)
        print(f"| {name:<30} | {ours:>10.1f} | {reference:>12.1f} | {ours / reference:>6.3f} |", flush=True)


if __name__ == "__main__":
    main()
