"""Env-seed ranges: evaluation never starts from an initial state that training saw, by construction.

Every episode robolearn runs resets its env with an integer seed (the seed fixes the initial state). Each
kind of episode draws its seeds from its own range, and the ranges are disjoint:

    evaluation      [0, 10_000_000)            episode i of eval seed s: s * 10_000 + i, s in [0, 1000),
                                               i < 10_000 (`robolearn eval seeds=[...]`, trainers' evals)
    demos           [10_000_000, 20_000_000)   `robolearn record` (default seed=10000000: episode i uses
                                               10_000_000 + i), the loop's demo stage (10_000_000 +
                                               seed * 100_000 + i)
    DAgger          [20_000_000, 30_000_000)   learner rollouts: 20_000_000 + seed * 100_000 + round * 1000
                                               + episode
    SAC fine-tuning [30_000_000, 40_000_000)   online episodes: 30_000_000 + seed * 100_000 + episode

Why: a policy scored on its own demos' initial states is scored on what it memorised (the case a BC policy
gets most right), so its success rate overstates what it does on new starts. With disjoint ranges the
default `robolearn eval` (seeds=[0]: env seeds 0..episodes-1) is held out from any data robolearn records.
The demo range starts on the eval grid (10_000_000 = 1000 * 10_000), so a demo file's seeds can still be
named as an eval seed group when someone wants to check a policy on its training starts on purpose.

Checkpoints carry the env seeds of their training episodes (`train_seeds`), and `robolearn eval` refuses to
evaluate on any of them unless `allow_train_seeds=true` (then it warns and records the overlap).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

EPISODE_SEED_STRIDE = 10_000  # episode i of eval seed s starts from env seed s * EPISODE_SEED_STRIDE + i
EVAL_SEED_GROUPS = 1000  # eval seeds s in [0, EVAL_SEED_GROUPS)
EVAL_RANGE = range(0, EVAL_SEED_GROUPS * EPISODE_SEED_STRIDE)  # [0, 10_000_000)
DEMO_SEED_BASE = 10_000_000
DEMO_RANGE = range(DEMO_SEED_BASE, 20_000_000)
DAGGER_SEED_BASE = 20_000_000
DAGGER_RANGE = range(DAGGER_SEED_BASE, 30_000_000)
FINETUNE_SEED_BASE = 30_000_000
FINETUNE_RANGE = range(FINETUNE_SEED_BASE, 40_000_000)
RUN_SEED_STRIDE = 100_000  # per run seed (loop/DAgger/finetune `seed=`) inside a range: run seeds 0..99

RANGES = {
    "evaluation": EVAL_RANGE,
    "demos": DEMO_RANGE,
    "DAgger": DAGGER_RANGE,
    "SAC fine-tuning": FINETUNE_RANGE,
}

HELP = (
    "Env seeds (disjoint ranges, so evaluation never starts from a training episode's initial state):\n"
    "  evaluation  [0, 10000000)         episode i of eval seed s uses s*10000+i (seeds s in [0, 1000))\n"
    "  demos       [10000000, 20000000)  `robolearn record` (default seed=10000000; episode i uses seed+i)\n"
    "  DAgger      [20000000, 30000000)  learner rollouts\n"
    "  finetune    [30000000, 40000000)  SAC's online episodes\n"
    "Checkpoints record their training episodes' seeds; `robolearn eval` refuses to evaluate on them\n"
    "(allow_train_seeds=true: warn, and count them in results.json)."
)


def range_name(seed: int) -> str | None:
    """The name of the range `seed` lies in (None: outside every range)."""
    for name, r in RANGES.items():
        if seed in r:
            return name
    return None


def eval_seed(group: int, episode: int) -> int:
    """Episode `episode` of eval seed `group`."""
    return int(group) * EPISODE_SEED_STRIDE + int(episode)


def _in(name: str, r: range, seed: int, what: str) -> int:
    if seed not in r:
        raise ValueError(
            f"{what} gives env seed {seed}, outside the {name} range [{r.start}, {r.stop}) "
            f"(run seeds 0..{(r.stop - r.start) // RUN_SEED_STRIDE - 1} fit). Fix: use a smaller seed="
        )
    return seed


def demo_seed(run_seed: int, index: int) -> int:
    """The loop's demo episode `index` of run seed `run_seed` (`robolearn record` uses its own seed + i)."""
    s = DEMO_SEED_BASE + int(run_seed) * RUN_SEED_STRIDE + int(index)
    return _in("demos", DEMO_RANGE, s, f"seed={run_seed}, demo episode {index}")


