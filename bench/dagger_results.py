"""Success rate vs expert-labelled steps: plain BC (more demos) vs DAgger vs HG-DAgger (and auto).

    OMP_NUM_THREADS=1 .venv/bin/python bench/dagger_results.py --task peginsert --head mse --seeds 0 1 2 \
        --bc-demos 6 12 24 --rounds 2 --episodes 4 --steps 2000 --eval-episodes 50 \
        --out runs/dagger_bench --json bench/results/dagger_peginsert.json

For each training seed: BC on the first n demos of --data (default datasets/<task>.hdf5; recorded with the
scripted expert on demo seeds 10_000_000.. into the run folder when missing) for n in --bc-demos (labels =
their steps); DAgger (mode=expert, chunk_labels=--chunk-labels: the expert's own Tp-step plan from each
saved state), HG-DAgger (mode=intervention, scripted human, trained on takeovers + demos) and, if asked,
mode=auto, each starting from the BC policy trained on the smallest demo set, `--rounds` rounds of
`--episodes` episodes, with the DAgger defaults (beta 1 x0.5 per round, the normaliser refitted on the
aggregate). Every point is evaluated on the same held-out
env seeds 0..--eval-episodes-1 (the evaluation range; demos and DAgger rollouts draw from their own disjoint
ranges, checked here). Writes <out>/<task>/results.json, a Markdown table, success_vs_labels.png and --json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from stores import TASK_ENV, first_episodes, key_values

from robolearn.algos.bc import TrainConfig, TrainLoopConfig
from robolearn.algos.dagger import DaggerConfig, run_dagger
from robolearn.api import train
from robolearn.data.store import read_info
from robolearn.eval.runner import evaluate_policy
from robolearn.policies import PolicyConfig, load_policy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="peginsert")
    ap.add_argument("--head", default="gmm")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--bc-demos", nargs="+", type=int, default=[5, 10, 20, 40])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--modes", nargs="+", default=["expert", "intervention"])
    ap.add_argument("--chunk-labels", default="rollout", choices=["rollout", "visited"])
    ap.add_argument(
        "--uncertainty", type=float, default=None, help="mode=auto: its threshold (default: DaggerConfig's)"
    )
    ap.add_argument(
        "--dagger-args",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra DaggerConfig fields for every DAgger run, e.g. drop_stalled=true stall_progress=0.5",
    )
    ap.add_argument(
        "--tag",
        default="",
        help="suffix of the DAgger rows' keys (e.g. +stall), so a variant sits beside them",
    )
    ap.add_argument("--data", default=None, help="demo store (default datasets/<task>.hdf5)")
    ap.add_argument("--out", default="runs/dagger_results")
    ap.add_argument(
        "--json", default=None, help="also write the results (+ args) here, e.g. bench/results/..."
    )
    a = ap.parse_args()
    extra = dagger_overrides(a.dagger_args)
    torch.set_num_threads(1)
    out = Path(a.out) / a.task
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {}
    env = TASK_ENV[a.task]
    src = Path(a.data or Path("datasets") / f"{a.task}.hdf5")
    if not src.exists():
        from robolearn.config import RecordConfig
        from robolearn.recording import record

        src = out / "demos_all.hdf5"
        if not src.exists():
            record(RecordConfig(env=env, episodes=max(a.bc_demos), seed=10_000_000, out=str(src)))
    from robolearn.seeds import DEMO_RANGE, EVAL_RANGE

    demo_seeds = [int(x.get("seed", -1)) for x in read_info(src).episode_attrs.values()]
    assert all(s in DEMO_RANGE for s in demo_seeds), "demos must come from the demo seed range"
    assert a.eval_episodes <= len(EVAL_RANGE)  # eval: env seeds 0..eval_episodes-1

    def loop_cfg(seed):
        return TrainLoopConfig(steps=a.steps, batch_size=128, seed=seed, eval_episodes=0, val_every=0)

    for seed in a.seeds:
        for n in a.bc_demos:
            key = f"bc/{n}/{seed}"
            if key in res:
                continue
            data = out / f"demos_{n}.hdf5"
            data.unlink(missing_ok=True)  # rebuilt from --data every run
            labels = first_episodes(src, n, data)
            run = out / f"bc_{n}_s{seed}"
            head_cfg = {"denoiser": "mlp"} if a.head in ("diffusion", "flow") else None  # fast on CPU
            train(  # raises Interrupted if stopped: a partial run is never scored
                TrainConfig(
                    policy=PolicyConfig(head=a.head, head_cfg=head_cfg),
                    data=str(data),
                    out=str(run),
                    train=loop_cfg(seed),
                )
            )
            p = load_policy(run / "checkpoints/last.pt")
            r = evaluate_policy(
                p,
                env,
                {"obs_mode": "state", "reward_type": "dense"},
                episodes=a.eval_episodes,
                Ta=p.spec.get("Ta"),
            )
            res[key] = {"method": "BC", "labels": labels, "success_rate": r["success_rate"]}
            res_path.write_text(json.dumps(res, indent=2))
            print(key, res[key], flush=True)
        n0 = a.bc_demos[0]
        for mode in a.modes:
            key = f"{mode}{a.tag}/{seed}"
            if key in res:
                continue
            r = run_dagger(
                DaggerConfig(
                    policy=str(out / f"bc_{n0}_s{seed}/checkpoints/last.pt"),
                    data=str(out / f"demos_{n0}.hdf5"),
                    out=str(out / f"{mode}{a.tag}_s{seed}"),
                    mode=mode,
                    rounds=a.rounds,
                    episodes_per_round=a.episodes,
                    eval_episodes=a.eval_episodes,
                    seed=seed,
                    train=loop_cfg(seed),
                    chunk_labels=a.chunk_labels,
                    **({"uncertainty": a.uncertainty} if a.uncertainty is not None else {}),
                    **extra,
                )
            )
            res[key] = {
                "method": mode,
                "history": [
                    {
                        k: h.get(k)
                        for k in (
                            "labels",
                            "success_rate",
                            "steps",
                            "rollout_success",
                            "hopeless_dropped",
                            "stalled_dropped",
                        )
                    }
                    for h in r["history"]
                ],
            }
            res_path.write_text(json.dumps(res, indent=2))
            print(key, res[key], flush=True)
    table = report(res, a, out)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(
            json.dumps(
                {
                    "args": vars(a),
                    "heldout": True,
                    "eval_env_seeds": [0, a.eval_episodes - 1],
                    "demo_seeds": [min(demo_seeds), max(demo_seeds)],
                    "table": table,
                    "results": res,
                },
                indent=2,
            )
        )


def dagger_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE strings as DaggerConfig fields, the values parsed as YAML (true, 0.5, rollout)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(DaggerConfig)}

    def usage(item: str) -> str:
        return f"--dagger-args {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}"

    unknown = next((p for p in pairs if p.partition("=")[0] not in fields), None)
    if unknown is not None:
        raise SystemExit(usage(unknown))
    return key_values(pairs, usage)


def report(res, a, out) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lines = []
    say = lines.append  # the table is printed and returned
    say(f"\n{a.task}, head {a.head}: success rate (median over seeds {a.seeds}) vs expert-labelled steps\n")
    say("| method | expert labels (median) | success (median [min-max]) |\n|---|---:|---|")
    xs, ys = [], []
    for n in a.bc_demos:
        rows = [res[f"bc/{n}/{s}"] for s in a.seeds if f"bc/{n}/{s}" in res]
        if rows:
            lab, sr = np.median([r["labels"] for r in rows]), [r["success_rate"] for r in rows]
            xs.append(lab)
            ys.append(np.median(sr))
            say(f"| BC, {n} demos | {lab:.0f} | {np.median(sr):.0%} [{min(sr):.0%}-{max(sr):.0%}] |")
    ax.plot(xs, ys, marker="o", label="BC (more demos)")
    for mode in [m + a.tag for m in a.modes]:
        hs = [res[f"{mode}/{s}"]["history"] for s in a.seeds if f"{mode}/{s}" in res]
        if not hs:
            continue
        k = min(len(h) for h in hs)
        lab = [np.median([h[i]["labels"] for h in hs]) for i in range(k)]
        sr = [[h[i]["success_rate"] for h in hs] for i in range(k)]
        ax.plot(lab, [np.median(s) for s in sr], marker="o", label=f"DAgger mode={mode}")
        say(f"| {mode}, round 0 (= BC, {a.bc_demos[0]} demos) | {lab[0]:.0f} | {np.median(sr[0]):.0%} |")
        for i in range(1, k):
            say(
                f"| {mode}, round {i} | {lab[i]:.0f} | {np.median(sr[i]):.0%} [{min(sr[i]):.0%}-{max(sr[i]):.0%}] |"
            )
    ax.set_xlabel("expert-labelled steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{a.task}: {a.head} head, {a.eval_episodes} eval episodes, median of {len(a.seeds)} seeds")
    fig.tight_layout()
    fig.savefig(out / "success_vs_labels.png", dpi=120)
    say(f"\nplot: {out / 'success_vs_labels.png'}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
