#!/usr/bin/env bash
# Regenerates the standard scripted demo sets, seeded (episode i of a set uses env seed 10000000+i, the demo
# range: disjoint from `robolearn eval`'s seeds, see robolearn/seeds.py), into datasets/.
# Usage: bash datasets/make_datasets.sh [episodes]   (default 100 per task; ~1-2 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
RL=${RL:-.venv/bin/robolearn}
N=${1:-100}
for task in Lift-v0 PushT-v0 PushT-v1 ReachAround-v0 PegInsert-v0; do
  name=$(echo "${task%-v0}" | tr "[:upper:]" "[:lower:]" | sed "s/-v//")   # PushT-v1 -> pusht1
  out="datasets/$name.hdf5"
  "$RL" record env="robolearn/$task" expert=scripted episodes="$N" seed=10000000 out="$out" overwrite=true
  "$RL" inspect "$out" --validate >/dev/null
done
