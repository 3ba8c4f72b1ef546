#!/usr/bin/env bash
# The loop on locomotion: a trained SAC agent is the demonstrator; BC on a few of its episodes; then three ways to
# reach its return with online SAC, same env steps and SAC hyperparameters, per training seed:
#   residual  BC + SAC (the BC policy as the base of a residual actor, demos mixed into every batch)
#   rlpd      SAC from scratch with the demos in the buffer (RLPD-style: 50% demo rows per batch)
#   scratch   SAC from scratch, no demos
#   OMP_NUM_THREADS=1 [ARMS="residual rlpd scratch"] bash bench/locomotion_loop.sh NAME ENV EXPERT_CKPT DEMOS STEPS \
#       "SEEDS" [finetune overrides...]
#   e.g. bash bench/locomotion_loop.sh hopper Hopper-v5 runs/hopper/sac_expert/checkpoints/last.pt 20 30000 "0 1 2"
# A variant arm is named <kind>_<tag> (kind: residual | rlpd | scratch) and takes this invocation's overrides,
# e.g. ARMS=residual_warm bash bench/locomotion_loop.sh ... critic_warmup=5000; the table lists every arm run
# for all SEEDS in runs/loco/NAME, with the overrides it ran with.
# The demonstrator is scored by `robolearn eval` on 50 held-out episodes (env seeds 0..49); demos come from demo
# seeds 10_000_000.., fine-tuning episodes from 30_000_000.. (robolearn/seeds.py). "Steps to 90%" reads each
# run's periodic evaluations (eval_every, 5 episodes on eval seed 1): the first env step whose mean return is
# >= 90% of the demonstrator's held-out return. Every last.pt is then scored on the 50 held-out episodes.
# Writes runs/loco/NAME/ and bench/results/loco_NAME.{json,png} (a rerun skips finished stages).
set -euo pipefail
cd "$(dirname "$0")/.."
RL=.venv/bin/robolearn
NAME=$1; ENV=$2; EXPERT=$3; N=$4; STEPS=$5; SEEDS=$6; shift 6
O=runs/loco/$NAME; D=$O/demos_$N.hdf5
mkdir -p "$O"
EVERY=$((STEPS / 15))
[[ -f $O/eval_expert/results.json ]] || $RL eval policy="$EXPERT" env="$ENV" episodes=50 out="$O/eval_expert"
[[ -f $D ]] || $RL record env="$ENV" expert="$EXPERT" episodes="$N" out="$D"
for s in $SEEDS; do
  [[ -f $O/bc_s$s/checkpoints/last.pt ]] || $RL train policy=mse data="$D" out="$O/bc_s$s" To=1 Tp=1 Ta=1 \
      train.steps=5000 train.batch_size=256 train.seed="$s" train.eval_episodes=0
  [[ -f $O/eval_bc_s$s/results.json ]] || $RL eval policy="$O/bc_s$s/checkpoints/last.pt" episodes=50 out="$O/eval_bc_s$s"
  for arm in ${ARMS:-residual rlpd scratch}; do
    case $arm in
      residual*) args=(policy="$O/bc_s$s/checkpoints/last.pt" demos="$D") ;;
      rlpd*) args=(bridge=none env="$ENV" demos="$D") ;;
      scratch*) args=(bridge=none env="$ENV") ;;
      *) echo "arm $arm: its name must start with residual, rlpd or scratch" >&2; exit 2 ;;
    esac
    r=$O/${arm}_s$s
    if [[ ! -f $r/results.json ]]; then
      t0=$(date +%s)
      $RL finetune "${args[@]}" steps="$STEPS" eval_every=$EVERY eval_episodes=5 seed="$s" out="$r" "$@"
      echo "{\"finetune_s\": $(($(date +%s) - t0)), \"overrides\": \"$*\"}" > "$r/wall.json"
    fi
    [[ -f $O/eval_${arm}_s$s/results.json ]] || $RL eval policy="$r/checkpoints/last.pt" episodes=50 out="$O/eval_${arm}_s$s"
  done
