"""docs/tutorial.md runs: every `robolearn ...` command in its bash blocks, at a small scale, in order."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROBOLEARN = str(Path(sys.executable).parent / "robolearn")

# the tutorial's sizes -> test sizes (same commands, smaller numbers)
SMALL = {"episodes": "3", "train.steps": "20", "rounds": "1", "episodes_per_round": "2", "steps": "300",
         "demo_episodes": "3"}
LOOP_EXTRA = ["bc.steps=20", "dagger.rounds=1", "dagger.episodes_per_round=2", "dagger.steps=10", "sac.steps=300",
              "eval_episodes=3", "videos=1"]


def tutorial_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("robolearn "):
                cmds.append(line.split())
    return cmds


def shrink(cmd: list[str]) -> list[str]:
    out = []
    for tok in cmd:
        key = tok.split("=", 1)[0]
        out.append(f"{key}={SMALL[key]}" if "=" in tok and key in SMALL else tok)
    if cmd[1] == "loop":
        out += LOOP_EXTRA
    if cmd[1] == "eval":
        out.append("videos=1")
    return out


def test_tutorial_has_every_stage():
    verbs = [c[1] for c in tutorial_commands()]
    for v in ("record", "inspect", "train", "eval", "compare", "dagger", "finetune", "loop"):
        assert v in verbs


def test_tutorial_commands_run(tmp_path):
    for cmd in tutorial_commands():
        cmd = shrink(cmd)
        r = subprocess.run([ROBOLEARN, *cmd[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}"
    assert (tmp_path / "tutorial/loop/report.md").exists()
    assert (tmp_path / "tutorial/eval_sac/results.json").exists()
