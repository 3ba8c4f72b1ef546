"""robolearn/PegInsert-v0: insert a grasped square peg into a square hole with 1.5 mm clearance."""

from __future__ import annotations

import mujoco
import numpy as np
from robolearn_envs.base import Expert, RobolearnMujocoEnv, make_xml, wrap, yaw_from_quat

PEG_R = 0.012  # peg half width (square cross-section, 24 mm)
PEG_HALF = 0.04  # peg half length (8 cm peg)
CLEAR = 0.0015  # clearance per side between peg and hole faces
HOLE_HALF = PEG_R + CLEAR  # half width of the square hole
HOLE_DEPTH = 0.04  # hole top at z = 4 cm (the bottom is the table)
WALL = 0.02  # wall thickness
DEPTH_SUCCESS = 0.025  # peg bottom at least 2.5 cm below the hole's top
PEG_BELOW_EEF = 0.01  # peg centre 1 cm below the eef site when grasped (peg bottom 3 cm below the fingertips)

_h, _w, _d = HOLE_HALF, WALL / 2, HOLE_DEPTH / 2
_WORLD = f"""
    <body name="hole" mocap="true" pos="0 0 0">
      <geom name="wall_px" type="box" pos="{_h + _w} 0 {_d}" size="{_w} {_h + WALL} {_d}" rgba="0.35 0.35 0.4 1"/>
      <geom name="wall_nx" type="box" pos="{-_h - _w} 0 {_d}" size="{_w} {_h + WALL} {_d}" rgba="0.35 0.35 0.4 1"/>
      <geom name="wall_py" type="box" pos="0 {_h + _w} {_d}" size="{_h} {_w} {_d}" rgba="0.35 0.35 0.4 1"/>
      <geom name="wall_ny" type="box" pos="0 {-_h - _w} {_d}" size="{_h} {_w} {_d}" rgba="0.35 0.35 0.4 1"/>
      <site name="hole_top" pos="0 0 {HOLE_DEPTH}" size="0.003" rgba="0 1 0 1" group="4"/>
    </body>
    <body name="peg" pos="0 0 0.2">
      <freejoint name="peg"/>
      <geom name="peg" type="box" size="{PEG_R} {PEG_R} {PEG_HALF}" mass="0.03" condim="4"
            friction="1.2 0.02 0.002" rgba="0.15 0.55 0.85 1"/>
    </body>
"""


class PegInsertEnv(RobolearnMujocoEnv):
    """Insert a square peg (24 x 24 mm, 8 cm long) into a square hole (27 x 27 mm: 1.5 mm clearance per side),
    4 cm deep, built from four walls. The hole's yaw is random, so the peg must be turned (``dyaw``) to fit:
    with 1.5 mm clearance the yaw error must stay below ~0.1 rad.

    The peg starts already grasped: at reset it is placed vertically between the closed fingers (centre 1 cm
    below the eef site, so it sticks out 3 cm below the fingertips) and held by friction only (it can slip or
    tilt on collisions). Hole (a mocap body) xy ~ U[-0.12, 0.12]^2, yaw ~ U[-0.5, 0.5] rad;
    eef xy ~ U[-0.12, 0.12]^2 at z = 0.16, yaw 0. Success: the peg's bottom centre >= 2.5 cm below the hole's
    top and inside the hole's square (in the hole frame).

    Observation (state keys): ``eef_pos`` (3), ``eef_yaw`` (1), ``gripper`` (2), ``peg_pos`` (3, centre),
    ``peg_quat`` (4, wxyz), ``hole_pos`` (3, centre of the hole's top face), ``hole_yaw`` (2: cos, sin of 4 x
    yaw, since the square is 90-degree symmetric), ``peg_to_hole`` (3 = hole_pos - peg bottom point).
    Action: the full 5-D ``[dx, dy, dz, dyaw, gripper]`` (opening the gripper drops the peg).

    Reward (dense): ``0.5 * (1 - tanh(10 * |xy error|)) + 0.5 * clip(insertion depth / 2.5 cm, 0, 1)`` with
    the xy error of the peg bottom w.r.t. the hole axis; 1.0 on success. Sparse: 1.0 on success else 0.
    ``max_episode_steps`` = 100.

    Version history:
        v0: initial version.
    """

    XML = make_xml("peg_insert", "", _WORLD)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        m = self.model
        self._peg_qadr = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "peg")]
        self._hole_mocap = m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hole")]
        self._bottom = np.zeros(3)

    def _task_obs_space(self):
        return {"peg_pos": 3, "peg_quat": 4, "hole_pos": 3, "hole_yaw": 2, "peg_to_hole": 3}

    def _task_reset(self, rng):
        d = self.data
        hole = rng.uniform(-0.12, 0.12, 2)
        d.mocap_pos[self._hole_mocap] = (hole[0], hole[1], 0.0)
        hy = rng.uniform(-0.5, 0.5)
        d.mocap_quat[self._hole_mocap] = (np.cos(hy / 2), 0.0, 0.0, np.sin(hy / 2))
        eef = np.array([*rng.uniform(-0.12, 0.12, 2), 0.16])
        self._set_robot(eef, 0.0, PEG_R - 0.0003)
        a = self._peg_qadr
        d.qpos[a : a + 3] = eef - (0.0, 0.0, PEG_BELOW_EEF)
        d.qpos[a + 3 : a + 7] = (1.0, 0.0, 0.0, 0.0)

    def _reset_ctrl(self):
        self.data.ctrl[4:6] = 0.0  # fingers squeezing the peg

    def peg_bottom(self) -> np.ndarray:
        """World position of the centre of the peg's bottom face."""
        q = self.data.qpos
        a = self._peg_qadr
        w, x, y, z = q[a + 3 : a + 7]
        # third column of the rotation matrix = the peg axis
        ax = (2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y))
        b = self._bottom
        b[0] = q[a] - PEG_HALF * ax[0]
        b[1] = q[a + 1] - PEG_HALF * ax[1]
        b[2] = q[a + 2] - PEG_HALF * ax[2]
        return b

    @property
    def hole_pos(self) -> np.ndarray:
        p = self.data.mocap_pos[self._hole_mocap].copy()
        p[2] = HOLE_DEPTH
        return p

    @property
    def hole_yaw(self) -> float:
        return yaw_from_quat(self.data.mocap_quat[self._hole_mocap])

    def _task_obs(self, b):
        q = self.data.qpos
        a = self._peg_qadr
        b["peg_pos"][:] = q[a : a + 3]
        b["peg_quat"][:] = q[a + 3 : a + 7]
        h = b["hole_pos"]
        h[:2] = self.data.mocap_pos[self._hole_mocap][:2]
        h[2] = HOLE_DEPTH
        hy = 4.0 * self.hole_yaw
        b["hole_yaw"][0] = np.cos(hy)
        b["hole_yaw"][1] = np.sin(hy)
        np.subtract(h, self.peg_bottom(), out=b["peg_to_hole"])

    def _get_rew(self, action):
        bot = self.peg_bottom()
        hp = self.data.mocap_pos[self._hole_mocap]
        ex, ey = bot[0] - hp[0], bot[1] - hp[1]
        exy = float(np.hypot(ex, ey))
        depth = HOLE_DEPTH - bot[2]
        success = False
        if depth >= DEPTH_SUCCESS:
            c, s = np.cos(self.hole_yaw), np.sin(self.hole_yaw)
            success = bool(abs(c * ex + s * ey) < HOLE_HALF and abs(-s * ex + c * ey) < HOLE_HALF)
        info = {"is_success": success}
        if self.reward_type == "sparse":
            return float(success), info
        r = (
            1.0
            if success
            else 0.5 * (1 - np.tanh(10 * exy)) + 0.5 * min(max(depth / DEPTH_SUCCESS, 0.0), 1.0)
        )
        return float(r), info


