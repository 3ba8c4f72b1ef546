"""robolearn/Lift-v0: pick up a cube and hold it above a height."""

from __future__ import annotations

import math

import mujoco
import numpy as np
from robolearn_envs.base import FINGER_MAX, Expert, RobolearnMujocoEnv, make_xml, wrap, yaw_from_quat

CUBE_HALF = 0.02
LIFT_Z = 0.10  # success: cube centre above 10 cm (it rests at 2 cm)

_WORLD = f"""
    <body name="cube" pos="0 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" condim="4"
            friction="1.2 0.02 0.002" rgba="0.8 0.15 0.15 1"/>
    </body>
    <site name="lift_line" type="box" pos="0 0.3 {LIFT_Z}" size="0.3 0.002 0.002" rgba="0 0.7 0 0.3"/>
"""


class LiftEnv(RobolearnMujocoEnv):
    """Lift a 4 cm cube from a random table position and hold it above ``LIFT_Z`` (cube centre > 10 cm).

    Reset: cube xy uniform in [-0.12, 0.12]^2, yaw uniform in [-pi/4, pi/4]; gripper open at
    (U(-0.03, 0.03), U(-0.03, 0.03), 0.2), yaw 0.

    Observation (state keys): ``eef_pos`` (3), ``eef_yaw`` (1), ``gripper`` (2, finger openings in m),
    ``cube_pos`` (3), ``cube_quat`` (4, wxyz), ``cube_to_eef`` (3 = eef_pos - cube_pos).
    Action: the full 5-D ``[dx, dy, dz, dyaw, gripper]`` (see ``robolearn_envs.base``).

    Reward (dense): ``0.4 * (1 - tanh(10 * |eef - cube|)) + 0.2 * grasped + 0.4 * clip(lift progress)``,
    1.0 on success. Sparse: 1.0 on success else 0. ``terminated`` on success. ``max_episode_steps`` = 100.

    Version history:
        v0: initial version (gantry + parallel gripper, 10 Hz). Later change to v0's scripted expert only
            (obs, reward and dynamics unchanged): its latched ``_reopen`` flag is gone, the re-opening after a
            missed grasp is read from the simulator state (the gripper's commanded opening), and a miss is
            answered with "open" one step earlier. Success on demo seeds 10_000_000..10_000_099: 100/100
            before and after.
    """

    XML = make_xml("lift", "", _WORLD)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        m = self.model
        self._cube_qadr = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "cube")]
        self._cube_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "cube")
        self._pad_ids = (
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "pad_l"),
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "pad_r"),
        )

    def _task_obs_space(self):
        return {"cube_pos": 3, "cube_quat": 4, "cube_to_eef": 3}

    def _task_reset(self, rng):
        q = self.data.qpos
        a = self._cube_qadr
        q[a : a + 2] = rng.uniform(-0.12, 0.12, 2)
        q[a + 2] = CUBE_HALF
        yaw = rng.uniform(-np.pi / 4, np.pi / 4)
        q[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self._set_robot((rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), 0.2), 0.0, FINGER_MAX)

    def _task_obs(self, b):
        q = self.data.qpos
        a = self._cube_qadr
        b["cube_pos"][:] = q[a : a + 3]
        b["cube_quat"][:] = q[a + 3 : a + 7]
        np.subtract(q[:3], q[a : a + 3], out=b["cube_to_eef"])

    def grasped(self) -> bool:
        d = self.data
        n = d.ncon
        if n == 0:
            return False
        g = d.contact.geom[:n]
        c = self._cube_geom
        l_, r_ = self._pad_ids
        hit_l = np.any(((g[:, 0] == l_) & (g[:, 1] == c)) | ((g[:, 1] == l_) & (g[:, 0] == c)))
        hit_r = np.any(((g[:, 0] == r_) & (g[:, 1] == c)) | ((g[:, 1] == r_) & (g[:, 0] == c)))
        return bool(hit_l and hit_r)

    def _get_rew(self, action):
        q = self.data.qpos
        a = self._cube_qadr
        z = q[a + 2]
        success = bool(z > LIFT_Z)
        if self.reward_type == "sparse":
            return float(success), {"is_success": success}
        dist = math.sqrt((q[0] - q[a]) ** 2 + (q[1] - q[a + 1]) ** 2 + (q[2] - q[a + 2]) ** 2)
        grasped = self.grasped()
        lift = min(max((z - CUBE_HALF) / (LIFT_Z - CUBE_HALF), 0.0), 1.0)
        r = 1.0 if success else 0.4 * (1.0 - math.tanh(10.0 * dist)) + 0.2 * grasped + 0.4 * lift
        return float(r), {"is_success": success, "grasped": grasped}


class LiftExpert(Expert):
    """Hover above the cube, align yaw (cube yaw mod 90 deg), descend, close, lift. The phase is inferred from
    the simulator state each call, so the action is a function of that state alone (DAgger can label any
    restored state with a fresh expert). A missed grasp (fingers closed on nothing at the grasp pose) is
    answered with "open and rise"; the re-opening phase is read from the actuators: the gripper is commanded
    open (``ctrl``, part of the saved state) but the fingers have not opened yet. (Before, a latched flag
    ``_reopen`` remembered the miss: hidden state a restored state did not carry.)"""

    GRASP_Z = CUBE_HALF + 0.005  # eef height for the grasp: fingertips 5 mm above the table

    def _act(self):
        env = self.env
        q = env.data.qpos
        a = env._cube_qadr
        cube = q[a : a + 3]
        cyaw = yaw_from_quat(q[a + 3 : a + 7])
        tyaw = wrap(4 * cyaw) / 4  # symmetric cube: nearest grasp yaw in [-pi/4, pi/4]
        eef, yaw, fing = q[:3], q[3], 0.5 * (q[4] + q[5])
        dyaw = wrap(tyaw - yaw)
        dxy = cube[:2] - eef[:2]
        exy = float(np.hypot(*dxy))
        reopen = self._move((0, 0, 0.06 - eef[2] if eef[2] < 0.06 else 0), -1.0)
        holding = cube[2] > CUBE_HALF + 0.01 and env.grasped()
        if not holding and env.data.ctrl[4] > 0.95 * FINGER_MAX and fing <= FINGER_MAX * 0.85:
            return reopen  # commanded open, not open yet: finish re-opening (after a miss)
        if holding:  # lift
            return self._move((0, 0, 0.16 - eef[2]), 1.0)
        low = abs(eef[2] - max(cube[2], CUBE_HALF) - 0.005) < 0.008
        if exy < 0.008 and abs(dyaw) < 0.08 and low:  # at the grasp pose: close
            if fing < CUBE_HALF * 0.6:  # closed on nothing: missed
                return reopen
            if env.grasped() and fing < CUBE_HALF + 0.002:
                return self._move((dxy[0], dxy[1], 0.16 - eef[2]), 1.0)
            return self._move((dxy[0], dxy[1], 0), 1.0, dyaw)
        grip = -1.0
        if exy > 0.01 or abs(dyaw) > 0.1:  # hover above, aligned
            tz = cube[2] + 0.07
            dz = tz - eef[2] if (exy > 0.02 or eef[2] < tz) else 0.0
            return self._move((dxy[0], dxy[1], dz), grip, dyaw)
        return self._move((dxy[0], dxy[1], self.GRASP_Z - eef[2]), grip, dyaw)
