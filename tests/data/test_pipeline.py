"""The Ray Data pipeline on a real local Ray (2 CPUs) over real prepared Fashion-MNIST shards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslray.data.augment import AugmentConfig, EvalViewSpec
from sslray.data.pipeline import EpochViews, MapTasks, eval_dataset, open_prepared, views_dataset
from sslray.data.shards import ShardOptions, prepare
from sslray.errors import UserError

ROWS = 300


@pytest.fixture(scope="module")
def fmnist_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare("fashion-mnist", out, split="train", limit=ROWS, options=ShardOptions(rows_per_shard=100, workers=1))
    return str(out / "train")


def collect(ds) -> dict[str, np.ndarray]:
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def by_id(rows: dict[str, np.ndarray], column: str) -> dict[str, np.ndarray]:
    return dict(zip(rows["id"].tolist(), rows[column]))


def test_open_prepared_describes_the_split(fmnist_small):
    prepared = open_prepared(fmnist_small)
    assert prepared.num_rows == ROWS and len(prepared.files) == 3 and prepared.classes[0] == "T-shirt/top"


def test_views_have_recipe_shapes_and_dtypes(ray_local, fmnist_small):
    specs = AugmentConfig(recipe="dino", size=32, local_size=16, local_crops=3).view_specs()
    rows = collect(views_dataset(fmnist_small, EpochViews(specs, channels=3), MapTasks(batch_size=64)))
    assert len(rows["label"]) == ROWS
    assert sorted(rows) == ["label", "view_0", "view_1", "view_2", "view_3", "view_4"]
    assert rows["view_0"].shape == (ROWS, 3, 32, 32) and rows["view_4"].shape == (ROWS, 3, 16, 16)
    assert all(rows[k].dtype == np.uint8 for k in rows if k.startswith("view"))
    assert rows["label"].dtype == np.int64 and set(rows["label"]) <= set(range(10))
    differ = [(a != b).any() for a, b in zip(rows["view_0"], rows["view_1"])]
    assert all(differ)  # the two global views of every image differ


def test_torch_batches_for_training(ray_local, fmnist_small):
    specs = AugmentConfig(recipe="simclr", size=28).view_specs()
    ds = views_dataset(fmnist_small, EpochViews(specs, channels=1), MapTasks(batch_size=100))
    batches = list(ds.iter_torch_batches(batch_size=128, drop_last=True))
    assert len(batches) == ROWS // 128
    assert tuple(batches[0]["view_1"].shape) == (128, 1, 28, 28) and str(batches[0]["view_1"].dtype) == "torch.uint8"


def test_same_seed_and_epoch_give_same_views_whatever_the_batching(ray_local, fmnist_small):
    specs = AugmentConfig(recipe="byol", size=24).view_specs()
    first = collect(views_dataset(fmnist_small, EpochViews(specs, 3, seed=5, epoch=1), MapTasks(batch_size=64),
                                  with_ids=True))
    second = collect(views_dataset(fmnist_small, EpochViews(specs, 3, seed=5, epoch=1), MapTasks(batch_size=37),
                                   with_ids=True))
    a, b = by_id(first, "view_1"), by_id(second, "view_1")
    assert a.keys() == b.keys() and len(a) == ROWS
    assert all(np.array_equal(a[k], b[k]) for k in a)
    next_epoch = by_id(collect(views_dataset(fmnist_small, EpochViews(specs, 3, seed=5, epoch=2),
                                             MapTasks(batch_size=64), with_ids=True)), "view_1")
    other_seed = by_id(collect(views_dataset(fmnist_small, EpochViews(specs, 3, seed=6, epoch=1),
                                             MapTasks(batch_size=64), with_ids=True)), "view_1")
    assert sum(np.array_equal(a[k], next_epoch[k]) for k in a) < ROWS // 20
    assert sum(np.array_equal(a[k], other_seed[k]) for k in a) < ROWS // 20


def test_eval_images_are_deterministic_and_unaugmented(ray_local, fmnist_small):
    rows = collect(eval_dataset(fmnist_small, EvalViewSpec(size=28), channels=1, with_ids=True))
    first = pq.read_table(open_prepared(fmnist_small).files[0])
    from sslray.data.readers import fashion_mnist_arrays

    images, labels = fashion_mnist_arrays("train")
    index = int(first["id"][7].as_py().split("/")[1])
    got = by_id(rows, "image")[first["id"][7].as_py()]
    np.testing.assert_array_equal(got[0], images[index])  # 28 px eval of a 28 px image is the image
    assert by_id(rows, "label")[first["id"][7].as_py()] == labels[index]


def test_bad_prepared_paths_name_the_problem(tmp_path, fmnist_small):
    with pytest.raises(UserError, match="does not exist"):
        open_prepared(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .parquet shards"):
        open_prepared(str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pq.read_table(open_prepared(fmnist_small).files[0]), bad / "part-00000.parquet")
    pq.write_table(pa.table({"image": [b"x"], "label": ["cat"], "id": ["0"]}), bad / "part-00001.parquet")
    with pytest.raises(UserError, match=r"shard .*part-00001\.parquet: column 'label' has type string"):
        open_prepared(str(bad))
    with pytest.raises(UserError, match="choose 1 or 3"):
        views_dataset(fmnist_small, EpochViews(AugmentConfig().view_specs(), channels=2))


def test_row_groups_are_dealt_to_ranks_without_overlap(fmnist_small):
    from sslray.data.pipeline import epoch_row_groups, steps_per_epoch

    prepared = open_prepared(fmnist_small)
    shares = [epoch_row_groups(prepared, seed=0, epoch=0, rank=r, world=2) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(prepared.row_groups)
    limited = [u for r in range(2) for u in epoch_row_groups(prepared, seed=0, epoch=0, rank=r, world=2, limit=150)]
    assert sum(rows for _, _, rows in limited) == 150
    orders = {tuple(epoch_row_groups(prepared, seed=0, epoch=e, rank=0, world=1)) for e in range(6)}
    assert len(orders) > 1  # a new order each epoch
    assert steps_per_epoch(prepared, seed=0, epoch=0, world=2, batch_per_worker=50) == min(
        sum(n for _, _, n in s) for s in shares) // 50


def test_rank_views_repeat_exactly_for_the_same_seed_and_epoch(ray_local, fmnist_small):
    from sslray.data.pipeline import rank_views_dataset

    prepared = open_prepared(fmnist_small)
    specs = AugmentConfig(recipe="simclr", size=28).view_specs()

    def batches(epoch):
        ds = rank_views_dataset(prepared, EpochViews(specs, channels=1, seed=3, epoch=epoch), MapTasks(batch_size=64),
                                rank=1, world=2)
        return [b["view_0"] for b in ds.iter_torch_batches(batch_size=32, drop_last=True, local_shuffle_buffer_size=64,
                                                            local_shuffle_seed=epoch)]
    first, again, other = batches(0), batches(0), batches(1)
    assert len(first) == len(again) > 0 and all(a.equal(b) for a, b in zip(first, again))
    assert not all(a.equal(b) for a, b in zip(first, other))
