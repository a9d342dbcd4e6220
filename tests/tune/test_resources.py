"""The resource plan of a sweep: concurrency and torch threads follow the measured need of a trial,
and Ray's books always keep a whole CPU for Ray Data."""

from __future__ import annotations

import pytest
import torch

from sslray.train.need import Need, measure_need
from sslray.tune.resources import plan_resources
from sslray.tune.space import space_from_dict

from .conftest import tiny_space

LIGHT_DATA = Need(data_s=0.0002, train_s=0.01)  # 28 px: decode+augment 2% of a training step
HEAVY_DATA = Need(data_s=0.02, train_s=0.01)  # 224 px on a small model: data costs twice the step


def measured(need: Need, calls: list | None = None):
    """A stand-in for ``measure_need`` that returns ``need`` (and records the recipes it was asked about)."""

    def measure(recipe):
        if calls is not None:
            calls.append(recipe)
        return need

    return measure


def space(data, **tune_section):
    return space_from_dict(tiny_space(data, num_samples=8, **tune_section))


def test_measure_need_times_the_real_data_and_step_on_one_thread(tiny_fmnist):
    threads = torch.get_num_threads()
    need = measure_need(space(tiny_fmnist).first_recipe())
    assert need.data_s > 0 and need.train_s > 0
    assert need.data_per_train_core == pytest.approx(need.data_s / need.train_s)
    assert torch.get_num_threads() == threads  # the driver's threads are left as they were
    assert "decode+augment" in need.describe() and "core per training core" in need.describe()


def test_light_data_runs_a_one_thread_trial_per_core(tiny_fmnist):
    plan = plan_resources(space(tiny_fmnist), {"CPU": 2.0}, measured(LIGHT_DATA))
    assert (plan.max_concurrent, plan.torch_threads) == (2, 1)
    assert plan.trial == {"cpu": 0.5} and plan.data_cpus == 1.0  # Ray's books: a whole CPU for Ray Data
    assert "2 trial(s) at a time x 1 torch thread(s)" in plan.describe()
    assert "measured per image" in plan.describe()


def test_a_large_node_shares_its_cores_among_the_sweep_trials(tiny_fmnist):
    plan = plan_resources(space(tiny_fmnist), {"CPU": 16.0}, measured(LIGHT_DATA))
    # 15.7 training cores: 8 trials (all the sweep has) of 2 threads, each booked 1 of the 8 CPUs
    # Ray Data leaves.
    assert (plan.max_concurrent, plan.torch_threads, plan.trial) == (8, 2, {"cpu": 1.0})
    few = space_from_dict(tiny_space(tiny_fmnist, num_samples=1))
    alone = plan_resources(few, {"CPU": 16.0}, measured(LIGHT_DATA))
    assert (alone.max_concurrent, alone.torch_threads) == (1, 16)  # one trial: every training core


def test_heavy_data_leaves_cores_to_the_pipeline(tiny_fmnist):
    plan = plan_resources(space(tiny_fmnist), {"CPU": 2.0}, measured(HEAVY_DATA))
    assert (plan.max_concurrent, plan.torch_threads) == (1, 1)
    plan = plan_resources(space(tiny_fmnist), {"CPU": 12.0}, measured(HEAVY_DATA))
    assert (plan.max_concurrent, plan.torch_threads) == (4, 1)  # 4 training cores, 8 for decode+augment


def test_the_space_s_own_limits_win(tiny_fmnist):
    plan = plan_resources(space(tiny_fmnist, max_concurrent_trials=1), {"CPU": 2.0}, measured(LIGHT_DATA))
    assert (plan.max_concurrent, plan.torch_threads, plan.trial) == (1, 2, {"cpu": 1.0})
    given = space(tiny_fmnist, resources_per_trial={"cpu": 1})
    calls = []
    plan = plan_resources(given, {"CPU": 2.0}, measured(LIGHT_DATA, calls))
    assert (plan.max_concurrent, plan.torch_threads, plan.trial) == (1, None, {"cpu": 1.0})
    assert calls == []  # a fixed CPU count: nothing to measure
    # Without a measurement the plan is Ray's books alone: one trial beside the data CPU.
    plan = plan_resources(space(tiny_fmnist), {"CPU": 2.0})
    assert (plan.max_concurrent, plan.torch_threads, plan.need) == (1, None, None)
