"""Shared fixtures: one small local Ray (2 CPUs, 127.0.0.1) per test session, started on first use."""

from sslray.cluster import use_loopback

use_loopback()  # before anything imports ray

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from sslray.cluster import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
