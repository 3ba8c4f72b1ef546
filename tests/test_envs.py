"""Tests for the robolearn MuJoCo task suite (robolearn_envs)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest
import robolearn_envs
from gymnasium.utils.env_checker import check_env
from robolearn_envs.reach_around import ReachAroundExpert

import robolearn  # noqa: F401  registers the ids

IDS = sorted(k for k in gym.registry if k.startswith("robolearn/"))


def test_all_tasks_registered():
    assert IDS == [
        "robolearn/Lift-v0",
        "robolearn/PegInsert-v0",
        "robolearn/PushT-v0",
        "robolearn/PushT-v1",
        "robolearn/ReachAround-v0",
    ]
    robolearn_envs.register_all()  # idempotent
    for i in IDS:
        assert gym.spec(i).max_episode_steps is not None


def rollout(env, expert, seed):
    expert.reset(seed=seed)
    obs, info = env.reset(seed=seed)
    assert "is_success" in info and isinstance(info["is_success"], bool)
    n = 0
    while True:
        obs, r, term, trunc, info = env.step(expert.act(obs))
        n += 1
        assert isinstance(info["is_success"], bool)
        if term:
            assert info["is_success"] or info.get("is_failure", False)
        if term or trunc:
            return bool(info["is_success"]), n, info


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_state(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.dt == pytest.approx(0.1)
    assert env.action_space.shape == (5,) and env.action_space.dtype == np.float32
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_both_and_images(env_id):
    env = gym.make(env_id, obs_mode="both", image_size=(48, 64), render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    img_keys = [k for k in obs if k.startswith("image_")]
    assert img_keys
    for k in img_keys:
        space = env.observation_space[k]
        assert obs[k].shape == space.shape == (48, 64, 3) and obs[k].dtype == space.dtype == np.uint8
        assert obs[k].std() > 0  # not a blank image
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_determinism_and_state_roundtrip(env_id):
    env = gym.make(env_id)
    u = env.unwrapped
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (15, 5)).astype(np.float32)

    def traj():
        obs, _ = env.reset(seed=7)
        out = [obs]
        for a in actions:
            obs, *_ = env.step(a)
            out.append(obs)
        return out

    t1, t2 = traj(), traj()
    for o1, o2 in zip(t1, t2):
        for k in o1:
            np.testing.assert_array_equal(o1[k], o2[k])

    env.reset(seed=3)
    for a in actions[:5]:
        env.step(a)
    state = u.get_state()
    assert state.dtype == np.float64 and state.ndim == 1
    nxt, *_ = env.step(actions[5])
    for a in actions[6:]:
        env.step(a)
    env.reset(seed=11)  # different episode, then restore
    u.set_state(state)
    np.testing.assert_array_equal(u.get_state(), state)
    nxt2, *_ = env.step(actions[5])
    for k in nxt:
        np.testing.assert_array_equal(nxt[k], nxt2[k])
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_terminated_only_on_success_or_failure(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(gym.spec(env_id).max_episode_steps + 5):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 5).astype(np.float32))
        assert "is_success" in info
        assert term == (info["is_success"] or info.get("is_failure", False))
        if term or trunc:
            break
    assert term or trunc  # the TimeLimit truncates
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_unstable_simulation_truncates(env_id, tmp_path, monkeypatch):
    """MuJoCo resets the data when qpos/qvel/qacc blow up: the env must end the episode, not teleport on."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warning to ./MUJOCO_LOG.TXT
    env = gym.make(env_id)
    env.reset(seed=0)
    env.step(np.zeros(5, np.float32))
    env.unwrapped.data.qpos[-1] = np.nan
    obs, r, term, trunc, info = env.step(np.zeros(5, np.float32))
    assert trunc and not term and r == 0.0 and info["sim_unstable"] and not info["is_success"]
    assert all(np.isfinite(v).all() for v in obs.values())
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(np.zeros(5, np.float32))
    assert not trunc and "sim_unstable" not in info
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_expert_fast(env_id):
    env = gym.make(env_id)
    expert = robolearn_envs.make_expert(env, seed=0)
    wins = sum(rollout(env, expert, s)[0] for s in range(5))
    assert wins >= 4
    a = expert.act(None)
    assert a.dtype == np.float32 and a.shape == (5,) and np.all(np.abs(a) <= 1)
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", IDS)
def test_expert_100_seeds(env_id):
    env = gym.make(env_id)
    expert = robolearn_envs.make_expert(env, seed=0)
    wins = sum(rollout(env, expert, s)[0] for s in range(100))
    assert wins >= 95, f"{env_id}: {wins}/100"
    env.close()


def test_reach_around_modes_and_midpoint_collides():
    env = gym.make("robolearn/ReachAround-v0")
    expert = robolearn_envs.make_expert(env, seed=0)
    modes = []
    for s in range(100):
        env.reset(seed=s)  # the side is a function of the reset state (no hidden expert state)
        expert.reset(seed=s)
        modes.append(expert.mode)
    assert set(modes) == {"left", "right"}
    assert 35 <= modes.count("left") <= 65
    # the mean of the two modes' actions (what an MSE policy learns) drives into the pillar
    left, right = ReachAroundExpert(env, mode="left"), ReachAroundExpert(env, mode="right")
    for s in range(5):
        obs, _ = env.reset(seed=s)
        # and each mode on its own succeeds from the same start
        while True:
            obs, r, term, trunc, info = env.step(0.5 * (left.act(obs) + right.act(obs)))
            if term or trunc:
                break
        assert info["is_failure"] and not info["is_success"] and term
    for mode in ("left", "right"):
        ok, n, _ = rollout(env, ReachAroundExpert(env, mode=mode), 0)
        assert ok
    env.close()


