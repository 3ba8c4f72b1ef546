#!/usr/bin/env python
"""Record demonstrations by hand: a thin launcher for `robolearn record teleop=...` (same code, plain flags).

    python tools/teleop.py --env robolearn/Lift-v0 --out demos.hdf5 --device keyboard --episodes 10

A window shows the scene; press ENTER to start/stop recording, hold W/A/S/D/R/F/Q/E to move, SPACE toggles the
gripper (all keys: docs/teleop.md). Headless machines: run it under `xvfb-run -a`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/teleop.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="robolearn/Lift-v0", help="task id (default: robolearn/Lift-v0)")
    p.add_argument("--out", default="datasets/teleop.hdf5", help="HDF5 store; appended to if it exists")
    p.add_argument("--device", default="keyboard", choices=["keyboard", "gamepad", "spacemouse"])
    p.add_argument("--episodes", type=int, default=10, help="episodes to keep (default 10)")
    p.add_argument("--seed", type=int, default=10_000_000,
                   help="env seed of the first scene; scene i uses seed+i (default: the demo range)")
    p.add_argument("--obs-mode", default="state", help="observations to store (as `robolearn record obs_mode=`)")
    p.add_argument("--overwrite", action="store_true", help="replace the file instead of appending")
    a = p.parse_args(argv)

    from robolearn.cli import UserError, _summary_table, err_console
    from robolearn.config import ConfigError, RecordConfig
    from robolearn.data.store import StoreError

    try:
        cfg = RecordConfig(env=a.env, teleop=a.device, episodes=a.episodes, out=a.out, seed=a.seed,
                           obs_mode=a.obs_mode, overwrite=a.overwrite, source="teleop")
        from robolearn.teleop.app import record_teleop

        summary = record_teleop(cfg)
    except (UserError, ConfigError, StoreError) as e:
        err_console.print(f"teleop: {e}", markup=False, highlight=False)
        return 2
    _summary_table(f"teleop {a.env}", summary)
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
