"""The YAML recipe: one file fixes every value of a run (shared/DESIGN.md, "One YAML schema").

Sections: ``method`` (name + knobs, see each method's config), ``backbone``, ``data``, ``optim``,
``train``, ``scaling``. A search space is the same file with distributions in place of some values
(``{loguniform: [1e-4, 1e-2]}``); ``sslray train`` refuses those, ``sslray sweep`` explores them.

Loading is ``yaml.safe_load`` only (``!!python`` tags are refused), then ``key.path=value`` overrides
from the command line, then validation: unknown keys, wrong types and values out of range are
``UserError``s that name the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sslray.data.augment import AugmentConfig, EvalViewSpec
from sslray.errors import UserError
from sslray.methods.registry import check_method_backbone, method_config
from sslray.nn.backbones import BackboneConfig, check_backbone_config
from sslray.nn.optim import OptimizerConfig
from sslray.sections import check_range, section_from_dict

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")

# The view recipe each method's paper uses when data.augment.recipe is not given.
DEFAULT_VIEWS = {"simclr": "simclr", "moco_v2": "simclr", "moco_v3": "byol", "byol": "byol",
                 "simsiam": "simclr", "dino": "dino", "mae": "mae", "macrl": "macrl", "ijepa": "ijepa",
                 "vicreg": "byol", "barlow_twins": "byol"}


@dataclass
class DataConfig:
    path: str = "data/fmnist/train"            # prepared split to pretrain on (`make data` writes this one)
    limit: int | None = None                   # pretrain on the first N images only (quick runs)
    channels: int = 1                          # 1 (grayscale) or 3 (RGB); images are converted on decode
    mean: list[float] = field(default_factory=lambda: [0.2860])  # per channel; Fashion-MNIST train statistics
    std: list[float] = field(default_factory=lambda: [0.3530])
    knn_bank: str | None = "data/fmnist/train"  # labeled split whose features vote in the online kNN
    knn_query: str | None = "data/fmnist/test"  # held-out split scored by the online kNN; None turns it off
    knn_bank_limit: int | None = 10_000        # bank size cap: kNN cost grows with bank x queries
    knn_query_limit: int | None = 2_000
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(recipe=None))
    eval_view: EvalViewSpec = field(default_factory=EvalViewSpec)
    cpus_per_task: float = 1.0                 # CPUs per Ray Data decode/augment task
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
    epochs: int = 100                  # passes over data.path (the lr / momentum schedules span them all)
    stop_at_epoch: int | None = None   # stop after this epoch, schedule unchanged; continue with --resume
    batch_size: int = 256              # global batch: split evenly across scaling.num_workers
    warmup_epochs: int = 10            # linear lr warm-up, then cosine decay (SimCLR, MAE, DINO)
    final_lr_fraction: float = 0.0     # lr at the end of the cosine, as a fraction of the peak
    grad_accum_steps: int = 1          # optimizer step every N batches
    # auto: bf16 on a GPU that has it, else fp16 (with loss scaling); fp32 on CPU. Or fp32 | bf16 | fp16.
    precision: str = "auto"
    # torch.compile the backbones (ResNet: whole net; ViT: its blocks) before training. The first steps
    # take longer (compiling); afterwards GPU steps are faster. Checkpoints are the same either way.
    compile: bool = False
    seed: int = 0
    checkpoint_every: int = 1          # epochs between checkpoints
    keep_checkpoints: int = 2          # latest K kept, plus the best by knn_top1
    knn_every: int = 1                 # epochs between online kNN evaluations (0: never)
    knn_k: int = 200                   # neighbours (Wu et al., 2018)
    knn_temperature: float = 0.1       # vote weight exp(sim / T) (Wu et al., 2018)
    # After the last epoch, a linear probe of this many epochs on the kNN splits' features, reported as
    # linear_top1 (a sweep's tune.metric may be linear_top1); 0: none.
    linear_probe_epochs: int = 0
    # Restarts after a failure (a killed worker, a lost node), each from the last checkpoint: Ray Train's
    # worker group, or a sweep's trial. A diverged or collapsed run stops without one (it would recur).
    max_failures: int = 2
    sync_batchnorm: bool = False       # SyncBN across workers (MoCo v2 alternative to shuffled BN)
    # Stop when the online embed_std falls below this (0: never). Well-spread L2-normalised embeddings
    # give about 1/sqrt(D) (0.04-0.09 for D = 128-512); a collapsed one ~0 (SimSiam, sec. 4.1).
    collapse_std: float = 1e-3

    def validate(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("warmup_epochs", 0), ("grad_accum_steps", 1),
                          ("checkpoint_every", 1), ("keep_checkpoints", 1), ("knn_every", 0), ("knn_k", 1),
                          ("linear_probe_epochs", 0),
                          ("max_failures", 0)):
            check_range(f"train.{name}", getattr(self, name), low, None)
        check_range("train.final_lr_fraction", self.final_lr_fraction, 0.0, 1.0)
        if self.stop_at_epoch is not None:
            check_range("train.stop_at_epoch", self.stop_at_epoch, 1, self.epochs)
        check_range("train.knn_temperature", self.knn_temperature, 0.0, None, low_open=True)
        check_range("train.collapse_std", self.collapse_std, 0.0, 1.0)
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(f"train.precision: {self.precision!r} is not allowed; choose auto, fp32, bf16 or fp16")


@dataclass
class ScalingConfig:
    num_workers: int = 1               # Ray Train workers (DDP ranks)
    use_gpu: bool = False              # one GPU per worker when true
    cpus_per_worker: float | None = None  # None: derived from the cluster, leaving CPUs to Ray Data

    def validate(self) -> None:
        check_range("scaling.num_workers", self.num_workers, 1, None)
        if self.cpus_per_worker is not None:
            check_range("scaling.cpus_per_worker", self.cpus_per_worker, 0.0, None, low_open=True)


@dataclass
class Recipe:
    method: dict[str, Any]             # name + knobs; validated by sslray.methods.registry.method_config
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)

    @property
    def method_name(self) -> str:
        return self.method["name"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MAX_DEPTH = 32          # a recipe nests 4 levels; deeper is a mistake, and validation walks it recursively
MAX_VALUES = 100_000    # values once YAML aliases are expanded: "billion laughs" is refused, not walked


def check_tree(data: Any, where: str, depth: int = 0) -> None:
    """Refuse YAML that validation could not walk: an alias inside itself (``&a [*a]``), nesting
    deeper than ``MAX_DEPTH``, or aliases that expand to more than ``MAX_VALUES`` values."""
    count = 0
    active: set[int] = set()  # containers on the current path: meeting one again is a cycle

    def walk(node: Any, level: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"{where}: more than {MAX_VALUES:,} values once YAML aliases (*name) are expanded; "
                            "a recipe is far smaller")
        if not isinstance(node, (dict, list)):
            return
        if id(node) in active:
            raise UserError(f"{where}: a YAML alias (*name) points to a value that contains it; "
                            "a recipe cannot be recursive")
        if level >= MAX_DEPTH:
            raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep; a recipe has sections of keys")
        active.add(id(node))
        for child in node.values() if isinstance(node, dict) else node:
            walk(child, level + 1)
        active.discard(id(node))

    walk(data, depth)


def parse_yaml(text: str | bytes, where: str) -> Any:
    """``yaml.safe_load`` whose every failure is a one-line UserError starting with ``where`` (and the
    line:column when the parser knows it)."""
    try:
        data = yaml.safe_load(text)
    except yaml.reader.ReaderError as err:  # bytes that are not UTF-8, or characters YAML forbids
        if err.encoding == "unicode":  # decoded fine, but a control character YAML does not allow
            problem = (f"character U+{err.character:04X} at offset {err.position} is not allowed in YAML "
                       "(control characters other than tab and newline)")
        else:
            problem = (f"not {err.encoding.upper()} text (byte {err.character:#04x} at offset {err.position}); "
                       "save it as UTF-8")
        raise UserError(f"{where}: {problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(err, "problem", None) or str(err)
        if "constructor for the tag" in problem:
            problem += " (sslray reads YAML with safe_load: no Python tags)"
        raise UserError(f"{at}: {problem}") from None
    except RecursionError:  # the parser recurses per nesting level
        raise UserError(f"{where}: nested far too deeply (more than {MAX_DEPTH} levels)") from None
    check_tree(data, where)
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file with ``safe_load``; syntax errors and unsafe tags name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        raw = path.read_bytes()  # bytes: the YAML reader detects UTF-8/16 and reports bad bytes
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror or err})") from None
    data = parse_yaml(raw, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections (method:, data:, ...), got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=1", "method.temperature=0.2"]`` applied to a copy of ``data``; values are YAML."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"override {override!r}: expected key.path=value, e.g. train.epochs=1")
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise UserError(f"override {override!r}: more than {MAX_DEPTH} parts in the key")
        value = parse_yaml(text, f"override {override!r}: the value")
        check_tree(value, f"override {override!r}: the value", depth=len(parts))
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {override!r}: {'.'.join(parts[:depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def find_distributions(data: Any, where: str = "") -> list[str]:
    """Dotted keys whose value is a search distribution (``{choice: [...]}`` and friends)."""
    if isinstance(data, dict):
        if len(data) == 1 and next(iter(data)) in DISTRIBUTIONS:
            return [where]
        return [k for key, value in data.items() for k in find_distributions(value, f"{where}.{key}".strip("."))]
    return []


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a recipe dict (no distributions left) into a ``Recipe``."""
    sections = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - sections, key=str)  # YAML keys may be numbers, null, dates
    if unknown:
        raise UserError(f"{unknown[0]}: unknown section; allowed: {', '.join(sorted(sections))}")
    left = find_distributions(data)
    if left:
        raise UserError(f"{left[0]}: is a search distribution; `sslray train` needs fixed values "
                        "(explore it with `sslray sweep`)")
    name, knobs = method_config(data.get("method"))
    recipe = Recipe(
        method={"name": name, **dataclasses.asdict(knobs)},
        backbone=section_from_dict(BackboneConfig, data.get("backbone"), "backbone"),
        data=section_from_dict(DataConfig, data.get("data"), "data"),
        optim=section_from_dict(OptimizerConfig, data.get("optim"), "optim"),
        train=section_from_dict(TrainConfig, data.get("train"), "train"),
        scaling=section_from_dict(ScalingConfig, data.get("scaling"), "scaling"),
    )
    if recipe.data.augment.recipe is None:
        recipe.data.augment.recipe = DEFAULT_VIEWS[name]
    if recipe.data.eval_view.size is None:
        recipe.data.eval_view.size = recipe.data.augment.size
    check_backbone_config(recipe.backbone)  # here, not only when a Ray worker builds the model
    for section in (recipe.data, recipe.train, recipe.scaling):
        section.validate()
    recipe.data.augment.view_specs()  # validates every view
    recipe.data.eval_view.validate("data.eval_view")
    _check_across_sections(recipe)
    return recipe


