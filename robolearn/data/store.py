"""The episode store: robomimic's HDF5 layout plus robolearn's own keys, written crash-safely.

Layout (see datasets/README.md for the tree diagram)::

    /data                        attrs: total, env_args (JSON), robolearn file attrs (format_version, spaces, env spec)
    /data/demo_<i>               attrs: num_samples, source, success, seed
    /data/demo_<i>/obs/<key>         (T, ...)
    /data/demo_<i>/next_obs/<key>    (T, ...)
    /data/demo_<i>/actions           (T, Da) float32
    /data/demo_<i>/rewards           (T,)    float32
    /data/demo_<i>/dones             (T,)    uint8     1 on the last step of a terminated episode
    /data/demo_<i>/states            (T, S)  float64   full physics state before each action (replay)
    /data/demo_<i>/interventions     (T,)    bool      a human/expert acted at this step (robolearn)
    /data/demo_<i>/policy_actions    (T, Da) float32   what the policy proposed at each step (robolearn)
    /mask/<split>                array of demo names (bytes), e.g. mask/train, mask/valid

Crash safety: every append writes a *copy* of the store plus the new episode to a temporary file in the
same folder, fsyncs it and atomically renames it over the store. Killing the writer at any instant
leaves either the old file or the new one, never a half-written one. The cost is a copy of the file per
episode (cheap for low-dim demos; for large image sets, record into several files).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = "robolearn-hdf5/1"
SOURCES = ("scripted", "teleop", "policy", "dagger", "intervention")
VALID_EVERY = 10  # every 10th episode goes to mask/valid, the rest to mask/train
ROBOMIMIC_GYM_TYPE = 2  # robomimic's EnvType.GYM_TYPE, so its EnvUtils know what env_args describe


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
            "low": float(low.min()) if low.size > 64 else np.nan_to_num(low, posinf=1e30, neginf=-1e30).tolist(),
            "high": float(high.max())
            if high.size > 64
            else np.nan_to_num(high, posinf=1e30, neginf=-1e30).tolist(),
        }
    raise TypeError(f"unsupported space {space!r}: robolearn stores Box and Dict spaces")


# --------------------------------------------------------------------------------------------- writer
class EpisodeWriter:
    """Appends episodes to an HDF5 store, one atomic file replacement per episode.

    `env_id`/`env_kwargs` describe how to rebuild the env; `obs_space`/`action_space` are gymnasium spaces
    (stored as JSON). Appending to an existing store checks that the spaces agree.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        env_id: str,
        env_kwargs: dict | None = None,
        obs_space=None,
        action_space=None,
        overwrite: bool = False,
        env_spec: dict | None = None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clean_stale_tmp()
        self.file_attrs = {
            "format_version": FORMAT_VERSION,
            "env_id": env_id,
            "env_kwargs": json.dumps(env_kwargs or {}, sort_keys=True),
            "obs_space": json.dumps(space_spec(obs_space)) if obs_space is not None else "{}",
            "action_space": json.dumps(space_spec(action_space)) if action_space is not None else "{}",
            "env_spec": json.dumps(env_spec or {"id": env_id, "kwargs": env_kwargs or {}}, sort_keys=True),
        }
        if overwrite and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            info = read_info(self.path)  # validates that it is a readable store
            old = info.attrs.get("action_space")
            if action_space is not None and old not in (None, "", "{}") and old != self.file_attrs["action_space"]:
                raise _err(
                    self.path,
                    "the action space of the episodes to append differs from the store's",
                    "write to a new file (out=...) or pass overwrite=true",
                )
            self._next = info.next_index
        else:
            self._next = 0

    def _clean_stale_tmp(self) -> None:
        for p in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                p.unlink(missing_ok=True)

    def append(self, ep: Episode) -> str:
        """Write `ep` as data/demo_<i>; returns the demo name. Atomic: the store is never half-written."""
        check_episode(ep, where=str(self.path))
        name = f"demo_{self._next}"
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        # SIGINT/SIGTERM are held back while HDF5 is being written (and delivered right after): a
        # KeyboardInterrupt raised inside h5py can deadlock its shutdown; SIGKILL is covered by the rename.
        with _signals_deferred():
            self._append(ep, name, tmp)
        return name

    def _append(self, ep: Episode, name: str, tmp: Path) -> None:
        if self.path.exists():
            shutil.copyfile(self.path, tmp)
            mode = "r+"
        else:
            mode = "w"
        try:
            with h5py.File(tmp, mode) as f:
                if mode == "w":
                    data = f.create_group("data")
                    data.attrs["total"] = 0
                    data.attrs["env_args"] = json.dumps(
                        {
                            "env_name": self.file_attrs["env_id"],
                            "type": ROBOMIMIC_GYM_TYPE,
                            "env_kwargs": json.loads(self.file_attrs["env_kwargs"]),
                        }
                    )
                    for k, v in self.file_attrs.items():
                        data.attrs[k] = v
                    f.attrs["format_version"] = FORMAT_VERSION
                    f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                data = f["data"]
                _write_episode(data.create_group(name), ep)
                data.attrs["total"] = int(data.attrs["total"]) + len(ep)
                split = "valid" if self._next % VALID_EVERY == VALID_EVERY - 1 else "train"
                mask = f.require_group("mask")
                names = [n for n in (mask[split][()] if split in mask else [])] + [name.encode()]
                if split in mask:
                    del mask[split]
                mask.create_dataset(split, data=np.array(names, dtype="S"))
                f.flush()
            _fsync_file(tmp)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._next += 1


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
    """Refuses an episode whose arrays disagree in length, hold NaN/inf actions, or name a bad source."""
    T = len(ep)
    if T == 0:
        raise _err(where, "the episode has no steps", "finish episodes only after at least one step")
    if ep.source not in SOURCES:
        raise _err(where, f"source={ep.source!r} is not one of {SOURCES}", f"use one of {SOURCES}")
    if not np.isfinite(ep.actions).all():
        raise _err(where, "the episode's actions contain NaN or inf", "check the policy/teleop device", key="actions")
    for name, arr in (("rewards", ep.rewards), ("dones", ep.dones), ("states", ep.states),
                      ("interventions", ep.interventions), ("policy_actions", ep.policy_actions)):
        if arr is not None and len(arr) != T:
            raise _err(where, f"{name} has {len(arr)} steps but actions has {T}", "pass arrays of equal length",
                       key=name)
    for group in (ep.obs, ep.next_obs):
        for k, v in group.items():
            if len(v) != T:
                raise _err(where, f"obs has {len(v)} steps but actions has {T}", "pass arrays of equal length",
                           key=f"obs/{k}")


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


