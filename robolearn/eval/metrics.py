"""Evaluation statistics: Wilson score intervals and the per-episode -> summary aggregation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (z=1.96: 95%).

    Unlike the normal approximation p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and is not degenerate at
    k=0 or k=n (0/10 gives [0, 0.278], not [0, 0]) — which matters at the 10–50 episodes evals run.
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # clamp float noise at the ends (k=0 -> lo is exactly 0, k=n -> hi exactly 1)
    return (max(0.0, centre - half) if k > 0 else 0.0, min(1.0, centre + half) if k < n else 1.0)


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def summarize(records: Sequence[dict], dt: float) -> dict:
    """Per-episode records (success, return, length, steps_to_success, seed_group) -> summary metrics.

    cycle_time_* are means over SUCCESSFUL episodes only (None if none succeeded): the time a task takes
    when it works, as in HIL-SERL's cycle time, so a policy is not rewarded for failing fast.
    """
    n = len(records)
    k = sum(bool(r["success"]) for r in records)
    rets = [float(r["return"]) for r in records]
    lengths = [int(r["length"]) for r in records]
    steps = [int(r["steps_to_success"]) for r in records if r["steps_to_success"] is not None]
    scores = [float(r["score"]) for r in records if r.get("score") is not None]
    lo, hi = wilson_interval(k, n)
    cycle = _mean(steps)
    per_seed: dict[str, float] = {}
    for g in sorted({r["seed_group"] for r in records}):
        rs = [r for r in records if r["seed_group"] == g]
        per_seed[str(g)] = sum(bool(r["success"]) for r in rs) / len(rs)
    return {
        "success_rate": k / n if n else 0.0,
        "success_ci": [lo, hi],
        "successes": k,
        "return_mean": _mean(rets) if n else 0.0,
        "return_std": float(np.std(rets)) if n else 0.0,
        "length_mean": _mean(lengths) if n else 0.0,
        "cycle_time_steps": cycle,
        "cycle_time_s": None if cycle is None else cycle * dt,
        "episodes": n,
        "success_rate_per_seed": per_seed,
        "success_rate_seed_std": float(np.std(list(per_seed.values()))) if per_seed else 0.0,
        # diffusion_policy's PushT metric: mean over episodes of the best clip(coverage / 0.95, 0, 1) reached
        # (tasks that report info["score"]; None elsewhere)
        "score": _mean(scores) if scores else None,
    }
