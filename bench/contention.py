"""Thread defaults on a shared CPU: wall time of a short `robolearn train` and `robolearn finetune`, alone and
with 1 and 2 background CPU-bound torch processes, for the default thread count and for 1 and 2 threads.
Target: the default within 1.3x of the best setting in every row.

    .venv/bin/python bench/contention.py            # ~10 min on 2 cores; JSON in bench/results/contention.json

Run it on an otherwise idle machine: the "alone" rows assume nothing else is running.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RL = str(Path(sys.executable).parent / "robolearn")
LOAD = "import time, torch\na = torch.randn(128, 128)\nt = time.time()\nwhile time.time() - t < 3600: a = torch.tanh(a @ a * 0.01)"


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": ""})
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=600)
    ap.add_argument("--loads", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--json", default="bench/results/contention.json")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    demos = tmp / "d.hdf5"
    subprocess.run([RL, "record", "env=robolearn/Lift-v0", "episodes=20", f"out={demos}"], check=True,
                   capture_output=True)
    subprocess.run([RL, "train", "policy=mse", f"data={demos}", f"out={tmp}/bc", "train.steps=200",
                    "train.eval_episodes=0"], check=True, capture_output=True)
    jobs = {
        "train flow (mlp denoiser)": lambda th, i: [
            RL, "train", "policy=flow", "policy.head_cfg.denoiser=mlp", f"data={demos}", f"out={tmp}/t{i}",
            f"train.steps={a.train_steps}", "train.eval_episodes=0", "train.val_every=0"]
        + ([f"train.threads={th}"] if th else []),
        "finetune residual (Lift)": lambda th, i: [
            RL, "finetune", f"policy={tmp}/bc/checkpoints/last.pt", f"demos={demos}", f"out={tmp}/f{i}",
            f"steps={a.finetune_steps}", "learning_starts=100", "eval_every=0", "eval_episodes=1"]
        + ([f"threads={th}"] if th else []),
    }
    rows, i = [], 0
    for load in a.loads:
        bg = [subprocess.Popen([sys.executable, "-c", LOAD]) for _ in range(load)]
        try:
            time.sleep(2.0 if load else 0.0)
            for name, make in jobs.items():
                t = {}
                for th in (0, 1, 2):
                    i += 1
                    t[th] = timed(make(th, i))
                best = min(t[1], t[2])
                rows.append({"job": name, "background": load, "default_s": t[0], "threads1_s": t[1],
                             "threads2_s": t[2], "default_vs_best": t[0] / best})
                print(rows[-1], flush=True)
        finally:
            for p in bg:
                p.kill()
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"machine": f"{os.cpu_count()} cpus", "rows": rows}, indent=2))
    print("\n| job | background torch processes | default (s) | 1 thread (s) | 2 threads (s) | default / best |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['job']} | {r['background']} | {r['default_s']:.1f} | {r['threads1_s']:.1f} | "
              f"{r['threads2_s']:.1f} | {r['default_vs_best']:.2f}x |")


if __name__ == "__main__":
    main()
