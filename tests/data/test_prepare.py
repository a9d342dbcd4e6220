"""`sslray data prepare` and the readers behind it, on real files of every source format."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sslray.cli import main
from sslray.data.readers import FASHION_MNIST_DIR, fashion_mnist_arrays
from sslray.data.shards import ROW_GROUP_ROWS, SCHEMA, ShardOptions, ShardWriter, prepare, row_group_rows
from sslray.errors import UserError

from .samples import encode, pattern


def read_split(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in sorted(folder.glob("part-*.parquet")))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_fashion_mnist_idx_round_trip(idx_dir, tmp_path):
    root, arrays = idx_dir
    reports = prepare("fashion-mnist", tmp_path / "out", path=str(root), options=ShardOptions(workers=1))
    assert [(r.split, r.rows) for r in reports] == [("train", 12), ("val", 2), ("test", 5)]
    val = read_split(tmp_path / "out" / "val")  # the last sixth of train, held out for model selection
    for row, data in enumerate(val["image"].to_pylist()):
        np.testing.assert_array_equal(pixels(data), arrays["train"][0][10 + row])
    table = read_split(tmp_path / "out" / "train")
    assert table.schema.equals(SCHEMA)
    images, labels = arrays["train"]
    for row, (data, label) in enumerate(zip(table["image"].to_pylist(), table["label"].to_pylist())):
        np.testing.assert_array_equal(pixels(data), images[row])
        assert label == labels[row]
    info = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())
    assert info["num_rows"] == 12 and info["classes"][9] == "Ankle boot" and info["skipped"] == 0


def test_truncated_idx_is_a_user_error(idx_dir, tmp_path):
    root, _ = idx_dir
    data = (root / "t10k-images-idx3-ubyte.gz").read_bytes()
    import gzip
    raw = gzip.decompress(data)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(UserError, match="truncated"):
        prepare("fashion-mnist", tmp_path / "out", path=str(root), split="test")
    assert not (tmp_path / "out" / "test").exists()


def test_cifar10_pixels_labels_and_class_names(cifar10_dir, tmp_path):
    root, images = cifar10_dir
    reports = prepare("cifar10", tmp_path / "out", path=str(root), options=ShardOptions(workers=2))
    assert [(r.split, r.rows) for r in reports] == [("train", 10), ("test", 2)]
    train = read_split(tmp_path / "out" / "train")
    np.testing.assert_array_equal(pixels(train["image"][3].as_py()), images[3])
    assert train["label"].to_pylist() == list(range(10))
    assert json.loads((tmp_path / "out" / "test" / "dataset.json").read_text())["classes"][0] == "c0"


def test_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    images = np.stack([pattern(32, 32, 3, seed=i) for i in range(3)])
    for split in ("train", "test"):
        with open(root / split, "wb") as f:
            pickle.dump({b"data": images.transpose(0, 3, 1, 2).reshape(3, -1), b"fine_labels": [99, 0, 42],
                         b"coarse_labels": [1, 2, 3]}, f)
    prepare("cifar100", tmp_path / "out", path=str(tmp_path), split="test", options=ShardOptions(workers=1))
    table = read_split(tmp_path / "out" / "test")
    assert table["label"].to_pylist() == [99, 0, 42]
    np.testing.assert_array_equal(pixels(table["image"][2].as_py()), images[2])


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({b"data": Exploit(), b"labels": []}, f)
    with pytest.raises(UserError, match="refusing to load"):
        prepare("cifar10", tmp_path / "out", path=str(tmp_path))
    assert not marker.exists()


def test_stl10_orientation_and_unlabeled_split(stl10_dir, tmp_path):
    root, images = stl10_dir
    reports = prepare("stl10", tmp_path / "out", path=str(root), options=ShardOptions(workers=1))
    assert {r.split: r.rows for r in reports} == {"train": 4, "unlabeled": 3}  # no test files here
    train = read_split(tmp_path / "out" / "train")
    np.testing.assert_array_equal(pixels(train["image"][1].as_py()), images[1])  # not transposed
    assert train["label"].to_pylist() == [0, 1, 9, 4]
    assert read_split(tmp_path / "out" / "unlabeled")["label"].null_count == 3


def test_folder_keeps_good_images_and_lists_bad_ones(folder_tree, tmp_path):
    (report,) = prepare("folder", tmp_path / "out", path=str(folder_tree), options=ShardOptions(workers=2))
    assert report.rows == 7
    reasons = dict(report.skipped)
    assert {Path(w).name for w in reasons} == {"empty.png", "garbage.jpg", "truncated.jpg"}
    assert "empty" in reasons[str(folder_tree / "dogs" / "empty.png")]
    table = read_split(tmp_path / "out" / "train")
    rows = dict(zip(table["id"].to_pylist(), zip(table["image"].to_pylist(), table["label"].to_pylist())))
    assert rows["cats/a.png"][1] == 0 and rows["dogs/c.jpeg"][1] == 1
    assert rows["dogs/c.jpeg"][0] == (folder_tree / "dogs" / "c.jpeg").read_bytes()  # JPEG kept as is
    np.testing.assert_array_equal(pixels(rows["cats/a.png"][0]), pattern(40, 60, 3, 1))
    cmyk = Image.open(io.BytesIO(rows["dogs/cmyk.jpg"][0]))
    deep = Image.open(io.BytesIO(rows["dogs/deep.png"][0]))
    alpha = Image.open(io.BytesIO(rows["dogs/alpha.png"][0]))
    assert (cmyk.mode, deep.mode, alpha.mode) == ("RGB", "L", "RGB")
    np.testing.assert_array_equal(np.asarray(deep), pattern(16, 16, 1, 6))  # 16-bit scaled back to 8
    info = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())
    assert info["classes"] == ["cats", "dogs"] and info["skipped"] == 3


def test_every_skipped_image_is_listed_in_dataset_json(tmp_path, capsys):
    """25 corrupt files: the CLI prints 10 and says the other 15 are in dataset.json, which lists all 25."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good.png").write_bytes(encode(pattern(8, 8, 3, 0)))  # one good image, else nothing is written
    corrupt = {f"corrupt_{i:02d}.jpg" for i in range(25)}
    for i, name in enumerate(sorted(corrupt)):
        (photos / name).write_bytes(b"\x00garbage, not an image " * (i + 1))
    assert main(["data", "prepare", "folder", str(tmp_path / "out"), "--path", str(photos), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    printed = [line for line in out.splitlines() if line.startswith("  skipped ")]
    assert "(skipped 25)" in out and len(printed) == 10
    assert f"... and 15 more (listed in {tmp_path / 'out' / 'train'}/dataset.json)" in out
    info = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())
    assert info["num_rows"] == 1 and info["skipped"] == 25
    listed = [Path(entry["where"]).name for entry in info["skipped_examples"]]
    assert len(listed) == 25 and set(listed) == corrupt
    assert all("not an image" in entry["why"] for entry in info["skipped_examples"])
    # What the CLI printed is a prefix of what dataset.json lists, so "the rest" really is there.
    assert [Path(line.removeprefix("  skipped ").split(": ", 1)[0]).name for line in printed] == listed[:10]


def test_folder_without_subfolders_is_unlabeled(tmp_path):
    root = tmp_path / "loose"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(encode(pattern(10, 10, 3, i)))
    (report,) = prepare("folder", tmp_path / "out", path=str(root), options=ShardOptions(workers=1))
    table = read_split(tmp_path / "out" / "train")
    assert report.rows == 3 and table["label"].null_count == 3


def test_folder_split_subfolders_and_class_subset(tmp_path):
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for c, name in enumerate(["n01", "n02", "n03"]):
            (root / split / name).mkdir(parents=True)
            (root / split / name / "x.png").write_bytes(encode(pattern(8, 8, 3, c)))
    reports = prepare("folder", tmp_path / "out", path=str(root),
                      options=ShardOptions(classes=["n03", "n01"], workers=1))
    assert [r.split for r in reports] == ["train", "val"]
    table = read_split(tmp_path / "out" / "val")
    assert sorted(zip(table["id"].to_pylist(), table["label"].to_pylist())) == [
        ("val/n01/x.png", 1), ("val/n03/x.png", 0)]
    assert json.loads((tmp_path / "out" / "val" / "dataset.json").read_text())["classes"] == ["n03", "n01"]


def test_prepare_never_changes_data_quietly(tmp_path, capsys):
    """Issue 18 #8 and #11: an OUT that is a file, an OUT inside --path (read back as a class on a re-run),
    class folders named by numbers (``--classes 0,1`` meant "0" as an index and "1" as a name), and
    content drawn only in alpha (lost when alpha was dropped) each end in one line or are counted."""
    from tests.conftest import assert_one_line_error

    photos = tmp_path / "photos"
    for c, name in enumerate(["1", "2", "3"]):
        (photos / name).mkdir(parents=True)
        (photos / name / "x.png").write_bytes(encode(pattern(8, 8, 3, c)))
    # An RGBA image whose shape is only in alpha: a black square on transparent black.
    drawn = np.zeros((8, 8, 4), np.uint8)
    drawn[2:6, 2:6, 3] = 255
    (photos / "1" / "alpha_only.png").write_bytes(encode(drawn))
    as_file = tmp_path / "file.txt"
    as_file.write_text("mine")
    cases = [
        ([str(as_file)], [f"OUT: {as_file} is a file"]),
        ([str(photos / "out")], [f"OUT: {photos / 'out'} is inside --path {photos}"]),
        ([str(tmp_path / "out"), "--classes", "0,1"], ["--classes: no class named '0'", "takes names, not indices"]),
    ]
    for args, needles in cases:
        out = Path(args[0])
        assert main(["data", "prepare", "folder", *args, "--path", str(photos), "--workers", "1"]) == 2
        assert_one_line_error(capsys.readouterr().err, *needles)
        assert not (out / "train").exists()
    assert as_file.read_text() == "mine"

    assert main(["data", "prepare", "folder", str(tmp_path / "out"), "--path", str(photos), "--classes", "3,1",
                 "--workers", "1"]) == 0
    assert "1 with transparency composited on white" in capsys.readouterr().out
    info = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())
    assert info["classes"] == ["3", "1"] and info["num_rows"] == 3 and info["composited_on_white"] == 1
    table = read_split(tmp_path / "out" / "train")
    stored = dict(zip(table["id"].to_pylist(), table["image"].to_pylist()))
    square = pixels(stored["1/alpha_only.png"])
    assert square.shape == (8, 8, 3)
    assert (square[2:6, 2:6] == 0).all() and (square[0] == 255).all()  # the square shows, on white


