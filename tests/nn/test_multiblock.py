"""I-JEPA multi-block masks against their definition: block shapes and sizes, disjoint context, equal
counts across the batch, re-drawn short contexts, reproducibility."""

import math

import pytest
import torch

from sslray.nn.multiblock import MultiBlockConfig, block_size, sample_multiblock_masks


def rows_cols(ids: torch.Tensor, width: int) -> tuple[set[int], set[int]]:
    return {int(i) // width for i in ids}, {int(i) % width for i in ids}


@pytest.mark.parametrize("grid", [(7, 7), (14, 14), (4, 6)])
def test_targets_are_equal_rectangles_and_the_context_avoids_them(grid):
    gh, gw = grid
    masks = sample_multiblock_masks(32, grid, generator=torch.Generator().manual_seed(0))
    n, m, kt = masks.targets.shape
    assert (n, m) == (32, 4) and masks.context.shape[0] == 32
    assert masks.targets.dtype == masks.context.dtype == torch.int64
    shapes = set()
    for i in range(n):
        for block in masks.targets[i]:
            assert len(set(block.tolist())) == kt and 0 <= block.min() and block.max() < gh * gw
            rows, cols = rows_cols(block, gw)
            # a full h x w rectangle: contiguous rows and columns whose product is the block
            assert rows == set(range(min(rows), max(rows) + 1)) and cols == set(range(min(cols), max(cols) + 1))
            assert len(rows) * len(cols) == kt
            shapes.add((len(rows), len(cols)))
        context = masks.context[i].tolist()
        assert context == sorted(set(context))  # ascending, no repeats
        assert not set(context) & set(masks.targets[i].flatten().tolist())
    assert len(shapes) == 1  # one target size per batch


def test_block_size_follows_the_formula():
    """n = floor(s * L), h = round(sqrt(n a)), w = round(sqrt(n / a)) with s, a uniform in their ranges."""
    for seed in range(50):
        u_scale, u_aspect = torch.rand(2, generator=torch.Generator().manual_seed(seed)).tolist()
        s, a = 0.15 + 0.05 * u_scale, 0.75 + 0.75 * u_aspect
        n = int(196 * s)
        expected = (round(math.sqrt(n * a)), round(math.sqrt(n / a)))
        assert block_size((14, 14), (0.15, 0.2), (0.75, 1.5), torch.Generator().manual_seed(seed)) == expected


def test_block_sizes_cover_the_scale_and_aspect_ranges():
    g = torch.Generator().manual_seed(1)
    sizes = [block_size((14, 14), (0.15, 0.2), (0.75, 1.5), g) for _ in range(400)]
    areas = [h * w / 196 for h, w in sizes]
    aspects = [h / w for h, w in sizes]
    # rounding h and w moves a block by at most about half a row and half a column
    assert 0.12 <= min(areas) and max(areas) <= 0.24 and abs(sum(areas) / len(areas) - 0.175) < 0.015
    assert min(aspects) < 0.9 and max(aspects) > 1.3 and 0.6 <= min(aspects) and max(aspects) <= 1.8
    # the context block: square, 0.85-1 of the grid, clipped to it
    contexts = {block_size((7, 7), (0.85, 1.0), (1.0, 1.0), g) for _ in range(200)}
    assert contexts == {(6, 6), (7, 7)}
    assert block_size((7, 7), (1.0, 1.0), (3.0, 3.0)) == (7, 4)  # h = round(sqrt(147)) = 12, clipped to 7


def test_context_is_cut_to_the_batch_minimum_keeping_the_first_patches():
    """With a context block of scale 1 (the whole grid), each image's untrimmed context is every patch
    outside its targets; all are cut to the smallest one, keeping their first patches in raster order."""
    masks = sample_multiblock_masks(
        64, (7, 7), MultiBlockConfig(context_scale=(1.0, 1.0)), generator=torch.Generator().manual_seed(3)
    )
    untrimmed = [sorted(set(range(49)) - set(t.flatten().tolist())) for t in masks.targets]
    keep = min(len(u) for u in untrimmed)
    assert masks.context.shape == (64, keep)
    assert max(len(u) for u in untrimmed) > keep  # the cut did something
    for i, patches in enumerate(untrimmed):
        assert masks.context[i].tolist() == patches[:keep]


def test_short_contexts_are_redrawn_inside_their_block():
    """A 3x3 context block often loses most of itself to the targets; it is re-drawn at another position
    until it keeps min_context patches, so contexts stay inside a 3x3 window."""

    def fits_3x3(ids):
        rows, cols = rows_cols(ids, 7)
        return max(rows) - min(rows) < 3 and max(cols) - min(cols) < 3

    cfg = MultiBlockConfig(context_scale=(9 / 49, 9 / 49), min_context=4)
    redrawn = sample_multiblock_masks(64, (7, 7), cfg, generator=torch.Generator().manual_seed(0))
    assert redrawn.context.shape[1] >= 4
    assert sum(fits_3x3(c) for c in redrawn.context) >= 60
    # without re-draws, a short context becomes every non-target patch: most no longer fit
    fallback = sample_multiblock_masks(64, (7, 7), cfg, generator=torch.Generator().manual_seed(0), max_tries=0)
    assert sum(fits_3x3(c) for c in fallback.context) < 60


def test_targets_that_tile_a_tiny_grid_are_redrawn():
    """On a 4x4 grid four 2x2 targets can cover every patch; such images get new target positions."""
    g = torch.Generator().manual_seed(0)
    seen_2x2 = 0
    for _ in range(200):
        masks = sample_multiblock_masks(16, (4, 4), generator=g)
        seen_2x2 += masks.targets.shape[2] == 4
        assert masks.context.shape[1] >= 1
        for context, targets in zip(masks.context, masks.targets):
            assert not set(context.tolist()) & set(targets.flatten().tolist())
    assert seen_2x2 > 10
    with pytest.raises(ValueError, match="no context patch left"):
        sample_multiblock_masks(2, (4, 4), MultiBlockConfig(target_scale=(1.0, 1.0), target_aspect_ratio=(1.0, 1.0)))


def test_generator_makes_masks_reproducible():
    def sample(seed):
        return sample_multiblock_masks(8, (7, 7), generator=torch.Generator().manual_seed(seed))

    a, b, c = sample(5), sample(5), sample(6)
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert not (
        a.context.shape == c.context.shape
        and torch.equal(a.context, c.context)
        and a.targets.shape == c.targets.shape
        and torch.equal(a.targets, c.targets)
    )
    torch.manual_seed(9)  # without a generator: the global RNG
    d = sample_multiblock_masks(8, (7, 7))
    torch.manual_seed(9)
    assert torch.equal(d.targets, sample_multiblock_masks(8, (7, 7)).targets)


def test_number_of_targets_and_bad_arguments():
    masks = sample_multiblock_masks(3, (7, 7), MultiBlockConfig(num_targets=2))
    assert masks.targets.shape[:2] == (3, 2)
    with pytest.raises(ValueError, match="num_targets"):
        sample_multiblock_masks(3, (7, 7), MultiBlockConfig(num_targets=0))
