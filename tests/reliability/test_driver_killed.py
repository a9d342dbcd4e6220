"""A driver that started a local Ray and is then killed (SIGKILL) takes all of that Ray with it: without
``sslray.reaper`` the dashboard and runtime-env agents outlive it by 60-90 s (issue 18 #12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sslray.reaper import _alive, _ray_descendants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")

DRIVER = """
import time
from sslray.cluster import init_ray
init_ray(num_cpus=1)
print("up", flush=True)
time.sleep(600)
"""
AGENTS = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")


def _command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_a_killed_driver_leaves_no_ray_process_behind():
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ray: dict[int, int] = {}  # PID -> start time of the driver's Ray processes
    try:
        assert driver.stdout.readline().strip() == b"up"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the agents start a few seconds after ray.init returns
            ray = _ray_descendants(driver.pid)
            if all(any(_command(pid).startswith(agent) for pid in ray) for agent in AGENTS):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"Ray's agents did not start: {[_command(p)[:60] for p in _ray_descendants(driver.pid)]}")
        time.sleep(2)  # the reaper polls once a second: let it see them
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 30  # Ray alone keeps the agents for 60 s or more
        while time.monotonic() < deadline and any(_alive(pid, start) for pid, start in ray.items()):
            time.sleep(0.5)
        left = [(pid, _command(pid)[:60]) for pid, start in ray.items() if _alive(pid, start)]
        assert not left, f"still running 30 s after the driver was killed: {left}"
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid, start in ray.items():
            if _alive(pid, start):
                os.kill(pid, signal.SIGKILL)
