#!/usr/bin/env bash
# The HIL-SERL-shaped headline: BC vs the same BC policy after SAC fine-tuning, per training seed.
#   bash bench/sac_finetune_results.sh [task=PegInsert] [steps=15000] [seeds="0 1 2"]
set -euo pipefail
cd "$(dirname "$0")/.."
RL=.venv/bin/robolearn
TASK=${1:-PegInsert}; STEPS=${2:-15000}; SEEDS=${3:-"0 1 2"}
low=$(echo "$TASK" | tr '[:upper:]' '[:lower:]')
D=datasets/$low.hdf5; O=runs/sac_results/$low
[[ -f $D ]] || bash datasets/make_datasets.sh 100
for s in $SEEDS; do
  [[ -f $O/bc_s$s/checkpoints/last.pt ]] || $RL train policy=mse data=$D out=$O/bc_s$s train.steps=2000 train.seed=$s train.eval_episodes=0 train.threads=1
  [[ -f $O/eval_bc_s$s/results.json ]] || $RL eval policy=$O/bc_s$s/checkpoints/last.pt episodes=50 out=$O/eval_bc_s$s videos=1
  [[ -f $O/sac_s$s/results.json ]] || $RL finetune policy=$O/bc_s$s/checkpoints/last.pt demos=$D reward_type=sparse steps=$STEPS \
      critic_warmup=2000 bc_weight=1.0 eval_every=2500 eval_episodes=20 seed=$s out=$O/sac_s$s
  [[ -f $O/eval_sac_s$s/results.json ]] || $RL eval policy=$O/sac_s$s/checkpoints/last.pt episodes=50 out=$O/eval_sac_s$s videos=1
  # best.pt: selected on finetune's periodic evaluations (eval seed 1); evaluated here on seed 0, held out
  [[ -f $O/eval_sacbest_s$s/results.json ]] || $RL eval policy=$O/sac_s$s/checkpoints/best.pt episodes=50 out=$O/eval_sacbest_s$s videos=1
done
for s in $SEEDS; do
  $RL compare $O/eval_bc_s$s $O/eval_sac_s$s $O/eval_sacbest_s$s --names "BC,BC+SAC (last),BC+SAC (best)" --out $O/table_s$s.md
done
