"""`sslray submit`'s checks before anything reaches a cluster, and the job it builds (no cluster needed:
the end-to-end run against a real head is test_submit_e2e.py)."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest
import yaml

from sslray.cli import main
from sslray.errors import UserError
from sslray.submit import EXCLUDES, SweepJob, sweep_job


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "search_spaces").mkdir(parents=True)
    space = {
        "method": {"name": "simclr", "temperature": {"choice": [0.1, 0.2]}},
        "backbone": {"name": "resnet18", "in_chans": 1},
        "data": {"path": "data/fmnist/train", "knn_query": "s3://bucket/fmnist/test"},
        "tune": {"num_samples": 2},
    }
    (root / "search_spaces" / "s.yaml").write_text(yaml.safe_dump(space))
    (root / "elsewhere").mkdir()
    monkeypatch.chdir(root)
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return root


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_the_job_runs_the_sweep_with_paths_the_cluster_can_resolve(project):
    entrypoint, runtime_env, out = sweep_job(SweepJob("search_spaces/s.yaml", ["train.epochs=3"], env={"A": "1"}))
    command = shlex.split(entrypoint)
    assert command[:5] == ["python", "-m", "sslray.cli", "sweep", "search_spaces/s.yaml"]
    assert "train.epochs=3" in command
    # Relative paths are pinned to this machine's absolute ones (the job's cwd is a copy of the project);
    # URIs and the default knn_bank (relative, from the recipe defaults) likewise.
    assert f"data.path={project / 'data/fmnist/train'}" in command
    assert f"data.knn_bank={project / 'data/fmnist/train'}" in command
    assert not any(arg.startswith("data.knn_query=") for arg in command)
    assert command[-2] == "--out" and out == command[-1] and Path(out).parent == project / "sweeps"
    assert runtime_env["working_dir"] == str(project) and runtime_env["excludes"] == EXCLUDES
    assert runtime_env["env_vars"]["A"] == "1"
    assert runtime_env["py_modules"][0].endswith("sslray")  # this project has no sslray/ of its own
    (project / "sslray").mkdir()
    (project / "sslray" / "__init__.py").write_text("")
    _, runtime_env, uri = sweep_job(SweepJob("search_spaces/s.yaml", out="s3://bucket/sweeps/x"))
    assert "py_modules" not in runtime_env and uri == "s3://bucket/sweeps/x"
    # An existing local --out: refused here, or handed to the job's own `sslray sweep --overwrite`.
    (project / "old").mkdir()
    (project / "old" / "space.yaml").write_text("kept")
    with pytest.raises(UserError, match="--overwrite"):
        sweep_job(SweepJob("search_spaces/s.yaml", out=str(project / "old")))
    entrypoint, _, _ = sweep_job(SweepJob("search_spaces/s.yaml", out=str(project / "old"), overwrite=True))
    assert shlex.split(entrypoint)[-3:] == ["--out", str(project / "old"), "--overwrite"]
    assert (project / "old" / "space.yaml").read_text() == "kept"  # the job replaces it, not the submitter


@pytest.mark.parametrize(
    "args, message",
    [
        (["search_spaces/s.yaml"], "--address: give the cluster's job server"),
        (["search_spaces/s.yaml", "--address", "127.0.0.1:6379"], "is not a job server URL"),
        (["search_spaces/s.yaml", "--address", "http://x:1", "method.temprature=0.1"], "method.temprature"),
        (["search_spaces/s.yaml", "--address", "http://x:1", "--working-dir", "elsewhere"], "outside --working-dir"),
        (["--address", "http://x:1", "--list", "search_spaces/s.yaml"], "take no search space"),
        (["--address", "http://x:1"], "SPACE: give a search-space YAML"),
    ],
)
def test_mistakes_fail_before_anything_is_sent(project, capsys, args, message):
    assert main(["submit", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_space_in_an_excluded_folder_or_an_existing_out_is_refused(project, capsys):
    (project / "sweeps").mkdir()
    (project / "sweeps" / "s.yaml").write_text((project / "search_spaces" / "s.yaml").read_text())
    assert main(["submit", "sweeps/s.yaml", "--address", "http://x:1"]) == 2
    assert "not shipped with the job" in capsys.readouterr().err
    (project / "sweeps" / "old").mkdir()
    (project / "sweeps" / "old" / "leaderboard.csv").write_text("x")
    assert main(["submit", "search_spaces/s.yaml", "--address", "http://x:1", "--out", "sweeps/old"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err


def test_an_unreachable_job_server_is_one_clear_error(project, capsys):
    address = f"http://127.0.0.1:{closed_port()}"
    assert main(["submit", "search_spaces/s.yaml", "--address", address]) == 2
    err = capsys.readouterr().err
    assert f"no Ray job server answers at {address}" in err and "Traceback" not in err