# --------------------------------------------------------------------------------------------- reader
@dataclass
class StoreInfo:
    path: Path
    attrs: dict[str, Any]  # data group attrs (decoded)
    demos: list[str]  # sorted by index
    lengths: dict[str, int]
    episode_attrs: dict[str, dict[str, Any]]
    masks: dict[str, list[str]]
    obs_keys: dict[str, tuple[tuple[int, ...], str]]  # key -> (shape per step, dtype)
    action_dim: int
    next_index: int

    @property
    def env_id(self) -> str | None:
        if "env_id" in self.attrs:
            return self.attrs["env_id"]
        try:
            return json.loads(self.attrs.get("env_args", "{}")).get("env_name")
        except json.JSONDecodeError:
            return None

    @property
    def env_kwargs(self) -> dict:
        if "env_kwargs" in self.attrs:
            return json.loads(self.attrs["env_kwargs"])
        try:
            return json.loads(self.attrs.get("env_args", "{}")).get("env_kwargs", {})
        except json.JSONDecodeError:
            return {}


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


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open a store read-only, turning h5py's errors into messages that say what to do."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"{p}: no such file. Fix: check the path, or record one with `robolearn record out={p}`")
    if p.is_dir():
        raise StoreError(f"{p}: is a folder, not an HDF5 file. Fix: pass the .hdf5 file inside it")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise StoreError(
            f"{p}: not a readable HDF5 file (truncated or corrupt: {str(e).splitlines()[0][:120]}). "
            "Fix: re-record it, or restore it from a copy; robolearn's writer never leaves such a file behind"
        ) from None


def read_info(path: str | os.PathLike, validate: bool = False) -> StoreInfo:
    """Read the store's structure (and, with validate=True, every array) and check it; raises StoreError."""
    with open_h5(path) as f:
        return _read_info(f, Path(path), validate)


