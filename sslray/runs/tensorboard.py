"""The run's TensorBoard writer, used by rank 0 of the Ray Train worker loop.

Ray Train writes no event files, so rank 0 writes its own into the run folder (Ray Tune writes its
per-trial files separately). Other ranks hold a ``RunLogger(None)``: every method is then a no-op, so
the worker loop calls the same methods on every rank without ``if rank == 0`` around each one.

Tags are ``<section>/<metric>``: the metric is one of the shared names of docs/architecture.md (``loss``,
``knn_top1``, ``lr``, ...), the section says when it was measured, so curves of different methods and
trials line up in TensorBoard:

    train/    per optimizer step: loss and the method's named scalars, lr, momentum
    eval/     per evaluation: knn_top1, knn_top5, embed_std, linear_top1
    perf/     throughput: images_per_s, data_wait_frac
    hparams/  the run's final metrics, written by ``hparams`` for the HParams tab
    views/    image grids of augmented views (``images``)

``scalars(metrics, step, prefix="train")`` writes ``train/<name>``; with ``prefix=""`` the names are
used as given. Non-finite values (a diverging loss) are logged as NaN/inf, never dropped: the point
where a run blew up is what one wants to see.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from torchvision.utils import make_grid

HParamValue = str | bool | int | float


def flatten_hparams(hparams: Mapping[str, Any], parent: str = "") -> dict[str, HParamValue]:
    """Nested hyperparameters as one level of dotted keys with values TensorBoard can show.

    ``{"method": {"temperature": 0.2}}`` -> ``{"method.temperature": 0.2}``. Dataclasses (the config
    sections) are flattened like dicts. str, bool, int and float are kept (numpy/0-d tensor numbers
    become int or float); anything else (lists, tuples, None, paths) becomes its ``str``.
    """
    flat: dict[str, HParamValue] = {}
    for key, value in hparams.items():
        name = f"{parent}.{key}" if parent else str(key)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, Mapping):
            nested = flatten_hparams(value, name)
        elif isinstance(value, (str, bool, int, float)):
            nested = {name: value}
        elif isinstance(value, numbers.Integral):
            nested = {name: int(value)}
        elif isinstance(value, numbers.Real):
            nested = {name: float(value)}
        else:
            nested = {name: str(value)}
        for duplicate in nested.keys() & flat.keys():
            raise ValueError(f"hyperparameter '{duplicate}' is given twice (once nested, once dotted)")
        flat.update(nested)
    return flat


# TensorBoard's HParams statuses are success, failure, running and unknown: a run that a scheduler, a collapse
# check or an interrupt stopped is "unknown" there (not a success); the leaderboard says why it stopped.
HPARAMS_STATUS = {"done": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "stopped": "STATUS_UNKNOWN"}


def run_status(stop_reason: str | None, finished: bool) -> str:
    """A run's ``HPARAMS_STATUS`` key from how its loop ended."""
    if stop_reason and stop_reason.startswith("diverged"):
        return "failed"
    return "stopped" if stop_reason or not finished else "done"


