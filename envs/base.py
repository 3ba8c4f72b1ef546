"""Shared robot + base class for robolearn's MuJoCo manipulation tasks.

Robot
-----
A 4-DoF Cartesian gantry (slide joints ``x``, ``y``, ``z`` and a hinge ``yaw`` about the vertical) carrying a
parallel gripper with two independent slide finger joints. Every joint is driven by a MuJoCo ``position``
actuator (with velocity gain ``kv`` and a force limit), so contacts are real and bounded: a blocked gripper
pushes with at most ``forcerange`` newtons instead of tunnelling through. The gantry links have gravity
compensation. We chose a gantry over a 6-DoF arm with differential IK because the end-effector pose then *is*
the joint vector (no IK, no singularities, exact and cheap observations) while keeping real joint dynamics;
it behaves like the mocap-welded gripper option but without the unbounded weld forces.

End-effector frame: the site ``eef`` sits between the finger pads, 2 cm above the fingertips. With the joint
origins chosen so, ``eef_pos == qpos[x, y, z]`` exactly.

Action (float32, shape (5,), all in [-1, 1])
-------------------------------------------
``[dx, dy, dz, dyaw, gripper]``. The first four move the position-actuator targets (the commanded
end-effector pose) by ``action * max_delta`` per env step (default 2 cm, 2 cm, 2 cm, 0.15 rad), clipped to the
joint ranges and to within ``target_lead`` (3 cm, 0.3 rad) of the measured pose, so a blocked gripper does not
wind up. A zero action holds the commanded pose. In free space the gantry reaches ~95% of a commanded step
within the step.
``gripper`` is absolute: -1 fully open (9 cm between the pads), +1 closed.

Simulation: timestep 4 ms, ``frame_skip`` 25 => ``dt = 0.1`` s (10 Hz control). If the simulation blows up
(NaN/Inf/huge qpos, qvel or qacc), MuJoCo resets the data to the default pose and logs a warning; the step
then returns ``truncated=True``, reward 0 and ``info["sim_unstable"] = True`` (never ``is_success``).

State save/restore
------------------
``get_state()`` returns ``mj_getState(..., mjSTATE_INTEGRATION)`` (time, qpos, qvel, act, warm-start, ctrl =
the actuator targets, mocap poses, ...). Task randomisation (goal, hole, ...) lives in mocap bodies, so this
vector is the complete episode state; ``set_state`` restores it and calls ``mj_forward``.
"""

from __future__ import annotations

import atexit
import functools
import weakref

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces


def _close_env(ref: weakref.ref) -> None:
    env = ref()
    if env is not None:
        env.close()


TIMESTEP = 0.004
FRAME_SKIP = 25
STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION

FINGER_MAX = 0.045  # per-finger opening (m): pads 9 cm apart when fully open
Z_MIN, Z_MAX = 0.012, 0.40
XY_LIM = 0.36
YAW_LIM = 1.6

ROBOT_DEFAULTS = """
    <default class="robot">
      <geom contype="1" conaffinity="1" friction="1.2 0.02 0.001" solref="0.01 1" rgba="0.25 0.27 0.3 1"/>
      <default class="pad">
        <geom type="box" condim="4" friction="1.5 0.02 0.002" rgba="0.85 0.45 0.1 1" solimp="0.95 0.99 0.001"/>
      </default>
      <default class="rail">
        <geom type="box" size="0.01 0.01 0.01" contype="0" conaffinity="0" group="3" mass="0.3"/>
      </default>
    </default>
"""

