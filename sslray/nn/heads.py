"""Heads put on top of a backbone: projection MLP, prediction MLP, DINO head.

Shapes: every head maps [N, in_dim] -> [N, out_dim].
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class MLPConfig:
    """Everything of an ``mlp`` but its input and output widths."""

    hidden_dim: int = 2048  # width of every hidden layer (SimCLR's projector)
    num_layers: int = 2  # linear layers, the output layer included
    hidden_bn: bool = True  # BatchNorm after each hidden Linear (which then has no bias)
    last_bn: bool = False  # affine-free BatchNorm on the output (MoCo v3, SimSiam)
    activation: type[nn.Module] = nn.ReLU  # after each hidden layer; DINO's head uses GELU


def mlp(in_dim: int, out_dim: int, cfg: MLPConfig) -> nn.Sequential:
    """``cfg.num_layers`` linear layers; hidden layers are Linear -> (BN) -> activation.

    Linear layers followed by BN have no bias (the BN shift replaces it). ``last_bn`` adds a BN
    without affine parameters after the output layer, as MoCo v3 (Chen et al. 2021, sec. 4) and
    SimSiam (Chen & He 2021, sec. 4.1) do on their projector outputs.
    """
    if cfg.num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {cfg.num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(cfg.num_layers - 1):
        layers.append(nn.Linear(dim, cfg.hidden_dim, bias=not cfg.hidden_bn))
        if cfg.hidden_bn:
            layers.append(nn.BatchNorm1d(cfg.hidden_dim))
        layers.append(cfg.activation())
        dim = cfg.hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not cfg.last_bn))
    if cfg.last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """MLP projector g(.) (SimCLR, MoCo v2/v3, BYOL, SimSiam): [N, in_dim] -> [N, out_dim].

    SimCLR: 2 layers, hidden 2048, out 128, BN on hidden (Chen et al. 2020, sec. 2.1 / B.9).
    BYOL: 2 layers, hidden 4096, out 256 (Grill et al. 2020, sec. 3.3).
    MoCo v3: 3 layers, hidden 4096, out 256, BN on the output (Chen et al. 2021, sec. 4).
    SimSiam: 3 layers, hidden 2048, out 2048, BN on the output (Chen & He 2021, sec. 4.1).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        hidden_bn: bool = True,
        last_bn: bool = False,
    ):
        super().__init__()
        self.out_dim = out_dim
        self.layers = mlp(in_dim, out_dim, MLPConfig(hidden_dim, num_layers, hidden_bn, last_bn))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class PredictionHead(nn.Module):
    """MLP predictor q(.) of BYOL / SimSiam / MoCo v3: [N, dim] -> [N, dim].

    BYOL: hidden 4096 (Grill et al. 2020, sec. 3.3); SimSiam: bottleneck hidden 512 with an input of
    2048 (Chen & He 2021, sec. 4.1); MoCo v3: 2 layers, hidden 4096, BN on the output.
    """

    def __init__(self, dim: int, hidden_dim: int = 4096, num_layers: int = 2, last_bn: bool = False):
        super().__init__()
        self.layers = mlp(dim, dim, MLPConfig(hidden_dim, num_layers, hidden_bn=True, last_bn=last_bn))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class DINOHeadConfig:
    out_dim: int = 65536  # K prototypes of the last layer (paper, sec. 3.1)
    hidden_dim: int = 2048  # hidden width of the MLP (paper, appendix)
    bottleneck_dim: int = 256  # L2-normalised bottleneck before the last layer (paper, appendix)
    num_layers: int = 3  # linear layers of the MLP, up to the bottleneck
    use_bn: bool = False  # BN in the MLP; off for ViTs (paper, table 13)
    norm_last_layer: bool = True  # fix the weight-norm magnitude of the last layer at 1 (reference code)


class DINOHead(nn.Module):
    """DINO projection head (Caron et al. 2021, sec. 3.1 and appendix):

        MLP(in_dim -> hidden -> ... -> bottleneck) -> L2 normalise -> weight-normed Linear(bottleneck -> out_dim)

    Shapes: [N, in_dim] -> [N, out_dim] (logits over ``out_dim`` prototypes, 65536 in the paper).
    GELU activations, no BN (the paper's ViT default). ``norm_last_layer`` fixes the weight-norm
    magnitude g at 1, which the paper reports stabilises training.
    """

    def __init__(self, in_dim: int, cfg: DINOHeadConfig | None = None):
        super().__init__()
        cfg = cfg or DINOHeadConfig()
        self.mlp = mlp(
            in_dim,
            cfg.bottleneck_dim,
            MLPConfig(cfg.hidden_dim, cfg.num_layers, hidden_bn=cfg.use_bn, activation=nn.GELU),
        )
        self.mlp.apply(_trunc_normal_init)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(cfg.bottleneck_dim, cfg.out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad = not cfg.norm_last_layer

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)


def _trunc_normal_init(module: nn.Module) -> None:
    # std 0.02, as in the DINO reference code (and timm's ViT init)
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
