"""Evaluation rollouts on a FIXED list of initial states, so two checkpoints are compared on the same starts.

Episode seeds: episode i of evaluation seed s resets the env with seed ``s * 10_000 + i`` (EPISODE_SEED_STRIDE),
whatever the number of workers. Eval seeds s in [0, 1000) cover env seeds [0, 10_000_000), a range that no
recorded demo, DAgger rollout or fine-tuning episode uses (robolearn.seeds); `evaluate` also refuses a
checkpoint whose `train_seeds` meet the evaluated env seeds (allow_train_seeds=true: warn and count them).
The policy's sampling noise comes from one ``torch.Generator`` seeded with
the first evaluation seed, so rerunning the same config (same seeds, episodes, workers) reproduces every
per-episode result. Stochastic heads (diffusion, flow, gmm, tokenized) draw noise for the whole batch of
envs at once, so a different ``workers`` may change individual episodes (not the initial states); the
scripted/random references and deterministic heads (mse) do not depend on it.

Vector envs: ``SyncVectorEnv`` (workers=1) or ``AsyncVectorEnv`` (workers>1, one subprocess per env), both with
autoreset DISABLED: Gymnasium's autoreset would restart an env with an unseeded reset, breaking the fixed seed
list, so each finished env is reset explicitly (``reset_mask``) with the next episode's seed. When the list
runs dry, finished envs idle (still stepped, results ignored) until the last episode ends.

The scripted expert reads its env's simulator state, so it cannot live in this process when the env lives in
a worker: reference actors (scripted/random) run inside each env as a wrapper (`_ReferenceActor`) that
replaces the (ignored) action it is sent.

    evaluate(cfg)                       # `robolearn eval`: checkpoint file -> results folder
    evaluate_policy(policy, env_id, env_kwargs, episodes=20)   # in-memory Policy, for trainers
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from robolearn.envutil import env_dt, is_robolearn_task, make_env
from robolearn.eval.metrics import summarize
from robolearn.seeds import EPISODE_SEED_STRIDE, EVAL_RANGE, EVAL_SEED_GROUPS, range_name

log = logging.getLogger(__name__)

REFERENCE_POLICIES = ("scripted", "random")
SAC_PREFIX = "sac:"  # policy="sac:<path>": a `robolearn finetune` checkpoint, acting inside each env
SUCCESS_COLOR, FAILURE_COLOR = (0, 200, 0), (220, 0, 0)


from robolearn.eval.results import CSV_FIELDS, check_out_dir, print_summary, write_results  # noqa: E402,F401


class EvalError(ValueError):
    """The evaluation cannot run as asked (policy/env mismatch, missing env id, ...); the message says why."""


def episode_seeds(seeds: int | Sequence[int], episodes: int) -> list[tuple[int, int, int]]:
    """-> [(seed_group s, episode i, env seed s*10_000 + i)] in evaluation order (seed-major)."""
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    if episodes > EPISODE_SEED_STRIDE:
        raise EvalError(f"episodes={episodes} per seed > {EPISODE_SEED_STRIDE}: seed ranges would overlap")
    return [(int(s), i, int(s) * EPISODE_SEED_STRIDE + i) for s in seeds for i in range(episodes)]


# ------------------------------------------------------------------------------------------------ envs
class _ReferenceActor(gym.Wrapper):
    """Acts with an in-env actor instead of the action it receives: the task's scripted expert, a uniform
    random actor, a fine-tuned SAC checkpoint ("sac:<path>", loaded inside the worker) or any object with
    `reset()` and `act(obs) -> action` (in-process only). Scripted/random actors are re-seeded with the
    episode's env seed at every reset, so their noise is fixed per episode."""

    def __init__(self, env: gym.Env, kind, noise: float = 0.0):
        super().__init__(env)
        from robolearn.recording import make_expert

        if isinstance(kind, str) and kind.startswith(SAC_PREFIX):
            from robolearn.algos.finetune import load_finetuned

            kind = load_finetuned(kind[len(SAC_PREFIX) :])
        if isinstance(kind, str):
            self.actor, self._seeded = make_expert(env, kind, noise=noise, seed=0), True
        else:
            self.actor, self._seeded = kind, False
        self._obs = None

    def reset(self, *, seed=None, options=None):
        self._obs, info = self.env.reset(seed=seed, options=options)
        if self._seeded:
            self.actor.reset(seed=seed)
        else:
            self.actor.reset()
        return self._obs, info

    def step(self, action):
        self._obs, r, term, trunc, info = self.env.step(self.actor.act(self._obs))
        return self._obs, r, term, trunc, info


