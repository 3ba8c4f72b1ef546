"""robolearn/PushT-v0: push a T-shaped block into a fixed target pose (after diffusion_policy's PushT)."""

from __future__ import annotations

import mujoco
import numpy as np
from robolearn_envs.base import Expert, RobolearnMujocoEnv, make_xml, wrap, yaw_from_quat

# T geometry in the block frame (origin = centre of mass): bar 20 x 5 cm on top, stem 5 x 15 cm below it.
BAR_HX, BAR_HY = 0.10, 0.025
STEM_HX, STEM_HY = 0.025, 0.075
_A_BAR, _A_STEM = 4 * BAR_HX * BAR_HY, 4 * STEM_HX * STEM_HY
BAR_Y = (_A_STEM * (BAR_HY + STEM_HY)) / (_A_BAR + _A_STEM)  # bar centre y (so that the COM is at 0)
STEM_Y = BAR_Y - BAR_HY - STEM_HY
BLOCK_HZ = 0.015
GOAL = np.array([0.0, 0.0, np.pi / 4])  # x, y, yaw of the target pose
SUCCESS_COVERAGE = 0.95
GRID = 0.005  # coverage grid spacing (m)
Z_LOW = 0.024  # eef height while pushing: fingertips 4 mm above the table
Z_HIGH = 0.062  # eef height to pass over the block (fingertips 1.2 cm above its top)


def _t_grid(spacing: float) -> np.ndarray:
    """Cell centres of a regular grid covering the T (block frame), shape (N, 2)."""
    pts = []
    for cx, cy, hx, hy in ((0.0, BAR_Y, BAR_HX, BAR_HY), (0.0, STEM_Y, STEM_HX, STEM_HY)):
        xs = np.arange(-hx + spacing / 2, hx, spacing) + cx
        ys = np.arange(-hy + spacing / 2, hy, spacing) + cy
        gx, gy = np.meshgrid(xs, ys)
        pts.append(np.stack([gx.ravel(), gy.ravel()], 1))
    return np.concatenate(pts)


