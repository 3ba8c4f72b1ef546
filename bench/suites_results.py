"""Task suites (robolearn_envs.suites): env speed vs raw mj_step, and scripted-expert success on 50 seeds.

1. Speed: N steps of uniform random actions through robolearn's ``make_env`` (adapter + Gymnasium wrappers,
   resets untimed), against raw ``mujoco.mj_step(model, data2, nstep=substeps)`` from the same start state
   with the controls held (Meta-World: frame_skip 5; gym-hil: 50 substeps, without its operational-space
   controller's per-substep torque computation). Median of R runs.
2. Experts (``expert=scripted``) on env seeds 0..49: Meta-World's own policies on the 10 MT10 tasks (goals
   sampled per seed, 500-step limit), our PandaPickExpert on gym_hil/PandaPickCubeBase-v0 (gym-hil's fixed cube
   at (0.5, 0): every seed is the same episode) and with ``random_block_position=True`` (cube uniform in gym-hil's
   sampling bounds, drawn from the seed).

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python bench/suites_results.py [--episodes 50] [--steps 2000]
        [--out bench/results/suites.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from robolearn_envs.suites import MT10_TASKS  # noqa: E402

import robolearn  # noqa: E402,F401
from robolearn.envutil import make_env  # noqa: E402
from robolearn.recording import make_expert  # noqa: E402


def sim_of(env):
    u = env.unwrapped
    inner = u.env.unwrapped
    substeps = getattr(inner, "frame_skip", None) or inner._n_substeps
    return inner.model, inner.data, int(substeps)


def step_time(env, steps: int, rng, seed: int) -> float:
    """Seconds spent in `env.step` over `steps` uniform random actions in its own action space (resets untimed)."""
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=seed)
    el = 0.0
    for _ in range(steps):
        a = rng.uniform(low, high).astype(np.float32)
        t0 = time.perf_counter()
        out = env.step(a)
        el += time.perf_counter() - t0
        if out[2] or out[3]:
            env.reset()
    return el


def speed(env_id: str, steps: int, seed: int = 0) -> dict:
    env = make_env(env_id)
    m, d, sub = sim_of(env)
    rng = np.random.default_rng(seed)
    el = step_time(env, steps, rng, seed)
    # the suite's own env, stepped directly (no adapter, no Gymnasium wrappers): what the suite itself costs
    native = step_time(env.unwrapped.env.unwrapped, steps, rng, seed)
    d2 = mujoco.MjData(m)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    st = np.zeros(mujoco.mj_stateSize(m, spec))
    mujoco.mj_getState(m, d, st, spec)
    mujoco.mj_setState(m, d2, st, spec)
    t0 = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(m, d2, nstep=sub)
    raw = time.perf_counter() - t0
    env.close()
    return {
        "env_steps_per_s": steps / el,
        "native_steps_per_s": steps / native,
        "raw_steps_per_s": steps / raw,
        "overhead": el / raw,
        "native_overhead": native / raw,  # the suite's own step vs raw mj_step
        "adapter_overhead": el / native,  # robolearn's adapter + wrappers vs the suite's own step
        "substeps": sub,
    }


def success(env, episodes: int, expert=None) -> dict:
    expert = expert or make_expert(env, "scripted")
    ok, lens, t0 = [], [], time.perf_counter()
    for s in range(episodes):
        expert.reset(seed=s)
        obs, _ = env.reset(seed=s)
        n = 0
        while True:
            obs, _, term, trunc, info = env.step(expert.act(obs))
            n += 1
            if term or trunc:
                break
        ok.append(bool(info["is_success"]))
        lens.append(n)
    return {
        "success_rate": float(np.mean(ok)),
        "episodes": episodes,
        "mean_len": float(np.mean(lens)),
        "wall_s": time.perf_counter() - t0,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default="bench/results/suites.json")
    a = p.parse_args()
    res = {"host": platform.node(), "cpus": os.cpu_count(), "speed": {}, "experts": {}}
    for env_id in ("metaworld/reach-v3", "metaworld/pick-place-v3", "gym_hil/PandaPickCubeBase-v0"):
        n = a.steps if env_id.startswith("metaworld") else max(a.steps // 10, 100)
        runs = [speed(env_id, n, seed=r) for r in range(a.runs)]
        res["speed"][env_id] = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        print(env_id, res["speed"][env_id], flush=True)
    for task in MT10_TASKS:
        env_id = f"metaworld/{task}-v3"
        res["experts"][env_id] = success(make_env(env_id), a.episodes)
        print(env_id, res["experts"][env_id], flush=True)
    hil = "gym_hil/PandaPickCubeBase-v0"
    res["experts"][hil] = success(make_env(hil), a.episodes)
    print(hil, res["experts"][hil], flush=True)
    from robolearn_envs.suites.gym_hil_env import PandaPickExpert, wrap

    rnd = wrap(gym.make(hil), random_block_position=True)
    res["experts"][hil + " (random_block_position=True)"] = success(rnd, a.episodes, PandaPickExpert(rnd))
    print("random cube", res["experts"][hil + " (random_block_position=True)"], flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print("written", a.out)


if __name__ == "__main__":
    main()
