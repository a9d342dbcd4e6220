"""``sslray train``: pretrain one recipe with Ray Train."""

from __future__ import annotations

import argparse

from sslray.errors import UserError


def add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="pretrain one recipe with Ray Train",
        description="Pretrain the method a YAML recipe describes. Overrides are dotted "
        "key=value pairs, e.g. train.epochs=1 data.limit=512.",
    )
    train.add_argument("recipe", metavar="RECIPE", help="YAML recipe (see search_spaces/*_fmnist.yaml)")
    train.add_argument("overrides", nargs="*", metavar="key.path=value", help="override recipe values")
    train.add_argument("--out", help="run folder (default: runs/<method>-<date>-<time>); must not exist yet")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint")
    train.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it is an existing run folder (its contents are deleted)",
    )
    train.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sslray.cluster import init_ray
    from sslray.interrupts import Interrupted, run_until_interrupted
    from sslray.recipe import load_recipe
    from sslray.runs.folders import RUN, check_out, default_out, replace_folder
    from sslray.train.trainer import check_data, fit

    if args.resume and (args.out or args.overwrite):
        raise UserError(
            f"--resume and {'--out' if args.out else '--overwrite'}: a resumed run continues in its "
            "own folder; give one of them"
        )
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"--resume: {run_dir / 'config.yaml'} not found; is {run_dir} a run folder?")
        load_recipe(args.recipe, args.overrides)  # still validated, but the run's own config wins
        recipe = load_recipe(run_dir / "config.yaml", args.overrides)
        print(f"resuming {run_dir} with its config.yaml" + (" and the overrides" if args.overrides else ""))
    else:
        recipe = load_recipe(args.recipe, args.overrides)
        run_dir = Path(args.out or default_out("runs", recipe.method_name))
        check_out(str(run_dir), RUN, args.overwrite)
    check_data(recipe)  # a missing dataset or too few images fail here, before Ray starts
    if args.overwrite:  # only now that everything is validated: a mistake must not cost the old run
        replace_folder(str(run_dir), RUN)
    init_ray(args.address)
    try:
        summary = run_until_interrupted(lambda: fit(recipe, run_dir))
    except KeyboardInterrupt:
        import ray

        ray.shutdown()  # stops the run's workers (the driver owns them); checkpoints are whole per epoch
        raise Interrupted(_kept(run_dir, args.recipe)) from None
    metrics = summary["metrics"]
    knn = f", knn_top1 {metrics['knn_top1']:.4f}" if "knn_top1" in metrics else ""
    print(f"done in {summary['minutes']:.1f} min: loss {metrics.get('loss', float('nan')):.4f}{knn}")
    for restart in summary["restarts"]:
        print(
            f"restarted once from the checkpoint of epoch {restart['restored_epoch']} "
            f"(epochs trained again: {restart['epochs_redone']}, plus part of epoch {restart['partial_epoch']})"
            if restart["partial_epoch"]
            else f"restarted once from the checkpoint of epoch {restart['restored_epoch']} "
            f"(epochs trained again: {restart['epochs_redone']})"
        )
    if "stop_reason" in metrics:
        print(f"stopped early, {metrics['stop_reason']}")
    print(f"run folder: {run_dir}\ncurves:     tensorboard --logdir {run_dir}")
    # A diverged run has no usable final model: a script chaining train -> eval should stop here.
    return 1 if str(metrics.get("stop_reason", "")).startswith("diverged") else 0


def _kept(run_dir, recipe: str) -> str:
    """What an interrupted run keeps, and the command that continues it."""
    from sslray.runs.checkpoint import checkpoint_folders, read_state

    folders = checkpoint_folders(run_dir)
    if not folders:
        return f"no epoch had finished, so {run_dir} holds no checkpoint; start again with --overwrite"
    epoch = read_state(folders[-1])["epoch"] + 1
    return (
        f"{run_dir} keeps its checkpoints up to epoch {epoch}; continue with: sslray train {recipe} --resume {run_dir}"
    )