def in_t(x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Whether block-frame points lie inside the T (grown by ``margin``)."""
    bar = (np.abs(x) <= BAR_HX + margin) & (np.abs(y - BAR_Y) <= BAR_HY + margin)
    stem = (np.abs(x) <= STEM_HX + margin) & (np.abs(y - STEM_Y) <= STEM_HY + margin)
    return bar | stem


_WORLD = f"""
    <body name="block" pos="0 0 {BLOCK_HZ}">
      <freejoint name="block"/>
      <geom name="bar" type="box" pos="0 {BAR_Y} 0" size="{BAR_HX} {BAR_HY} {BLOCK_HZ}" mass="0.06"
            friction="0.5 0.005 0.0001" rgba="0.45 0.55 0.85 1"/>
      <geom name="stem" type="box" pos="0 {STEM_Y} 0" size="{STEM_HX} {STEM_HY} {BLOCK_HZ}" mass="0.045"
            friction="0.5 0.005 0.0001" rgba="0.45 0.55 0.85 1"/>
    </body>
    <body name="goal" pos="{GOAL[0]} {GOAL[1]} 0.0005" euler="0 0 {GOAL[2]}">
      <geom type="box" pos="0 {BAR_Y} 0" size="{BAR_HX} {BAR_HY} 0.0005" contype="0" conaffinity="0" rgba="0.2 0.8 0.2 0.45"/>
      <geom type="box" pos="0 {STEM_Y} 0" size="{STEM_HX} {STEM_HY} 0.0005" contype="0" conaffinity="0" rgba="0.2 0.8 0.2 0.45"/>
    </body>
"""


class PushTEnv(RobolearnMujocoEnv):
    """Push a T block (bar 20 x 5 cm, stem 5 x 15 cm, 3 cm tall, 105 g) into the fixed green target pose
    (x, y, yaw) = (0, 0, pi/4) with the closed gripper used as a pusher.

    Success as in diffusion_policy's PushT: coverage = area(block T intersect target T) / area(T) > 0.95. The
    area is estimated on a fixed 5 mm grid of cell centres covering the block's T (about 700 points), each
    tested against the target T: coverage = fraction of points inside the target.

    Reset: block xy ~ U[-0.12, 0.12]^2, yaw ~ U[-pi, pi] (re-drawn while coverage > 0.8); eef at
    (U(-0.25, 0.25), -0.3, 0.08) so it starts clear of the block.

    Observation (state keys): ``eef_pos`` (3), ``eef_yaw`` (1), ``gripper`` (2), ``block_pos`` (3),
    ``block_yaw`` (2: cos, sin), ``goal`` (4: x, y, cos yaw, sin yaw of the target), ``coverage`` (1).
    Action: 5-D for a uniform interface, but ``dyaw`` and ``gripper`` are ignored (yaw held at 0, gripper
    held closed): only ``dx, dy, dz`` act; z lets the pusher lift over the block.

    Reward (dense): ``clip(coverage / 0.95, 0, 1)`` (diffusion_policy's reward). Sparse: 1.0 on success
    else 0. ``terminated`` on success. ``max_episode_steps`` = 200.

    Version history:
        v0: initial version.
        v1: the same task (v0's reset distribution, dynamics, observation, reward and 0.95 coverage threshold);
            only its scripted expert changed. v0's expert keeps the chosen push point between steps with
            hysteresis, memory the observation does not carry, so no policy over observations could copy it
            (every BC head scored 0-4% on v0). v1's expert (`PushTExpertV1`) is Markov: its action is a
            function of the current observation (eef_pos, block_pos, block_yaw) alone.
            2026-12-07: v1 gains the state key ``eef_in_block`` (see PushTEnvV1), a function of existing keys;
            nothing else changes. Datasets recorded before lack it and train as before; checkpoints trained on
            them still evaluate (a policy reads only its own keys).
        Both report ``info["score"] = clip(coverage / 0.95, 0, 1)``, whose best value per episode, averaged
        over episodes, is diffusion_policy's PushT score (`robolearn eval` reports it as ``score``).
    """

    XML = make_xml("push_t", "", _WORLD)
    DEFAULT_CAMERA = "front"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        m = self.model
        self._block_qadr = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "block")]
        self._grid = _t_grid(GRID)
        self._gx = np.ascontiguousarray(self._grid[:, 0])
        self._gy = np.ascontiguousarray(self._grid[:, 1])
        self._cg, self._sg = np.cos(GOAL[2]), np.sin(GOAL[2])

    FIXED_ACTION = {3: 0.0, 4: 1.0}  # dyaw and gripper are ignored (yaw 0, gripper closed)

    def block_pose(self) -> tuple[float, float, float]:
        q = self.data.qpos
        a = self._block_qadr
        return float(q[a]), float(q[a + 1]), yaw_from_quat(q[a + 3 : a + 7])

    def coverage(self, pose=None) -> float:
        x, y, th = self.block_pose() if pose is None else pose
        # block frame -> goal frame: p_g = R(-g) (R(th) p + t - g)
        dth = th - GOAL[2]
        c, s = np.cos(dth), np.sin(dth)
        tx, ty = x - GOAL[0], y - GOAL[1]
        tgx = self._cg * tx + self._sg * ty
        tgy = -self._sg * tx + self._cg * ty
        px = c * self._gx - s * self._gy + tgx
        py = s * self._gx + c * self._gy + tgy
        return float(np.count_nonzero(in_t(px, py))) / len(px)

    def _task_obs_space(self):
        return {"block_pos": 3, "block_yaw": 2, "goal": 4, "coverage": 1}

    def _task_reset(self, rng):
        q = self.data.qpos
        a = self._block_qadr
        while True:
            x, y = rng.uniform(-0.12, 0.12, 2)
            th = rng.uniform(-np.pi, np.pi)
            if self.coverage((x, y, th)) <= 0.8:
                break
        q[a : a + 3] = (x, y, BLOCK_HZ)
        q[a + 3 : a + 7] = (np.cos(th / 2), 0.0, 0.0, np.sin(th / 2))
        self._set_robot((rng.uniform(-0.25, 0.25), -0.3, Z_HIGH), 0.0, 0.0)

    def _task_obs(self, b):
        q = self.data.qpos
        a = self._block_qadr
        b["block_pos"][:] = q[a : a + 3]
        th = yaw_from_quat(q[a + 3 : a + 7])
        b["block_yaw"][0] = np.cos(th)
        b["block_yaw"][1] = np.sin(th)
        b["goal"][:] = (GOAL[0], GOAL[1], self._cg, self._sg)
        b["coverage"][0] = self._last_cov

    def _get_rew(self, action):
        cov = self.coverage()
        self._last_cov = cov
        success = bool(cov > SUCCESS_COVERAGE)
        # score: diffusion_policy's per-step PushT metric (its reported score is the episode's best of it)
        info = {"is_success": success, "coverage": cov, "score": min(cov / SUCCESS_COVERAGE, 1.0)}
        if self.reward_type == "sparse":
            return float(success), info
        return float(min(cov / SUCCESS_COVERAGE, 1.0)), info

    _last_cov = 0.0  # coverage computed by _get_rew (called before _get_obs in reset and step)


def _candidates():
    """Push points on the T's outline (block frame) with outward normals, spaced 1.5 cm."""
    c, n = [], []
    top, under = BAR_Y + BAR_HY, BAR_Y - BAR_HY
    for x in np.arange(-0.09, 0.0901, 0.015):
        c.append((x, top)), n.append((0, 1))
    for s in (-1, 1):
        c.append((s * BAR_HX, BAR_Y)), n.append((s, 0))
        for x in (0.045, 0.06, 0.075, 0.09):
            c.append((s * x, under)), n.append((0, -1))
        for y in np.arange(STEM_Y - STEM_HY + 0.012, under - 0.0149, 0.015):
            c.append((s * STEM_HX, y)), n.append((s, 0))
    for x in (-0.012, 0.0, 0.012):
        c.append((x, STEM_Y - STEM_HY)), n.append((0, -1))
    return np.array(c, float), np.array(n, float)


class PushTExpert(Expert):
    """Greedy quasi-static pushing. Each call, for ~50 candidate push points on the T's outline, the block
    twist that pushing there would cause is predicted with an ellipsoidal limit surface (v ~ push direction,
    omega ~ torque / c^2) and scored by its cosine with the pose error (dx, dy, c * dyaw); the best point is
    kept with hysteresis. The pusher then goes to a pre-push point 1.2 cm outside that point (lifting over the
    block when the straight path would hit it), descends, and pushes a distance proportional to the remaining
    error. Everything is recomputed from the current state; the only memory is the chosen point (hysteresis),
    which is re-validated every call."""

    GAP = 0.011 + 0.012  # pusher half width + clearance
    ANGLE_W = 2.0  # weight of the yaw error (coverage is more sensitive to yaw than to xy)

    def __init__(self, env, noise=0.0, seed=None):
        super().__init__(env, noise, seed)
        self._c, self._n = _candidates()
        g = _t_grid(0.01)
        self._rg = float(np.sqrt(np.mean(np.sum(g**2, 1))))  # radius of gyration (limit-surface constant)
        self._cur = None

    def reset(self, seed=None):
        super().reset(seed)
        self._cur = None

    def _act(self):
        env = self.env
        x, y, th = env.block_pose()
        p = env.data.qpos[:3]
        rg = self._rg
        e = np.array([GOAL[0] - x, GOAL[1] - y, self.ANGLE_W * rg * wrap(GOAL[2] - th)])
        en = float(np.linalg.norm(e))
        c, s = np.cos(th), np.sin(th)
        R = np.array([[c, -s], [s, c]])
        cw = self._c @ R.T  # contact points relative to the COM (world orientation)
        nw = self._n @ R.T
        d = -nw
        torque = cw[:, 0] * d[:, 1] - cw[:, 1] * d[:, 0]
        tw = np.column_stack([d, torque / rg])
        score = (tw @ e) / (np.linalg.norm(tw, axis=1) * max(en, 1e-9))
        com = np.array([x, y])
        i = self._select(score, com, cw, nw, p)
        cpt = com + cw[i]
        n = nw[i]
        t = np.array([-n[1], n[0]])
        rel = p[:2] - cpt
        along, lateral = float(rel @ n), float(rel @ t)
        low = p[2] < Z_LOW + 0.012
        if low and abs(lateral) < 0.006 and -0.004 < along < self.GAP + 0.012:
            step = float(np.clip(0.6 * en, 0.003, 0.02))
            disp = -n * step - t * lateral
            return self._move((disp[0], disp[1], Z_LOW - p[2]), 1.0)
        pre = cpt + n * self.GAP
        dxy = pre - p[:2]
        dist = float(np.hypot(*dxy))
        if low:
            if self._path_clear(p[:2], pre, com, R):
                k = min(1.0, 0.02 / max(dist, 1e-9))
                return self._move((dxy[0] * k, dxy[1] * k, Z_LOW - p[2]), 1.0)
            return self._move((0.0, 0.0, Z_HIGH - p[2]), 1.0)
        if dist < 0.005:  # above the pre-push point: descend
            return self._move((dxy[0], dxy[1], Z_LOW - p[2]), 1.0)
        if p[2] < Z_HIGH - 0.01:  # part-way up, not above the target: go up (over the block)
            return self._move((0.0, 0.0, Z_HIGH - p[2]), 1.0)
        k = min(1.0, 0.02 / dist)
        return self._move((dxy[0] * k, dxy[1] * k, Z_HIGH - p[2]), 1.0)

    def _select(self, score, com, cw, nw, p) -> int:
        """The push point: the best-scoring candidate, kept with hysteresis while it stays good enough."""
        best = int(np.argmax(score))
        if self._cur is None or score[self._cur] < 0.3 or score[self._cur] < score[best] - 0.25:
            self._cur = best
        return self._cur

    @staticmethod
    def _path_clear(a, b, com, R) -> bool:
        ts = np.linspace(0.0, 1.0, 9)[:, None]
        pts = (a + (b - a) * ts - com) @ R  # world -> block frame
        return not np.any(in_t(pts[:, 0], pts[:, 1], margin=0.017))


class PushTEnvV1(PushTEnv):
    """`robolearn/PushT-v1`: PushT-v0's task with a Markov scripted expert (see PushTEnv's version history),
    and one more state key, ``eef_in_block`` (2): the pusher's x, y in the block's own frame (origin at the
    block's centre of mass, axes along the T). It is a function of keys already there (``eef_pos``,
    ``block_pos``, ``block_yaw``); an MLP given only those has to learn the rotation into the block frame, in
    which the expert's choice of push point is made, and fits the expert less well: per-step MSE, 200 demos,
    held-out 50 episodes, 18% without it vs 42% with it (README, "PushT")."""

    def _task_obs_space(self):
        return {**super()._task_obs_space(), "eef_in_block": 2}

    def _task_obs(self, b):
        super()._task_obs(b)
        c, s = b["block_yaw"]
        dx, dy = self.data.qpos[0] - b["block_pos"][0], self.data.qpos[1] - b["block_pos"][1]
        b["eef_in_block"][0] = c * dx + s * dy
        b["eef_in_block"][1] = -s * dx + c * dy


class PushTExpertV1(PushTExpert):
    """PushT-v0's greedy pusher without memory, so that behaviour cloning can imitate it.

    Two changes make the action a function of the current observation alone:
    1. the push point is chosen as argmax over candidates of ``score - DIST_W * |pre-push point - pusher|``
       (metres) instead of being kept with hysteresis: the pusher's own position, which the observation holds,
       plays the part of the memory (the point being approached or pushed stays the best one), so the choice
       no longer flips between near-equal points;
    2. actions are displacements of the measured eef pose (``dpos / scale``), not of the controller's
       commanded target (simulator state the observation does not hold).
    With DIST_W = 2 it succeeds 100/100 on demo seeds 10_000_000.. (v0's expert: 100/100; v0's expert with its
    hysteresis simply removed: 42/100)."""

    DIST_W = 2.0

    def __init__(self, env, noise=0.0, seed=None):
        super().__init__(env, noise, seed)

    def _select(self, score, com, cw, nw, p):
        pre = com + cw + nw * self.GAP
        return int(np.argmax(score - self.DIST_W * np.linalg.norm(pre - p[:2], axis=1)))

    def _move(self, dpos, gripper: float, dyaw: float = 0.0) -> np.ndarray:
        s = self.env._scale
        a = np.zeros(5)
        a[:3] = np.asarray(dpos) / s[:3]
        a[3] = dyaw / s[3]
        a[4] = gripper
        return np.clip(a, -1.0, 1.0)
