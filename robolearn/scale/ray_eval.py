"""`robolearn eval ... backend=ray workers=N`: the fixed episode seeds split across N Ray workers.

The plan (episode i of eval seed s starts from env seed s*10000+i, robolearn.eval.runner.episode_seeds) is cut
into N contiguous shares; each Ray task runs the local runner (`evaluate_policy(..., workers=1, plan=share)`)
on its share and the records are merged back in plan order, so results.json / episodes.json have exactly the
local runner's shape and order.

Same results as the local runner, episode by episode, for every policy whose actions depend only on the
episode (the rule is the local runner's own, see its `workers=`): the scripted/random references (re-seeded
from each episode's env seed), deterministic heads (mse, gmm sample_mode=mode) and fine-tuned SAC checkpoints
(evaluated with their mean action). Stochastic heads (diffusion, flow, tokenized, gmm sampling) draw their
noise per batch of envs from one generator, so like a different local `workers=` a different split changes
individual episodes (never the initial states); compare them on aggregate metrics. The local runner is
unchanged.

Videos: the first `videos` episodes, written by the worker holding them (the first share) into
`video_dir` - on a cluster that folder must be on storage the workers share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.scale import connect, unwrap


def shares(n: int, workers: int) -> list[range]:
    """Contiguous index ranges, as even as possible, none empty: shares(5, 2) -> [range(0, 3), range(3, 5)]."""
    w = max(1, min(int(workers), n))
    cuts = np.linspace(0, n, w + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _eval_share(policy, env_id, env_kwargs, plan, video_dir, videos, Ta, temporal_ensemble, noise) -> dict:
    """Ray task: the local runner on one share of the plan (one env, this worker's one torch thread)."""
    import torch

    from robolearn.eval.runner import evaluate_policy

    torch.set_num_threads(1)
    return evaluate_policy(
        policy,
        env_id,
        env_kwargs,
        episodes=1,
        seed=0,
        workers=1,
        video_dir=video_dir,
        videos=videos,
        Ta=Ta,
        temporal_ensemble=temporal_ensemble,
        noise=noise,
        plan=plan,
    )


def evaluate_policy_ray(
    policy: Any,
    env_id: str,
    env_kwargs: dict | None = None,
    episodes: int = 10,
    seed: int | Sequence[int] = 0,
    workers: int = 2,
    video_dir: str | Path | None = None,
    videos: int = 0,
    Ta: int | None = None,
    temporal_ensemble: bool = False,
    noise: float = 0.0,
    on_episode: Callable[[dict], None] | None = None,
    address: str | None = None,
) -> dict:
    """`robolearn.eval.runner.evaluate_policy` with the episodes split across `workers` Ray tasks; returns the
    same dict (``records`` in plan order, ``index`` = position in the whole plan). address: see
    robolearn.scale.connect (None = a local Ray instance)."""
    from robolearn.eval.metrics import summarize
    from robolearn.eval.runner import EvalError, episode_seeds

    plan = episode_seeds(seed, episodes)
    if videos and video_dir is None:
        raise EvalError(f"videos={videos} needs video_dir")
    ray, started = connect(address)
    t0 = time.perf_counter()
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(_eval_share)
        pol = ray.put(policy)  # one copy in the object store, shared by the tasks
        refs = {}
        for r in shares(len(plan), workers):
            sub = [plan[i] for i in r]
            v = max(0, min(videos, len(r))) if r.start == 0 else 0  # only the first share holds episodes < videos
            ref = task.remote(pol, env_id, dict(env_kwargs or {}), sub, None if not v else str(video_dir), v, Ta,
                              temporal_ensemble, noise)
            refs[ref] = r.start
        records: list[dict | None] = [None] * len(plan)
        video_paths: list[str] = []
        dt = None
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                res = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - the worker's own error (EvalError...) comes back unwrapped
                raise unwrap(e) from None
            dt = res["dt"]
            video_paths += res["videos"]
            for rec in res["records"]:
                rec["index"] = int(rec["index"]) + refs[done[0]]
                records[rec["index"]] = rec
                if on_episode is not None:
                    on_episode(rec)
    finally:
        if started:
            ray.shutdown()
    wall = time.perf_counter() - t0
    out = summarize(records, dt)
    out.update(
        env=env_id,
        env_kwargs=dict(env_kwargs or {}),
        dt=dt,
        wall_s=wall,
        episodes_per_s=len(records) / wall,
        videos=sorted(video_paths),
        records=records,
    )
    return out


__all__ = ["evaluate_policy_ray", "shares"]
