"""Where the worker loop runs: a Ray Train worker, or in-process inside a Ray Tune trial.

The loop (``sslray.train.worker.run_worker``) needs five things from its surroundings: its rank and
world size, its device, a way to wrap the model (DDP or nothing), the checkpoint to resume from, and
a way to report metrics and checkpoints. Two sessions provide them:

- ``RayTrainSession``: inside a ``TorchTrainer`` worker (``ray.train.*``). Ray Train restores the
  worker group from the last reported checkpoint; Tune sees only rank 0's metrics via
  ``TuneReportCallback`` and gets no checkpoint of its own (docs/ray.md §5).
- ``TuneTrialSession``: a single-worker trial running the loop directly in the Tune function
  (about 1 s to start instead of ~30 s for a TorchTrainer). It reports checkpoints to Tune itself
  with ``tune.report``, which is what lets PBT copy a good trial's weights into a bad one and lets
  ``Tuner.restore`` continue an unfinished trial; ``tune.get_checkpoint`` hands them back.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch


class WorkerSession(Protocol):
    rank: int
    world: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def get_checkpoint(self) -> Any: ...  # a ray Checkpoint or None

    def checkpoint(self, folder: str) -> Any: ...  # a folder as the Checkpoint type report takes

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None: ...


class RayTrainSession:
    """A Ray Train worker: DDP across ``world`` ranks; every rank reports, rank 0 with the checkpoint."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def get_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def checkpoint(self, folder: str):
        import ray.train

        return ray.train.Checkpoint.from_directory(folder)

    def report(self, metrics: dict[str, Any], checkpoint=None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=checkpoint)


class TuneTrialSession:
    """One worker inside a Tune function trial: rank 0 of 1, the trial's own device, no DDP wrapper."""

    rank, world = 0, 1

    def __init__(self, use_gpu: bool = False) -> None:
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        # Ray Data announces every dataset it runs (several per epoch); the sweep's output is the
        # status table and the epoch lines.
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def get_checkpoint(self):
        from ray import tune

        return tune.get_checkpoint()

    def checkpoint(self, folder: str):
        from ray import tune

        return tune.Checkpoint.from_directory(folder)

    def report(self, metrics: dict[str, Any], checkpoint=None) -> None:
        from ray import tune

        tune.report(metrics, checkpoint=checkpoint)
