"""`sslray eval` and `sslray report` end to end on a real local Ray: a tiny run pretrained once on real
Fashion-MNIST images, then kNN / linear probe / fine-tune / --every series / report read back from
their files (JSON, Markdown, PNG, TensorBoard events), and bad input giving one line and exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn import functional as F

from sslray.cli import main
from sslray.data.shards import ShardOptions, prepare
from sslray.eval.features import extract_features, find_encoder
from sslray.runs.checkpoint import MODEL, checkpoint_folders, read_state

PNG = b"\x89PNG\r\n\x1a\n"
EPOCHS = 4


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmnist")
    prepare("fashion-mnist", root, split="train", limit=1024, options=ShardOptions(rows_per_shard=512, workers=1))
    prepare("fashion-mnist", root, split="test", limit=300, options=ShardOptions(workers=1))
    return root


@pytest.fixture(scope="module")
def run(ray_local, fmnist, tmp_path_factory) -> Path:
    """SimCLR on a 2-block ViT at 16 px, 4 epochs of 1024 images, every checkpoint kept."""
    folder = tmp_path_factory.mktemp("pretrain")
    recipe = {
        "method": {"name": "simclr", "temperature": 0.2, "proj_hidden_dim": 128, "proj_dim": 64},
        "backbone": {"name": "vit_tiny", "img_size": 16, "patch_size": 4, "in_chans": 1, "depth": 2},
        "data": {
            "path": str(fmnist / "train"),
            "channels": 1,
            "knn_bank": str(fmnist / "train"),
            "knn_query": str(fmnist / "test"),
            "augment": {"size": 16, "global_view": {"blur_p": 0.0}},
        },
        "optim": {"name": "adamw", "base_lr": 2e-3, "weight_decay": 0.05},
        "train": {"epochs": EPOCHS, "batch_size": 128, "warmup_epochs": 1, "keep_checkpoints": EPOCHS},
        "scaling": {"num_workers": 1},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--out", str(folder / "run")]) == 0
    return folder / "run"


def results(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())


def test_knn_equals_a_brute_force_vote_on_the_same_features(run, fmnist, tmp_path, capsys):
    out = tmp_path / "knn"
    assert main(["eval", str(run), "--protocol", "knn", "--k", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kNN k=5 T=0.1, bank " in printed  # T: the run's own train.knn_temperature
    row, random_init, pixels = results(out)
    assert row["encoder"] == f"epoch {row['epoch']}" and row["train_images"] == 1024 and row["val_images"] == 300
    # Every result comes with both baselines, on the same protocol and splits, and the verdict against them.
    assert (random_init["encoder"], pixels["encoder"]) == ("random init", "raw pixels")
    assert [r["baseline"] for r in (row, random_init, pixels)] == [False, True, True]
    assert all(r["train_images"] == 1024 and r["val_images"] == 300 for r in (random_init, pixels))
    verdict = f"{row['val_top1'] - random_init['val_top1']:+.3f} vs random init"
    assert verdict in printed and f"{row['val_top1'] - pixels['val_top1']:+.3f} vs raw pixels" in printed
    assert "| raw pixels " in (out / "results.md").read_text()

    encoder = find_encoder(run)
    bank, bank_labels = extract_features(encoder, str(fmnist / "train"), None, cache_dir=run / "eval" / "cache")
    query, query_labels = extract_features(encoder, str(fmnist / "test"), None, cache_dir=run / "eval" / "cache")
    similarity = F.normalize(query, dim=1) @ F.normalize(bank, dim=1).T
    top, index = similarity.topk(5, dim=1)
    votes = torch.zeros(len(query), 10).scatter_add_(1, bank_labels[index], (top / 0.1).exp())
    assert row["val_top1"] == pytest.approx((votes.argmax(1) == query_labels).float().mean().item(), abs=1e-6)


def test_eval_knn_reproduces_the_online_knn_of_the_checkpoint(run, tmp_path, capsys):
    """One kNN protocol: by default `sslray eval --protocol knn` is the run's own online kNN (k, T, bank,
    queries, crops), so the best checkpoint scores what the run reported for its epoch."""
    out = tmp_path / "same"
    assert main(["eval", str(run), "--protocol", "knn", "--out", str(out)]) == 0
    assert "kNN k=200 T=0.1, bank " in capsys.readouterr().out
    row = results(out)[0]
    history = read_state(checkpoint_folders(run)[-1])["history"]
    online = next(m["knn_top1"] for m in history if m["epoch"] == row["epoch"])
    assert row["val_top1"] == pytest.approx(online, abs=0.005)


def test_linear_probe_of_the_pretrained_run_beats_its_random_init(run, tmp_path):
    out = tmp_path / "linear"
    assert main(["eval", str(run), "--protocol", "linear", "--epochs", "30", "--out", str(out)]) == 0
    row, random_init, pixels = results(out)  # the run, then the baselines probed the same way
    assert 0.0 <= row["train_top1"] <= 1.0 and random_init["encoder"] == "random init" and random_init["baseline"]
    assert pixels["encoder"] == "raw pixels" and pixels["epochs"] == 30
    print(f"linear probe val top-1: random init {random_init['val_top1']:.3f}, pretrained {row['val_top1']:.3f}")
    assert row["val_top1"] > random_init["val_top1"] + 0.02

    per_class = (out / "per_class.md").read_text().splitlines()
    assert len([line for line in per_class if line.startswith("| ")]) == 1 + 10 + 2  # header, classes, 2 averages
    assert (out / "confusion.png").read_bytes()[:8] == PNG and (out / "curves.png").read_bytes()[:8] == PNG
    accumulator = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert len(accumulator.Scalars(f"linear_epoch_{row['epoch']}/val_top1")) == 30


def test_every_k_probes_exactly_those_checkpoints(run, tmp_path, capsys):
    out = tmp_path / "series"
    assert main(["eval", str(run), "--protocol", "linear", "--every", "2", "--epochs", "5", "--out", str(out)]) == 0
    assert [r["epoch"] for r in results(out) if not r["baseline"]] == [2, 4]
    accumulator = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("series_linear/val_top1")] == [2, 4]
    assert (out / "series.png").read_bytes()[:8] == PNG
    assert "epoch 2  linear epoch 5/5" in capsys.readouterr().out

    partial = tmp_path / "partial"  # a run that did not keep epoch 2's checkpoint
    shutil.copytree(run, partial, ignore=shutil.ignore_patterns("eval"))
    shutil.rmtree(
        next(f for f in checkpoint_folders(partial) if json.loads((f / "state.json").read_text())["epoch"] == 1)
    )
    capsys.readouterr()
    assert main(["eval", str(partial), "--every", "2", "--out", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint kept for epoch(s) 2" in err and err.count("\n") == 1 and "Traceback" not in err


def test_linear_probe_on_augmented_views_through_the_frozen_backbone(run, tmp_path, capsys):
    out = tmp_path / "augmented"
    assert main(["eval", str(run), "--protocol", "linear", "--augment", "--epochs", "2", "--out", str(out)]) == 0
    row = results(out)[0]
    assert row["augment"] is True and row["train_images"] == 1024 and 0.0 <= row["val_top1"] <= 1.0
    lines = [line for line in capsys.readouterr().out.splitlines() if "linear epoch" in line]
    assert len([line for line in lines if line.startswith(row["encoder"])]) == 2
    assert len(lines) == 6  # and 2 for each baseline, probed the same way
    # Fresh views every epoch: the train accuracy is measured on different images than a cached probe's.
    cached = tmp_path / "cached"
    assert main(["eval", str(run), "--protocol", "linear", "--epochs", "2", "--out", str(cached)]) == 0
    assert results(cached)[0]["train_top1"] != row["train_top1"]


def test_finetune_on_a_tenth_of_the_labels(run, tmp_path):
    out = tmp_path / "finetune"
    assert (
        main(
            ["eval", str(run), "--protocol", "finetune", "--label-fraction", "0.1", "--epochs", "2", "--out", str(out)]
        )
        == 0
    )
    row, scratch = results(out)  # fine-tuning's baseline: the same network from random init (no raw pixels)
    assert scratch["encoder"] == "random init" and scratch["train_images"] == row["train_images"]
    assert 100 <= row["train_images"] <= 106  # ~10% of each class's share of 1024, at least one each
    assert row["label_fraction"] == 0.1 and 0.0 <= row["val_top1"] <= 1.0 and row["val_images"] == 300


def test_report_compares_the_run_with_both_baselines(run, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(run), "--epochs", "10", "--k", "5", "--tsne-epochs", "1,4", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in data["rows"]] == [run.name, "random init", "raw pixels"]
    for r in data["rows"]:
        assert 0.0 <= r["knn top1"] <= 1.0 and 0.0 <= r["linear val top1"] <= 1.0
    assert data["rows"][0]["params (M)"] > 0 and data["rows"][0]["s/epoch"] > 0
    summary = (out / "summary.md").read_text()
    # The comparison table (header + 3 rows) and the per-class table (header + 10 classes + 2 averages).
    assert len([line for line in summary.splitlines() if line.startswith("| ")]) == 4 + 13
    for name in (
        "loss.png",
        "knn.png",
        "linear_probe.png",
        "confusion.png",
        f"tsne_{run.name}_epoch1.png",
        f"tsne_{run.name}_epoch4.png",
    ):
        assert (out / name).read_bytes()[:8] == PNG, name
        assert f"]({name})" in summary
    assert [r["rank"] for r in data["rows"]] == [1, None, None]  # baselines are listed, not ranked
    page = (out / "index.html").read_text()
    # One self-contained page: every figure embedded, none linked.
    assert "<table>" in page and page.count('src="data:image/png;base64,') == 6 and 'src="tsne' not in page


def test_report_caches_in_its_own_folder_and_a_second_report_reuses_it(run, tmp_path, capsys):
    """With --out, features are cached in OUT/cache/<run>/ and OUT/cache/baselines/: nothing is written into
    the run folder (a sweep may be shared or read-only). A second report into the same OUT (--overwrite)
    re-reads that cache instead of extracting again."""
    runs = tmp_path / "shared"
    copy = runs / "simclr"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval"))
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    out = tmp_path / "report"
    args = ["report", str(copy), "--epochs", "2", "--k", "5", "--out", str(out)]
    assert main(args) == 0
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before  # no eval/ or anything else
    cache = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.pt")}
    assert sorted(p.parent.name for p in cache) == ["baselines"] * 4 + ["simclr"] * 2  # train + val each
    assert capsys.readouterr().out.count("features extracted") == 3

    assert main([*args, "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("features cached") == 3 and "features extracted" not in printed
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.pt")} == cache  # read, not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "shared"]  # the moved cache left nothing

    # Features `sslray eval` cached in the run (RUN/eval/cache) are read from there, not extracted again.
    shutil.copytree(out / "cache" / "simclr", copy / "eval" / "cache")
    assert main(["report", str(copy), "--epochs", "2", "--k", "5", "--out", str(tmp_path / "other")]) == 0
    printed = capsys.readouterr().out
    [line] = [line for line in printed.splitlines() if line.startswith("report: simclr (")]
    assert "features cached" in line and printed.count("features cached") == 1  # the baselines: extracted


def test_a_corrupted_checkpoint_is_one_clear_error(run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("eval"))
    (broken / "checkpoints" / "best" / MODEL).write_bytes(b"not a checkpoint")
    assert main(["eval", str(broken), "--protocol", "knn", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    # Its size differs from the one state.json records: refused before torch reads it.
    assert f"{broken / 'checkpoints' / 'best'}: incomplete checkpoint ({MODEL} has 16 of" in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--protocol", "linear", "--lr", "-1"], "linear probe.base_lr: -1.0 is out of range"),
        (["--protocol", "finetune", "--label-fraction", "1.5"], "fine-tune.label_fraction: 1.5 is out of range"),
        (["--protocol", "knn", "--data", "/nonexistent/fmnist"], "/nonexistent/fmnist/train does not exist"),
    ],
)
def test_bad_eval_input_exits_2_with_one_line(run, tmp_path, capsys, args, message):
    assert main(["eval", str(run), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept_without_overwrite(run, tmp_path, capsys):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "results.json").write_text("[]")
    assert main(["eval", str(run), "--protocol", "knn", "--out", str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "[]"
    assert main(["eval", "/nonexistent/run", "--protocol", "knn"]) == 2


@pytest.mark.parametrize("command", ["eval", "report"])
def test_overwrite_never_deletes_a_folder_sslray_did_not_make(run, tmp_path, capsys, command):
    """--overwrite replaces an earlier eval/report folder only: a mistyped --out (here a folder of the
    user's own files, then the run folder itself) is refused with exit 2 and keeps every file."""
    mine = tmp_path / "my_notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    for out in (mine, run):
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        assert main([command, str(run), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"{out} has files but no options.json or results.json" in err and err.count("\n") == 1
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (mine / "thesis.tex").read_text() == "months of work"


def test_overwrite_replaces_an_earlier_eval_folder(run, tmp_path):
    out = tmp_path / "again"
    assert main(["eval", str(run), "--protocol", "knn", "--k", "5", "--out", str(out)]) == 0
    assert json.loads((out / "options.json").read_text())["protocol"] == "knn"
    (out / "stale.txt").write_text("from the first evaluation")
    assert main(["eval", str(run), "--protocol", "knn", "--k", "5", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and results(out)[0]["val_top1"] > 0


def test_data_with_train_limit_all_takes_every_image(run, tiny_fmnist, monkeypatch):
    """`--data DIR --train-limit all --val-limit all` (limit 0): every image of both splits, not none, and a
    relative DIR is read from where the command ran (Ray Data's tasks have their own working folder)."""
    from sslray.eval.protocols import EvalSplits

    monkeypatch.chdir(tiny_fmnist.parent)
    splits = EvalSplits.of(find_encoder(run), tiny_fmnist.name, 0, 0)
    assert (splits.train_limit, splits.val_limit) == (None, None)
    assert splits.train == str(tiny_fmnist.resolve() / "train") and splits.val == str(tiny_fmnist.resolve() / "test")
    features, labels = extract_features(find_encoder(run), splits.train, splits.train_limit)
    assert len(features) == len(labels) == 256  # tiny_fmnist's whole train split
