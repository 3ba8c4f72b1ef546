"""Flow matching / rectified flow over the action chunk: x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) and x1 the
data chunk; the denoiser predicts the velocity x1 - x0; sampling integrates with a few Euler steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robolearn.policies.base import ActionHead
from robolearn.policies.denoisers import DenoiserFields, build_denoiser, inference_copy


@dataclass
class FlowConfig(DenoiserFields):
    time_scale: float = 100.0
    """t in [0, 1] is multiplied by this before the sinusoidal embedding (matches the diffusion step range)."""
    clip_sample: bool = True
    """Clip the final chunk to [-1, 1]."""

    def __post_init__(self):
        super().__post_init__()
        if self.time_scale <= 0:
            raise ValueError(f"FlowConfig.time_scale={self.time_scale!r}: must be > 0")


class FlowHead(ActionHead):
    def __init__(self, cfg: FlowConfig, cond_dim: int, Tp: int, Da: int):
        super().__init__(cfg, cond_dim, Tp, Da)
        self.denoiser = build_denoiser(cfg, cond_dim, Tp, Da)
        n = cfg.num_inference_steps
        self.register_buffer(
            "euler_t", torch.arange(n, dtype=torch.float32) / n * cfg.time_scale, persistent=False
        )

    def loss(self, cond: Tensor, action: Tensor) -> tuple[Tensor, dict[str, float]]:
        B = action.shape[0]
        x0 = torch.randn_like(action)
        t = torch.rand(B, device=action.device, dtype=action.dtype)
        xt = torch.lerp(x0, action, t.view(B, 1, 1))
        loss = F.mse_loss(self.denoiser(xt, t * self.cfg.time_scale, cond).float(), action - x0)
        return loss, {"loss/velocity_mse": loss.item()}

    def sample(self, cond: Tensor, generator=None) -> Tensor:
        B, S = cond.shape[0], self.cfg.num_inference_steps
        x = torch.randn(B, self.Tp, self.Da, generator=generator, device=cond.device, dtype=cond.dtype)
        net = inference_copy(self.denoiser, self.cfg.inference_dtype)
        dt_net = next(net.parameters()).dtype
        c = net.condition(self.euler_t.repeat_interleave(B).to(dt_net), cond.repeat(S, 1).to(dt_net))
        c = [f.view(S, B, *f.shape[1:]) for f in c]
        dt = 1.0 / S
        for i in range(S):
            x = x + dt * net.run(x.to(dt_net), [f[i] for f in c]).to(x.dtype)  # integrate in float32
        return x.clamp(-1, 1) if self.cfg.clip_sample else x
