"""leaderboard.png tells trials apart: four trials of one method must not look the same (issue 17 item 3)."""

from __future__ import annotations

from pathlib import Path

import yaml

from sslray.tune.leaderboard import curves_figure, plot_curves, ranked
from sslray.tune.space import load_space


def _rows(space) -> list[dict]:
    """Leaderboard rows as ``results.finish`` makes them: four MACRL-like trials of one method (the case
    where colour by method alone drew four identical lines), and one of a second method."""
    rows = []
    for i, (method, temperature) in enumerate(
        [("simclr", 0.1), ("simclr", 0.2), ("simclr", 0.3), ("simclr", 0.4), ("byol", None)]
    ):
        config = {"method.name": method, "method.temperature": temperature, "optim.base_lr": 1e-3 * (i + 1)}
        if method == "byol":
            config.pop("method.temperature")
        curve = [(1, 0.5 + 0.01 * i), (2, 0.55 + 0.02 * i), (3, 0.6 + 0.01 * i)]
        rows.append(
            {
                "trial": f"{method}_{i:05d}",
                "config": config,
                "applicable": space.applicable(config),
                "best": max(v for _, v in curve),
                "curve": curve,
            }
        )
    return ranked(rows, "max")


def test_every_trial_has_its_own_look_rank_and_knobs(tmp_path):
    path = Path(tmp_path / "space.yaml")
    path.write_text(
        yaml.safe_dump(
            {
                "method": {"name": {"choice": ["simclr", "byol"]}, "temperature": {"choice": [0.1, 0.2, 0.3, 0.4]}},
                "backbone": {"name": "resnet18", "in_chans": 1},
                "optim": {"base_lr": {"loguniform": [1e-4, 1e-2]}},
                "tune": {"num_samples": 5},
            }
        )
    )
    space = load_space(path)
    rows = _rows(space)
    baselines = {"values": {"random-init": 0.4, "raw-pixels": 0.7}}
    fig = curves_figure(space, rows, baselines)
    ax = fig.axes[0]
    trials = [line for line in ax.get_lines() if not line.get_label().endswith("(baseline)")]
    looks = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in trials}
    assert len(trials) == 5 and len(looks) == 5
    labels = [line.get_label() for line in trials]
    assert labels[:2] == ["#1 byol base_lr=0.005", "#2 simclr temperature=0.4 base_lr=0.004"], labels
    assert all("temperature" not in label for label in labels if " byol " in label)  # not its knob
    assert max(line.get_linewidth() for line in trials) == trials[0].get_linewidth()  # the best is thickest
    assert sorted(t.get_text() for t in ax.texts) == [f"#{i}" for i in range(1, 6)]  # ranks at the curves' ends
    assert {line.get_label() for line in ax.get_lines()} >= {"random-init (baseline)", "raw-pixels (baseline)"}
    plot_curves(space, rows, tmp_path / "leaderboard.png", baselines)
    assert (tmp_path / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
