"""Memory of the quickstart (issue 8): peak RSS of the driver and of every Ray process by role, and the
trial worker's RSS at the end of each epoch (growth across epochs), next to a reference process
measured in the same run.

    .venv/bin/python benchmarks/memory.py [--workload train|sweep] [--epochs 6] [--interval 0.5]
        [--pss-every 4] [--results benchmarks/results/memory] [--keep]

Workloads (each a real ``sslray sweep`` subprocess that starts its own local Ray on 127.0.0.1, with
``--out`` in a temporary folder, deleted afterwards unless ``--keep``):
    train   one trial of ``search_spaces/quickstart.yaml`` fixed to MACRL, FIFO, ``--epochs`` epochs
            (``method.name=macrl tune.num_samples=1 tune.scheduler=fifo train.epochs=N``; 4-7 min);
    sweep   the quickstart sweep unchanged (8 trials, ASHA; ~8 min on 2 idle CPUs, more under load).

What is measured
    Every ``--interval`` seconds, with psutil: the RSS of the driver (the ``sslray sweep`` process) and
    of each of its descendants, i.e. the local Ray it started (raylet, gcs_server, dashboard and its
    agents, and the worker processes the raylet forks). Each process is given a role from its command
    line / process title at that moment (a Ray worker's title changes: ``ray::IDLE``, then a Data task
    such as ``ray::MapBatches(row_group_views)``, then ``ray::IDLE`` again; a
    Tune trial is ``ray::ImplicitFunc.train``). Every ``--pss-every`` samples the PSS of each process is
    read too (``/proc/PID/smaps_rollup``, ~3 ms a process): the sum of PSS is what the whole run costs
    the machine, since RSS counts the shared torch/ray libraries once per process.
    Per epoch: each line Tune appends to ``<out>/<trial>/result.json`` (one per reported epoch, with the
    trial's ``pid`` and the report's ``timestamp``, whole seconds) is picked up at the next sample. The
    epoch's end RSS is that pid's RSS in the last sample taken before the report's timestamp (0-1.5 s
    before the report: after the epoch's training steps and its online kNN, before the next epoch's
    steps); its peak and lowest RSS during the epoch come from the samples since its previous report.
    Peak values swing by +-50 MB with the moment a sample catches (each batch allocates and frees its
    activations); the end RSS (what stays allocated between epochs) is the growth signal.
    Growth = value at the last epoch - value at epoch 2 (epoch 1 holds the warm-up allocations), also
    per epoch, within one process (a trial restarted in a new process is flagged).
    Reference, measured in the same run before the workload: a plain Python process that imports
    torch, ray and timm and does nothing else (what any worker costs before it works). Each role's
    peak is printed in MB and as a ratio to the reference's RSS.

Output: a table on stdout; ``memory_<workload>.json`` (figures, epochs, titles seen per role, the time
series), ``memory_<workload>.png`` (RSS over time per role with epoch markers, and each trial
worker's RSS with its epoch ends) and ``driver_<workload>.log`` (the driver's output) in ``--results``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
SPACE = "search_spaces/quickstart.yaml"
DATA = REPO / "data" / "fmnist"
MB = 2**20

# (role, pattern on the command line / process title), first match wins. Ray workers are matched by the
# title Ray gives them (setproctitle), daemons by their executable or script at the start of the command
# line (the raylet's own command line names the agents' scripts in its arguments).
PYTHON_SCRIPT = r"^\S*python[\d.]*\s+(-\S+\s+)*\S*"
ROLES: list[tuple[str, str]] = [
    ("trial worker", r"^ray::(ImplicitFunc|RayTrainWorker|TrainTrainable)"),
    (
        "Ray Train/Tune actors",
        r"^ray::(TrainController|SynchronizationActor|DatasetManager|PreemptionWatcher|"
        r"PlacementGroupCleaner|TrainStateActor|_TrainSession)",
    ),
    ("Ray Data stats actor", r"^ray::_StatsActor"),
    ("Ray Data autoscaler", r"^ray::(_AutoscalingCoordinatorActor|AutoscalingRequester)"),
    ("Ray Data footer readers", r"^ray::FooterReader"),
    ("Ray Data coordinators", r"^ray::\w*Coordinator"),
    (
        "Ray Data tasks",
        r"^ray::(ListFiles|slice_fn|.*(Read|Map|Filter|Write|Split|Shuffle|Repartition|Sort|"
        r"Aggregate|Limit|Zip|Union))",
    ),
    ("idle Ray workers", r"^ray::IDLE"),
    ("dashboard agent", r"^ray::DashboardAgent|" + PYTHON_SCRIPT + r"dashboard/agent\.py"),
    ("runtime env agent", r"^ray::RuntimeEnvAgent|" + PYTHON_SCRIPT + r"runtime_env/agent/main\.py"),
    ("other Ray workers", r"^ray::"),
    (
        "starting Ray workers",
        PYTHON_SCRIPT + r"_private/workers/(default|setup)_worker\.py|"
        r"^bash -c exec \S+ \S*default_worker\.py",
    ),  # before Ray retitles them
    ("raylet", r"^\S*/raylet(\s|$)"),
    ("gcs_server", r"^\S*/gcs_server(\s|$)"),
    # the dashboard's head modules run in processes forked from its multiprocessing forkserver
    ("dashboard", PYTHON_SCRIPT + r"dashboard/dashboard\.py|^ray-dashboard-|ray\.dashboard\.subprocesses"),
    ("log monitor", PYTHON_SCRIPT + r"_private/log_monitor\.py"),
    ("autoscaler monitor", PYTHON_SCRIPT + r"autoscaler/_private/monitor\.py"),
    ("resource tracker (mp)", r"multiprocessing\.resource_tracker"),  # here: the dashboard's
    ("other processes", r""),
]
ROLE_ORDER = ["driver"] + [role for role, _ in ROLES]
RAY_DAEMONS = {
    "raylet",
    "gcs_server",
    "dashboard",
    "dashboard agent",
    "runtime env agent",
    "log monitor",
    "autoscaler monitor",
    "resource tracker (mp)",
}

REFERENCE_CODE = (
    "import json, platform, psutil, ray, timm, torch\n"
    "m = psutil.Process().memory_full_info()\n"
    "print(json.dumps({'rss': m.rss, 'uss': m.uss, 'pss': m.pss, 'torch': torch.__version__,\n"
    "                  'ray': ray.__version__, 'timm': timm.__version__, 'python': platform.python_version()}))\n"
)


@dataclass
class ProcessSample:
    pid: int
    role: str
    title: str
    rss: int
    pss: int | None


@dataclass
class Snapshot:
    t: float  # seconds since the driver started
    wall: float  # time.time(), to match Tune's result timestamps
    processes: list[ProcessSample]


@dataclass
class EpochMark:
    trial: str
    epoch: int
    pid: int  # the trial's process (result.json "pid")
    t: float  # when the result line was seen
    reported: float  # the result's "timestamp" (time.time() of the report, whole seconds)
    rss: int | None  # the trial process's RSS in the last sample before `reported`
    peak_rss: int | None  # its peak RSS since its previous report (or since it got the trial)
    min_rss: int | None  # its lowest RSS over the same samples
    driver_rss: int | None  # the driver's RSS in the latest sample when the line was seen
    role_rss: dict[str, int]  # each role's summed RSS in that sample


@dataclass
class Recording:
    snapshots: list[Snapshot] = field(default_factory=list)
    epochs: list[EpochMark] = field(default_factory=list)
    returncode: int | None = None
    wall_s: float = 0.0


# ------------------------------------------------------------------ workload


def workload_command(workload: str, epochs: int, out: Path) -> list[str]:
    sslray = Path(sys.executable).parent / "sslray"
    overrides = (
        []
        if workload == "sweep"
        else ["method.name=macrl", "tune.num_samples=1", "tune.scheduler=fifo", f"train.epochs={epochs}"]
    )
    return [str(sslray), "sweep", SPACE, *overrides, "--out", str(out)]


def workload_env() -> dict[str, str]:
    """The driver starts its own local Ray on 127.0.0.1, never joins one given by RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def start_driver(command: list[str], log_path: Path) -> subprocess.Popen:
    driver = subprocess.Popen(
        command, cwd=REPO, env=workload_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    threading.Thread(target=copy_driver_output, args=(driver.stdout, log_path), daemon=True).start()
    return driver


def copy_driver_output(stream, log_path: Path) -> None:
    """The driver's output into the log; its epoch lines also to stdout, to follow progress."""
    with open(log_path, "w") as log:
        for line in stream:
            log.write(line)
            log.flush()
            if re.search(r"epoch \d+/\d+", line):
                print("  driver: " + line.rstrip(), flush=True)


def measure_reference() -> dict:
    """RSS/USS/PSS of a plain Python process after ``import torch, ray, timm``, and the versions."""
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE_CODE], capture_output=True, text=True, check=True, env=workload_env()
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ sampling


