"""``sslray submit``: run a sweep on a Ray cluster as a Ray job, then follow, list or stop jobs.

A job is ``python -m sslray.cli sweep SPACE [overrides] --out OUT`` started on the cluster's head by
Ray's job server (``ray.job_submission.JobSubmissionClient``), with the project shipped as the job's
``runtime_env`` ``working_dir`` (results, datasets and the virtualenv excluded). The cluster needs
sslray's dependencies installed (jobs/cluster.yaml, jobs/Dockerfile); the code itself travels with
the job, so what runs is what you have checked out.

Before anything is sent, the search space is validated here (a typo fails in a second, exit 2), and
what only makes sense on this machine is made explicit: relative data paths and the default ``--out``
become absolute paths of this machine, which is right for a cluster on this machine or a project on
shared disk; a remote cluster gets paths it can see or URIs (``--out s3://...``, ``data.path=s3://...``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sslray.errors import UserError
from sslray.locations import absolute
from sslray.runs import storage
from sslray.runs.folders import SWEEP, check_out, default_out

# Never shipped with the job: results, datasets, the local virtualenv, caches. (Ray also skips what
# .gitignore lists.) Paths are relative to the working dir, as in runtime_env "excludes".
EXCLUDES = [".venv", ".git", "data", "runs", "sweeps", "*.egg-info", "__pycache__", ".pytest_cache", "benchmarks/out"]
EXCLUDED_FOLDERS = {"data", "runs", "sweeps", ".venv", ".git"}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


# ---- connecting ------------------------------------------------------------------------------------


def job_server_address(address: str | None) -> str:
    """``--address``, else ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS`` when it is a dashboard URL."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address and os.environ.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        address = os.environ["RAY_ADDRESS"]
    if not address:
        raise UserError(
            "--address: give the cluster's job server, e.g. --address http://127.0.0.1:8265 "
            "(the head's dashboard port; `ray dashboard jobs/cluster.yaml` tunnels it here)"
        )
    if not address.startswith(("http://", "https://")):
        raise UserError(
            f"--address: {address} is not a job server URL; use http://HEAD:8265 "
            "(the dashboard address, not the GCS port 6379)"
        )
    return address.rstrip("/")


def use_token_auth_if_available() -> bool:
    """Ray >= 2.59 clusters require a token (``ray start`` turns it on when one exists). When
    ``RAY_AUTH_MODE`` is unset and a token is at hand, use it, as ``ray start`` itself does."""
    if "RAY_AUTH_MODE" in os.environ:
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(token_file).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        # Ray caches the mode in its config when first imported: refresh it, as `ray start` does
        # (ray/_private/authentication/authentication_token_setup.py, _enable_token_auth).
        from ray._raylet import Config

        Config.initialize("")
        return True
    return False


def connect(address: str | None):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = job_server_address(address)
    use_token_auth_if_available()
    try:
        return JobSubmissionClient(address)
    except ConnectionError:
        raise UserError(
            f"--address: no Ray job server answers at {address}; is the cluster up and its "
            "dashboard port reachable from here?"
        ) from None
    except AuthenticationError as err:
        raise UserError(
            f"--address: {address} refused the request: {_first_line(err)} "
            "(copy the head's token, `ray get-auth-token` on the head, to ~/.ray/auth_token here, "
            "or set RAY_AUTH_TOKEN; RAY_AUTH_MODE=token)"
        ) from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# ---- the job ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepJob:
    """The sweep a job runs, as ``sslray submit`` was given it."""

    space_file: str  # search-space YAML inside working_dir
    overrides: list[str] = field(default_factory=list)  # key.path=value overrides of the space
    out: str | None = None  # sweep folder or URI; None: ./sweeps/<space>-<time>
    working_dir: str = "."  # the folder shipped with the job
    env: dict[str, str] = field(default_factory=dict)  # environment variables of the job
    overwrite: bool = False  # let the job replace an existing sweep folder


