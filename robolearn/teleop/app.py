"""Teleoperation: record demonstrations by hand (`record_teleop`) and take over from a policy (`HumanOverride`).

    robolearn record teleop=keyboard env=robolearn/Lift-v0 episodes=10 out=datasets/lift_teleop.hdf5
    python tools/teleop.py --env robolearn/Lift-v0 --out demos.hdf5 --device keyboard

The loop runs at the env's control rate (dt = 0.1 s for robolearn tasks) and never waits for input: each
tick it reads the device, steps the env while RECORDING (the scene stands still while PAUSED), and draws the
offscreen render in the window with a status bar. Episodes are stored exactly like `robolearn record` does
(`EpisodeBuilder` -> `EpisodeWriter.append`, atomic per episode) with `source="teleop"`; success is the env's
`info["is_success"]` or the M key. Discarded episodes are never written; Ctrl-C / SIGTERM / ESC keep every
finished episode (an unfinished recording is dropped). Key bindings: `robolearn.teleop.devices` and
docs/teleop.md.
"""

from __future__ import annotations

import time

import numpy as np

from robolearn.data.store import EpisodeBuilder, EpisodeWriter
from robolearn.envutil import env_dt, get_state, make_env
from robolearn.signals import interruptible
from robolearn.teleop.devices import Device, KeyboardDevice, WithKeyboard, make_device
from robolearn.teleop.window import NO_DISPLAY_MSG, Rate, TeleopWindow, has_display

HINT_PAUSED = "ENTER start  |  WASD/RF/QE move  SPACE gripper  M success  BKSP discard  X reset  ESC quit"
HINT_RECORDING = "ENTER stop+save  |  WASD/RF/QE move  SPACE gripper  M success  BKSP discard  ESC quit"


def open_device(name_or_device, window: bool = True) -> Device:
    """A device by name (or as given); a gamepad/spacemouse also listens to the window's keyboard."""
    dev = make_device(name_or_device) if isinstance(name_or_device, str) else name_or_device
    if window and not isinstance(dev, (KeyboardDevice, WithKeyboard)):
        dev = WithKeyboard(dev)
    return dev


def _check_action_space(env, env_id: str) -> None:
    shape = getattr(env.action_space, "shape", None)
    if shape != (5,):
        from robolearn.errors import UserError

        raise UserError(f"teleop drives the 5-D [dx, dy, dz, dyaw, gripper] action of robolearn/... tasks; "
                        f"env={env_id!r} has action shape {shape}. Fix: pick a robolearn task")