def role_of(title: str) -> str:
    return next(role for role, pattern in ROLES if re.search(pattern, title))


def process_title(process: psutil.Process) -> str:
    """A Ray worker's title is its first argv entry (``ray::IDLE``); a daemon's whole command line."""
    argv = process.cmdline()
    if argv and argv[0].startswith("ray::"):
        return argv[0].strip()
    return " ".join(argv) or process.name()


def sample_process(process: psutil.Process, role: str | None, with_pss: bool) -> ProcessSample | None:
    try:
        with process.oneshot():
            title = process_title(process)
            if with_pss:
                info = process.memory_full_info()
                rss, pss = info.rss, info.pss
            else:
                rss, pss = process.memory_info().rss, None
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None  # exited between listing and reading
    if rss == 0:
        return None  # exiting: its memory is already released
    return ProcessSample(process.pid, role or role_of(title), title, rss, pss)


def take_snapshot(driver: psutil.Process, t: float, with_pss: bool) -> Snapshot:
    wall = time.time()
    try:
        descendants = driver.children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    samples = [sample_process(driver, "driver", with_pss)]
    samples += [sample_process(p, None, with_pss) for p in descendants]
    return Snapshot(t, wall, [s for s in samples if s is not None])


def new_result_lines(out: Path, consumed: dict[Path, int]) -> list[tuple[str, dict]]:
    """Complete lines appended to any ``<out>/<trial>/result.json`` since the last call."""
    found = []
    for path in sorted(out.glob("*/result.json")):
        text = path.read_text()
        end = text.rfind("\n") + 1  # a line still being written is read next time
        start = consumed.get(path, 0)
        if end > start:
            found += [(path.parent.name, json.loads(line)) for line in text[start:end].splitlines() if line.strip()]
            consumed[path] = end
    return found


