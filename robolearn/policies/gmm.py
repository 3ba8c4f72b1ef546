"""Mixture of K diagonal Gaussians over the flattened chunk (Tp*Da), trained by NLL (robomimic's GMM head).

Per step by default. `robolearn train policy=gmm` predicts one action per step (Tp = Ta = 1, DEFAULT_HORIZON), as
robomimic's GMM does: a mixture over the 40-D chunk (Tp=8) lets one broad component cover both sides of a
fork, and sampling it draws independent noise for every step of the chunk, so the arm jitters into the pillar.
ReachAround, 100 demos, 10k steps, 50 held-out episodes, training seeds 0/1/2
(`bench/bc_results.py --tasks reacharound --heads gmm [--horizon 1/1]`):
    Tp=8/Ta=4: 54/92/58 %;   Tp=1/Ta=1: 94/100/88 % (hold_min_weight 0.5), 94/100/72 % (0.1);
    with the range-floored normaliser (robolearn.data.normalizer.MIN_RANGE): 96/100/76 %. PegInsert: 16/42/74 %
    per step, 2/0/4 % on chunks; Lift: 100/98/96 % per step.
Tried and dropped: an EM surrogate that gives every component a floor of responsibility (so starved components
follow the data), 78/68/86 % (floor 0.1) and 78/30/74 % (0.3) at Tp=8; 92/98/62 % at Tp=1.

Keeping the mode across re-plans: drawing a fresh component at every re-plan lets a bimodal policy flip sides
(on ReachAround: left, then right, into the pillar). With `hold_mode` (default) each env keeps the component it
drew while that component's weight stays >= `hold_min_weight` x the largest weight, and draws anew only when
it becomes unlikely (or at an episode start): the policy commits to one mode, as the demonstrator did. The
threshold 0.5 lets the policy leave the approach component when the fork's components take over (with 0.1 a
per-step policy kept "straight ahead" one step too long: 72 % on seed 2, 88 % with 0.5; at Tp=8 the
threshold makes no difference, 54/92/58 % either way). The choice lives in the caller's per-env `memory`
(ActionChunker keeps it and clears it on reset), not in the head."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from robolearn.policies.base import ActionHead
from robolearn.policies.encoders import mlp


@dataclass
class GMMConfig:
    DEFAULT_HORIZON: ClassVar[tuple[int, int]] = (1, 1)
    """(Tp, Ta) when `robolearn train` is not given them: one action per step (see the module docstring)."""
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden sizes of the trunk MLP."""
    num_modes: int = 5
    """K, the number of mixture components."""
    min_std: float = 0.01
    """Floor on each component's std (normalised units) so the NLL cannot collapse to -inf."""
    init_std: float = 0.3
    """Initial component std (normalised units); components start at means spread uniformly over [-1, 1]."""
    sample_mode: str = "sample"
    """"sample" (draw component and noise, std scaled by `temperature`) or "mode" (mean of the likeliest component)."""
    temperature: float = 1.0
    """Scales the component std (and sharpens the mixture weights) when sampling; 0 = component means."""
    hold_mode: bool = True
    """Keep each env's drawn component across re-plans while it stays likely (see the module docstring)."""
    hold_min_weight: float = 0.5
    """hold_mode: keep the component while its weight >= this fraction of the largest component weight."""

    def __post_init__(self):
        if any(int(h) <= 0 for h in self.hidden):
            raise ValueError(f"GMMConfig.hidden={self.hidden!r}: every size must be > 0")
        if self.num_modes < 1:
            raise ValueError(f"GMMConfig.num_modes={self.num_modes!r}: must be >= 1")
        if self.min_std <= 0:
            raise ValueError(f"GMMConfig.min_std={self.min_std!r}: must be > 0")
        if self.init_std <= self.min_std:
            raise ValueError(f"GMMConfig.init_std={self.init_std!r}: must be > min_std={self.min_std!r}")
        if self.sample_mode not in ("sample", "mode"):
            raise ValueError(f"GMMConfig.sample_mode={self.sample_mode!r}; valid options: 'sample', 'mode'")
        if self.temperature < 0:
            raise ValueError(f"GMMConfig.temperature={self.temperature!r}: must be >= 0")
        if not 0.0 <= self.hold_min_weight <= 1.0:
            raise ValueError(f"GMMConfig.hold_min_weight={self.hold_min_weight!r}: must be in [0, 1]")


