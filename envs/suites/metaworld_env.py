"""Meta-World (v3 tasks, ``metaworld==3.1.1``) as robolearn envs: ids ``metaworld/<task>-v3``.

The entry point builds Meta-World's own MT1 env for the task (``gym.make("Meta-World/MT1", env_name=task)``)
and keeps its simulator (``SawyerXYZEnv``) under :class:`MetaWorldAdapter`; Meta-World's wrappers (its
500-step TimeLimit, task sampling, episode statistics) are replaced by ours so one integer reset seed fixes
the episode's initial state.

Goal randomisation (``goals=``), both Meta-World's:

* ``"sampled"`` (default): each reset draws the task's random vector (object and goal positions) from the
  task's own ``_random_reset_space`` with a generator seeded by the reset seed. This is the distribution MT1
  draws its 50 goals from (``metaworld._make_tasks`` resets the env with ``_freeze_rand_vec=False``), without
  the cap at 50: robolearn's eval seeds are disjoint from its demo seeds, and so are their initial states.
* ``"mt1"``: the 50 goals of ``MT1(task, seed=mt1_seed)``; the reset seed picks one. Evaluation and demos then
  share initial states (only 50 exist).

Observation (Dict of float32, Meta-World's 39-D layout split by its documentation):
``hand_pos`` (3, end-effector xyz), ``gripper`` (1, finger distance / 0.1 in [0, 1]), ``obj1_pos`` (3),
``obj1_quat`` (4), ``obj2_pos`` (3), ``obj2_quat`` (4) (zeros where the task has one object),
the same 18 for the previous frame as ``prev_hand_pos`` ... ``prev_obj2_quat`` (Meta-World's frame stacking,
kept because its scripted policies and published results use the full 39-D vector), and ``goal`` (3).
``flat_obs(obs)`` rebuilds the 39-D vector.

Action: Meta-World's ``Box(-1, 1, (4,), float32)``: ``[dx, dy, dz, grab_effort]`` (mocap delta scaled by
1/100 m, gripper effort +1 close, -1 open).

Success: ``info["is_success"] = bool(info["success"])``; the episode terminates on success (like robolearn's
tasks and Meta-World's ``AutoTerminateOnSuccessWrapper``); truncated after 500 steps (``max_path_length``).

State: ``get_state()`` = ``mj_getState(mjSTATE_INTEGRATION)`` (qpos, qvel, act, ctrl, mocap pose, ...) +
the previous-frame part of the last observation (18) + the goal (3) + the step count; ``set_state`` restores
them (the goal also moves the goal site), so ``obs`` after ``set_state(states[t])`` equals the recorded
``obs[t]``.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from robolearn_envs.base import add_noise

# Meta-World's policies warn on every call whose proportional gain saturates the [-1, 1] action: by design.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")

MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length
STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION

_FRAME = (("hand_pos", 3), ("gripper", 1), ("obj1_pos", 3), ("obj1_quat", 4), ("obj2_pos", 3), ("obj2_quat", 4))
OBS_KEYS: tuple[tuple[str, int], ...] = _FRAME + tuple(("prev_" + k, n) for k, n in _FRAME) + (("goal", 3),)
assert sum(n for _, n in OBS_KEYS) == 39


def split_obs(flat: np.ndarray) -> dict[str, np.ndarray]:
    out, i = {}, 0
    for k, n in OBS_KEYS:
        out[k] = np.asarray(flat[i : i + n], np.float32)
        i += n
    return out


def flat_obs(obs: dict) -> np.ndarray:
    """Meta-World's 39-D observation from our dict observation (float64, for its scripted policies)."""
    return np.concatenate([np.asarray(obs[k], np.float64).reshape(-1) for k, _ in OBS_KEYS])


