"""What sslray finds on a 2-core CPU in a fixed budget, next to a random network and raw pixels
(issue 16, goals a-d). Each goal runs alone, in its own sitting, and writes
``benchmarks/results/cpu_budget_<goal>.json`` and ``docs/img/cpu_budget_<goal>.png``:

    .venv/bin/python benchmarks/cpu_budget.py quickstart   # a: `make sweep` <= 10 min, winner >= random init + 0.10
    .venv/bin/python benchmarks/cpu_budget.py simclr       # b: a 20-minute SimCLR run, kNN under the peer's protocol
    .venv/bin/python benchmarks/cpu_budget.py long         # c: a 60-minute run of the sweep's best vs raw pixels
    .venv/bin/python benchmarks/cpu_budget.py methods      # d: 8 methods, each swept for 10 min, one table

While a goal runs, the machine's CPU use is sampled from /proc/stat every second (all processes:
Ray, its workers and data tasks together), so "CPUs busy" is what the machine did, not what Ray booked.
The kNN protocol of b is the peer's (lightly's SimCLR, ResNet-18, plain loop on this machine: 0.779 after
20 min): k=200, T=0.1, bank = the first 10,000 train images, queries = the first 2,000 test images.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"
SSLRAY = [sys.executable, "-m", "sslray.cli"]
PEER = {"knn_top1": 0.779, "random_init": 0.735}  # lightly SimCLR ResNet-18, 20 min, same protocol
SIMCLR_20 = "search_spaces/simclr_fmnist_cpu.yaml"  # goal b: the quickstart's winner on all train images


class CpuSampler:
    """Share of all CPUs busy (not idle, not waiting on I/O), sampled from /proc/stat every second."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (seconds since start, busy share of that second)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def _run(self) -> None:
        start, (busy0, total0) = time.perf_counter(), self._read()
        while not self._stop.wait(1.0):
            busy, total = self._read()
            if total > total0:
                self.samples.append((time.perf_counter() - start, (busy - busy0) / (total - total0)))
            busy0, total0 = busy, total

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(b for _, b in self.samples) / max(1, len(self.samples))


def run(command: list[str]) -> float:
    """Run ``command`` with its output on this console; its wall seconds. A failure ends the benchmark."""
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - start


def trial_epochs(trial_dir: Path) -> list[dict]:
    """The epochs' metrics of a sweep's trial folder (Tune's result.json: one JSON object per report)."""
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def run_epochs(run_dir: Path) -> list[dict]:
    """The epochs' metrics of a `sslray train` run: the history in its latest checkpoint."""
    from sslray.runs.checkpoint import find_checkpoint, read_state

    return read_state(find_checkpoint(run_dir))["history"]


def train_once(out: Path, command: list[str]) -> float:
    """Train with ``command`` unless ``out`` already holds a finished run (then only its results are
    read again); the wall seconds of the training, as measured then."""
    summary = ROOT / out / "result.json"
    if not summary.is_file():
        return run(command)
    print(f"{out} holds a finished run: reading its results")
    return json.loads(summary.read_text())["minutes"] * 60


