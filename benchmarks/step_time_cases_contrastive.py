"""Step-time cases for the joint-embedding methods: sslray's SimCLR, MoCo v2/v3, BYOL, SimSiam, DINO,
VICReg and Barlow Twins against the same math written plainly, the way the papers' reference code
(for VICReg and Barlow Twins: the papers' Algorithm 1) writes it.

``CASES`` is a list of (name, make_sslray_step, make_reference_step). Each maker builds a model, an
SGD optimizer and fixed inputs and returns a zero-argument function doing one training step:
zero_grad, forward, backward, optimizer step, then the EMA update (sslray: ``on_step``; reference: a
Python loop over parameter pairs, as in the MoCo / BYOL / DINO code). ``benchmarks/step_time.py``
times them side by side; the goal is sslray / reference <= 1.05.

Both sides use the same backbone architecture (torchvision ResNet-18, small stem; the reference builds
its own copy straight from torchvision) and the same head widths. Sizes fit a CPU: 16 px RGB (8 px local crops), batch
32; MoCo v2's queue (16384) and DINO's prototypes (4096) are smaller than the papers' 65536 so the
steps stay short, with all other widths at paper defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import resnet18

from sslray.methods.registry import build_method

BATCH, IN_CHANS, IMG_SIZE, LOCAL_SIZE = 32, 3, 16, 8
QUEUE_SIZE, DINO_OUT_DIM = 16384, 4096
LR = 0.05

Step = Callable[[], None]


def _views(num_global: int, num_local: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(BATCH, IN_CHANS, IMG_SIZE, IMG_SIZE, generator=g) for _ in range(num_global)]
    return views + [torch.randn(BATCH, IN_CHANS, LOCAL_SIZE, LOCAL_SIZE, generator=g) for _ in range(num_local)]


def _train_step(model: nn.Module, loss_fn: Callable[[], Tensor], after: Callable[[], None]) -> Step:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
        after()

    return step


def _sslray_step(method: str, num_local: int = 0, **knobs) -> Step:
    model = build_method(
        {
            "method": {"name": method, **knobs},
            "backbone": {"name": "resnet18", "small_stem": True, "in_chans": IN_CHANS},
        }
    )
    views = _views(2, num_local)
    steps = iter(range(10**9))
    return _train_step(model, lambda: model(views)["loss"], lambda: model.on_step(next(steps), 10**6))


# ------------------------------------------------------------------------- plain reference pieces


def plain_resnet18() -> nn.Module:
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(IN_CHANS, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def plain_mlp(num_layers: int, in_dim: int, hidden: int, out: int, last_bn: bool) -> nn.Sequential:
    """moco-v3 ``_build_mlp``: Linear-BN-ReLU hidden layers, optional affine-free BN on the output."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in, d_out = (in_dim if i == 0 else hidden), (out if i == num_layers - 1 else hidden)
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


@torch.no_grad()
def ema_loop(online: nn.Module, target: nn.Module, m: float) -> None:
    for p_o, p_t in zip(online.parameters(), target.parameters()):
        p_t.data = p_t.data * m + p_o.data * (1.0 - m)


def frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad = False
    return target


# ------------------------------------------------------------------------------------ SimCLR


def reference_simclr_step() -> Step:
    encoder = nn.Sequential(
        plain_resnet18(),
        nn.Linear(512, 2048, bias=False),
        nn.BatchNorm1d(2048),
        nn.ReLU(inplace=True),
        nn.Linear(2048, 128),
    )
    x0, x1 = _views(2)

    def loss() -> Tensor:  # classic NT-Xent: one (2N x 2N) similarity matrix, diagonal masked
        z = F.normalize(encoder(torch.cat([x0, x1])), dim=1)
        sim = z @ z.T / 0.5
        sim.fill_diagonal_(float("-inf"))
        n = x0.shape[0]
        labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        return F.cross_entropy(sim, labels)

    return _train_step(encoder, loss, lambda: None)


# ------------------------------------------------------------------------------------- MoCo v2


