#!/usr/bin/env bash
# DAgger variants in the setting of ../shared/checks/dagger-labels: PegInsert, MSE head with library defaults,
# BC on 6 scripted demos (2000 steps), DAgger 2 rounds x 4 episodes (2000 steps per retrain), scored on 50
# held-out episodes of eval seed 77, once per rollout seed. One line per (variant, rollout seed):
#   name, overrides, expert labels, [(labels, round success on 20 eval episodes, rollout success, stalled)],
#   EVAL <held-out success>
#   OMP_NUM_THREADS=1 bash bench/dagger_check_setting.sh OUT "SEEDS" NAME [robolearn dagger overrides...]
#   e.g. bash bench/dagger_check_setting.sh runs/dagger_check "0 1 2 3" stall drop_stalled=true stall_progress=0.5
# The demos/BC runs in OUT are made once and reused by every variant (OUT/bc6, OUT/bc24 and its EVAL line).
set -euo pipefail
cd "$(dirname "$0")/.."
RL=.venv/bin/robolearn; ENV=robolearn/PegInsert-v0
T=$1; SEEDS=$2; NAME=$3; shift 3
mkdir -p "$T"
for n in 6 24; do
  [[ -f $T/d$n.hdf5 ]] || $RL record env=$ENV expert=scripted episodes=$n out="$T/d$n.hdf5" > "$T/rec$n.log" 2>&1
  [[ -f $T/bc$n/checkpoints/last.pt ]] || $RL train policy=mse data="$T/d$n.hdf5" out="$T/bc$n" train.steps=2000 > "$T/tr$n.log" 2>&1
done
if [[ ! -f $T/ev24/results.json ]]; then
  $RL eval policy="$T/bc24/checkpoints/last.pt" env=$ENV episodes=50 seeds="[77]" out="$T/ev24" > "$T/ev24.log" 2>&1
  .venv/bin/python -c "import json; print('BC-24 EVAL', json.load(open('$T/ev24/results.json'))['success_rate'])"
fi
for s in $SEEDS; do
  r=$T/${NAME}_$s
  [[ -f $r/results.json ]] || $RL dagger mode=expert policy="$T/bc6/checkpoints/last.pt" data="$T/d6.hdf5" env=$ENV \
      rounds=2 episodes_per_round=4 out="$r" train.steps=2000 seed="$s" "$@" > "$r.log" 2>&1
  [[ -f $T/eval_${NAME}_$s/results.json ]] || $RL eval policy="$r/checkpoints/last.pt" env=$ENV episodes=50 \
      seeds="[77]" out="$T/eval_${NAME}_$s" > "$T/eval_${NAME}_$s.log" 2>&1
  .venv/bin/python - "$r" "$T/eval_${NAME}_$s" "$NAME" "$*" <<'PY'
import json, sys
d = json.load(open(f"{sys.argv[1]}/results.json"))
e = json.load(open(f"{sys.argv[2]}/results.json"))
hist = [(h["labels"], h.get("success_rate"), h.get("rollout_success"), h.get("stalled_dropped")) for h in d["history"]]
print(sys.argv[3], sys.argv[4], d["expert_labels"], hist, "EVAL", e["success_rate"], flush=True)
PY
done
