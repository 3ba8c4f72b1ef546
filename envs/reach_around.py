"""robolearn/ReachAround-v0: a deliberately multimodal reaching task (go left or right around a pillar)."""

from __future__ import annotations

import hashlib
import math

import mujoco
import numpy as np
from robolearn_envs.base import Expert, RobolearnMujocoEnv, make_xml

PILLAR_HALF = (0.06, 0.03, 0.32)  # x, y, z half sizes; top at 0.64 m, above the gantry's reach
GOAL_TOL = 0.03
Z0 = 0.10

_WORLD = f"""
    <body name="pillar" pos="0 0 {PILLAR_HALF[2]}">
      <geom name="pillar" type="box" size="{PILLAR_HALF[0]} {PILLAR_HALF[1]} {PILLAR_HALF[2]}" rgba="0.3 0.3 0.75 1"/>
    </body>
    <body name="goal" mocap="true" pos="0 0.2 {Z0}">
      <geom name="goal" type="sphere" size="{GOAL_TOL}" contype="0" conaffinity="0" rgba="0.1 0.8 0.1 0.35"/>
    </body>
"""


class ReachAroundEnv(RobolearnMujocoEnv):
    """Move the gripper from in front of a tall pillar (y < 0) to a goal sphere behind it (y > 0).

    The pillar (12 cm wide, 6 cm deep, 64 cm tall) cannot be passed over (the gantry's z range ends at 40 cm):
    the way is LEFT or RIGHT around it. Touching the pillar with any robot geom ends the episode as a failure
    (``terminated=True``, ``info["is_failure"]=True``, ``info["is_success"]=False``).

    Reset: eef at (0, -0.2 + U(-.02, .02), 0.10), gripper closed, yaw 0; goal (a mocap body) at
    (0, 0.2 + U(-.02, .02), 0.10). Success: |eef - goal| < 3 cm.

    Observation (state keys): ``eef_pos`` (3), ``eef_yaw`` (1), ``gripper`` (2), ``goal`` (3),
    ``goal_to_eef`` (3 = eef - goal).
    Action: 5-D for a uniform interface, but only ``dx, dy, dz`` act: ``dyaw`` and ``gripper`` are ignored
    (yaw held at 0, gripper held closed).

    Reward (dense): ``1 - tanh(5 |eef - goal|)``, 1.0 on success, -1.0 on collision. Sparse: 1.0 on success
    else 0. ``max_episode_steps`` = 60.

    Version history:
        v0: initial version. Later change to v0's scripted expert only (obs, reward and dynamics unchanged):
            its side is no longer drawn from the expert's RNG at ``reset`` (hidden state: a restored state
            did not say which side the labels follow) but is a 50/50 function of the goal's exact position
            (``side_of``), so the side recorded for a demo seed differs from before. Demo seeds
            10_000_000..10_000_099: 100/100 success before (49 left) and after (52 left).
    """

    XML = make_xml("reach_around", "", _WORLD)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        m = self.model
        self._pillar = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "pillar")}
        self._goal_mocap = m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "goal")]

    FIXED_ACTION = {3: 0.0, 4: 1.0}  # dyaw and gripper are ignored (yaw 0, gripper closed)

    @property
    def goal(self) -> np.ndarray:
        return self.data.mocap_pos[self._goal_mocap]

    def _task_obs_space(self):
        return {"goal": 3, "goal_to_eef": 3}

    def _task_reset(self, rng):
        # Only the start's distance is random, not its side: a lateral offset (or a random goal) would tell a
        # learner which way the expert went in each demo, and a regressor could memorise that instead of
        # facing the 50/50 fork this task is about.
        self._set_robot((0.0, -0.2 + rng.uniform(-0.02, 0.02), Z0), 0.0, 0.0)
        self.data.mocap_pos[self._goal_mocap] = (0.0, 0.2 + rng.uniform(-0.02, 0.02), Z0)

    def _task_obs(self, b):
        g = self.data.mocap_pos[self._goal_mocap]
        b["goal"][:] = g
        np.subtract(self.data.qpos[:3], g, out=b["goal_to_eef"])

    def _get_rew(self, action):
        q, g = self.data.qpos, self.data.mocap_pos[self._goal_mocap]
        dist = math.sqrt((q[0] - g[0]) ** 2 + (q[1] - g[1]) ** 2 + (q[2] - g[2]) ** 2)
        collided = self._robot_touches(self._pillar)
        success = bool(dist < GOAL_TOL and not collided)
        info = {"is_success": success, "is_failure": collided}
        if self.reward_type == "sparse":
            return float(success), info
        r = -1.0 if collided else (1.0 if success else 1.0 - math.tanh(5.0 * dist))
        return float(r), info


