import math

import pytest

from sslray.nn.schedules import cosine_schedule, linear_warmup, warmup_cosine


def test_cosine_schedule_ends_and_midpoint():
    assert cosine_schedule(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_schedule(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine_schedule(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(250, 100, 0.996, 1.0) == pytest.approx(1.0)
    # BYOL's formula: 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2
    assert cosine_schedule(30, 100, 0.99, 1.0) == pytest.approx(1 - 0.01 * (math.cos(math.pi * 0.3) + 1) / 2)


def test_cosine_schedule_is_monotone():
    values = [cosine_schedule(s, 20, 1.0, 0.0) for s in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_warmup():
    assert linear_warmup(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert linear_warmup(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup(10, 10, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup(3, 0, 0.04, 0.07) == pytest.approx(0.07)


def test_warmup_cosine_peaks_after_warmup():
    values = [warmup_cosine(s, 100, 10, peak=1.0, end=0.1) for s in range(101)]
    assert values[0] == 0.0
    assert values[5] == pytest.approx(0.5)
    assert max(values) == pytest.approx(1.0) and values.index(max(values)) == 10
    assert values[100] == pytest.approx(0.1)
