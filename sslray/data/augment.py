"""View recipes per method family, and the batch function that turns encoded images into uint8 views.

A recipe is a list of ``ViewSpec`` (one per view; global crops first, then local crops), chosen by
name in the YAML (``data.augment.recipe``) and adjustable there: ``size`` / ``local_size`` set the
crop sides, ``global_view`` / ``local_view`` override fields of every global / local view, and
``views`` overrides view by view (e.g. BYOL's asymmetric blur).

Views leave here as uint8 (``[B, C, size, size]``); normalisation to float happens on the training
device, so a quarter of the bytes cross the network (docs/architecture.md, "uint8 until the device").
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_image

from sslray.sections import check_range, section_from_dict
from sslray.data import batched_transforms as BT
from sslray.errors import UserError


@dataclass
class ViewSpec:
    """One augmented view. Defaults are SimCLR's ImageNet pipeline (Chen et al., 2020, App. A)."""
    size: int = 224                                  # output side, pixels
    scale: tuple[float, float] = (0.08, 1.0)         # RandomResizedCrop area fraction (Szegedy et al., 2015)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)      # RandomResizedCrop aspect range
    flip_p: float = 0.5                              # horizontal flip probability
    jitter_p: float = 0.8                            # colour jitter probability
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)  # brightness, contrast, saturation, hue (s=1)
    gray_p: float = 0.2                              # random grayscale probability
    blur_p: float = 0.5                              # Gaussian blur probability
    blur_sigma: tuple[float, float] = (0.1, 2.0)     # blur sigma range, pixels
    solarize_p: float = 0.0                          # solarize probability (BYOL's second view: 0.2)

    @property
    def changes_colour(self) -> bool:
        """False for crop-and-flip views (MAE, I-JEPA): they never need float pixels."""
        return any(p > 0 for p in (self.jitter_p, self.gray_p, self.blur_p, self.solarize_p))

    def validate(self, where: str) -> None:
        check_range(f"{where}.size", self.size, 4, 4096)
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            check_range(f"{where}.{name}", getattr(self, name), 0.0, 1.0)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise UserError(f"{where}.scale: {list(self.scale)} is out of range; need 0 < min <= max <= 1")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise UserError(f"{where}.ratio: {list(self.ratio)} is out of range; need 0 < min <= max")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise UserError(f"{where}.blur_sigma: {list(self.blur_sigma)} is out of range; need 0 < min <= max")
        for i, strength in enumerate(self.jitter):
            check_range(f"{where}.jitter[{i}]", strength, 0.0, 0.5 if i == 3 else 10.0)


# BYOL / MoCo v2 / DINO colour jitter (Grill et al., 2020, Table 6).
_SOFT_JITTER = (0.4, 0.4, 0.2, 0.1)