def quickstart(args: argparse.Namespace) -> dict:
    """Goal a: the quickstart sweep as `make sweep` runs it, its CPU use, baselines and eval cost."""
    out = Path(args.out or f"sweeps/bench-cpu-budget-{time.strftime('%Y%m%d-%H%M%S')}")
    with CpuSampler() as cpu:
        wall = run([*SSLRAY, "sweep", "search_spaces/quickstart.yaml", "--out", str(out)])
    metric, trials, baselines = read_leaderboard(ROOT / out)
    epochs = [e for r in trials for e in trial_epochs(ROOT / out / r["trial"]) if e.get("seconds")]
    eval_ratios = [e["eval_seconds"] / e["seconds"] for e in epochs]
    best = max(float(r[metric]) for r in trials)
    result = {
        "goal": "a",
        "sweep": str(out),
        "wall_min": wall / 60,
        "cpu_busy": cpu.mean,
        "best": best,
        "best_trial": trials[0]["trial"],
        "baselines": baselines,
        "over_random_init": best - baselines["random-init"],
        "vs_raw_pixels": best - baselines["raw-pixels"],
        "eval_over_epoch_mean": sum(eval_ratios) / len(eval_ratios),
        "eval_over_epoch_sum": sum(e["eval_seconds"] for e in epochs) / sum(e["seconds"] for e in epochs),
        "epochs": len(epochs),
        "trials": len(trials),
        "cpu_samples": cpu.samples,
    }
    checks = [
        ("make sweep wall time", f"{result['wall_min']:.1f} min", "<= 10 min", result["wall_min"] <= 10),
        (
            "winner over random init",
            f"{result['over_random_init']:+.3f}",
            ">= +0.10",
            result["over_random_init"] >= 0.10,
        ),
        ("CPUs busy (mean)", f"{cpu.mean:.0%}", ">= 85%", cpu.mean >= 0.85),
        (
            "eval_s / epoch_s (mean)",
            f"{result['eval_over_epoch_mean']:.3f}",
            "<= 0.10",
            result["eval_over_epoch_mean"] <= 0.10,
        ),
    ]
    print(
        f"\nquickstart: {metric} {best:.4f} ({trials[0]['trial']}); random init "
        f"{baselines['random-init']:.4f}, raw pixels {baselines['raw-pixels']:.4f}"
    )
    report(checks)
    plot_cpu(cpu.samples, f"make sweep: CPUs busy, mean {cpu.mean:.0%}", IMAGES / "cpu_budget_quickstart.png")
    return result