def _make_eval_env(
    env_id: str, env_kwargs: dict, render: bool, reference: str | None, noise: float
) -> gym.Env:
    """Top-level (picklable) env factory for the vector envs' workers."""
    env = make_env(env_id, render_mode="rgb_array" if render else None, **env_kwargs)
    if reference is not None:
        env = _ReferenceActor(env, reference, noise)
    return env


def check_compatible(spec: dict, obs_space: gym.spaces.Dict, action_space: gym.Space, env_id: str) -> None:
    """Raise EvalError naming both sides if a policy spec does not fit the env's spaces."""
    env_obs = {k: tuple(s.shape) for k, s in obs_space.spaces.items()}
    pol_obs = {k: tuple(v["shape"]) for k, v in spec["obs"].items()}
    missing = sorted(set(pol_obs) - set(env_obs))
    if missing:
        raise EvalError(
            f"the policy needs observation keys {missing} that env {env_id!r} does not provide; policy obs "
            f"keys {sorted(pol_obs)}, env obs keys {sorted(env_obs)} (wrong env, or wrong obs_mode?)"
        )
    bad = {k: (pol_obs[k], env_obs[k]) for k in pol_obs if pol_obs[k] != env_obs[k]}
    if bad:
        detail = ", ".join(f"{k!r}: policy {p} vs env {e}" for k, (p, e) in bad.items())
        raise EvalError(f"observation shapes differ between the policy and env {env_id!r}: {detail}")
    shape = getattr(action_space, "shape", None)
    env_da = int(shape[0]) if shape is not None and len(shape) == 1 else None
    if env_da is None:
        raise EvalError(
            f"env {env_id!r} has a non-Box action space {action_space}; policies output Box actions"
        )
    if int(spec["action_dim"]) != env_da:
        raise EvalError(
            f"action dimension mismatch: the policy outputs action_dim={spec['action_dim']} but env "
            f"{env_id!r} takes {env_da} (a checkpoint trained on another env?)"
        )


