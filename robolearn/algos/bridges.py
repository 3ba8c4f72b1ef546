"""How a BC policy becomes a SAC actor (the bridges: residual on the BC proposal, a Gaussian distilled from
the BC head, none), and the action-unit conversions they share."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from robolearn.algos.obs_layout import ObsLayout
from robolearn.config import ConfigError, choice

log = logging.getLogger(__name__)

BRIDGES = ("residual", "gaussian", "none")
GAUSSIAN_HEADS = ("mse", "gmm")  # heads whose first action is a deterministic mean we can distil


# ------------------------------------------------------------------------------------------------ bridges
def check_bridge(head: str | None, bridge: str) -> None:
    """Fail clearly when `head` cannot be bridged as `bridge`."""
    choice("bridge", bridge, BRIDGES)
    if bridge == "gaussian" and head not in GAUSSIAN_HEADS:
        valid = ["residual", "none"] + (["gaussian"] if head in GAUSSIAN_HEADS else [])
        raise ConfigError(
            f"bridge='gaussian' cannot be used with the {head!r} head: it initialises a Gaussian actor from a "
            f"deterministic mean action, which only the {list(GAUSSIAN_HEADS)} heads have (a {head!r} policy "
            f"has no tractable mean/log-prob). Valid bridges for {head!r}: {valid} "
            "(bridge=residual trains a residual on top of the frozen policy)"
        )


def to_unit(a: Tensor | np.ndarray, low: np.ndarray, high: np.ndarray):
    """Env action units -> [-1, 1] (clipped)."""
    if isinstance(a, Tensor):
        lo, hi = torch.as_tensor(low, dtype=a.dtype), torch.as_tensor(high, dtype=a.dtype)
        return (2.0 * (a - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0)
    return np.clip(2.0 * (np.asarray(a, np.float32) - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)


def from_unit(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (low + (np.asarray(a, np.float32) + 1.0) * 0.5 * (high - low)).astype(np.float32)


def bc_chunk(policy, layout: ObsLayout, low: np.ndarray, high: np.ndarray) -> Callable[[Tensor], Tensor]:
    """The frozen BC policy as a map flat history (B, D) -> its executed chunk (B, Ta, Da) in [-1, 1]: mse its
    mean, gmm the mean of the likeliest component, other heads a fresh sample from one seeded generator
    (one noise draw per chunk, as the policy runs in `robolearn eval`).

    Sampling (not a fixed noise vector) matters: a flow/diffusion head run from the same noise at every
    step blends its modes over time (measured on Lift: the gripper command crept from open to closed while
    the arm already rose, 0% success vs 75% sampled)."""
    policy.eval().requires_grad_(False)
    head = policy.cfg.head
    Ta = int(policy.spec.get("Ta", 1))
    gen = torch.Generator(device=policy.device).manual_seed(0)

    @torch.no_grad()
    def chunk(x: Tensor) -> Tensor:
        obs = layout.unflatten(x.float())
        if head == "gmm":
            logits, mean, _ = policy.head.dist_params(policy.encode(obs))
            a = mean[torch.arange(len(x)), logits.argmax(-1)].view(len(x), policy.Tp, policy.Da)
            a = policy.normalizer.unnormalize("action", a)
        elif head == "mse":
            a = policy.act(obs)
        else:
            a = policy.act(obs, generator=gen)
        return to_unit(a[:, :Ta].float().cpu(), low, high)

    return chunk


def bc_base(policy, layout: ObsLayout, low: np.ndarray, high: np.ndarray) -> Callable[[Tensor], Tensor]:
    """The BC policy's FIRST chunk action, re-planned at every call: flat history (B, D) -> (B, Da). The
    per-step bridge (`chunked=false`) and the gaussian bridge's distillation target."""
    chunk = bc_chunk(policy, layout, low, high)
    return lambda x: chunk(x)[:, 0]


