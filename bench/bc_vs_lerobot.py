"""Learning, side by side: LeRobot's DiffusionPolicy and ours, trained on the same robolearn demos, the same
horizons and step budget, scored by our evaluator on the same held-out seeds.

    .venv/bin/python bench/bc_vs_lerobot.py --lerobot-python <lerobot venv>/bin/python \\
        --tasks reacharound pusht1 --seeds 0 1 2 --steps 5000 --json bench/results/bc_vs_lerobot.json

Per (task, seed): ours trains diffusion (the same 32-64-128 U-Net as LeRobot's row, DDIM-10) and flow (MLP
denoiser) in-process with `robolearn train`'s trainer; LeRobot trains in its own interpreter
(bench/lerobot_learn.py train) and is then served to `evaluate_policy` as an in-env actor (bench/lerobot_learn.py
serve: one JSON line per env step, LeRobot's own observation and action queues). Both sides: 1 torch thread,
batch 64, To=2, Tp=8, Ta=4, 50 episodes on evaluation seed 0 (env seeds 0..49; the demos use 10_000_000+).
Results are cached in --json (a rerun skips finished runs). Each run is timed alone: never run two at once.

``--inputs task``: both sides see the task's measured BC inputs (``robolearn_envs.BC_DEFAULTS``; PushT-v1: the
4 keys block_pos, block_yaw, eef_in_block, eef_pos, To=1, mean/std scaling) instead of every key at To=2 with
min-max; horizons stay Tp=8/Ta=4 for the chunked rows, and one more row, ``ours/task``, is our policy with all
of the task's settings (PushT-v1: per-step flow, 512-512 ReLU encoder). Keys get ``@task``
(``pusht1@task/lerobot/diffusion/0``). Tasks without an entry run as with ``--inputs all``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from robolearn_envs import BC_DEFAULTS
from stores import TASK_ENV

from robolearn.algos.bc import TrainConfig, TrainLoopConfig
from robolearn.api import train
from robolearn.eval.runner import evaluate_policy
from robolearn.policies import PolicyConfig, load_policy

OURS = {"diffusion": {"denoiser": "unet", "down_dims": [32, 64, 128]}, "flow": {"denoiser": "mlp"}}
HERE = Path(__file__).resolve().parent
IMPLS = ("lerobot/diffusion", "ours/diffusion", "ours/flow")
TASK_IMPLS = ("ours/task",)  # --inputs task only: the task's own BC defaults, horizon included


class LeRobotActor:
    """A LeRobot policy served by bench/lerobot_learn.py in LeRobot's interpreter: reset() / act(obs)."""

    def __init__(self, python: str, model: Path):
        self.p = subprocess.Popen(
            [python, str(HERE / "lerobot_learn.py"), "serve", "--model", str(model)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        hello = json.loads(self.p.stdout.readline() or "{}")
        if not hello.get("ready"):
            raise SystemExit(f"bench/lerobot_learn.py serve did not start (exit {self.p.poll()})")
        self.episode = 0

    def _ask(self, msg: dict) -> dict:
        self.p.stdin.write(json.dumps(msg) + "\n")
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"bench/lerobot_learn.py serve died (exit {self.p.poll()})")
        return json.loads(line)

    def reset(self) -> None:
        self._ask({"reset": self.episode})
        self.episode += 1

    def act(self, obs: dict) -> np.ndarray:
        return np.asarray(self._ask({"obs": {k: np.asarray(v).tolist() for k, v in obs.items()}})["action"],
                          np.float32)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=30)


def task_inputs(task: str, inputs: str) -> dict:
    """The task's measured observation settings for --inputs task ({} for --inputs all or a task without any)."""
    d = BC_DEFAULTS.get(TASK_ENV[task], {}) if inputs == "task" else {}
    return {k: d[k] for k in ("To", "obs_keys", "obs_normalizer") if k in d}


def task_tag(task: str, inputs: str) -> str:
    """The task's name in result keys and run folders: ``pusht1@task`` where --inputs task changes its inputs."""
    return f"{task}@task" if task_inputs(task, inputs) else task


