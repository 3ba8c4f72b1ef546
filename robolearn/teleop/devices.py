"""Teleoperation input devices behind one small interface.

A device is polled once per control step (10 Hz for robolearn tasks) and never blocks::

    state = device.poll()
    state.delta      # np.ndarray (4,): dx, dy, dz, dyaw in [-1, 1] (held input: 0 when nothing is held)
    state.gripper    # -1.0 open / +1.0 closed (the action's absolute gripper command)
    state.events     # edge-triggered, since the last poll: subset of EVENTS
    state.takeover   # level: the take-over key/button is held right now (human interventions)

Devices: `KeyboardDevice` (the pygame window's key state: hold-to-move), `GamepadDevice` (pygame
joystick), `SpaceMouseDevice` (3Dconnexion, through the optional `pyspacemouse` package). `make_device(name)`
builds one by name; a device that cannot work here (no joystick plugged in, pyspacemouse or libhidapi
missing) raises `DeviceError` whose message says what is missing and how to fix it.

Keyboard bindings (camera "front": +x is screen-right, +y is away from the camera, +z up):

    W / S          +y / -y   (away from / towards the camera)
    A / D          -x / +x   (left / right)
    R / F          +z / -z   (up / down)
    Q / E          +yaw / -yaw
    hold SHIFT     fine motion (30 % speed)
    SPACE          toggle gripper (open <-> closed)
    ENTER          start / stop recording (stop saves the episode)
    M              mark the current episode successful
    BACKSPACE      discard the current recording (same scene again)
    X              reset: discard any recording, new scene (next seed)
    hold TAB       take over from the policy (interventions)
    ESC            quit (finished episodes are kept)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from robolearn.errors import UserError

EVENTS = ("start_stop", "success", "discard", "reset", "quit", "takeover_on", "takeover_off")


class DeviceError(UserError):
    """The device cannot be used here; the message says what is missing and how to fix it (a UserError: the
    CLI prints it without a traceback, exit code 2)."""


@dataclass
class DeviceState:
    delta: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    gripper: float = -1.0
    events: set[str] = field(default_factory=set)
    takeover: bool = False

    def action(self) -> np.ndarray:
        """The 5-D robolearn action [dx, dy, dz, dyaw, gripper] (float32, clipped to [-1, 1])."""
        a = np.empty(5, np.float32)
        a[:4] = np.clip(self.delta, -1.0, 1.0)
        a[4] = self.gripper
        return a


@runtime_checkable
class Device(Protocol):
    name: str
    gripper: float

    def poll(self) -> DeviceState: ...

    def handle_events(self, events: Iterable) -> None:
        """Receive the pygame events the window pumped this step (edge-triggered input)."""
        ...

    def close(self) -> None: ...


def _prepare_pygame_env() -> None:
    """Settings that must be in place before `pygame.init()` (see robolearn.teleop.window)."""
    os.environ.setdefault("SDL_FRAMEBUFFER_ACCELERATION", "0")  # else GLX BadAccess (EGL) / segfault (OSMesa)
    os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")  # leave SIGINT/SIGTERM to Python
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def import_pygame():
    _prepare_pygame_env()
    try:
        import pygame
    except ImportError:
        raise DeviceError("teleop needs pygame: pip install pygame (or pip install -e '.[teleop]')") from None
    return pygame


# ------------------------------------------------------------------------------------------- keyboard
def keyboard_bindings() -> dict:
    """{"move": {key: (dim, sign)}, "events": {key: event}, ...} with pygame key constants."""
    pg = import_pygame()
    return {
        "move": {
            pg.K_w: (1, +1.0), pg.K_s: (1, -1.0),
            pg.K_d: (0, +1.0), pg.K_a: (0, -1.0),
            pg.K_r: (2, +1.0), pg.K_f: (2, -1.0),
            pg.K_q: (3, +1.0), pg.K_e: (3, -1.0),
        },
        "fine": (pg.K_LSHIFT, pg.K_RSHIFT),
        "gripper": (pg.K_SPACE,),
        "events": {
            pg.K_RETURN: "start_stop", pg.K_KP_ENTER: "start_stop",
            pg.K_m: "success",
            pg.K_BACKSPACE: "discard",
            pg.K_x: "reset",
            pg.K_ESCAPE: "quit",
        },
        "takeover": (pg.K_TAB,),
    }


KEYBOARD_HELP = """\
keyboard (hold to move; camera "front": +x right, +y away from the camera):
  W / S  +y / -y      A / D  -x / +x      R / F  up / down      Q / E  yaw + / -
  hold SHIFT  fine motion (30 %)          SPACE  toggle gripper (open <-> closed)
  ENTER  start / stop recording (stop saves the episode)    M  mark success
  BACKSPACE  discard the recording        X  reset to a new scene
  hold TAB  take over from the policy     ESC  quit (finished episodes are kept)"""

GAMEPAD_HELP = """\
gamepad (Xbox layout): left stick x/y, right stick vertical z, right stick horizontal yaw
  A  toggle gripper   START  start / stop recording   Y  mark success   B  discard
  X  reset            hold LB  take over              BACK  quit      (keyboard keys work too)"""

SPACEMOUSE_HELP = """\
spacemouse: push/pull the cap for x/y/z, twist for yaw; left button toggles the gripper,
  right button starts / stops recording (keyboard keys work too)"""


class KeyboardDevice:
    """Hold-to-move keyboard teleop from the pygame window's key state (needs the window's focus).

    `poll(held=...)` takes any container of pygame key codes (a set or pygame's ScancodeWrapper) for tests;
    without it, `pygame.key.get_pressed()` is read. KEYDOWN events fed through `handle_events` (or
    `press(key)`) make the edge-triggered events and the gripper toggle.
    """

    name = "keyboard"
    help = KEYBOARD_HELP

    def __init__(self, speed: float = 1.0, fine: float = 0.3):
        self.bind = keyboard_bindings()
        self.speed, self.fine = float(speed), float(fine)
        self.gripper = -1.0
        self._pressed: list[int] = []
        self._takeover = False

    def handle_events(self, events: Iterable) -> None:
        pg = import_pygame()
        for ev in events:
            if ev.type == pg.KEYDOWN:
                self._pressed.append(ev.key)

    def press(self, key: int) -> None:
        self._pressed.append(key)

    def poll(self, held=None) -> DeviceState:
        if held is None:
            held = import_pygame().key.get_pressed()
        is_held: Callable[[int], bool] = (lambda k: k in held) if isinstance(held, (set, frozenset, dict)) \
            else (lambda k: bool(held[k]))
        delta = np.zeros(4, np.float32)
        for k, (dim, sign) in self.bind["move"].items():
            if is_held(k):
                delta[dim] += sign
        scale = self.speed * (self.fine if any(is_held(k) for k in self.bind["fine"]) else 1.0)
        delta = np.clip(delta * scale, -1.0, 1.0)
        events: set[str] = set()
        for k in self._pressed:
            if k in self.bind["gripper"]:
                self.gripper = -self.gripper
            elif k in self.bind["events"]:
                events.add(self.bind["events"][k])
        self._pressed.clear()
        takeover = any(is_held(k) for k in self.bind["takeover"])
        events |= _takeover_edges(self._takeover, takeover)
        self._takeover = takeover
        return DeviceState(delta, self.gripper, events, takeover)

    def close(self) -> None:
        pass


def _takeover_edges(before: bool, now: bool) -> set[str]:
    if now and not before:
        return {"takeover_on"}
    if before and not now:
        return {"takeover_off"}
    return set()


# ------------------------------------------------------------------------------------------- gamepad
class GamepadDevice:
    """pygame joystick with an Xbox-style layout (SDL's default mapping); see GAMEPAD_HELP.

    Axes: 0 left-x -> dx, 1 left-y -> -dy, 3 right-x -> -dyaw, 4 right-y -> -dz (dead zone 0.15).
    Buttons: 0 A gripper toggle, 1 B discard, 2 X reset, 3 Y success, 4 LB take over (held), 6 BACK quit,
    7 START start/stop. Needs pygame initialised (the window does it).
    """

    name = "gamepad"
    help = GAMEPAD_HELP
    AXES = {0: (0, +1.0), 1: (1, -1.0), 4: (2, -1.0), 3: (3, -1.0)}  # axis -> (dim, sign)
    BUTTONS = {1: "discard", 2: "reset", 3: "success", 6: "quit", 7: "start_stop"}
    GRIPPER_BUTTON, TAKEOVER_BUTTON = 0, 4

    def __init__(self, index: int = 0, deadzone: float = 0.15, speed: float = 1.0):
        pg = import_pygame()
        pg.joystick.init()
        n = pg.joystick.get_count()
        if n <= index:
            raise DeviceError(
                f"no gamepad found: pygame sees {n} joystick(s). Plug one in (Linux: check `ls /dev/input/js*` "
                "and that your user may read /dev/input/event*), or use teleop=keyboard"
            )
        self.js = pg.joystick.Joystick(index)
        self.js.init()
        self.deadzone, self.speed = float(deadzone), float(speed)
        self.gripper = -1.0
        self._prev_buttons: dict[int, bool] = {}
        self._takeover = False

    def handle_events(self, events: Iterable) -> None:
        pass  # buttons are read as state and edge-detected in poll()

    def poll(self) -> DeviceState:
        delta = np.zeros(4, np.float32)
        for axis, (dim, sign) in self.AXES.items():
            if axis < self.js.get_numaxes():
                v = float(self.js.get_axis(axis))
                if abs(v) > self.deadzone:  # rescale so motion starts from 0 at the dead zone's edge
                    delta[dim] = sign * np.sign(v) * (abs(v) - self.deadzone) / (1.0 - self.deadzone)
        delta = np.clip(delta * self.speed, -1.0, 1.0)
        events: set[str] = set()
        nb = self.js.get_numbuttons()
        buttons = {b: bool(self.js.get_button(b)) for b in range(nb)}
        for b, down in buttons.items():
            if down and not self._prev_buttons.get(b, False):
                if b == self.GRIPPER_BUTTON:
                    self.gripper = -self.gripper
                elif b in self.BUTTONS:
                    events.add(self.BUTTONS[b])
        self._prev_buttons = buttons
        takeover = buttons.get(self.TAKEOVER_BUTTON, False)
        events |= _takeover_edges(self._takeover, takeover)
        self._takeover = takeover
        return DeviceState(delta, self.gripper, events, takeover)

    def close(self) -> None:
        try:
            self.js.quit()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------- spacemouse
class SpaceMouseDevice:
    """3Dconnexion SpaceMouse through `pyspacemouse` (optional). Translation -> dx, dy, dz; twist -> dyaw;
    button 0 toggles the gripper, button 1 starts/stops recording. No take-over button: hold TAB."""

    name = "spacemouse"
    help = SPACEMOUSE_HELP

    def __init__(self, deadzone: float = 0.05, speed: float = 1.0):
        try:
            import pyspacemouse
        except ImportError:
            raise DeviceError("teleop=spacemouse needs the pyspacemouse package: pip install pyspacemouse (or "
                              "pip install -e '.[spacemouse]'); on Debian/Ubuntu also "
                              "apt-get install libhidapi-hidraw0") from None
        except Exception as e:  # pyspacemouse imports easyhid, which loads libhidapi at import time
            raise DeviceError(f"pyspacemouse could not load the HID library ({type(e).__name__}: {e}); "
                              "install it: apt-get install libhidapi-hidraw0 (Debian/Ubuntu)") from None
        try:
            dev = pyspacemouse.open()
        except Exception as e:
            raise DeviceError(f"no SpaceMouse could be opened ({type(e).__name__}: {e}); plug one in and check "
                              "that your user may read /dev/hidraw* (udev rule), or use teleop=keyboard") from None
        if not dev:
            raise DeviceError("no SpaceMouse found: plug one in and check that your user may read /dev/hidraw* "
                              "(udev rule), or use teleop=keyboard")
        self.psm = pyspacemouse
        self.deadzone, self.speed = float(deadzone), float(speed)
        self.gripper = -1.0
        self._prev_buttons: list[int] = []

    def handle_events(self, events: Iterable) -> None:
        pass

    def poll(self) -> DeviceState:
        s = self.psm.read()
        raw = np.array([s.x, s.y, s.z, s.yaw], np.float32)
        raw[np.abs(raw) < self.deadzone] = 0.0
        delta = np.clip(raw * self.speed, -1.0, 1.0)
        events: set[str] = set()
        buttons = list(getattr(s, "buttons", []) or [])
        for i, down in enumerate(buttons):
            was = self._prev_buttons[i] if i < len(self._prev_buttons) else 0
            if down and not was:
                if i == 0:
                    self.gripper = -self.gripper
                elif i == 1:
                    events.add("start_stop")
        self._prev_buttons = buttons
        return DeviceState(delta, self.gripper, events, False)

    def close(self) -> None:
        try:
            self.psm.close()
        except Exception:
            pass


DEVICES = {"keyboard": KeyboardDevice, "gamepad": GamepadDevice, "spacemouse": SpaceMouseDevice}


def make_device(name: str, **kwargs) -> Device:
    """A device by name: keyboard | gamepad | spacemouse. Raises DeviceError with a fix if it cannot work."""
    if name not in DEVICES:
        raise DeviceError(f"device={name!r} is not valid; valid options: {list(DEVICES)}")
    return DEVICES[name](**kwargs)


class WithKeyboard:
    """A gamepad / spacemouse plus the window's keyboard: motion from whichever moves (device first),
    events and take-over from both, gripper from whichever toggled last."""

    def __init__(self, main: Device, keyboard: KeyboardDevice | None = None):
        self.main = main
        self.kb = keyboard or KeyboardDevice()
        self.name = main.name
        self.help = f"{getattr(main, 'help', '')}\n{KEYBOARD_HELP}"
        self._g = float(main.gripper)
        self.kb.gripper = self._g

    @property
    def gripper(self) -> float:
        return self._g

    @gripper.setter
    def gripper(self, value: float) -> None:
        self._g = float(value)
        self.main.gripper = self.kb.gripper = self._g

    def handle_events(self, events: Iterable) -> None:
        events = list(events)
        self.main.handle_events(events)
        self.kb.handle_events(events)

    def poll(self) -> DeviceState:
        m, k = self.main.poll(), self.kb.poll()
        if m.gripper != self._g:
            self.gripper = m.gripper
        elif k.gripper != self._g:
            self.gripper = k.gripper
        delta = m.delta if np.any(m.delta) else k.delta
        return DeviceState(delta, self.gripper, m.events | k.events, m.takeover or k.takeover)

    def close(self) -> None:
        self.main.close()
