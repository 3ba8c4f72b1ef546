"""Thread defaults that hold on a shared CPU (robolearn.threads)."""

import torch

from robolearn import threads


def test_small_networks_get_one_thread_and_explicit_wins(monkeypatch):
    assert threads.default_threads(300_000) == 1
    assert threads.default_threads(None) == 1
    monkeypatch.setattr(threads, "cores", lambda: 8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (5.4, 0, 0))
    assert threads.default_threads(65_000_000) == 3  # 8 cores, ~5 busy: only the free ones
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (12.0, 0, 0))
    assert threads.default_threads(65_000_000) == 1  # overloaded: never more than what is free, at least 1
    before = torch.get_num_threads()
    try:
        assert threads.apply(2, 100) == 2 and torch.get_num_threads() == 2
        assert threads.apply(0, 100) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
