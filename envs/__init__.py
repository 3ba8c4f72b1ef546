"""robolearn's MuJoCo task suite: Lift, PushT, ReachAround, PegInsert (ids ``robolearn/<Task>-v0``; PushT also
``robolearn/PushT-v1``, the same task with a Markov scripted expert that BC can imitate).

``register_all()`` registers the four ids with Gymnasium (idempotent; ``import robolearn`` calls it) and
``make_expert(env, noise, seed)`` returns the task's closed-loop scripted expert.
"""

from __future__ import annotations

TASKS = {
    # id: (entry point, max_episode_steps)
    "robolearn/Lift-v0": ("robolearn_envs.lift:LiftEnv", 100),
    "robolearn/PushT-v0": ("robolearn_envs.push_t:PushTEnv", 200),
    "robolearn/PushT-v1": ("robolearn_envs.push_t:PushTEnvV1", 200),  # v0 with a Markov scripted expert
    "robolearn/ReachAround-v0": ("robolearn_envs.reach_around:ReachAroundEnv", 60),
    "robolearn/PegInsert-v0": ("robolearn_envs.peg_insert:PegInsertEnv", 100),
}


# Behaviour-cloning settings a task recommends, chosen by measurement (README "PushT"). `robolearn train` fills
# the fields a user left unset from here (TrainConfig.task_defaults); "encoder" / "head_cfg" apply to a
# policy section only while that whole section is at its defaults. PushT-v1's expert is a discontinuous
# function of the block-frame geometry: one observation per step, no chunking, z-scored inputs without the
# jittering dims, and wider ReLU MLPs fit it (per-step MSE: 0-6% with the generic defaults, 48% with these).
BC_DEFAULTS: dict[str, dict] = {
    "robolearn/PushT-v1": {
        "To": 1,
        "Tp": 1,
        "Ta": 1,
        "obs_keys": ["block_pos", "block_yaw", "eef_in_block", "eef_pos"],
        "obs_normalizer": "meanstd",
        "encoder": {"mlp_hidden": [512, 512], "activation": "relu"},
        "head_cfg": {
            "mse": {"hidden": [512, 512], "activation": "relu"},
            "flow": {"denoiser": "mlp"},
            "diffusion": {"denoiser": "mlp"},
        },
    },
}


def register_all() -> None:
    import gymnasium as gym

    for env_id, (entry, steps) in TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, max_episode_steps=steps)
    from robolearn_envs import suites

    suites.register_all()  # metaworld/<task>-v3 when the `suites` extra is installed


def make_expert(env, noise: float = 0.0, seed: int | None = None):
    """The scripted expert for a robolearn task env (wrapped or not)."""
    from robolearn_envs import suites

    if suites.find_adapter(env) is not None:
        return suites.make_expert(env, noise=noise, seed=seed)
    u = env.unwrapped
    from robolearn_envs.lift import LiftEnv, LiftExpert
    from robolearn_envs.peg_insert import PegInsertEnv, PegInsertExpert
    from robolearn_envs.push_t import PushTEnv, PushTEnvV1, PushTExpert, PushTExpertV1
    from robolearn_envs.reach_around import ReachAroundEnv, ReachAroundExpert

    for cls, expert in (
        (LiftEnv, LiftExpert),
        (PushTEnvV1, PushTExpertV1),  # before PushTEnv: v1 subclasses it
        (PushTEnv, PushTExpert),
        (ReachAroundEnv, ReachAroundExpert),
        (PegInsertEnv, PegInsertExpert),
    ):
        if isinstance(u, cls):
            return expert(env, noise=noise, seed=seed)
    raise ValueError(f"no scripted expert for {type(u).__name__}; robolearn tasks: {sorted(TASKS)}")


__all__ = ["TASKS", "BC_DEFAULTS", "register_all", "make_expert"]
