"""Schedules as pure functions of the step: no state, so a resumed run gets the same values.

``step`` counts optimizer steps from 0; ``total`` is the number of steps of the whole run.
"""

from __future__ import annotations

import math


def cosine_schedule(step: int, total: int, start: float, end: float) -> float:
    """Cosine from ``start`` at step 0 to ``end`` at step ``total`` (and after).

        value = end - (end - start) * (cos(pi * step / total) + 1) / 2

    The BYOL target momentum schedule (Grill et al. 2020, sec. 3.2) with start=0.996, end=1.
    """
    if total <= 0 or step >= total:
        return end
    progress = max(step, 0) / total
    return end - (end - start) * (math.cos(math.pi * progress) + 1.0) / 2.0


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``warmup_steps`` (and after)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * max(step, 0) / warmup_steps


def warmup_cosine(step: int, total: int, warmup_steps: int, peak: float, end: float = 0.0, start: float = 0.0) -> float:
    """Linear warm-up ``start -> peak`` over ``warmup_steps``, then cosine ``peak -> end`` until ``total``.

    The learning-rate schedule of SimCLR, BYOL, MoCo v3, DINO and MAE (Goyal et al. 2017 warm-up).
    """
    if step < warmup_steps:
        return linear_warmup(step, warmup_steps, start, peak)
    return cosine_schedule(step - warmup_steps, total - warmup_steps, peak, end)
