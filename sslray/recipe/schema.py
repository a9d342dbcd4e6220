"""The sections of a recipe declared here (``data``, ``train``, ``scaling``) and ``Recipe``, which holds
them with the sections declared next to the code they configure: the method's knobs (its file in
``sslray.methods``), ``backbone`` (``sslray.nn.backbones``) and ``optim`` (``sslray.nn.optim``).

Each section checks its own values (``validate``); checks across sections are ``sslray.recipe.validate``'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sslray.data.augment import AugmentConfig, EvalViewSpec
from sslray.errors import UserError
from sslray.nn.backbones import BackboneConfig
from sslray.nn.optim import OptimizerConfig
from sslray.sections import check_range


@dataclass
class DataConfig:
    # Keys that name a location: made absolute (docs/architecture.md) before a Ray worker reads them.
    PATH_KEYS: ClassVar[tuple[str, ...]] = ("path", "knn_bank", "knn_query")

    path: str = "data/fmnist/train"  # prepared split to pretrain on (`make data` writes this one)
    limit: int | None = None  # pretrain on the first N images only (quick runs)
    channels: int = 1  # 1 (grayscale) or 3 (RGB); images are converted on decode
    mean: list[float] = field(default_factory=lambda: [0.2860])  # per channel; Fashion-MNIST train statistics
    std: list[float] = field(default_factory=lambda: [0.3530])
    knn_bank: str | None = "data/fmnist/train"  # labeled split whose features vote in the online kNN
    knn_query: str | None = "data/fmnist/test"  # held-out split scored by the online kNN; None turns it off
    knn_bank_limit: int | None = 10_000  # bank size cap: kNN cost grows with bank x queries
    knn_query_limit: int | None = 2_000
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(recipe=None))
    eval_view: EvalViewSpec = field(default_factory=EvalViewSpec)
    cpus_per_task: float = 1.0  # CPUs per Ray Data decode/augment task
    # Ray node labels that decode/augment tasks must run on, e.g. {sslray-role: data} for CPU-only data
    # nodes started with `ray start --labels sslray-role=data` (jobs/cluster.yaml): GPU nodes then only
    # receive finished uint8 batches. None: anywhere Ray finds CPUs.
    label_selector: dict[str, str] | None = None

    def validate(self) -> None:
        if self.channels not in (1, 3):
            raise UserError(f"data.channels: {self.channels!r} is not allowed; choose 1 or 3")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.channels:
                raise UserError(f"data.{name}: {values} has {len(values)} values; data.channels is {self.channels}")
        for i, s in enumerate(self.std):
            check_range(f"data.std[{i}]", s, 0.0, None, low_open=True)
        for name in ("limit", "knn_bank_limit", "knn_query_limit"):
            if getattr(self, name) is not None:
                check_range(f"data.{name}", getattr(self, name), 1, None)
        check_range("data.cpus_per_task", self.cpus_per_task, 0.0, None, low_open=True)


@dataclass
class TrainConfig:
    epochs: int = 100  # passes over data.path (the lr / momentum schedules span them all)
    stop_at_epoch: int | None = None  # stop after this epoch, schedule unchanged; continue with --resume
    batch_size: int = 256  # global batch: split evenly across scaling.num_workers
    warmup_epochs: int = 10  # linear lr warm-up, then cosine decay (SimCLR, MAE, DINO)
    final_lr_fraction: float = 0.0  # lr at the end of the cosine, as a fraction of the peak
    grad_accum_steps: int = 1  # optimizer step every N batches
    # auto: bf16 on a GPU that has it, else fp16 (with loss scaling); fp32 on CPU. Or fp32 | bf16 | fp16.
    precision: str = "auto"
    # torch.compile the backbones (ResNet: whole net; ViT: its blocks) before training. The first steps
    # take longer (compiling); afterwards GPU steps are faster. Checkpoints are the same either way.
    compile: bool = False
    seed: int = 0  # 0 .. 2**32 - 1 (numpy's and Ray's seeds are 32-bit)
    checkpoint_every: int = 1  # epochs between checkpoints
    keep_checkpoints: int = 2  # latest K kept, plus the best by knn_top1
    knn_every: int = 1  # epochs between online kNN evaluations (0: never)
    knn_k: int = 200  # neighbours (Wu et al., 2018)
    knn_temperature: float = 0.1  # vote weight exp(sim / T) (Wu et al., 2018)
    # After the last epoch, a linear probe of this many epochs on the kNN splits' features, reported as
    # linear_top1 (a sweep's tune.metric may be linear_top1); 0: none.
    linear_probe_epochs: int = 0
    # Restarts after a failure (a killed worker, a lost node), each from the last checkpoint: Ray Train's
    # worker group, or a sweep's trial. A diverged or collapsed run stops without one (it would recur).
    max_failures: int = 2
    sync_batchnorm: bool = False  # SyncBN across workers (MoCo v2 alternative to shuffled BN)
    # Stop when the online embed_std falls below this (0: never). Well-spread L2-normalised embeddings
    # give about 1/sqrt(D) (0.04-0.09 for D = 128-512); a collapsed one ~0 (SimSiam, sec. 4.1).
    collapse_std: float = 1e-3

    def validate(self) -> None:
        for name, low in (
            ("epochs", 1),
            ("batch_size", 1),
            ("warmup_epochs", 0),
            ("grad_accum_steps", 1),
            ("checkpoint_every", 1),
            ("keep_checkpoints", 1),
            ("knn_every", 0),
            ("knn_k", 1),
            ("linear_probe_epochs", 0),
            ("max_failures", 0),
        ):
            check_range(f"train.{name}", getattr(self, name), low, None)
        check_range("train.final_lr_fraction", self.final_lr_fraction, 0.0, 1.0)
        check_range("train.seed", self.seed, 0, 2**32 - 1)
        if self.stop_at_epoch is not None:
            check_range("train.stop_at_epoch", self.stop_at_epoch, 1, self.epochs)
        check_range("train.knn_temperature", self.knn_temperature, 0.0, None, low_open=True)
        check_range("train.collapse_std", self.collapse_std, 0.0, 1.0)
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(f"train.precision: {self.precision!r} is not allowed; choose auto, fp32, bf16 or fp16")


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class ScalingConfig:
    num_workers: int = 1  # Ray Train workers (DDP ranks)
    use_gpu: bool = False  # one GPU per worker when true
    cpus_per_worker: float | None = None  # None: derived from the cluster, leaving CPUs to Ray Data
    # How Ray places the workers (a placement group): PACK (few nodes), SPREAD, STRICT_PACK (one node) or
    # STRICT_SPREAD (one worker per node). A 1-worker run trains in-process and ignores it.
    placement_strategy: str = "PACK"
    # Node labels the workers must run on, e.g. {sslray-role: train}; None: any node.
    label_selector: dict[str, str] | None = None

    def validate(self) -> None:
        check_range("scaling.num_workers", self.num_workers, 1, None)
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise UserError(
                f"scaling.placement_strategy: {self.placement_strategy!r} is not allowed; "
                f"choose {', '.join(PLACEMENT_STRATEGIES)}"
            )
        if self.cpus_per_worker is not None:
            check_range("scaling.cpus_per_worker", self.cpus_per_worker, 0.0, None, low_open=True)


# The sections of a recipe, in their YAML (and ``to_dict``) order.
SECTIONS = ("method", "backbone", "data", "optim", "train", "scaling")


@dataclass
class Recipe:
    """A validated recipe. ``method`` is the method's own config dataclass (its knobs, typed and range-
    checked once, by ``sslray.methods.registry.method_config``); ``method_name`` says which method."""

    method_name: str  # a key of sslray.methods.registry.METHODS
    method: Any  # an instance of METHODS[method_name].config
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ``{"method": {"name": ..., knobs...}, "backbone": {...}, ...}``: the YAML shape
        that run folders' config.yaml, checkpoints and sweep hyperparameters record."""
        data = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        data["method"] = {"name": self.method_name, **data["method"]}
        return data