def reference_moco_v2_step() -> Step:
    """The MoCo v2 builder (moco/builder.py): encoder_q/encoder_k, einsum logits, queue of normalised keys."""
    encoder_q = nn.Sequential(plain_resnet18(), nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 128))
    encoder_k = frozen_copy(encoder_q)
    queue = F.normalize(torch.randn(128, QUEUE_SIZE), dim=0)
    pointer = [0]
    x0, x1 = _views(2)

    def loss() -> Tensor:
        q = F.normalize(encoder_q(x0), dim=1)
        with torch.no_grad():
            k = F.normalize(encoder_k(x1), dim=1)
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / 0.2
        queue[:, pointer[0] : pointer[0] + BATCH] = k.T
        pointer[0] = (pointer[0] + BATCH) % QUEUE_SIZE
        return F.cross_entropy(logits, torch.zeros(BATCH, dtype=torch.long))

    return _train_step(encoder_q, loss, lambda: ema_loop(encoder_q, encoder_k, 0.999))


# ------------------------------------------------------------------------------------- MoCo v3


def reference_moco_v3_step() -> Step:
    """moco-v3 builder.py (MoCo_ResNet): 2-layer projector, 2-layer predictor, symmetric in-batch loss."""
    base = nn.Sequential(plain_resnet18(), plain_mlp(2, 512, 4096, 256, last_bn=True))
    model = nn.ModuleDict({"base": base, "predictor": plain_mlp(2, 256, 4096, 256, last_bn=False)})
    momentum = frozen_copy(base)
    x0, x1 = _views(2)
    temperature = 1.0

    def contrastive(q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.T / temperature
        return F.cross_entropy(logits, torch.arange(q.shape[0])) * (2 * temperature)

    def loss() -> Tensor:
        q1, q2 = model["predictor"](base(x0)), model["predictor"](base(x1))
        with torch.no_grad():
            k1, k2 = momentum(x0), momentum(x1)
        return contrastive(q1, k2) + contrastive(q2, k1)

    return _train_step(model, loss, lambda: ema_loop(base, momentum, 0.99))


# ---------------------------------------------------------------------------------------- BYOL


def reference_byol_step() -> Step:
    online = nn.Sequential(plain_resnet18(), plain_mlp(2, 512, 4096, 256, last_bn=False))
    predictor = plain_mlp(2, 256, 4096, 256, last_bn=False)
    model = nn.ModuleDict({"online": online, "predictor": predictor})
    target = frozen_copy(online)
    x0, x1 = _views(2)

    def regression(p: Tensor, z: Tensor) -> Tensor:
        return (2 - 2 * (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(dim=-1)).mean()

    def loss() -> Tensor:
        p0, p1 = predictor(online(x0)), predictor(online(x1))
        with torch.no_grad():
            z0, z1 = target(x0), target(x1)
        return regression(p0, z1) + regression(p1, z0)

    return _train_step(model, loss, lambda: ema_loop(online, target, 0.996))


# ------------------------------------------------------------------------------------- SimSiam


def reference_simsiam_step() -> Step:
    """simsiam/builder.py: 3-layer projector with BN on the output, 2048 -> 512 -> 2048 predictor."""
    encoder = nn.Sequential(plain_resnet18(), plain_mlp(3, 512, 2048, 2048, last_bn=True))
    predictor = nn.Sequential(
        nn.Linear(2048, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, 2048)
    )
    model = nn.ModuleDict({"encoder": encoder, "predictor": predictor})
    x0, x1 = _views(2)

    def loss() -> Tensor:
        z1, z2 = encoder(x0), encoder(x1)
        p1, p2 = predictor(z1), predictor(z2)
        return -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) * 0.5

    return _train_step(model, loss, lambda: None)


# ---------------------------------------------------------------------------------------- DINO


class PlainDINOHead(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, 2048), nn.GELU(), nn.Linear(2048, 2048), nn.GELU(), nn.Linear(2048, 256)
        )
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(256, DINO_OUT_DIM, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1)
        self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def reference_dino_step() -> Step:
    """dino/main_dino.py: MultiCropWrapper (one pass per resolution), DINOLoss with chunked crops."""
    student = nn.ModuleDict({"backbone": plain_resnet18(), "head": PlainDINOHead(512)})
    teacher = frozen_copy(student)
    center = torch.zeros(1, DINO_OUT_DIM)
    views = _views(2, 2)

    def multicrop(net: nn.ModuleDict, crops: list[Tensor]) -> Tensor:
        sizes = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0)
        start, outputs = 0, []
        for end in ends.tolist():
            outputs.append(net["backbone"](torch.cat(crops[start:end])))
            start = end
        return net["head"](torch.cat(outputs))

    def loss() -> Tensor:
        nonlocal center
        student_out = (multicrop(student, views) / 0.1).chunk(len(views))
        with torch.no_grad():
            teacher_raw = multicrop(teacher, views[:2])
        teacher_out = F.softmax((teacher_raw - center) / 0.04, dim=-1).detach().chunk(2)
        total, terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
                terms += 1
        center = center * 0.9 + teacher_raw.mean(dim=0, keepdim=True) * 0.1
        return total / terms

    return _train_step(student, loss, lambda: ema_loop(student, teacher, 0.996))


