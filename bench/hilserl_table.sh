#!/usr/bin/env bash
# The HIL-SERL-shaped table: BC from a few scripted demos, then the same BC policy fine-tuned with SAC (residual
# bridge, demos mixed in), per training seed, success and cycle time of BC, the last checkpoint and best.pt.
#   OMP_NUM_THREADS=1 MUJOCO_GL=egl [FT_ARGS="..."] bash bench/hilserl_table.sh NAME ENV DEMOS STEPS "SEEDS" [record args...]
#   FT_ARGS: extra `robolearn finetune` overrides, e.g. FT_ARGS="reward_type=sparse"
#   BC_ARGS: the BC run's `robolearn train` overrides (default "policy=mse train.steps=1500"), e.g.
#            BC_ARGS="policy=flow train.steps=20000 train.batch_size=256" for PushT-v1's per-step flow
#   e.g. bash bench/hilserl_table.sh panda gym_hil/PandaPickCubeBase-v0 3 20000 "0 1 2" +env_kwargs.random_block_position=true
#        bash bench/hilserl_table.sh lift robolearn/Lift-v0 4 15000 "0 1 2"
# Demos: demo seeds 10_000_000..; BC and fine-tuned checkpoints are scored by `robolearn eval` on 50 held-out
# episodes (env seeds 0..49); finetune selects best.pt on its own periodic evaluations (eval seed 1).
# Writes runs/hilserl/NAME/ and bench/results/hilserl_NAME.json (a rerun skips finished stages).
set -euo pipefail
cd "$(dirname "$0")/.."
RL=.venv/bin/robolearn
NAME=$1; ENV=$2; N=$3; STEPS=$4; SEEDS=$5; shift 5
O=runs/hilserl/$NAME; D=$O/demos_$N.hdf5
BC_ARGS=${BC_ARGS:-policy=mse train.steps=1500}
mkdir -p $O
[[ -f $D ]] || $RL record env=$ENV episodes=$N out=$D "$@"
for s in $SEEDS; do
  t0=$(date +%s)
  # shellcheck disable=SC2086  # BC_ARGS: word-split on purpose
  [[ -f $O/bc_s$s/checkpoints/last.pt ]] || $RL train data=$D out=$O/bc_s$s train.seed=$s train.eval_episodes=0 \
      $BC_ARGS
  [[ -f $O/eval_bc_s$s/results.json ]] || $RL eval policy=$O/bc_s$s/checkpoints/last.pt episodes=50 out=$O/eval_bc_s$s
  t1=$(date +%s)
  # shellcheck disable=SC2086  # FT_ARGS: word-split on purpose (several overrides)
  [[ -f $O/sac_s$s/results.json ]] || $RL finetune policy=$O/bc_s$s/checkpoints/last.pt demos=$D steps=$STEPS \
      eval_every=5000 eval_episodes=20 seed=$s out=$O/sac_s$s ${FT_ARGS:-}
  t2=$(date +%s)
  [[ -f $O/eval_sac_s$s/results.json ]] || $RL eval policy=$O/sac_s$s/checkpoints/last.pt episodes=50 out=$O/eval_sac_s$s
  [[ -f $O/eval_sacbest_s$s/results.json ]] || $RL eval policy=$O/sac_s$s/checkpoints/best.pt episodes=50 out=$O/eval_sacbest_s$s
  [[ -f $O/wall_s$s.json ]] || echo "{\"bc_s\": $((t1 - t0)), \"finetune_s\": $((t2 - t1))}" > $O/wall_s$s.json
done
.venv/bin/python - "$O" "$SEEDS" "$STEPS" "$N" "$ENV" "$NAME" "$BC_ARGS" <<'PY'
import json, os, statistics, sys
O, seeds, steps, n, env, name, bc_args = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:8]
rows, runs = [], {}
for s in seeds:
    r = {k: json.load(open(f"{O}/eval_{k}_s{s}/results.json")) for k in ("bc", "sac", "sacbest")}
    ft = json.load(open(f"{O}/sac_s{s}/results.json"))
    wall = json.load(open(f"{O}/wall_s{s}.json"))
    runs[s] = {k: {"success_rate": v["success_rate"], "cycle_time_steps": v.get("cycle_time_steps")} for k, v in r.items()}
    runs[s].update(env_steps=ft.get("env_steps", ft.get("steps")), wall=wall, curve=ft.get("history"))
    c = lambda k: r[k].get("cycle_time_steps") or float("nan")  # noqa: E731
    rows.append(f"| {s} | {r['bc']['success_rate']:.0%} / {c('bc'):.1f} | {r['sac']['success_rate']:.0%} / {c('sac'):.1f} | "
                f"{r['sacbest']['success_rate']:.0%} / {c('sacbest'):.1f} | {runs[s]['env_steps']} | {wall['finetune_s'] / 60:.1f} |")
med = lambda k: statistics.median(runs[s][k]["success_rate"] for s in seeds)  # noqa: E731
table = "\n".join([
    f"{env}: BC on {n} demos, then BC+SAC for {steps} env steps; 50 held-out episodes each",
    "", "| seed | BC success / cycle (steps) | BC+SAC last | BC+SAC best.pt | env steps | finetune wall (min) |",
    "|---|---|---|---|---:|---:|", *rows,
    f"| median | {med('bc'):.0%} | {med('sac'):.0%} | {med('sacbest'):.0%} | | |"])
print(table)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6, 3.8))
for s in seeds:
    c = runs[s]["curve"] or []
    line, = ax.plot([h["step"] for h in c], [h["success_rate"] for h in c], marker=".", label=f"seed {s}: finetune's eval (20 ep)")
    ax.scatter([0, steps], [runs[s]["bc"]["success_rate"], runs[s]["sac"]["success_rate"]], color=line.get_color(), marker="s", zorder=3)
ax.scatter([], [], color="gray", marker="s", label="held out, 50 ep: BC (x=0), last (x=end)")
ax.set(xlabel="env steps", ylabel="success rate", ylim=(-0.02, 1.02), title=f"{env}: BC on {n} demos + SAC")
ax.grid(alpha=0.3); ax.legend(fontsize=7, loc="lower right"); fig.tight_layout()
fig.savefig(f"bench/results/hilserl_{name}.png", dpi=110)
json.dump({"env": env, "finetune_args": os.environ.get("FT_ARGS", ""), "bc_args": bc_args, "steps": steps, "demos": n, "seeds": seeds, "runs": runs, "table": table},
          open(f"bench/results/hilserl_{name}.json", "w"), indent=1)
PY
