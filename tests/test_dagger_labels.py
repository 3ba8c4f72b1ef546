"""DAgger's labels: an expert's action is a function of the simulator state (no hidden state), and chunk
labels are the expert's own rollout from the saved state."""

import gymnasium as gym
import numpy as np
import pytest
import robolearn_envs

import robolearn  # noqa: F401  registers the ids

TASKS = ["robolearn/Lift-v0", "robolearn/PegInsert-v0", "robolearn/ReachAround-v0", "robolearn/PushT-v1"]


def _record(env, expert, seed, noise=0.0, rng=None, surgery=None):
    """One episode: (saved state, expert label) per step. With noise the executed action is the label plus
    noise, so the expert labels states it did not steer into (as in DAgger); labels stay noise-free.
    `surgery(env, label)` may edit the simulator before a step (to reach states the expert never would)."""
    u = env.unwrapped
    expert.reset(seed=seed)
    env.reset(seed=seed)
    out = []
    while True:
        s = u.get_state()
        a = expert.act(None)
        out.append((s, a))
        if surgery is not None:
            surgery(u, a)
        x = a if noise == 0 else np.clip(a + rng.normal(0, noise, a.shape), -1, 1).astype(np.float32)
        _, _, term, trunc, _ = env.step(x)
        if term or trunc:
            return out


def _lift_cube_vanishes(u, a):
    """When the expert first closes on the cube, drop the cube through the table: the grasp misses, the
    expert re-opens and retries (again and again): the states of the old latched `_reopen` flag."""
    if a[4] > 0 and u.data.qpos[4] > 0.04 and u.data.qpos[u._cube_qadr + 2] > 0:
        u.data.qpos[u._cube_qadr + 2] = -0.3


@pytest.mark.parametrize("env_id", TASKS)
def test_expert_label_is_a_function_of_the_sim_state(env_id):
    env = gym.make(env_id)
    expert = robolearn_envs.make_expert(env, seed=0)
    rng = np.random.default_rng(0)
    # an expert episode, and one driven off the expert's path (noisy execution: misses, re-grasps, ...)
    steps = _record(env, expert, 10_000_000) + _record(env, expert, 10_000_001, noise=0.5, rng=rng)
    if env_id == "robolearn/Lift-v0":
        steps += _record(env, expert, 10_000_002, surgery=_lift_cube_vanishes)
    env.close()
    fresh_env = gym.make(env_id)
    fresh_env.reset(seed=123)  # another episode's state: only set_state may decide what the expert sees
    for i in rng.permutation(len(steps)):  # shuffled: nothing carries over from the previous step
        s, a = steps[i]
        fresh_env.unwrapped.set_state(s)
        fresh = robolearn_envs.make_expert(fresh_env, seed=int(i) + 1)  # no history, another RNG seed
        np.testing.assert_array_equal(fresh.act(None), a, err_msg=f"{env_id}: step {i}")
    fresh_env.close()


def test_reach_around_side_is_sim_state_and_50_50():
    env = gym.make("robolearn/ReachAround-v0")
    expert = robolearn_envs.make_expert(env, seed=0)
    modes = []
    for s in range(10_000_000, 10_000_100):
        env.reset(seed=s)
        expert.reset(seed=0)  # the expert's seed plays no part
        modes.append(expert.mode)
    assert 35 <= modes.count("left") <= 65
    env.close()