def test_parquet_source_with_raw_and_struct_columns(tmp_path):
    images = [encode(pattern(9, 9, 3, i)) for i in range(4)]
    raw = pa.table({"img": images, "y": [0, 1, None, 3]})
    pq.write_table(raw, tmp_path / "raw.parquet")
    hf = pa.table({"image": pa.array([{"bytes": b, "path": None} for b in images[:2]] + [{"bytes": b"bad", "path": None}]),
                   "label": [5, 6, 7]})
    pq.write_table(hf, tmp_path / "hf.parquet")
    prepare("parquet", tmp_path / "a", path=str(tmp_path / "raw.parquet"),
            options=ShardOptions(image_column="img", label_column="y"))
    assert read_split(tmp_path / "a" / "train")["label"].to_pylist() == [0, 1, None, 3]
    (report,) = prepare("parquet", tmp_path / "b", path=str(tmp_path / "hf.parquet"))
    assert report.rows == 2 and len(report.skipped) == 1
    with pytest.raises(UserError, match="no column 'pixels'"):
        prepare("parquet", tmp_path / "c", path=str(tmp_path / "raw.parquet"),
                options=ShardOptions(image_column="pixels"))


def test_limit_shards_and_num_classes(idx_dir, tmp_path):
    root, _ = idx_dir
    (report,) = prepare("fashion-mnist", tmp_path / "out", path=str(root), split="train", limit=7,
                        options=ShardOptions(num_classes=5, rows_per_shard=2, workers=1))
    table = read_split(tmp_path / "out" / "train")
    assert report.rows == 7 and report.shards == 4 and len(list((tmp_path / "out" / "train").glob("*.parquet"))) == 4
    assert set(table["label"].to_pylist()) <= set(range(5))


