"""Demonstrations as SAC transitions: (s, a, r, s', done) from an episode store, in the fine-tuning
run's observation layout and action units."""

from __future__ import annotations

import logging

import numpy as np

from robolearn.algos.bridges import HeldChunk, to_unit
from robolearn.algos.obs_layout import ObsLayout, ObsScaling
from robolearn.config import ConfigError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ demos
def load_demo_transitions(
    path,
    layout: ObsLayout,
    low,
    high,
    reward_type: str,
    base: HeldChunk | None,
    scaling: ObsScaling | None = None,
) -> dict[str, np.ndarray]:
    """Demo file -> transition arrays in the SAC layout (obs/next_obs (N, D [+ base columns]), action (N, Da)
    in [-1, 1], reward, terminated, truncated). With a residual bridge each episode's base columns are the BC
    policy's held chunk as it would run there (planned every Ta steps from the episode's start), so demo and
    online observations mean the same; the history is scaled by `scaling` when given, as SACActorPolicy.observe
    does (`obs_raw`: the unscaled histories, what the BC policy reads). Rewards: see the module docstring
    (relabelled dense -> sparse)."""
    from robolearn.data.store import iter_episodes, read_info

    info = read_info(path)
    missing = [k for k in layout.keys if k not in info.obs_keys]
    if missing:
        raise ConfigError(
            f"demos={str(path)!r} lacks observation keys {missing} that the policy uses "
            f"(the file has {sorted(info.obs_keys)})"
        )
    file_rt = info.env_kwargs.get("reward_type", "dense")
    if file_rt != reward_type and not (file_rt == "dense" and reward_type == "sparse"):
        raise ConfigError(
            f"demos={str(path)!r} were recorded with reward_type={file_rt!r}; their rewards cannot "
            f"be relabelled as {reward_type!r}. Fix: record them with reward_type={reward_type}, or "
            f"fine-tune with reward_type={file_rt}"
        )
    parts: dict[str, list] = {k: [] for k in ("h", "raw", "action", "reward", "terminated", "truncated")}
    for name, ep in iter_episodes(path):
        T = len(ep["actions"])
        if T == 0:
            continue
        nxt = ep.get("next_obs")
        if nxt is None:
            raise ConfigError(f"demos={str(path)!r}, episode {name}: no next_obs (needed for transitions)")
        seq = {k: np.concatenate([ep["obs"][k], nxt[k][-1:]]) for k in layout.keys}  # (T + 1, ...)
        raw = layout.histories(seq)  # obs[t] = h[t], next_obs[t] = h[t + 1]
        h_ep = raw if scaling is None else scaling(raw)
        if base is not None:
            h_ep = np.concatenate([h_ep, base.episode(raw)], axis=1)
        parts["h"].append(h_ep)
        parts["raw"].append(raw)
        parts["action"].append(to_unit(ep["actions"], low, high))
        done = bool(np.asarray(ep.get("dones", np.zeros(T)))[-1])
        if reward_type == file_rt:
            r = np.asarray(ep.get("rewards", np.zeros(T)), np.float32)
        else:  # dense -> sparse: is_success; robolearn tasks terminate on success
            r = np.zeros(T, np.float32)
            r[-1] = float(done and bool(ep["attrs"].get("success", False)))
        term = np.zeros(T, np.float32)
        term[-1] = float(done)
        trunc = np.zeros(T, bool)
        trunc[-1] = not done
        parts["reward"].append(r)
        parts["terminated"].append(term)
        parts["truncated"].append(trunc)
    if not parts["h"]:
        raise ConfigError(f"demos={str(path)!r} holds no transitions")
    lens = [len(h) for h in parts["h"]]  # T + 1 per episode
    h = np.concatenate(parts["h"])
    ends = np.cumsum(lens)
    first = np.concatenate([np.arange(e - n, e - 1) for e, n in zip(ends, lens)])
    return {
        "obs": h[first],
        "next_obs": h[first + 1],
        "obs_raw": np.concatenate(parts["raw"])[first],
        "action": np.concatenate(parts["action"]),
        "reward": np.concatenate(parts["reward"]),
        "terminated": np.concatenate(parts["terminated"]),
        "truncated": np.concatenate(parts["truncated"]),
        "episodes": len(lens),
    }
