"""Why a PandaPickCube policy fails: each held-out episode classified by what the cube and the gripper did.

    OMP_NUM_THREADS=1 MUJOCO_GL=egl .venv/bin/python bench/panda_failures.py runs/hilserl/panda_on50k/sac_s0/checkpoints/last.pt \
        [--episodes 50] [--json out.json]

Takes a BC (`robolearn train`) or fine-tuned (`robolearn finetune`) checkpoint, runs it on env seeds 0..N-1 (the
evaluation seeds of `robolearn eval`), and sorts every episode into one class:
- success;
- never closed near the cube: the gripper never closed (command > 0.5) with the pinch site within 2 cm of the cube;
- closed, never lifted: it closed there but the cube never rose 1 cm above its start;
- lifted, dropped: the cube rose at least 1 cm but was back within 1 cm of its start at the end;
- lifted, too low at the end: the cube was up at the end but short of gym-hil's +10 cm.
Per class: the count, and the median closest pinch-to-cube distance and highest cube lift in those episodes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np


def load_actor(path: str):
    from robolearn.api import load_policy
    from robolearn.policies.checkpoint import read_checkpoint

    ck = read_checkpoint(path, expect=None, field="checkpoint")
    kw = ck.get("env_kwargs") or {}
    return load_policy(path), ck["env_id"], json.loads(kw) if isinstance(kw, str) else dict(kw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--json")
    a = p.parse_args(argv)
    from robolearn.envutil import make_env

    actor, env_id, env_kwargs = load_actor(a.checkpoint)
    env = make_env(env_id, **env_kwargs)
    need = {"block_pos", "tcp_pos", "gripper"}
    missing = sorted(need - set(env.observation_space.spaces))
    if missing:
        p.error(
            f"{a.checkpoint} runs on {env_id}, whose observations lack {missing}: this script is for "
            "gym_hil/PandaPickCubeBase-v0 checkpoints"
        )
    rows = []
    for ep in range(a.episodes):
        obs, _ = env.reset(seed=ep)
        actor.reset()
        z0 = float(obs["block_pos"][2])
        closest, lift_max, closed_near, success = 9.9, 0.0, False, False
        for _ in range(10_000):
            act = actor.act(obs)
            obs, _, term, trunc, info = env.step(act)
            d = float(np.linalg.norm(np.asarray(obs["tcp_pos"]) - np.asarray(obs["block_pos"])))
            closest = min(closest, d)
            lift_max = max(lift_max, float(obs["block_pos"][2]) - z0)
            closed_near |= d < 0.02 and float(obs["gripper"][0]) > 0.5
            success |= bool(info.get("is_success", False))
            if term or trunc:
                break
        lift_end = float(obs["block_pos"][2]) - z0
        if success:
            kind = "success"
        elif lift_max >= 0.01:
            kind = "lifted, dropped" if lift_end < 0.01 else "lifted, too low at the end"
        elif closed_near:
            kind = "closed, never lifted"
        else:
            kind = "never closed near the cube"
        rows.append(
            {"seed": ep, "kind": kind, "closest_m": closest, "lift_max_m": lift_max, "lift_end_m": lift_end}
        )
    kinds = [
        "success",
        "never closed near the cube",
        "closed, never lifted",
        "lifted, dropped",
        "lifted, too low at the end",
    ]
    print(f"{a.checkpoint}: {a.episodes} episodes (env seeds 0..{a.episodes - 1})\n")
    print("| outcome | episodes | closest pinch-cube (cm), median | highest lift (cm), median |")
    print("|---|---:|---:|---:|")
    summary = {}
    for k in kinds:
        r = [x for x in rows if x["kind"] == k]
        summary[k] = len(r)
        if r:
            c = statistics.median(x["closest_m"] for x in r) * 100
            li = statistics.median(x["lift_max_m"] for x in r) * 100
            print(f"| {k} | {len(r)} | {c:.1f} | {li:.1f} |")
        else:
            print(f"| {k} | 0 | - | - |")
    if a.json:
        json.dump(
            {"checkpoint": a.checkpoint, "summary": summary, "episodes": rows}, open(a.json, "w"), indent=1
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