def simclr(args: argparse.Namespace) -> dict:
    """Goal b: one SimCLR run of ``--epochs`` sized to ~20 min here, kNN on the peer's protocol each epoch."""
    out = Path(args.out or f"runs/bench-simclr-{time.strftime('%Y%m%d-%H%M%S')}")
    overrides = [f"train.epochs={args.epochs}", *args.overrides]
    with CpuSampler() as cpu:
        wall = train_once(out, [*SSLRAY, "train", SIMCLR_20, "--out", str(out), *overrides])
    epochs = run_epochs(ROOT / out)
    baselines_out = subprocess.run(
        [sys.executable, "benchmarks/knn_baselines.py", SIMCLR_20, *overrides],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    values = [float(line.split()[-1]) for line in baselines_out.splitlines() if "knn_top1" in line]
    baselines = {"raw-pixels": values[0], "random-init": values[1]}
    best = max(e["knn_top1"] for e in epochs)
    result = {
        "goal": "b",
        "run": str(out),
        "wall_min": wall / 60,
        "cpu_busy": cpu.mean,
        "best": best,
        "curve": [e.get("knn_top1") for e in epochs],
        "baselines": baselines,
        "overrides": overrides,
    }
    print(
        f"\nsimclr: best knn_top1 {best:.4f} in {wall / 60:.1f} min; random init {baselines['random-init']:.4f}, "
        f"raw pixels {baselines['raw-pixels']:.4f}; the peer: {PEER['knn_top1']} after 20 min"
    )
    plot_knn_curve(epochs, baselines, f"20-minute SimCLR on 2 CPU cores: {best:.3f}", IMAGES / "cpu_budget_simclr.png")
    report(
        [
            ("wall time", f"{wall / 60:.1f} min", "<= 20 min", wall / 60 <= 20),
            ("kNN (peer's protocol)", f"{best:.3f}", ">= 0.80", best >= 0.80),
        ]
    )
    return result


FULL_SPLITS = [  # goal c's evaluation: the full 60k/10k splits, kNN k=5 as the Fashion-MNIST benchmark's 85.5%
    "--data", "data/fmnist", "--train-limit", "all", "--val-limit", "all", "--k", "5", "--temperature", "0.07",
]  # fmt: skip


def long_run(args: argparse.Namespace) -> dict:
    """Goal c: the sweep's best recipe for ~60 min on all train images, then `sslray report` on the full
    splits: kNN (k=5) and a linear probe of its best checkpoint next to random init and raw pixels."""
    out = Path(args.out or f"runs/bench-long-{time.strftime('%Y%m%d-%H%M%S')}")
    overrides = [f"train.epochs={args.epochs}", *args.overrides]
    with CpuSampler() as cpu:
        wall = train_once(out, [*SSLRAY, "train", args.recipe, "--out", str(out), *overrides])
    run([*SSLRAY, "report", str(out), *FULL_SPLITS, "--out", str(out / "report-full")])
    rows = {r["name"]: r for r in json.loads((ROOT / out / "report-full" / "results.json").read_text())["rows"]}
    model = next(r for name, r in rows.items() if name not in ("random init", "raw pixels"))
    raw, random_init = rows["raw pixels"], rows["random init"]
    result = {"goal": "c", "run": str(out), "wall_min": wall / 60, "cpu_busy": cpu.mean, "rows": rows}
    print(
        f"\nlong run ({wall / 60:.1f} min): kNN {model['knn top1']:.4f}, linear {model['linear val top1']:.4f}; "
        f"raw pixels {raw['knn top1']:.4f} / {raw['linear val top1']:.4f}; "
        f"random init {random_init['knn top1']:.4f} / {random_init['linear val top1']:.4f}"
    )
    report([
        ("linear probe vs raw pixels", f"{model['linear val top1'] - raw['linear val top1']:+.3f}", "> 0",
         model["linear val top1"] > raw["linear val top1"]),
        ("kNN (k=5, full splits)", f"{model['knn top1']:.3f}", ">= 0.855", model["knn top1"] >= 0.855),
    ])  # fmt: skip
    return result


METHODS_CPU = ["simclr", "moco_v2", "moco_v3", "byol", "simsiam", "dino", "mae", "macrl"]  # goal d's eight
BASELINES = ("random init", "raw pixels")


def read_leaderboard(sweep: Path) -> tuple[str, list[dict], dict[str, float]]:
    """A sweep's metric column, its trials (best first) and its baselines, from leaderboard.csv."""
    with open(sweep / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    metric = next(key for key in rows[0] if key.startswith("best ") and key != "best epoch")
    trials = [r for r in rows if r["status"] != "baseline"]
    baselines = {r["trial"]: float(r[metric]) for r in rows if r["status"] == "baseline"}
    return metric, trials, baselines


def sweep_once(space: str, out: Path) -> dict:
    """Run the sweep ``space`` into ``out`` unless ``out`` holds a finished one (a leaderboard); its wall
    minutes and CPU use as measured when it ran (kept in ``out/bench.json``)."""
    measured = ROOT / out / "bench.json"
    if (ROOT / out / "leaderboard.csv").is_file() and measured.is_file():
        print(f"{out} holds a finished sweep: reading its results")
        return json.loads(measured.read_text())
    overwrite = ["--overwrite"] if (ROOT / out).exists() else []  # an unfinished sweep of an earlier sitting
    with CpuSampler() as cpu:
        wall = run([*SSLRAY, "sweep", space, "--out", str(out), *overwrite])
    result = {"wall_min": wall / 60, "cpu_busy": cpu.mean}
    measured.write_text(json.dumps(result) + "\n")
    return result


def methods(args: argparse.Namespace) -> dict:
    """Goal d: each method's space (search_spaces/methods_cpu/) swept for at most 10 minutes
    (tune.time_budget_s: 600, search included), picking on val; then one `sslray report` per backbone on
    the winners' best checkpoints: kNN (k=200, T=0.1, the full 60k train bank, 10k test queries) and a
    linear probe (full splits), next to that backbone's random init and raw pixels. Re-running skips
    finished sweeps, so the eight can be spread over sittings (``--only simclr moco_v2``)."""
    root = Path(args.out)
    chosen = args.only or METHODS_CPU
    swept = {}
    for name in chosen:
        out = root / name
        try:
            measured = sweep_once(f"search_spaces/methods_cpu/{name}.yaml", out)
        except subprocess.CalledProcessError as error:  # one method's failure leaves the others to run
            print(f"{name}: the sweep failed (exit {error.returncode}); see {out}")
            continue
        metric, trials, baselines = read_leaderboard(ROOT / out)
        best = trials[0]
        swept[name] = {
            **measured,
            "sweep": str(out),
            "best_trial": best["trial"],
            "online_best": float(best[metric]),
            "online_baselines": baselines,
            "trials": len(trials),
            "knobs": {k: v for k, v in best.items() if "." in k and v not in ("", "-")},
        }
        print(f"{name}: online {metric} {float(best[metric]):.4f} ({best['trial']}) in {measured['wall_min']:.1f} min")
    if args.sweeps_only:
        return {"goal": "d", "methods": swept}
    rows = {}
    for backbone, names in winners_by_backbone(root, swept).items():
        report_dir = root / f"report-{backbone}"
        results = ROOT / report_dir / "results.json"
        reported = {r["name"] for r in json.loads(results.read_text())["rows"]} if results.is_file() else set()
        if not set(names) <= reported:  # not yet, or before some of these methods were swept
            run(
                [
                    *SSLRAY,
                    "report",
                    str(root / f"best-{backbone}"),
                    *REPORT_FULL,
                    "--out",
                    str(report_dir),
                    "--overwrite",
                ]
            )
        for row in json.loads((ROOT / report_dir / "results.json").read_text())["rows"]:
            key = row["name"] if row["name"] not in BASELINES else f"{row['name']} ({backbone})"
            rows[key] = row
    result = {"goal": "d", "methods": swept, "rows": rows}
    print_methods_table(swept, rows)
    plot_methods(swept, rows, IMAGES / "cpu_budget_methods.png")
    return result


REPORT_FULL = [
    "--data",
    "data/fmnist",
    "--train-limit",
    "all",
    "--val-limit",
    "all",
    "--k",
    "200",
    "--temperature",
    "0.1",
]


def winners_by_backbone(root: Path, swept: dict) -> dict[str, list[str]]:
    """Link each method's best trial as ``root/best-<backbone>/<method>``, so that one report per backbone
    compares the winners with that backbone's random init (a report's baselines use its first run's)."""
    import yaml

    groups: dict[str, list[str]] = {}
    for name, entry in swept.items():
        trial = ROOT / entry["sweep"] / entry["best_trial"]
        backbone = yaml.safe_load((ROOT / entry["sweep"] / "space.yaml").read_text())["backbone"]["name"]
        link = ROOT / root / f"best-{backbone}" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and link.resolve() != trial.resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(trial)
        groups.setdefault(backbone, []).append(name)
    return groups


def print_methods_table(swept: dict, rows: dict) -> None:
    print(f"\n{'method':<26} {'sweep min':>9} {'online kNN':>10} {'kNN top1':>9} {'linear top1':>11}")
    for name, row in rows.items():
        entry = swept.get(name, {})
        minutes = f"{entry['wall_min']:.1f}" if entry else "-"
        online = f"{entry['online_best']:.3f}" if entry else "-"
        print(f"{name:<26} {minutes:>9} {online:>10} {row['knn top1']:>9.3f} {row['linear val top1']:>11.3f}")


def plot_methods(swept: dict, rows: dict, path: Path) -> None:
    """kNN and linear probe of each method's winner as bars, each backbone's baselines as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows if n in swept]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, column, title in zip(axes, ("knn top1", "linear val top1"), ("kNN top-1 (k=200)", "linear probe top-1")):
        ax.bar(range(len(names)), [rows[n][column] for n in names], color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        for (key, row), style in zip(
            ((k, r) for k, r in rows.items() if k not in swept), ("--", ":", "-.", (0, (1, 3)))
        ):
            ax.axhline(row[column], ls=style, c="grey", lw=1, label=f"{key} {row[column]:.3f}")
        ax.set(title=title, ylim=(0.5, 0.95))
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("Fashion-MNIST test top-1")
    fig.suptitle("Each method swept for 10 minutes on 2 CPU cores; its winner on the full splits", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path.relative_to(ROOT)}")


def report(checks: list[tuple[str, str, str, bool]]) -> None:
    print(f"\n{'goal':<28} {'measured':>10}  {'target':<10} verdict")
    for name, measured, target, ok in checks:
        print(f"{name:<28} {measured:>10}  {target:<10} {'met' if ok else 'MISSED'}")


def plot_knn_curve(epochs: list[dict], baselines: dict, title: str, path: Path) -> None:
    """kNN after each epoch against minutes of training, the baselines dashed and the peer's point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes, elapsed = [], 0.0
    for epoch in epochs:
        elapsed += epoch["seconds"] + epoch.get("eval_seconds", 0.0)
        minutes.append(elapsed / 60)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(minutes, [e["knn_top1"] for e in epochs], marker="o", ms=3, label="sslray SimCLR, ResNet-10-T w32")
    for (name, value), style in zip(sorted(baselines.items()), ("--", ":")):
        ax.axhline(value, ls=style, c="grey", lw=1, label=f"{name} {value:.3f}")
    ax.plot([20], [PEER["knn_top1"]], marker="*", ms=12, ls="", c="C3", label="peer: lightly SimCLR R-18, 20 min")
    ax.axhline(0.80, ls="-", c="C2", lw=0.6, label="goal 0.80")
    ax.set(xlabel="minutes of training", ylabel="kNN top-1 (k=200, 10k bank, 2k test)", title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path.relative_to(ROOT)}")


def plot_cpu(samples: list[tuple[float, float]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot([t / 60 for t, _ in samples], [100 * b for _, b in samples], lw=0.8)
    ax.axhline(85, ls="--", c="grey", lw=0.8, label="goal 85%")
    ax.set(xlabel="minutes", ylabel="CPUs busy (%)", ylim=(0, 105), title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    goals = parser.add_subparsers(dest="goal", required=True)
    goal_a = goals.add_parser("quickstart", help="goal a: the quickstart sweep")
    goal_a.add_argument("--out")
    goal_b = goals.add_parser("simclr", help="goal b: a 20-minute SimCLR run")
    goal_b.add_argument("--out")
    goal_b.add_argument("--epochs", type=int, default=18, help="18: ~20 min on the 2-core machine")
    goal_b.add_argument("overrides", nargs="*", help=f"key=value overrides of {SIMCLR_20}")
    goal_c = goals.add_parser("long", help="goal c: a 60-minute run of the sweep's best recipe, full-split report")
    goal_c.add_argument("--out")
    goal_c.add_argument("--recipe", default=SIMCLR_20, help="the best recipe a sweep found (best.yaml)")
    goal_c.add_argument("--epochs", type=int, default=54, help="54: ~60 min for the default recipe here")
    goal_c.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    goal_d = goals.add_parser("methods", help="goal d: each method swept for 10 minutes, one table with baselines")
    goal_d.add_argument("--out", default="sweeps/bench-methods", help="one sweep folder per method under it")
    goal_d.add_argument("--only", nargs="+", choices=METHODS_CPU, help="these methods (default: all eight)")
    goal_d.add_argument("--sweeps-only", action="store_true", help="run the sweeps, leave the report for later")
    args = parser.parse_args()
    result = {"quickstart": quickstart, "simclr": simclr, "long": long_run, "methods": methods}[args.goal](args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"cpu_budget_{args.goal}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {(RESULTS / f'cpu_budget_{args.goal}.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
