"""An existing output (run, sweep, prepared dataset, exported backbone) is never replaced without
``--overwrite``, ``--overwrite`` never deletes a folder that sslray did not write, and ``--resume`` with
``--overwrite`` is refused: each one line and exit code 2, the old files byte for byte as they were.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from sslray.cli import main

from ..conftest import assert_one_line_error, tiny_grid, tiny_recipe


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(params=["train", "sweep"])
def results_command(request, tiny_fmnist, tmp_path):
    """(command, input YAML, marker file of its results folder) for train and for sweep."""
    command = request.param
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist) if command == "train" else tiny_grid(tiny_fmnist)))
    return command, str(path), "config.yaml" if command == "train" else "space.yaml"


def test_an_existing_results_folder_is_kept_without_overwrite(results_command, tmp_path, capsys):
    command, yaml_path, marker = results_command
    old = tmp_path / "old"
    old.mkdir()
    (old / marker).write_text("method: {name: simclr}\n")
    (old / "old.txt").write_text("results of last week")
    kept = folder_bytes(old)
    assert main([command, yaml_path, "--out", str(old)]) == 2
    assert_one_line_error(capsys.readouterr().err, str(old), "already exists", "--overwrite")
    assert folder_bytes(old) == kept


def test_overwrite_never_deletes_a_folder_sslray_did_not_write(results_command, tmp_path, capsys):
    command, yaml_path, marker = results_command
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a run")
    (mine / "sub").mkdir()
    (mine / "sub" / "data.bin").write_bytes(os.urandom(64))
    kept = folder_bytes(mine)
    assert main([command, yaml_path, "--out", str(mine), "--overwrite"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(mine), f"no {marker}")
    assert folder_bytes(mine) == kept


def test_resume_and_overwrite_together_are_refused(results_command, tmp_path, capsys):
    command, yaml_path, marker = results_command
    old = tmp_path / "old"
    old.mkdir()
    (old / marker).write_text("method: {name: simclr}\n")
    kept = folder_bytes(old)
    argv = [command, yaml_path] if command == "train" else [command]
    assert main([*argv, "--resume", str(old), "--overwrite"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--resume", "--overwrite")
    assert folder_bytes(old) == kept


def test_prepare_into_an_existing_dataset_is_refused_from_the_command_line(tiny_fmnist, tmp_path, capsys):
    out = tmp_path / "data"
    shutil.copytree(tiny_fmnist / "test", out / "test")
    kept = folder_bytes(out)
    assert main(["data", "prepare", "fashion-mnist", str(out), "--split", "test", "--limit", "8"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(out / "test"), "already exists", "--overwrite")
    assert folder_bytes(out) == kept


@pytest.mark.parametrize("existing", ["out.pt", "out.json"])
def test_export_over_an_existing_file_is_refused(clean_run, tmp_path, capsys, existing):
    (tmp_path / existing).write_bytes(b"someone's file")
    assert main(["export", str(clean_run), str(tmp_path / "out.pt")]) == 2
    assert_one_line_error(capsys.readouterr().err, str(tmp_path / existing), "already exists", "--overwrite")
    assert folder_bytes(tmp_path) == {existing: b"someone's file"}
