"""LeRobot's DiffusionPolicy trained on a robolearn HDF5 store, and served to robolearn's evaluator.

Runs with LeRobot's interpreter (its own venv, README "Speed"); imports lerobot, torch, h5py and numpy, never
robolearn. `bench/bc_vs_lerobot.py` drives it:

    <lerobot venv>/bin/python bench/lerobot_learn.py train --data datasets/reacharound.hdf5 --out runs/x --steps 5000
    <lerobot venv>/bin/python bench/lerobot_learn.py serve --model runs/x/model.pt   # JSON lines on stdin/stdout

What LeRobot gets: the same episodes and windows as ours (To observations, the chunk of Tp actions from the last
one, padded by repeating the last action and flagged in ``action_is_pad``), the robot's keys (``eef_pos``,
``eef_yaw``, ``gripper``) as ``observation.state`` and the task's keys as ``observation.environment_state``
(its DiffusionPolicy refuses state-only input without the latter), min-max normalised to [-1, 1] as its
MIN_MAX normalisation mode does (the default for diffusion's state and action), its own optimiser and LR
scheduler presets (what ``lerobot-train`` builds), batch 64 and DDIM sampling with 10 steps. ``serve`` runs
``select_action`` (LeRobot's own observation queue and action-chunk queue: To, Ta) one env step at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import h5py
import numpy as np
import torch

ROBOT_KEYS = ("eef_pos", "eef_yaw", "gripper")


def load(path: str, only: list[str] | None = None):
    """-> obs keys split (robot, task), per-episode arrays [(state (T, ds), env (T, de), actions (T, Da))].
    ``only``: use just these observation keys (default: all in the file)."""
    eps = []
    with h5py.File(path, "r") as f:
        names = sorted(f["data"], key=lambda k: int(k.split("_")[-1]))
        keys = sorted(only or f["data"][names[0]]["obs"])
        robot = [k for k in keys if k in ROBOT_KEYS]
        task = [k for k in keys if k not in ROBOT_KEYS]
        for n in names:
            g = f["data"][n]
            obs = {k: g["obs"][k][()].reshape(len(g["actions"]), -1).astype(np.float32) for k in keys}
            eps.append(
                (
                    np.concatenate([obs[k] for k in robot], 1),
                    np.concatenate([obs[k] for k in task], 1),
                    g["actions"][()].astype(np.float32),
                )
            )
    return robot, task, eps


def minmax(x: np.ndarray, floor: float = 0.0) -> dict:
    """Per-dim min/max; with floor > 0, a range below it is widened to it (centred), as robolearn's normaliser
    does (its MIN_RANGE): the --range-floor ablation. LeRobot's own MIN_MAX has no floor."""
    lo, hi = x.min(0), x.max(0)
    pad = np.maximum(floor - (hi - lo), 0.0) / 2
    return {"min": (lo - pad).tolist(), "max": (hi + pad).tolist()}


def meanstd(x: np.ndarray) -> dict:
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist()}


def norm(x, s):
    """LeRobot's MIN_MAX: (x - min) / (max - min + 1e-8) * 2 - 1, or its MEAN_STD: (x - mean) / (std + 1e-8)."""
    if "mean" in s:
        return (x - np.asarray(s["mean"], np.float32)) / (np.asarray(s["std"], np.float32) + 1e-8)
    lo, hi = np.asarray(s["min"], np.float32), np.asarray(s["max"], np.float32)
    return (x - lo) / (hi - lo + 1e-8) * 2 - 1


def unnorm(x, s):
    lo, hi = np.asarray(s["min"], np.float32), np.asarray(s["max"], np.float32)
    return (x + 1) / 2 * (hi - lo + 1e-8) + lo


def make_policy(ds: int, de: int, da: int, To: int, Tp: int, Ta: int, down_dims, embed: int):
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    cfg = DiffusionConfig(
        n_obs_steps=To,
        horizon=Tp,
        n_action_steps=Ta,
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(ds,)),
            "observation.environment_state": PolicyFeature(type=FeatureType.ENV, shape=(de,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(da,))},
        noise_scheduler_type="DDIM",
        num_inference_steps=10,
        down_dims=tuple(down_dims),
        diffusion_step_embed_dim=embed,
        device="cpu",
    )
    return DiffusionPolicy(cfg)


