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
    try:
        expert = make_expert(env, cfg.expert, noise=cfg.noise, seed=cfg.seed)
        # one writer per store (a second `record` into the same out= fails at once); overwrite=true records
        # into a .partial file that replaces out= only when the recording completes
        writer = EpisodeWriter(
            cfg.out,
            cfg.env,
            env_kwargs if cfg.env.startswith("robolearn/") else {},
            env.observation_space,
            env.action_space,
            overwrite=cfg.overwrite,
        )
    except BaseException:
        env.close()
        raise
    kept, successes, lengths, attempts = 0, 0, [], 0
    t0 = time.time()
    interrupted = completed = False
    video_frames = []

    def kept_note(where) -> str:
        if Path(where) == Path(cfg.out):
            return f". The {kept} finished episodes are in {cfg.out}"
        return (
            f". {cfg.out} is unchanged (overwrite=true replaces it only after a complete recording); the {kept} "
            f"finished episodes are in {where}"
        )

    bar = tqdm(total=cfg.episodes, desc=f"record {cfg.env}", unit="ep")
    try:
        with sigterm_as_interrupt(deferred=True):  # signals only set a flag here: close() runs undisturbed
            try:
                while kept < cfg.episodes:
                    seed = cfg.seed + attempts
                    attempts += 1
                    expert.reset(seed=seed)
                    render = cfg.video and attempts <= cfg.video_episodes
                    b, info, frames = run_episode(env, expert.act, seed, render=render)
                    success = bool(info.get("is_success", False))
                    if render:
                        color = (0, 200, 0) if success else (220, 0, 0)
                        video_frames += [
                            mark_frame(f, f"ep {attempts - 1}  {'success' if success else 'failure'}", color)
                            for f in frames
                        ]
                    successes += success
                    if cfg.success_only and not success:
                        if attempts > 3 * cfg.episodes + 10:
                            raise RuntimeError(
                                f"the expert succeeded in only {successes}/{attempts} episodes; "
                                "Fix: lower noise=, or set success_only=false"
                            )
                        continue
                    extra = {} if expert.mode is None else {"mode": str(expert.mode)}
                    writer.append(b.finish(cfg.source, success=success, seed=seed, **extra))
                    kept += 1
                    lengths.append(len(b))
                    bar.update(1)
                    bar.set_postfix(success=f"{successes / attempts:.0%}")
                completed = True
            except KeyboardInterrupt:
                interrupted = True
            except BaseException as e:
                try:  # keep what was finished (overwrite=true: the old store stays, the episodes go to .partial)
                    where = writer.close(commit=False)
                except Exception as ce:  # noqa: BLE001 - the error in flight is the one to report
                    log.warning("%s", ce)
                    where = None
                if kept and where is not None and len(e.args) == 1 and isinstance(e.args[0], str):
                    e.args = (e.args[0] + kept_note(where),)
                raise
            final = writer.close(
                commit=completed
            )  # merges the journal; overwrite: replaces out= if completed
    finally:
        bar.close()
        env.close()
        try:
            writer.close(commit=False)  # a no-op once closed above: the safety net for the unforeseen
        except Exception as e:  # noqa: BLE001 - never hide the error in flight
            log.warning("%s", e)
    video = None
    if video_frames:
        video = str(
            write_video(Path(cfg.out).with_suffix(".mp4"), video_frames, fps=1.0 / (env_dt(env) or 0.05))
        )
    summary = {
        "file": str(cfg.out if final is None or Path(final) == Path(cfg.out) else final),
        "episodes_kept": kept,
        "episodes_run": attempts,
        "success_rate": successes / max(attempts, 1),
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
        "seconds": time.time() - t0,
        "interrupted": interrupted,
        "video": video,
    }
    if final is not None and Path(final) != Path(cfg.out):
        summary["note"] = kept_note(final).strip(" ;.")
    return summary
