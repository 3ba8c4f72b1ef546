"""robolearn's Python API: every stage of the loop as a function that takes typed configs (or keyword arguments
that build them) and returns results. The `robolearn` CLI is a thin layer over these functions.

    import robolearn as rl

    rl.record(env="robolearn/ReachAround-v0", episodes=20, out="demos.hdf5")
    run = rl.train(data="demos.hdf5", policy="flow", out="runs/bc", steps=2000)
    res = rl.evaluate(run.checkpoint, episodes=50)              # results.json as a dict
    agent = rl.load_policy(run.checkpoint)                      # .reset(), .act(obs) -> action
    rl.dagger(policy=run.checkpoint, data="demos.hdf5", out="runs/dagger", rounds=2)
    rl.finetune(policy=run.checkpoint, demos="demos.hdf5", out="runs/sac", steps=5000)
    rl.run_loop(env="robolearn/Lift-v0", policy="flow", out="runs/loop")

An interrupt (Ctrl-C, SIGTERM) raises `robolearn.signals.Interrupted` after the stage has saved what it had;
calling the same function again with `resume=True` (train, finetune) or the same `out` (dagger, loop)
continues. Errors a user can fix are `ConfigError`, `StoreError`, `CheckpointError`, `EvalError`, all
ValueErrors whose message names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robolearn.policies.chunking import PolicyAgent


@dataclass
class RunResult:
    """What a training stage left behind: its folder, its checkpoint and its summary metrics."""

    out: Path
    checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)

    def load_policy(self, **kw) -> Agent:
        if self.checkpoint is None:
            raise ValueError(f"{self.out}: this run has no checkpoint")
        return load_policy(self.checkpoint, **kw)


def _split(cls, kw: dict) -> tuple[dict, dict]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in kw.items() if k in names}, {k: v for k, v in kw.items() if k not in names}


def _train_loop(base, train, rest: dict, where: str):
    """A TrainLoopConfig from `train` (config, dict or None) plus loose keyword fields (steps=, lr=, ...)."""
    from robolearn.algos.bc import TrainLoopConfig

    if isinstance(train, TrainLoopConfig):
        base = train
        train = None
    fields_, unknown = _split(TrainLoopConfig, {**(train or {}), **rest})
    if unknown:
        raise TypeError(f"{where}: unknown argument(s) {sorted(unknown)}")
    return dataclasses.replace(base, **fields_)


def _stopped(summary: dict, what: str) -> dict:
    from robolearn.signals import Interrupted

    if summary.get("interrupted"):
        raise Interrupted(
            summary.get("signal", 2), f"{what} interrupted; checkpoint saved ({summary.get('checkpoint')})"
        )
    return summary


# ------------------------------------------------------------------------------------------------ stages
def record(cfg=None, **kw) -> dict:
    """Record episodes with the task's scripted expert into an HDF5 store (appends if it exists).
    Keyword arguments are `RecordConfig` fields: env, episodes, out, seed, noise, obs_mode, success_only, ...
    Returns the summary (episodes kept, success rate, file)."""
    from robolearn.config import RecordConfig
    from robolearn.recording import record as _record

    cfg = cfg or RecordConfig(**kw)
    return _stopped(_record(cfg), "recording")


def train(
    cfg=None, *, policy: str = "diffusion", head_cfg: dict | None = None, train=None, **kw
) -> RunResult:
    """Behaviour cloning. `policy`: head name (mse | gmm | tokenized | diffusion | flow); `head_cfg`: the head's
    own fields; other keywords are `TrainConfig` fields (data, out, To, Tp, Ta, resume, ...) or `TrainLoopConfig`
    fields (steps, batch_size, lr, seed, eval_episodes, ...). Returns RunResult(out, checkpoint, metrics)."""
    from robolearn.algos.bc import TrainConfig, TrainLoopConfig
    from robolearn.algos.bc import train as _train
    from robolearn.policies import PolicyConfig

    if cfg is None:
        top, rest = _split(TrainConfig, kw)
        top.pop("policy", None)
        loop = _train_loop(TrainLoopConfig(), train, rest, "train()")
        cfg = TrainConfig(policy=PolicyConfig(head=policy, head_cfg=head_cfg), train=loop, **top)
    s = _stopped(_train(cfg), "training")
    return RunResult(Path(cfg.out), Path(s["checkpoint"]), s)


def evaluate(policy=None, cfg=None, **kw) -> dict:
    """Evaluate a checkpoint (or "scripted" / "random") on fixed episode seeds; writes `out` (results.json,
    episodes.csv, videos) and returns the results dict. Keywords are `EvalConfig` fields (env, episodes,
    seeds, workers, out, videos, Ta, temporal_ensemble, ...)."""
    from robolearn.eval.config import EvalConfig
    from robolearn.eval.runner import evaluate as _evaluate

    kw.setdefault("videos", 0)
    cfg = cfg or EvalConfig(policy=str(policy), **kw)
    return _evaluate(cfg, show=False)


def dagger(cfg=None, *, train=None, **kw) -> dict:
    """DAgger / HG-DAgger / ask-when-unsure rounds from a BC checkpoint; returns results.json's dict (success
    against expert labels per round). Keywords are `DaggerConfig` fields (policy, data, out, mode, rounds,
    episodes_per_round, ...) or the retraining's `TrainLoopConfig` fields (steps, batch_size, ...)."""
    from robolearn.algos.dagger import DaggerConfig, run_dagger

    if cfg is None:
        top, rest = _split(DaggerConfig, kw)
        top.pop("train", None)
        base = DaggerConfig.__dataclass_fields__["train"].default_factory()
        top = {k: (str(v) if isinstance(v, Path) else v) for k, v in top.items()}
        cfg = DaggerConfig(**top, train=_train_loop(base, train, rest, "dagger()"))
    return run_dagger(cfg)


