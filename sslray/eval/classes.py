"""Per-class metrics of a classifier's predictions, and the tables the reports write them in.

Precision, recall and F1 come from ``sklearn.metrics.precision_recall_fscore_support`` and the confusion
matrix from ``sklearn.metrics.confusion_matrix``, both given ``labels=range(num_classes)`` so that every
class gets a row even when it never occurs in the data or the predictions. A class nobody predicted has
precision 0/0, reported as 0 (``zero_division=0``), as is recall 0/0 of a class with no examples; the
macro average counts those zeros, exactly as ``sklearn.metrics.classification_report`` would.

``markdown_table`` and ``html_table`` render any list of dict rows (this report, the comparison table of
``sslray report``, eval results): floats with one format, ``None`` (a value that does not apply) as "-".
"""

from __future__ import annotations

import html
import numbers
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def _class_ids(values: Any, num_classes: int, name: str) -> np.ndarray:
    """``values`` (torch tensor, array or list) as a 1-D int64 array of class ids in [0, num_classes)."""
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D array of integer class ids, got {array.dtype} of shape {array.shape}")
    # sklearn silently ignores ids outside `labels=`; an out-of-range id here is a caller's bug, so say so.
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{name} holds ids in [{array.min()}, {array.max()}], outside [0, {num_classes})")
    return array.astype(np.int64)


def _checked_pair(labels: Any, predictions: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    y_true = _class_ids(labels, num_classes, "labels")
    y_pred = _class_ids(predictions, num_classes, "predictions")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.shape[0]} labels but {y_pred.shape[0]} predictions")
    return y_true, y_pred


def per_class_report(
    labels: Any, predictions: Any, num_classes: int, class_names: list[str] | None = None
) -> list[dict[str, Any]]:
    """One row ``{class, precision, recall, f1, support}`` per class 0..num_classes-1, then "macro avg" and
    "weighted avg" rows (support = number of examples). ``class`` is the class name, or its id as text."""
    y_true, y_pred = _checked_pair(labels, predictions, num_classes)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    ids = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, average=None, zero_division=0
    )
    rows = [
        {
            "class": names[c],
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c in ids
    ]
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average, zero_division=0)
        rows.append(
            {
                "class": f"{average} avg",
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(y_true.size),
            }
        )
    return rows


def confusion(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Counts ``[C, C]`` (int64): entry [i, j] is the number of examples of true class i predicted as j."""
    y_true, y_pred = _checked_pair(labels, predictions, num_classes)
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes))).astype(np.int64)


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "-"
    # numbers.Real covers numpy floats too; bools and ints (Python or numpy) are Integral and print as they are.
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return floatfmt.format(value)
    return str(value)


def _columns(rows: list[dict[str, Any]], columns: list[str] | None) -> list[str]:
    """``columns``, or every key of the rows in order of first appearance."""
    if columns is not None:
        return list(columns)
    return list(dict.fromkeys(key for row in rows for key in row))


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """A GitHub Markdown table: header, separator, one line per row (no trailing newline).

    A key a row lacks shows as "-", like ``None``. Columns are padded to one width so the text reads as a
    table in a terminal too; a ``|`` inside a cell is escaped so it cannot split the cell.
    """
    header = _columns(rows, columns)
    cells = [[_cell(row.get(key), floatfmt).replace("|", "\\|") for key in header] for row in rows]
    header_cells = [str(key).replace("|", "\\|") for key in header]
    widths = [max([len(h), *(len(line[i]) for line in cells)]) for i, h in enumerate(header_cells)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header_cells), separator, *map(line, cells)])


def html_table(rows: list[dict[str, Any]], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """The same table as ``markdown_table`` as an HTML ``<table>``, every header and cell escaped."""
    header = _columns(rows, columns)
    head = "".join(f"<th>{html.escape(str(key))}</th>" for key in header)
    body = [
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(key), floatfmt))}</td>" for key in header) + "</tr>"
        for row in rows
    ]
    return "\n".join(["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>"])
