import torch
from torch import nn

from sslray.nn.heads import DINOHead, DINOHeadConfig, MLPConfig, PredictionHead, ProjectionHead, mlp


def test_projection_head_layers_and_shapes():
    head = ProjectionHead(32, hidden_dim=64, out_dim=16, num_layers=3, last_bn=True)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 64), (64, 16)]
    # A linear followed by BN has no bias: the BN shift replaces it.
    assert all(m.bias is None for m in linears)
    last = head.layers[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    out = head(torch.randn(8, 32))
    assert out.shape == (8, 16)
    # Output BN in train mode: every output dimension has zero batch mean.
    assert torch.allclose(out.mean(dim=0), torch.zeros(16), atol=1e-5)


def test_mlp_without_bn_has_biases_and_relu():
    layers = mlp(4, 2, MLPConfig(hidden_dim=8, num_layers=2, hidden_bn=False))
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert layers[0].bias is not None and layers[2].bias is not None


def test_prediction_head_keeps_dim():
    assert PredictionHead(16, hidden_dim=8)(torch.randn(4, 16)).shape == (4, 16)


def test_dino_head_last_layer_is_weight_normed_with_fixed_magnitude():
    head = DINOHead(32, DINOHeadConfig(out_dim=100, hidden_dim=64, bottleneck_dim=16))
    out = head(torch.randn(5, 32))
    assert out.shape == (5, 100)
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad and torch.all(magnitude == 1)
    # With unit magnitude every prototype row has norm 1, and the bottleneck is L2-normalised,
    # so every logit is a cosine in [-1, 1].
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(100), atol=1e-5)
    assert out.abs().max() <= 1 + 1e-5


def test_dino_head_magnitude_trains_when_not_normed():
    head = DINOHead(8, DINOHeadConfig(out_dim=10, hidden_dim=16, bottleneck_dim=4, norm_last_layer=False))
    head(torch.randn(3, 8)).sum().backward()
    assert head.last_layer.parametrizations.weight.original0.grad is not None
