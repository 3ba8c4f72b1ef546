"""A human in the loop during SAC fine-tuning (HIL-SERL): a person at a teleop device, or a scripted stand-in.

`robolearn finetune intervention=...` wraps the training env's episodes with `HumanInTheLoop`: each step the
human sees the policy's action and may take over; the executed action is what the buffers store, and a
takeover also joins the demo buffer (HIL-SERL keeps interventions in both). Evaluations never intervene.
"""

from __future__ import annotations

import numpy as np

from robolearn.algos.bridges import from_unit, to_unit
from robolearn.config import TELEOP_DEVICES, ConfigError


def make_intervener(cfg, env, env_id: str, env_kwargs: dict):
    """The human: the scripted stand-in (the task's expert, with cfg.intervention_trigger) or a person at a
    device (robolearn.teleop.app.HumanOverride). Each answers decide(obs, a_policy) -> (a, took_over)."""
    if cfg.intervention == "scripted":
        from robolearn.algos.dagger import Scratch, ScriptedHuman, StallHuman
        from robolearn.recording import make_expert

        try:
            expert = make_expert(env, "scripted", seed=cfg.seed)
        except ValueError as e:
            raise ConfigError(
                f"intervention=scripted needs the task's scripted expert: {e}. Fix: intervention=keyboard "
                "(a person), or drop intervention"
            ) from None
        hold = cfg.intervention_hold
        if cfg.intervention_trigger == "stall":
            scratch = Scratch(env_id, env_kwargs, "scripted", cfg.seed)
            hold = 10**9 if hold is None else hold  # None: it drives to the episode's end
            return StallHuman(env, expert, scratch, cfg.intervention_every, cfg.intervention_progress, hold)
        return ScriptedHuman(expert, cfg.intervention_threshold, 5 if hold is None else hold)
    from robolearn.teleop.app import HumanOverride

    return HumanOverride(env, device=cfg.intervention)


class HumanInTheLoop:
    """The training loop's side of the interventions: who acts, what is counted, what the demo buffer gets.
    counts: {"steps", "episodes"} (kept in the run's history, so a resumed run continues them)."""

    def __init__(self, cfg, env, env_id: str, env_kwargs: dict, counts: dict, low, high):
        self.human = make_intervener(cfg, env, env_id, env_kwargs)
        self.person = cfg.intervention in TELEOP_DEVICES
        self.until = cfg.intervention_steps
        self.counts, self.low, self.high = counts, low, high
        self.ep = 0  # takeover steps in the running episode

    def reset(self) -> None:
        self.human.reset()
        self.ep = 0

    def act(self, step: int, obs, a: np.ndarray) -> tuple[np.ndarray, bool]:
        """a: the policy's action in [-1, 1] units -> (the executed one, in the same units; taken over?). The
        BC base of a residual actor keeps its plan either way."""
        if self.until is not None and step >= self.until:
            return a, False
        a_h, taken = self.human.decide(obs, from_unit(a, self.low, self.high))
        if not taken:
            return a, False
        self.ep += 1
        self.counts["steps"] += 1
        return to_unit(np.clip(np.asarray(a_h, np.float32), self.low, self.high), self.low, self.high), True

    def after(self, taken: bool, demo_buf, transition: tuple, episode: int, step: int) -> None:
        """After the env step: a takeover's transition (s, a, r, s', terminated) also joins the demos (truncated:
        an n-step window stops at its edge); a person's window shows the new frame."""
        if taken and demo_buf is not None:
            demo_buf.add(*transition, True)
        if self.person:
            self.human.render(status={"ep": episode, "env step": step})

    def end_episode(self, writer, step: int, ep_len: int) -> None:
        writer.add_scalar("charts/intervention_rate", self.ep / max(ep_len, 1), step)
        self.counts["episodes"] += int(self.ep > 0)

    def close(self) -> None:
        for obj in (self.human, getattr(self.human, "scratch", None)):
            if hasattr(obj, "close"):
                obj.close()
