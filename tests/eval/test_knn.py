import math

import pytest
import torch
from torch.nn import functional as F

from sslray.eval.knn import KNNConfig, knn_accuracy, knn_predict


def knn_scores_by_loops(bank, bank_labels, queries, num_classes, k, temperature):
    """Wu et al. 2018 sec. 3.4 written out: per query, sort the bank by cosine similarity, let the k
    most similar vote exp(s / T) for their class, and report each class's share of the vote."""
    bank = F.normalize(bank.double(), dim=1)
    rows = []
    for query in F.normalize(queries.double(), dim=1):
        similarities = sorted(((float(query @ b), int(label)) for b, label in zip(bank, bank_labels)), reverse=True)
        votes = [0.0] * num_classes
        for similarity, label in similarities[:k]:
            votes[label] += math.exp(similarity / temperature)
        rows.append([v / sum(votes) for v in votes])
    return torch.tensor(rows, dtype=torch.float32)


def random_bank(n=40, m=15, dim=8, num_classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    bank = torch.randn(n, dim, generator=generator) * 3  # not unit length: kNN must normalise
    labels = torch.randint(num_classes, (n,), generator=generator)
    queries = torch.randn(m, dim, generator=generator)
    return bank, labels, queries


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (7, 0.1), (20, 0.5), (40, 0.07)])
def test_scores_match_the_loop_reference(k, temperature):
    bank, labels, queries = random_bank()
    scores = knn_predict(bank, labels, queries, num_classes=5, cfg=KNNConfig(k=k, temperature=temperature))
    expected = knn_scores_by_loops(bank, labels, queries, 5, k, temperature)
    assert scores.shape == (15, 5) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6)


def test_k_larger_than_the_bank_uses_every_bank_feature():
    bank, labels, queries = random_bank(n=7)
    scores = knn_predict(bank, labels, queries, num_classes=5, cfg=KNNConfig(k=200))
    torch.testing.assert_close(scores, knn_predict(bank, labels, queries, num_classes=5, cfg=KNNConfig(k=7)))
    torch.testing.assert_close(scores, knn_scores_by_loops(bank, labels, queries, 5, 7, 0.1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 4, 15, 1024])
def test_chunk_size_does_not_change_the_scores(chunk_size):
    bank, labels, queries = random_bank()
    reference = knn_predict(bank, labels, queries, num_classes=5, cfg=KNNConfig(k=10, chunk_size=1024))
    torch.testing.assert_close(knn_predict(bank, labels, queries, 5, KNNConfig(k=10, chunk_size=chunk_size)), reference)


def test_small_temperatures_do_not_overflow():
    bank, labels, queries = random_bank()
    # exp(1 / 0.005) = exp(200) is inf in float32; shares must still be finite and sum to 1
    scores = knn_predict(bank, labels, queries, num_classes=5, cfg=KNNConfig(k=10, temperature=0.005))
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(15))


def test_half_precision_features_are_scored_in_float32():
    bank, labels, queries = random_bank()
    bank, queries = bank.bfloat16(), queries.bfloat16()
    scores = knn_predict(bank, labels, queries, num_classes=5, cfg=KNNConfig(k=10))
    assert scores.dtype == torch.float32
    expected = knn_scores_by_loops(bank.float(), labels, queries.float(), 5, 10, 0.1)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6)


def clustered(num_classes, per_class, dim=16, noise=0.05, seed=0):
    """Each class is a tight cluster around its own orthogonal axis."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = F.one_hot(labels, dim).float() + noise * torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_separable_clusters_are_classified_perfectly():
    bank, bank_labels = clustered(num_classes=6, per_class=20, seed=0)
    queries, query_labels = clustered(num_classes=6, per_class=10, seed=1)
    assert knn_accuracy(bank, bank_labels, queries, query_labels) == {"knn_top1": 1.0, "knn_top5": 1.0}


def test_random_labels_give_chance_accuracy():
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(1000, 32, generator=generator), torch.randn(500, 32, generator=generator)
    bank_labels = torch.randint(10, (1000,), generator=generator)
    query_labels = torch.randint(10, (500,), generator=generator)
    accuracy = knn_accuracy(bank, bank_labels, queries, query_labels)
    # chance is 0.1 and 0.5; one binomial standard deviation over 500 queries is 0.013 and 0.022
    assert 0.04 < accuracy["knn_top1"] < 0.2
    assert 0.35 < accuracy["knn_top5"] < 0.65


def test_top5_is_left_out_with_fewer_than_five_classes():
    bank, bank_labels = clustered(num_classes=3, per_class=5)
    accuracy = knn_accuracy(bank, bank_labels, bank, bank_labels, cfg=KNNConfig(k=3))
    assert accuracy == {"knn_top1": 1.0}
    assert set(knn_accuracy(bank, bank_labels, bank, bank_labels, num_classes=5)) == {"knn_top1", "knn_top5"}


def test_classes_without_a_vote_are_not_top5_hits():
    # Every neighbour is class 0, so classes 1..5 all score 0; a plain topk would still put four of
    # them in the top 5 and count most of these queries as hits.
    bank, queries = torch.randn(10, 4), torch.randn(50, 4)
    bank_labels = torch.zeros(10, dtype=torch.long)
    query_labels = torch.arange(50) % 5 + 1
    accuracy = knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=6)
    assert accuracy == {"knn_top1": 0.0, "knn_top5": 0.0}


def test_num_classes_is_inferred_from_bank_and_query_labels():
    bank, bank_labels = clustered(num_classes=3, per_class=5)
    queries = torch.cat([bank, F.one_hot(torch.tensor([7]), 16).float()])
    query_labels = torch.cat([bank_labels, torch.tensor([7])])  # class 7 has no bank sample
    accuracy = knn_accuracy(bank, bank_labels, queries, query_labels, cfg=KNNConfig(k=5))
    assert accuracy["knn_top1"] == pytest.approx(15 / 16) and accuracy["knn_top5"] == pytest.approx(15 / 16)


def test_unlabelled_bank_entries_are_rejected_with_a_clear_message():
    bank, labels, queries = random_bank()
    labels[[3, 9]] = -1
    with pytest.raises(ValueError, match=r"bank_labels has 2 negative labels \(unlabelled.*labels >= 0"):
        knn_predict(bank, labels, queries, num_classes=5)
    with pytest.raises(ValueError, match="unlabelled"):
        knn_accuracy(bank, labels, queries, torch.zeros(15, dtype=torch.long))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_classes=3), "label 4, but num_classes is 3"),
        (dict(cfg=KNNConfig(temperature=0.0)), "temperature must be > 0"),
        (dict(cfg=KNNConfig(k=0)), "must be >= 1"),
        (dict(query_features=torch.randn(15, 9)), "bank has 8 feature dims, queries 9"),
        (dict(bank_labels=torch.zeros(40)), "1-D integer tensor"),
        (dict(bank_labels=torch.zeros(39, dtype=torch.long)), "40 bank features but bank_labels has shape"),
    ],
)
def test_bad_arguments_name_the_problem(change, message):
    bank, labels, queries = random_bank()
    labels[0] = 4
    arguments = dict(bank_features=bank, bank_labels=labels, query_features=queries, num_classes=5)
    with pytest.raises(ValueError, match=message):
        knn_predict(**{**arguments, **change})
