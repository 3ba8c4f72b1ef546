"""A fine-tuned SAC checkpoint ("robolearn-sac/1") as a runnable single-env policy, for `robolearn eval` and
the Python API: `load_finetuned(path).act(obs)`."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch
from torch import nn

from robolearn.algos.bridges import HeldChunk, build_actor, from_unit, held_chunk
from robolearn.algos.obs_layout import FlatHistory, ObsLayout, ObsScaling
from robolearn.policies.checkpoint import SAC_FORMAT as FORMAT

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ acting
class SACActorPolicy:
    """A fine-tuned actor as a single-env policy: `reset()`, `act(obs_dict) -> (Da,)` in env units.

    Keeps its own observation history; acts with the deterministic mean action unless
    `deterministic=False`. `observe(obs)` returns the SAC observation (history [+ BC action])."""

    def __init__(
        self,
        actor: nn.Module,
        layout: ObsLayout,
        low: np.ndarray,
        high: np.ndarray,
        base: HeldChunk | None = None,
        deterministic: bool = True,
        env_id: str | None = None,
        env_kwargs: dict | None = None,
        scaling: ObsScaling | None = None,
    ):
        self.actor, self.layout, self.base, self.scaling = actor, layout, base, scaling
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.deterministic = deterministic
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.action_dim = len(self.low)
        self.history = FlatHistory(layout)

    def reset(self) -> None:
        self.history.reset()
        if self.base is not None:
            self.base.reset()

    def observe(self, obs: dict) -> np.ndarray:
        """The SAC observation of this step: [history (D)] or, for a residual actor, [history, the held BC
        chunk's phase and action] (HeldChunk), the history scaled by `scaling` when given (the BC policy
        plans from the raw one). Call once per env step: it advances the chunk."""
        x = self.history.push(obs)
        s = x if self.scaling is None else self.scaling(x)
        if self.base is not None:
            s = np.concatenate([s, self.base(x)])
        return s

    def fresh(self) -> SACActorPolicy:
        """The same actor with its own history and chunk state (evaluations during training use one, so the
        training rollout's observation history and held chunk are not reset under it)."""
        return SACActorPolicy(
            self.actor,
            self.layout,
            self.low,
            self.high,
            None if self.base is None else self.base.clone(),
            self.deterministic,
            self.env_id,
            self.env_kwargs,
            self.scaling,
        )

    @torch.no_grad()
    def act_unit(self, s: np.ndarray, deterministic: bool | None = None) -> np.ndarray:
        a, _, mean = self.actor(torch.from_numpy(np.asarray(s, np.float32))[None])
        det = self.deterministic if deterministic is None else deterministic
        return (mean if det else a)[0].numpy()

    def act(self, obs: dict) -> np.ndarray:
        return from_unit(self.act_unit(self.observe(obs)), self.low, self.high)


def evaluate_actor(pol: SACActorPolicy, env_id: str, env_kwargs: dict, episodes: int, seed: int = 0) -> dict:
    """Deterministic rollouts through `robolearn eval`'s runner (same env seeds seed*10_000 + i, same metrics)."""
    from robolearn.eval.runner import evaluate_policy

    was = pol.deterministic
    pol.deterministic = True
    try:
        return evaluate_policy(pol, env_id, env_kwargs, episodes=episodes, seed=seed)
    finally:
        pol.deterministic = was


def sac_actor_from_checkpoint(ck: dict, deterministic: bool = True) -> SACActorPolicy:
    """A "robolearn-sac/1" checkpoint dict (torch.load(path, weights_only=True)) -> SACActorPolicy with
    `reset()`, `act(obs_dict) -> np.ndarray (Da,)` in env units, `env_id`, `env_kwargs`, `action_dim`.
    Runs without the original BC file (its weights are in the checkpoint)."""
    from robolearn.policies.checkpoint import CheckpointError, build_policy

    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        got = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"not a fine-tuned SAC checkpoint: format={got!r}, expected {FORMAT!r}")
    layout = ObsLayout.from_json(ck["obs_layout"])
    low, high = ck["action_low"].numpy(), ck["action_high"].numpy()
    da = len(low)
    base = None
    if ck["bridge"] == "residual":
        bc = build_policy(ck["bc_policy"], use_ema=True)
        base = held_chunk(bc, layout, low, high, int(ck.get("bridge_Ta", 0)))
    obs_dim = layout.dim + (base.extra + da if base is not None else 0)
    actor = build_actor(ck["bridge"], obs_dim, da, ck["actor_hidden"], float(ck["residual_scale"]), None,
                        ck.get("residual_max_log_std"))
    actor.load_state_dict(ck["sac"]["actor"])
    actor.eval()
    return SACActorPolicy(
        actor,
        layout,
        low,
        high,
        base,
        deterministic,
        ck.get("env_id"),
        json.loads(ck.get("env_kwargs") or "{}"),
        ObsScaling.from_state(ck.get("obs_scaling")),  # None: a checkpoint trained on raw observations
    )


def load_finetuned(path: str | os.PathLike, deterministic: bool = True) -> SACActorPolicy:
    """File -> SACActorPolicy (weights_only load: no code execution)."""
    from robolearn.policies.checkpoint import read_checkpoint

    return sac_actor_from_checkpoint(read_checkpoint(path, (FORMAT,), field="policy"), deterministic)
