"""Typed configs for every `robolearn` command, registered in Hydra's ConfigStore.

Each command's config is a dataclass; a field's help is its `metadata["help"]`. Validation runs in
`__post_init__` (Hydra/OmegaConf calls it when the composed config becomes an object), so a wrong value
fails before any work with a message naming the field, the value and the valid options.
Dimensions never live here: they come from the data file or the env.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

OBS_MODES = ("state", "image", "both")
REWARD_TYPES = ("dense", "sparse")
TELEOP_DEVICES = ("keyboard", "gamepad", "spacemouse")  # robolearn.teleop.devices.DEVICES


class ConfigError(ValueError):
    """A config value is wrong; the message names the field, the value and what is valid."""


def opt(default: Any, help: str):  # noqa: A002 - mirrors argparse's word
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def choice(name: str, value, options) -> None:
    if value not in options:
        raise ConfigError(f"{name}={value!r} is not valid; valid options: {list(options)}")


def positive(name: str, value, zero_ok: bool = False) -> None:
    if value is None or (value < 0 if zero_ok else value <= 0):
        raise ConfigError(f"{name}={value!r} must be {'>= 0' if zero_ok else '> 0'}")


def in_range(name: str, value, lo, hi) -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"{name}={value!r} must be in [{lo}, {hi}]")


def existing_file(name: str, value, hint: str = "") -> None:
    if not value:
        raise ConfigError(f"{name} is required (e.g. {name}=path/to/file). {hint}".strip())
    if not Path(value).exists():
        raise ConfigError(f"{name}={value!r}: no such file. {hint}".strip())


def env_id(name: str, value) -> None:
    import gymnasium as gym
    from robolearn_envs import suites

    import robolearn  # noqa: F401  registers robolearn/... ids

    suites.ensure_registered(str(value))
    if value not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("robolearn/"))
        raise ConfigError(
            f"{name}={value!r} is not a registered env id; valid robolearn tasks: {ours} "
            "(Gymnasium MuJoCo ids such as HalfCheetah-v5 and Hopper-v5 work too; task suites: "
            "metaworld/<task>-v3, gym_hil/PandaPickCubeBase-v0). " + suites.missing_hint(str(value))
        )


def help_lines(cls, prefix: str = "") -> list[str]:
    """One line per field: name=default and its help; nested dataclass fields as prefix.field=default."""
    from dataclasses import MISSING, is_dataclass

    out = []
    for f in fields(cls):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if f.name == "defaults" or default == "???":
            continue  # Hydra's defaults list; groups chosen on the command line (policy=<head>)
        if is_dataclass(default):
            out += help_lines(type(default), f"{prefix}{f.name}.")
            continue
        out.append(f"  {prefix + f.name + '=' + repr(default):<40} {f.metadata.get('help', '')}")
    return out


# ----------------------------------------------------------------------------------------------- record
@dataclass
class RecordConfig:
    env: str = opt("robolearn/Lift-v0", "task id to record in")
    expert: str = opt(
        "scripted",
        "who acts: scripted (the task's expert) | random | a checkpoint file (a BC policy or a SAC agent, e.g. "
        "expert=runs/hopper_sac/checkpoints/last.pt; episodes get source=policy)",
    )
    deterministic: bool = opt(True, "expert=<checkpoint>: SAC acts with its mean action (false: sampled)")
    teleop: str | None = opt(None, "record by hand with a device instead: keyboard | gamepad | spacemouse")
    episodes: int = opt(50, "episodes to keep")
    out: str = opt("datasets/demos.hdf5", "HDF5 store to write (appended to if it exists)")
    seed: int = opt(
        10_000_000,
        "env seed of the first episode; episode i uses seed+i (default: the demo "
        "range, disjoint from evaluation's [0, 10000000))",
    )
    noise: float = opt(0.0, "std of Gaussian noise added to the expert's actions (action units)")
    label: str = opt(
        "executed",
        "action stored per step: executed (the noisy action that ran) | clean (the expert's noise-free action "
        "in the state the noise led to: DART, Laskey et al. 2017; needs noise > 0 to differ)",
    )
    obs_mode: str = opt("state", f"observations to store: {OBS_MODES}")
    reward_type: str = opt("dense", f"reward stored: {REWARD_TYPES}")
    env_kwargs: dict = opt(
        {},
        "extra env constructor arguments, stored with the episodes so train/eval/finetune rebuild the same env "
        "(e.g. +env_kwargs.random_block_position=true for gym_hil/PandaPickCubeBase-v0)",
    )
    source: str = opt(
        "scripted", "episode source attribute: scripted | teleop | policy | dagger | intervention"
    )
    success_only: bool = opt(False, "keep only successful episodes")
    overwrite: bool = opt(False, "replace the file instead of appending")
    video: bool = opt(False, "also write an mp4 of the first episodes next to out")
    video_episodes: int = opt(3, "how many episodes the video shows")

    def __post_init__(self):
        from robolearn.data.store import SOURCES

        env_id("env", self.env)
        if self.expert not in ("scripted", "random"):
            if not Path(self.expert).is_file():
                raise ConfigError(
                    f"expert={self.expert!r} is not valid; valid options: 'scripted', 'random', or an existing "
                    "checkpoint file (.pt)"
                )
            if self.source == "scripted":
                self.source = "policy"  # episodes from a trained agent
        if self.teleop is not None:
            choice("teleop", self.teleop, TELEOP_DEVICES)
        positive("episodes", self.episodes)
        positive("noise", self.noise, zero_ok=True)
        choice("label", self.label, ("executed", "clean"))
        if self.label == "clean" and (self.expert == "random" or self.teleop is not None):
            raise ConfigError(
                "label=clean needs a scripted or checkpoint expert (a random actor or a teleop device has no "
                "clean action). Fix: expert=scripted, or label=executed"
            )
        choice("obs_mode", self.obs_mode, OBS_MODES)
        choice("reward_type", self.reward_type, REWARD_TYPES)
        choice("source", self.source, SOURCES)
        positive("video_episodes", self.video_episodes)
        self.env_kwargs = dict(self.env_kwargs or {})
        for k in ("obs_mode", "reward_type"):
            if k in self.env_kwargs:
                raise ConfigError(f"env_kwargs.{k} is not valid: set {k}= itself")
        if not self.out:
            raise ConfigError("out is required (e.g. out=datasets/lift.hdf5)")
        positive("seed", self.seed, zero_ok=True)
        from robolearn.seeds import DEMO_SEED_BASE, EVAL_RANGE

        if self.seed < EVAL_RANGE.stop:
            import logging

            logging.getLogger(__name__).warning(
                "warning: seed=%d records demos in the evaluation seed range [0, %d); `robolearn eval` will "
                "refuse the eval seeds that start from these initial states. Fix: leave seed= at its default "
                "(%d, the demo range)",
                self.seed,
                EVAL_RANGE.stop,
                DEMO_SEED_BASE,
            )
