"""The contract every action head implements. Heads live in normalised action space."""

from __future__ import annotations

from torch import Tensor, nn


class ActionHead(nn.Module):
    """cond (B, C) -> action chunk (B, Tp, Da), normalised.

    Subclasses take ``(cfg, cond_dim, Tp, Da)`` and implement ``loss`` and ``sample``.
    """

    def __init__(self, cfg, cond_dim: int, Tp: int, Da: int):
        super().__init__()
        self.cfg, self.cond_dim, self.Tp, self.Da = cfg, cond_dim, Tp, Da

    def loss(self, cond: Tensor, action: Tensor) -> tuple[Tensor, dict[str, float]]:
        """cond (B, C), action (B, Tp, Da) normalised -> (scalar loss, info)."""
        raise NotImplementedError

    def sample(self, cond: Tensor, generator=None) -> Tensor:
        """cond (B, C) -> (B, Tp, Da) normalised. ``generator``: a torch.Generator for reproducible noise."""
        raise NotImplementedError

    def log_prob(self, cond: Tensor, action: Tensor) -> Tensor:
        """cond (B, C), action (B, Tp, Da) normalised -> (B,). Only heads with a tractable density define it."""
        raise NotImplementedError(
            f"{type(self).__name__} has no tractable log-probability; an RL fine-tuner (SAC) needs an explicit "
            "bridge for it (residual actor, noise-space actor, or BC-proposed actions) - use the gmm head for a "
            "direct log-prob actor"
        )

    def fit_data(self, action: Tensor) -> None:
        """Optional: fit data-dependent buffers (e.g. quantile bins) from normalised actions (N, Tp, Da)."""
