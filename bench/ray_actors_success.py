"""Equal env steps, equal success? SAC fine-tuning of one BC policy with the env in the learner's process
(actors=0) vs N Ray actors, 3 seeds each; held-out evaluation of the last checkpoint.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ray_actors_success.py --steps 3000 --seeds 0 1 2 --actors 0 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import robolearn as rl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="robolearn/Lift-v0")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--actors", nargs="+", type=int, default=[0, 2])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--runs", default="runs/ray_actors_success")
    ap.add_argument("--json", default="bench/results/ray_actors_success.json")
    a = ap.parse_args()
    runs = Path(a.runs)
    demos = runs / "demos.hdf5"
    if not demos.exists():
        rl.record(env=a.env, episodes=20, out=str(demos), success_only=True)
    bc = runs / "bc" / "checkpoints" / "last.pt"
    if not bc.exists():
        rl.train(data=str(demos), policy="mse", out=str(runs / "bc"), steps=1500, batch_size=256, eval_episodes=0)
    base = rl.evaluate(str(bc), episodes=a.episodes, seeds=[0], out=str(runs / "eval_bc"))
    out = json.loads(Path(a.json).read_text()) if Path(a.json).exists() else {}
    out["bc"] = {"success_rate": base["success_rate"], "cycle_time_steps": base["cycle_time_steps"]}
    for n in a.actors:
        for seed in a.seeds:
            key = f"actors{n}/s{seed}"
            if key in out:
                continue
            t0 = time.time()
            run = rl.finetune(policy=str(bc), demos=str(demos), env=a.env, out=str(runs / key.replace("/", "_")),
                              steps=a.steps, seed=seed, actors=n, eval_every=0, eval_episodes=10)
            res = rl.evaluate(str(run.checkpoint), episodes=a.episodes, seeds=[0],
                              out=str(runs / f"eval_{key.replace('/', '_')}"))
            out[key] = {"success_rate": res["success_rate"], "cycle_time_steps": res["cycle_time_steps"],
                        "wall_s": time.time() - t0, "env_steps_per_s": run.metrics.get("env_steps_per_s")}
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(out, indent=2))
            print(key, out[key], flush=True)
    print(f"\n{a.env}: BC {out['bc']['success_rate']:.0%}; SAC {a.steps} env steps, last checkpoint, "
          f"{a.episodes} held-out episodes, median [min-max] over seeds {a.seeds}\n")
    print("| actors | success | cycle time (steps) | wall s |\n|---|---|---|---|")
    for n in a.actors:
        rows = [out[f"actors{n}/s{s}"] for s in a.seeds if f"actors{n}/s{s}" in out]
        sr = [r["success_rate"] for r in rows]
        ct = [r["cycle_time_steps"] for r in rows if r["cycle_time_steps"] is not None]
        wall = [r["wall_s"] for r in rows]
        print(f"| {n} | {np.median(sr):.0%} [{min(sr):.0%}-{max(sr):.0%}] | "
              f"{np.median(ct) if ct else float('nan'):.1f} | {np.median(wall):.0f} |")


if __name__ == "__main__":
    main()
