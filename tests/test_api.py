"""The Python API: the docs/api.md example runs verbatim; `help(robolearn)` shows the functions."""

import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import robolearn

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_docs_example_runs_verbatim(tmp_path):
    block = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    (tmp_path / "ex.py").write_text(block)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "ex.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "kept 20 demos" in r.stdout and re.search(r"success \d+% over 10 episodes", r.stdout)
    assert (tmp_path / "runs" / "eval" / "results.json").exists()


def test_help_lists_the_api():
    text = pydoc.render_doc(robolearn, renderer=pydoc.plaintext)
    for name in ("record", "train", "evaluate", "dagger", "finetune", "run_loop", "load_policy"):
        assert re.search(rf"^\s+{name}\(", text, re.M), name
        assert callable(getattr(robolearn, name))


def test_train_raises_when_the_run_was_stopped(monkeypatch):
    """robolearn.api.train never hands back a partly trained run as finished: the bench scripts rely on it so that a
    training stopped by SIGTERM is not scored (bench/dagger_results.py once recorded one stopped at step 6152/20000)."""
    from types import SimpleNamespace

    import pytest

    import robolearn.algos.bc as bc
    from robolearn.signals import Interrupted

    stopped = {"interrupted": True, "signal": 15, "checkpoint": "run/checkpoints/last.pt"}
    monkeypatch.setattr(bc, "train", lambda cfg: stopped)
    with pytest.raises(Interrupted, match="training interrupted") as e:
        robolearn.api.train(SimpleNamespace(out="run"))
    assert e.value.signum == 15
    done = {"interrupted": False, "checkpoint": "run/checkpoints/last.pt", "seconds": 1.0}
    monkeypatch.setattr(bc, "train", lambda cfg: done)
    assert robolearn.api.train(SimpleNamespace(out="run")).metrics is done
