"""Teleoperation: record demonstrations by hand and take over from a policy (human interventions).

`record_teleop(cfg)` (what `robolearn record teleop=keyboard ...` runs), `HumanOverride(env, device)` for
DAgger-style interventions, and the devices (`make_device("keyboard" | "gamepad" | "spacemouse")`).
Imports are lazy so that `import robolearn.teleop` needs neither pygame nor a display. See docs/teleop.md.
"""

__all__ = ["record_teleop", "HumanOverride", "make_device", "DeviceState", "DeviceError", "NoDisplayError"]


def __getattr__(name):
    if name in ("record_teleop", "HumanOverride"):
        from robolearn.teleop import app

        return getattr(app, name)
    if name in ("make_device", "DeviceState", "DeviceError"):
        from robolearn.teleop import devices

        return getattr(devices, name)
    if name == "NoDisplayError":
        from robolearn.teleop.window import NoDisplayError

        return NoDisplayError
    raise AttributeError(name)