def side_of(goal) -> str:
    """The expert's side for an episode: a 50/50 function of the goal's exact position (float64 bits, a
    seeded quantity that lives in the simulator: the goal mocap body), so it is simulator state, not expert
    memory, and restoring a saved state restores the side. The float32 observation does not carry those bits,
    so a learner still faces a 50/50 fork."""
    b = np.asarray(goal, np.float64)[:2].tobytes()
    return "left" if hashlib.blake2b(b, digest_size=1).digest()[0] & 1 else "right"


class ReachAroundExpert(Expert):
    """Waypoint follower around the pillar on the side given by ``mode`` ("left" = -x, "right" = +x): a 50/50
    function of the episode's goal position (``side_of``), i.e. of the simulator state, unless fixed with
    ``mode=`` at construction. Closed loop: the active waypoint is chosen from the current
    eef position every call (before the fork: straight ahead; then sidestep; y < -0.07: corner A = (s*0.125, -0.05); y < 0.07: corner B = (s*0.125, 0.09);
    else the goal), and the eef moves straight toward it at up to 2 cm per step. If the eef is already clearly
    on one side of the pillar (|x| > 4 cm once past y = -0.16) it keeps to that side instead of crossing in
    front of the pillar (safe DAgger labels); that is the only way the state overrides the drawn mode.

    Both modes first drive straight ahead to the decision line y = -0.12 (identical states and actions), then
    sidestep (+-x, drifting +y): at the fork the same state carries both labels 50/50, so a mean-regression
    policy's action is straight +y - into the pillar - while a multimodal policy picks a side.
    """

    SIDE_X = 0.125  # pillar half width 6 cm + gripper half width 1.2 cm + ~5 cm clearance
    Y_A, Y_B = -0.05, 0.09
    Y_DECIDE = -0.12  # the fork: both modes reach this line on the same straight path

    def __init__(self, env, noise=0.0, seed=None, mode: str | None = None):
        super().__init__(env, noise, seed)
        self._forced = mode

    @property
    def mode(self) -> str:
        """The side of the episode the env is in (read after its reset)."""
        return self._forced or side_of(self.env.goal)

    def _act(self):
        env = self.env
        p = env.data.qpos[:3]
        s = -1.0 if self.mode == "left" else 1.0
        if -0.16 < p[1] < self.Y_B and abs(p[0]) > 0.04:
            s = float(np.sign(p[0]))
        if p[1] < self.Y_DECIDE - 0.005 and abs(p[0]) < 0.04:
            # phase 1, shared by both modes: straight ahead to the decision line
            tx, ty = p[0], self.Y_DECIDE
        elif p[1] < self.Y_A - 0.02 and abs(p[0]) < self.SIDE_X - 0.02:
            # phase 2, the fork: sidestep (drifting slightly forward) - the two modes' mean drives ahead
            tx, ty = p[0] + s * 0.02, p[1] + 0.006
        elif p[1] < self.Y_A - 0.02:
            tx, ty = s * self.SIDE_X, self.Y_A
        elif p[1] < self.Y_B - 0.02:
            tx, ty = s * self.SIDE_X, self.Y_B
        else:
            g = env.goal
            tx, ty = g[0], g[1]
        d = np.array([tx - p[0], ty - p[1], Z0 - p[2]])
        n = float(np.hypot(d[0], d[1]))
        if n > 0.02:
            d[:2] *= 0.02 / n
        return self._move(d, 1.0)
