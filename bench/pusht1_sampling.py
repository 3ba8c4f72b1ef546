"""How a trained PushT-v1 policy's sampling settings change held-out success (evaluation only, no retraining).

    OMP_NUM_THREADS=1 .venv/bin/python bench/pusht1_sampling.py runs/pt_h/base/checkpoints/last.pt
    OMP_NUM_THREADS=1 .venv/bin/python bench/pusht1_sampling.py runs/pt_h/tok64/checkpoints/last.pt

Flow / diffusion checkpoints: a zero initial noise (the deterministic map from x0 = 0 instead of a draw from
N(0, I)) and, for flow, the number of Euler steps (num_inference_steps 20 and 4 against the trained 10).
Tokenized checkpoints: softmax temperature 1 / 0.5 / 0 (greedy). Each variant runs 50 episodes on env seeds
0..49 (the evaluation range) and the results go to <run>/sampling.json beside the checkpoint. Results of
2026-12-07: bench/results/pusht1_pilots_20k.json.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from robolearn.eval.runner import evaluate_policy
from robolearn.policies import load_policy


@contextmanager
def zero_initial_noise():
    """The denoising heads draw x0 with torch.randn; make that draw zeros for the duration (this process only)."""
    randn = torch.randn

    def zeros(*size, generator=None, **kw):
        return torch.zeros(*size, **kw)

    torch.randn = zeros
    try:
        yield
    finally:
        torch.randn = randn


def variants(policy):
    cfg = policy.head.cfg
    if hasattr(cfg, "temperature"):
        return [(f"T{t}", {"temperature": t}, False) for t in (1.0, 0.5, 0.0)]
    steps = [("steps20", {"num_inference_steps": 20}, False), ("steps4", {"num_inference_steps": 4}, False)]
    return [("zero_noise", {}, True)] + (steps if hasattr(policy.head, "euler_t") else [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--env", default="robolearn/PushT-v1")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = {}
    for name, fields, zero in variants(load_policy(a.checkpoint)):
        policy = load_policy(a.checkpoint)
        head = policy.head
        for k, v in fields.items():
            setattr(head.cfg, k, v)
        if "num_inference_steps" in fields:  # flow's Euler grid follows the step count
            n = fields["num_inference_steps"]
            head.euler_t = torch.arange(n, dtype=torch.float32) / n * head.cfg.time_scale
        with zero_initial_noise() if zero else nullcontext():
            r = evaluate_policy(
                policy, a.env, {"obs_mode": "state", "reward_type": "dense"}, episodes=a.episodes, seed=0
            )
        out[name] = {k: r.get(k) for k in ("success_rate", "score", "cycle_time_steps")}
        print(name, out[name], flush=True)
    path = Path(a.checkpoint).parent.parent / "sampling.json"
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