class RunLogger:
    """Scalars, image grids and hyperparameters of one run, as TensorBoard event files in ``log_dir``.

    ``log_dir=None`` disables the logger (ranks other than 0): nothing is written or created.
    ``resume_from_step``: when a resumed run logs into the folder of an interrupted one, TensorBoard
    hides the old events at steps >= this step, so the curves show the resumed run only from there.
    Usable as a context manager; after ``close`` every method but ``close`` raises.
    """

    def __init__(self, log_dir: str | Path | None, resume_from_step: int | None = None):
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer = None if log_dir is None else SummaryWriter(str(log_dir), purge_step=resume_from_step)
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def _writing(self) -> bool:
        """Whether to write: False when disabled; an error after ``close`` (the data would be lost)."""
        if self._closed:
            raise RuntimeError(f"RunLogger({self.log_dir}) is closed; nothing more can be logged")
        return self._writer is not None

    def scalars(self, metrics: Mapping[str, float | Tensor], step: int, prefix: str = "") -> None:
        """Write each ``metrics[name]`` at ``step`` under tag ``<prefix>/<name>`` (``<name>`` if no prefix).

        Values may be Python numbers or one-element tensors (read here, so on a GPU this waits for it).
        """
        if not self._writing():
            return
        for name, value in metrics.items():
            tag = f"{prefix.rstrip('/')}/{name}" if prefix else name
            try:
                number = float(value)
            except (TypeError, ValueError, RuntimeError) as err:
                message = f"metric '{tag}' must be a number, got {type(value).__name__} {value!r}"
                raise TypeError(message) from err
            self._writer.add_scalar(tag, number, step)

    def images(self, tag: str, images_uint8: Tensor, step: int, nrow: int = 8) -> None:
        """Write a batch of uint8 images [N, C, H, W] (C = 1 or 3) as one grid, ``nrow`` images a row.

        The grid has 2-pixel black borders (``torchvision.utils.make_grid``); grey images become RGB.
        """
        if not self._writing():
            return
        shape = tuple(images_uint8.shape)
        if images_uint8.dtype != torch.uint8 or len(shape) != 4 or shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 [N, C, H, W] with C = 1 or 3, got {images_uint8.dtype} of shape {shape}"
            )
        grid = make_grid(images_uint8.detach().cpu(), nrow=nrow)  # [3, H', W'] uint8
        # TensorBoard writes uint8 pixels as they are (floats would be taken as [0, 1] and scaled by 255).
        self._writer.add_image(tag, grid, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int = 0) -> None:
        """Record the run's hyperparameters and final metrics for TensorBoard's HParams tab.

        ``hparams`` may be nested (flattened to dotted keys by ``flatten_hparams``). Each metric is
        written as scalar ``hparams/<name>`` at ``step``, which the HParams table reads; its own
        section keeps the ``eval/`` curves free of an extra point. The three HParams summaries go into
        this run's own event file (``SummaryWriter.add_hparams`` would open a timestamped sub-folder,
        which TensorBoard shows as a second run without the curves). Under a sweep's TensorBoard root
        the HParams tab takes its columns from one run's summary, so every trial should log the same
        keys (its whole resolved config does).
        """
        if not self._writing():
            return
        # torch's summary tests isinstance(v, (int, float)) first, so a bool would become the number
        # 1.0 / 0.0; as the string "True" / "False" it shows and filters as a category.
        flat = flatten_hparams(hparams)
        values = {name: str(value) if isinstance(value, bool) else value for name, value in flat.items()}
        metric_tags = {f"hparams/{name}": value for name, value in metrics.items()}
        # No session end here: TensorBoard keeps the first one a run writes (first metadata of a tag wins),
        # and a run's status is known only when it ends (``session_end``).
        experiment, session_start, _ = hparams_summaries(values, metric_tags)
        for summary in (experiment, session_start):
            self._writer.file_writer.add_summary(summary, step)
        self.scalars(metric_tags, step)

    def session_end(self, status: str, step: int) -> None:
        """The run's status in the HParams table: one of ``HPARAMS_STATUS`` (done, failed: diverged or an
        error, stopped: by a scheduler, a collapse check or an interrupt). Only a run's first counts."""
        if not self._writing():
            return
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2
        from tensorboard.plugins.hparams.api_pb2 import Status

        end = plugin_data_pb2.SessionEndInfo(status=Status.Value(HPARAMS_STATUS[status]))
        content = plugin_data_pb2.HParamsPluginData(session_end_info=end, version=metadata.PLUGIN_DATA_VERSION)
        plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
        summary = Summary(
            value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin))]
        )
        self._writer.file_writer.add_summary(summary, step)

    def flush(self) -> None:
        """Write pending events to disk now (otherwise at most every 2 minutes, and at ``close``)."""
        if self._writing():
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; closing twice is fine."""
        if self._writer is not None and not self._closed:
            self._writer.close()
        self._closed = True

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