def latest_rss(snapshots: list[Snapshot], pid: int) -> int | None:
    for snapshot in reversed(snapshots):
        for p in snapshot.processes:
            if p.pid == pid:
                return p.rss
    return None


def role_sums(snapshot: Snapshot) -> dict[str, int]:
    sums: dict[str, int] = {}
    for p in snapshot.processes:
        sums[p.role] = sums.get(p.role, 0) + p.rss
    return sums


def rss_between(snapshots: list[Snapshot], pid: int, after: float, until: float) -> list[int]:
    """The RSS samples of ``pid`` taken in (after, until] (wall clock) while it was a trial worker, i.e.
    not before Ray gave it the trial."""
    return [
        p.rss
        for s in snapshots
        if after < s.wall <= until
        for p in s.processes
        if p.pid == pid and p.role == "trial worker"
    ]


def mark_epoch(recording: Recording, trial: str, result: dict, t: float, driver_pid: int) -> EpochMark:
    """The epoch a result line reports: the trial process's RSS in the last sample before the report
    (``timestamp``: the next epoch has usually started by the time the line is seen), and its peak and
    lowest RSS since the previous report of the same process."""
    pid, reported = result["pid"], float(result["timestamp"])
    previous = [m.reported for m in recording.epochs if m.trial == trial and m.pid == pid]
    during = rss_between(recording.snapshots, pid, previous[-1] if previous else 0.0, reported)
    mark = EpochMark(
        trial,
        result["epoch"],
        pid,
        t,
        reported,
        during[-1] if during else latest_rss(recording.snapshots, pid),
        max(during, default=None),
        min(during, default=None),
        latest_rss(recording.snapshots, driver_pid),
        role_sums(recording.snapshots[-1]),
    )
    recording.epochs.append(mark)
    return mark