def run_ours(task: str, head: str, seed: int, steps: int, runs: Path, inputs: str = "all") -> dict:
    out = runs / task_tag(task, inputs) / f"{head}_s{seed}"
    loop = TrainLoopConfig(steps=steps, batch_size=64, seed=seed, eval_episodes=0, val_every=0)
    if head == "task":  # everything from the task's defaults: head flow, its horizon, encoder and denoiser
        cfg = TrainConfig(policy=PolicyConfig(head="flow"), data=f"datasets/{task}.hdf5", out=str(out), train=loop)
    else:
        # --inputs task: the task's To / obs keys / normaliser and observation encoder; --inputs all: the generic
        # defaults (To=2, all keys, min-max), as before task defaults existed. task_defaults=False either way, so
        # the head keeps OURS[head] (a U-Net config equal to the defaults would count as unset)
        fields = task_inputs(task, inputs)
        enc = BC_DEFAULTS[TASK_ENV[task]].get("encoder") if fields else None
        cfg = TrainConfig(
            policy=PolicyConfig(head=head, head_cfg=OURS[head], **({"encoder": enc} if enc else {})),
            data=f"datasets/{task}.hdf5", out=str(out), Tp=8, Ta=4, train=loop, task_defaults=False, **fields,
        )
    s = train(cfg).metrics  # raises Interrupted if stopped: a partial run is never scored
    r = evaluate_policy(load_policy(out / "checkpoints" / "last.pt"), TASK_ENV[task], {"obs_mode": "state"},
                        episodes=50, seed=0)
    return {"success_rate": r["success_rate"], "score": r.get("score"), "train_s": s["seconds"],
            "params": s["params"]}


def run_lerobot(task: str, seed: int, steps: int, runs: Path, python: str, floor: float = 0.0,
                inputs: str = "all") -> dict:
    fields = task_inputs(task, inputs)
    out = runs / task_tag(task, inputs) / (f"lerobot_s{seed}" if not floor else f"lerobot_floor{floor}_s{seed}")
    out.mkdir(parents=True, exist_ok=True)
    cmd = [python, str(HERE / "lerobot_learn.py"), "train", "--data", f"datasets/{task}.hdf5", "--out", str(out),
           "--steps", str(steps), "--seed", str(seed), "--Tp", "8", "--Ta", "4", "--range-floor", str(floor),
           "--To", str(fields.get("To", 2))]
    if fields.get("obs_keys"):
        cmd += ["--keys", *fields["obs_keys"]]
    if fields.get("obs_normalizer") == "meanstd":
        cmd += ["--obs-norm", "meanstd"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    meta = json.loads(done.stdout.strip().splitlines()[-1])
    actor = LeRobotActor(python, out / "model.pt")
    try:
        r = evaluate_policy(actor, TASK_ENV[task], {"obs_mode": "state"}, episodes=50, seed=0)
    finally:
        actor.close()
    return {"success_rate": r["success_rate"], "score": r.get("score"), "train_s": meta["train_s"],
            "params": meta["params"], "versions": meta["versions"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lerobot-python", required=True)
    ap.add_argument("--tasks", nargs="+", default=["reacharound", "pusht1"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--runs", default="runs/bc_vs_lerobot")
    ap.add_argument("--json", default="bench/results/bc_vs_lerobot.json")
    ap.add_argument("--range-floor", type=float, default=0.0,
                    help="also run LeRobot with its observation ranges floored at this (robolearn's MIN_RANGE, 0.05)")
    ap.add_argument("--inputs", choices=["all", "task"], default="all",
                    help="observations for both sides: every key, To=2, min-max (all) or the task's measured settings "
                         "plus an ours/task row (task; see above)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    path = Path(a.json)
    cache = json.loads(path.read_text()) if path.exists() else {}
    runs = Path(a.runs)
    for task in a.tasks:
        tk = task_tag(task, a.inputs)
        extra = (("lerobot/diffusion+floor",) if a.range_floor else ()) + (TASK_IMPLS if tk != task else ())
        for seed in a.seeds:
            for impl in IMPLS + extra:
                key = f"{tk}/{impl}/{seed}"
                if key in cache:
                    continue
                t0 = time.time()
                if impl.startswith("lerobot/"):
                    floor = a.range_floor if impl.endswith("+floor") else 0.0
                    row = run_lerobot(task, seed, a.steps, runs, a.lerobot_python, floor, a.inputs)
                else:
                    row = run_ours(task, impl.split("/")[1], seed, a.steps, runs, a.inputs)
                cache[key] = {**row, "steps": a.steps, "total_s": time.time() - t0}
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(cache, indent=2))
                print(key, cache[key], flush=True)
    print(f"\n{a.steps} steps, batch 64, Tp=8 Ta=4, inputs {a.inputs}, 50 held-out episodes; median [min-max] over "
          f"seeds {a.seeds}\n")
    print("| task | policy | success | PushT score | train wall s (1 thread) |")
    print("|---|---|---|---|---|")
    for task in a.tasks:
        tk = task_tag(task, a.inputs)
        for impl in (*IMPLS, "lerobot/diffusion+floor", *TASK_IMPLS):
            rows = [cache[k] for k in (f"{tk}/{impl}/{s}" for s in a.seeds) if k in cache]
            if not rows:
                continue
            sr = [r["success_rate"] for r in rows]
            sc = [r["score"] for r in rows if r.get("score") is not None]
            ts = np.median([r["train_s"] for r in rows])
            score = f"{np.median(sc):.2f}" if sc else "-"
            print(f"| {tk} | {impl} | {np.median(sr):.0%} [{min(sr):.0%}-{max(sr):.0%}] | {score} | {ts:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
