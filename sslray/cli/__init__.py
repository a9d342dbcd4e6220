"""The ``sslray`` command line: thin argparse subcommands over the library.

One module per subcommand, each with ``add_<name>(subparsers)`` and the function it runs; this
package is the only place that parses arguments. Exit codes (docs/architecture.md): 0 success,
2 a user's mistake (one clear message, no traceback), 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys

from sslray.cli.data import add_data
from sslray.cli.evaluation import add_eval, add_report
from sslray.cli.export import add_export
from sslray.cli.submit import add_submit
from sslray.cli.sweep import add_sweep
from sslray.cli.train import add_train
from sslray.cluster import use_loopback
from sslray.errors import UserError
from sslray.interrupts import Interrupted


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes are one ``sslray: error:`` line pointing at ``--help``, like every other
    mistake, instead of the usage block (which ``--help`` shows). Sub-parsers take the same class."""

    def error(self, message: str):
        self.exit(2, f"sslray: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sslray", description="Self-supervised pretraining and sweeps on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_data, add_train, add_sweep, add_export, add_eval, add_report, add_submit):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options (`train R --out D a.b=1`), where argparse no longer
    # fills the positional list: collect them from what it leaves over.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if not getattr(args, "address", None) and "RAY_ADDRESS" not in os.environ:
        use_loopback()  # before any subcommand imports ray: a local Ray then stays on 127.0.0.1
    try:
        return args.run(args)
    except UserError as err:
        print(f"sslray: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"sslray: interrupted: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("sslray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