def dagger_seed(run_seed: int, rnd: int, episode: int) -> int:
    """DAgger learner rollout `episode` of round `rnd` (unique per round while episode < 1000)."""
    s = DAGGER_SEED_BASE + int(run_seed) * RUN_SEED_STRIDE + int(rnd) * 1000 + int(episode)
    return _in("DAgger", DAGGER_RANGE, s, f"seed={run_seed}, round {rnd}, episode {episode}")


def finetune_seed(run_seed: int, episode: int) -> int:
    """SAC fine-tuning's online episode `episode` of run seed `run_seed`."""
    s = FINETUNE_SEED_BASE + int(run_seed) * RUN_SEED_STRIDE + int(episode)
    return _in("SAC fine-tuning", FINETUNE_RANGE, s, f"seed={run_seed}, online episode {episode}")


def store_seeds(info_or_path) -> tuple[list[int], int]:
    """-> (sorted env seeds of every episode of a store, count of episodes without a known seed).

    info_or_path: a `robolearn.data.store.StoreInfo` or the store's path. Every episode counts (train and
    valid splits alike: both are demo data); a missing or negative `seed` attr means unknown."""
    from robolearn.data.store import StoreInfo, read_info

    info = info_or_path if isinstance(info_or_path, StoreInfo) else read_info(info_or_path)
    raw = [int(a.get("seed", -1)) for a in info.episode_attrs.values()]
    return sorted({s for s in raw if s >= 0}), sum(s < 0 for s in raw)


def checkpoint_fields(seeds: Iterable[int], unknown: int = 0) -> dict:
    """The checkpoint keys naming the training episodes' env seeds: train_seeds (int64 tensor, sorted, unique)
    and train_seeds_unknown (episodes, or parent checkpoints, whose seeds are not known)."""
    return {"train_seeds": as_tensor(seeds), "train_seeds_unknown": int(unknown)}


def store_checkpoint_fields(info_or_path) -> dict:
    """checkpoint_fields of every episode of a store (see store_seeds)."""
    return checkpoint_fields(*store_seeds(info_or_path))


def merge_checkpoint_fields(fields: dict, *ckpts) -> dict:
    """`fields` plus the train seeds of checkpoints whose weights went into the new one (e.g. init_from);
    a checkpoint that does not record them adds 1 to train_seeds_unknown."""
    seeds = set(from_checkpoint(fields) or ())
    unknown = int(fields.get("train_seeds_unknown", 0))
    for ck in ckpts:
        more = from_checkpoint(ck)
        if more is None:
            unknown += 1
        else:
            seeds |= more
            unknown += int(ck.get("train_seeds_unknown", 0) or 0)
    return checkpoint_fields(seeds, unknown)


def as_tensor(seeds: Iterable[int]):
    """Sorted unique seeds as an int64 tensor (what checkpoints store: loadable with weights_only=True)."""
    import torch

    return torch.from_numpy(np.unique(np.asarray(list(seeds), dtype=np.int64)))


def from_checkpoint(ckpt) -> set[int] | None:
    """The `train_seeds` a checkpoint dict records (None: an older checkpoint that does not say)."""
    v = ckpt.get("train_seeds") if isinstance(ckpt, dict) else None
    if v is None:
        return None
    return {int(s) for s in np.asarray(v.cpu() if hasattr(v, "cpu") else v, dtype=np.int64).reshape(-1)}


def add_seeds(fields: dict, seeds: Iterable[int]) -> dict:
    """`fields` (checkpoint_fields) with more training seeds."""
    known = from_checkpoint(fields) or set()
    return checkpoint_fields(known | set(seeds), fields.get("train_seeds_unknown", 0))


def data_fields(store=None, *ckpts) -> dict:
    """checkpoint_fields of what a run learns from: a store's episodes (if given) and parent checkpoints."""
    return merge_checkpoint_fields(store_checkpoint_fields(store) if store else checkpoint_fields([]), *ckpts)


def warn_if_evaluated(fields: dict, groups: Iterable[int], episodes: int, who: str) -> None:
    """Log a warning when a trainer's own evaluations (eval seeds `groups`, `episodes` each) would start
    from its training seeds (data recorded with seed= in the evaluation range)."""
    import logging

    evals = {eval_seed(g, i) for g in groups for i in range(episodes)}
    hit = sorted((from_checkpoint(fields) or set()) & evals)
    if hit:
        logging.getLogger(__name__).warning(
            "warning: %d of %s's evaluation env seeds (%s) are training seeds of its data (recorded with "
            "seed= in the evaluation range?): those evaluations are not held out. Fix: record demos with the "
            "default seed (%d) and retrain", len(hit), who, ", ".join(map(str, hit[:5])), DEMO_SEED_BASE,
        )