# ------------------------------------------------------------------------- VICReg, Barlow Twins


def off_diagonal(x: Tensor) -> Tensor:
    """Algorithm 1's ``off_diagonal`` of both papers: the flat off-diagonal entries of a square matrix."""
    n = x.shape[0]
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def reference_vicreg_step() -> Step:
    """VICReg's Algorithm 1 line by line: expander 8192-8192-8192 (Linear-BN-ReLU twice, then a Linear
    without bias), one pass per view, lambda = mu = 25, nu = 1."""
    net = nn.Sequential(plain_resnet18(), plain_mlp(3, 512, 8192, 8192, last_bn=False))
    x0, x1 = _views(2)

    def loss() -> Tensor:
        z_a, z_b = net(x0), net(x1)
        n, d = z_a.shape
        sim_loss = F.mse_loss(z_a, z_b)
        std_z_a = torch.sqrt(z_a.var(dim=0) + 1e-4)
        std_z_b = torch.sqrt(z_b.var(dim=0) + 1e-4)
        std_loss = torch.mean(F.relu(1 - std_z_a)) + torch.mean(F.relu(1 - std_z_b))
        z_a = z_a - z_a.mean(dim=0)
        z_b = z_b - z_b.mean(dim=0)
        cov_z_a = (z_a.T @ z_a) / (n - 1)
        cov_z_b = (z_b.T @ z_b) / (n - 1)
        cov_loss = off_diagonal(cov_z_a).pow(2).sum() / d + off_diagonal(cov_z_b).pow(2).sum() / d
        return 25.0 * sim_loss + 25.0 * std_loss + 1.0 * cov_loss

    return _train_step(net, loss, lambda: None)


def reference_barlow_twins_step() -> Step:
    """Barlow Twins' Algorithm 1, with the batch standardisation done by an affine-free BatchNorm1d as
    the paper's implementation does: projector 8192-8192-8192, lambda = 5e-3, one pass per view."""
    net = nn.Sequential(plain_resnet18(), plain_mlp(3, 512, 8192, 8192, last_bn=False))
    bn = nn.BatchNorm1d(8192, affine=False)
    x0, x1 = _views(2)

    def loss() -> Tensor:
        z_a, z_b = net(x0), net(x1)
        c = bn(z_a).T @ bn(z_b) / z_a.shape[0]
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        off_diag = off_diagonal(c).pow(2).sum()
        return on_diag + 5e-3 * off_diag

    return _train_step(net, loss, lambda: None)


CASES: list[tuple[str, Callable[[], Step], Callable[[], Step]]] = [
    ("simclr / resnet18", lambda: _sslray_step("simclr"), reference_simclr_step),
    ("moco_v2 / resnet18", lambda: _sslray_step("moco_v2", queue_size=QUEUE_SIZE), reference_moco_v2_step),
    ("moco_v3 / resnet18", lambda: _sslray_step("moco_v3"), reference_moco_v3_step),
    ("byol / resnet18", lambda: _sslray_step("byol"), reference_byol_step),
    ("simsiam / resnet18", lambda: _sslray_step("simsiam"), reference_simsiam_step),
    (
        "dino / resnet18, 2+2 crops",
        lambda: _sslray_step("dino", num_local=2, out_dim=DINO_OUT_DIM),
        reference_dino_step,
    ),
    ("vicreg / resnet18", lambda: _sslray_step("vicreg"), reference_vicreg_step),
    ("barlow_twins / resnet18", lambda: _sslray_step("barlow_twins"), reference_barlow_twins_step),
]