# Gantry + gripper. {fingers_closed_pos} etc. are not needed: the initial pose is set in reset().
ROBOT_BODY = f"""
    <body name="gantry_x" gravcomp="1" childclass="robot">
      <joint name="x" type="slide" axis="1 0 0" range="-{XY_LIM} {XY_LIM}" armature="0.5" damping="2"/>
      <geom class="rail"/>
      <body name="gantry_y" gravcomp="1">
        <joint name="y" type="slide" axis="0 1 0" range="-{XY_LIM} {XY_LIM}" armature="0.5" damping="2"/>
        <geom class="rail"/>
        <body name="gantry_z" gravcomp="1">
          <joint name="z" type="slide" axis="0 0 1" range="{Z_MIN} {Z_MAX}" armature="0.5" damping="2"/>
          <geom class="rail"/>
          <body name="hand" gravcomp="1">
            <joint name="yaw" type="hinge" axis="0 0 1" range="-{YAW_LIM} {YAW_LIM}" armature="0.02" damping="0.1"/>
            <site name="eef" size="0.004" rgba="1 0 0 1" group="4"/>
            <geom name="palm" type="box" size="0.012 0.06 0.012" pos="0 0 0.062" mass="0.3"/>
            <geom name="wrist" type="cylinder" size="0.018 0.04" pos="0 0 0.114" mass="0.1" contype="0" conaffinity="0"/>
            <camera name="wrist" pos="0 -0.07 0.09" xyaxes="1 0 0 0 0.6 0.8" fovy="75"/>
            <body name="finger_l" gravcomp="1">
              <joint name="finger_l" type="slide" axis="0 1 0" range="0 {FINGER_MAX}" armature="0.01" damping="0.5"/>
              <geom name="pad_l" class="pad" size="0.011 0.005 0.03" pos="0 0.005 0.01" mass="0.04"/>
            </body>
            <body name="finger_r" gravcomp="1">
              <joint name="finger_r" type="slide" axis="0 -1 0" range="0 {FINGER_MAX}" armature="0.01" damping="0.5"/>
              <geom name="pad_r" class="pad" size="0.011 0.005 0.03" pos="0 -0.005 0.01" mass="0.04"/>
            </body>
          </body>
        </body>
      </body>
    </body>
"""

ROBOT_ACTUATORS = """
  <actuator>
    <position name="x" joint="x" kp="3000" kv="150" forcerange="-40 40"/>
    <position name="y" joint="y" kp="3000" kv="150" forcerange="-40 40"/>
    <position name="z" joint="z" kp="3000" kv="150" forcerange="-40 40"/>
    <position name="yaw" joint="yaw" kp="20" kv="1.2" forcerange="-3 3"/>
    <position name="finger_l" joint="finger_l" kp="400" kv="8" forcerange="-12 12"/>
    <position name="finger_r" joint="finger_r" kp="400" kv="8" forcerange="-12 12"/>
  </actuator>
"""


def make_xml(name: str, task_defaults: str, task_world: str, extra: str = "", cameras: str = "") -> str:
    """A complete MJCF: table, lights, cameras, robot, plus the task's bodies."""
    return f"""
<mujoco model="{name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".72 .68 .6" rgb2=".66 .62 .55" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="8 8" reflectance="0"/>
  </asset>
  <default>
    <geom solref="0.01 1"/>
    {ROBOT_DEFAULTS}
    {task_defaults}
  </default>
  <worldbody>
    <light name="top" pos="0 0 1.5" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.5 0.5 0.5"/>
    <geom name="table" type="box" size="0.45 0.45 0.02" pos="0 0 -0.02" material="table" friction="0.8 0.005 0.0001"/>
    <camera name="front" pos="0 -0.5 0.42" xyaxes="1 0 0 0 0.64 0.77" fovy="55"/>
    <camera name="top" pos="0 0 1.0" xyaxes="1 0 0 0 1 0" fovy="45"/>
    {cameras}
    {ROBOT_BODY}
    {task_world}
  </worldbody>
  {ROBOT_ACTUATORS}
  {extra}
</mujoco>
"""


