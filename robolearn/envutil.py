"""Making environments by id, uniformly: our tasks (dict observations) and Gymnasium's (Box observations).

Every env robolearn hands out has a Dict observation space: Box-observation envs such as `HalfCheetah-v5`
are wrapped so that their observation is `{"state": obs}`. That keeps one data format and one policy API.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class DictObs(gym.ObservationWrapper):
    """Box observation -> {"state": obs} (float32)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        box = env.observation_space
        self.observation_space = spaces.Dict(
            {
                "state": spaces.Box(
                    box.low.astype(np.float32), box.high.astype(np.float32), box.shape, np.float32
                )
            }
        )

    def observation(self, obs):
        return {"state": np.asarray(obs, np.float32)}


def is_robolearn_task(env_id: str) -> bool:
    return env_id.startswith("robolearn/")


class SuccessReward(gym.Wrapper):
    """reward = info["is_success"] (1.0 on success, else 0.0): a suite env's own reward replaced by the sparse
    success signal, as robolearn's tasks do for reward_type="sparse" (HIL-SERL's reward)."""

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float(bool(info.get("is_success", False))), terminated, truncated, info


def make_env(
    env_id: str, render_mode: str | None = None, max_episode_steps: int | None = None, **kwargs
) -> gym.Env:
    """gym.make with clear errors, Dict observations for every env, and our kwargs only where they apply."""
    from robolearn_envs import suites

    import robolearn  # noqa: F401  registers robolearn/... ids

    suites.ensure_registered(env_id)  # gym_hil/... (on import of gym_hil), metaworld/<task>-v3
    if env_id not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("robolearn/"))
        raise ValueError(
            f"env={env_id!r} is not a registered Gymnasium id. Valid robolearn tasks: {ours}; "
            "Gymnasium's MuJoCo ids (HalfCheetah-v5, Hopper-v5, Walker2d-v5, Ant-v5) work too; task suites: "
            "metaworld/<task>-v3, gym_hil/PandaPickCubeBase-v0. " + suites.missing_hint(env_id)
        )
    sparse = kwargs.get("reward_type") == "sparse"
    if not is_robolearn_task(env_id):
        if sparse and not suites.is_suite_id(env_id):
            from robolearn.errors import UserError

            raise UserError(
                f"reward_type='sparse' needs an env with a success signal (robolearn/... or a task suite); "
                f"{env_id!r} has its own reward only. Fix: drop reward_type"
            )
        kwargs = {k: v for k, v in kwargs.items() if k not in ("obs_mode", "reward_type")}
    try:
        env = gym.make(env_id, render_mode=render_mode, max_episode_steps=max_episode_steps, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        from robolearn.errors import UserError

        given = {k: v for k, v in kwargs.items() if k not in ("obs_mode", "reward_type")}
        raise UserError(
            f"env={env_id!r} does not take these env_kwargs: {given} ({str(e).split(' was raised')[0]}). "
            "Fix: drop or rename the env_kwargs entry (see the env's constructor for its arguments)"
        ) from None
    if suites.is_suite_id(env_id):
        env = suites.adapt(env, env_id)  # Dict obs of named keys, info["is_success"], get_state/set_state
        if sparse:
            env = SuccessReward(env)
    if not isinstance(env.observation_space, spaces.Dict):
        env = DictObs(env)
    return env


def get_state(env: gym.Env) -> np.ndarray:
    """The full simulator state of the env (for the store's `states`)."""
    from robolearn_envs.suites import find_adapter

    ad = find_adapter(env)  # Meta-World / gym-hil adapters: their simulator state (see robolearn_envs.suites)
    if ad is not None:
        return np.asarray(ad.get_state(), np.float64)
    u = env.unwrapped
    if hasattr(u, "get_state"):
        return np.asarray(u.get_state(), np.float64)
    if hasattr(u, "data"):  # Gymnasium MujocoEnv
        return np.concatenate([u.data.qpos, u.data.qvel]).astype(np.float64)
    return np.zeros(0)


def env_dt(env: gym.Env) -> float:
    return float(getattr(env.unwrapped, "dt", 0.0) or 0.0)


def max_steps(env: gym.Env) -> int | None:
    spec = env.spec
    return spec.max_episode_steps if spec is not None else None
