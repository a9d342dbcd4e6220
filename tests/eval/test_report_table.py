"""The comparison table of `sslray report` (issue 17 item 6): runs best first with the baselines kept below,
a column per knob (blank where a run's recipe has no such key), 4 significant digits, numbers
right-aligned; and index.html as one self-contained, styled page. Pure functions on hand-made rows."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sslray.errors import UserError
from sslray.eval.knobs import knob_points, knob_values
from sslray.eval.report_html import Page, render, table
from sslray.eval.report_table import cell, columns, markdown, ranked
from sslray.recipe import recipe_from_dict

from ..conftest import tiny_recipe

TINY_BYOL = {"name": "byol", "proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32}
# A 1x1 PNG, enough for the page to embed.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def row(name: str, linear: float, knn: float, **knobs) -> dict:
    return {
        "name": name,
        "method": "-" if name in ("random init", "raw pixels") else "simclr",
        "backbone": "resnet10t",
        "epoch": 3,
        "params (M)": 1.2321,
        "s/epoch": 18.5049,
        "knn top1": knn,
        "linear train top1": 0.9,
        "linear val top1": linear,
        **knobs,
    }


ROWS = [
    row("raw pixels", 0.77, 0.712),  # better than every run: still listed below them
    row("a", 0.61, 0.5, **{"method.temperature": 0.18542961720387044, "optim.base_lr": 0.004784156}),
    row("random init", 0.614, 0.412),
    row("b", 0.71, 0.666, **{"method.temperature": None, "optim.base_lr": 1e-7}),  # b's method has no T
    row("c", 0.71, 0.688, **{"method.temperature": 0.29, "optim.base_lr": 0.002}),
]


def test_runs_are_ranked_best_first_and_the_baselines_stay_below_them():
    table = ranked(ROWS)
    # c and b tie on linear val top-1: the higher kNN top-1 goes first.
    assert [(r["#"], r["name"]) for r in table] == [
        (1, "c"),
        (2, "b"),
        (3, "a"),
        ("baseline", "raw pixels"),
        ("baseline", "random init"),
    ]


def test_markdown_has_a_column_per_knob_4_significant_digits_and_right_aligned_numbers():
    knobs = ["method.name", "method.temperature", "optim.base_lr"]
    header = columns(knobs)
    assert header[:5] == ["#", "name", "method", "method.temperature", "optim.base_lr"]  # method.name is "method"
    lines = markdown(ranked(ROWS), header).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    by_name = {line[1]: dict(zip(header, line)) for line in cells[2:]}
    assert by_name["a"]["method.temperature"] == "0.1854" and by_name["a"]["optim.base_lr"] == "0.004784"
    assert by_name["b"]["method.temperature"] == "" and by_name["b"]["optim.base_lr"] == "1e-07"
    assert by_name["c"]["linear val top1"] == "0.7100" and by_name["c"]["s/epoch"] == "18.50"
    assert by_name["c"]["params (M)"] == "1.232" and by_name["c"]["epoch"] == "3"
    assert by_name["random init"]["#"] == "baseline" and by_name["random init"]["optim.base_lr"] == ""
    separator = dict(zip(header, cells[1]))
    assert separator["linear val top1"].endswith(":") and not separator["name"].endswith(":")
    assert len({len(line) for line in lines}) == 1  # padded: it reads as a table in a terminal
    assert cell({"name": "raw pixels", "params (M)": None}, "params (M)") == "-"


def test_html_table_marks_the_best_run_and_the_baselines():
    html = table(ranked(ROWS), columns(["optim.base_lr"]), best="c")
    body = html.split("<tbody>")[1].splitlines()[1:-2]
    assert body[0].startswith('<tr class="best">') and "<td>c</td>" in body[0]
    assert body[1].startswith("<tr>") and body[2].startswith("<tr>")
    assert body[3].startswith('<tr class="baseline first">') and body[4].startswith('<tr class="baseline">')
    assert "<td class=num>0.7100</td>" in body[0] and "<th class=num>linear val top1</th>" in html


def test_index_html_is_one_self_contained_page(tmp_path: Path):
    (tmp_path / "loss.png").write_bytes(PNG)
    page = Page(
        compared="The 3 trials of the sweep s",
        protocol=[("kNN", "k=200, T=0.1"), ("linear probe", "40 epochs")],
        rows=ranked(ROWS),
        knobs=["optim.base_lr"],
        best="c",
        per_class=[{"class": "Bag", "precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4}],
        figures=[("loss.png", "Pretraining loss per epoch.")],
    )
    text = render(page, tmp_path)
    assert "<style>" in text and "nth-child(even)" in text and "text-align: right" in text
    assert "<script" not in text and "<link" not in text and "http" not in text  # nothing fetched
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in text
    assert "<figcaption>Pretraining loss per epoch. <code>loss.png</code></figcaption>" in text
    assert "<dt>kNN</dt><dd>k=200, T=0.1</dd>" in text and "The 3 trials of the sweep s" in text
    assert "<td class=num>0.3333</td>" in text  # the per-class table, 4 significant digits


def test_a_knob_some_runs_lack_is_none_for_them_and_off_their_curve():
    simclr = recipe_from_dict(tiny_recipe(Path("data")))
    byol = recipe_from_dict(tiny_recipe(Path("data"), method=TINY_BYOL))
    recipes = {Path("s"): simclr, Path("b"): byol}
    values = knob_values(recipes, "method.temperature")
    assert values == {Path("s"): simclr.to_dict()["method"]["temperature"], Path("b"): None}
    points = knob_points({"s": values[Path("s")], "b": None}, [row("s", 0.5, 0.4), row("b", 0.6, 0.3)], ("knn top1",))
    assert [p["runs"] for p in points] == [["s"]]
    with pytest.raises(UserError, match="--vs method.temprature: s has no method.temprature"):
        knob_values(recipes, "method.temprature")  # no run has it: a typo