def train(a) -> None:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    robot, task, eps = load(a.data, a.keys)
    fit = meanstd if a.obs_norm == "meanstd" else (lambda x: minmax(x, a.range_floor))
    stats = {
        "state": fit(np.concatenate([e[0] for e in eps])),
        "env": fit(np.concatenate([e[1] for e in eps])),
        "action": minmax(np.concatenate([e[2] for e in eps])),  # actions stay min-max, as on our side
    }
    eps = [(norm(s, stats["state"]), norm(v, stats["env"]), norm(x, stats["action"])) for s, v, x in eps]
    index = [(i, t) for i, e in enumerate(eps) for t in range(len(e[2]))]
    ds, de, da = eps[0][0].shape[1], eps[0][1].shape[1], eps[0][2].shape[1]
    policy = make_policy(ds, de, da, a.To, a.Tp, a.Ta, a.down_dims, a.embed)
    opt = policy.config.get_optimizer_preset().build(policy.parameters())
    sched = policy.config.get_scheduler_preset().build(opt, a.steps)
    policy.train()
    t0 = time.time()
    for step in range(a.steps):
        pick = rng.integers(0, len(index), a.batch)
        S, V, A, P = [], [], [], []
        for j in pick:
            i, t = index[j]
            s, v, x = eps[i]
            o = np.clip(np.arange(t - a.To + 1, t + 1), 0, None)
            c = np.arange(t, t + a.Tp)
            P.append(c >= len(x))
            c = np.minimum(c, len(x) - 1)
            S.append(s[o]), V.append(v[o]), A.append(x[c])
        batch = {
            "observation.state": torch.as_tensor(np.stack(S)),
            "observation.environment_state": torch.as_tensor(np.stack(V)),
            "action": torch.as_tensor(np.stack(A)),
            "action_is_pad": torch.as_tensor(np.stack(P)),
        }
        loss, _ = policy.forward(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 10.0)  # lerobot-train's default grad_clip_norm
        opt.step()
        sched.step()
        if step % 1000 == 0:
            print(json.dumps({"step": step, "loss": float(loss)}), file=sys.stderr, flush=True)
    import lerobot

    meta = {
        "robot": robot, "task": task, "stats": stats, "dims": [ds, de, da],
        "To": a.To, "Tp": a.Tp, "Ta": a.Ta, "down_dims": list(a.down_dims), "embed": a.embed,
        "train_s": time.time() - t0, "steps": a.steps,
        "params": sum(p.numel() for p in policy.parameters()),
        "versions": f"lerobot {lerobot.__version__}, torch {torch.__version__}",
    }
    torch.save({"state_dict": policy.state_dict(), "meta": json.dumps(meta)}, f"{a.out}/model.pt")
    print(json.dumps({k: meta[k] for k in ("train_s", "steps", "params", "versions")}), flush=True)


@torch.no_grad()
def serve(a) -> None:
    torch.set_num_threads(a.threads)
    ck = torch.load(a.model, weights_only=True)
    m = json.loads(ck["meta"])
    policy = make_policy(*m["dims"], m["To"], m["Tp"], m["Ta"], m["down_dims"], m["embed"])
    policy.load_state_dict(ck["state_dict"])
    policy.eval()
    st = m["stats"]
    print(json.dumps({"ready": True, "Ta": m["Ta"]}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if "reset" in msg:
            policy.reset()
            torch.manual_seed(int(msg["reset"]))
            print("{}", flush=True)
            continue
        o = msg["obs"]
        s = np.concatenate([np.ravel(o[k]) for k in m["robot"]]).astype(np.float32)
        v = np.concatenate([np.ravel(o[k]) for k in m["task"]]).astype(np.float32)
        batch = {
            "observation.state": torch.as_tensor(norm(s, st["state"]))[None],
            "observation.environment_state": torch.as_tensor(norm(v, st["env"]))[None],
        }
        act = policy.select_action(batch)[0].numpy()
        print(json.dumps({"action": unnorm(act, st["action"]).tolist()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=5000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--To", type=int, default=2)
    t.add_argument("--Tp", type=int, default=8)
    t.add_argument("--Ta", type=int, default=4)
    t.add_argument("--down-dims", type=int, nargs="+", default=[32, 64, 128])
    t.add_argument("--embed", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--keys", nargs="+", default=None, help="observation keys to use (default: all in the file)")
    t.add_argument("--obs-norm", choices=["minmax", "meanstd"], default="minmax",
                   help="observation scaling: LeRobot's MIN_MAX (its diffusion default) or MEAN_STD")
    t.add_argument("--range-floor", type=float, default=0.0,
                   help="ablation: widen each observation dim's min-max range to at least this (0 = LeRobot's own)")
    s = sub.add_parser("serve")
    s.add_argument("--model", required=True)
    s.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    train(a) if a.cmd == "train" else serve(a)


if __name__ == "__main__":
    main()
