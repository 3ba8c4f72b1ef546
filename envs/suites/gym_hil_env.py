"""gym-hil (LeRobot's HIL-SERL sim, ``gym-hil==0.1.14``) with robolearn's conventions: ids
``gym_hil/PandaPickCubeBase-v0`` and ``gym_hil/PandaArrangeBoxesBase-v0`` (gym-hil's own base ids; robolearn's
``make_env`` wraps them in :class:`GymHilAdapter`).

Robot: a Franka Panda with a Robotiq 2F-85, driven by operational-space control towards a mocap target at
10 Hz (``control_dt`` 0.1 s, 50 physics steps of 2 ms).

Action (ours, ``Box(-1, 1, (4,), float32)``): ``[dx, dy, dz, gripper]``. ``dx, dy, dz`` move the mocap target
by ``action * 0.025`` m (gym-hil's ``EEActionWrapper`` default step, clipped to its Cartesian bounds);
``gripper`` is gym-hil's grasp command: a change of the gripper closure in [0, 1] per step (+1 closes fully,
-1 opens fully, 0 holds). gym-hil's raw 7-D action also has ``rx, ry, rz``, which its ``apply_action``
ignores, so they are dropped (sent as 0).

Observation (Dict of float32): gym-hil's ``agent_pos`` (18) split into ``qpos`` (7 arm joints), ``qvel`` (7),
``gripper`` (1, closure command in [0, 1] = ctrl / 255) and ``tcp_pos`` (3, the pinch site), and its
``environment_state`` (3) as ``block_pos`` (PickCube: the cube; ArrangeBoxes: block 1, all gym-hil exposes).

Success: ``info["is_success"] = info["succeed"]`` (PickCube: the cube is lifted 10 cm and within 5 cm of the
pinch site). Episodes: 100 steps (gym-hil's registration), terminated on success or when the cube leaves the
sampling area.

Randomisation: as gym-hil defines it. PickCube's cube starts at (0.5, 0) unless ``random_block_position=True``
(then uniform in gym-hil's sampling bounds, drawn here from the reset seed: gym-hil draws it from the global
``np.random``, which a reset seed does not fix). ArrangeBoxes' block shuffle is likewise redrawn from the
reset seed.

The adapter calls ``mj_forward`` after each step, so the observation is read from the current state (gym-hil
reads its sensors as ``mj_step`` leaves them, one 2 ms substep stale) and a restored state continues exactly.

State: ``get_state()`` = ``mj_getState(mjSTATE_INTEGRATION)`` (qpos, qvel, ctrl with the gripper command, the
mocap target, warm start, ...) + PickCube's initial cube height; ``set_state`` restores it (``mj_forward``).
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from robolearn_envs.base import add_noise

STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
EE_STEP = 0.025  # gym_hil.wrappers.hil_wrappers.DEFAULT_EE_STEP_SIZE
OBS_KEYS = (("qpos", 7), ("qvel", 7), ("gripper", 1), ("tcp_pos", 3), ("block_pos", 3))


class GymHilAdapter(gym.Env):
    """A gym-hil Panda env (state observations) with robolearn's conventions (see the module docstring). The
    adapter is the unwrapped env (it holds gym-hil's env as ``self.env``): ``env.unwrapped.set_state`` /
    ``.step`` are ours, as robolearn's DAgger scratch rollouts expect. ``wrap(gym.make(id))`` builds the
    stack robolearn's make_env returns."""

    is_suite_adapter = True
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, env: gym.Env, random_block_position: bool | None = None):
        self.env = env = env.unwrapped
        self.render_mode = "rgb_array"
        self.spec = env.spec
        u = env
        self._u = u
        self.is_pick = hasattr(u, "_z_success") or type(u).__name__ == "PandaPickCubeGymEnv"
        if random_block_position is None:
            random_block_position = bool(getattr(u, "_random_block_position", False))
        self.random_block_position = bool(random_block_position)
        if self.is_pick:
            u._random_block_position = False  # we draw it from the reset seed instead
        inf = np.float32(np.inf)
        self.observation_space = spaces.Dict({k: spaces.Box(-inf, inf, (n,), np.float32) for k, n in OBS_KEYS})
        self.observation_space["gripper"] = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._rng = np.random.default_rng()
        self._state = np.zeros(mujoco.mj_stateSize(u.model, STATE_SPEC))
        self._raw = np.zeros(7)

    @property
    def dt(self) -> float:
        return float(self._u.control_dt)

    def _obs(self) -> dict:
        u = self._u
        d = u.data
        ids = u._panda_dof_ids
        block = d.sensor("block_pos" if self.is_pick else "block1_pos").data
        return {
            "qpos": d.qpos[ids].astype(np.float32),
            "qvel": d.qvel[ids].astype(np.float32),
            "gripper": np.array([d.ctrl[u._gripper_ctrl_id] / 255.0], np.float32),
            "tcp_pos": d.sensor("2f85/pinch_pos").data.astype(np.float32),
            "block_pos": np.asarray(block, np.float32),
        }

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.env.reset(seed=seed, options=options)
        u, d = self._u, self._u.data
        if self.is_pick:
            if self.random_block_position:
                from gym_hil.envs.panda_pick_gym_env import _SAMPLING_BOUNDS

                d.jnt("block").qpos[:2] = self._rng.uniform(*_SAMPLING_BOUNDS)
                mujoco.mj_forward(u.model, d)
                u._z_init = d.sensor("block_pos").data[2]
                u._z_success = u._z_init + 0.1
        else:  # ArrangeBoxes: redo gym-hil's shuffle with the seeded generator
            coords = self._rng.permutation(np.linspace(-u.block_range, u.block_range, u.no_blocks))
            blocks = self._rng.permutation([f"block{i}" for i in range(1, u.no_blocks + 1)])
            for block, y in zip(blocks, coords):
                d.joint(block).qpos[1] = y
            mujoco.mj_forward(u.model, d)
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        raw = self._raw
        raw[:3] = a[:3] * EE_STEP
        raw[6] = a[3]
        _obs, r, term, trunc, info = self.env.step(raw.astype(np.float32))
        # mj_step leaves sensors and kinematics at the state before its last integration; refresh them so the
        # observation (and the controller's next substep) belong to the state get_state() returns
        mujoco.mj_forward(self._u.model, self._u.data)
        info = dict(info)
        info["is_success"] = bool(info.get("succeed", False))
        return self._obs(), float(r), bool(term), bool(trunc), info

    def render(self):
        frames = self._u.render()  # gym-hil renders [front, wrist]
        return frames[0] if isinstance(frames, list | tuple) else frames

    def close(self):
        self._u.close()

    def get_state(self) -> np.ndarray:
        u = self._u
        mujoco.mj_getState(u.model, u.data, self._state, STATE_SPEC)
        z0 = float(getattr(u, "_z_init", 0.0))
        return np.concatenate([self._state, [z0]])

    def set_state(self, state) -> dict:
        u = self._u
        s = np.asarray(state, np.float64)
        n = self._state.size
        mujoco.mj_setState(u.model, u.data, s[:n], STATE_SPEC)
        mujoco.mj_forward(u.model, u.data)
        if self.is_pick:
            u._z_init = float(s[n])
            u._z_success = u._z_init + 0.1
        return self._obs()