def test_make_expert_rejects_other_envs():
    env = gym.make("Hopper-v5")
    with pytest.raises(ValueError):
        robolearn_envs.make_expert(env)
    env.close()


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5"])
def test_gymnasium_locomotion(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    for _ in range(10):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert np.all(np.isfinite(obs))
    env.close()


def _fresh_expert_actions(env_id, states, obs_list, perturb_ctrl):
    """The expert's action at each recorded state, from a fresh expert (no history) and, with
    perturb_ctrl, a different controller target (simulator state the observation does not hold)."""
    env = gym.make(env_id)
    env.reset(seed=0)
    u = env.unwrapped
    rng = np.random.default_rng(1)
    out = []
    for st, ob in zip(states, obs_list):
        u.set_state(st)
        if perturb_ctrl:
            u.data.ctrl[:3] = u.data.qpos[:3] + rng.uniform(-0.01, 0.01, 3)
        expert = robolearn_envs.make_expert(env, seed=0)  # no memory of earlier steps
        out.append(expert.act(ob))
    env.close()
    return np.array(out)


def _recorded(env_id, seeds):
    env = gym.make(env_id)
    expert = robolearn_envs.make_expert(env, seed=0)
    states, obs_list, acts = [], [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        expert.reset(seed=seed)
        while True:
            states.append(env.unwrapped.get_state())
            obs_list.append(obs)
            a = expert.act(obs)
            acts.append(a)
            obs, r, term, trunc, info = env.step(a)
            if term or trunc:
                break
    env.close()
    return states, obs_list, np.array(acts)


def test_push_t_v1_expert_is_markov():
    """Same observation -> same action, on recorded states: a fresh expert (no hysteresis memory) with a
    different controller target reproduces every recorded action of PushT-v1's expert; for v0 it does not
    (its push point is memory), which is why v0 could not be imitated."""
    seeds = [10_000_000 + i for i in range(3)]
    states, obs_list, acts = _recorded("robolearn/PushT-v1", seeds)
    again = _fresh_expert_actions("robolearn/PushT-v1", states, obs_list, perturb_ctrl=True)
    np.testing.assert_array_equal(again, acts)
    states0, obs0, acts0 = _recorded("robolearn/PushT-v0", seeds)
    again0 = _fresh_expert_actions("robolearn/PushT-v0", states0, obs0, perturb_ctrl=True)
    assert np.abs(again0 - acts0).max() > 0.1


def test_push_t_v1_keeps_the_task():
    """v1 is v0's task: same reset distribution, observation (plus `eef_in_block`) and reward; an info score
    for the metric."""
    e0, e1 = gym.make("robolearn/PushT-v0"), gym.make("robolearn/PushT-v1")
    for seed in (3, 10_000_007):
        o0, _ = e0.reset(seed=seed)
        o1, _ = e1.reset(seed=seed)
        for k in o0:
            np.testing.assert_array_equal(o0[k], o1[k])
        a = e0.action_space.sample()
        s0, s1 = e0.step(a), e1.step(a)
        assert s0[1] == s1[1] and s0[4]["score"] == s1[4]["score"] == pytest.approx(
            min(s0[4]["coverage"] / 0.95, 1)
        )
    e0.close()
    e1.close()


def test_push_t_v1_eef_in_block_is_the_pusher_in_the_block_frame():
    """v1's extra key: the pusher's x, y relative to the block's centre, rotated into the block frame
    (v0 keeps its observation)."""
    e0, e1 = gym.make("robolearn/PushT-v0"), gym.make("robolearn/PushT-v1")
    o0, _ = e0.reset(seed=5)
    assert "eef_in_block" not in o0
    o, _ = e1.reset(seed=5)
    for _ in range(5):
        c, s = o["block_yaw"]
        d = o["eef_pos"][:2] - o["block_pos"][:2]
        np.testing.assert_allclose(o["eef_in_block"], [c * d[0] + s * d[1], -s * d[0] + c * d[1]], atol=1e-6)
        o = e1.step(e1.action_space.sample())[0]
    # a block-frame feature: rotating the world about the block leaves it unchanged, e.g. the pusher straight
    # "above" the bar (+y in the block frame) reads (0, +) whatever the block's yaw
    u = e1.unwrapped
    q = u.data.qpos
    x, y, th = u.block_pose()
    q[0], q[1] = x - 0.1 * np.sin(th), y + 0.1 * np.cos(th)
    import mujoco

    mujoco.mj_forward(u.model, u.data)
    b = {k: np.zeros(n, np.float32) for k, n in {**u._task_obs_space(), "eef_pos": 3}.items()}
    u._task_obs(b)
    np.testing.assert_allclose(b["eef_in_block"], [0.0, 0.1], atol=1e-5)
    e0.close()
    e1.close()


def test_an_env_left_open_with_a_renderer_exits_without_a_traceback():
    """Regression: an image env not closed before exit freed its EGL context after EGL was torn down, and
    Python printed two EGLError tracebacks at shutdown. The env now closes its renderers at exit."""
    import subprocess
    import sys

    code = (
        "import robolearn\n"
        "from robolearn.envutil import make_env\n"
        "e = make_env('robolearn/ReachAround-v0', obs_mode='image')\n"
        "o, _ = e.reset(seed=0)\n"
        "assert o['image_front'].shape == (84, 84, 3)\n"
        "print('rendered')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert r.returncode == 0, r.stderr
    assert "rendered" in r.stdout
    assert "Traceback" not in r.stderr and "EGLError" not in r.stderr, r.stderr
