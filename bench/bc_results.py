"""The BC results table: success rate of every head on the standard demo sets, >= 50 episodes x 3 seeds.

    bash datasets/make_datasets.sh 100
    .venv/bin/python bench/bc_results.py --tasks reacharound lift pusht --seeds 0 1 2 --steps 1500

A head may carry config overrides, ``head:key=value,key=value`` (values parsed as YAML), e.g.
``--heads gmm gmm:sample_mode=mode``: each variant is its own row. Every head trains at its own default horizon
(GMM per step, the others Tp=8/Ta=4) unless ``--horizon Tp/Ta`` sets one for all; a horizon other than 8/4
is part of the result's key (``reacharound/gmm@Tp1Ta1/0``).

``--image``: image + proprioception instead of the full state (the robomimic/diffusion_policy setup): demos are
recorded with ``obs_mode=both`` into ``datasets/<task>_image.hdf5`` when missing (demo seeds 10_000_000..), the
policy sees ``image_front`` (84x84, the conv encoder of ``robolearn.policies.encoders``) and the robot's own
``eef_pos``, ``eef_yaw``, ``gripper`` (no object poses), and is evaluated with ``obs_mode=both``; keys get ``+image``.

Each (task, head, seed) trains `robolearn train`'s trainer in-process, then evaluates the EMA policy on the
fixed evaluation seeds (env seeds 0..episodes-1, the same for every head). Results are cached in
--json (a rerun skips finished runs) and printed as a Markdown table: median success over training seeds
and the min-max spread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from stores import TASK_ENV, key_values

from robolearn.algos.bc import TrainConfig, TrainLoopConfig
from robolearn.api import train
from robolearn.eval.runner import evaluate_policy
from robolearn.policies import HEADS, PolicyConfig, load_policy, policy_horizon

# diffusion/flow use the MLP denoiser here: the chunks are short (Tp=8) and it trains ~10x faster on CPU
HEAD_CFG = {"diffusion": {"denoiser": "mlp"}, "flow": {"denoiser": "mlp"}}


IMAGE_KEYS = ["image_front", "eef_pos", "eef_yaw", "gripper"]


def head_and_cfg(spec: str) -> tuple[str, dict | None]:
    """"gmm:sample_mode=mode,temperature=0.5" -> ("gmm", {**HEAD_CFG["gmm"], "sample_mode": "mode", ...})."""
    head, _, rest = spec.partition(":")
    if head not in HEADS:
        raise SystemExit(f"--heads {spec!r}: unknown head {head!r}; valid: {list(HEADS)}")
    usage = f"--heads {spec!r}: expected head:key=value[,key=value]"
    cfg = {**HEAD_CFG.get(head, {}), **key_values(filter(None, rest.split(",")), lambda item: usage)}
    return head, cfg or None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=["reacharound", "lift", "pusht"])
    ap.add_argument("--heads", nargs="+", default=list(HEADS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--horizon", default=None,
                    help="Tp/Ta for every head (default: each head's own, policy_horizon; one other than 8/4 is part "
                         "of the result's key, e.g. reacharound/gmm@Tp1Ta1/0), or 'task': the task's measured "
                         "settings, robolearn_envs.BC_DEFAULTS (horizon, obs keys, normaliser, MLPs; key @task)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--image", action="store_true", help="image + proprioception observations (see above)")
    ap.add_argument("--demos", type=int, default=100, help="--image: demos to record when the file is missing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="runs/bc_results")
    ap.add_argument("--json", default="runs/bc_results/results.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cache_path = Path(a.json)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    specs = {head: head_and_cfg(head) for head in a.heads}  # fails on a bad spec before any training
    fixed = (None, None) if a.horizon == "task" else tuple(int(v) for v in a.horizon.split("/")) if a.horizon else None
    horizon = {head: fixed or policy_horizon(name) for head, (name, _) in specs.items()}
    obs_mode, obs_keys, suffix = ("both", IMAGE_KEYS, "+image") if a.image else ("state", None, "")
    for task in a.tasks:
        data = Path("datasets") / f"{task}{'_image' if a.image else ''}.hdf5"
        if a.image and not data.exists():
            from robolearn.config import RecordConfig
            from robolearn.recording import record

            record(RecordConfig(env=TASK_ENV[task], episodes=a.demos, seed=10_000_000, obs_mode="both", out=str(data)))
        if not data.exists():
            raise SystemExit(f"{data} missing: run `bash datasets/make_datasets.sh` first")
        for head in a.heads:
            for seed in a.seeds:
                Tp, Ta = horizon[head]
                key = f"{task}/{head}{tag(Tp, Ta)}{suffix}/{seed}"
                if key in cache:
                    continue
                out = Path(a.runs) / task / f"{head.replace(':', '-').replace('=', '-').replace(',', '-')}{tag(Tp, Ta)}{suffix}_s{seed}"
                t0 = time.time()
                name, head_cfg = specs[head]
                if a.horizon == "task":  # the task's own head settings too (e.g. PushT-v1's MLP denoiser)
                    head_cfg = None
                cfg = TrainConfig(
                    policy=PolicyConfig(head=name, head_cfg=head_cfg), data=str(data), out=str(out), Tp=Tp, Ta=Ta, obs_keys=obs_keys,
                    train=TrainLoopConfig(steps=a.steps, batch_size=a.batch_size, seed=seed, eval_episodes=0,
                                          val_every=500),
                )
                s = train(cfg).metrics  # raises Interrupted if stopped: a partial run is never scored
                policy = load_policy(out / "checkpoints" / "last.pt")
                r = evaluate_policy(policy, TASK_ENV[task], {"obs_mode": obs_mode, "reward_type": "dense"},
                                    episodes=a.episodes, seed=0, Ta=policy.spec.get("Ta"))
                cache[key] = {"success_rate": r["success_rate"], "success_ci": r["success_ci"], "score": r.get("score"),
                              "cycle_time_steps": r.get("cycle_time_steps"), "train_s": s["seconds"],
                              "total_s": time.time() - t0, "params": s["params"]}
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_text(json.dumps(cache, indent=2))
                print(key, cache[key], flush=True)
    print_table(cache, a.tasks, [h + tag(*horizon[h]) + suffix for h in a.heads], a.seeds, a.episodes)


def tag(Tp: int | None, Ta: int | None) -> str:
    if Tp is None:
        return "@task"
    return "" if (Tp, Ta) == (8, 4) else f"@Tp{Tp}Ta{Ta}"


def print_table(cache, tasks, heads, seeds, episodes) -> None:
    print(f"\nsuccess rate, median over training seeds {seeds} [min-max], {episodes} eval episodes each\n")
    print("| head | " + " | ".join(tasks) + " |")
    print("|---|" + "---|" * len(tasks))
    for h in heads:
        cells = []
        for t in tasks:
            v = [cache[f"{t}/{h}/{s}"]["success_rate"] for s in seeds if f"{t}/{h}/{s}" in cache]
            cells.append(f"{np.median(v):.0%} [{min(v):.0%}-{max(v):.0%}]" if v else "-")
        print(f"| {h} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
