"""`robolearn eval` config: a typed dataclass registered in Hydra's ConfigStore as "eval".

robolearn eval policy=runs/bc/policy.pt episodes=50 seeds=[0,1,2] workers=2
robolearn eval policy=scripted env=robolearn/PushT-v0          # the reference row
"""

from __future__ import annotations

from dataclasses import dataclass

from robolearn.config import (
    OBS_MODES,
    REWARD_TYPES,
    ConfigError,
    choice,
    env_id,
    existing_file,
    opt,
    positive,
)

REFERENCE_POLICIES = ("scripted", "random")


@dataclass
class EvalConfig:
    policy: str = opt("", "checkpoint file (.pt) | scripted (the task's expert) | random (uniform actions)")
    env: str | None = opt(None, "task id; None = the checkpoint's env_id (required for scripted/random)")
    episodes: int = opt(50, "episodes per seed; episode i of seed s starts from env seed s*10000+i")
    seeds: list[int] = opt([0], "evaluation seeds (each runs `episodes` episodes); s in [0, 1000) never "
                           "meets robolearn's demo/DAgger/finetune seeds")
    allow_train_seeds: bool = opt(False, "evaluate even on env seeds the checkpoint was trained on (refused "
                                  "otherwise): warns, and results.json counts them (overlaps_training_seeds)")
    workers: int = opt(1, "parallel envs: 1 = SyncVectorEnv in-process, >1 = AsyncVectorEnv subprocesses "
                       "(backend=ray: Ray tasks, each running its share of the episode seeds)")
    backend: str = opt("local", "local (this process and its env subprocesses) | ray (episodes split "
                       "across Ray workers; same per-episode results for deterministic policies)")
    address: str | None = opt(None, "backend=ray: None = a local Ray instance; auto | ray://host:10001")
    out: str = opt("runs/eval", "results folder: results.json, episodes.csv/.json, videos/")
    videos: int = opt(2, "write the first k episodes as mp4 (green border = success, red = failure)")
    obs_mode: str | None = opt(None, f"{OBS_MODES}; None = the checkpoint's env_kwargs (or 'state')")
    reward_type: str | None = opt(None, f"{REWARD_TYPES}; None = the checkpoint's env_kwargs (or 'dense')")
    temporal_ensemble: bool = opt(False, "ACT-style temporal ensembling instead of receding horizon")
    Ta: int | None = opt(None, "actions executed per plan; None = the checkpoint's Ta (1 <= Ta <= Tp)")
    noise: float = opt(0.0, "std of Gaussian noise on the scripted expert's actions (policy=scripted only)")
    device: str = opt("cpu", "torch device for the policy: cpu | cuda | cuda:N")

    def __post_init__(self):
        if self.policy not in REFERENCE_POLICIES:
            existing_file(
                "policy", self.policy, "Give a checkpoint file, or policy=scripted | policy=random."
            )
        elif self.env is None:
            raise ConfigError(f"env is required with policy={self.policy} (e.g. env=robolearn/Lift-v0)")
        if self.env is not None:
            env_id("env", self.env)
        positive("episodes", self.episodes)
        if not self.seeds:
            raise ConfigError("seeds=[] is empty; give at least one seed (e.g. seeds=[0])")
        for s in self.seeds:
            if int(s) < 0:
                raise ConfigError(f"seeds contains {s!r}; seeds must be >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds={list(self.seeds)!r} repeats a seed; each seed must appear once")
        positive("workers", self.workers)
        choice("backend", self.backend, ("local", "ray"))
        if self.address and self.backend != "ray":
            raise ConfigError(f"address={self.address!r} needs backend=ray")
        positive("videos", self.videos, zero_ok=True)
        if self.obs_mode is not None:
            choice("obs_mode", self.obs_mode, OBS_MODES)
        if self.reward_type is not None:
            choice("reward_type", self.reward_type, REWARD_TYPES)
        if self.Ta is not None:
            positive("Ta", self.Ta)
        positive("noise", self.noise, zero_ok=True)
        if self.noise > 0 and self.policy != "scripted":
            raise ConfigError(
                f"noise={self.noise!r} only applies to policy=scripted (policy={self.policy!r})"
            )
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(
                f"device={self.device!r} is not valid; valid options: ['cpu', 'cuda', 'cuda:N']"
            )
        if not self.out:
            raise ConfigError("out is required (e.g. out=runs/eval/lift_bc)")