# --------------------------------------------------------------------------------------------- rollout
def evaluate_policy(
    policy: Any,
    env_id: str,
    env_kwargs: dict | None = None,
    episodes: int = 10,
    seed: int | Sequence[int] = 0,
    workers: int = 1,
    video_dir: str | Path | None = None,
    videos: int = 0,
    Ta: int | None = None,
    temporal_ensemble: bool = False,
    noise: float = 0.0,
    on_episode: Callable[[dict], None] | None = None,
    plan: Sequence[tuple[int, int, int]] | None = None,
) -> dict:
    """Roll out `policy` for `episodes` episodes per seed on the fixed seeds; returns the summary metrics.

    policy: an in-memory ``robolearn.policies.Policy`` (any device; its train/eval flag is restored) or
    "scripted" / "random" (reference actors). Never trains, never writes a dataset.
    seed: one evaluation seed or several; episode i of seed s uses env seed s*10_000 + i.
    video_dir/videos: write the first `videos` episodes as video_dir/episode_<k>.mp4.
    Ta: actions executed per plan (None = the policy's Ta); temporal_ensemble: ACT-style averaging.
    on_episode: called with each finished episode's record (e.g. a progress bar).
    plan: run only these (seed_group, episode, env seed) entries of `episode_seeds` (a worker's share under
    backend=ray, robolearn.scale.ray_eval); records' ``index`` is then the position in `plan`.

    Returns the metrics of `robolearn.eval.metrics.summarize` plus ``env``, ``env_kwargs``, ``dt``,
    ``wall_s``, ``episodes_per_s``, ``videos`` (paths) and ``records`` (one dict per episode, in order).
    """
    env_kwargs = dict(env_kwargs or {})
    plan = episode_seeds(seed, episodes) if plan is None else [tuple(map(int, p)) for p in plan]
    in_env_actor = hasattr(policy, "act") and hasattr(policy, "reset") and not hasattr(policy, "spec")
    reference = policy if isinstance(policy, str) or in_env_actor else None
    if (
        isinstance(reference, str)
        and reference not in REFERENCE_POLICIES
        and not reference.startswith(SAC_PREFIX)
    ):
        raise EvalError(
            f"policy={reference!r} is not valid here; valid options: Policy object, {REFERENCE_POLICIES}, "
            f"'{SAC_PREFIX}<finetune checkpoint>', an actor with reset()/act()"
        )
    if in_env_actor and workers > 1:
        workers = 1  # an in-memory actor object lives in this process
    if videos and video_dir is None:
        raise EvalError(f"videos={videos} needs video_dir")

    # Everything that can be wrong is checked on one probe env, before any worker starts or any step runs.
    probe = make_env(env_id, **env_kwargs)
    try:
        dt = env_dt(probe) or 1.0 / float(probe.metadata.get("render_fps", 20) or 20)
        if reference is None:
            check_compatible(policy.spec, probe.observation_space, probe.action_space, env_id)
        elif reference == "scripted":
            try:
                _ReferenceActor(probe, "scripted", noise)
            except ValueError as e:
                raise EvalError(str(e)) from None
    finally:
        probe.close()
    Ta = int(Ta) if Ta is not None else None
    if reference is None:
        Ta = Ta or policy.Ta
        if not 1 <= Ta <= policy.Tp:
            raise EvalError(f"Ta={Ta} must be in [1, Tp={policy.Tp}] for this policy")

    W = max(1, min(int(workers), len(plan)))
    fn = functools.partial(_make_eval_env, env_id, env_kwargs, videos > 0, reference, noise)
    vec_cls = gym.vector.AsyncVectorEnv if W > 1 else gym.vector.SyncVectorEnv
    # forkserver: a forked child of a process that already holds an EGL/OpenMP context can hang
    kw = {"context": "forkserver"} if W > 1 else {}
    envs = vec_cls([fn] * W, autoreset_mode=gym.vector.AutoresetMode.DISABLED, **kw)
    t0 = time.perf_counter()
    try:
        records, video_paths = _rollout(
            envs,
            W,
            policy if reference is None else None,
            plan,
            dt,
            Ta,
            temporal_ensemble,
            videos,
            video_dir,
            on_episode,
        )
    finally:
        envs.close()
    wall = time.perf_counter() - t0
    out = summarize(records, dt)
    out.update(
        env=env_id,
        env_kwargs=env_kwargs,
        dt=dt,
        wall_s=wall,
        episodes_per_s=len(records) / wall,
        videos=video_paths,
        records=records,
    )
    return out


