"""``sslray sweep``: explore a search space with Ray Tune, or resume one."""

from __future__ import annotations

import argparse

from sslray.errors import UserError


def add_sweep(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="explore a search space with Ray Tune (ASHA, PBT, ...)",
        description="Run every trial of a search-space YAML (a recipe with distributions "
        "and a tune: section) on Ray Tune, then print the leaderboard. "
        "Overrides are dotted key=value pairs; a value may be a distribution, "
        "e.g. 'method.temperature={choice: [0.1, 0.2]}'.",
    )
    sweep.add_argument(
        "space", nargs="?", metavar="SPACE", help="search-space YAML (see search_spaces/quickstart.yaml)"
    )
    sweep.add_argument("overrides", nargs="*", metavar="key.path=value", help="override values of SPACE")
    sweep.add_argument(
        "--out",
        help="sweep folder, a path or a URI such as s3://BUCKET/sweeps/NAME "
        "(default: sweeps/<space>-<date>-<time>); must not exist yet",
    )
    sweep.add_argument("--resume", metavar="SWEEP_DIR", help="continue a sweep whose driver stopped")
    sweep.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    sweep.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it is an existing sweep folder (its contents are deleted)",
    )
    sweep.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's and Tune's own output (status table, logs, the trials' output) instead of "
        "sslray's progress lines; otherwise it goes to SWEEP/logs/driver.log",
    )
    sweep.set_defaults(run=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sslray.tune.space import load_space

    if args.resume:
        if args.space or args.overrides or args.out or args.overwrite:
            raise UserError(
                "--resume: a resumed sweep reruns its own space.yaml; give no SPACE, overrides, --out or --overwrite"
            )
        from sslray.runs import storage
        from sslray.tune.sweep import SPACE_FILE, resume_sweep

        space_file = storage.join(args.resume, SPACE_FILE)
        if not storage.has_files(space_file, "--resume"):
            raise UserError(f"--resume: {space_file} not found; is {args.resume} a sweep folder?")
        resume_sweep(args.resume, args.address, args.verbose)
        return 0
    if not args.space:
        raise UserError("SPACE: give a search-space YAML (e.g. search_spaces/quickstart.yaml) or --resume SWEEP_DIR")
    space = load_space(args.space, args.overrides)  # every mistake in the YAML fails here, before Ray starts
    from sslray.runs.folders import SWEEP, check_out, default_out, replace_folder

    out = args.out or default_out("sweeps", Path(args.space).stem)
    check_out(out, SWEEP, args.overwrite)  # a path or a URI (s3://, gs://, ...: sslray.runs.storage)
    from sslray.tune.sweep import check_trial_data, run_sweep

    check_trial_data(space)  # a missing dataset, in any value of a distribution, fails before Ray
    if args.overwrite:  # only now that everything is validated: a mistake must not cost the old sweep
        replace_folder(out, SWEEP)
    run_sweep(space, out, args.address, args.verbose)  # starts (and stops) a local Ray unless connected
    return 0