class RobolearnMujocoEnv(gym.Env):
    """Base class: gantry + gripper, delta end-effector control, Dict observations, fast state obs.

    Subclasses define ``XML``, ``_task_reset(rng)``, ``_task_obs(obs)`` (fill preallocated float32 arrays),
    ``_task_obs_space()`` and ``_get_rew(action) -> (reward, info)``; ``info["is_success"]`` and
    ``info["is_failure"]`` decide ``terminated``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    XML: str = ""
    DEFAULT_CAMERA = "front"

    def __init__(
        self,
        obs_mode: str = "state",
        reward_type: str = "dense",
        render_mode: str | None = None,
        image_size: tuple[int, int] = (84, 84),
        image_cameras: tuple[str, ...] = ("front",),
        render_size: tuple[int, int] = (240, 320),
        render_camera: str | None = None,
        frame_skip: int = FRAME_SKIP,
        max_delta: tuple[float, float, float, float] = (0.02, 0.02, 0.02, 0.15),
        target_lead: tuple[float, float] = (0.03, 0.3),
    ):
        if obs_mode not in ("state", "image", "both"):
            raise ValueError(f"obs_mode={obs_mode!r}; valid: 'state', 'image', 'both'")
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"reward_type={reward_type!r}; valid: 'dense', 'sparse'")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; valid: None, 'rgb_array'")
        self.obs_mode, self.reward_type, self.render_mode = obs_mode, reward_type, render_mode
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.image_cameras = tuple(image_cameras)
        self.render_size = (int(render_size[0]), int(render_size[1]))
        self.render_camera = render_camera or self.DEFAULT_CAMERA
        self.frame_skip = int(frame_skip)

        self.model = mujoco.MjModel.from_xml_string(self.XML)
        self.data = mujoco.MjData(self.model)
        m = self.model
        jid = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)  # noqa: E731
        self._arm_qadr = np.array([m.jnt_qposadr[jid(n)] for n in ("x", "y", "z", "yaw")])
        self._arm_dadr = np.array([m.jnt_dofadr[jid(n)] for n in ("x", "y", "z", "yaw")])
        self._finger_qadr = np.array([m.jnt_qposadr[jid(n)] for n in ("finger_l", "finger_r")])
        assert list(self._arm_qadr) == [0, 1, 2, 3] and list(self._finger_qadr) == [4, 5]
        self._lo = np.array([-XY_LIM, -XY_LIM, Z_MIN, -YAW_LIM])
        self._hi = np.array([XY_LIM, XY_LIM, Z_MAX, YAW_LIM])
        self._scale = np.asarray(max_delta, np.float64)
        self._lead = np.array([target_lead[0]] * 3 + [target_lead[1]])
        self._scale_l, self._lead_l = self._scale.tolist(), self._lead.tolist()
        self._lo_l, self._hi_l = self._lo.tolist(), self._hi.tolist()
        self._robot_geoms = {
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("palm", "pad_l", "pad_r")
        }
        self._tmp4 = np.zeros(4)
        self._state = np.zeros(mujoco.mj_stateSize(m, STATE_SPEC))

        self.action_space = spaces.Box(-1.0, 1.0, (5,), np.float32)
        box = lambda n: spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
        obs_spaces = {}
        if obs_mode in ("state", "both"):
            obs_spaces.update({"eef_pos": box(3), "eef_yaw": box(1), "gripper": box(2)})
            obs_spaces.update({k: box(n) for k, n in self._task_obs_space().items()})
        if obs_mode in ("image", "both"):
            h, w = self.image_size
            for cam in self.image_cameras:
                obs_spaces[f"image_{cam}"] = spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        # preallocated state-obs buffers (copied on return, so callers may keep them)
        self._obs_buf = {
            k: np.zeros(s.shape, np.float32) for k, s in obs_spaces.items() if not k.startswith("image_")
        }
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._cam_ids = {}
        self._np_random_seeded = False

    # ------------------------------------------------------------------ gym API
    @property
    def dt(self) -> float:
        return self.model.opt.timestep * self.frame_skip

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self._task_reset(self.np_random)
        d.ctrl[:4] = d.qpos[:4]
        d.ctrl[4:6] = d.qpos[4:6]
        self._reset_ctrl()
        mujoco.mj_forward(m, d)
        _, info = self._get_rew(None)
        return self._get_obs(), info

    # dims of the action a task ignores: {index: value it is replaced with}
    FIXED_ACTION: dict[int, float] = {}

    def step(self, action):
        d = self.data
        # plain-float arithmetic: for 5 numbers this is several times cheaper than numpy calls
        a = [min(max(float(v), -1.0), 1.0) for v in action]
        for i, v in self.FIXED_ACTION.items():
            a[i] = v
        q, ctrl = d.qpos, d.ctrl
        for i in range(4):
            qi = q[i]
            t = ctrl[i] + a[i] * self._scale_l[i]
            t = min(max(t, qi - self._lead_l[i], self._lo_l[i]), qi + self._lead_l[i], self._hi_l[i])
            ctrl[i] = t
        ctrl[4] = ctrl[5] = (1.0 - a[4]) * (0.5 * FINGER_MAX)
        t0 = d.time
        mujoco.mj_step(self.model, d, nstep=self.frame_skip)
        reward, info = self._get_rew(a)
        obs = self._get_obs()
        if d.time < t0 + 0.5 * self.dt:
            # MuJoCo met NaN/Inf/huge qpos, qvel or qacc, reset the data to the model's default pose (time 0)
            # and logged a warning: the episode cannot go on from here. Truncate it and say why.
            info["is_success"], info["sim_unstable"] = False, True
            return obs, 0.0, False, True, info
        terminated = info["is_success"] or info.get("is_failure", False)
        return obs, reward, terminated, False, info

    def _get_obs(self):
        obs = {}
        if self.obs_mode != "image":
            q = self.data.qpos
            b = self._obs_buf
            b["eef_pos"][:] = q[:3]
            b["eef_yaw"][0] = q[3]
            b["gripper"][:] = q[4:6]
            self._task_obs(b)
            obs = {k: v.copy() for k, v in b.items()}
        if self.obs_mode != "state":
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_camlight(self.model, self.data)
            for cam in self.image_cameras:
                obs[f"image_{cam}"] = self._render(cam, self.image_size)
        return obs

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        return self._render(self.render_camera, self.render_size)

    def _render(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        r = self._renderers.get(size)
        if r is None:
            r = mujoco.Renderer(self.model, size[0], size[1])
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            if not self._renderers:
                # An env left open at exit would free its GL context after EGL is gone (a traceback on
                # stderr at shutdown); close it while the interpreter still works.
                self._close_at_exit = functools.partial(_close_env, weakref.ref(self))
                atexit.register(self._close_at_exit)
            self._renderers[size] = r
        r.update_scene(self.data, camera=camera)
        return r.render()

    def close(self):
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
        hook = getattr(self, "_close_at_exit", None)
        if hook is not None:
            atexit.unregister(hook)
            self._close_at_exit = None

    # ------------------------------------------------------------------ state
    def get_state(self) -> np.ndarray:
        mujoco.mj_getState(self.model, self.data, self._state, STATE_SPEC)
        return self._state.copy()

    def set_state(self, state) -> None:
        state = np.asarray(state, np.float64)
        if state.shape != self._state.shape:
            raise ValueError(f"state has shape {state.shape}, expected {self._state.shape}")
        mujoco.mj_setState(self.model, self.data, state, STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)
        # mj_forward overwrites qacc_warmstart; restore it so that the next mj_step is bit-identical
        mujoco.mj_setState(self.model, self.data, state, STATE_SPEC)

    # ------------------------------------------------------------------ helpers
    def _set_robot(self, pos, yaw: float = 0.0, finger: float = FINGER_MAX) -> None:
        q = self.data.qpos
        q[:3] = pos
        q[3] = yaw
        q[4] = q[5] = finger

    def _robot_touches(self, geom_ids) -> bool:
        """Whether any robot geom is in contact with any geom in ``geom_ids`` (a set)."""
        d = self.data
        n = d.ncon
        if n == 0:
            return False
        g1 = d.contact.geom1[:n]
        g2 = d.contact.geom2[:n]
        for a, b in zip(g1.tolist(), g2.tolist()):
            if (a in self._robot_geoms and b in geom_ids) or (b in self._robot_geoms and a in geom_ids):
                return True
        return False

    # ------------------------------------------------------------------ task hooks
    def _reset_ctrl(self) -> None:
        """Adjust the initial actuator targets (default: hold the initial pose)."""

    def _task_obs_space(self) -> dict[str, int]:
        raise NotImplementedError

    def _task_reset(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _task_obs(self, buf: dict) -> None:
        raise NotImplementedError

    def _get_rew(self, action) -> tuple[float, dict]:
        raise NotImplementedError


def yaw_from_quat(q) -> float:
    """Yaw (rotation about world z) of a wxyz quaternion."""
    w, x, y, z = q
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def add_noise(actor, a, low=-1.0, high=1.0) -> np.ndarray:
    """An actor's action with its Gaussian ``actor.noise`` added (drawn from ``actor.rng``), clipped to
    [low, high]. The noise-free action is kept as ``actor.clean_action``: `robolearn record label=clean` stores
    it while the noisy one is executed (DART: the demos visit perturbed states, labelled with what the expert
    would do there)."""
    a = np.asarray(a, np.float64)
    actor.clean_action = np.clip(a, low, high).astype(np.float32)
    if actor.noise > 0:
        a = a + actor.rng.normal(0.0, actor.noise, a.shape)
    return np.clip(a, low, high).astype(np.float32)


def wrap(a: float) -> float:
    return (a + np.pi) % (2 * np.pi) - np.pi


class Expert:
    """Base for scripted experts. Closed loop: ``act`` reads the env's *current* simulator state (identical to
    what the state observation holds), so it can label any state a learner visits (DAgger)."""

    mode: str | None = None

    def __init__(self, env, noise: float = 0.0, seed: int | None = None):
        self.env = env.unwrapped
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, obs=None) -> np.ndarray:
        return add_noise(self, self._act())

    def _act(self) -> np.ndarray:
        raise NotImplementedError

    # helper: desired displacement of the *measured* eef pose -> normalised action (new commanded target =
    # measured pose + displacement, expressed as a change of the current commanded target)
    def _move(self, dpos, gripper: float, dyaw: float = 0.0) -> np.ndarray:
        env = self.env
        s = env._scale
        d = env.data
        a = np.zeros(5)
        a[:3] = (d.qpos[:3] + np.asarray(dpos) - d.ctrl[:3]) / s[:3]
        a[3] = (d.qpos[3] + dyaw - d.ctrl[3]) / s[3]
        a[4] = gripper
        return np.clip(a, -1.0, 1.0)
