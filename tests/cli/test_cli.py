"""The ``sslray`` command line as a user meets it, without Ray: every subcommand's help, argparse's own
refusals (exit code 2), key=value overrides wherever they stand, and mistakes that fail with one line
before anything is created. (What each subcommand does is tested with its subject: tests/train, tests/tune,
tests/eval, tests/data, tests/jobs; overwriting in tests/runs/test_overwrite.py.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import yaml

import sslray.cli.train
from sslray.cli import main

from ..conftest import assert_one_line_error, tiny_recipe

# Each subcommand (as typed) and options its help must name.
HELP = {
    "data": ["prepare"],
    "data prepare": [
        "SOURCE",
        "OUT",
        "--path",
        "--split",
        "--limit",
        "--classes",
        "--num-classes",
        "--shard-size",
        "--image-column",
        "--label-column",
        "--workers",
        "--overwrite",
    ],
    "train": ["RECIPE", "key.path=value", "--out", "--resume", "--address", "--overwrite"],
    "sweep": ["SPACE", "key.path=value", "--out", "--resume", "--address", "--overwrite", "--verbose"],
    "export": ["RUN_DIR", "OUT.pt", "--overwrite"],
    "eval": [
        "--protocol",
        "--every",
        "--augment",
        "--label-fraction",
        "--layer-decay",
        "--data",
        "--train-limit",
        "--k",
        "--epochs",
        "--optimizer",
        "--lr",
        "--out",
        "--overwrite",
        "--address",
    ],
    "report": ["RUN_OR_SWEEP_DIR", "--tsne-epochs", "--vs", "--data", "--out", "--overwrite", "--address"],
    "submit": [
        "SPACE",
        "--address",
        "--out",
        "--overwrite",
        "--working-dir",
        "--env",
        "--follow",
        "--list",
        "--logs",
        "--stop",
    ],
}


@pytest.mark.parametrize("command", HELP)
def test_every_subcommands_help_exits_0_and_names_its_options(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sslray {command}")
    assert [option for option in HELP[command] if option not in out] == []


def test_python_m_sslray_cli_help_names_every_subcommand():
    result = subprocess.run([sys.executable, "-m", "sslray.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("data", "train", "sweep", "export", "eval", "report", "submit"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "argv, message, parser",
    [
        ([], "the following arguments are required: command", "sslray"),
        (["pretrain", "recipe.yaml"], "invalid choice: 'pretrain'", "sslray"),
        (["train"], "the following arguments are required: RECIPE", "sslray train"),
        (["export", "runs/r1"], "the following arguments are required: OUT.pt", "sslray export"),
        (["data", "prepare", "fashion-mnist"], "the following arguments are required: OUT", "sslray data prepare"),
        (["data", "prepare", "mnist", "out"], "invalid choice: 'mnist'", "sslray data prepare"),
        (["data", "prepare", "fashion-mnist", "out", "--limit", "0"], "--limit: 0 is out of range; must be >= 1",
         "sslray data prepare"),
        (["eval", "runs/r1", "--protocol", "svm"], "invalid choice: 'svm'", "sslray eval"),
    ],
)  # fmt: skip
def test_argparse_refuses_a_wrong_command_line_with_exit_2(argv, message, parser, capsys):
    """One line naming the mistake and the parser's --help (issue 18 #12: it was a 9-line usage block)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert_one_line_error(capsys.readouterr().err, f"sslray: error: {parser}: ", message, f"(see `{parser} --help`)")


@pytest.fixture
def parsed_train(monkeypatch) -> list[argparse.Namespace]:
    """``sslray train`` parses as usual, but runs nothing: the parsed arguments are kept instead."""
    seen = []
    monkeypatch.setattr(sslray.cli.train, "_run_train", lambda args: seen.append(args) or 0)
    return seen


@pytest.mark.parametrize(
    "argv, overrides",
    [
        (["train", "r.yaml", "--out", "runs/d", "a.b=1"], ["a.b=1"]),
        (["train", "r.yaml", "a.b=1", "--out", "runs/d", "c=2", "d.e={x: 1}"], ["a.b=1", "c=2", "d.e={x: 1}"]),
        (["train", "r.yaml", "--overwrite", "a.b=1", "--out", "runs/d"], ["a.b=1"]),
    ],
)
def test_overrides_are_collected_before_and_after_options(parsed_train, argv, overrides):
    assert main(argv) == 0
    (args,) = parsed_train
    assert (args.recipe, args.out, args.overrides) == ("r.yaml", "runs/d", overrides)


@pytest.mark.parametrize(
    "argv, stray",
    [
        (["train", "r.yaml", "--out", "runs/d", "a.b=1", "stray"], "a.b=1 stray"),  # all that is left over
        (["train", "r.yaml", "--out", "runs/d", "--bogus"], "--bogus"),
        (["train", "r.yaml", "--out", "runs/d", "--epochs=3"], "--epochs=3"),  # an option, not an override
        (["export", "runs/r1", "out.pt", "a.b=1"], "a.b=1"),  # export takes no overrides
    ],
)
def test_a_stray_argument_is_refused_with_exit_2(parsed_train, argv, stray, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"unrecognized arguments: {stray}" in capsys.readouterr().err
    assert parsed_train == []


def test_train_on_a_missing_recipe_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "missing.yaml", "--out", "runs/r1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "missing.yaml")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_resume_together_with_out_is_refused(command, tmp_path, capsys):
    """A resumed run or sweep continues in its own folder: a second folder is a contradiction."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path)))
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml" if command == "train" else old / "space.yaml").write_text(recipe.read_text())
    argv = [command, str(recipe)] if command == "train" else [command]
    assert main([*argv, "--resume", str(old), "--out", str(tmp_path / "new")]) == 2
    assert_one_line_error(capsys.readouterr().err, "--resume", "--out")
    assert not (tmp_path / "new").exists() and sorted(p.name for p in old.iterdir()) == [
        "config.yaml" if command == "train" else "space.yaml"
    ]
