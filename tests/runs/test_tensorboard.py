import dataclasses
import io
import math
import time
from pathlib import Path

import pytest
import torch
from google.protobuf import json_format
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from sslray.runs.tensorboard import RunLogger, flatten_hparams


def read_events(log_dir: Path) -> event_accumulator.EventAccumulator:
    """Everything TensorBoard would load from ``log_dir`` (size guidance 0 = keep every event)."""
    accumulator = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    )
    return accumulator.Reload()


def scalar_series(events, tag):
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_scalars_are_written_under_section_tags_at_their_steps(tmp_path):
    with RunLogger(tmp_path) as logger:
        for step in range(3):
            logger.scalars({"loss": 4.0 - step, "lr": 0.1 * step}, step, prefix="train")
        logger.scalars({"knn_top1": 0.5, "knn_top5": torch.tensor(0.75)}, step=2, prefix="eval/")
        logger.scalars({"perf/images_per_s": 1234.0}, step=2)

    events = read_events(tmp_path)
    assert set(events.Tags()["scalars"]) == {
        "train/loss",
        "train/lr",
        "eval/knn_top1",
        "eval/knn_top5",
        "perf/images_per_s",
    }
    assert scalar_series(events, "train/loss") == [(0, 4.0), (1, 3.0), (2, 2.0)]
    assert [step for step, _ in scalar_series(events, "train/lr")] == [0, 1, 2]
    assert [value for _, value in scalar_series(events, "train/lr")] == pytest.approx([0.0, 0.1, 0.2])
    assert scalar_series(events, "eval/knn_top5") == [(2, 0.75)]
    assert scalar_series(events, "perf/images_per_s") == [(2, 1234.0)]


def test_non_finite_values_are_logged_not_dropped(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.scalars({"loss": float("nan"), "grad_norm": torch.tensor(float("inf"))}, step=7, prefix="train")
    events = read_events(tmp_path)
    [(step, loss)] = scalar_series(events, "train/loss")
    assert step == 7 and math.isnan(loss)
    assert scalar_series(events, "train/grad_norm") == [(7, math.inf)]


def test_a_value_that_is_not_a_number_is_an_error_naming_its_tag(tmp_path):
    with RunLogger(tmp_path) as logger, pytest.raises(TypeError, match="metric 'train/method' must be a number"):
        logger.scalars({"method": "simclr"}, step=0, prefix="train")


def decoded_image(events, tag):
    [event] = events.Images(tag)
    return event, Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")


def test_images_are_written_as_one_grid_with_their_uint8_values(tmp_path):
    grey = torch.full((10, 1, 8, 6), 200, dtype=torch.uint8)  # 10 images of 8 x 6, 4 per row -> 3 rows
    colour = torch.zeros(3, 3, 5, 5, dtype=torch.uint8)
    colour[:, 0], colour[:, 1], colour[:, 2] = 10, 20, 30
    with RunLogger(tmp_path) as logger:
        logger.images("views/global", grey, step=3, nrow=4)
        logger.images("views/local", colour, step=3)

    events = read_events(tmp_path)
    event, image = decoded_image(events, "views/global")
    # make_grid: 2-pixel borders around and between images
    assert event.step == 3 and (event.width, event.height) == (4 * (6 + 2) + 2, 3 * (8 + 2) + 2)
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((2, 2)) == (200, 200, 200)
    event, image = decoded_image(events, "views/local")
    assert (event.width, event.height) == (3 * (5 + 2) + 2, 5 + 2 + 2)
    assert image.getpixel((3, 3)) == (10, 20, 30)


@pytest.mark.parametrize(
    "images",
    [torch.rand(2, 3, 4, 4), torch.zeros(2, 2, 4, 4, dtype=torch.uint8), torch.zeros(3, 4, 4, dtype=torch.uint8)],
)
def test_images_that_are_not_uint8_nchw_grey_or_rgb_are_refused(tmp_path, images):
    with RunLogger(tmp_path) as logger, pytest.raises(ValueError, match=r"uint8 \[N, C, H, W\] with C = 1 or 3"):
        logger.images("views/global", images, step=0)


@dataclasses.dataclass
class OptimizerSection:
    name: str = "lars"
    lr: float = 0.3


def test_flatten_hparams_gives_dotted_keys_and_displayable_values():
    nested = {
        "method": {"name": "simclr", "temperature": 0.2, "head": {"layers": 2}},
        "train": {"epochs": 3, "amp": True, "lr": torch.tensor(0.5)},
        "data": {"classes": [0, 1], "crop": (0.2, 1.0), "limit": None, "path": Path("data/fmnist")},
        "optimizer": OptimizerSection(),
    }
    assert flatten_hparams(nested) == {
        "method.name": "simclr",
        "method.temperature": 0.2,
        "method.head.layers": 2,
        "train.epochs": 3,
        "train.amp": True,
        "train.lr": 0.5,
        "data.classes": "[0, 1]",
        "data.crop": "(0.2, 1.0)",
        "data.limit": "None",
        "data.path": "data/fmnist",
        "optimizer.name": "lars",
        "optimizer.lr": 0.3,
    }
    with pytest.raises(ValueError, match="'method.temperature' is given twice"):
        flatten_hparams({"method.temperature": 0.1, "method": {"temperature": 0.2}})


def hparams_plugin_data(events) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    contents = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content) for tag, content in contents.items()}


