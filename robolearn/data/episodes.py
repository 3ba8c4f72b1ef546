"""The episode store's building blocks: episodes in memory, their checks and HDF5 layout, store errors,
and the small file helpers every part of the store uses (see robolearn.data.store for the design)."""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

log = logging.getLogger(__name__)
FORMAT_VERSION = "robolearn-hdf5/1"
SOURCES = ("scripted", "teleop", "policy", "dagger", "intervention")
VALID_EVERY = 10  # every 10th episode goes to mask/valid, the rest to mask/train
ROBOMIMIC_GYM_TYPE = 2  # robomimic's EnvType.GYM_TYPE, so its EnvUtils know what env_args describe
JOURNAL_FRACTION = 0.25  # merge the journal into the store file when it holds this fraction of its bytes
JOURNAL_MIN_BYTES = 256 << 10  # ... and at least this much (a small store would merge every other episode)
MASK_CHUNK = 512  # names per chunk of the resizable mask datasets


class StoreError(ValueError):
    """A problem with an episode store; the message names the file, episode, key and the fix."""


def _err(path, problem: str, fix: str, episode: str | None = None, key: str | None = None) -> StoreError:
    where = f"{path}"
    if episode:
        where += f", episode {episode}"
    if key:
        where += f", key '{key}'"
    return StoreError(f"{where}: {problem}. Fix: {fix}")


# --------------------------------------------------------------------------------------------- episodes
@dataclass
class Episode:
    """One episode as arrays of equal length T (obs[t] is seen, actions[t] taken, next_obs[t] results)."""

    obs: dict[str, np.ndarray]
    next_obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    states: np.ndarray | None = None
    interventions: np.ndarray | None = None
    policy_actions: np.ndarray | None = None
    source: str = "scripted"
    success: bool = False
    seed: int = -1
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @classmethod
    def from_stored(cls, ep: dict, default_source: str = "scripted") -> Episode:
        """An episode as `iter_episodes` yields it (arrays + attrs) -> Episode, to append it to another store."""
        attrs = dict(ep["attrs"])
        core = {k: attrs.pop(k) for k in ("source", "success", "seed") if k in attrs}
        attrs.pop("num_samples", None)
        return cls(
            obs=ep["obs"],
            next_obs=ep["next_obs"],
            actions=ep["actions"],
            rewards=ep["rewards"],
            dones=ep["dones"],
            states=ep.get("states"),
            interventions=ep.get("interventions"),
            policy_actions=ep.get("policy_actions"),
            source=str(core.get("source", default_source)),
            success=bool(core.get("success", False)),
            seed=int(core.get("seed", -1)),
            attrs=attrs,
        )


class EpisodeBuilder:
    """Accumulates one episode step by step; `finish()` returns an `Episode` of stacked arrays."""

    def __init__(self, first_obs: dict[str, np.ndarray], state: np.ndarray | None = None):
        self._obs = [_copy_obs(first_obs)]
        self._states = [] if state is None else [np.asarray(state, np.float64).copy()]
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._interventions: list[bool] = []
        self._policy_actions: list[np.ndarray | None] = []
        self.terminated = False

    def add(
        self,
        action,
        next_obs: dict[str, np.ndarray],
        reward: float,
        terminated: bool,
        next_state: np.ndarray | None = None,
        intervention: bool = False,
        policy_action=None,
    ) -> None:
        self._actions.append(np.asarray(action, np.float32).copy())
        self._obs.append(_copy_obs(next_obs))
        self._rewards.append(float(reward))
        self._interventions.append(bool(intervention))
        self._policy_actions.append(None if policy_action is None else np.asarray(policy_action, np.float32))
        if next_state is not None:
            self._states.append(np.asarray(next_state, np.float64).copy())
        self.terminated = bool(terminated)

    def __len__(self) -> int:
        return len(self._actions)

    def finish(self, source: str, success: bool, seed: int = -1, **attrs) -> Episode:
        T = len(self._actions)
        if T == 0:
            raise ValueError("cannot finish an episode with no steps")
        keys = self._obs[0].keys()
        stacked = {k: np.stack([o[k] for o in self._obs]) for k in keys}
        actions = np.stack(self._actions)
        dones = np.zeros(T, np.uint8)
        dones[-1] = 1 if self.terminated else 0
        pa = None
        if any(p is not None for p in self._policy_actions):
            pa = np.stack([actions[i] if p is None else p for i, p in enumerate(self._policy_actions)])
        return Episode(
            obs={k: v[:-1] for k, v in stacked.items()},
            next_obs={k: v[1:] for k, v in stacked.items()},
            actions=actions,
            rewards=np.asarray(self._rewards, np.float32),
            dones=dones,
            states=np.stack(self._states[:T]) if len(self._states) >= T else None,
            interventions=np.asarray(self._interventions, bool),
            policy_actions=pa,
            source=source,
            success=bool(success),
            seed=int(seed),
            attrs=attrs,
        )