def test_row_groups_hold_at_most_row_group_bytes_of_images(tmp_path):
    rng = np.random.default_rng(0)
    noise = [encode(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(30)]  # ~5 KB PNGs
    writer = ShardWriter(tmp_path / "big", rows_per_shard=100, row_group_bytes=8 * len(noise[0]))
    for i, image in enumerate(noise):
        writer.add(image, i % 3, f"n{i}")
    writer.commit({}, overwrite=False)
    meta = pq.ParquetFile(tmp_path / "big" / "part-00000.parquet").metadata
    rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(rows) == 30 and max(rows) == row_group_rows(noise, 8 * len(noise[0])) and 6 <= max(rows) <= 9
    assert read_split(tmp_path / "big")["image"].to_pylist() == noise  # every image, in order
    # Small images fill whole row groups of ROW_GROUP_ROWS, as before.
    assert row_group_rows([encode(pattern(28, 28, 1, 0))] * 10) == ROW_GROUP_ROWS


def test_existing_output_is_never_overwritten_without_flag(idx_dir, tmp_path):
    root, _ = idx_dir
    prepare("fashion-mnist", tmp_path / "out", path=str(root), split="test", limit=2, options=ShardOptions(workers=1))
    before = {p.name: p.read_bytes() for p in (tmp_path / "out" / "test").iterdir()}
    with pytest.raises(UserError, match="already exists"):
        prepare("fashion-mnist", tmp_path / "out", path=str(root), split="test", options=ShardOptions(workers=1))
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "test").iterdir()} == before
    prepare("fashion-mnist", tmp_path / "out", path=str(root), split="test",
            options=ShardOptions(overwrite=True, workers=1))
    assert read_split(tmp_path / "out" / "test").num_rows == 5
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no partial/old left


