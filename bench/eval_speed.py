"""Evaluation throughput on robolearn/Lift-v0: episodes/s with 1 vs 2 workers, next to the raw env's steps/s.

Actors: the scripted expert (episodes end at success, ~16 steps) and a small randomly initialised policy
checkpoint (MLP encoder + GMM head, To=2, Tp=4, Ta=2; it never succeeds, so every episode runs the full 100
steps). `raw env` = one gym.make env stepped with uniform random actions, no evaluation machinery.
"eval wall" excludes worker start-up (AsyncVectorEnv subprocesses, forkserver); "incl. start-up" includes it.
Each number is the median of R runs.

    MUJOCO_GL=egl .venv/bin/python bench/eval_speed.py [--episodes 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ENV = "robolearn/Lift-v0"


def raw_env_steps_per_s(steps: int, seed: int = 0) -> float:
    from robolearn.envutil import make_env

    env = make_env(ENV, obs_mode="state")
    rng = np.random.default_rng(seed)
    acts = rng.uniform(-1, 1, (steps, 5)).astype(np.float32)
    env.reset(seed=seed)
    t = 0.0
    for a in acts:
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(a)
        t += time.perf_counter() - t0
        if term or trunc:
            env.reset()
    env.close()
    return steps / t


def small_checkpoint(path: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_eval import make_policy, save_ckpt

    return save_ckpt(make_policy(ENV, head="gmm"), path)


def run(actor, episodes: int, workers: int) -> tuple[float, float, float]:
    """-> (episodes/s excluding start-up, episodes/s including it, env steps/s)."""
    from robolearn.eval.runner import evaluate_policy, load_checkpoint

    t0 = time.perf_counter()
    policy = actor if actor in ("scripted", "random") else load_checkpoint(actor)[0]
    res = evaluate_policy(policy, ENV, {"obs_mode": "state"}, episodes=episodes, seed=0, workers=workers)
    total = time.perf_counter() - t0
    steps = sum(r["length"] for r in res["records"])
    return res["episodes_per_s"], episodes / total, steps / res["wall_s"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--raw-steps", type=int, default=2000)
    a = p.parse_args()
    torch.set_num_threads(1)
    from rich.console import Console
    from rich.table import Table

    raw = statistics.median(raw_env_steps_per_s(a.raw_steps, s) for s in range(a.runs))
    with tempfile.TemporaryDirectory() as d:
        ckpt = str(small_checkpoint(Path(d) / "policy.pt"))
        rows = []
        for name, actor in (("scripted expert", "scripted"), ("policy checkpoint (gmm, 1 thread)", ckpt)):
            for w in (1, 2):
                rs = [run(actor, a.episodes, w) for _ in range(a.runs)]
                rows.append((name, w, *(statistics.median(x[i] for x in rs) for i in range(3))))
    t = Table(title=f"eval speed on {ENV}: {a.episodes} episodes, median of {a.runs} runs")
    for c in ("actor", "workers", "episodes/s (eval wall)", "episodes/s (incl. start-up)", "env steps/s"):
        t.add_column(c, justify="right" if c != "actor" else "left")
    t.add_row("raw env (random actions, no eval)", "1", "–", "–", f"{raw:,.0f}")
    for name, w, eps, eps_all, sps in rows:
        t.add_row(name, str(w), f"{eps:.2f}", f"{eps_all:.2f}", f"{sps:,.0f}")
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
