"""``summary.md`` and ``index.html`` of ``sslray report``: the same content, for a terminal or Git host and
for a browser. What was compared and the evaluation protocol come first, then the table (best first,
``report_table``), the best run's per-class report, and the figures with their captions."""

from __future__ import annotations

from pathlib import Path

from sslray.eval.classes import per_class_report
from sslray.eval.protocols import EvalOptions, Trained
from sslray.eval.report_figures import TSNE_POINTS, Compared, Drawn
from sslray.eval.report_html import Page, render
from sslray.eval.report_table import SORT_BY, columns, markdown


def protocol(compared: Compared, options: EvalOptions) -> list[tuple[str, str]]:
    """(what, how) lines: the kNN and linear-probe settings, the images, the table's order."""
    knn, probe = options.knn, options.probe
    return [
        (
            "kNN",
            f"weighted vote of the k={knn.k} nearest bank features (cosine similarity), T={knn.temperature:g}",
        ),
        (
            "linear probe",
            f"BatchNorm (no affine) + linear layer on frozen features, {probe.epochs} epochs, {probe.optimizer}, "
            f"batch {probe.batch_size}, base lr {probe.base_lr:g} per 256 images, weight decay {probe.weight_decay:g}",
        ),
        ("images", compared.splits.describe()),
        ("order", f"runs by {SORT_BY[0]} (ties: {SORT_BY[1]}), best first; then the two baselines"),
        ("t-SNE", f"val features, at most {TSNE_POINTS} points per map"),
    ]


def write_pages(
    compared: Compared, out: Path, rows: list[dict], drawn: Drawn, options: EvalOptions, best: tuple[str, Trained]
) -> None:
    """``summary.md`` and ``index.html`` in ``out``; ``rows`` in table order (``report_table.ranked``)."""
    name, trained = best
    classes = compared.classes()
    per_class = per_class_report(trained.val_labels, trained.val_predictions, trained.num_classes, classes)
    knobs = list(compared.knobs)
    lines = ["# sslray report", "", compared.describe(), ""]
    lines += [f"- **{what}**: {how}" for what, how in protocol(compared, options)]
    lines += ["", markdown(rows, columns(knobs)), ""]
    lines += [f"## Per-class precision / recall / F1 of the best run ({name}), linear probe", ""]
    lines += [markdown(per_class, list(per_class[0])), "", "## Figures", ""]
    for file, caption in drawn.figures:
        lines += [f"{caption}", "", f"![{file}]({file})", ""]
    (out / "summary.md").write_text("\n".join(lines))
    page = Page(compared.describe(), protocol(compared, options), rows, knobs, name, per_class, drawn.figures)
    (out / "index.html").write_text(render(page, out))
