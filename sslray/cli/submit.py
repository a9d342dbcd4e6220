"""``sslray submit``: a sweep as a Ray job on a cluster; follow, list or stop jobs (the work is in
``sslray.submit``)."""

from __future__ import annotations

import argparse

from sslray.errors import UserError
from sslray.submit import SweepJob, check_job_exists, connect, follow, list_jobs, stop, submit


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def add_submit(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "submit",
        help="run a sweep on a Ray cluster (Ray Jobs); follow, list or stop jobs",
        description="Submit `sslray sweep SPACE` to a Ray cluster as a Ray job, with this folder as its "
        "working_dir. See jobs/README.md for clusters (ray up, KubeRay).",
    )
    parser.add_argument("space", nargs="?", metavar="SPACE", help="search-space YAML inside --working-dir")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override values of SPACE")
    parser.add_argument(
        "--address",
        help="the cluster's job server, http://HEAD:8265 (default: "
        "RAY_API_SERVER_ADDRESS, or RAY_ADDRESS if it is an http URL)",
    )
    parser.add_argument(
        "--out",
        help="sweep folder as the cluster sees it: a path on its nodes (NFS) or a "
        "URI such as s3://BUCKET/sweeps/NAME (default: ./sweeps/<space>-<time>, "
        "made absolute)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="let the job replace --out if it is an existing sweep folder"
    )
    parser.add_argument("--working-dir", default=".", help="folder shipped with the job (default: here)")
    parser.add_argument(
        "--env",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the job (repeatable)",
    )
    parser.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the cluster's jobs")
    action.add_argument("--logs", metavar="JOB_ID", help="follow a submitted job's logs until it ends")
    action.add_argument("--stop", metavar="JOB_ID", help="stop a running job")
    parser.set_defaults(run=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    if args.list or args.logs or args.stop:
        if args.space or args.overrides:
            raise UserError("SPACE: --list, --logs and --stop take no search space")
        client = connect(args.address)
        if args.list:
            list_jobs(client)
            return 0
        if args.stop:
            check_job_exists(client, args.stop, "--stop")
            stop(client, args.stop)
            return 0
        check_job_exists(client, args.logs, "--logs")
        return follow(client, args.logs)
    if not args.space:
        raise UserError(
            "SPACE: give a search-space YAML (e.g. search_spaces/quickstart.yaml), or --list / "
            "--logs JOB_ID / --stop JOB_ID"
        )
    job = SweepJob(
        args.space,
        args.overrides,
        out=args.out,
        working_dir=args.working_dir,
        env=dict(args.env),
        overwrite=args.overwrite,
    )
    client, job_id, _ = submit(args.address, job)
    if args.follow:
        return follow(client, job_id)
    address = client.get_address()
    print(
        f"follow it: sslray submit --address {address} --logs {job_id}\n"
        f"stop it:   sslray submit --address {address} --stop {job_id}"
    )
    return 0
