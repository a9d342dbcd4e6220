"""The quickstart sweep (``make sweep``), measured: wall time, trials run / stopped early, best kNN
top-1, and where each trial's time goes, side by side with the same trial's time inside its epochs.

    .venv/bin/python benchmarks/sweep_quickstart.py [--space search_spaces/quickstart.yaml] [--out DIR]

Per trial (from Tune's own results and the epochs' reported ``seconds`` / ``eval_seconds``):
    total_s    the trial's wall time as Tune counts it (``time_total_s``)
    epochs_s   time inside its epochs: training steps (incl. waiting for Ray Data) + online kNN
    in_trial   total_s - epochs_s: model build, checkpoints, reports inside the trial
    ratio      total_s / epochs_s (1.00 = no overhead)
Sweep-level Ray overhead per trial: (Tuner.fit wall time - sum of total_s) / trials, which covers
starting each trial's process and Tune's bookkeeping (trials run one at a time on 2 CPUs, so the
sum of trial times is the part of the wall time that was training).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sslray.cluster import use_loopback

use_loopback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="search_spaces/quickstart.yaml")
    parser.add_argument("--out", default=f"sweeps/bench-quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()

    from sslray.cluster import init_ray
    from sslray.tune.space import load_space
    from sslray.tune.sweep import run_sweep

    start = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - start
    space = load_space(args.space)
    fit_start = time.perf_counter()
    rows = run_sweep(space, Path(args.out))
    fit_wall = time.perf_counter() - fit_start
    wall = time.perf_counter() - start

    print(f"\n{'trial':<22} {'status':<28} {'epochs':>6} {'total_s':>8} {'epochs_s':>8} {'in_trial':>8} {'ratio':>6}")
    totals = []
    for row in rows:
        results = [json.loads(line) for line in (Path(row["path"]) / "result.json").read_text().splitlines() if line]
        total = results[-1]["time_total_s"] if results else 0.0
        inside = sum(r.get("seconds", 0.0) + r.get("eval_seconds", 0.0) for r in results)
        totals.append(total)
        ratio = f"{total / inside:6.2f}" if inside else "     -"
        print(
            f"{row['trial']:<22} {row['status'][:28]:<28} {row['epochs']:>6} {total:8.1f} {inside:8.1f} "
            f"{total - inside:8.1f} {ratio}"
        )
    stopped = sum(r["status"].startswith("stopped early") for r in rows)
    best = rows[0]["best"] if rows else None
    print(f"\nwall time {wall / 60:.1f} min (ray.init {ray_start:.1f} s, Tuner.fit {fit_wall / 60:.1f} min)")
    print(
        f"trials {len(rows)}, stopped early by ASHA {stopped}, best {space.tune.metric} {best:.4f} ({rows[0]['trial']})"
    )
    print(
        f"Ray overhead per trial outside the trials: {(fit_wall - sum(totals)) / max(1, len(rows)):.1f} s "
        f"(Tuner.fit {fit_wall:.0f} s - trials {sum(totals):.0f} s, over {len(rows)} trials)"
    )


if __name__ == "__main__":
    main()