def _recipe_views(recipe: str, size: int, local_size: int, local_crops: int) -> list[ViewSpec]:
    if recipe == "simclr":  # two identical strong views (Chen et al., 2020)
        return [ViewSpec(size=size), ViewSpec(size=size)]
    if recipe == "byol":  # asymmetric blur 1.0/0.1 and solarize 0/0.2 (Grill et al., 2020, Table 6)
        return [ViewSpec(size=size, jitter=_SOFT_JITTER, blur_p=1.0),
                ViewSpec(size=size, jitter=_SOFT_JITTER, blur_p=0.1, solarize_p=0.2)]
    if recipe == "dino":  # multi-crop: 2 global (0.4-1) + K local (0.05-0.4) (Caron et al., 2021, main_dino.py)
        globals_ = [ViewSpec(size=size, scale=(0.4, 1.0), jitter=_SOFT_JITTER, blur_p=1.0),
                    ViewSpec(size=size, scale=(0.4, 1.0), jitter=_SOFT_JITTER, blur_p=0.1, solarize_p=0.2)]
        local = ViewSpec(size=local_size, scale=(0.05, 0.4), jitter=_SOFT_JITTER, blur_p=0.5)
        return globals_ + [dataclasses.replace(local) for _ in range(local_crops)]
    if recipe == "mae":  # crop 0.2-1 + flip only (He et al., 2021, App. A.1)
        return [ViewSpec(size=size, scale=(0.2, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0)]
    if recipe == "ijepa":  # one random resized crop 0.3-1, nothing else (Assran et al., 2023, App. A.1)
        return [ViewSpec(size=size, scale=(0.3, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0)]
    if recipe == "macrl":  # masked branch strong, momentum branch weak (Yao et al., 2022, Sec. 3)
        return [ViewSpec(size=size, scale=(0.2, 1.0)),
                ViewSpec(size=size, scale=(0.2, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0)]
    raise UserError(f"data.augment.recipe: unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")


RECIPES = ("simclr", "byol", "dino", "mae", "macrl", "ijepa")


@dataclass
class AugmentConfig:
    recipe: Literal["simclr", "byol", "dino", "mae", "macrl", "ijepa"] | None = None  # None: the method's own (simclr alone)
    size: int = 32                       # global crop side (224 for ImageNet-scale recipes)
    local_size: int = 16                 # DINO local crop side (96 at 224: Caron et al., 2021)
    local_crops: int = 6                 # DINO local crops (Caron et al. use 6-10 at 96 px)
    global_view: dict[str, Any] = field(default_factory=dict)  # overrides for every global view
    local_view: dict[str, Any] = field(default_factory=dict)   # overrides for every local view
    views: list[dict[str, Any]] = field(default_factory=list)  # per-view overrides, by position

    def view_specs(self, where: str = "data.augment") -> list[ViewSpec]:
        check_range(f"{where}.local_crops", self.local_crops, 0, 64)
        specs = _recipe_views(self.recipe or "simclr", self.size, self.local_size, self.local_crops)
        num_global = len(specs) - (self.local_crops if self.recipe == "dino" else 0)
        if len(self.views) > len(specs):
            raise UserError(f"{where}.views: {len(self.views)} entries but recipe {self.recipe!r} "
                            f"makes {len(specs)} views")
        out = []
        for i, spec in enumerate(specs):
            group = self.global_view if i < num_global else self.local_view
            merged = {**dataclasses.asdict(spec), **group, **(self.views[i] if i < len(self.views) else {})}
            view = section_from_dict(ViewSpec, merged, f"{where}.views[{i}]")
            view.validate(f"{where}.views[{i}]")
            out.append(view)
        return out


@dataclass
class EvalViewSpec:
    """Deterministic eval transform: centre crop of ``crop_fraction`` of the shorter side, resized to
    ``size`` (ImageNet: 224 px from a 256 px resize, i.e. 0.875; small images: 1.0 = whole image)."""
    size: int | None = None        # None: the training crop size (data.augment.size)
    crop_fraction: float = 1.0

    def validate(self, where: str) -> None:
        if self.size is not None:
            check_range(f"{where}.size", self.size, 4, 4096)
        check_range(f"{where}.crop_fraction", self.crop_fraction, 0.0, 1.0, low_open=True)


def decode_images(encoded: np.ndarray, channels: int, max_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch of PNG/JPEG bytes to one uint8 tensor ``[B, C, H, W]`` (zero-padded to the
    largest image) and the true sizes ``[B, 2]`` (h, w). Images whose shorter side exceeds
    ``max_side`` are first shrunk (antialiased) so that side is ``max_side``: it bounds memory and
    keeps later area-averaging cheap, without changing what any crop covers."""
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    images = []
    for data in encoded:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders for TorchCodec; they are still 2.5x faster than
            # PIL on small PNGs here, and pyproject pins torchvision < 0.30.
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
        if min(image.shape[-2:]) > max_side:
            image = TF.resize(image, max_side, antialias=True)
        images.append(image)
    sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.long)
    if bool((sizes == sizes[0]).all()):
        return torch.stack(images), sizes
    height, width = sizes.max(dim=0).values.tolist()
    batch = torch.zeros(len(images), channels, height, width, dtype=torch.uint8)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


def crop_views(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images cropped to their boxes and resized to ``size``, as float in [0, 1]: large views image
    by image on uint8, small ones in one batched call (whichever is faster at that size)."""
    if size >= BT.PER_IMAGE_CROP_MIN_SIZE:
        return BT.resized_crops(images, boxes, size).float().div_(255)
    return BT.crop_and_resize(images.float().div_(255), boxes, size)


def render_view(images: torch.Tensor, sizes: torch.Tensor, spec: ViewSpec,
                rand: BT.PerSampleRandom) -> torch.Tensor:
    """One augmented view of every image, as uint8 ``[B, C, spec.size, spec.size]``."""
    boxes = BT.random_resized_crop_boxes(rand, sizes[:, 0], sizes[:, 1], spec.scale, spec.ratio)
    if not spec.changes_colour and spec.size >= BT.PER_IMAGE_CROP_MIN_SIZE:
        # Crop and flip stay uint8: the same pixels as the float path below, without its conversions and
        # no-op colour passes (1.57 -> 0.56 ms per 224 px MAE view, benchmarks/crop_resize.py). The colour
        # ops' draws come after, so skipping them changes nothing.
        return BT.flip_horizontal(BT.resized_crops(images, boxes, spec.size), rand.bernoulli(spec.flip_p))
    out = crop_views(images, boxes, spec.size)
    out = BT.flip_horizontal(out, rand.bernoulli(spec.flip_p))
    out = BT.color_jitter(out, rand, rand.bernoulli(spec.jitter_p), BT.JitterStrengths(*spec.jitter))
    out = BT.random_grayscale(out, rand.bernoulli(spec.gray_p))
    # Kernel ~10% of the side, odd (SimCLR: 23 px at 224 px); sigma in pixels, as torchvision's.
    kernel = max(3, int(0.1 * spec.size) // 2 * 2 + 1)
    out = BT.gaussian_blur(out, rand.uniform(*spec.blur_sigma), rand.bernoulli(spec.blur_p), kernel)
    out = BT.solarize(out, rand.bernoulli(spec.solarize_p))
    return out.mul_(255).round_().to(torch.uint8)


def render_eval_view(images: torch.Tensor, sizes: torch.Tensor, spec: EvalViewSpec) -> torch.Tensor:
    boxes = BT.center_crop_boxes(sizes[:, 0], sizes[:, 1], spec.crop_fraction)
    if spec.size >= BT.PER_IMAGE_CROP_MIN_SIZE:
        return BT.resized_crops(images, boxes, spec.size)
    out = BT.crop_and_resize(images.float(), boxes, spec.size)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class PixelNormalizer:
    """uint8 views <-> normalised float tensors, on whatever device the images are (the training
    device: views travel as uint8 and become float only there)."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device | str = "cpu"):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def to_float(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        out = images.float().div_(255).sub_(self.mean).div_(self.std)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.std + self.mean).mul(255).round().clamp(0, 255).to(torch.uint8)