class GMMHead(ActionHead):
    def __init__(self, cfg: GMMConfig, cond_dim: int, Tp: int, Da: int):
        super().__init__(cfg, cond_dim, Tp, Da)
        self.D, K = Tp * Da, cfg.num_modes
        self.net = mlp([cond_dim, *cfg.hidden, K * (1 + 2 * self.D)])
        # Mode collapse trap: with all means near 0 and wide stds, ONE broad component explains everything and
        # the others starve (NLL plateau at the single-Gaussian value). Start with means spread over the
        # normalised range and narrow stds so components specialise, EM-like, from the first step.
        last = self.net[-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.zero_()
            last.bias[K : K + K * self.D].uniform_(-1, 1)
            last.bias[K + K * self.D :].fill_(math.log(math.expm1(cfg.init_std)))

    def dist_params(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> logits (B, K), mean (B, K, D), std (B, K, D)."""
        K, D = self.cfg.num_modes, self.D
        out = self.net(cond)
        logits, mean, raw_std = out.split([K, K * D, K * D], dim=-1)
        std = F.softplus(raw_std).view(-1, K, D) + self.cfg.min_std
        return logits, mean.view(-1, K, D), std

    def log_prob(self, cond: Tensor, action: Tensor) -> Tensor:
        """cond (B, C), action (B, Tp, Da) normalised -> log p(action | cond) (B,) in normalised space."""
        logits, mean, std = self.dist_params(cond)
        x = action.reshape(-1, 1, self.D)
        comp = (-0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)  # (B, K)
        return torch.logsumexp(torch.log_softmax(logits, -1) + comp, dim=-1)

    def loss(self, cond: Tensor, action: Tensor) -> tuple[Tensor, dict[str, float]]:
        # Per-dimension NLL keeps the loss scale (and lr) independent of the chunk size.
        nll = -self.log_prob(cond, action).mean() / self.D
        return nll, {"loss/nll_per_dim": nll.item()}

    def sample(self, cond: Tensor, generator=None, memory: dict | None = None) -> Tensor:
        """memory: the caller's per-env state ({"gmm_k": (B,) long, -1 = none yet}); with hold_mode the drawn
        component is kept there and reused while it stays likely."""
        logits, mean, std = self.dist_params(cond)
        B = cond.shape[0]
        T = self.cfg.temperature
        idx = torch.arange(B)
        if self.cfg.sample_mode == "mode" or T == 0:
            k = logits.argmax(-1)
            return mean[idx, k].view(B, self.Tp, self.Da)
        k = torch.multinomial(torch.softmax(logits / T, -1), 1, generator=generator).squeeze(-1)
        if self.cfg.hold_mode and memory is not None:
            prev = memory.get("gmm_k")
            if prev is not None and prev.shape == (B,):
                w = torch.softmax(logits, -1)
                keep = prev >= 0
                held = prev.clamp(min=0)
                keep &= w[idx, held] >= self.cfg.hold_min_weight * w.max(-1).values
                k = torch.where(keep, held, k)
            memory["gmm_k"] = k.clone()
        noise = torch.randn(B, self.D, generator=generator, device=cond.device, dtype=cond.dtype)
        out = mean[idx, k] + T * std[idx, k] * noise
        return out.view(B, self.Tp, self.Da)

    def forget(self, memory: dict, mask: Tensor | None = None) -> None:
        """Episode starts: forget the held component of all envs (mask None) or of those where mask is True."""
        prev = memory.get("gmm_k")
        if prev is None or mask is None:
            memory.pop("gmm_k", None)
            return
        prev[mask.to(prev.device)] = -1
