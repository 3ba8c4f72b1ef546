"""Behaviour cloning on Meta-World's MT10 tasks: success per task with 10 and 50 scripted demos, MSE vs flow.

For each MT10 task: record --demos-max episodes with Meta-World's own scripted policy (`expert=scripted`) on
the demo seed range (10_000_000..), train each head on the first n of them for n in --demos and each training
seed, and evaluate every checkpoint through `robolearn eval`'s runner on held-out env seeds (training seed k
is scored on eval seeds k*10000 .. k*10000+--episodes-1, never a demo seed; checked). Goals are Meta-World's
own per-seed random goals (the adapter's default). Results go to --json after every run, so an interrupted
bench resumes where it stopped.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python bench/mt10_bc.py --json bench/results/mt10_bc.json

Heads: `mse` (the baseline) and `flow` with the MLP denoiser (the fast expressive head on CPU). Defaults
(To=2, Tp=8, Ta=4, batch 128) are the library's; --steps gradient steps per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402
from robolearn_envs.suites import MT10_TASKS  # noqa: E402
from stores import first_episodes  # noqa: E402

from robolearn.algos.bc import TrainConfig, TrainLoopConfig  # noqa: E402
from robolearn.api import train  # noqa: E402
from robolearn.config import RecordConfig  # noqa: E402
from robolearn.data.store import read_info  # noqa: E402
from robolearn.eval.runner import evaluate_policy  # noqa: E402
from robolearn.policies import PolicyConfig, load_policy  # noqa: E402
from robolearn.recording import record  # noqa: E402
from robolearn.seeds import DEMO_RANGE, eval_seed  # noqa: E402

HEADS = {"mse": None, "flow": {"denoiser": "mlp"}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(MT10_TASKS))
    ap.add_argument("--demos", nargs="+", type=int, default=[50, 10])
    ap.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    ap.add_argument("--steps", type=int, default=2000, help="gradient steps per BC run")
    ap.add_argument("--episodes", type=int, default=50, help="held-out evaluation episodes per run")
    ap.add_argument("--out", default="runs/mt10_bc")
    ap.add_argument("--json", default="bench/results/mt10_bc.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = Path(a.json)
    res = json.loads(res_path.read_text())["runs"] if res_path.exists() else {}

    def save():
        res_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = res_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"args": vars(a), "runs": res, "table": table(res, a)}, indent=1))
        tmp.replace(res_path)

    demo_seeds: dict[str, set[int]] = {}
    for task in a.tasks:  # record every task first (seconds each)
        src = out / task / "demos.hdf5"
        if not src.exists():
            src.parent.mkdir(parents=True, exist_ok=True)
            record(
                RecordConfig(
                    env=f"metaworld/{task}-v3", episodes=max(a.demos), seed=DEMO_RANGE.start, out=str(src)
                )
            )
        demo_seeds[task] = {int(x["seed"]) for x in read_info(src).episode_attrs.values()}
        assert demo_seeds[task] <= set(DEMO_RANGE), "demos must come from the demo seed range"
    for n in a.demos:  # the first demo count over every task before the next (a partial run is a full column)
        for task in a.tasks:
            env_id = f"metaworld/{task}-v3"
            data = out / task / f"demos_{n}.hdf5"
            labels = first_episodes(out / task / "demos.hdf5", n, data)
            for head in a.heads:
                for seed in a.seeds:
                    key = f"{task}/{n}/{head}/{seed}"
                    if key in res:
                        continue
                    run = out / task / f"{head}_{n}_s{seed}"
                    t0 = time.perf_counter()
                    train(  # raises Interrupted if stopped: a partial run is never scored
                        TrainConfig(
                            policy=PolicyConfig(head=head, head_cfg=HEADS[head]),
                            data=str(data),
                            out=str(run),
                            train=TrainLoopConfig(
                                steps=a.steps, batch_size=128, seed=seed, eval_episodes=0, val_every=0
                            ),
                        )
                    )
                    train_s = time.perf_counter() - t0
                    seeds = [eval_seed(seed, i) for i in range(a.episodes)]
                    assert not set(seeds) & demo_seeds[task]
                    p = load_policy(run / "checkpoints/last.pt")
                    r = evaluate_policy(p, env_id, episodes=a.episodes, seed=seed, Ta=p.spec.get("Ta"))
                    res[key] = {
                        "success_rate": r["success_rate"],
                        "labels": labels,
                        "train_s": round(train_s, 1),
                        "eval_seeds": [min(seeds), max(seeds)],
                    }
                    print(key, res[key], flush=True)
                    save()
    save()
    print(table(res, a))


def table(res: dict, a) -> str:
    """Per task: median [min-max] success over training seeds for each (demos, head); a mean row."""
    cols = [(n, h) for n in sorted(a.demos) for h in a.heads]
    lines = [
        f"| task | {' | '.join(f'{h}, {n} demos' for n, h in cols)} |",
        f"|---|{'---|' * len(cols)}",
    ]
    means: dict = {c: [] for c in cols}
    for task in a.tasks:
        cells = []
        for n, h in cols:
            sr = [res[k]["success_rate"] for s in a.seeds if (k := f"{task}/{n}/{h}/{s}") in res]
            if sr:
                means[(n, h)].append(statistics.median(sr))
                cells.append(f"{statistics.median(sr):.0%} [{min(sr):.0%}-{max(sr):.0%}]")
            else:
                cells.append("-")
        lines.append(f"| {task} | {' | '.join(cells)} |")
    lines.append(
        "| **mean of medians** | "
        + " | ".join(f"**{statistics.mean(m):.0%}** ({len(m)} tasks)" if m else "-" for m in means.values())
        + " |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