class PegInsertExpert(Expert):
    """Deliberately cautious: carry the peg to 2 cm above the hole while turning it to the hole's yaw (mod 90
    deg), align the peg's *bottom point* with the hole axis to < 0.8 mm and the yaw to < 0.025 rad, pause until
    the gripper has settled (speed < 1 cm/s), then descend at only 2 mm per step while re-centring. If the peg
    ends up on the rim (low but misaligned) it backs up and re-aligns. Every decision is recomputed from the
    current state, so it recovers from any pose where the peg is still held."""

    HOVER = 0.02  # peg bottom this far above the hole's top before the descent
    DESCENT = 0.002  # m per step in the final descent (the slow part)
    ALIGN_TOL = 0.0008
    YAW_TOL = 0.025
    SETTLE_SPEED = 0.01  # m/s

    def _act(self):
        env = self.env
        d = env.data
        a = env._peg_qadr
        bot = env.peg_bottom().copy()
        hole = env.hole_pos
        e = hole[:2] - bot[:2]
        exy = float(np.hypot(*e))
        dyaw = wrap(4 * (env.hole_yaw - yaw_from_quat(d.qpos[a + 3 : a + 7]))) / 4
        top = HOLE_DEPTH
        hover_z = top + self.HOVER
        inside = bot[2] < top - 0.002 and exy < CLEAR + 0.001
        if inside:  # in the hole: keep centring, keep going down slowly
            return self._move((e[0], e[1], -self.DESCENT), 1.0, dyaw)
        if bot[2] < top + 0.001 and (
            exy > CLEAR + 0.0005 or abs(dyaw) > 0.06
        ):  # on the rim / jammed: back up
            return self._move((0.3 * e[0], 0.3 * e[1], 0.006), 1.0, dyaw)
        if exy > 0.004:  # transport at hover height (go up first if low and far)
            dz = hover_z - bot[2]
            if bot[2] < hover_z - 0.005 and exy > 0.01:
                return self._move((0, 0, dz), 1.0, dyaw)
            step = min(1.0, 0.015 / exy)
            return self._move((e[0] * step, e[1] * step, dz), 1.0, dyaw)
        speed = float(np.linalg.norm(d.qvel[:3]))
        if (
            exy > self.ALIGN_TOL or abs(dyaw) > self.YAW_TOL or speed > self.SETTLE_SPEED
        ):  # fine align / pause to settle
            return self._move((0.7 * e[0], 0.7 * e[1], min(0.0, hover_z - bot[2])), 1.0, dyaw)
        return self._move((e[0], e[1], -self.DESCENT), 1.0, dyaw)
