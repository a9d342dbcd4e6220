import numpy as np
import pytest
import torch

from sslray.eval.classes import confusion, html_table, markdown_table, per_class_report


def report_by_counts(labels, predictions, num_classes):
    """Precision, recall and F1 per class from true / false positive and false negative counts, written
    out with loops; 0/0 counts as 0. Then the macro (plain) and weighted (by support) means."""
    rows = []
    for c in range(num_classes):
        tp = sum(1 for y, p in zip(labels, predictions) if y == c and p == c)
        fp = sum(1 for y, p in zip(labels, predictions) if y != c and p == c)
        fn = sum(1 for y, p in zip(labels, predictions) if y == c and p != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"precision": precision, "recall": recall, "f1": f1, "support": tp + fn})
    total = len(labels)
    for name in ("macro", "weighted"):
        weights = [1 / num_classes] * num_classes if name == "macro" else [r["support"] / total for r in rows]
        rows.append(
            {key: sum(w * r[key] for w, r in zip(weights, rows[:num_classes])) for key in ("precision", "recall", "f1")}
            | {"support": total}
        )
    return rows


def skewed_example(seed=0, n=60):
    """5 classes: class 3 is never predicted (precision 0/0) and class 4 never occurs (recall 0/0)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    predictions = np.where(rng.random(n) < 0.6, labels, rng.choice([0, 1, 2, 4], n))
    predictions[predictions == 3] = 4
    return labels, predictions


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_report_matches_counts(seed, as_tensor):
    labels, predictions = skewed_example(seed)
    assert 3 not in predictions and 4 not in labels and 3 in labels and 4 in predictions
    expected = report_by_counts(labels.tolist(), predictions.tolist(), 5)
    if as_tensor:
        labels, predictions = torch.from_numpy(labels), torch.from_numpy(predictions)
    rows = per_class_report(labels, predictions, 5)
    assert [r["class"] for r in rows] == ["0", "1", "2", "3", "4", "macro avg", "weighted avg"]
    for row, want in zip(rows, expected):
        for key in ("precision", "recall", "f1"):
            assert row[key] == pytest.approx(want[key], abs=1e-12), (row["class"], key)
        assert row["support"] == want["support"]
    assert rows[3]["precision"] == 0.0 and rows[3]["support"] > 0  # a class nobody predicted: 0/0 -> 0
    assert rows[4]["support"] == 0 and rows[4]["recall"] == 0.0  # a class with no examples still has a row


def test_per_class_report_uses_class_names_and_checks_them():
    rows = per_class_report([0, 1, 1, 2], [0, 1, 2, 2], 3, ["cat", "dog", "bird"])
    assert [r["class"] for r in rows[:3]] == ["cat", "dog", "bird"]
    assert rows[1] == {"class": "dog", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        per_class_report([0, 1], [0, 1], 3, ["cat", "dog"])


@pytest.mark.parametrize(
    "labels, predictions, message",
    [
        ([0, 1, 3], [0, 1, 1], "labels holds ids in"),  # 3 is not a class of 3
        ([0, -1, 2], [0, 1, 1], "labels holds ids in"),  # an unlabelled image must be filtered by the caller
        ([0, 1, 2], [0, 1], "3 labels but 2 predictions"),
        ([0.0, 1.0], [0, 1], "integer class ids"),
    ],
)
def test_bad_inputs_are_errors(labels, predictions, message):
    with pytest.raises(ValueError, match=message):
        per_class_report(labels, predictions, 3)
    with pytest.raises(ValueError, match=message):
        confusion(labels, predictions, 3)


def test_confusion_counts_every_pair():
    labels, predictions = skewed_example(seed=3, n=200)
    matrix = confusion(torch.from_numpy(labels), predictions, 5)
    assert matrix.shape == (5, 5) and matrix.dtype == np.int64
    assert matrix.sum() == 200
    for c in range(5):
        assert matrix[c, c] == np.sum((labels == c) & (predictions == c))
        assert matrix[c].sum() == np.sum(labels == c)  # rows are the true classes
        assert matrix[:, c].sum() == np.sum(predictions == c)
    assert matrix[:, 3].sum() == 0 and matrix[4].sum() == 0


def test_markdown_table_lines_cells_and_formats():
    rows = [
        {"name": "simclr", "top1": 0.81234, "epochs": 10, "note": None},
        {"name": "a|b", "top1": np.float32(0.5), "epochs": np.int64(3)},
    ]  # no "note": shown as "-"
    text = markdown_table(rows, floatfmt="{:.2f}")
    lines = text.splitlines()
    assert len(lines) == len(rows) + 2
    header, separator, first, second = lines
    assert [c.strip() for c in header.strip("|").split("|")] == ["name", "top1", "epochs", "note"]
    assert set(separator) == {"|", "-"}
    assert [c.strip() for c in first.strip("|").split("|")] == ["simclr", "0.81", "10", "-"]
    assert "0.50" in second and " 3 " in second and "a\\|b" in second
    # Escaped pipes keep the cell count: every line splits into the same number of unescaped cells.
    assert {len(line.replace("\\|", "").split("|")) for line in lines} == {6}
    assert len({len(line) for line in lines}) == 1  # padded columns


def test_markdown_table_chosen_columns_in_order():
    text = markdown_table([{"a": 1.0, "b": 2, "c": "x"}], columns=["c", "a", "missing"])
    assert text.splitlines()[0].split() == ["|", "c", "|", "a", "|", "missing", "|"]
    assert text.splitlines()[2].split() == ["|", "x", "|", "1.000", "|", "-", "|"]


def test_html_table_escapes_and_has_a_row_per_row():
    rows = [{"name": "<script>alert(1)</script>", "top1": 0.5}, {"name": "a & b", "top1": None}]
    text = html_table(rows)
    assert "<script>" not in text and "&lt;script&gt;" in text and "a &amp; b" in text
    assert text.count("<tr>") == len(rows) + 1
    assert "<td>0.500</td>" in text and "<td>-</td>" in text
    assert text.startswith("<table>") and text.endswith("</table>")
