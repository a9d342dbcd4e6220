"""``sslray eval`` and ``sslray report`` (argument parsing only; the work is in
``sslray.eval.evaluate`` and ``sslray.eval.report``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sslray.cli.arguments import positive_int
from sslray.errors import UserError
from sslray.eval.registry import PROTOCOLS
from sslray.runs.folders import EVAL, REPORT, check_out


def _epochs(text: str) -> list[int]:
    try:
        return [positive_int(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None


def limit_or_all(text: str) -> int:
    """A positive image count, or 'all' (0: no limit)."""
    return 0 if text.strip().lower() == "all" else positive_int(text)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="PREPARED",
        help="prepared folder with train/ and test/ splits (default: the run's data.knn_bank and data.knn_query)",
    )
    parser.add_argument(
        "--train-limit",
        type=limit_or_all,
        help="use the first N train images, or 'all' (default: the run's data.knn_bank_limit without --data)",
    )
    parser.add_argument(
        "--val-limit",
        type=limit_or_all,
        help="use the first N val images, or 'all' (default: the run's data.knn_query_limit without --data)",
    )
    parser.add_argument("--k", type=positive_int, help="kNN neighbours (default: the run's train.knn_k, 200)")
    parser.add_argument(
        "--temperature", type=float, help="kNN vote temperature (default: the run's train.knn_temperature, 0.1)"
    )
    parser.add_argument("--epochs", type=positive_int, help="linear-probe / fine-tune epochs (default 40 / 20)")
    parser.add_argument("--batch-size", type=positive_int, help="probe / fine-tune batch (default 512 / 256)")
    parser.add_argument("--optimizer", choices=["sgd", "lars", "adamw"], help="linear-probe optimizer (default sgd)")
    parser.add_argument("--lr", type=float, help="base lr per 256 images (default 0.1 probe, 1e-3 fine-tune)")
    parser.add_argument("--weight-decay", type=float, help="weight decay (default 0 probe, 0.05 fine-tune)")
    parser.add_argument(
        "--out",
        help="output folder, which must not exist yet unless --overwrite (default: RUN_DIR/eval/PROTOCOL "
        "for eval, RUN_OR_SWEEP_DIR/report for report)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def add_eval(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate a run's checkpoint(s): kNN, linear probe or fine-tune",
        description="Evaluate RUN_DIR's best checkpoint (or a checkpoint folder) with one "
        "protocol; --every K probes its checkpoints at epochs K, 2K, ...",
    )
    parser.add_argument("target", metavar="RUN_DIR|CHECKPOINT")
    parser.add_argument("--protocol", default="linear", choices=list(PROTOCOLS))
    parser.add_argument("--every", type=positive_int, metavar="K", help="evaluate the checkpoints at epochs K, 2K, ...")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="linear probe on augmented images "
        "(random-resized crop + flip) through the frozen backbone, instead of cached features",
    )
    parser.add_argument(
        "--label-fraction",
        type=float,
        help="fine-tune on this fraction of the labels, per class (e.g. 0.01, 0.1; default 1)",
    )
    parser.add_argument("--layer-decay", type=float, help="fine-tune: ViT layer-wise lr decay (default 0.75)")
    _add_common(parser)
    parser.set_defaults(run=_run_eval)


def add_report(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="compare the runs of a run or sweep folder: a sorted table and PNG plots",
        description="kNN and linear probe of every run's best checkpoint next to a "
        "random-init and a raw-pixel baseline: a table sorted by linear-probe val top-1 with a column "
        "per swept knob, loss/kNN/probe curves, t-SNE, confusion matrix and per-class report, as "
        "summary.md + one self-contained index.html. Features are cached in OUT/cache (never in the "
        "runs' folders); --overwrite keeps that cache, so a second report costs only the probes.",
    )
    parser.add_argument("target", metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument(
        "--tsne-epochs",
        type=_epochs,
        metavar="E1,E2,...",
        help="t-SNE at these pretraining epochs (default: each run's best checkpoint)",
    )
    parser.add_argument(
        "--vs",
        action="append",
        metavar="KNOB",
        help="also plot kNN and linear probe against this recipe key, e.g. method.temperature (repeatable; "
        "default for a sweep: every knob its trials differ in)",
    )
    _add_common(parser)
    parser.set_defaults(run=_run_report)


def _options(args: argparse.Namespace, protocol: str):
    from sslray.eval.protocols import EvalOptions

    options = EvalOptions(
        protocol=protocol,
        data=args.data,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
        every=getattr(args, "every", None),
        augment=getattr(args, "augment", False),
    )
    for name, value in (("k", args.k), ("temperature", args.temperature)):
        if value is not None:
            setattr(options.knn, name, value)
    for section in (options.probe, options.finetune):
        for name, value in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("base_lr", args.lr),
            ("weight_decay", args.weight_decay),
        ):
            if value is not None:
                setattr(section, name, value)
    if args.optimizer:
        options.probe.optimizer = args.optimizer
    for name in ("label_fraction", "layer_decay"):
        if getattr(args, name, None) is not None:
            setattr(options.finetune, name, getattr(args, name))
    if options.augment and protocol != "linear":
        raise UserError("--augment: only the linear probe takes it (fine-tuning always trains on augmented images)")
    options.knn.validate()
    options.probe.validate("linear probe")
    options.finetune.validate("fine-tune")
    return options


def _run_eval(args: argparse.Namespace) -> int:
    from sslray.cluster import init_ray
    from sslray.eval.evaluate import device_for, evaluate

    options = _options(args, args.protocol)
    if not Path(args.target).exists():
        raise UserError(f"{args.target}: no such run folder or checkpoint")
    if args.out:  # the default, RUN_DIR/eval/<protocol>, is checked where it is made
        check_out(args.out, EVAL, args.overwrite)  # before Ray starts
    init_ray(args.address)
    evaluate(Path(args.target), options, Path(args.out) if args.out else None, args.overwrite, device_for())
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from sslray.cluster import init_ray
    from sslray.eval.evaluate import device_for
    from sslray.eval.report import ReportFigures, build_report, find_runs

    options = _options(args, "linear")
    target = Path(args.target)
    find_runs(target)  # a wrong folder fails before Ray starts
    check_out(str(args.out or target / "report"), REPORT, args.overwrite)
    init_ray(args.address)
    build_report(
        target,
        Path(args.out) if args.out else target / "report",
        options,
        ReportFigures(tsne_epochs=args.tsne_epochs, vs=args.vs),
        args.overwrite,
        device_for(),
    )
    return 0