done
.venv/bin/python - "$O" "$SEEDS" "$STEPS" "$N" "$ENV" "$NAME" "$*" <<'PY'
import json, statistics, sys
O, seeds, steps, n, env, name, extra = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:8]
load = lambda p: json.load(open(p))  # noqa: E731
expert = load(f"{O}/eval_expert/results.json")["return_mean"]
goal = 0.9 * expert
import glob, os
found = {os.path.basename(os.path.dirname(p)).rsplit("_s", 1)[0] for p in glob.glob(f"{O}/*_s*/wall.json")}
arms = [a for a in ("residual", "rlpd", "scratch") if a in found]
arms += sorted(a for a in found - set(arms) if all(os.path.exists(f"{O}/eval_{a}_s{s}/results.json") for s in seeds))
runs = {}
for s in seeds:
    bc = load(f"{O}/eval_bc_s{s}/results.json")["return_mean"]
    runs[s] = {"bc_return": bc}
    for arm in arms:
        ft = load(f"{O}/{arm}_s{s}/results.json")
        curve = [(h["step"], h["return_mean"]) for h in ft["history"]]
        hit = next((st for st, r in curve if r >= goal), None)
        wall = load(f"{O}/{arm}_s{s}/wall.json")
        runs[s][arm] = {"steps_to_90": hit, "last_return": load(f"{O}/eval_{arm}_s{s}/results.json")["return_mean"],
                        "curve": curve, "wall_s": wall["finetune_s"], "overrides": wall.get("overrides", extra)}
def med(vals):
    v = [x for x in vals if x is not None]
    return (statistics.median(v), min(v), max(v)) if v else None
fmt = lambda m, f="{:.0f}": "-" if m is None else f"{f.format(m[0])} [{f.format(m[1])}-{f.format(m[2])}]"  # noqa: E731
rows = []
bcm = med([runs[s]["bc_return"] for s in seeds])
for arm in arms:
    hits = [runs[s][arm]["steps_to_90"] for s in seeds]
    reached = sum(h is not None for h in hits)
    rows.append(f"| {arm} (`{runs[seeds[0]][arm]['overrides']}`) | {fmt(med([runs[s][arm]['last_return'] for s in seeds]))} | "
                f"{fmt(med(hits))} ({reached}/{len(seeds)} reached) | "
                f"{fmt(med([min(r for st, r in runs[s][arm]['curve'] if st > 0) for s in seeds]))} | "
                f"{statistics.median(runs[s][arm]['wall_s'] for s in seeds) / 60:.1f} |")
table = "\n".join([
    f"{env}: demonstrator {expert:.0f} (50 held-out episodes), 90% = {goal:.0f}; BC (MSE) on {n} of its episodes: "
    f"{fmt(bcm)}; then {steps} env steps of SAC per arm, seeds {' '.join(seeds)}",
    "", "| arm | held-out return of last.pt, median [min-max] | env steps to 90% of the demonstrator, median [min-max] | "
    "lowest periodic return after step 0 | wall (min) |",
    "|---|---|---|---|---:|", *rows])
print(table)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6.5, 4))
palette = iter(["tab:blue", "tab:orange", "tab:gray", "tab:green", "tab:red", "tab:purple"])
colors = {arm: next(palette) for arm in arms}
for arm in arms:
    for i, s in enumerate(seeds):
        c = runs[s][arm]["curve"]
        ax.plot([x for x, _ in c], [y for _, y in c], color=colors[arm], alpha=0.8, label=arm if i == 0 else None)
ax.axhline(expert, color="k", lw=1, label=f"demonstrator ({expert:.0f})")
ax.axhline(goal, color="k", lw=1, ls="--", label="90% of it")
ax.set(xlabel="env steps", ylabel="return (5 episodes, eval seed 1)", title=f"{env}: BC+SAC vs RLPD vs scratch")
ax.grid(alpha=0.3); ax.legend(fontsize=7); fig.tight_layout()
fig.savefig(f"bench/results/loco_{name}.png", dpi=110)
json.dump({"env": env, "demonstrator_return": expert, "demos": n, "steps": steps, "seeds": seeds,
           "finetune_overrides": extra, "runs": runs, "table": table}, open(f"bench/results/loco_{name}.json", "w"), indent=1)
PY
