"""ViTBackbone: shapes, subset encoding, and that our split path equals timm's own forward."""

import pytest
import torch

from sslray.errors import UserError
from sslray.nn.vit import ViTBackbone, sincos_pos_embed_1d, sincos_pos_embed_2d


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return ViTBackbone("vit_tiny", img_size=16, patch_size=4, in_chans=3, depth=2).eval()


def test_forward_is_pooled_features(vit):
    out = vit(torch.randn(5, 3, 16, 16))
    assert out.shape == (5, vit.num_features) == (5, 192)


def test_subset_encode_shape(vit):
    tokens = vit.patchify_embed(torch.randn(4, 3, 16, 16))
    assert tokens.shape == (4, 16, 192)
    latent = vit.encode(tokens[:, [1, 5, 7]])
    assert latent.shape == (4, 1 + 3, 192)


def test_full_token_encode_equals_forward(vit):
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        cls = vit.encode(vit.patchify_embed(x))[:, 0]
        torch.testing.assert_close(cls, vit(x), rtol=1e-5, atol=1e-5)
        # and both equal timm's forward_features CLS row (same position embedding, same blocks)
        torch.testing.assert_close(cls, vit.vit.forward_features(x)[:, 0], rtol=1e-5, atol=1e-5)


def test_position_embedding_is_fixed_sincos():
    vit = ViTBackbone("tiny", img_size=8, patch_size=4, in_chans=1, depth=1)
    pos = vit.vit.pos_embed[0]
    assert not vit.vit.pos_embed.requires_grad
    assert torch.all(pos[0] == 0)  # CLS row
    # token (row 1, col 0) of a 2x2 grid: first half encodes row=1, second half col=0
    d = 192
    expected = torch.cat(
        [sincos_pos_embed_1d(d // 2, torch.tensor([1.0])), sincos_pos_embed_1d(d // 2, torch.tensor([0.0]))], dim=1
    )[0].float()
    torch.testing.assert_close(pos[1 + 2], expected)
    # 1-D formula written out: [sin(p w_k), cos(p w_k)], w_k = 10000^(-2k/d)
    k, p, dim = 3, 5.0, 8
    row = sincos_pos_embed_1d(dim, torch.tensor([p]))[0]
    w = 10000 ** (-2 * k / dim)
    assert row[k].item() == pytest.approx(torch.sin(torch.tensor(p * w, dtype=torch.float64)).item())
    assert row[dim // 2 + k].item() == pytest.approx(torch.cos(torch.tensor(p * w, dtype=torch.float64)).item())
    assert sincos_pos_embed_2d(8, (2, 3), cls_token=False).shape == (6, 8)


def test_grayscale_and_gradient_flow():
    vit = ViTBackbone("vit_tiny", img_size=8, patch_size=4, in_chans=1, depth=1)
    vit(torch.randn(2, 1, 8, 8)).sum().backward()
    assert vit.vit.patch_embed.proj.weight.grad is not None
    assert vit.vit.pos_embed.grad is None


def test_bad_size_names_the_choices():
    with pytest.raises(UserError, match="vit_tiny"):
        ViTBackbone("huge", img_size=16, patch_size=4)
    with pytest.raises(UserError, match="multiple"):
        ViTBackbone("tiny", img_size=18, patch_size=4)