def _rollout(envs, W, policy, plan, dt, Ta, temporal_ensemble, videos, video_dir, on_episode):
    from robolearn.eval.video import mark_frame, write_video
    from robolearn.policies.chunking import ActionChunker, ObsHistory

    queue = deque(enumerate(plan))  # (index, (seed_group, episode, env_seed))
    slots: list[tuple | None] = [queue.popleft() if queue else None for _ in range(W)]
    ret, length, first = np.zeros(W), np.zeros(W, int), [None] * W
    best = np.full(W, np.nan)  # best info["score"] of the episode (PushT: diffusion_policy's coverage score)
    frames: list[list | None] = [None] * W
    records: list[dict | None] = [None] * len(plan)
    video_paths: list[str] = []
    act_dim = envs.single_action_space.shape
    history = chunker = gen = None
    if policy is not None:
        history, chunker = ObsHistory(policy.To), ActionChunker(Ta, temporal_ensemble=temporal_ensemble)
        gen = torch.Generator(device=policy.device).manual_seed(plan[0][0])

    def start(j):  # per-slot bookkeeping for the episode now in slot j
        ret[j], length[j], first[j], best[j] = 0.0, 0, None, np.nan
        frames[j] = [] if slots[j] is not None and slots[j][0] < videos else None

    def capture(fresh_only: bool = False):  # one frame for each slot recording a video
        want = [f is not None and (not fresh_only or not f) for f in frames]
        if any(want):
            for j, img in enumerate(envs.call("render")):
                if want[j]:
                    frames[j].append(np.asarray(img))

    obs, _ = envs.reset(seed=[s[1][2] if s is not None else None for s in slots])
    for j in range(W):
        start(j)
    capture()
    if history is not None:
        history.reset(obs)

    while any(s is not None for s in slots):
        if policy is not None:
            action = chunker.act(policy, history.get(), generator=gen).detach().cpu().numpy()
        else:  # the reference actor inside each env picks the action
            action = np.zeros((W, *act_dim), np.float32)
        obs, r, term, trunc, info = envs.step(action.astype(np.float32, copy=False))
        succ = np.asarray(info.get("is_success", np.zeros(W, bool)), bool) & np.asarray(
            info.get("_is_success", np.ones(W, bool)), bool
        )
        active = np.array([s is not None for s in slots])
        if "score" in info:
            sc = np.where(
                np.asarray(info.get("_score", np.ones(W, bool)), bool),
                np.asarray(info["score"], float),
                np.nan,
            )
            best = np.where(active & ~np.isnan(sc), np.fmax(best, sc), best)
        ret += np.where(active, r, 0.0)
        length += active
        for j in np.flatnonzero(active & succ):
            if first[j] is None:
                first[j] = int(length[j])
        capture()
        done = np.asarray(term) | np.asarray(trunc)
        finished = done & active
        for j in np.flatnonzero(finished):
            k, (group, i, env_seed) = slots[j]
            success = first[j] is not None
            rec = {
                "index": k,
                "seed_group": group,
                "episode": i,
                "seed": env_seed,
                "success": success,
                "return": float(ret[j]),
                "length": int(length[j]),
                "steps_to_success": first[j],
                "time_to_success_s": None if first[j] is None else first[j] * dt,
                "score": None if np.isnan(best[j]) else float(best[j]),
                "video": None,
            }
            if frames[j] is not None:
                label = f"ep {k}  seed {env_seed}  {'success' if success else 'failure'}"
                color = SUCCESS_COLOR if success else FAILURE_COLOR
                path = Path(video_dir) / f"episode_{k}.mp4"
                write_video(path, [mark_frame(f, label, color) for f in frames[j]], fps=1.0 / dt)
                rec["video"] = str(path)
                video_paths.append(str(path))
            records[k] = rec
            slots[j] = queue.popleft() if queue else None
            start(j)
            if on_episode is not None:
                on_episode(rec)
        if done.any() and any(s is not None for s in slots):
            # finished (and idle-but-terminated) envs restart; only real episodes get a fixed seed
            seeds = [slots[j][1][2] if done[j] and slots[j] is not None else None for j in range(W)]
            new_obs, _ = envs.reset(seed=seeds, options={"reset_mask": done})
            obs = {
                key: np.where(done.reshape(-1, *[1] * (v.ndim - 1)), new_obs[key], v)
                for key, v in obs.items()
            }
            capture(fresh_only=True)  # the first frame of video episodes that just started
        if history is not None:
            history.reset(mask=done)
            history.push(obs)
            chunker.reset(mask=finished)
    return records, video_paths


# ------------------------------------------------------------------------------------------ checkpoints
def load_checkpoint(path: str | Path, device: str = "cpu"):
    """-> (Policy in eval mode, env_id or None, env_kwargs dict). Reads the file only (weights_only load)."""
    from robolearn.policies.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path, expect=None, field="policy", map_location=device)
    return _from_checkpoint(ckpt, path, device)


def _from_checkpoint(ckpt, path: str | Path, device: str):
    """A checkpoint dict read from `path` -> what load_checkpoint returns."""
    from robolearn.policies.checkpoint import CheckpointError, build_policy

    env_kwargs = ckpt.get("env_kwargs") or {} if isinstance(ckpt, dict) else {}
    if isinstance(env_kwargs, str):  # trainers store it as JSON text
        env_kwargs = json.loads(env_kwargs)
    if isinstance(ckpt, dict) and ckpt.get("format") == "robolearn-sac/1":
        # a `robolearn finetune` checkpoint: its actor runs inside each env (see _ReferenceActor)
        return f"{SAC_PREFIX}{path}", ckpt.get("env_id"), dict(env_kwargs)
    try:
        policy = build_policy(ckpt)
    except CheckpointError as e:
        raise CheckpointError(f"{str(path)!r}: {e}") from None
    return policy.to(device), ckpt.get("env_id"), dict(env_kwargs)


