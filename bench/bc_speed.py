"""Behaviour-cloning speed per head: training samples/s and batch-1 act() latency on CPU.

    .venv/bin/python bench/bc_speed.py [--threads N] [--runs 3] [--heads mse,gmm,...] [--no-big]

Setting: state obs of 20 dims, To=2, Tp=16, Ta=8, Da=5, batch 64, default configs (PolicyConfig(head=...)),
plus diffusion with diffusion_policy's U-Net (down_dims [256, 512, 1024], ~65M params, DDIM-10).
Every number is the median over --runs repetitions; latency p50/p90 over --calls act() calls per run.
--lerobot-python <venv>/bin/python adds LeRobot 0.4.4's DiffusionPolicy on the same setting (measured by
bench/lerobot_peer.py in its own venv, see that file) and a side-by-side table with ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch
from timing import add_speed_args, latency_ms, samples_per_s, speed_row

from robolearn.algos.bc import make_optimizer
from robolearn.data.normalizer import Normalizer
from robolearn.policies import HEADS, Policy, PolicyConfig

SPEC = {"obs": {"state": {"shape": [20], "dtype": "float32"}}, "action_dim": 5, "To": 2, "Tp": 16, "Ta": 8}
BATCH = 64


def make_policy(cfg: PolicyConfig) -> Policy:
    g = np.random.default_rng(0)
    norm = Normalizer.from_data(
        {
            "state": g.normal(size=(1000, 20)).astype(np.float32),
            "action": g.uniform(-1, 1, size=(1000, 5)).astype(np.float32),
        }
    )
    torch.manual_seed(0)
    return Policy(SPEC, cfg, norm)


def train_samples_per_s(policy: Policy, steps: int, precision: str = "float32") -> float:
    batch = {"obs": {"state": torch.randn(BATCH, 2, 20)}, "action": torch.rand(BATCH, 16, 5) * 2 - 1}
    opt = make_optimizer(policy, lr=1e-4, weight_decay=1e-6)  # what `robolearn train` uses
    policy.train()

    def step():
        with torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"
        ):  # as `robolearn train`
            loss, _ = policy.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return samples_per_s(step, steps, BATCH)


def act_latency_ms(policy: Policy, calls: int) -> tuple[float, float]:
    policy.eval()
    obs = {"state": torch.randn(1, 2, 20)}
    return latency_ms(lambda: policy.act(obs), calls)


def bench(name: str, cfg: PolicyConfig, runs: int, train_steps: int, calls: int) -> dict:
    policy = make_policy(cfg)
    precision = "bfloat16" if "bf16" in name else "float32"  # bf16 rows: train.precision and inference_dtype
    row = speed_row(
        lambda: train_samples_per_s(policy, train_steps, precision),
        lambda: act_latency_ms(policy, calls),
        runs,
    )
    return {"policy": name, "params": policy.num_params(), **row}


def peer_rows(python: str | None, args: argparse.Namespace) -> list[dict]:
    """LeRobot's DiffusionPolicy rows, measured by bench/lerobot_peer.py under LeRobot's own interpreter
    (lerobot is not a robolearn dependency: it pins an older torch). Runs after ours, never concurrently, with
    the same shared flags (timing.add_speed_args)."""
    if not python:
        return []
    cmd = [python, str(Path(__file__).with_name("lerobot_peer.py"))]
    cmd += ["--threads", str(args.threads), "--runs", str(args.runs)]
    cmd += ["--train-steps", str(args.train_steps), "--calls", str(args.calls)] + ["--no-big"] * args.no_big
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


# (our row, LeRobot row) compared side by side: same U-Net widths, and each side's defaults.
PAIRS = [
    ("diffusion", "lerobot/diffusion[unet 32-64-128]", "same size (ours' default)"),
    (
        "diffusion[unet 256-512-1024]",
        "lerobot/diffusion[unet 256-512-1024]",
        "same size (diffusion_policy's)",
    ),
    (
        "diffusion[unet 256-512-1024 bf16]",
        "lerobot/diffusion[unet 256-512-1024 bf16]",
        "same size, both bf16 autocast",
    ),
    ("diffusion[unet 256-512-1024 bf16]", "lerobot/diffusion[unet 256-512-1024]", "our bf16 vs its float32"),
    ("diffusion", "lerobot/diffusion[defaults 512-1024-2048]", "each side's defaults"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_args(ap, torch.get_num_threads(), "skip the ~65M-param U-Net rows")
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument(
        "--lerobot-python",
        help="interpreter of a venv with lerobot==0.4.4 installed: adds LeRobot's DiffusionPolicy side by side",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    configs = [(h, PolicyConfig(head=h)) for h in args.heads.split(",")]
    if "diffusion" in args.heads:
        configs.append(("diffusion[mlp]", PolicyConfig(head="diffusion", head_cfg={"denoiser": "mlp"})))
    if "flow" in args.heads:
        configs.append(("flow[mlp]", PolicyConfig(head="flow", head_cfg={"denoiser": "mlp"})))
    if not args.no_big:
        # diffusion_policy's size: down_dims [256, 512, 1024], diffusion_step_embed_dim 256 (~65M params).
        big = {"down_dims": [256, 512, 1024], "time_embed_dim": 256}
        configs.append(("diffusion[unet 256-512-1024]", PolicyConfig(head="diffusion", head_cfg=big)))
        configs.append(
            (
                "diffusion[unet 256-512-1024 bf16]",
                PolicyConfig(head="diffusion", head_cfg={**big, "inference_dtype": "bfloat16"}),
            )
        )
    rows = []
    for name, cfg in configs:
        big = "1024" in name
        train_steps = 6 if big else args.train_steps
        rows.append(bench(name, cfg, args.runs, train_steps, 10 if big else args.calls))
        print(f"done {name}", flush=True)
    peers = peer_rows(args.lerobot_python, args)
    rows += peers

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nCPU threads={args.threads}, load avg {load:.2f}, batch {BATCH}, obs 20, To=2, Tp=16, Da=5, median of {args.runs} runs"
    )
    print(
        f"| {'policy':<42} | {'params':>8} | {'train samples/s':>15} | {'act p50 ms':>10} | {'act p90 ms':>10} |"
    )
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 17}|{'-' * 12}|{'-' * 12}|")
    for r in rows:
        print(
            f"| {r['policy']:<42} | {r['params'] / 1e6:>7.2f}M | {r['train_sps']:>15.0f} | "
            f"{r['act_p50_ms']:>10.2f} | {r['act_p90_ms']:>10.2f} |"
        )
    if peers:
        print(
            f"\nLeRobot side by side ({peers[0]['versions']}; ours: torch {torch.__version__}); ratio = ours / LeRobot's"
        )
        print(f"| {'ours':<34} | {'LeRobot':<42} | {'setting':<30} | train x | act speed-up x |")
        print(f"|{'-' * 36}|{'-' * 44}|{'-' * 32}|---------|---------------|")
        by = {r["policy"]: r for r in rows}
        for ours, theirs, what in PAIRS:
            if ours in by and theirs in by:
                a, b = by[ours], by[theirs]
                train = a["train_sps"] / b["train_sps"] if a["train_sps"] == a["train_sps"] else float("nan")
                print(
                    f"| {ours:<34} | {theirs:<42} | {what:<30} | {train:>7.2f} | "
                    f"{b['act_p50_ms'] / a['act_p50_ms']:>13.2f} |"
                )


if __name__ == "__main__":
    main()