def _read_info(f: h5py.File, path: Path, validate: bool) -> StoreInfo:
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise _err(
            path,
            f"not a robolearn/robomimic episode store (no 'data' group; top-level keys: {list(f.keys())[:8]})",
            "if it is a Minari dataset, import it with `robolearn convert`; otherwise record one with "
            "`robolearn record`",
        )
    data = f["data"]
    attrs = {k: _decode(v) for k, v in data.attrs.items()}
    demos = sorted((k for k in data.keys() if isinstance(data[k], h5py.Group)), key=_demo_index)
    if not demos:
        raise _err(path, "the store holds no episodes", "record some with `robolearn record` before training")
    lengths, ep_attrs = {}, {}
    obs_keys: dict[str, tuple[tuple[int, ...], str]] = {}
    action_dim = -1
    for name in demos:
        g = data[name]
        for req in ("actions", "obs"):
            if req not in g:
                raise _err(path, f"missing '{req}'", "the episode is incomplete; delete it or re-record the file",
                           name, req)
        try:
            act = g["actions"]
            ashape = act.shape
        except Exception as e:  # noqa: BLE001 - h5py raises many kinds on corrupt objects
            raise _err(path, f"cannot read 'actions' ({e})", "re-record the file", name, "actions") from None
        if len(ashape) != 2:
            raise _err(path, f"actions have shape {ashape}, expected (T, action_dim)",
                       "store actions as a 2-D float array", name, "actions")
        if act.dtype.kind not in "fiu":
            raise _err(path, f"actions have dtype {act.dtype}, expected a numeric type",
                       "store actions as float32", name, "actions")
        T = ashape[0]
        if action_dim < 0:
            action_dim = ashape[1]
        elif ashape[1] != action_dim:
            raise _err(path, f"action dimension {ashape[1]} differs from the first episode's {action_dim}",
                       "keep one action space per file", name, "actions")
        if T == 0:
            raise _err(path, "the episode has no steps", "delete the empty episode", name, "actions")
        keys_here = {}
        for k, d in g["obs"].items():
            if d.shape[0] != T:
                raise _err(path, f"obs has {d.shape[0]} steps but actions has {T}",
                           "obs and actions must have one entry per step", name, f"obs/{k}")
            keys_here[k] = (tuple(d.shape[1:]), str(d.dtype))
        if not obs_keys:
            obs_keys = keys_here
        elif keys_here != obs_keys:
            raise _err(path, f"observation keys/shapes {keys_here} differ from the first episode's {obs_keys}",
                       "keep one observation space per file", name, "obs")
        for opt in ("rewards", "dones", "interventions", "policy_actions", "states"):
            if opt in g and g[opt].shape[0] != T:
                raise _err(path, f"{opt} has {g[opt].shape[0]} steps but actions has {T}",
                           "arrays of one episode must have equal length", name, opt)
        if "num_samples" in g.attrs and int(g.attrs["num_samples"]) != T:
            raise _err(path, f"num_samples={int(g.attrs['num_samples'])} but actions has {T} steps",
                       "fix the attribute or re-record", name, "num_samples")
        if validate:
            try:
                a = act[()]
                for k in g["obs"]:
                    g["obs"][k][()]
                for k in ("next_obs",):
                    if k in g:
                        for kk in g[k]:
                            g[k][kk][()]
                for opt in ("rewards", "dones", "interventions", "policy_actions", "states"):
                    if opt in g:
                        g[opt][()]
            except Exception as e:  # noqa: BLE001
                raise _err(path, f"cannot read the episode's arrays ({str(e)[:120]})", "re-record the file",
                           name) from None
            if not np.isfinite(a).all():
                bad = int(np.argwhere(~np.isfinite(a))[0][0])
                raise _err(path, f"actions contain NaN/inf (first at step {bad})",
                           "drop this episode (or re-record it); training on it would diverge", name, "actions")
        lengths[name] = T
        ep_attrs[name] = {k: _decode(v) for k, v in g.attrs.items()}
    masks = {}
    if "mask" in f:
        for split, d in f["mask"].items():
            masks[split] = [_decode(x) for x in d[()]]
            missing = [m for m in masks[split] if m not in lengths]
            if missing:
                raise _err(path, f"mask/{split} names episodes that do not exist: {missing[:5]}",
                           "rebuild the mask", key=f"mask/{split}")
    if validate and "total" in attrs and int(attrs["total"]) != sum(lengths.values()):
        raise _err(path, f"data.attrs['total']={attrs['total']} but the episodes hold {sum(lengths.values())} steps",
                   "re-record the file", key="total")
    nxt = max((_demo_index(n) for n in demos), default=-1) + 1
    return StoreInfo(path, attrs, demos, lengths, ep_attrs, masks, obs_keys, action_dim, nxt)


def iter_episodes(path: str | os.PathLike, demos: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (name, dict of arrays + attrs) for each episode, read whole; never modifies the file."""
    with open_h5(path) as f:
        info = _read_info(f, Path(path), validate=False)
        for name in demos or info.demos:
            g = f["data"][name]
            ep = {
                "obs": {k: v[()] for k, v in g["obs"].items()},
                "actions": g["actions"][()],
                "attrs": info.episode_attrs[name],
            }
            for opt in ("rewards", "dones", "interventions", "policy_actions", "states"):
                if opt in g:
                    ep[opt] = g[opt][()]
            if "next_obs" in g:
                ep["next_obs"] = {k: v[()] for k, v in g["next_obs"].items()}
            yield name, ep
