"""The field's task suites in robolearn's loop: Meta-World and gym-hil (the optional extra ``suites``:
``pip install -c constraints.txt -e '.[suites]'``).

* ``metaworld/<task>-v3`` (ours, registered for Meta-World's 50 v3 tasks when ``metaworld`` is installed):
  Meta-World's MT1 env for the task, adapted (``robolearn_envs.suites.metaworld_env``); ``expert=scripted`` is
  Meta-World's own scripted policy for the task.
* ``gym_hil/PandaPickCubeBase-v0``, ``gym_hil/PandaArrangeBoxesBase-v0`` (gym-hil's ids, registered by
  ``import gym_hil``): robolearn's ``make_env`` wraps them in ``GymHilAdapter``
  (``robolearn_envs.suites.gym_hil_env``); ``expert=scripted`` on PandaPickCube is our ``PandaPickExpert``.

Every adapter gives Dict observations of named float32 low-dim keys, a float32 Box action space,
``info["is_success"]`` and ``get_state()`` / ``set_state()`` (which robolearn's store records as ``states``).
"""

from __future__ import annotations

import importlib.util
import logging

# Meta-World 3.1.1's v3 tasks (metaworld.env_dict.ALL_V3_ENVIRONMENTS; tests check the two agree). Listed here
# so that registering the ids does not import Meta-World (0.5 s) on every robolearn start.
METAWORLD_TASKS = (
    "assembly", "basketball", "bin-picking", "box-close", "button-press-topdown", "button-press-topdown-wall",
    "button-press", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push", "dial-turn",
    "disassemble", "door-close", "door-lock", "door-open", "door-unlock", "hand-insert", "drawer-close",
    "drawer-open", "faucet-open", "faucet-close", "hammer", "handle-press-side", "handle-press",
    "handle-pull-side", "handle-pull", "lever-pull", "pick-place-wall", "pick-out-of-hole", "pick-place",
    "plate-slide", "plate-slide-side", "plate-slide-back", "plate-slide-back-side", "peg-insert-side",
    "peg-unplug-side", "soccer", "stick-push", "stick-pull", "push", "push-wall", "push-back", "reach",
    "reach-wall", "shelf-place", "sweep-into", "sweep", "window-open", "window-close",
)  # fmt: skip
MT10_TASKS = (
    "reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
    "peg-insert-side", "window-open", "window-close",
)  # fmt: skip
METAWORLD_IDS = tuple(f"metaworld/{t}-v3" for t in METAWORLD_TASKS)
log = logging.getLogger(__name__)

GYM_HIL_IDS = ("gym_hil/PandaPickCubeBase-v0", "gym_hil/PandaArrangeBoxesBase-v0")
PREFIXES = ("metaworld/", "gym_hil/")
EXTRA_HINT = "install the optional extra: pip install -c constraints.txt -e '.[suites]'"


def available(pkg: str) -> bool:
    return importlib.util.find_spec(pkg) is not None


def is_suite_id(env_id: str) -> bool:
    return str(env_id).startswith(PREFIXES)


def register_all() -> None:
    """Register ``metaworld/<task>-v3`` (when Meta-World is installed) and gym-hil's own ids (when gym-hil is
    installed: importing it registers them, ~0.2 s), so `gym.registry` lists every suite id after
    `import robolearn`. Idempotent."""
    import gymnasium as gym

    if available("gym_hil") and GYM_HIL_IDS[0] not in gym.registry:
        try:
            import gym_hil  # noqa: F401
        except Exception as e:  # noqa: BLE001 - a broken optional extra must not break `import robolearn`
            log.warning("gym-hil is installed but does not import (%s); gym_hil/... ids unavailable", e)
    if not available("metaworld"):
        return
    from robolearn_envs.suites.metaworld_env import MAX_EPISODE_STEPS

    for task, env_id in zip(METAWORLD_TASKS, METAWORLD_IDS):
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="robolearn_envs.suites.metaworld_env:make_metaworld",
                max_episode_steps=MAX_EPISODE_STEPS,
                kwargs={"task": f"{task}-v3"},
            )


def ensure_registered(env_id: str) -> None:
    """Make ``env_id`` known to Gymnasium if it is a suite id whose package is installed (gym-hil registers its
    ids on import, which also needs MUJOCO_GL set: gym-hil opens a renderer in every env's constructor)."""
    if str(env_id).startswith("gym_hil/") and available("gym_hil"):
        import gym_hil  # noqa: F401
    elif str(env_id).startswith("metaworld/"):
        register_all()


def missing_hint(env_id: str) -> str:
    """Why a suite id is not registered (empty when it is not a suite id)."""
    if str(env_id).startswith("metaworld/"):
        if not available("metaworld"):
            return f"metaworld/... ids need Meta-World: {EXTRA_HINT}"
        return f"Meta-World ids: metaworld/<task>-v3 for <task> in {list(METAWORLD_TASKS)}"
    if str(env_id).startswith("gym_hil/"):
        if not available("gym_hil"):
            return f"gym_hil/... ids need gym-hil: {EXTRA_HINT}"
        return f"gym-hil ids robolearn adapts: {list(GYM_HIL_IDS)}"
    return ""


def adapt(env, env_id: str):
    """robolearn's adapter around ``gym.make(env_id)`` for a suite id (Meta-World's ids come adapted)."""
    if str(env_id).startswith("gym_hil/"):
        if env_id not in GYM_HIL_IDS:
            raise ValueError(f"env={env_id!r}: robolearn adapts the state-observation base ids {list(GYM_HIL_IDS)}")
        from robolearn_envs.suites.gym_hil_env import wrap

        return wrap(env)
    return env


def find_adapter(env):
    """The suite adapter under a wrapper chain (it is the unwrapped env), or None."""
    u = getattr(env, "unwrapped", None)
    return u if getattr(u, "is_suite_adapter", False) else None


def make_expert(env, noise: float = 0.0, seed: int | None = None):
    """The scripted expert of a suite env: Meta-World's policy for the task, or our PandaPickCube expert."""
    spec_id = env.spec.id if env.spec is not None else "?"
    if spec_id.startswith("metaworld/"):
        from robolearn_envs.suites.metaworld_env import MetaWorldExpert

        return MetaWorldExpert(env, noise=noise, seed=seed)
    if spec_id == "gym_hil/PandaPickCubeBase-v0":
        from robolearn_envs.suites.gym_hil_env import PandaPickExpert

        return PandaPickExpert(env, noise=noise, seed=seed)
    raise ValueError(
        f"env={spec_id!r} has no scripted expert; suite experts: metaworld/<task>-v3 (Meta-World's policies), "
        "gym_hil/PandaPickCubeBase-v0"
    )


__all__ = [
    "METAWORLD_TASKS", "MT10_TASKS", "METAWORLD_IDS", "GYM_HIL_IDS", "is_suite_id", "register_all",
    "ensure_registered", "missing_hint", "adapt", "find_adapter", "make_expert", "available",
]  # fmt: skip
