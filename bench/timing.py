"""Timing loops and flags shared by bench scripts; imports only numpy and the standard library, so the peer
scripts that run in other venvs (bench/lerobot_peer.py) use the same measurement and flags as ours."""

from __future__ import annotations

import argparse
import statistics
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


def add_speed_args(ap: argparse.ArgumentParser, threads: int, no_big_help: str) -> None:
    """The flags bc_speed.py passes on to its peer scripts (one definition, so they stay in step)."""
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--no-big", action="store_true", help=no_big_help)


def speed_row(train: Callable[[], float], act: Callable[[], tuple[float, float]], runs: int) -> dict:
    """Median over ``runs`` of train() -> samples/s and act() -> (p50, p90) ms, as a table row's numbers."""
    sps, p50, p90 = [], [], []
    for _ in range(runs):
        sps.append(train())
        a, b = act()
        p50.append(a)
        p90.append(b)
    return {
        "train_sps": statistics.median(sps),
        "act_p50_ms": statistics.median(p50),
        "act_p90_ms": statistics.median(p90),
    }