def monitor(driver_popen: subprocess.Popen, out: Path, interval: float, pss_every: int) -> Recording:
    """Sample the driver's process tree until the driver exits; mark each reported epoch."""
    driver = psutil.Process(driver_popen.pid)
    recording, consumed, start, index = Recording(), {}, time.monotonic(), 0
    while driver_popen.poll() is None:
        tick = time.monotonic()
        recording.snapshots.append(take_snapshot(driver, tick - start, with_pss=index % pss_every == 0))
        for trial, result in new_result_lines(out, consumed):
            mark = mark_epoch(recording, trial, result, tick - start, driver.pid)
            print(
                f"  memory: {trial} epoch {mark.epoch}: trial process {mark.pid} RSS {mb(mark.rss)} MB "
                f"(in the epoch: peak {mb(mark.peak_rss)}, min {mb(mark.min_rss)}), driver {mb(mark.driver_rss)} MB",
                flush=True,
            )
        index += 1
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    recording.returncode = driver_popen.wait()
    recording.wall_s = time.monotonic() - start
    return recording


# ------------------------------------------------------------------ figures


def mb(value: int | float | None) -> str:
    return "-" if value is None else f"{value / MB:.0f}"


def role_figures(recording: Recording, reference_rss: int) -> list[dict]:
    """Per role: distinct processes, peak single-process RSS (x reference), peak of the role's summed
    RSS at one moment, and the role's summed PSS peak where sampled."""
    rows = []
    for role in ROLE_ORDER:
        per_snapshot = [[p for p in s.processes if p.role == role] for s in recording.snapshots]
        present = [ps for ps in per_snapshot if ps]
        if not present:
            continue
        peak = max(p.rss for ps in present for p in ps)
        pss_sums = [sum(p.pss for p in ps) for ps in present if all(p.pss is not None for p in ps)]
        rows.append(
            {
                "role": role,
                "processes": len({p.pid for ps in present for p in ps}),
                "max_concurrent": max(len(ps) for ps in present),
                "peak_rss_mb": peak / MB,
                "x_reference": peak / reference_rss,
                "peak_role_rss_sum_mb": max(sum(p.rss for p in ps) for ps in present) / MB,
                "peak_role_pss_sum_mb": max(pss_sums) / MB if pss_sums else None,
                "titles": sorted({p.title[:120] for ps in present for p in ps}),
            }
        )
    return rows


def totals(recording: Recording) -> dict:
    """Peak over time of the summed RSS and summed PSS of the driver and all its Ray processes."""
    rss = [sum(p.rss for p in s.processes) for s in recording.snapshots]
    pss = [
        sum(p.pss for p in s.processes)
        for s in recording.snapshots
        if s.processes and all(p.pss is not None for p in s.processes)
    ]
    processes = [len(s.processes) for s in recording.snapshots]
    return {
        "peak_rss_sum_mb": max(rss) / MB,
        "peak_pss_sum_mb": max(pss) / MB if pss else None,
        "max_processes": max(processes),
        "samples": len(recording.snapshots),
    }


def growth(marks: list[EpochMark], attribute: str) -> dict | None:
    """RSS at the last epoch minus RSS at epoch 2 (or the first epoch after a restart), in MB and MB per
    epoch, within one process: the one that ran the most epochs (needs >= 3 epochs, 2 in that process)."""
    by_pid: dict[int, list[EpochMark]] = {}
    for m in marks:
        by_pid.setdefault(m.pid, []).append(m)
    longest = max(by_pid.values(), key=len)
    by_epoch = {m.epoch: getattr(m, attribute) for m in longest if getattr(m, attribute) is not None}
    first, last = max(2, min(by_epoch, default=0)), max(by_epoch, default=0)
    if last < 3 or last - first < 1 or first not in by_epoch:
        return None
    total = (by_epoch[last] - by_epoch[first]) / MB
    return {
        "pid": longest[0].pid,
        "from_epoch": first,
        "to_epoch": last,
        "mb": total,
        "mb_per_epoch": total / (last - first),
    }


