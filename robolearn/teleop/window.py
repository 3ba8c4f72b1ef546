"""The teleop window: a pygame window that shows the env's offscreen render (scaled up) and a status bar.

Shared by `record_teleop` (recording demonstrations) and `HumanOverride` (human interventions during a
policy rollout). The window never blocks: `pump()` returns the events that arrived since the last call,
`show(frame, status)` draws one frame. MuJoCo renders offscreen (EGL); pygame only blits the pixels, which
works under Xvfb provided SDL_FRAMEBUFFER_ACCELERATION=0 is set before `pygame.init()` (done here).
"""

from __future__ import annotations

import os
import time

import numpy as np

from robolearn.errors import UserError
from robolearn.teleop.devices import import_pygame


class NoDisplayError(UserError):
    """No display to open the window on (a UserError: printed without a traceback, exit code 2)."""


NO_DISPLAY_MSG = (
    "no display: set DISPLAY or run under `xvfb-run -a robolearn record teleop=keyboard ...` "
    "(a virtual display, e.g. for scripted tests; a person needs a real screen)"
)


def has_display() -> bool:
    """True when SDL can open a window: an X11/Wayland display, or a headless SDL video driver was chosen."""
    if os.environ.get("SDL_VIDEODRIVER", "") in ("dummy", "offscreen"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class TeleopWindow:
    """`show(frame, status)` draws `frame` (H x W x 3 uint8) scaled by `scale`, with a status bar below."""

    BAR_H = 52

    def __init__(self, title: str = "robolearn teleop", scale: int = 2, frame_shape: tuple[int, int] = (240, 320)):
        if not has_display():
            raise NoDisplayError(NO_DISPLAY_MSG)
        self.pg = pg = import_pygame()
        pg.display.init()  # not pygame.init(): no audio (ALSA noise on machines without a sound card)
        driver = pg.display.get_driver()
        if driver in ("offscreen", "dummy") and os.environ.get("SDL_VIDEODRIVER") != driver:
            # SDL falls back to an invisible offscreen window when DISPLAY names no running X server
            pg.display.quit()
            where = f"DISPLAY={os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')!s}"
            raise NoDisplayError(f"{NO_DISPLAY_MSG} [{where} could not be opened: no X server there?]")
        pg.font.init()
        self.scale = int(scale)
        self.frame_shape = tuple(frame_shape[:2])
        try:
            self.screen = pg.display.set_mode(self._size(self.frame_shape))
        except pg.error as e:
            pg.display.quit()
            raise NoDisplayError(f"{NO_DISPLAY_MSG} [SDL: {e}]") from None
        pg.display.set_caption(title)
        pg.key.set_repeat()  # no key repeat: KEYDOWN once per press; held keys are read as state
        self.font = pg.font.Font(None, 24)
        self.small = pg.font.Font(None, 20)
        self.closed = False

    def _size(self, hw) -> tuple[int, int]:
        return hw[1] * self.scale, hw[0] * self.scale + self.BAR_H

    def pump(self) -> list:
        """All pygame events since the last call (never blocks). A window-close sets `closed`."""
        events = self.pg.event.get()
        if any(e.type == self.pg.QUIT for e in events):
            self.closed = True
        return events

    def show(self, frame: np.ndarray | None, status: str | dict = "", hint: str = "",
             color: tuple[int, int, int] = (230, 230, 230)) -> None:
        pg = self.pg
        if frame is not None:
            frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
            if tuple(frame.shape[:2]) != self.frame_shape:
                self.frame_shape = tuple(frame.shape[:2])
                self.screen = pg.display.set_mode(self._size(self.frame_shape))
            surf = pg.surfarray.make_surface(frame.swapaxes(0, 1))
            if self.scale != 1:
                surf = pg.transform.scale(surf, (frame.shape[1] * self.scale, frame.shape[0] * self.scale))
            self.screen.blit(surf, (0, 0))
        h = self.frame_shape[0] * self.scale
        w = self.frame_shape[1] * self.scale
        pg.draw.rect(self.screen, (25, 25, 30), (0, h, w, self.BAR_H))
        if isinstance(status, dict):
            status = "   ".join(f"{k} {v}" if k else str(v) for k, v in status.items())
        self.screen.blit(self.font.render(status, True, color), (8, h + 6))
        if hint:
            self.screen.blit(self.small.render(hint, True, (150, 150, 160)), (8, h + 30))
        pg.display.flip()

    def screenshot(self, path) -> None:
        self.pg.image.save(self.screen, str(path))

    def close(self) -> None:
        if self.pg.display.get_init():
            self.pg.display.quit()
        self.closed = True


class Rate:
    """Keeps a loop at `dt` seconds per iteration without drifting; never sleeps when late."""

    def __init__(self, dt: float):
        self.dt = float(dt)
        self.next = time.perf_counter() + self.dt

    def sleep(self) -> None:
        now = time.perf_counter()
        if self.next > now:
            time.sleep(self.next - now)
            self.next += self.dt
        else:  # late (slow render, window dragged): restart the schedule instead of catching up in a burst
            self.next = now + self.dt
