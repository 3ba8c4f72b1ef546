"""How many torch intra-op threads a command uses when the user does not say (`threads=0`, the default).

Measured on this project's 2-core machine (the contention issue): with two other CPU-bound torch processes
running, `robolearn train policy=flow policy.head_cfg.denoiser=mlp train.steps=150` took 24 s with 1 thread and
183 s with torch's default (one thread per core): torch-vs-torch thread spinning collapses throughput 3-8x,
while a small network gains little from a second thread even on an idle machine (its matmuls are too small
to split). So the default is:

- 1 thread for networks below `BIG_PARAMS` (every MLP head, the SAC networks, the small U-Net);
- for bigger networks, the cores actually free: the process's CPU affinity minus the 1-minute load average
  (other busy processes), at least 1 - never more than the cores that are free.

An explicit `threads=N` (`train.threads=`, `finetune threads=`) always wins.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

BIG_PARAMS = (
    5_000_000  # below this a second intra-op thread did not pay for itself (see the module docstring)
)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores() -> int:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores(), int(round(cores() - load))))


def default_threads(params: int | None = None) -> int:
    """The thread count for a network of `params` parameters (None: a small one) on this machine now."""
    if params is None or params < BIG_PARAMS:
        return 1
    return free_cores()


def apply(requested: int, params: int | None = None, what: str = "") -> int:
    """Set torch's intra-op threads: `requested` if > 0, else the default above. Returns the count used."""
    import torch

    n = int(requested) if requested and requested > 0 else default_threads(params)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if not requested:
        log.debug(
            "%s: %d torch thread(s) (%s params; %d of %d cores free)",
            what or "torch",
            n,
            "?" if params is None else f"{params:,}",
            free_cores(),
            cores(),
        )
    return n
