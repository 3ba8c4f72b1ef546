"""The bench scripts' shared helpers (bench/stores.py): an interrupted training is never recorded as a result."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import stores  # noqa: E402


def test_completed_passes_a_finished_training_through():
    s = {"interrupted": False, "seconds": 1.0}
    assert stores.completed(s, "pusht1/flow/0") is s


def test_completed_stops_the_bench_on_an_interrupted_training():
    # regression: bench/dagger_results.py scored a BC run stopped by SIGTERM at step 6152 of 20000 as a result
    with pytest.raises(SystemExit, match="pusht1/bc/50/1: training interrupted"):
        stores.completed({"interrupted": True, "signal": 15}, "pusht1/bc/50/1")