class PandaPickExpert:
    """Scripted pick for gym_hil PandaPickCube: move the mocap target above the cube, descend until the pinch
    site is at the cube's centre, close, then lift 15 cm. Closed loop on the simulator state (the mocap target
    and the observation's tcp/cube positions); the phase is inferred each call, with one latch for the grasp
    (``_closing``: steps spent closing)."""

    mode = None
    HOVER = 0.08  # m above the cube while aligning
    LIFT = 0.15

    def __init__(self, env, noise: float = 0.0, seed: int | None = None):
        self.ad = find_gym_hil(env)
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self._closing = 0

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._closing = 0

    def _to(self, target, grip: float) -> np.ndarray:
        mocap = self.ad._u.data.mocap_pos[0]
        a = np.zeros(4)
        a[:3] = (np.asarray(target) - mocap) / EE_STEP
        a[3] = grip
        return a

    def act(self, obs) -> np.ndarray:
        if obs is None:  # DAgger's scratch rollouts: read the env's current state
            obs = self.ad._obs()
        tcp = np.asarray(obs["tcp_pos"], np.float64)
        cube = np.asarray(obs["block_pos"], np.float64)
        grip = float(obs["gripper"][0])
        dxy = float(np.hypot(*(cube[:2] - tcp[:2])))
        if self._closing or (dxy < 0.008 and abs(tcp[2] - cube[2]) < 0.008):
            self._closing += 1
            if self._closing < 6:  # close in place
                a = self._to(cube, 1.0)
            else:  # lift
                a = self._to((cube[0], cube[1], cube[2] + self.LIFT + 0.05), 1.0)
                if grip > 0.99 and cube[2] < 0.03 and self._closing > 20:  # lost it: start over
                    self._closing = 0
                    a = self._to((cube[0], cube[1], cube[2] + self.HOVER), -1.0)
        elif dxy > 0.01:  # hover above the cube, open
            z = max(tcp[2], cube[2] + self.HOVER) if dxy > 0.03 else cube[2] + self.HOVER
            a = self._to((cube[0], cube[1], z), -1.0)
        else:  # descend
            a = self._to(cube, -1.0)
        return add_noise(self, a)


def wrap(env: gym.Env, max_episode_steps: int | None = None, **kw) -> gym.Env:
    """``gym.make(gym_hil id)`` -> TimeLimit(OrderEnforcing(GymHilAdapter)) with the same spec and limit."""
    from gymnasium.wrappers import OrderEnforcing, TimeLimit

    steps = max_episode_steps or (env.spec.max_episode_steps if env.spec is not None else None) or 100
    ad = GymHilAdapter(env, **kw)
    if env.spec is not None:
        ad.spec = env.spec
    return TimeLimit(OrderEnforcing(ad), steps)


def find_gym_hil(env) -> GymHilAdapter:
    if isinstance(env.unwrapped, GymHilAdapter):
        return env.unwrapped
    raise ValueError(f"{env} is not a gym_hil/... env adapted by robolearn")
