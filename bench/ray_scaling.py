"""SAC with remote actors: env steps/s and learner updates/s for actors = 0 (in-process env), 1 and 2.

    .venv/bin/python bench/ray_scaling.py --steps 3000 --json bench/results/ray_scaling.json

SAC from scratch (bridge=none) on Lift, 256x256 networks, batch 256, utd 1, learning_starts 500, one torch
thread in the learner and in each actor, on a local Ray instance sized to the machine. Throughput is over the
whole run after Ray start-up (busy time, evaluations excluded), as `robolearn finetune` reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="robolearn/Lift-v0")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--actors", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--pull-every", type=int, default=50)
    ap.add_argument("--json", default="bench/results/ray_scaling.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import ray

    from robolearn.algos.finetune import FinetuneConfig, finetune

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    for n in a.actors:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.time()
            s = finetune(FinetuneConfig(env=a.env, bridge="none", steps=a.steps, learning_starts=500,
                                        eval_episodes=2, eval_initial=False, ckpt_every=a.steps, actors=n,
                                        pull_every=a.pull_every, out=str(Path(d) / "run")))
            rows.append({"actors": n, "env_steps": s["env_steps"], "updates": s["updates"],
                         "env_steps_per_s": s["env_steps_per_s"], "updates_per_s": s["updates_per_s"],
                         "time_update_s": s["time_update_s"], "time_env_or_wait_s": s["time_env_s"],
                         "wall_s": time.time() - t0})
            print(rows[-1], flush=True)
    ray.shutdown()
    res = {"env": a.env, "steps": a.steps, "pull_every": a.pull_every, "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "torch_threads": 1, "rows": rows}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    print("\n| actors | env steps/s | learner updates/s |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['actors'] or '0 (in-process env)'} | {r['env_steps_per_s']:.0f} | {r['updates_per_s']:.0f} |")


if __name__ == "__main__":
    main()
