"""Why BC could not copy PushT-v1's expert: a plain per-step MLP regression, one factor at a time.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pusht_fit_ablation.py --features rel --steps 20000 \
        --json bench/results/pusht_fit_ablation.json
    # the other rows: --features raw | --norm minmax | --act mish | --norm minmax --act mish --ema --wd 1e-6 |
    #                 --seed 1 | --data <DART demos>

Trains one MLP (3 x 512, batch 256, AdamW lr 1e-3 with cosine decay) on (observation -> the expert's dx, dy, dz)
pairs of the first-step-only demos in --data (default datasets/pusht1.hdf5, 200 scripted demos), reports how well
it fits its own training pairs (MSE, share of steps with an action error > 0.5 / > 0.2 of the [-1, 1] range) and
its closed-loop success and diffusion_policy score on the held-out env seeds 0..--episodes-1. No robolearn policy
code is used: it isolates what the expert's action function needs from a learner.

Features: ``raw`` = eef_pos (3), block x, y, block yaw (cos, sin); ``rel`` adds the pusher's x, y in the block
frame (the quantity PushT-v1 now observes as ``eef_in_block``). ``--norm zscore | minmax`` (minmax with the
library's 0.05 range floor), ``--act relu | mish``, ``--ema`` (0.995, the trainer's) and ``--wd`` reproduce the
library trainer's choices one by one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import torch

import robolearn  # noqa: F401  (registers the tasks)

ENV = "robolearn/PushT-v1"


def features(o: dict, kind: str) -> np.ndarray:
    p, b, cy = np.asarray(o["eef_pos"]), np.asarray(o["block_pos"])[..., :2], np.asarray(o["block_yaw"])
    f = [p, b, cy]
    if kind == "rel":
        c, s = cy[..., 0], cy[..., 1]
        d = p[..., :2] - b
        f.append(np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1))
    return np.concatenate(f, -1).astype(np.float32)


def load(path: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    X, Y = [], []
    with h5py.File(path, "r") as f:
        for k in f["data"]:
            g = f["data"][k]
            X.append(features({kk: g["obs"][kk][()] for kk in g["obs"]}, kind))
            Y.append(g["actions"][()][:, :3])
    return np.concatenate(X), np.concatenate(Y)


def fit(X, Y, a) -> tuple[callable, dict]:
    torch.manual_seed(a.seed)
    if a.norm == "minmax":
        lo, hi = X.min(0), X.max(0)
        mu, sd = (lo + hi) / 2, np.maximum(hi - lo, 0.05) / 2
    else:
        mu, sd = X.mean(0), X.std(0) + 1e-3
    act = torch.nn.ReLU if a.act == "relu" else torch.nn.Mish
    layers, d = [], X.shape[1]
    for _ in range(3):
        layers += [torch.nn.Linear(d, 512), act()]
        d = 512
    net = torch.nn.Sequential(*layers, torch.nn.Linear(d, Y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=a.wd)
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    ema = (
        torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.995)
        )
        if a.ema
        else None
    )
    Xt, Yt = torch.tensor((X - mu) / sd), torch.tensor(Y)
    t0 = time.time()
    for _ in range(a.steps):
        idx = torch.randint(0, len(Xt), (256,))
        loss = ((net(Xt[idx]) - Yt[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sch.step()
        if ema is not None:
            ema.update_parameters(net)
    model = ema.module if ema is not None else net
    with torch.no_grad():
        pred = model(Xt)
    err = (pred - Yt).abs().max(1).values.numpy()
    stats = {
        "train_mse": float(((pred - Yt) ** 2).mean()),
        "frac_err_gt_0.5": float(np.mean(err > 0.5)),
        "frac_err_gt_0.2": float(np.mean(err > 0.2)),
        "train_s": time.time() - t0,
    }

    def policy(o):
        with torch.no_grad():
            return model(torch.tensor((features(o, a.features)[None] - mu) / sd)).numpy()[0]

    return policy, stats


def closed_loop(policy, episodes: int) -> dict:
    env = gym.make(ENV)
    succ, score = [], []
    for s in range(episodes):
        obs, _ = env.reset(seed=s)
        best = 0.0
        for _ in range(200):
            a = np.zeros(5, np.float32)
            a[:3] = np.clip(policy(obs), -1, 1)
            a[4] = 1.0
            obs, _, term, trunc, info = env.step(a)
            best = max(best, info["score"])
            if term or trunc:
                break
        succ.append(bool(info["is_success"]))
        score.append(best)
    env.close()
    return {"success_rate": float(np.mean(succ)), "score": float(np.mean(score)), "episodes": episodes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="datasets/pusht1.hdf5")
    ap.add_argument("--features", default="rel", choices=["raw", "rel"])
    ap.add_argument("--norm", default="zscore", choices=["zscore", "minmax"])
    ap.add_argument("--act", default="relu", choices=["relu", "mish"])
    ap.add_argument("--ema", action="store_true")
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--json", default=None, help="append the row here (keyed by its settings)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    X, Y = load(a.data, a.features)
    policy, stats = fit(X, Y, a)
    row = {**stats, **closed_loop(policy, a.episodes), "samples": len(X)}
    key = f"{Path(a.data).stem}/{a.features}/{a.norm}/{a.act}/ema{int(a.ema)}/wd{a.wd:g}/{a.steps}/s{a.seed}"
    print(key, json.dumps(row), flush=True)
    if a.json:
        p = Path(a.json)
        res = json.loads(p.read_text()) if p.exists() else {}
        res[key] = row
        p.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
