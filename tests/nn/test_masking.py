"""random_masking / patchify against their definitions."""

import pytest
import torch

from sslray.nn.masking import num_visible, patchify, random_masking, unpatchify


# kept = round(L * (1 - r)), at least 1: 16.0, 1.6, 19.6, 10, 0.04 -> 16, 2, 20, 10, 1
@pytest.mark.parametrize(
    "length,ratio,keep", [(64, 0.75, 16), (16, 0.9, 2), (49, 0.6, 20), (10, 0.0, 10), (4, 0.99, 1)]
)
def test_kept_count_and_mask_sum(length, ratio, keep):
    x = torch.randn(3, length, 5)
    visible, mask, ids_restore = random_masking(x, ratio)
    assert num_visible(length, ratio) == keep
    assert visible.shape == (3, keep, 5)
    assert mask.shape == ids_restore.shape == (3, length)
    assert torch.all(mask.sum(dim=1) == length - keep)


def test_visible_tokens_are_the_unmasked_ones():
    x = torch.randn(4, 20, 3)
    visible, mask, _ = random_masking(x, 0.5)
    for n in range(4):
        kept = x[n][mask[n] == 0]
        # same set of rows (order is shuffled)
        assert sorted(map(tuple, kept.tolist())) == sorted(map(tuple, visible[n].tolist()))


def test_ids_restore_inverts_the_shuffle():
    n, length, dim = 3, 12, 4
    x = torch.randn(n, length, dim)
    visible, mask, ids_restore = random_masking(x, 0.75)
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    shuffled = torch.gather(x, 1, ids_shuffle[..., None].expand(-1, -1, dim))
    assert torch.equal(shuffled[:, : visible.shape[1]], visible)
    restored = torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, dim))
    assert torch.equal(restored, x)
    # the removed tokens are the tail of the shuffled order, and that is where mask == 1
    for i in range(n):
        assert torch.all(mask[i, ids_shuffle[i, visible.shape[1] :]] == 1)


def test_generator_makes_masks_reproducible():
    x = torch.randn(2, 16, 3)
    a = random_masking(x, 0.75, generator=torch.Generator().manual_seed(7))[1]
    b = random_masking(x, 0.75, generator=torch.Generator().manual_seed(7))[1]
    c = random_masking(x, 0.75, generator=torch.Generator().manual_seed(8))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_patchify_matches_loop_and_unpatchify_inverts():
    imgs = torch.randn(2, 3, 8, 12)
    p = 4
    patches = patchify(imgs, p)
    assert patches.shape == (2, 2 * 3, p * p * 3)
    for n in range(2):
        for i in range(2):
            for j in range(3):
                block = imgs[n, :, i * p : (i + 1) * p, j * p : (j + 1) * p]  # [C, p, p]
                expected = block.permute(1, 2, 0).reshape(-1)  # (row, col, channel)
                assert torch.equal(patches[n, i * 3 + j], expected)
    assert torch.equal(unpatchify(patches, p, 3, grid_size=(2, 3)), imgs)
    square = torch.randn(2, 1, 8, 8)
    assert torch.equal(unpatchify(patchify(square, 2), 2, 1), square)