def sweep_job(job: SweepJob) -> tuple[str, dict, str]:
    """``(entrypoint, runtime_env, out)`` of the job that runs this sweep; the space is validated first."""
    space_file, overrides, out, working_dir = job.space_file, job.overrides, job.out, job.working_dir
    from sslray.tune.space import load_space

    root = Path(working_dir).resolve()
    if not root.is_dir():
        raise UserError(f"--working-dir: {working_dir} is not a folder")
    space_path = Path(space_file).resolve()
    try:
        relative = space_path.relative_to(root)
    except ValueError:
        raise UserError(
            f"SPACE: {space_file} is outside --working-dir {root}; only files inside it reach "
            "the cluster (move it there or give --working-dir)"
        ) from None
    if relative.parts[0] in EXCLUDED_FOLDERS:
        raise UserError(
            f"SPACE: {space_file} is under {relative.parts[0]}/, which is not shipped with the job "
            f"(excluded: {', '.join(sorted(EXCLUDED_FOLDERS))}); put it elsewhere, e.g. search_spaces/"
        )
    space = load_space(space_path, overrides)  # every mistake in the YAML fails here, before anything is sent
    data = space.first_recipe().data
    pinned = []
    for key in data.PATH_KEYS:
        value = getattr(data, key)
        if isinstance(value, str) and absolute(value) != value:
            pinned.append(f"data.{key}={absolute(value)}")
    if out is None:
        out = str(Path(default_out("sweeps", space_path.stem)).resolve())
    else:
        out = absolute(out)
    if not storage.is_uri(out):  # a URI is checked by the job's own `sslray sweep`, where it runs
        check_out(out, SWEEP, job.overwrite)
    # The job's own `sslray sweep` checks --out again where it runs (a URI, or a path on the cluster).
    command = [
        "python",
        "-m",
        "sslray.cli",
        "sweep",
        relative.as_posix(),
        *overrides,
        *pinned,
        "--out",
        out,
        *(["--overwrite"] if job.overwrite else []),
    ]
    runtime_env: dict = {
        "working_dir": str(root),
        "excludes": EXCLUDES,
        "env_vars": {"PYTHONUNBUFFERED": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1", **job.env},
    }
    if not (root / "sslray" / "__init__.py").is_file():  # a project of its own: ship sslray beside it
        import sslray

        runtime_env["py_modules"] = [str(Path(sslray.__file__).parent)]
    return shlex.join(command), runtime_env, out


def submit(address: str | None, job: SweepJob) -> tuple[object, str, str]:
    """Submit the sweep; returns ``(client, job id, out)``."""
    entrypoint, runtime_env, out = sweep_job(job)
    client = connect(address)
    job_id = f"sslray-{Path(job.space_file).stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    try:
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=job_id,
            runtime_env=runtime_env,
            metadata={"sslray_space": Path(job.space_file).name, "sslray_out": out},
        )
    except RuntimeError as err:  # the job server's answer (e.g. a working dir over Ray's size limit)
        raise UserError(f"the job server refused the job: {_first_line(err)}") from None
    print(
        f"submitted job {job_id}\n  entrypoint: {entrypoint}\n  results:    {out}"
        + ("" if storage.is_uri(out) else " (a path on the cluster's nodes)")
    )
    return client, job_id, out


def follow(client, job_id: str) -> int:
    """Stream the job's logs until it ends; 0 when it SUCCEEDED, else its exit code (2: a user mistake
    in the sweep, as `sslray sweep` reports it), 1 when it has none."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except RuntimeError as err:
        print(f"(log stream interrupted: {_first_line(err)})", file=sys.stderr)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; job {job_id} goes on. Stop it with: sslray submit --address "
            f"{client.get_address()} --stop {job_id}",
            file=sys.stderr,
        )
        return 130
    info = client.get_job_info(job_id)
    while info.status.value not in TERMINAL:  # the stream can close a moment before the status is final
        time.sleep(1.0)
        info = client.get_job_info(job_id)
    if info.status.value == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED")
        return 0
    code = info.driver_exit_code
    print(f"sslray: job {job_id} {info.status.value}: {info.message or ''}".rstrip(), file=sys.stderr)
    return code if code not in (None, 0) else 1


def list_jobs(client) -> list:
    jobs = sorted(client.list_jobs(), key=lambda job: job.start_time or 0)
    if not jobs:
        print("no jobs")
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        out = (job.metadata or {}).get("sslray_out", "")
        print(f"{job.submission_id or job.job_id:<45} {job.status.value:<10} {started}  {out or job.entrypoint}")
    return jobs


def stop(client, job_id: str) -> None:
    try:
        stopped = client.stop_job(job_id)
    except RuntimeError as err:
        raise UserError(f"--stop: {job_id}: {_first_line(err)}") from None
    print(f"job {job_id}: " + ("stop requested" if stopped else "already finished"))


def check_job_exists(client, job_id: str, option: str) -> None:
    try:
        client.get_job_info(job_id)
    except RuntimeError as err:
        raise UserError(f"{option}: no job {job_id} on {client.get_address()} ({_first_line(err)})") from None