def finetune(cfg=None, **kw) -> RunResult:
    """SAC fine-tuning of a BC checkpoint (or SAC from scratch: bridge="none"), demos mixed in. Keywords are
    `FinetuneConfig` fields (policy, env, demos, out, steps, bridge, demo_ratio, ...)."""
    from robolearn.algos.finetune import FinetuneConfig
    from robolearn.algos.finetune import finetune as _finetune

    if cfg is None:
        cfg = FinetuneConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})
    s = _stopped(_finetune(cfg), "fine-tuning")
    return RunResult(Path(cfg.out), Path(cfg.out) / "checkpoints" / "last.pt", s)


def run_loop(cfg=None, **kw) -> dict:
    """The whole loop (demos -> BC -> DAgger -> SAC -> evaluation) into one report folder; returns
    {"report", "rows", "expert", "video"}. Keywords are `LoopConfig` fields (env, policy, out, stages, ...)."""
    from robolearn.loop import LoopConfig
    from robolearn.loop import run_loop as _run_loop

    return _run_loop(cfg or LoopConfig(**kw))


# ------------------------------------------------------------------------------------------------ policies
Agent = PolicyAgent  # the BC-policy controller load_policy returns (robolearn.policies.chunking.PolicyAgent)


def load_policy(path, use_ema: bool = True, seed: int = 0):
    """A checkpoint file -> something with `reset()` and `act(obs) -> action`: an `Agent` around a BC policy
    (`robolearn train`/`dagger`), or the fine-tuned SAC actor of a `robolearn finetune` checkpoint."""
    from robolearn.policies.checkpoint import SAC_FORMAT, read_checkpoint

    ck = read_checkpoint(path, expect=None, field="path")
    if ck["format"] == SAC_FORMAT:
        from robolearn.algos.finetune import sac_actor_from_checkpoint

        return sac_actor_from_checkpoint(ck)
    from robolearn.policies.checkpoint import build_policy

    return Agent(build_policy(ck, use_ema=use_ema), seed=seed)


__all__ = [
    "record",
    "train",
    "evaluate",
    "dagger",
    "finetune",
    "run_loop",
    "load_policy",
    "Agent",
    "RunResult",
]
