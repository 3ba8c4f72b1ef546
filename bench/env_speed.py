"""Env step throughput of the robolearn tasks vs the raw MuJoCo physics of the same trajectory.

For each task: (1) roll out ``gym.make(id)`` (with Gymnasium's default wrappers) for N steps of uniform random
actions with state observations (resets untimed). (2) In alternating chunks of 50 steps, replay exactly the same
chunk as raw ``mujoco.mj_step(model, data2, nstep=frame_skip)`` (same model, same states, same ctrl), so both
are timed under the same CPU load. overhead = env time / raw time. (3) The same env with ``obs_mode="image"``
(84x84, one camera, EGL offscreen). Each number is the median of R runs.

    MUJOCO_GL=egl .venv/bin/python bench/env_speed.py [--steps 1000] [--image-steps 200] [--runs 3] [--chunk 50]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np

import robolearn  # noqa: F401  registers the ids


def measure(env_id: str, steps: int, chunk: int, seed: int):
    """Alternate chunks: `chunk` env steps (timed), then the same chunk replayed as raw mj_step on a second
    MjData (timed). Interleaving keeps both under the same CPU contention. Returns (env_s, raw_s) totals."""
    env = gym.make(env_id, obs_mode="state")
    u = env.unwrapped
    m, fs = u.model, u.frame_skip
    d2 = mujoco.MjData(m)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, 5)).astype(np.float32)
    ctrls = np.zeros((chunk, m.nu))
    env.reset(seed=seed)
    env_s = raw_s = 0.0
    for c0 in range(0, steps, chunk):
        start = u.get_state()
        n = 0
        t0 = time.perf_counter()
        for i in range(c0, min(c0 + chunk, steps)):
            _, _, term, trunc, _ = env.step(actions[i])
            ctrls[n] = u.data.ctrl
            n += 1
            if term or trunc:
                break
        env_s += time.perf_counter() - t0
        mujoco.mj_setState(m, d2, start, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(m, d2)
        mujoco.mj_setState(m, d2, start, mujoco.mjtState.mjSTATE_INTEGRATION)
        t0 = time.perf_counter()
        for j in range(n):
            d2.ctrl[:] = ctrls[j]
            mujoco.mj_step(m, d2, nstep=fs)
        raw_s += time.perf_counter() - t0
        if term or trunc:  # a reset (untimed) starts the next chunk
            env.reset()
    env.close()
    return env_s, raw_s, fs


def image_rate(env_id: str, steps: int, seed: int) -> float:
    env = gym.make(env_id, obs_mode="image")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 5).astype(np.float32))
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--image-steps", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--tasks", nargs="*", default=None)
    args = p.parse_args()
    ids = args.tasks or sorted(k for k in gym.registry if k.startswith("robolearn/"))
    print(
        f"{'task':<26}{'substeps':>9}{'raw steps/s':>13}{'state steps/s':>15}{'overhead':>10}{'image steps/s':>15}"
    )
    for env_id in ids:
        env_r, raw_r, ratio, img_r = [], [], [], []
        for r in range(args.runs):
            e, w, fs = measure(env_id, args.steps, args.chunk, seed=r)
            env_r.append(args.steps / e)
            raw_r.append(args.steps / w)
            ratio.append(e / w)
            img_r.append(image_rate(env_id, args.image_steps, seed=r))
        print(
            f"{env_id:<26}{fs:>9}{np.median(raw_r):>13.0f}{np.median(env_r):>15.0f}"
            f"{np.median(ratio):>9.2f}x{np.median(img_r):>15.0f}"
        )


if __name__ == "__main__":
    main()
