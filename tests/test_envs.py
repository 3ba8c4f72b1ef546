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


def test_all_four_registered():
    assert IDS == [
        "robolearn/Lift-v0",
        "robolearn/PegInsert-v0",
        "robolearn/PushT-v0",
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