def _resolve(cfg):
    """cfg -> (policy object or reference name, env_id, env_kwargs, train seeds).

    train seeds: (set of env seeds the checkpoint was trained on, episodes of unknown seed), or None for a
    checkpoint that does not record them; (set(), 0) for the reference actors (no training data)."""
    from robolearn.policies.checkpoint import read_checkpoint
    from robolearn.seeds import from_checkpoint

    train: tuple[set[int], int] | None = (set(), 0)
    if cfg.policy in REFERENCE_POLICIES:
        policy, ckpt_env, ckpt_kwargs = cfg.policy, None, {}
    else:
        ckpt = read_checkpoint(cfg.policy, expect=None, field="policy", map_location=cfg.device)
        seeds = from_checkpoint(ckpt)
        train = None if seeds is None else (seeds, int(ckpt.get("train_seeds_unknown", 0) or 0))
        policy, ckpt_env, ckpt_kwargs = _from_checkpoint(ckpt, cfg.policy, cfg.device)
    env_id = cfg.env or ckpt_env
    if env_id is None:
        raise EvalError(
            f"the checkpoint {cfg.policy!r} does not record its env_id; give env=... (e.g. "
            "env=robolearn/Lift-v0)"
        )
    if cfg.env and ckpt_env and cfg.env != ckpt_env:
        log.warning("evaluating on env=%s, but the checkpoint was trained on %s", cfg.env, ckpt_env)
    env_kwargs = dict(ckpt_kwargs) if (env_id == ckpt_env) else {}
    if is_robolearn_task(env_id):
        env_kwargs.setdefault("obs_mode", "state")
        env_kwargs.setdefault("reward_type", "dense")
        if cfg.obs_mode is not None:
            env_kwargs["obs_mode"] = cfg.obs_mode
        if cfg.reward_type is not None:
            env_kwargs["reward_type"] = cfg.reward_type
    return policy, env_id, env_kwargs, train