def test_cli_errors_exit_2_with_one_message(folder_tree, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["data", "prepare", "folder", str(tmp_path / "o1"), "--path", str(empty)], "no images written"),
        (["data", "prepare", "folder", str(tmp_path / "o2"), "--path", str(tmp_path / "missing")], "does not exist"),
        (["data", "prepare", "folder", str(tmp_path / "o3"), "--path", str(folder_tree), "--classes", "cats,birds"],
         "unknown class 'birds'"),
        (["data", "prepare", "cifar10", str(tmp_path / "o4")], "--path is required"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
        assert not (tmp_path / argv[3]).exists() or not any((tmp_path / argv[3]).iterdir())


def test_console_script_reports_skips(folder_tree, tmp_path):
    result = subprocess.run([str(Path(sys.executable).parent / "sslray"), "data", "prepare", "folder",
                             str(tmp_path / "out"), "--path", str(folder_tree)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "train: 7 images in 1 shard(s)" in result.stdout
    assert "skipped 3" in result.stdout and "garbage.jpg" in result.stdout


def test_real_fashion_mnist_full_prepare(tmp_path):
    """The embedded default, from the Debian package: 60k train + 10k test rows with labels."""
    assert FASHION_MNIST_DIR.is_dir(), "make test installs dataset-fashion-mnist; run it through make"
    assert main(["data", "prepare", "fashion-mnist", str(tmp_path / "fmnist")]) == 0
    train, test = read_split(tmp_path / "fmnist" / "train"), read_split(tmp_path / "fmnist" / "test")
    val = read_split(tmp_path / "fmnist" / "val")
    assert (train.num_rows, val.num_rows, test.num_rows) == (60_000, 10_000, 10_000)
    assert val["image"][0].as_py() == train["image"][50_000].as_py()  # val: train's last 10,000
    assert train["label"].null_count == 0 and set(test["label"].to_pylist()) == set(range(10))
    images, labels = fashion_mnist_arrays("test")
    for row in (0, 4321, 9999):
        np.testing.assert_array_equal(pixels(test["image"][row].as_py()), images[row])
        assert test["label"][row].as_py() == labels[row]
