"""One table from several `bench/hilserl_table.sh` arms that share their BC runs (the issue's ablation table).

    .venv/bin/python bench/hilserl_ablation.py lift_on15 lift_perstep lift_ens10 lift_rlpd lift_nodemo \
        --labels "residual, chunk-aware (default)" "residual, per-step base" "residual, 10 critics" \
                 "RLPD: SAC from scratch + demos" "SAC from scratch, no demos" --json bench/results/hilserl_lift_ablation.json

Reads bench/results/hilserl_<arm>.json (written by hilserl_table.sh). Per arm: held-out success of the last
checkpoint and of best.pt (median [min-max] over seeds, and per seed), the held-out cycle time of the last
checkpoint, finetune's own evaluation curve (20 episodes of eval seed 1, median over seeds) and finetune's wall time.
The arms must share BC runs (copy the bc_s*/eval_bc_s* folders between runs/hilserl/<arm>/) for the BC column
to mean anything; this is checked.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def pct(x: float) -> str:
    return f"{x:.0%}"


def spread(xs: list[float]) -> str:
    return f"{pct(statistics.median(xs))} [{pct(min(xs))}-{pct(max(xs))}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arms", nargs="+", help="hilserl_table.sh NAMEs")
    p.add_argument("--labels", nargs="+", help="one label per arm (default: the NAMEs)")
    p.add_argument("--json", help="write the table and per-seed numbers here")
    a = p.parse_args(argv)
    labels = a.labels or a.arms
    if len(labels) != len(a.arms):
        p.error(f"{len(labels)} labels for {len(a.arms)} arms")
    arms, bc = {}, None
    for name in a.arms:
        try:
            arms[name] = json.load(open(f"bench/results/hilserl_{name}.json"))
        except FileNotFoundError:
            p.error(
                f"bench/results/hilserl_{name}.json is missing: run bench/hilserl_table.sh {name} ... first"
            )
        this_bc = {s: r["bc"]["success_rate"] for s, r in arms[name]["runs"].items()}
        if bc is not None and this_bc != bc:
            p.error(
                f"{name}'s BC runs differ from {a.arms[0]}'s ({this_bc} vs {bc}): copy the same bc_s* runs in"
            )
        bc = this_bc
    seeds = sorted(bc)
    steps = sorted({h["step"] for d in arms.values() for r in d["runs"].values() for h in (r["curve"] or [])})
    head = [
        "arm (FT_ARGS)",
        "last checkpoint",
        "per seed",
        "best.pt",
        "cycle, last (steps)",
        "finetune's eval at " + " / ".join(f"{s // 1000}k" for s in steps),
        "wall (min)",
    ]
    rows = [
        f"| BC (the start) | {spread(list(bc.values()))} | {' / '.join(pct(bc[s]) for s in seeds)} | - | "
        f"{statistics.median(r['bc']['cycle_time_steps'] for r in arms[a.arms[0]]['runs'].values()):.1f} | - | - |"
    ]
    out = {"bc": bc, "arms": {}}
    for name, label in zip(a.arms, labels):
        runs = arms[name]["runs"]
        last = [runs[s]["sac"]["success_rate"] for s in seeds]
        best = [runs[s]["sacbest"]["success_rate"] for s in seeds]
        cyc = statistics.median(runs[s]["sac"]["cycle_time_steps"] or float("nan") for s in seeds)
        curve = []
        for st in steps:
            v = [h["success_rate"] for s in seeds for h in (runs[s]["curve"] or []) if h["step"] == st]
            curve.append(pct(statistics.median(v)) if v else "-")
        wall = statistics.median(runs[s]["wall"]["finetune_s"] for s in seeds) / 60
        ft = arms[name]["finetune_args"] or "defaults"
        rows.append(
            f"| {label} (`{ft}`) | {spread(last)} | {' / '.join(pct(x) for x in last)} | {spread(best)} | "
            f"{cyc:.1f} | {' / '.join(curve)} | {wall:.1f} |"
        )
        out["arms"][name] = {
            "label": label,
            "finetune_args": ft,
            "last": last,
            "best": best,
            "cycle_last": cyc,
            "eval_curve_median": dict(zip(steps, curve)),
            "wall_min_median": wall,
        }
    env, n, total = arms[a.arms[0]]["env"], arms[a.arms[0]]["demos"], arms[a.arms[0]]["steps"]
    table = "\n".join(
        [
            f"{env}: BC on {n} demos (the same BC runs in every arm), then {total} env steps; seeds {', '.join(seeds)}; "
            "50 held-out episodes per checkpoint",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *rows,
        ]
    )
    print(table)
    if a.json:
        out["table"] = table
        json.dump(out, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
