"""``sslray export``: a run's backbone as a plain torchvision/timm state dict."""

from __future__ import annotations

import argparse


def add_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write a run's backbone as a plain torchvision/timm state dict")
    export.add_argument("run_dir", metavar="RUN_DIR", help="run folder (its best checkpoint) or a checkpoint folder")
    export.add_argument("out", metavar="OUT.pt", help="where to write the weights (plus OUT.json)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT.pt / OUT.json if they exist")
    export.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sslray.train.export import export_backbone

    info = export_backbone(Path(args.run_dir), Path(args.out), overwrite=args.overwrite)
    print(
        f"{args.out}: {info['backbone']['name']} backbone of {info['method']} ({info['num_features']} features) "
        f"from {info['checkpoint']}\nload with: {info['load']}"
    )
    return 0