def trial_figures(recording: Recording) -> list[dict]:
    rows = []
    for trial in dict.fromkeys(m.trial for m in recording.epochs):
        marks = [m for m in recording.epochs if m.trial == trial]
        rows.append(
            {
                "trial": trial,
                "pids": sorted({m.pid for m in marks}),
                "epochs": [asdict(m) for m in marks],
                "rss_mb_per_epoch": [None if m.rss is None else m.rss / MB for m in marks],
                "peak_rss_mb_per_epoch": [None if m.peak_rss is None else m.peak_rss / MB for m in marks],
                "min_rss_mb_per_epoch": [None if m.min_rss is None else m.min_rss / MB for m in marks],
                "driver_rss_mb_per_epoch": [None if m.driver_rss is None else m.driver_rss / MB for m in marks],
                "growth": growth(marks, "rss"),
                "growth_of_epoch_peaks": growth(marks, "peak_rss"),
                "growth_of_epoch_minima": growth(marks, "min_rss"),
                "driver_growth": growth(marks, "driver_rss"),
            }
        )
    return rows


def describe_growth(g: dict | None) -> str:
    if g is None:
        return "- (< 3 epochs in one process)"
    return f"{g['mb']:+.1f} MB (epoch {g['from_epoch']}->{g['to_epoch']}), {g['mb_per_epoch']:+.1f} MB/epoch"


# ------------------------------------------------------------------ report


def run_wide(recording: Recording) -> dict:
    """Each role's summed RSS (MB) when the first and the last epoch of the whole run were seen. Roles
    whose processes come and go (Data tasks, idle workers, footer readers) depend on the moment."""
    first, last = recording.epochs[0], recording.epochs[-1]
    roles = [r for r in ROLE_ORDER if r in first.role_rss or r in last.role_rss]
    return {
        "first": {"trial": first.trial, "epoch": first.epoch, "t": first.t},
        "last": {"trial": last.trial, "epoch": last.epoch, "t": last.t},
        "rss_mb": {r: [first.role_rss.get(r, 0) / MB, last.role_rss.get(r, 0) / MB] for r in roles},
        "ray_daemons_mb": [
            sum(first.role_rss.get(r, 0) for r in RAY_DAEMONS) / MB,
            sum(last.role_rss.get(r, 0) for r in RAY_DAEMONS) / MB,
        ],
    }