class MetaWorldAdapter(gym.Env):
    """A Meta-World ``SawyerXYZEnv`` with robolearn's conventions (see the module docstring). The adapter is the
    unwrapped env (it holds Meta-World's simulator as ``self.env``), so ``env.unwrapped.set_state`` /
    ``.step`` are ours, as robolearn's DAgger scratch rollouts expect."""

    is_suite_adapter = True
    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, env, task: str, tasks: list, goals: str = "sampled"):
        if goals not in ("sampled", "mt1"):
            raise ValueError(f"goals={goals!r}; valid: 'sampled', 'mt1'")
        self.env = env
        self.render_mode = getattr(env, "render_mode", None)
        self._obs_cache: dict | None = None
        self.task, self.goals, self._tasks = task, goals, list(tasks)
        mw = env.unwrapped
        mw.set_task(self._tasks[0])  # task kwargs (and the MT1 rand vec, replaced per reset below)
        mw.max_path_length = 1 << 40  # our TimeLimit truncates; Meta-World raises past its own limit
        self._mw = mw
        self._rng = np.random.default_rng()
        inf = np.float32(np.inf)
        self.observation_space = spaces.Dict({k: spaces.Box(-inf, inf, (n,), np.float32) for k, n in OBS_KEYS})
        a = mw.action_space
        self.action_space = spaces.Box(a.low.astype(np.float32), a.high.astype(np.float32), a.shape, np.float32)
        self._prev = np.zeros(18)
        self._state = np.zeros(mujoco.mj_stateSize(mw.model, STATE_SPEC))

    @property
    def dt(self) -> float:
        return float(self._mw.dt)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mw = self._mw
        if self.goals == "mt1":
            mw.set_task(self._tasks[int(self._rng.integers(len(self._tasks)))])
        else:  # fresh draw from the task's own reset space (Meta-World resamples invalid draws itself)
            mw._freeze_rand_vec = False
            mw.seeded_rand_vec = True
            mw.np_random = np.random.default_rng(int(self._rng.integers(1 << 63)))
        flat, info = mw.reset()
        self._prev = np.array(flat[18:36], np.float64)
        self._obs_cache = split_obs(flat)
        return self._obs_cache, dict(info)

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        flat, r, _term, _trunc, info = self._mw.step(a)
        self._prev = np.array(flat[18:36], np.float64)  # the previous frame this obs holds (for get_state)
        info = dict(info)
        success = bool(info.get("success", 0.0))
        info["is_success"] = success
        self._obs_cache = split_obs(flat)
        return self._obs_cache, float(r), success, False, info

    def render(self):
        return self._mw.render()

    def close(self):
        self._mw.close()

    def current_obs(self) -> dict:
        """The latest observation (after reset, step or set_state)."""
        return self._obs_cache

    # ----------------------------------------------------------------------------- state save / restore
    def get_state(self) -> np.ndarray:
        mw = self._mw
        mujoco.mj_getState(mw.model, mw.data, self._state, STATE_SPEC)
        goal = np.asarray(mw._target_pos, np.float64)
        return np.concatenate([self._state, self._prev, goal, [float(mw.curr_path_length)]])

    def set_state(self, state) -> dict:
        """Restore a ``get_state()`` vector; returns the observation at that state."""
        mw = self._mw
        s = np.asarray(state, np.float64)
        n = self._state.size
        mujoco.mj_setState(mw.model, mw.data, s[:n], STATE_SPEC)
        mujoco.mj_forward(mw.model, mw.data)
        self._prev = s[n : n + 18].copy()
        mw._target_pos = s[n + 18 : n + 21].copy()
        mw.curr_path_length = int(s[n + 21])
        for site in mw._target_site_config:
            mw._set_pos_site(*site)
        cur = mw._get_curr_obs_combined_no_goal()
        mw._prev_obs = cur
        goal = np.zeros(3) if mw._partially_observable else mw._get_pos_goal()
        box = mw.sawyer_observation_space
        self._obs_cache = split_obs(np.clip(np.concatenate([cur, self._prev, goal]), box.low, box.high))
        return self._obs_cache


def make_metaworld(task: str, goals: str = "sampled", mt1_seed: int = 0, render_mode: str | None = None, **kw):
    """Entry point of ``metaworld/<task>-v3``: Meta-World's MT1 env for ``task``, adapted."""
    try:
        import metaworld  # noqa: F401  registers Meta-World/MT1
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"env=metaworld/{task} needs Meta-World: pip install -c constraints.txt -e '.[suites]'"
        ) from e
    mt1 = gym.make("Meta-World/MT1", env_name=task, seed=mt1_seed, render_mode=render_mode, **kw)
    tasks = mt1.get_wrapper_attr("tasks")
    return MetaWorldAdapter(mt1.unwrapped, task, tasks, goals=goals)


class MetaWorldExpert:
    """Meta-World's scripted policy for the task (``metaworld.policies.<Task>V3Policy``), closed loop from the
    observation (the 39-D vector rebuilt from our dict; ``act(None)`` reads the env's latest observation)."""

    mode = None

    def __init__(self, env, noise: float = 0.0, seed: int | None = None):
        from metaworld.policies import ENV_POLICY_MAP

        self.ad = ad = find_metaworld(env)
        self.policy = ENV_POLICY_MAP[ad.task]()
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, obs) -> np.ndarray:
        if obs is None:
            obs = self.ad.current_obs()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Constant(s) may be too high": saturating by design
            a = np.asarray(self.policy.get_action(flat_obs(obs)), np.float64)
        return add_noise(self, a)


def find_metaworld(env) -> MetaWorldAdapter:
    if isinstance(env.unwrapped, MetaWorldAdapter):
        return env.unwrapped
    raise ValueError(f"{env} is not a metaworld/... env")
