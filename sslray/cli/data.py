"""``sslray data prepare``: convert a dataset into sslray's Parquet format."""

from __future__ import annotations

import argparse

from sslray.cli.arguments import positive_int
from sslray.errors import UserError


def add_data(sub: argparse._SubParsersAction) -> None:
    from sslray.data.readers import SOURCES

    data = sub.add_parser("data", help="prepare datasets into sslray's Parquet format")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{prepare}")
    prep = data_sub.add_parser(
        "prepare",
        help="convert a dataset into sharded Parquet (image bytes, label, id)",
        description="Convert SOURCE into OUT/<split>/part-*.parquet + dataset.json. Unreadable images "
        "are skipped and listed at the end.",
    )
    prep.add_argument("source", choices=SOURCES, metavar="SOURCE", help=" | ".join(SOURCES))
    prep.add_argument("out", metavar="OUT", help="output folder; each split goes to OUT/<split>/")
    prep.add_argument(
        "--path",
        help="where the source lives (folder or file); fashion-mnist defaults to /usr/share/datasets/fashion-mnist",
    )
    prep.add_argument(
        "--split",
        default="all",
        choices=["train", "test", "val", "unlabeled", "all"],
        help="which split to write (default: every split the source has)",
    )
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
    from sslray.data.shards import ShardOptions, prepare

    if args.classes is not None and args.num_classes is not None:
        raise UserError("--classes and --num-classes: give one or the other")
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    options = ShardOptions(
        classes=classes,
        num_classes=args.num_classes,
        rows_per_shard=args.shard_size,
        overwrite=args.overwrite,
        workers=args.workers,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    reports = prepare(args.source, args.out, path=args.path, split=args.split, limit=args.limit, options=options)
    for report in reports:
        print(
            f"{report.split}: {report.rows:,} images in {report.shards} shard(s) -> {report.folder}"
            f"  (skipped {len(report.skipped)})"
            + (f"; {report.composited} with transparency composited on white" if report.composited else "")
        )
        for where, why in report.skipped[:10]:
            print(f"  skipped {where}: {why}")
        if len(report.skipped) > 10:
            print(f"  ... and {len(report.skipped) - 10} more (listed in {report.folder}/dataset.json)")
    return 0