def print_report(reference: dict, roles: list[dict], trials: list[dict], total: dict, span: dict) -> None:
    print(
        f"\nreference: python + import torch, ray, timm: RSS {mb(reference['rss'])} MB "
        f"(USS {mb(reference['uss'])}, PSS {mb(reference['pss'])})"
    )
    print(
        f"\n{'role':<24}{'procs':>6}{'at once':>8}{'peak RSS MB':>12}{'x ref':>7}{'role sum MB':>12}{'role PSS MB':>12}"
    )
    for r in roles:
        pss = "-" if r["peak_role_pss_sum_mb"] is None else f"{r['peak_role_pss_sum_mb']:.0f}"
        print(
            f"{r['role']:<24}{r['processes']:>6}{r['max_concurrent']:>8}{r['peak_rss_mb']:>12.0f}"
            f"{r['x_reference']:>7.2f}{r['peak_role_rss_sum_mb']:>12.0f}{pss:>12}"
        )
    pss_total = "-" if total["peak_pss_sum_mb"] is None else f"{total['peak_pss_sum_mb']:.0f}"
    print(
        f"{'all (driver + Ray)':<24}{'':>6}{total['max_processes']:>8}{'':>12}{'':>7}"
        f"{total['peak_rss_sum_mb']:>12.0f}{pss_total:>12}"
    )
    print(
        "\n(peak RSS: the largest single process of the role; role sum: the role's processes added at one"
        " moment; PSS: shared pages split between the processes that map them, sampled less often)"
    )
    for t in trials:
        series = " ".join(f"e{m['epoch']}:{mb(m['rss'])}" for m in t["epochs"])
        peaks = " ".join(f"e{m['epoch']}:{mb(m['peak_rss'])}" for m in t["epochs"])
        minima = " ".join(f"e{m['epoch']}:{mb(m['min_rss'])}" for m in t["epochs"])
        drivers = " ".join(f"e{m['epoch']}:{mb(m['driver_rss'])}" for m in t["epochs"])
        print(f"\ntrial {t['trial']} (pid {', '.join(map(str, t['pids']))})")
        if len(t["pids"]) > 1:
            restarts = [m["epoch"] for a, m in zip(t["epochs"], t["epochs"][1:]) if m["pid"] != a["pid"]]
            print(
                f"  NOTE: the trial restarted in a new process (reported epoch {', '.join(map(str, restarts))}); "
                "growth is measured within the process that ran the most epochs"
            )
        print(f"  trial worker RSS at epoch end, MB:   {series}")
        print(f"  trial worker peak RSS in epoch, MB:  {peaks}")
        print(f"  trial worker lowest RSS in epoch, MB: {minima}")
        print(f"  driver RSS at epoch end, MB:         {drivers}")
        print(
            f"  growth of the trial worker: at epoch end {describe_growth(t['growth'])}; "
            f"of epoch peaks {describe_growth(t['growth_of_epoch_peaks'])}; "
            f"of epoch minima {describe_growth(t['growth_of_epoch_minima'])}"
        )
        print(f"  growth of the driver: {describe_growth(t['driver_growth'])}")
    first, last = span["first"], span["last"]
    print(
        f"\nsummed RSS per role (MB) when the first epoch was seen ({first['trial']} e{first['epoch']}, "
        f"{first['t']:.0f} s) and the last ({last['trial']} e{last['epoch']}, {last['t']:.0f} s):"
    )
    for role, (before, after) in [*span["rss_mb"].items(), ("Ray daemons together", span["ray_daemons_mb"])]:
        print(f"  {role:<24}{before:>8.0f}{after:>8.0f}{after - before:>+8.0f}")


def report_t(recording: Recording, mark: EpochMark) -> float:
    """When an epoch was reported, in seconds since the driver started (Tune's timestamp, whole seconds)."""
    first = recording.snapshots[0]
    return mark.reported - (first.wall - first.t)