class HeldChunk:
    """The BC proposal a residual SAC actor builds on, computed as the BC policy runs: a chunk is planned
    every `Ta` steps and executed one action per step, so before any update the fine-tuned actor IS the BC
    policy (a per-step re-plan is not: the Lift flow policy went 100% -> 38% that way).

    Per step it returns the extra SAC observation columns: [phase = i / Ta, base action (Da)] (`phase=True`;
    the critic needs to know where in the chunk it is), or just [base action] (the per-step bridge, Ta=1,
    phase=False: checkpoints written before chunked bridges). Single-env state (`reset()` at episode starts);
    `episode(h)` computes a whole recorded episode (demos) the same way."""

    def __init__(self, chunk: Callable[[Tensor], Tensor], Ta: int, phase: bool = True):
        self.chunk, self.Ta, self.phase = chunk, max(1, int(Ta)), bool(phase)
        self.extra = 1 if self.phase else 0  # columns before the base action
        self.reset()

    def reset(self) -> None:
        self._plan: np.ndarray | None = None
        self._i = 0

    def clone(self) -> HeldChunk:
        """Same BC policy, fresh state (an evaluation must not disturb the training rollout's chunk)."""
        return HeldChunk(self.chunk, self.Ta, self.phase)

    def _cols(self, i: int, a: np.ndarray) -> np.ndarray:
        return np.concatenate([[i / self.Ta], a]).astype(np.float32) if self.phase else a.astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._plan is None or self._i >= self.Ta:
            self._plan = self.chunk(torch.from_numpy(np.asarray(x, np.float32))[None])[0].numpy()
            self._i = 0
        out = self._cols(self._i, self._plan[self._i])
        self._i += 1
        return out

    def episode(self, h: np.ndarray) -> np.ndarray:
        """(T + 1, D) histories of one recorded episode -> (T + 1, extra + Da): chunks planned at t = 0, Ta, ..."""
        starts = np.arange(0, len(h), self.Ta)
        plans = batched(self.chunk, np.asarray(h[starts], np.float32))  # (plans, >= Ta, Da)
        return np.stack([self._cols(t % self.Ta, plans[t // self.Ta, t % self.Ta]) for t in range(len(h))])


def held_chunk(policy, layout: ObsLayout, low: np.ndarray, high: np.ndarray, Ta: int) -> HeldChunk:
    """Ta >= 1: the chunk-aware bridge (hold the BC chunk for Ta steps, phase column); Ta = 0: the per-step
    bridge of earlier checkpoints (re-plan every step, no phase column)."""
    chunk = bc_chunk(policy, layout, low, high)
    return HeldChunk(chunk, Ta, phase=True) if Ta >= 1 else HeldChunk(chunk, 1, phase=False)


def batched(fn: Callable[[Tensor], Tensor], x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    if len(x) == 0:
        return np.zeros((0, 0), np.float32)
    return np.concatenate([fn(torch.from_numpy(x[i : i + chunk])).numpy() for i in range(0, len(x), chunk)])


def last_columns(da: int) -> Callable[[Tensor], Tensor]:
    """ResidualActor's base: the BC action stored as the last Da columns of the SAC observation."""

    def base(obs: Tensor) -> Tensor:
        return obs[:, -da:]

    return base


def build_actor(
    bridge: str,
    obs_dim: int,
    act_dim: int,
    hidden,
    residual_scale: float,
    init_log_std: float | None,
    max_log_std: float | None = None,
    squash_eps: float = 0.0,
) -> nn.Module:
    """max_log_std (residual): the cap on the residual's pre-tanh log std. Fine-tuning passes its initial log
    std, so exploration can shrink but never grow past where it starts (measured on Lift: with the old cap of
    2, the entropy bonus inflated the std 0.37 -> 0.84 in 7.5k steps and training success fell 92% -> 45-58%)."""
    from robolearn.algos.sac import GaussianActor, ResidualActor

    if bridge == "residual":
        return ResidualActor(
            last_columns(act_dim),
            obs_dim,
            act_dim,
            scale=residual_scale,
            hidden=tuple(hidden),
            init_log_std=-1.0 if init_log_std is None else init_log_std,
            log_std_max=2.0 if max_log_std is None else max_log_std,
        )
    # bridge=none: SAC from scratch; bridge=gaussian: then distilled. squash_eps: SACConfig.squash_eps
    return GaussianActor(obs_dim, act_dim, tuple(hidden), squash_eps=squash_eps)


def distill_gaussian(
    actor: nn.Module,
    obs: np.ndarray,
    target: np.ndarray,
    steps: int,
    log_std: float,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Regress a GaussianActor's tanh(mu(s)) onto target actions (N, Da) in [-1, 1] (clipped to +-0.99: tanh
    never reaches +-1) and pull its log_std to `log_std`. Returns the final mean-squared error."""
    rng = np.random.default_rng(seed)
    x, y = torch.from_numpy(obs), torch.from_numpy(np.clip(target, -0.99, 0.99))
    opt = torch.optim.Adam(actor.parameters(), lr=lr)
    mse = float("nan")
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(0, len(x), size=min(batch_size, len(x))))
        mu, ls = actor.head(actor.trunk(x[i])).chunk(2, dim=-1)
        err = (torch.tanh(mu) - y[i]).square().sum(-1).mean()
        loss = err + 0.1 * (ls - log_std).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mse = float(err.detach()) / y.shape[1]
    return mse