def _check_across_sections(recipe: Recipe) -> None:
    if recipe.backbone.in_chans != recipe.data.channels:
        raise UserError(f"backbone.in_chans: {recipe.backbone.in_chans} but data.channels is "
                        f"{recipe.data.channels}; they must match")
    check_method_backbone(recipe.method_name, recipe.backbone)
    workers = recipe.scaling.num_workers
    sync_bn = ("train.sync_batchnorm" if recipe.train.sync_batchnorm
               else "method.bn_mode" if recipe.method.get("bn_mode") == "sync" else None)
    if sync_bn and workers > 1 and not recipe.scaling.use_gpu:
        # torch's SyncBatchNorm refuses CPU tensors once there is more than one rank to sync with.
        raise UserError(f"{sync_bn}: SyncBatchNorm runs on GPUs only, and scaling.use_gpu is false with "
                        f"{workers} workers; on CPUs use method.bn_mode: shuffle (MoCo) or plain BatchNorm")
    if recipe.train.batch_size % workers:
        raise UserError(f"train.batch_size: {recipe.train.batch_size} does not split evenly across "
                        f"scaling.num_workers={workers}; use a multiple of {workers}")
    if recipe.backbone.name.startswith("vit") and recipe.backbone.img_size != recipe.data.augment.size:
        raise UserError(f"backbone.img_size: {recipe.backbone.img_size} but data.augment.size is "
                        f"{recipe.data.augment.size}; a ViT needs the crop size it was built for")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe file."""
    return recipe_from_dict(apply_overrides(read_yaml(path), list(overrides)))
