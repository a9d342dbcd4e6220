"""A checkpoint cut off while it was being written (a killed driver or node in the middle of the copy) is
never resumed from: it is named in a warning and the run continues from the last complete one.

The fault is the folder such a kill leaves: a copy of the run's last checkpoint as the next epoch's, with
``model.pt`` truncated to half its bytes (a copier may write state.json first, so only the sizes that
state.json records tell it apart), and a second one without ``state.json`` at all.
"""

from __future__ import annotations

import json
import shutil

from sslray.cli import main
from sslray.runs.checkpoint import MODEL, STATE, checkpoint_folders, find_checkpoint, incomplete_because, read_state

from ..train.test_train_e2e import FAMILIES, write_recipe


def test_a_half_written_checkpoint_is_ignored_with_a_warning(ray_local, tiny_fmnist, tmp_path, capsys):
    method, backbone = FAMILIES["masked"]
    recipe = write_recipe(tmp_path, tiny_fmnist, method, backbone, epochs=3, stop_at_epoch=2)
    recipe_data = recipe.read_text().replace("num_workers: 2", "num_workers: 1")
    recipe.write_text(recipe_data)
    run_dir = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run_dir)]) == 0
    [*_, last] = checkpoint_folders(run_dir)
    assert read_state(last)["epoch"] == 1  # 0-based: after epoch 2

    cut = last.parent / "checkpoint_9999-12-31_23-59-59.000000"
    shutil.copytree(last, cut)
    state = read_state(cut)
    (cut / STATE).write_text(json.dumps({**state, "epoch": 2}))
    full = (cut / MODEL).stat().st_size
    with open(cut / MODEL, "r+b") as handle:
        handle.truncate(full // 2)
    no_state = last.parent / "checkpoint_9999-12-31_23-59-59.500000"
    shutil.copytree(last, no_state)
    (no_state / STATE).unlink()
    assert incomplete_because(cut) == f"{MODEL} has {full // 2:,} of {full:,} bytes"
    capsys.readouterr()

    assert find_checkpoint(run_dir, which="latest") == last
    warned = capsys.readouterr().err
    assert f"ignoring checkpoint {cut}: {MODEL} has" in warned
    assert f"ignoring checkpoint {no_state}: no {STATE}" in warned

    assert main(["train", str(recipe), "--resume", str(run_dir), "train.stop_at_epoch=null"]) == 0
    out, err = capsys.readouterr()
    assert f"ignoring checkpoint {cut}" in err
    summary = json.loads((run_dir / "result.json").read_text())
    assert summary["metrics"]["epoch"] == 3 and summary["metrics"]["resumed_from_epoch"] == 2
    assert summary["restarts"][-1]["restored_epoch"] == 2
    history = read_state(checkpoint_folders(run_dir)[-1])["history"]
    assert [m["epoch"] for m in history] == [1, 2, 3]

    # A state.json without the fields sslray writes, and a truncated best/model.pt (issue 18, items 4-5):
    # export says so in one line, exit 2, and writes nothing, as eval and report do.
    lacking = last.parent / "checkpoint_lacking_fields"
    shutil.copytree(last, lacking)
    (lacking / STATE).write_text(json.dumps({k: v for k, v in state.items() if k not in ("epoch", "recipe")}))
    assert main(["export", str(lacking), str(tmp_path / "a.pt")]) == 2
    assert f"incomplete checkpoint ({STATE} lacks epoch, recipe)" in capsys.readouterr().err
    best = run_dir / "checkpoints" / "best" / MODEL
    with open(best, "r+b") as handle:
        handle.truncate(best.stat().st_size // 2)
    assert main(["export", str(run_dir), str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err
    assert f"{best.parent}: incomplete checkpoint ({MODEL} has" in err and "Traceback" not in err
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "b.json").exists()


def test_a_checkpoint_whose_bytes_changed_is_refused(ray_local, tiny_fmnist, tmp_path, capsys):
    """Issue 18 #7: a byte flipped inside model.pt (same size) loaded silently and moved kNN 0.776 -> 0.706.
    state.json records each tensor file's SHA-256: resume passes over such a checkpoint with a warning,
    and eval and export refuse it in one line (exit 2) rather than report a damaged model's numbers."""
    method, backbone = FAMILIES["contrastive"]
    recipe = write_recipe(tmp_path, tiny_fmnist, method, backbone, epochs=3, stop_at_epoch=2)
    recipe.write_text(recipe.read_text().replace("num_workers: 2", "num_workers: 1"))
    run_dir = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run_dir)]) == 0
    [*_, before, last] = checkpoint_folders(run_dir)
    assert (read_state(before)["epoch"], read_state(last)["epoch"]) == (0, 1)
    files = read_state(last)["files"]
    assert files[MODEL]["bytes"] == (last / MODEL).stat().st_size and len(files[MODEL]["sha256"]) == 64

    model = last / MODEL
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor data: torch.load still reads it
    model.write_bytes(bytes(data))
    assert incomplete_because(last) is None  # the size is right: only the digest tells
    capsys.readouterr()
    assert main(["eval", str(last), "--protocol", "knn"]) == 2
    err = capsys.readouterr().err
    assert f"{last}: damaged checkpoint ({MODEL} does not match the SHA-256" in err and "Traceback" not in err
    assert main(["export", str(last), str(tmp_path / "a.pt")]) == 2
    capsys.readouterr()
    assert not (tmp_path / "a.pt").exists()

    assert main(["train", str(recipe), "--resume", str(run_dir), "train.stop_at_epoch=null"]) == 0
    assert f"ignoring checkpoint {last}: {MODEL} does not match" in capsys.readouterr().err
    summary = json.loads((run_dir / "result.json").read_text())
    assert summary["metrics"]["resumed_from_epoch"] == 1 and summary["metrics"]["epoch"] == 3
