"""precision=auto: bf16 only where the cached micro-benchmark measures it faster on this machine."""

from __future__ import annotations

import json

import pytest

from robolearn.algos import precision as pr


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOLEARN_CACHE", str(tmp_path))
    return tmp_path / "precision.json"


def test_explicit_precisions_never_probe(cache, monkeypatch):
    monkeypatch.setattr(pr, "probe", lambda *a, **k: pytest.fail("probed"))
    assert pr.resolve("fp32", 256, 256, 2) == (False, "fp32 (precision=fp32)")
    assert pr.resolve("bf16", 256, 256, 2)[0] is True
    assert not cache.exists()


def test_probe_times_both_precisions():
    r = pr.probe(batch=32, hidden=32, n=2, reps=3)
    assert r["fp32_ms"] > 0 and r["bf16_ms"] > 0
    assert r["speedup"] == pytest.approx(r["fp32_ms"] / r["bf16_ms"])


@pytest.mark.parametrize("speedup, want", [(4.3, True), (1.29, False), (0.78, False)])
def test_auto_follows_the_measured_speedup_and_caches_it(cache, monkeypatch, speedup, want):
    calls = []

    def fake(batch, hidden, n):
        calls.append((batch, hidden, n))
        return {"fp32_ms": speedup, "bf16_ms": 1.0, "speedup": speedup}

    monkeypatch.setattr(pr, "probe", fake)
    use, why = pr.resolve("auto", 256, 256, 10)
    assert use is want and "measured now" in why and ("bf16" if want else "fp32") == why.split()[0]
    assert calls == [(256, 256, 10)]
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["speedup"] == speedup
    use2, why2 = pr.resolve("auto", 256, 256, 10)  # second run: from the cache, no new probe
    assert use2 is want and "cached in" in why2 and len(calls) == 1
    pr.resolve("auto", 256, 256, 2)  # another shape is another entry
    assert len(calls) == 2


def test_auto_survives_a_corrupt_or_unwritable_cache(cache, monkeypatch):
    cache.write_text("{not json")
    monkeypatch.setattr(pr, "probe", lambda *a: {"fp32_ms": 2.0, "bf16_ms": 1.0, "speedup": 2.0})
    assert pr.resolve("auto", 256, 256, 2)[0] is True
    assert json.loads(cache.read_text())  # rewritten whole
    monkeypatch.setenv("ROBOLEARN_CACHE", "/proc/robolearn-cannot-write-here")
    use, why = pr.resolve("auto", 256, 256, 2)
    assert use is True and "measured now" in why