def _copy_obs(obs: dict) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in obs.items()}


# --------------------------------------------------------------------------------------------- specs
def space_spec(space) -> dict:
    """A JSON-able description of a gymnasium Box or Dict space (shapes, dtypes, bounds)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_spec(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        low, high = space.low, space.high
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": float(low.min())
            if low.size > 64
            else np.nan_to_num(low, posinf=1e30, neginf=-1e30).tolist(),
            "high": float(high.max())
            if high.size > 64
            else np.nan_to_num(high, posinf=1e30, neginf=-1e30).tolist(),
        }
    raise TypeError(f"unsupported space {space!r}: robolearn stores Box and Dict spaces")


def _write_episode(g: h5py.Group, ep: Episode) -> None:
    for key, obs in (("obs", ep.obs), ("next_obs", ep.next_obs)):
        og = g.create_group(key)
        for k, v in obs.items():
            v = np.asarray(v)
            # images compress well and are the bulk of a file; low-dim stays uncompressed for speed
            og.create_dataset(k, data=v, compression="lzf" if v.ndim >= 3 else None)
    g.create_dataset("actions", data=ep.actions.astype(np.float32))
    g.create_dataset("rewards", data=ep.rewards.astype(np.float32))
    g.create_dataset("dones", data=ep.dones.astype(np.uint8))
    if ep.states is not None:
        g.create_dataset("states", data=ep.states.astype(np.float64))
    if ep.interventions is not None:
        g.create_dataset("interventions", data=ep.interventions.astype(bool))
    if ep.policy_actions is not None:
        g.create_dataset("policy_actions", data=ep.policy_actions.astype(np.float32))
    g.attrs["num_samples"] = len(ep)
    g.attrs["source"] = ep.source
    g.attrs["success"] = bool(ep.success)
    g.attrs["seed"] = int(ep.seed)
    for k, v in ep.attrs.items():
        g.attrs[k] = v if isinstance(v, (int, float, str, bool, np.number)) else json.dumps(v)


def check_episode(ep: Episode, where: str = "<episode>") -> None:
    """Refuses an episode whose arrays disagree in length, hold NaN/inf actions or observations, or name a bad
    source."""
    T = len(ep)
    if T == 0:
        raise _err(where, "the episode has no steps", "finish episodes only after at least one step")
    if ep.source not in SOURCES:
        raise _err(where, f"source={ep.source!r} is not one of {SOURCES}", f"use one of {SOURCES}")
    if np.ndim(ep.actions) != 2:
        raise _err(
            where,
            f"actions have shape {np.shape(ep.actions)}, expected (T, action_dim)",
            "pass actions as a 2-D array",
            key="actions",
        )
    if not np.isfinite(ep.actions).all():
        raise _err(
            where, "the episode's actions contain NaN or inf", "check the policy/teleop device", key="actions"
        )
    for name, arr in (
        ("rewards", ep.rewards),
        ("dones", ep.dones),
        ("states", ep.states),
        ("interventions", ep.interventions),
        ("policy_actions", ep.policy_actions),
    ):
        if arr is not None and len(arr) != T:
            raise _err(
                where,
                f"{name} has {len(arr)} steps but actions has {T}",
                "pass arrays of equal length",
                key=name,
            )
    for gname, group in (("obs", ep.obs), ("next_obs", ep.next_obs)):
        for k, v in group.items():
            if len(v) != T:
                raise _err(
                    where,
                    f"{gname} has {len(v)} steps but actions has {T}",
                    "pass arrays of equal length",
                    key=f"{gname}/{k}",
                )
            v = np.asarray(v)
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                bad = int(np.argwhere(~np.isfinite(v))[0][0])
                raise _err(
                    where,
                    f"the episode's {gname} contain NaN or inf (first at step {bad})",
                    "check the env (an unstable simulation?) or drop the episode",
                    key=f"{gname}/{k}",
                )


@contextmanager
def _signals_deferred():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _demo_index(name: str) -> int:
    try:
        return int(name.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def _open_raw(p: Path, mode: str = "r") -> h5py.File:
    try:
        return h5py.File(p, mode)
    except OSError as e:
        raise StoreError(
            f"{p}: not a readable HDF5 file (truncated or corrupt: {str(e).splitlines()[0][:120]}). "
            "Fix: re-record it, or restore it from a copy; robolearn's writer never leaves such a file behind"
        ) from None


def remove_stale_tmp(path: str | os.PathLike) -> None:
    """Remove `.<name>.tmp-<pid>` files beside `path` whose writing process is gone (killed mid-write); a
    live process's temp file (this one's included) is left alone."""
    path = Path(path)
    for p in path.parent.glob(f".{path.name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            p.unlink(missing_ok=True)
