"""robolearn: demonstrations -> behaviour cloning -> DAgger / interventions -> SAC -> evaluation."""

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
