"""The ``sslray`` command line: thin argparse subcommands over the library.

Exit codes (shared/DESIGN.md): 0 success, 2 a user's mistake (one clear message, no traceback),
1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys

from sslray.cluster import use_loopback
from sslray.errors import UserError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; must be >= 1")
    return value


def _add_data(sub: argparse._SubParsersAction) -> None:
    from sslray.data.readers import SOURCES

    data = sub.add_parser("data", help="prepare datasets into sslray's Parquet format")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{prepare}")
    prep = data_sub.add_parser(
        "prepare", help="convert a dataset into sharded Parquet (image bytes, label, id)",
        description="Convert SOURCE into OUT/<split>/part-*.parquet + dataset.json. Unreadable images "
                    "are skipped and listed at the end.")
    prep.add_argument("source", choices=SOURCES, metavar="SOURCE", help=" | ".join(SOURCES))
    prep.add_argument("out", metavar="OUT", help="output folder; each split goes to OUT/<split>/")
    prep.add_argument("--path", help="where the source lives (folder or file); fashion-mnist defaults to "
                                     "/usr/share/datasets/fashion-mnist")
    prep.add_argument("--split", default="all", choices=["train", "test", "val", "unlabeled", "all"],
                      help="which split to write (default: every split the source has)")
    prep.add_argument("--limit", type=positive_int, help="at most N images per split")
    prep.add_argument("--classes", help="comma-separated class names or indices to keep (relabelled 0..k-1)")
    prep.add_argument("--num-classes", type=positive_int, help="keep the first N classes")
    prep.add_argument("--shard-size", type=positive_int, default=10_000, help="rows per Parquet shard")
    prep.add_argument("--image-column", default="image", help="parquet source: column with image bytes")
    prep.add_argument("--label-column", default="label", help="parquet source: column with int labels")
    prep.add_argument("--workers", type=positive_int, help="decode processes (default: all CPUs)")
    prep.add_argument("--overwrite", action="store_true", help="replace splits that already exist in OUT")
    prep.set_defaults(run=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from sslray.data.shards import prepare

    if args.classes is not None and args.num_classes is not None:
        raise UserError("--classes and --num-classes: give one or the other")
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    reports = prepare(args.source, args.out, path=args.path, split=args.split, limit=args.limit,
                      classes=classes, num_classes=args.num_classes, rows_per_shard=args.shard_size,
                      overwrite=args.overwrite, workers=args.workers, image_column=args.image_column,
                      label_column=args.label_column)
    for report in reports:
        print(f"{report.split}: {report.rows:,} images in {report.shards} shard(s) -> {report.folder}"
              f"  (skipped {len(report.skipped)})")
        for where, why in report.skipped[:10]:
            print(f"  skipped {where}: {why}")
        if len(report.skipped) > 10:
            print(f"  ... and {len(report.skipped) - 10} more (listed in {report.folder}/dataset.json)")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="pretrain one recipe with Ray Train",
                           description="Pretrain the method a YAML recipe describes. Overrides are dotted "
                                       "key=value pairs, e.g. train.epochs=1 data.limit=512.")
    train.add_argument("recipe", metavar="RECIPE", help="YAML recipe (see search_spaces/*_fmnist.yaml)")
    train.add_argument("overrides", nargs="*", metavar="key.path=value", help="override recipe values")
    train.add_argument("--out", help="run folder (default: runs/<method>-<date>-<time>); must not exist yet")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint")
    train.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace --out if it is an existing run folder (its contents are deleted)")
    train.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from sslray.cluster import init_ray
    from sslray.recipe import load_recipe
    from sslray.train.trainer import check_data, fit

    if args.resume and (args.out or args.overwrite):
        raise UserError(f"--resume and {'--out' if args.out else '--overwrite'}: a resumed run continues in its "
                        "own folder; give one of them")
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"--resume: {run_dir / 'config.yaml'} not found; is {run_dir} a run folder?")
        load_recipe(args.recipe, args.overrides)  # still validated, but the run's own config wins
        recipe = load_recipe(run_dir / "config.yaml", args.overrides)
        print(f"resuming {run_dir} with its config.yaml" + (" and the overrides" if args.overrides else ""))
    else:
        recipe = load_recipe(args.recipe, args.overrides)
        run_dir = Path(args.out or f"runs/{recipe.method_name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir.is_file():
            raise UserError(f"--out: {run_dir} is a file; give a folder")
        if run_dir.exists() and any(run_dir.iterdir()) and not args.overwrite:
            raise UserError(f"--out: {run_dir} already exists and is not empty; choose a new folder, "
                            "continue it with --resume, or replace it with --overwrite")
    check_data(recipe)  # a missing dataset or too few images fail here, before Ray starts
    if args.overwrite:  # only now that everything is validated: a mistake must not cost the old run
        from sslray.storage import remove_folder

        remove_folder(str(run_dir), "config.yaml")
    init_ray(args.address)
    summary = fit(recipe, run_dir)
    metrics = summary["metrics"]
    knn = f", knn_top1 {metrics['knn_top1']:.4f}" if "knn_top1" in metrics else ""
    print(f"done in {summary['minutes']:.1f} min: loss {metrics.get('loss', float('nan')):.4f}{knn}")
    for restart in summary["restarts"]:
        print(f"restarted once from the checkpoint of epoch {restart['restored_epoch']} "
              f"(epochs trained again: {restart['epochs_redone']}, plus part of epoch {restart['partial_epoch']})"
              if restart["partial_epoch"] else
              f"restarted once from the checkpoint of epoch {restart['restored_epoch']} "
              f"(epochs trained again: {restart['epochs_redone']})")
    if "stop_reason" in metrics:
        print(f"stopped early, {metrics['stop_reason']}")
    print(f"run folder: {run_dir}\ncurves:     tensorboard --logdir {run_dir}")
    # A diverged run has no usable final model: a script chaining train -> eval should stop here.
    return 1 if str(metrics.get("stop_reason", "")).startswith("diverged") else 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="explore a search space with Ray Tune (ASHA, PBT, ...)",
                           description="Run every trial of a search-space YAML (a recipe with distributions "
                                       "and a tune: section) on Ray Tune, then print the leaderboard. "
                                       "Overrides are dotted key=value pairs; a value may be a distribution, "
                                       "e.g. 'method.temperature={choice: [0.1, 0.2]}'.")
    sweep.add_argument("space", nargs="?", metavar="SPACE", help="search-space YAML (see search_spaces/quickstart.yaml)")
    sweep.add_argument("overrides", nargs="*", metavar="key.path=value", help="override values of SPACE")
    sweep.add_argument("--out", help="sweep folder, a path or a URI such as s3://BUCKET/sweeps/NAME "
                                     "(default: sweeps/<space>-<date>-<time>); must not exist yet")
    sweep.add_argument("--resume", metavar="SWEEP_DIR", help="continue a sweep whose driver stopped")
    sweep.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    sweep.add_argument("--overwrite", action="store_true",
                       help="replace --out if it is an existing sweep folder (its contents are deleted)")
    sweep.set_defaults(run=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from sslray.cluster import init_ray
    from sslray.tune.space import load_space

    if args.resume:
        if args.space or args.overrides or args.out or args.overwrite:
            raise UserError("--resume: a resumed sweep reruns its own space.yaml; give no SPACE, overrides, "
                            "--out or --overwrite")
        from sslray import storage
        from sslray.tune.sweep import SPACE_FILE, resume_sweep

        space_file = storage.join(args.resume, SPACE_FILE)
        if not storage.has_files(space_file, "--resume"):
            raise UserError(f"--resume: {space_file} not found; is {args.resume} a sweep folder?")
        init_ray(args.address)
        resume_sweep(args.resume)
        return 0
    if not args.space:
        raise UserError("SPACE: give a search-space YAML (e.g. search_spaces/quickstart.yaml) or --resume SWEEP_DIR")
    space = load_space(args.space, args.overrides)  # every mistake in the YAML fails here, before Ray starts
    out = args.out or f"sweeps/{Path(args.space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    from sslray import storage

    if storage.has_files(out) and not args.overwrite:  # a path or a URI (s3://, gs://, ...: sslray.storage)
        raise UserError(f"--out: {out} already exists and is not empty; choose a new folder, "
                        "continue it with --resume, or replace it with --overwrite")
    from sslray.recipe import recipe_from_dict
    from sslray.train.trainer import check_data
    from sslray.tune.sweep import SPACE_FILE, run_sweep

    check_data(recipe_from_dict(space.trial_recipe(space.first_config())))  # a missing dataset fails before Ray
    if args.overwrite:  # only now that everything is validated: a mistake must not cost the old sweep
        storage.remove_folder(out, SPACE_FILE)
    init_ray(args.address)
    run_sweep(space, out)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write a run's backbone as a plain torchvision/timm state dict")
    export.add_argument("run_dir", metavar="RUN_DIR", help="run folder (its best checkpoint) or a checkpoint folder")
    export.add_argument("out", metavar="OUT.pt", help="where to write the weights (plus OUT.json)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT.pt / OUT.json if they exist")
    export.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sslray.train.export import export_backbone

    info = export_backbone(Path(args.run_dir), Path(args.out), overwrite=args.overwrite)
    print(f"{args.out}: {info['backbone']['name']} backbone of {info['method']} ({info['num_features']} features) "
          f"from {info['checkpoint']}\nload with: {info['load']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sslray", description="Self-supervised pretraining and sweeps on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data(sub)
    _add_train(sub)
    _add_sweep(sub)
    _add_export(sub)
    from sslray.eval.commands import add_eval, add_report

    add_eval(sub)
    add_report(sub)
    from sslray.submit import add_submit

    add_submit(sub)
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
    except KeyboardInterrupt:
        print("sslray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
