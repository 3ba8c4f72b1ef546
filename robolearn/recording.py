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
from robolearn.errors import UserError
from robolearn.signals import interruptible, stop_point

log = logging.getLogger(__name__)


def make_expert(
    env, kind: str = "scripted", noise: float = 0.0, seed: int | None = None, deterministic: bool = True
):
    """The actor that records `env`: its scripted expert, a uniform random actor, or a trained policy given as a
    checkpoint path (a BC policy, or a fine-tuned / from-scratch SAC actor: see CheckpointActor)."""
    if kind == "random":
        return RandomActor(env.action_space, seed)
    if kind not in ("scripted", "random") and (str(kind).endswith(".pt") or Path(kind).is_file()):
        return CheckpointActor(env, kind, deterministic=deterministic, noise=noise, seed=seed)
    if kind != "scripted":
        raise ValueError(
            f"expert={kind!r} is not valid; valid options: 'scripted', 'random', or a checkpoint file (.pt)"
        )
    import robolearn_envs

    spec_id = env.spec.id if env.spec is not None else "?"
    from robolearn_envs import suites

    if suites.is_suite_id(spec_id):  # Meta-World's scripted policies, our gym-hil PandaPickCube expert
        return suites.make_expert(env, noise=noise, seed=seed)
    if not spec_id.startswith("robolearn/"):
        raise ValueError(
            f"env={spec_id!r} has no scripted expert (only robolearn/... tasks ship one). "
            "Fix: record a robolearn task, or collect data with a policy (robolearn eval/finetune)"
        )
    return robolearn_envs.make_expert(env, noise=noise, seed=seed)


class CheckpointActor:
    """A trained policy as the demonstrator (e.g. a SAC agent on Hopper-v5 recording demos for BC).

    `deterministic`: SAC actors act with their mean action (False: sampled); BC heads sample as they were
    trained (stochastic heads draw from a generator re-seeded with each episode's seed, so a recording is
    reproducible). `noise` adds Gaussian noise to the actions like the scripted experts' noise=."""

    mode = None

    def __init__(self, env, path, deterministic: bool = True, noise: float = 0.0, seed: int | None = None):
        from robolearn.policies.checkpoint import SAC_FORMAT, build_policy, read_checkpoint

        ck = read_checkpoint(path, expect=None, field="expert")
        env_id = env.spec.id if env.spec is not None else None
        if ck.get("env_id") and env_id and ck["env_id"] != env_id:
            raise ValueError(
                f"expert={path!r} was trained on env {ck['env_id']!r}, not {env_id!r}. Fix: env={ck['env_id']}"
            )
        if ck["format"] == SAC_FORMAT:
            from robolearn.algos.finetuned import sac_actor_from_checkpoint

            self.actor, self._seedable = sac_actor_from_checkpoint(ck, deterministic=deterministic), False
        else:
            from robolearn.eval.runner import check_compatible
            from robolearn.policies.chunking import PolicyAgent

            policy = build_policy(ck)
            check_compatible(policy.spec, env.observation_space, env.action_space, env_id or "?")
            self.actor, self._seedable = PolicyAgent(policy, seed=seed or 0), True
        self.space = env.action_space
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if self._seedable:
            self.actor.reset(seed=seed)
        else:
            self.actor.reset()

    def act(self, obs):
        from robolearn_envs.base import add_noise

        return add_noise(self, self.actor.act(obs), self.space.low, self.space.high)


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


def run_episode(env, act: Callable, seed: int, render: bool = False, on_step=None, label: Callable | None = None):
    """Roll out one episode; returns (EpisodeBuilder, last info, frames). `label()`, if given, is the action
    stored for each step (called after `act`), in place of the executed one."""
    obs, info = env.reset(seed=seed)
    b = EpisodeBuilder(obs, get_state(env))
    frames = [env.render()] if render else []
    while True:
        stop_point()
        a = np.asarray(act(obs), np.float32)
        stored = a if label is None else np.asarray(label(), np.float32)
        obs, r, term, trunc, info = env.step(a)
        b.add(stored, obs, r, term, get_state(env))
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

    extra = dict(cfg.env_kwargs or {})
    env_kwargs = {"obs_mode": cfg.obs_mode, "reward_type": cfg.reward_type, **extra}
    env = make_env(cfg.env, render_mode="rgb_array" if cfg.video else None, **env_kwargs)
    try:
        expert = make_expert(env, cfg.expert, noise=cfg.noise, seed=cfg.seed, deterministic=cfg.deterministic)
        # one writer per store (a second `record` into the same out= fails at once); overwrite=true records
        # into a .partial file that replaces out= only when the recording completes
        writer = EpisodeWriter(
            cfg.out,
            cfg.env,
            env_kwargs if cfg.env.startswith("robolearn/") else extra,
            env.observation_space,
            env.action_space,
            overwrite=cfg.overwrite,
        )
    except BaseException:
        env.close()
        raise
    # label=clean (DART): store the expert's noise-free action, which its act() just set
    label = (lambda: expert.clean_action) if cfg.label == "clean" else None
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
        with interruptible(deferred=True):  # signals only set a flag here: close() runs undisturbed
            try:
                while kept < cfg.episodes:
                    seed = cfg.seed + attempts
                    attempts += 1
                    expert.reset(seed=seed)
                    render = cfg.video and attempts <= cfg.video_episodes
                    b, info, frames = run_episode(env, expert.act, seed, render=render, label=label)
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
                            raise UserError(
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
            except KeyboardInterrupt as e:
                interrupted = getattr(e, "signum", 2)  # 2 = SIGINT, 15 = SIGTERM: the exit code is 128 + it
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
        "interrupted": bool(interrupted),
        **({"signal": int(interrupted)} if interrupted else {}),
        "video": video,
    }
    if final is not None and Path(final) != Path(cfg.out):
        summary["note"] = kept_note(final).strip(" ;.")
    return summary
