"""``benchmarks/gpu.py``: its CPU smoke (the GPU benchmark's code paths with tiny models, 2 CPU cores)
runs end to end and writes images/s of both sides per case; without CUDA and without ``--smoke`` it
refuses with one line and exit code 2, before doing anything."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_smoke_measures_both_sides_of_every_case(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=540
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    report = json.loads((out / "gpu_bench.json").read_text())
    assert report["smoke"] is True
    assert [run["name"] for run in report["runs"]] == ["simclr_resnet50", "mae_vitb16"]
    for run in report["runs"]:
        assert run["status"] == "ok", run
        for side in ("plain", "sslray"):
            images_per_s = run[side]["images_per_s"]
            assert math.isfinite(images_per_s) and images_per_s > 0, (run["name"], side, images_per_s)
        assert 0.0 <= run["sslray"]["data_wait_frac"] <= 1.0
        assert run["ratio"] == pytest.approx(run["sslray"]["images_per_s"] / run["plain"]["images_per_s"], rel=0.01)
        assert run["cpu_cores_per_gpu_for_feed"] > 0
        assert (out / "runs" / run["name"] / "result.json").is_file()  # a real `sslray train` run folder
    for feed in report["feed"].values():
        assert feed["images"] > 0 and feed["images_per_s_per_cpu"] > 0

    table = (out / "gpu_bench.md").read_text()
    assert "SMOKE on CPU" in table
    assert "| case | compile | batch | plain img/s | sslray img/s | ratio | data wait |" in table
    assert sum(line.endswith("| ok |") for line in table.splitlines()) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the benchmark would run")
def test_without_cuda_it_refuses_with_one_line(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "gpu.py: no CUDA device; use --smoke on CPU"
    assert not out.exists()