def plot(recording: Recording, reference: dict, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 8), sharex=True)
    times = [s.t for s in recording.snapshots]
    roles = [role for role in ROLE_ORDER if role not in RAY_DAEMONS]
    colors = [*plt.get_cmap("tab10").colors, "gold", "navy"]  # one per role, the same in every plot
    for role, color in zip(roles, colors):
        series = [sum(p.rss for p in s.processes if p.role == role) / MB for s in recording.snapshots]
        if any(series):
            top.plot(times, series, label=role, linewidth=1.2, color=color)
    daemons = [sum(p.rss for p in s.processes if p.role in RAY_DAEMONS) / MB for s in recording.snapshots]
    top.plot(times, daemons, label="Ray daemons (raylet, gcs, dashboard, agents)", linewidth=1.2, color="black")
    top.axhline(
        reference["rss"] / MB,
        color="grey",
        linestyle="--",
        linewidth=1,
        label="reference: python + import torch, ray, timm",
    )
    top.set_ylabel("RSS, summed over the role's processes (MB)")
    top.set_title(title)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for trial in dict.fromkeys(m.trial for m in recording.epochs):
        marks = [m for m in recording.epochs if m.trial == trial]
        pids = {m.pid for m in marks}
        series = [(s.t, p.rss / MB) for s in recording.snapshots for p in s.processes if p.pid in pids]
        (line,) = bottom.plot([t for t, _ in series], [r for _, r in series], linewidth=1, label=trial)
        bottom.plot(
            [report_t(recording, m) for m in marks if m.rss],
            [m.rss / MB for m in marks if m.rss],
            "o",
            color=line.get_color(),
            markersize=4,
        )
    for m in recording.epochs:
        for axis in (top, bottom):
            axis.axvline(report_t(recording, m), color="grey", linestyle=":", linewidth=0.6)
        bottom.annotate(
            f"e{m.epoch}",
            (report_t(recording, m), 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=6,
            ha="center",
            va="bottom",
        )
    bottom.set_ylabel("trial process RSS (MB), dots: epoch ends (reports)")
    bottom.set_xlabel("seconds since the driver started")
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_json(
    path: Path,
    meta: dict,
    reference: dict,
    roles: list[dict],
    trials: list[dict],
    total: dict,
    span: dict,
    recording: Recording,
) -> None:
    series = [
        {
            "t": round(s.t, 2),
            "rss_mb": {
                role: round(sum(p.rss for p in s.processes if p.role == role) / MB, 1)
                for role in {p.role for p in s.processes}
            },
        }
        for s in recording.snapshots
    ]
    path.write_text(
        json.dumps(
            {
                **meta,
                "reference": reference,
                "roles": roles,
                "trials": trials,
                "totals": total,
                "first_to_last_epoch": span,
                "series": series,
            },
            indent=1,
        )
    )


# ------------------------------------------------------------------ main


def check_data() -> None:
    missing = [str(DATA / split) for split in ("train", "test") if not (DATA / split).is_dir()]
    if missing:
        print(f"error: prepared Fashion-MNIST not found ({', '.join(missing)}); run make data", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workload",
        choices=["train", "sweep"],
        default="train",
        help="train: one MACRL trial of the quickstart, FIFO (default); sweep: the quickstart as is",
    )
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the train workload (>= 5)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--pss-every", type=int, default=4, help="read PSS every N samples (slower than RSS)")
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "results" / "memory",
        help="folder for memory_<workload>.json/.png and the driver's log (not committed)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the sweep folder (its path is printed)")
    args = parser.parse_args()
    if args.workload == "train" and args.epochs < 5:
        parser.error("--epochs must be >= 5 (growth is measured from epoch 2 to the last)")
    check_data()
    args.results.mkdir(parents=True, exist_ok=True)

    load_before = os.getloadavg()
    reference = measure_reference()
    tmp = Path(tempfile.mkdtemp(prefix="sslray-memory-"))
    out = tmp / "sweep"
    command = workload_command(args.workload, args.epochs, out)
    print(
        f"CPUs {os.cpu_count()}, memory {psutil.virtual_memory().total / 2**30:.1f} GiB, load average "
        f"{load_before[0]:.1f}; torch {reference['torch']}, ray {reference['ray']}, timm {reference['timm']}"
    )
    print("workload: " + " ".join(command[1:]), flush=True)
    driver = start_driver(command, args.results / f"driver_{args.workload}.log")
    recording = monitor(driver, out, args.interval, args.pss_every)
    load_after = os.getloadavg()
    if args.keep:
        print(f"sweep folder kept: {out}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if recording.returncode != 0:
        print(
            f"error: the workload exited with {recording.returncode}; see "
            f"{args.results / f'driver_{args.workload}.log'}",
            file=sys.stderr,
        )
        sys.exit(1)
    if not recording.epochs:
        print("error: no epoch was reported (no result.json line seen)", file=sys.stderr)
        sys.exit(1)

    roles = role_figures(recording, reference["rss"])
    trials = trial_figures(recording)
    total = totals(recording)
    print(
        f"\nwall time {recording.wall_s / 60:.1f} min, {total['samples']} samples every {args.interval} s; "
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    span = run_wide(recording)
    print_report(reference, roles, trials, total, span)
    meta = {
        "workload": args.workload,
        "command": command[1:],
        "interval_s": args.interval,
        "wall_s": recording.wall_s,
        "cpus": os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    json_path = args.results / f"memory_{args.workload}.json"
    png_path = args.results / f"memory_{args.workload}.png"
    write_json(json_path, meta, reference, roles, trials, total, span, recording)
    plot(
        recording,
        reference,
        png_path,
        f"sslray quickstart memory ({args.workload} workload), {os.cpu_count()} CPUs, sampled every {args.interval} s",
    )
    print(f"\nwrote {json_path}, {png_path}")


if __name__ == "__main__":
    main()