def test_hparams_are_written_into_the_run_folder_for_the_hparams_tab(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.scalars({"knn_top1": 0.6}, step=10, prefix="eval")
        logger.hparams(
            {"method": {"name": "simclr", "temperature": 0.2}, "train": {"epochs": 3, "amp": True}, "seed": None},
            {"knn_top1": 0.6, "loss": float("nan")},
            step=10,
        )
        logger.session_end("failed", step=10)
        logger.session_end("done", step=11)  # TensorBoard keeps a run's first status: this one is ignored

    [event_file] = tmp_path.iterdir()  # one run: no timestamped sub-folder as SummaryWriter.add_hparams makes
    assert event_file.name.startswith("events.out.tfevents.")
    events = read_events(tmp_path)
    plugin_data = hparams_plugin_data(events)
    assert set(plugin_data) == {
        hparams_metadata.EXPERIMENT_TAG,
        hparams_metadata.SESSION_START_INFO_TAG,
        hparams_metadata.SESSION_END_INFO_TAG,
    }
    session_start_info = plugin_data[hparams_metadata.SESSION_START_INFO_TAG].session_start_info
    session_start = json_format.MessageToDict(session_start_info)
    assert session_start["hparams"] == {
        "method.name": "simclr",
        "method.temperature": 0.2,
        "train.epochs": 3,
        "train.amp": "True",
        "seed": "None",
    }
    assert plugin_data[hparams_metadata.SESSION_END_INFO_TAG].session_end_info.status == api_pb2.STATUS_FAILURE
    experiment = plugin_data[hparams_metadata.EXPERIMENT_TAG].experiment
    assert {info.name for info in experiment.hparam_infos} == set(session_start["hparams"])
    assert [info.name.tag for info in experiment.metric_infos] == ["hparams/knn_top1", "hparams/loss"]
    # the HParams table reads each metric from the scalar of the same tag
    assert scalar_series(events, "hparams/knn_top1") == [(10, pytest.approx(0.6))]
    assert math.isnan(scalar_series(events, "hparams/loss")[0][1])
    assert scalar_series(events, "eval/knn_top1") == [(10, pytest.approx(0.6))]  # the curve has no extra point


def test_a_disabled_logger_writes_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # SummaryWriter's default folder would be ./runs
    with RunLogger(None) as logger:
        assert not logger.enabled and logger.log_dir is None
        logger.scalars({"loss": 1.0}, step=0, prefix="train")
        logger.images("views/global", torch.zeros(2, 3, 4, 4, dtype=torch.uint8), step=0)
        logger.hparams({"method": {"name": "simclr"}}, {"knn_top1": 0.5})
        logger.flush()
    assert list(tmp_path.iterdir()) == []


def test_logging_after_close_is_an_error_and_closing_twice_is_fine(tmp_path):
    logger = RunLogger(tmp_path / "run")
    assert logger.enabled and logger.log_dir == tmp_path / "run"
    logger.scalars({"loss": 1.0}, step=0, prefix="train")
    logger.close()
    logger.close()
    with pytest.raises(RuntimeError, match="is closed"):
        logger.scalars({"loss": 1.0}, step=1, prefix="train")
    assert scalar_series(read_events(tmp_path / "run"), "train/loss") == [(0, 1.0)]


def test_a_resumed_run_replaces_the_steps_logged_after_its_checkpoint(tmp_path):
    with RunLogger(tmp_path) as logger:
        for step in range(5):
            logger.scalars({"loss": float(step)}, step, prefix="train")
    # Event files are read in name order and names start with the time in whole seconds: let it tick.
    started = int(time.time())
    while int(time.time()) == started:
        time.sleep(0.05)
    with RunLogger(tmp_path, resume_from_step=3) as logger:
        for step in (3, 4):
            logger.scalars({"loss": 10.0 * step}, step, prefix="train")
    expected = [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert scalar_series(read_events(tmp_path), "train/loss") == expected
