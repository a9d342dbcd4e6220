"""sslray.runs.storage on real filesystems: local paths and file:// URIs through pyarrow."""

from __future__ import annotations

import os

import pytest

from sslray.runs import storage
from sslray.errors import UserError


def test_mirror_sends_new_and_changed_files_only(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("a: 1\n")
    (run / "checkpoints" / "best" / "model.pt").write_bytes(b"\0" * 5000)
    target = tmp_path / "bucket" / "sweep" / "trial"
    mirror = storage.RunMirror(run, f"file://{target}")

    assert mirror.sync() == 2
    assert (target / "config.yaml").read_text() == "a: 1\n"
    assert (target / "checkpoints" / "best" / "model.pt").read_bytes() == b"\0" * 5000
    assert mirror.sync() == 0  # nothing changed

    with open(run / "events.out", "ab") as handle:  # TensorBoard appends
        handle.write(b"epoch 1")
    (run / "config.yaml").write_text("a: 22\n")
    assert mirror.sync() == 2
    assert (target / "config.yaml").read_text() == "a: 22\n"
    assert (target / "events.out").read_bytes() == b"epoch 1"
    assert not list(target.rglob("*.partial"))


def test_has_files_and_locations(tmp_path):
    assert not storage.has_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not storage.has_files(f"file://{tmp_path}/empty")
    (tmp_path / "empty" / "x").write_text("x")
    assert storage.has_files(tmp_path / "empty") and storage.has_files(f"file://{tmp_path}/empty")
    assert storage.split_parent("s3://bucket/sweeps/q1") == ("s3://bucket/sweeps", "q1")
    assert storage.split_parent("/a/b/") == ("/a", "b")
    assert storage.join("s3://b/s?endpoint_override=h:9000", "t", "x") == "s3://b/s/t/x?endpoint_override=h:9000"
    assert storage.read_text(f"file://{tmp_path}/empty/x", "--resume") == "x"


@pytest.mark.parametrize("location, message", [
    ("nosuch://bucket/sweeps/q", "cannot open nosuch://bucket/sweeps/q"),
    ("s3://bucket", "names no folder inside a bucket"),
])
def test_bad_locations_are_user_errors(location, message):
    with pytest.raises(UserError, match=message):
        storage.split_parent(location)
        storage.filesystem(location)


def test_local_staging_is_stable(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    first = storage.local_staging("sweep-1234", "trial_0")
    assert first == storage.local_staging("sweep-1234", "trial_0") and first.is_dir()
    assert str(first).startswith(str(tmp_path)) and os.access(first, os.W_OK)
