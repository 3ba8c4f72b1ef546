"""Teleop: devices from synthetic key states, the record loop and HumanOverride on SDL's dummy video driver,
the no-display error, and one end-to-end run of the real `robolearn record teleop=keyboard` on a virtual X
display (Xvfb) driven by real key events (xdotool), as a person would use it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pygame = pytest.importorskip("pygame")

ROOT = Path(__file__).resolve().parent.parent
ROBOLEARN = Path(sys.executable).parent / "robolearn"


# ------------------------------------------------------------------------------------------- devices
@pytest.fixture
def dummy_video(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    yield
    pygame.quit()


def test_keyboard_device_synthetic_keys():
    from robolearn.teleop.devices import KeyboardDevice

    kb = KeyboardDevice()
    s = kb.poll(held=set())
    assert np.all(s.delta == 0) and s.gripper == -1.0 and s.events == set() and not s.takeover
    np.testing.assert_array_equal(kb.poll(held={pygame.K_w}).delta, [0, 1, 0, 0])
    np.testing.assert_array_equal(kb.poll(held={pygame.K_s}).delta, [0, -1, 0, 0])
    np.testing.assert_array_equal(kb.poll(held={pygame.K_a, pygame.K_r}).delta, [-1, 0, 1, 0])
    np.testing.assert_array_equal(kb.poll(held={pygame.K_d, pygame.K_f, pygame.K_e}).delta, [1, 0, -1, -1])
    np.testing.assert_array_equal(kb.poll(held={pygame.K_q}).delta, [0, 0, 0, 1])
    np.testing.assert_array_equal(kb.poll(held={pygame.K_w, pygame.K_s}).delta, [0, 0, 0, 0])  # cancel
    np.testing.assert_allclose(kb.poll(held={pygame.K_w, pygame.K_LSHIFT}).delta, [0, 0.3, 0, 0])  # fine
    # gripper: SPACE toggles (edge), held state is kept between polls
    kb.press(pygame.K_SPACE)
    assert kb.poll(held=set()).gripper == 1.0
    assert kb.poll(held={pygame.K_SPACE}).gripper == 1.0  # holding does not re-toggle
    kb.press(pygame.K_SPACE)
    assert kb.poll(held=set()).gripper == -1.0
    # edge-triggered events, reported once
    for key, ev in [(pygame.K_RETURN, "start_stop"), (pygame.K_m, "success"), (pygame.K_BACKSPACE, "discard"),
                    (pygame.K_x, "reset"), (pygame.K_ESCAPE, "quit")]:
        kb.press(key)
        assert kb.poll(held=set()).events == {ev}
        assert kb.poll(held=set()).events == set()
    # take-over: held flag plus on/off edges
    s = kb.poll(held={pygame.K_TAB, pygame.K_d})
    assert s.takeover and s.events == {"takeover_on"}
    s = kb.poll(held={pygame.K_TAB})
    assert s.takeover and s.events == set()
    s = kb.poll(held=set())
    assert not s.takeover and s.events == {"takeover_off"}
    a = kb.poll(held={pygame.K_w}).action()
    assert a.dtype == np.float32 and a.shape == (5,)
    np.testing.assert_array_equal(a, [0, 1, 0, 0, -1])


def test_keyboard_device_from_pygame_events():
    from robolearn.teleop.devices import KeyboardDevice

    kb = KeyboardDevice()
    kb.handle_events([pygame.event.Event(pygame.KEYDOWN, key=pygame.K_SPACE),
                      pygame.event.Event(pygame.KEYUP, key=pygame.K_SPACE),
                      pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RETURN)])
    s = kb.poll(held=set())
    assert s.gripper == 1.0 and s.events == {"start_stop"}


class FakeJoystick:
    def __init__(self):
        self.axes, self.buttons = [0.0] * 6, [0] * 8

    def get_numaxes(self):
        return len(self.axes)

    def get_axis(self, i):
        return self.axes[i]

    def get_numbuttons(self):
        return len(self.buttons)

    def get_button(self, i):
        return self.buttons[i]


def test_gamepad_mapping_and_keyboard_merge():
    from robolearn.teleop.devices import GamepadDevice, WithKeyboard

    gp = GamepadDevice.__new__(GamepadDevice)  # no joystick here: give it a fake one
    gp.js, gp.deadzone, gp.speed, gp.gripper, gp._prev_buttons, gp._takeover = FakeJoystick(), 0.15, 1.0, -1.0, {}, False
    gp.js.axes[:5] = [1.0, -1.0, 0.0, 0.1, -0.575]  # left stick right+up, right stick (in dead zone) x, half up
    s = gp.poll()
    np.testing.assert_allclose(s.delta, [1, 1, 0.5, 0], atol=1e-6)
    gp.js.buttons[0] = gp.js.buttons[7] = gp.js.buttons[4] = 1  # A, START, LB
    s = gp.poll()
    assert s.gripper == 1.0 and s.events == {"start_stop", "takeover_on"} and s.takeover
    assert gp.poll().events == set()  # buttons still down: no new edges
    gp.js.axes[:5] = [0.0] * 5
    both = WithKeyboard(gp)
    kb = both.kb
    kb.poll = lambda held=None, _p=kb.poll: _p({pygame.K_r})  # keyboard: R held
    kb.press(pygame.K_SPACE)
    s = both.poll()
    np.testing.assert_array_equal(s.delta, [0, 0, 1, 0])  # gamepad idle -> keyboard motion
    assert s.gripper == -1.0 and gp.gripper == -1.0  # the keyboard toggled it back open, shared
    both.gripper = 1.0
    assert gp.gripper == kb.gripper == 1.0 and both.poll().gripper == 1.0


def test_missing_devices_say_what_is_missing(dummy_video):
    from robolearn.cli import UserError
    from robolearn.teleop.devices import DeviceError, make_device

    pygame.init()
    pygame.joystick.init()
    if pygame.joystick.get_count() == 0:
        with pytest.raises(DeviceError, match="no gamepad found"):
            make_device("gamepad")
    with pytest.raises(DeviceError) as e:
        make_device("spacemouse")  # pyspacemouse missing, or libhidapi missing, or no device plugged in
    assert any(w in str(e.value) for w in ("pip install pyspacemouse", "libhidapi", "no SpaceMouse"))
    assert isinstance(e.value, UserError)  # the CLI prints it without a traceback
    with pytest.raises(DeviceError, match="valid options"):
        make_device("joystick9000")


# ------------------------------------------------------------------------------------------- loop, in-process
class ScriptedKeys:
    """A KeyboardDevice whose held keys are set by the test (SDL's dummy driver has no keyboard)."""

    def __new__(cls):
        from robolearn.teleop.devices import KeyboardDevice

        class _K(KeyboardDevice):
            held: set = set()

            def poll(self, held=None):
                return super().poll(self.held)

        return _K()


def test_recording_session_start_discard_mark_save(tmp_path, dummy_video):
    from robolearn.data.store import EpisodeWriter, iter_episodes
    from robolearn.envutil import make_env
    from robolearn.teleop.app import RecordingSession
    from robolearn.teleop.window import TeleopWindow

    env = make_env("robolearn/Lift-v0", render_mode="rgb_array")
    kb = ScriptedKeys()
    win = TeleopWindow()
    out = tmp_path / "t.hdf5"
    w = EpisodeWriter(out, "robolearn/Lift-v0", {}, env.observation_space, env.action_space)
    s = RecordingSession(env, win, kb, w, episodes=2, seed=5, file=str(out))
    s.quit = False
    s._new_scene()
    try:
        s.step()
        assert s.builder is None and s.status()[""] == "PAUSED"
        kb.press(pygame.K_RETURN)
        kb.held = {pygame.K_d}
        s.step()
        s.step()
        assert len(s.builder) == 2 and s.status()[""] == "RECORDING"
        kb.press(pygame.K_BACKSPACE)  # discard: same scene again, paused, nothing written
        s.step()
        assert s.builder is None and s.discarded == 1 and s.seed == 5 and s.kept == 0
        kb.held = set()
        kb.press(pygame.K_RETURN)
        s.step()
        kb.held = {pygame.K_r}
        kb.press(pygame.K_SPACE)
        s.step()
        kb.press(pygame.K_m)
        s.step()
        kb.press(pygame.K_RETURN)  # stop -> saved, next scene
        s.step()
        assert s.kept == 1 and s.seed == 6 and s.last_success is True
        kb.press(pygame.K_ESCAPE)
        assert s.step() is False and s.quit
        win.screenshot(tmp_path / "shot.png")
    finally:
        win.close()
        env.close()
    (name, ep), = list(iter_episodes(out))
    assert ep["attrs"]["source"] == "teleop" and bool(ep["attrs"]["success"]) and int(ep["attrs"]["seed"]) == 5
    assert bool(ep["attrs"]["marked_success"]) and not bool(ep["attrs"]["env_success"])
    np.testing.assert_array_equal(ep["actions"], [[0, 0, 0, 0, -1], [0, 0, 1, 0, 1], [0, 0, 1, 0, 1]])


def test_human_override(dummy_video):
    from robolearn.envutil import make_env
    from robolearn.teleop.app import HumanOverride

    env = make_env("robolearn/Lift-v0", render_mode="rgb_array")
    kb = ScriptedKeys()
    env.reset(seed=0)
    with HumanOverride(env, device=kb, realtime=False) as h:
        h.reset()
        pa = np.array([0.1, -0.2, 0.3, 0.0, 0.8], np.float32)
        a, hit = h.decide(None, pa)
        assert not hit and np.array_equal(a, pa)
        h.render(status={"ep": 0})
        kb.held = {pygame.K_TAB, pygame.K_w}  # take over: the human's action, gripper starts from the policy's
        a, hit = h.decide(None, pa)
        assert hit and np.array_equal(a, [0, 1, 0, 0, 1])
        h.render()
        kb.press(pygame.K_SPACE)
        a, hit = h.decide(None, pa)
        assert hit and a[4] == -1.0
        kb.held = set()
        a, hit = h.decide(None, pa)
        assert not hit and np.array_equal(a, pa) and h.interventions == 2
        kb.press(pygame.K_ESCAPE)
        with pytest.raises(KeyboardInterrupt):
            h.decide(None, pa)
    env.close()


# ------------------------------------------------------------------------------------------- the real tool
def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    env.setdefault("MUJOCO_GL", "egl")
    env.update(extra)
    return env


@pytest.mark.parametrize("display", [None, ":4217"], ids=["unset", "no-server"])
def test_no_display_is_a_clear_error(tmp_path, display):
    if display and Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
        pytest.skip(f"an X server runs on {display}")
    env = _clean_env(**({"DISPLAY": display} if display else {}))
    r = subprocess.run([str(ROBOLEARN), "record", "teleop=keyboard", "env=robolearn/Lift-v0", "episodes=1",
                        f"out={tmp_path / 'x.hdf5'}"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no display" in r.stderr and "xvfb-run -a" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "x.hdf5").exists()


@pytest.fixture
def xdisplay(tmp_path):
    """A private Xvfb server (its number chosen by Xvfb via -displayfd); its screen is dumped to fbdir."""
    if not shutil.which("Xvfb") or not shutil.which("xdotool"):
        pytest.skip("needs Xvfb and xdotool (apt-get install xvfb xdotool; scripts/setup.sh installs them)")
    fbdir = tmp_path / "fb"
    fbdir.mkdir()
    rfd, wfd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "800x600x24", "-nolisten", "tcp",
                             "-fbdir", str(fbdir)], pass_fds=(wfd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        num = f.readline().strip()
    if not num:
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield f":{num}", fbdir
    proc.terminate()
    proc.wait(timeout=10)


def read_xwd(path) -> np.ndarray:
    """Xvfb's -fbdir screen dump (XWD, 24/32-bit TrueColor) -> H x W x 3 uint8."""
    raw = Path(path).read_bytes()
    hdr = np.frombuffer(raw[:100], ">u4")
    header_size, width, height, bytes_per_line, ncolors = hdr[0], hdr[4], hdr[5], hdr[12], hdr[19]
    off = int(header_size) + 12 * int(ncolors)
    px = np.frombuffer(raw[off:off + int(bytes_per_line) * int(height)], np.uint8)
    px = px.reshape(int(height), int(bytes_per_line))[:, :int(width) * 4].reshape(int(height), int(width), 4)
    return px[..., [2, 1, 0]]  # BGRX (little-endian server) -> RGB


def _launch(display, out, episodes):
    """Start the real tool on `display`; returns (process, xdo, window id) once its window is up and focused."""
    env = _clean_env(DISPLAY=display)

    def xdo(*args, timeout=20):
        return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=timeout,
                              check=True).stdout

    proc = subprocess.Popen([str(ROBOLEARN), "record", "teleop=keyboard", "env=robolearn/Lift-v0",
                             f"episodes={episodes}", f"out={out}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wid = xdo("search", "--sync", "--pid", str(proc.pid), timeout=60).split()[0]
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
        proc.kill()
        pytest.fail(f"the teleop window never appeared; output:\n{proc.communicate()[0]}")
    xdo("windowfocus", wid)
    time.sleep(1.0)  # the loop is running (env made, first frame shown)
    return proc, xdo, wid


def test_record_teleop_end_to_end_with_real_keys(tmp_path, xdisplay):
    from robolearn.data.store import iter_episodes

    display, fbdir = xdisplay
    out = tmp_path / "teleop.hdf5"
    proc, xdo, wid = _launch(display, out, episodes=1)
    try:
        xdo("key", "Return")  # start recording
        time.sleep(0.5)
        xdo("keydown", "w")  # hold W ~1 s: +y
        time.sleep(1.0)
        xdo("keyup", "w")
        time.sleep(0.4)
        xdo("key", "space")  # close the gripper
        time.sleep(0.6)
        shot = fbdir / "Xvfb_screen0"
        if os.environ.get("TELEOP_SCREENSHOT") and shot.exists():
            from PIL import Image

            geo = dict(line.split("=") for line in xdo("getwindowgeometry", "--shell", wid).split())
            x, y, w, h = (int(geo[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
            Image.fromarray(read_xwd(shot)[y:y + h, x:x + w]).save(os.environ["TELEOP_SCREENSHOT"])
        xdo("key", "Return")  # stop: saves the episode; episodes=1 -> the tool exits
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "episodes_kept" in output

    eps = list(iter_episodes(out))
    assert len(eps) == 1, output
    _, ep = eps[0]
    assert ep["attrs"]["source"] == "teleop"
    a = ep["actions"]
    T = len(a)
    assert 12 <= T <= 50, (T, output)  # ~2.5 s of recording at 10 Hz
    moving = a[:, 1] > 0.5
    idx = np.flatnonzero(moving)
    assert 5 <= len(idx) <= 16, a  # W held ~1 s
    assert np.all(np.diff(idx) == 1), a  # one contiguous press
    np.testing.assert_array_equal(a[moving][:, [0, 2, 3]], 0)
    np.testing.assert_array_equal(a[~moving][:, :4], 0)  # nothing moves outside the press
    g = a[:, 4]
    assert g[0] == -1.0 and g[-1] == 1.0, g  # gripper toggled closed once, after the move
    flip = np.flatnonzero(np.diff(g))
    assert len(flip) == 1 and flip[0] >= idx[-1], g
    eef = ep["obs"]["eef_pos"]
    assert ep["next_obs"]["eef_pos"][-1, 1] - eef[0, 1] > 0.05  # the gripper really moved +y


def test_sigterm_keeps_finished_episodes(tmp_path, xdisplay):
    from robolearn.data.store import iter_episodes

    display, _ = xdisplay
    out = tmp_path / "teleop.hdf5"
    proc, xdo, _ = _launch(display, out, episodes=3)
    try:
        xdo("key", "Return")  # start
        time.sleep(0.3)
        xdo("keydown", "d")
        time.sleep(0.4)
        xdo("keyup", "d")
        xdo("key", "Return")  # stop: episode 1 saved
        time.sleep(0.5)
        xdo("key", "Return")  # start episode 2 ...
        time.sleep(0.5)
        proc.terminate()  # ... and stop the tool mid-episode (as `kill` would)
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "interrupted" in output
    eps = list(iter_episodes(out))
    assert len(eps) == 1 and eps[0][1]["attrs"]["source"] == "teleop"
    assert np.all(eps[0][1]["actions"][:, 0] >= 0) and np.any(eps[0][1]["actions"][:, 0] > 0.5)


def test_config_device_names_are_the_teleop_devices():
    """Configs validate device names without importing the device backends; the two lists must agree."""
    from robolearn.config import TELEOP_DEVICES
    from robolearn.teleop.devices import DEVICES

    assert TELEOP_DEVICES == tuple(DEVICES)
