import math

import pytest
import torch
from torch.nn import functional as F

from sslray.losses.infonce import InfoNCELoss, MemoryQueue, NTXentLoss


def ntxent_by_loops(z0, z1, temperature):
    """SimCLR eq. 1 written out: every one of the 2N views is an anchor."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    total, hits = 0.0, 0
    for a in range(n2):
        positive = (a + n) % n2
        sims = {b: float(z[a] @ z[b]) / temperature for b in range(n2) if b != a}
        denominator = sum(math.exp(s) for s in sims.values())
        total += -(sims[positive] - math.log(denominator))
        hits += max(sims, key=sims.get) == positive
    return total / n2, hits / n2


def infonce_by_loops(query, key, negatives, temperature):
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    total, hits = 0.0, 0
    for i in range(q.shape[0]):
        positive = float(q[i] @ k[i]) / temperature
        if negatives is None:
            others = [float(q[i] @ k[j]) / temperature for j in range(k.shape[0]) if j != i]
        else:
            others = [float(q[i] @ F.normalize(neg, dim=0)) / temperature for neg in negatives]
        total += -(positive - math.log(math.exp(positive) + sum(math.exp(o) for o in others)))
        hits += positive > max(others)
    return total / q.shape[0], hits / q.shape[0]


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_ntxent_matches_the_loop_reference(temperature):
    torch.manual_seed(0)
    z0, z1 = torch.randn(6, 8), torch.randn(6, 8)
    loss, pos_top1 = NTXentLoss(temperature)(z0, z1)
    expected_loss, expected_top1 = ntxent_by_loops(z0, z1, temperature)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert pos_top1.item() == pytest.approx(expected_top1)


def test_ntxent_known_values():
    n = 5
    collapsed = torch.ones(n, 4)
    loss, _ = NTXentLoss(0.5)(collapsed, collapsed)
    assert loss.item() == pytest.approx(math.log(2 * n - 1), rel=1e-5)

    # Identical positives, orthogonal images: the positive dominates at a low temperature.
    identity = torch.eye(n)
    loss, pos_top1 = NTXentLoss(0.1)(identity, identity)
    assert loss.item() < 1e-3 and pos_top1.item() == 1.0
    # Exactly: -log(e^{1/T} / (e^{1/T} + (2n - 2) e^0))
    assert loss.item() == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + 2 * n - 2)), abs=1e-6)


def test_ntxent_gradients_reach_both_views():
    z0, z1 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    NTXentLoss(0.5)(z0, z1)[0].backward()
    assert z0.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("with_queue", [False, True])
def test_infonce_matches_the_loop_reference(with_queue):
    torch.manual_seed(1)
    query, key = torch.randn(6, 8), torch.randn(6, 8)
    negatives = torch.randn(10, 8) if with_queue else None
    loss, pos_top1 = InfoNCELoss(0.2)(query, key, negatives)
    expected_loss, expected_top1 = infonce_by_loops(query, key, negatives, 0.2)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert pos_top1.item() == pytest.approx(expected_top1)


def test_infonce_collapsed_in_batch_is_log_n():
    n = 7
    loss, _ = InfoNCELoss(0.2)(torch.ones(n, 3), torch.ones(n, 3))
    assert loss.item() == pytest.approx(math.log(n), rel=1e-5)


def test_memory_queue_is_fifo_with_fixed_size():
    queue = MemoryQueue(dim=2, size=5)
    assert queue.negatives.shape == (5, 2)
    assert "queue" in dict(queue.named_buffers())
    batches = [torch.tensor([[float(i), 1.0]]).repeat(2, 1) * torch.tensor([[1.0], [2.0]]) for i in range(1, 4)]
    for batch in batches:
        queue.enqueue(batch)
    # 6 keys went into 5 slots: the first key is overwritten by the sixth; row order is slot order.
    keys = F.normalize(torch.cat(batches), dim=1)
    expected = torch.cat([keys[5:6], keys[1:5]])
    assert torch.allclose(queue.negatives, expected)
    assert int(queue.pointer) == 1


def test_memory_queue_negatives_are_a_snapshot():
    queue = MemoryQueue(dim=3, size=4)
    snapshot = queue.negatives
    before = snapshot.clone()
    queue.enqueue(torch.randn(2, 3))
    assert torch.equal(snapshot, before)
    assert not torch.equal(queue.negatives, before)


def test_memory_queue_keeps_the_newest_when_a_batch_overflows():
    queue = MemoryQueue(dim=1, size=3)
    queue.enqueue(torch.arange(1.0, 6.0)[:, None])  # 5 keys into 3 slots
    # After normalisation every 1-D key is 1; what matters is that the pointer wrapped correctly.
    assert queue.negatives.shape == (3, 1) and int(queue.pointer) == 0
