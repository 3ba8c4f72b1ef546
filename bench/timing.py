"""Timing loops shared by bench scripts; imports only numpy, so the peer scripts that run in other venvs
(bench/lerobot_peer.py) use the same measurement as ours."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def samples_per_s(step: Callable[[], None], steps: int, batch: int, warmup: int = 2) -> float:
    """Throughput of ``step`` (one optimiser step on ``batch`` samples) after ``warmup`` untimed steps."""
    if steps == 0:
        return float("nan")
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def latency_ms(call: Callable[[], object], calls: int, warmup: int = 3) -> tuple[float, float]:
    """(p50, p90) wall time of ``call`` in ms."""
    for _ in range(warmup):
        call()
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 90))
