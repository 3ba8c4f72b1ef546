"""robolearn: demonstrations -> behaviour cloning -> DAgger / interventions -> SAC -> evaluation.

The Python API (docs/api.md; the `robolearn` CLI wraps the same functions):

    record(env=..., episodes=..., out=...)            -> summary dict
    train(data=..., policy="flow", out=..., steps=...) -> RunResult(out, checkpoint, metrics)
    evaluate(checkpoint, episodes=50, out=...)        -> results dict (results.json)
    dagger(policy=..., data=..., out=..., rounds=...)  -> results dict
    finetune(policy=..., demos=..., out=..., steps=...) -> RunResult
    run_loop(env=..., policy=..., out=...)            -> report dict
    load_policy(path)                                 -> Agent with reset() and act(obs) -> action
"""

import os

# Headless offscreen rendering by default (EGL via Mesa works on CPU-only machines); users may override.
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

__version__ = "0.1.0"


def _register_envs() -> None:
    # `import robolearn` registers every robolearn/... task id with gymnasium.
    import robolearn_envs

    robolearn_envs.register_all()


_register_envs()

from robolearn.api import (  # noqa: E402  (after the env registration above)
    Agent,
    RunResult,
    dagger,
    evaluate,
    finetune,
    load_policy,
    record,
    run_loop,
    train,
)

__all__ = [
    "record",
    "train",
    "evaluate",
    "dagger",
    "finetune",
    "run_loop",
    "load_policy",
    "Agent",
    "RunResult",
    "__version__",
]
