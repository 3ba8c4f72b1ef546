#!/usr/bin/env bash
# Idempotent set-up: Debian packages (if missing and we can install them), a virtualenv, pinned pip install.
set -euo pipefail
VENV=${1:-.venv}
need=()
for p in libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 xvfb xdotool; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian packages: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "[setup] missing Debian packages (${need[*]}); install them with: sudo apt-get install ${need[*]}" >&2
  fi
fi
PYTHON=${PYTHON:-python3}
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# constraints.txt pins every package, torch==2.13.0 (the CPU wheel) included.
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev,teleop,suites]"
# robomimic is a test-only peer (tests read our files with its SequenceDataset). Its declared deps
# (egl_probe builds with cmake, torchvision clashes with our torch pin) are not needed for that: --no-deps.
"$VENV/bin/python" -m pip show robomimic >/dev/null 2>&1 || \
  "$VENV/bin/python" -m pip install -q --no-deps robomimic==0.3.0 || echo "[setup] robomimic not installed; its test will be skipped"
echo "[setup] ok: $("$VENV/bin/python" -c 'import torch, mujoco; print("torch", torch.__version__, "mujoco", mujoco.__version__)')"
