"""`robolearn record`: roll out a scripted expert (or a policy) and append episodes to an HDF5 store.

Crash safety comes from the store (each finished episode is committed by an atomic file replacement);
here SIGTERM is turned into KeyboardInterrupt so that Ctrl-C and `kill` both stop cleanly after
printing the summary of what was kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from robolearn.data.store import EpisodeBuilder, EpisodeWriter
from robolearn.envutil import env_dt, get_state, make_env
from robolearn.signals import interruptible, stop_point  # noqa: F401  (stop_point re-exported)

log = logging.getLogger(__name__)


# kept here for the callers that import them from robolearn.recording
sigterm_as_interrupt = interruptible


def make_expert(env, kind: str = "scripted", noise: float = 0.0, seed: int | None = None):
    """The reference actor for `env`: its scripted expert, or a uniform random actor."""
    if kind == "random":
        return RandomActor(env.action_space, seed)
    if kind != "scripted":
        raise ValueError(f"expert={kind!r} is not valid; valid options: ['scripted', 'random']")
    import robolearn_envs

    spec_id = env.spec.id if env.spec is not None else "?"
    if not spec_id.startswith("robolearn/"):
        raise ValueError(
            f"env={spec_id!r} has no scripted expert (only robolearn/... tasks ship one). "
            "Fix: record a robolearn task, or collect data with a policy (robolearn eval/finetune)"
        )
    return robolearn_envs.make_expert(env, noise=noise, seed=seed)


class RandomActor:
    mode = None

    def __init__(self, action_space, seed=None):
        self.space = action_space
        self.rng = np.random.default_rng(seed)

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, obs):
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


def run_episode(env, act: Callable, seed: int, render: bool = False, on_step=None):
    """Roll out one episode; returns (EpisodeBuilder, last info, frames)."""
    obs, info = env.reset(seed=seed)
    b = EpisodeBuilder(obs, get_state(env))
    frames = [env.render()] if render else []
    while True:
        stop_point()
        a = np.asarray(act(obs), np.float32)
        obs, r, term, trunc, info = env.step(a)
        b.add(a, obs, r, term, get_state(env))
        if render:
            frames.append(env.render())
        if on_step is not None:
            on_step(b, info)
        if term or trunc:
            return b, info, frames


def record(cfg) -> dict:
    """Record `cfg.episodes` expert episodes into `cfg.out`; returns the summary dict."""
    from tqdm.auto import tqdm

    from robolearn.eval.video import mark_frame, write_video

    env_kwargs = {"obs_mode": cfg.obs_mode, "reward_type": cfg.reward_type}
    env = make_env(cfg.env, render_mode="rgb_array" if cfg.video else None, **env_kwargs)
    expert = make_expert(env, cfg.expert, noise=cfg.noise, seed=cfg.seed)
    writer = EpisodeWriter(cfg.out, cfg.env, env_kwargs if cfg.env.startswith("robolearn/") else {},
                           env.observation_space, env.action_space, overwrite=cfg.overwrite)
    kept, successes, lengths, attempts = 0, 0, [], 0
    t0 = time.time()
    interrupted = False
    video_frames = []
    bar = tqdm(total=cfg.episodes, desc=f"record {cfg.env}", unit="ep")
    try:
        with sigterm_as_interrupt(deferred=True):
            while kept < cfg.episodes:
                seed = cfg.seed + attempts
                attempts += 1
                expert.reset(seed=seed)
                render = cfg.video and attempts <= cfg.video_episodes
                b, info, frames = run_episode(env, expert.act, seed, render=render)
                success = bool(info.get("is_success", False))
                if render:
                    color = (0, 200, 0) if success else (220, 0, 0)
                    video_frames += [mark_frame(f, f"ep {attempts - 1}  {'success' if success else 'failure'}",
                                                color) for f in frames]
                successes += success
                if cfg.success_only and not success:
                    if attempts > 3 * cfg.episodes + 10:
                        raise RuntimeError(f"the expert succeeded in only {successes}/{attempts} episodes; "
                                           "Fix: lower noise=, or set success_only=false")
                    continue
                extra = {} if expert.mode is None else {"mode": str(expert.mode)}
                writer.append(b.finish(cfg.source, success=success, seed=seed, **extra))
                kept += 1
                lengths.append(len(b))
                bar.update(1)
                bar.set_postfix(success=f"{successes / attempts:.0%}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        env.close()
    video = None
    if video_frames:
        video = str(write_video(Path(cfg.out).with_suffix(".mp4"), video_frames, fps=1.0 / (env_dt(env) or 0.05)))
    return {
        "file": str(cfg.out),
        "episodes_kept": kept,
        "episodes_run": attempts,
        "success_rate": successes / max(attempts, 1),
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
        "seconds": time.time() - t0,
        "interrupted": interrupted,
        "video": video,
    }