# ------------------------------------------------------------------------------------------- recording
def record_teleop(cfg) -> dict:
    """Record `cfg.episodes` teleoperated episodes into `cfg.out` (source="teleop"); returns the summary dict.

    `cfg` is a `robolearn.config.RecordConfig` (fields used: env, teleop, episodes, out, seed, obs_mode,
    reward_type, overwrite). Raises `robolearn.errors.UserError` for a missing display or device.
    """
    from robolearn.errors import UserError

    if not has_display():
        raise UserError(NO_DISPLAY_MSG)
    env_kwargs = {"obs_mode": cfg.obs_mode, "reward_type": cfg.reward_type}
    try:
        env = make_env(cfg.env, render_mode="rgb_array", **env_kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None
    win = device = None
    try:
        _check_action_space(env, cfg.env)
        win = TeleopWindow(f"robolearn teleop - {cfg.env} -> {cfg.out}")
        device = open_device(cfg.teleop)
        writer = EpisodeWriter(cfg.out, cfg.env, env_kwargs if cfg.env.startswith("robolearn/") else {},
                               env.observation_space, env.action_space, overwrite=cfg.overwrite)
        print(f"teleop: recording {cfg.episodes} episode(s) of {cfg.env} into {cfg.out} with {device.name}.\n"
              f"{device.help}\nPress ENTER in the window to start recording.", flush=True)
        session = RecordingSession(env, win, device, writer, cfg.episodes, cfg.seed, device_name=cfg.teleop,
                                   file=str(cfg.out))
        with writer:  # closes it; overwrite=true replaces the old store only if the session ends without an error
            return session.run()
    finally:
        if device is not None:
            device.close()
        if win is not None:
            win.close()
        env.close()


class RecordingSession:
    """The record loop's state machine: PAUSED (scene still) <-> RECORDING (env steps, steps are stored)."""

    def __init__(self, env, win: TeleopWindow, device: Device, writer: EpisodeWriter, episodes: int, seed: int,
                 device_name: str = "keyboard", file: str = ""):
        self.file = file
        self.env, self.win, self.device, self.writer = env, win, device, writer
        self.episodes, self.seed0, self.device_name = int(episodes), int(seed), device_name
        self.dt = env_dt(env) or 0.1
        self.max_steps = env.spec.max_episode_steps if env.spec is not None else None
        self.kept = self.discarded = self.successes = self.attempts = 0
        self.lengths: list[int] = []
        self.last_success: bool | None = None
        self.note, self.note_until = "", 0.0
        self.builder: EpisodeBuilder | None = None
        self.marked = False

    # -- scene
    def _new_scene(self, same_seed: bool = False) -> None:
        if not same_seed:
            self.seed = self.seed0 + self.attempts
            self.attempts += 1
        self.obs, self.info = self.env.reset(seed=self.seed)
        self.builder, self.marked, self.frame = None, False, None
        self.device.gripper = -1.0  # robolearn tasks reset with the gripper open

    def _say(self, msg: str, seconds: float = 3.0) -> None:
        self.note, self.note_until = msg, time.monotonic() + seconds
        print(f"teleop: {msg}", flush=True)

    def _save(self) -> None:
        b = self.builder
        self.builder = None
        if b is None or len(b) == 0:
            self._say("nothing recorded; not saved")
            return
        env_success = bool(self.info.get("is_success", False))
        success = env_success or self.marked
        self.writer.append(b.finish("teleop", success=success, seed=self.seed, device=self.device_name,
                                    marked_success=bool(self.marked), env_success=env_success))
        self.kept += 1
        self.successes += success
        self.lengths.append(len(b))
        self.last_success = success
        self._say(f"saved episode {self.kept}/{self.episodes}: {len(b)} steps, {'success' if success else 'failure'}")

    def _discard(self, why: str) -> None:
        if self.builder is not None and len(self.builder) > 0:
            self.discarded += 1
            self._say(f"discarded the recording ({len(self.builder)} steps; {why})")
        self.builder = None

    # -- loop
    def status(self) -> dict:
        rec = self.builder is not None
        last = {None: "-", True: "success", False: "failure"}[self.last_success]
        step = len(self.builder) if rec else 0
        return {
            "ep": f"{min(self.kept + 1, self.episodes)}/{self.episodes}",
            "step": f"{step}/{self.max_steps}" if self.max_steps else str(step),
            "": ("RECORDING" + (" (marked success)" if self.marked else "")) if rec else "PAUSED",
            "control": "HUMAN",
            "last": last,
        }

    def step(self) -> bool:
        """One control tick; False when the session should end (quit)."""
        events = self.win.pump()
        self.device.handle_events(events)
        st = self.device.poll()
        if self.win.closed or "quit" in st.events:
            self._discard("quit")
            self.quit = True
            return False
        if "reset" in st.events:
            self._discard("reset")
            self._new_scene()
            self._say(f"new scene (seed {self.seed})")
        elif "discard" in st.events:
            if self.builder is not None:
                self._discard("BACKSPACE")
                self._new_scene(same_seed=True)
        if "success" in st.events:
            self.marked = not self.marked
            self._say("marked success" if self.marked else "success mark removed", 2.0)
        if "start_stop" in st.events:
            if self.builder is None:
                self.builder = EpisodeBuilder(self.obs, get_state(self.env))
                self._say(f"recording episode {self.kept + 1}/{self.episodes} (seed {self.seed})", 1.5)
            else:
                self._save()
                if self.kept < self.episodes:
                    self._new_scene()
                return True
        if self.builder is not None:
            a = st.action()
            self.obs, r, term, trunc, self.info = self.env.step(a)
            self.builder.add(a, self.obs, r, term, get_state(self.env))
            self.frame = None
            if term or trunc:
                self._save()
                if self.kept < self.episodes:
                    self._new_scene()
                return True
        if self.frame is None:
            self.frame = self.env.render()
        note = self.note if time.monotonic() < self.note_until else ""
        rec = self.builder is not None
        self.win.show(self.frame, self.status(), note or (HINT_RECORDING if rec else HINT_PAUSED),
                      color=(255, 90, 90) if rec else (230, 230, 230))
        return True

    def run(self) -> dict:
        t0 = time.time()
        self.quit = interrupted = False
        self._new_scene()
        rate = Rate(self.dt)
        try:
            with interruptible():
                while self.kept < self.episodes:
                    if not self.step():
                        break
                    rate.sleep()
        except KeyboardInterrupt:
            interrupted = True
            self._discard("interrupted")
        return {
            "file": self.file,
            "episodes_kept": self.kept,
            "episodes_discarded": self.discarded,
            "success_rate": self.successes / max(self.kept, 1),
            "mean_length": float(np.mean(self.lengths)) if self.lengths else 0.0,
            "seconds": time.time() - t0,
            "quit": self.quit,
            "interrupted": interrupted,
        }


# ------------------------------------------------------------------------------------------- interventions
class HumanOverride:
    """Human interventions during a policy rollout (DAgger / HIL): the policy acts unless the human holds the
    take-over key (TAB, or LB on a gamepad), in which case the device's action is used.

        human = HumanOverride(env, device="keyboard")
        obs, _ = env.reset(seed=s); human.reset()
        while True:
            pa = policy.act(obs)
            a, intervened = human.decide(obs, pa)
            obs, r, term, trunc, info = env.step(a)
            builder.add(a, obs, r, term, get_state(env), intervention=intervened, policy_action=pa)
            human.render(status={"ep": i})          # env.render() needs render_mode="rgb_array"
            ...
        human.close()

    `decide` never blocks on input; with `realtime=True` it paces the loop to the env's dt so a person can
    react. When the take-over starts the human's gripper starts from the policy's (no snap open/closed).
    ESC or closing the window raises KeyboardInterrupt (`raise_on_quit=False`: sets `quit_requested`).
    A missing display raises `robolearn.teleop.window.NoDisplayError`; a missing device `DeviceError`.
    """

    def __init__(self, env, device: str | Device = "keyboard", window: bool = True, scale: int = 2,
                 realtime: bool = True, raise_on_quit: bool = True, title: str = "robolearn - hold TAB to take over"):
        self.env = env
        self.dt = env_dt(env) or 0.1
        self.win = TeleopWindow(title, scale=scale) if window else None
        try:
            self.device = open_device(device, window=window)
        except Exception:
            if self.win is not None:
                self.win.close()
            raise
        self.realtime, self.raise_on_quit = realtime, raise_on_quit
        self.quit_requested = False
        self.events: set[str] = set()
        self.intervening = False
        self.steps = self.interventions = 0
        self._rate: Rate | None = None
        if window:
            print("teleop: hold TAB (gamepad: LB) in the window to take over from the policy; "
                  "while held you drive with the device:\n" + getattr(self.device, "help", ""), flush=True)

    def reset(self) -> None:
        """Call after env.reset(): clears the take-over state and restarts the pacing."""
        self.intervening = False
        self.steps = self.interventions = 0
        self.device.gripper = -1.0
        self._rate = None

    def decide(self, obs, policy_action) -> tuple[np.ndarray, bool]:
        """(action, intervened): the human's action while the take-over is held, else the policy's."""
        if self.realtime:
            if self._rate is None:
                self._rate = Rate(self.dt)
            else:
                self._rate.sleep()
        events = self.win.pump() if self.win is not None else []
        self.device.handle_events(events)
        st = self.device.poll()
        self.events = st.events
        if (self.win is not None and self.win.closed) or "quit" in st.events:
            self.quit_requested = True
            if self.raise_on_quit:
                raise KeyboardInterrupt("quit from the teleop window")
        pa = np.asarray(policy_action, np.float32).reshape(-1)
        if "takeover_on" in st.events and pa.shape[0] >= 5:
            self.device.gripper = st.gripper = 1.0 if pa[4] > 0 else -1.0
        self.intervening = bool(st.takeover)
        self.steps += 1
        if self.intervening:
            self.interventions += 1
            a = st.action()
            if pa.shape[0] != a.shape[0]:
                a = np.resize(a, pa.shape).astype(np.float32)
            return a, True
        return pa.copy(), False

    def render(self, frame: np.ndarray | None = None, status: str | dict | None = None) -> None:
        """Show `frame` (default: env.render()) with a status bar (HUMAN/POLICY is added)."""
        if self.win is None:
            return
        if frame is None:
            frame = self.env.render()
        who = "HUMAN" if self.intervening else "POLICY"
        if isinstance(status, dict) or status is None:
            status = {**(status or {}), "control": who, "step": self.steps, "interventions": self.interventions}
        else:
            status = f"{status}   control {who}"
        self.win.show(frame, status, "hold TAB to take over  |  ESC quit",
                      color=(255, 200, 80) if self.intervening else (230, 230, 230))

    def close(self) -> None:
        self.device.close()
        if self.win is not None:
            self.win.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
