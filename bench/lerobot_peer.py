"""LeRobot's DiffusionPolicy on bc_speed.py's setting; run with LeRobot's interpreter, prints JSON rows.

    <lerobot venv>/bin/python bench/lerobot_peer.py --threads 2 --runs 3

``bench/bc_speed.py --lerobot-python <that interpreter>`` runs this after our rows and prints both in one
table. Setting (same as bc_speed.py): 20-dim state obs (LeRobot's DiffusionPolicy refuses state-only input, so
it gets 10 dims as ``observation.state`` and 10 as ``observation.environment_state``; its global condition is
the same 2 x 20 values), To=2, Tp=16 (horizon), Da=5, batch 64, each side's own optimiser (ours: fused
AdamW; LeRobot: its Adam preset), DDIM with 10 inference steps. "bf16" rows train and sample under bfloat16
autocast (what LeRobot's ``use_amp`` / accelerate mixed precision do). Latency is ``generate_actions`` at
batch 1 (the sampling loop, without LeRobot's processor pipeline). This file imports lerobot, torch and
bench/timing.py (the same timing loops as ours), never robolearn.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
from timing import add_speed_args, latency_ms, samples_per_s, speed_row

BATCH, OBS, TO, TP, DA = 64, 20, 2, 16, 5


def make(**unet) -> DiffusionPolicy:
    cfg = DiffusionConfig(
        n_obs_steps=TO,
        horizon=TP,
        n_action_steps=8,
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(OBS // 2,)),
            "observation.environment_state": PolicyFeature(type=FeatureType.ENV, shape=(OBS - OBS // 2,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(DA,))},
        noise_scheduler_type="DDIM",
        num_inference_steps=10,
        device="cpu",
        **unet,
    )
    torch.manual_seed(0)
    return DiffusionPolicy(cfg)


def obs(b: int) -> dict:
    return {
        "observation.state": torch.randn(b, TO, OBS // 2),
        "observation.environment_state": torch.randn(b, TO, OBS - OBS // 2),
    }


def train_sps(policy: DiffusionPolicy, steps: int, amp: bool) -> float:
    batch = {**obs(BATCH), "action": torch.rand(BATCH, TP, DA) * 2 - 1}
    batch["action_is_pad"] = torch.zeros(BATCH, TP, dtype=torch.bool)
    opt = policy.config.get_optimizer_preset().build(policy.parameters())  # what `lerobot-train` uses
    policy.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):  # what policy.use_amp=true does
            loss, _ = policy.forward(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return samples_per_s(step, steps, BATCH, warmup=1)


@torch.no_grad()
def act_ms(policy: DiffusionPolicy, calls: int, amp: bool) -> tuple[float, float]:
    policy.eval()
    o = obs(1)

    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            policy.diffusion.generate_actions(o)

    return latency_ms(call, calls, warmup=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_args(ap, torch.get_num_threads(), "skip the 256-512-1024 and default-size rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # (name, U-Net config, train steps, act calls): ours' default size, diffusion_policy's size, LeRobot's default.
    configs = [
        (
            "lerobot/diffusion[unet 32-64-128]",
            dict(down_dims=(32, 64, 128), diffusion_step_embed_dim=64),
            args.train_steps,
            args.calls,
        )
    ]
    if not args.no_big:
        configs += [
            (
                "lerobot/diffusion[unet 256-512-1024]",
                dict(down_dims=(256, 512, 1024), diffusion_step_embed_dim=256),
                6,
                5,
            ),
            (
                "lerobot/diffusion[unet 256-512-1024 bf16]",
                dict(down_dims=(256, 512, 1024), diffusion_step_embed_dim=256),
                6,
                5,
            ),
            ("lerobot/diffusion[defaults 512-1024-2048]", {}, 2, 3),
        ]
    import lerobot

    for name, unet, steps, calls in configs:
        policy = make(**unet)
        amp = "bf16" in name  # LeRobot's policy.use_amp: torch.autocast around forward and sampling
        row = {
            "policy": name,
            "params": sum(p.numel() for p in policy.parameters()),
            **speed_row(
                partial(train_sps, policy, steps, amp), partial(act_ms, policy, calls, amp), args.runs
            ),
            "versions": f"lerobot {lerobot.__version__}, torch {torch.__version__}",
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
