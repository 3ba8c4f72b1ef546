"""Deterministic regression of the whole action chunk (the baseline: averages modes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from robolearn.policies.base import ActionHead
from robolearn.policies.encoders import mlp
from robolearn.policies.layers import check_activation


@dataclass
class MSEConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden sizes of the regression MLP."""
    loss: str = "mse"
    """"mse" or "l1"."""
    activation: str = "mish"
    """"mish" or "relu" (see EncoderConfig.activation)."""

    def __post_init__(self):
        if any(int(h) <= 0 for h in self.hidden):
            raise ValueError(f"MSEConfig.hidden={self.hidden!r}: every size must be > 0")
        check_activation("MSEConfig", self.activation)
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"MSEConfig.loss={self.loss!r}; valid options: 'mse', 'l1'")


class MSEHead(ActionHead):
    def __init__(self, cfg: MSEConfig, cond_dim: int, Tp: int, Da: int):
        super().__init__(cfg, cond_dim, Tp, Da)
        self.net = mlp([cond_dim, *cfg.hidden, Tp * Da], act=cfg.activation)

    def forward(self, cond: Tensor) -> Tensor:
        return self.net(cond).view(-1, self.Tp, self.Da)

    def loss(self, cond: Tensor, action: Tensor) -> tuple[Tensor, dict[str, float]]:
        pred = self(cond)
        loss = F.mse_loss(pred, action) if self.cfg.loss == "mse" else F.l1_loss(pred, action)
        return loss, {"loss/mse" if self.cfg.loss == "mse" else "loss/l1": loss.item()}

    def sample(self, cond: Tensor, generator=None) -> Tensor:
        return self(cond)
