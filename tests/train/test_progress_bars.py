"""No Ray Data progress bars in a run's output, wherever the run's Ray is.

``use_loopback()`` sets ``RAY_DATA_DISABLE_PROGRESS_BARS=1`` for a local Ray only. With ``--address``
nothing set it: Ray Train V2 hands the driver's ``DataContext`` (bars on) to its workers, whose
datasets then draw tqdm bars through Ray's log forwarding into the driver's output, thousands of
lines in a long run's log. The run here is a real ``sslray train --address`` process on the session's
Ray, its environment without the variable, its output captured as a user's ``RUN/sslray.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from ..conftest import tiny_recipe

# What Ray Data's tqdm bars write (rendered on the driver from the workers' tqdm_ray updates), e.g.
# "Running Dataset: dataset_3_0. Active & requested resources: ... 128/128 [00:01<00:00, 93.1 row/s]".
BAR_MARKS = ("Running Dataset", "row/s", "%|", "bundle/s")


def test_a_run_on_a_given_address_prints_no_ray_data_progress_bars(ray_local, tiny_fmnist, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_DATA_DISABLE_PROGRESS_BARS", raising=False)  # what a cluster's driver has
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist)))  # 128 images, 1 epoch, online kNN
    address = ray_local.get_runtime_context().gcs_address
    log_path = tmp_path / "sslray.log"
    with open(log_path, "w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "sslray.cli", "train", str(recipe), "--out", str(tmp_path / "run")]
            + ["--address", address],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            timeout=600,
        )
    output = log_path.read_text()
    assert done.returncode == 0, output[-4000:]
    assert "epoch 1/1" in output, output[-4000:]  # the run's own lines are there
    bars = [line for line in output.replace("\r", "\n").splitlines() if any(m in line for m in BAR_MARKS)]
    assert not bars, "\n".join(bars[:20])
