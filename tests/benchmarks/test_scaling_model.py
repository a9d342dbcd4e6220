"""benchmarks/scaling.py's model, recomputed from the measured inputs kept in docs/scaling.json (the
measurement itself takes minutes and is run by hand; docs/scaling.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "scaling.py"
MEASURED = REPO / "docs" / "scaling.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO)


def test_the_model_follows_a_given_gpu_rate_and_writes_its_tables_and_plot(tmp_path):
    out = tmp_path / "model"
    done = run("--out", str(out), "--from", str(MEASURED), "--gpu-rate", "simclr_224=2000")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "scaling.json").read_text())
    per_core = report["feed"]["simclr_224"]["images_per_s_per_cpu"]
    simclr = report["model"]["simclr_224"]
    assert report["gpu_rates"]["simclr_224"] == {"images_per_s": 2000.0, "source": "--gpu-rate"}
    assert simclr["cores_per_gpu"] == round(2000 / per_core, 1)
    # Not given: MAE's rate is the published anchor scaled by the FLOPs counted per image.
    costs = report["costs"]
    assert report["model"]["mae_224"]["gpu_images_per_s"] == round(
        2470 / 2 * costs["simclr_224"]["train_gflops_per_image"] / costs["mae_224"]["train_gflops_per_image"]
    )
    p4d = simclr["instances"]["p4d.24xlarge (8 x A100)"]
    assert p4d["data_nodes_per_gpu_node"] == round((8 * 2000 / per_core - 86) / 16, 2)
    assert "| SimCLR ResNet-50 | 2,000 (--gpu-rate) |" in (out / "scaling.md").read_text()
    assert (out / "scaling_cores_per_gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_gpu_rate_is_one_line_and_exit_2(tmp_path):
    done = run("--out", str(tmp_path / "x"), "--from", str(MEASURED), "--gpu-rate", "simclr=fast")
    assert done.returncode == 2
    assert "--gpu-rate simclr=fast" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
