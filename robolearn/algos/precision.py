"""fp32 or bf16 matmuls for SAC's critics, decided by measurement on the machine at hand (`precision=auto`).

bf16 GEMMs (fp32 accumulation, fp32 weights and Adam; `SACConfig.bf16`) are 4.3x faster than fp32 on this
project's AMD EPYC with AVX512-BF16 and make `bench/sac_vs_sb3.py` 1.8x faster there, but the gain does not
carry across CPUs: on an Intel Xeon that also reports AVX512-BF16 the same bench ran at 0.78x of fp32 (issue
17). So `auto` never guesses from CPU flags: it times the critic ensemble's hidden layer (batched matmul,
forward and the two backward products, at the run's batch, width and ensemble size, on the current thread
count) in both precisions, and picks bf16 only when it is at least `MIN_SPEEDUP` faster. The measurement (~0.1
s) is cached per CPU model, torch version, thread count and shape in ``$ROBOLEARN_CACHE`` or
``~/.cache/robolearn/precision.json``; the run header and results say which precision ran and whether the
probe was measured now or read from the cache.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from robolearn.fileutil import write_json_atomic

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
MIN_SPEEDUP = 1.3
"""auto picks bf16 only when its GEMMs are at least this much faster (a margin for the casts around them)."""


def cache_path() -> Path:
    root = os.environ.get("ROBOLEARN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "robolearn"
    )
    return Path(root) / "precision.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe(batch: int = 256, hidden: int = 256, n: int = 2, reps: int = 20) -> dict:
    """Median ms of one hidden critic layer, forward + backward (dX and dW), in fp32 and in bf16."""
    import torch

    x = torch.randn(n, batch, hidden)
    w = torch.randn(n, hidden, hidden)
    g = torch.randn(n, batch, hidden)

    def fp32():
        torch.bmm(x, w)
        torch.bmm(g, w.transpose(1, 2))
        torch.bmm(x.transpose(1, 2), g)

    def bf16():  # as EnsembleLinear(bf16=True): casts in, bf16 products, fp32 out
        xb, wb, gb = x.to(torch.bfloat16), w.to(torch.bfloat16), g.to(torch.bfloat16)
        torch.bmm(xb, wb).float()
        torch.bmm(gb, wb.transpose(1, 2)).float()
        torch.bmm(xb.transpose(1, 2), gb).float()

    def median_ms(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * sorted(times)[len(times) // 2]

    a, b = median_ms(fp32), median_ms(bf16)
    return {"fp32_ms": a, "bf16_ms": b, "speedup": a / b if b > 0 else 0.0}


def resolve(precision: str, batch: int, hidden: int, n_critics: int) -> tuple[bool, str]:
    """-> (use bf16, a one-line reason for the run header). `precision` in PRECISIONS (validated by configs)."""
    if precision == "fp32":
        return False, "fp32 (precision=fp32)"
    if precision == "bf16":
        return True, "bf16 (precision=bf16)"
    import torch

    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} thr | B{batch} H{hidden} N{n_critics}"
    path = cache_path()
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    where = "cached in " + str(path)
    result = cache.get(key)
    if not (isinstance(result, dict) and isinstance(result.get("speedup"), (int, float))):
        result = probe(batch, hidden, n_critics)
        where = "measured now"
        cache[key] = result
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, cache, indent=1)
        except OSError as e:  # a read-only home only costs the next run its 0.1 s probe
            log.debug("precision probe: could not cache to %s (%s)", path, e)
    use = result["speedup"] >= MIN_SPEEDUP
    reason = (
        f"{'bf16' if use else 'fp32'} (precision=auto: bf16 GEMMs {result['speedup']:.2f}x fp32's "
        f"[{result['fp32_ms']:.3f} vs {result['bf16_ms']:.3f} ms], threshold {MIN_SPEEDUP}x; {where})"
    )
    return use, reason
