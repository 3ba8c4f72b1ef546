"""DDPM training (epsilon prediction) / DDIM sampling over the action chunk (Chi et al., Diffusion Policy).

Training uses ``diffusers.DDPMScheduler`` (noise schedule + add_noise). Sampling takes the timesteps and
alphas_cumprod of ``diffusers.DDIMScheduler`` but does the eta=0 update inline on precomputed scalars: the
scheduler's per-step Python overhead is comparable to a whole MLP-denoiser forward at batch 1.
tests/test_policies.py checks the inline update against ``DDIMScheduler.step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor

from robolearn.policies.base import ActionHead
from robolearn.policies.denoisers import DenoiserFields, build_denoiser, inference_copy

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")
PREDICTION_TYPES = ("epsilon", "sample")


@dataclass
class DiffusionConfig(DenoiserFields):
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    """Clip the predicted clean chunk to [-1, 1] (the normalised action range) at every DDIM step."""
    prediction_type: str | None = None
    """What the denoiser predicts: "epsilon" (the noise, DDPM's and diffusion_policy's default) or "sample" (the
    clean chunk x0). None: "sample" with the MLP denoiser, "epsilon" with the U-Net. Measured on ReachAround
    (100 demos, 10k steps, 50 held-out episodes, training seeds 0/1/2; `bench/bc_results.py`): MLP denoiser
    epsilon 72/58/48 %, sample 100/100/100 %; the U-Net with epsilon 100/100/100 % (5k steps)."""
    CHECKPOINT_DEFAULTS: ClassVar[dict] = {"prediction_type": "epsilon"}
    """Fields older checkpoints lack, with the value they were trained with (PolicyConfig.from_dict)."""

    def __post_init__(self):
        super().__post_init__()
        if self.prediction_type is None:
            self.prediction_type = "sample" if self.denoiser == "mlp" else "epsilon"
        if self.num_train_timesteps < 2:
            raise ValueError(
                f"DiffusionConfig.num_train_timesteps={self.num_train_timesteps!r}: must be >= 2"
            )
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"DiffusionConfig.num_inference_steps={self.num_inference_steps!r}: must be in "
                f"[1, num_train_timesteps={self.num_train_timesteps}]"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"DiffusionConfig.prediction_type={self.prediction_type!r}; valid options: {PREDICTION_TYPES}"
            )
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"DiffusionConfig.beta_schedule={self.beta_schedule!r}; valid options: {BETA_SCHEDULES}"
            )


class DiffusionHead(ActionHead):
    def __init__(self, cfg: DiffusionConfig, cond_dim: int, Tp: int, Da: int):
        super().__init__(cfg, cond_dim, Tp, Da)
        self.denoiser = build_denoiser(cfg, cond_dim, Tp, Da)
        kw = dict(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            clip_sample=cfg.clip_sample,
            prediction_type=cfg.prediction_type,
        )
        self.train_scheduler = DDPMScheduler(**kw)
        self.sample_scheduler = DDIMScheduler(**kw, set_alpha_to_one=True, steps_offset=0)
        self.sample_scheduler.set_timesteps(cfg.num_inference_steps)
        # DDIM (eta = 0) coefficients for each inference step, as python floats.
        s = self.sample_scheduler
        ts = [int(t) for t in s.timesteps]
        step = cfg.num_train_timesteps // cfg.num_inference_steps
        ac = s.alphas_cumprod.double()
        self._ddim = []
        for t in ts:
            a_t = ac[t].item()
            a_prev = ac[t - step].item() if t - step >= 0 else float(s.final_alpha_cumprod)
            self._ddim.append(((1 - a_t) ** 0.5, a_t**-0.5, a_prev**0.5, (1 - a_prev) ** 0.5))
        self.register_buffer("ddim_timesteps", torch.tensor(ts, dtype=torch.float32), persistent=False)

    def loss(self, cond: Tensor, action: Tensor) -> tuple[Tensor, dict[str, float]]:
        B = action.shape[0]
        noise = torch.randn_like(action)
        t = torch.randint(0, self.cfg.num_train_timesteps, (B,), device=action.device)
        noisy = self.train_scheduler.add_noise(action, noise, t)
        eps_pred = self.cfg.prediction_type == "epsilon"
        target = noise if eps_pred else action
        loss = F.mse_loss(self.denoiser(noisy, t, cond).float(), target)  # float: under bf16 autocast too
        return loss, {"loss/eps_mse" if eps_pred else "loss/x0_mse": loss.item()}

    def sample(self, cond: Tensor, generator=None) -> Tensor:
        B, S = cond.shape[0], len(self._ddim)
        x = torch.randn(B, self.Tp, self.Da, generator=generator, device=cond.device, dtype=cond.dtype)
        net = inference_copy(self.denoiser, self.cfg.inference_dtype)
        dt_net = next(net.parameters()).dtype
        # All (t, cond)-only work for all steps in one batched call (step-major), sliced per step below.
        c = net.condition(self.ddim_timesteps.repeat_interleave(B).to(dt_net), cond.repeat(S, 1).to(dt_net))
        c = [f.view(S, B, *f.shape[1:]) for f in c]
        for i, (sq1m_at, inv_sq_at, sq_aprev, sq1m_aprev) in enumerate(self._ddim):
            out = net.run(x.to(dt_net), [f[i] for f in c]).to(x.dtype)  # the DDIM update stays float32
            if self.cfg.prediction_type == "epsilon":
                eps = out
                x0 = (x - sq1m_at * eps) * inv_sq_at
            else:  # as diffusers: eps from the unclipped x0
                x0 = out
                eps = (x - x0 / inv_sq_at) / sq1m_at
            if self.cfg.clip_sample:
                x0 = x0.clamp(-1, 1)
            x = sq_aprev * x0 + sq1m_aprev * eps
        return x