def _groups(seeds) -> str:
    return str(sorted({int(s) // EPISODE_SEED_STRIDE for s in seeds}))


def check_train_seeds(cfg, train: tuple[set[int], int] | None) -> int | None:
    """Before any rollout: the evaluated env seeds must not be the checkpoint's training seeds.

    Raises EvalError naming the overlap, the rule and the fix (allow_train_seeds=true: a warning instead).
    Returns the number of evaluated env seeds that are training seeds (None: the checkpoint does not say)."""
    plan = [env_seed for _, _, env_seed in episode_seeds(cfg.seeds, cfg.episodes)]
    seeds, unknown = train if train is not None else (set(), 0)
    hit = sorted(set(plan) & seeds)
    first = ", ".join(map(str, hit[:5])) + (", ..." if len(hit) > 5 else "")
    what = (
        f"{len(hit)} of the {len(plan)} env seeds this evaluation starts from ({first}; eval seed group(s) "
        f"{_groups(hit)}) are initial states of {cfg.policy}'s training episodes (its train_seeds)"
    )
    if hit and not cfg.allow_train_seeds:
        stride = EPISODE_SEED_STRIDE
        bad = {s // stride for s in seeds if s in EVAL_RANGE and s % stride < cfg.episodes}
        free = ",".join(map(str, [g for g in range(EVAL_SEED_GROUPS) if g not in bad][: len(cfg.seeds)]))
        raise EvalError(
            f"refusing to evaluate on training seeds: {what}, so the score would measure recall of the "
            f"demos, not the policy. Rule: episode i of eval seed s starts from env seed s*{stride}+i; eval "
            "seeds s in [0, 1000) are held out from everything robolearn records (demos start at env seed "
            f"10000000, DAgger at 20000000, finetune at 30000000). Fix: seeds=[{free}] (no training seed in "
            "them), or allow_train_seeds=true to score these episodes anyway (a warning, and results.json "
            "counts them)"
        )
    if hit:
        log.warning(
            "warning: allow_train_seeds=true: %s; these episodes are not held out (results.json: "
            "overlaps_training_seeds=%d)",
            what,
            len(hit),
        )
    if train is None:
        log.warning(
            "warning: %s records no train_seeds (an older checkpoint): overlap of the evaluated env seeds "
            "with its training data cannot be checked",
            cfg.policy,
        )
    elif unknown:
        log.warning(
            "warning: %d training episode(s) of %s have no recorded env seed: overlap with them cannot be "
            "checked",
            unknown,
            cfg.policy,
        )
    outside = sorted({s for s in plan if s not in EVAL_RANGE})
    if outside and (train is None or unknown):
        log.warning(
            "warning: eval seed group(s) %s start from env seeds outside the evaluation range [0, %d) (in "
            "the %s seed range), where robolearn records training episodes",
            _groups(outside),
            EVAL_RANGE.stop,
            "/".join(sorted({str(range_name(s)) for s in outside})),
        )
    return None if train is None else len(hit)


def evaluate(cfg, show: bool = True) -> dict:
    """`robolearn eval`: evaluate cfg.policy (checkpoint | scripted | random) and write cfg.out/.

    Writes results.json (config + metrics), episodes.csv and episodes.json (one row per episode) and
    videos/episode_<k>.mp4 for the first cfg.videos episodes. show: tqdm bar and a rich summary table.
    Returns the results.json dict.
    """
    out = Path(cfg.out)
    check_out_dir(out)
    policy, env_id, env_kwargs, train = _resolve(cfg)
    from robolearn.threads import apply as apply_threads

    apply_threads(0, policy.num_params() if hasattr(policy, "num_params") else None, "eval")
    overlap = check_train_seeds(cfg, train)
    total = cfg.episodes * len(cfg.seeds)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"eval {env_id}", unit="ep")
    n_succ = [0]

    def on_episode(rec):
        if bar is not None:
            n_succ[0] += rec["success"]
            bar.update(1)
            bar.set_postfix(success=f"{n_succ[0] / bar.n:.0%}")

    run = evaluate_policy
    if cfg.backend == "ray":  # the episode seeds split across Ray workers; same per-episode results
        from robolearn.scale.ray_eval import evaluate_policy_ray

        run = functools.partial(evaluate_policy_ray, address=cfg.address)
    try:
        res = run(
            policy,
            env_id,
            env_kwargs,
            episodes=cfg.episodes,
            seed=list(cfg.seeds),
            workers=cfg.workers,
            video_dir=out / "videos",
            videos=cfg.videos,
            Ta=cfg.Ta,
            temporal_ensemble=cfg.temporal_ensemble,
            noise=cfg.noise,
            on_episode=on_episode,
        )
    finally:
        if bar is not None:
            bar.close()
    records = res.pop("records")
    policy_info: dict[str, Any] = {
        "kind": cfg.policy
        if cfg.policy in REFERENCE_POLICIES
        else "sac checkpoint"
        if isinstance(policy, str)
        else "checkpoint"
    }
    if not isinstance(policy, str):
        policy_info.update(head=policy.cfg.head, To=policy.To, Tp=policy.Tp, Ta=cfg.Ta or policy.Ta)
    results = {
        "policy": cfg.policy,
        "policy_info": policy_info,
        **{k: res[k] for k in ("env", "env_kwargs")},
        "episodes_per_seed": cfg.episodes,
        "seeds": list(cfg.seeds),
        "episode_seed_rule": f"env seed = seed * {EPISODE_SEED_STRIDE} + episode",
        "overlaps_training_seeds": overlap,
        "workers": cfg.workers,
        "backend": cfg.backend,
        "temporal_ensemble": cfg.temporal_ensemble,
        "noise": cfg.noise,
        **{k: v for k, v in res.items() if k not in ("env", "env_kwargs")},
    }
    write_results(out, results, records)
    if show:
        print_summary(results, out)
    return results
