"""Reading an episode store: structure, validation and episodes (recovering a dead writer's journal first)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robolearn.data.episodes import (  # noqa: F401
    StoreError,
    _decode,
    _demo_index,
    _err,
    _open_raw,
    _signals_deferred,
)
from robolearn.data.journal import (  # noqa: F401
    _entries,
    _holder,
    _live_writer,
    _merge,
    _take,
    journal_dir,
)

log = logging.getLogger(__name__)


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
        return _env_id(self.attrs)

    @property
    def env_kwargs(self) -> dict:
        return _env_kwargs(self.attrs) or {}


def _env_id(attrs: dict) -> str | None:
    if "env_id" in attrs:
        return attrs["env_id"]
    try:
        return json.loads(attrs.get("env_args", "{}")).get("env_name")
    except (json.JSONDecodeError, AttributeError):
        return None


def _env_kwargs(attrs: dict) -> dict | None:
    try:
        if "env_kwargs" in attrs:
            return json.loads(attrs["env_kwargs"])
        return json.loads(attrs.get("env_args", "{}")).get("env_kwargs")
    except (json.JSONDecodeError, AttributeError):
        return None


_WARNED: set[str] = set()


def _recover(p: Path) -> None:
    """Merge the journal a stopped writer left beside `p` (SQLite's hot journal); a live writer's is left
    to it, except that a writer of this very process merges first, so that its own process reads it all."""
    d = journal_dir(p)
    if not d.is_dir():
        return
    w = _live_writer(p)
    if w is not None:
        try:
            w.flush()
        except (StoreError, OSError, RuntimeError) as e:
            log.warning("%s (reading the store file without them)", e)
        return
    try:
        lk = _take(p, "recover")
    except OSError as e:
        n = len(_entries(d))
        if n and str(p) not in _WARNED:
            _WARNED.add(str(p))
            log.warning(
                "%s: %d episodes that a stopped writer journaled in %s are not merged (cannot take its "
                "lock: %s); reading the store file without them. Fix: run `robolearn inspect %s` as a "
                "user who can write to %s",
                p,
                n,
                d,
                e.strerror or e,
                p,
                p.parent,
            )
        return
    if lk is None:
        return  # a writer is live (another process): readers see the store file; it merges at close
    try:
        with _signals_deferred():
            n = _merge(p)
        if n:
            log.info("%s: merged %d episodes that a stopped writer had journaled", p, n)
    except (StoreError, OSError, RuntimeError) as e:
        if str(p) not in _WARNED:
            _WARNED.add(str(p))
            log.warning("%s (reading the store file without them)", e)
    finally:
        lk.release()


def journal_status(path: str | os.PathLike) -> dict:
    """Episodes journaled but not yet in the store file, and the pid of the writer holding the lock (if any)."""
    p = Path(path)
    d = journal_dir(p)
    n = len(_entries(d))
    pid = _holder(p)[0] if d.is_dir() else None
    return {"pending": n, "writer_pid": pid}


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open a store read-only (after merging a stopped writer's journal), turning h5py's errors into
    messages that say what to do."""
    p = Path(path)
    if not p.exists():
        raise StoreError(
            f"{p}: no such file. Fix: check the path, or record one with `robolearn record out={p}`"
        )
    if p.is_dir():
        raise StoreError(f"{p}: is a folder, not an HDF5 file. Fix: pass the .hdf5 file inside it")
    _recover(p)
    return _open_raw(p)


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
        c = dict(g.items())  # one lookup per member (h5py's per-lookup cost dominates for big stores)
        for req in ("actions", "obs"):
            if req not in c:
                raise _err(
                    path,
                    f"missing '{req}'",
                    "the episode is incomplete; delete it or re-record the file",
                    name,
                    req,
                )
        try:
            act = c["actions"]
            ashape = act.shape
        except Exception as e:  # noqa: BLE001 - h5py raises many kinds on corrupt objects
            raise _err(path, f"cannot read 'actions' ({e})", "re-record the file", name, "actions") from None
        if len(ashape) != 2:
            raise _err(
                path,
                f"actions have shape {ashape}, expected (T, action_dim)",
                "store actions as a 2-D float array",
                name,
                "actions",
            )
        if act.dtype.kind not in "fiu":
            raise _err(
                path,
                f"actions have dtype {act.dtype}, expected a numeric type",
                "store actions as float32",
                name,
                "actions",
            )
        T = ashape[0]
        if action_dim < 0:
            action_dim = ashape[1]
        elif ashape[1] != action_dim:
            raise _err(
                path,
                f"action dimension {ashape[1]} differs from the first episode's {action_dim}",
                "keep one action space per file",
                name,
                "actions",
            )
        if T == 0:
            raise _err(path, "the episode has no steps", "delete the empty episode", name, "actions")
        keys_here = {}
        for k, d in c["obs"].items():
            if d.shape[0] != T:
                raise _err(
                    path,
                    f"obs has {d.shape[0]} steps but actions has {T}",
                    "obs and actions must have one entry per step",
                    name,
                    f"obs/{k}",
                )
            keys_here[k] = (tuple(d.shape[1:]), str(d.dtype))
        if not obs_keys:
            obs_keys = keys_here
        elif keys_here != obs_keys:
            raise _err(
                path,
                f"observation keys/shapes {keys_here} differ from the first episode's {obs_keys}",
                "keep one observation space per file",
                name,
                "obs",
            )
        if "next_obs" in c:
            for k, d in c["next_obs"].items():
                if d.shape[0] != T:
                    raise _err(
                        path,
                        f"next_obs has {d.shape[0]} steps but actions has {T}",
                        "next_obs must hold the observation after each action: one entry per step",
                        name,
                        f"next_obs/{k}",
                    )
                if k in keys_here and tuple(d.shape[1:]) != keys_here[k][0]:
                    raise _err(
                        path,
                        f"next_obs has shape {tuple(d.shape[1:])} per step but obs has {keys_here[k][0]}",
                        "store next_obs with the shapes of obs",
                        name,
                        f"next_obs/{k}",
                    )
        for opt in ("rewards", "dones", "interventions", "policy_actions", "states"):
            if opt in c and c[opt].shape[0] != T:
                raise _err(
                    path,
                    f"{opt} has {c[opt].shape[0]} steps but actions has {T}",
                    "arrays of one episode must have equal length",
                    name,
                    opt,
                )
        if "num_samples" in g.attrs and int(g.attrs["num_samples"]) != T:
            raise _err(
                path,
                f"num_samples={int(g.attrs['num_samples'])} but actions has {T} steps",
                "fix the attribute or re-record",
                name,
                "num_samples",
            )
        if validate:
            _validate_arrays(c, path, name)
        lengths[name] = T
        ep_attrs[name] = {k: _decode(v) for k, v in g.attrs.items()}
    masks = {}
    if "mask" in f:
        for split, d in f["mask"].items():
            masks[split] = [_decode(x) for x in d[()]]
            missing = [m for m in masks[split] if m not in lengths]
            if missing:
                raise _err(
                    path,
                    f"mask/{split} names episodes that do not exist: {missing[:5]}",
                    "rebuild the mask",
                    key=f"mask/{split}",
                )
    if validate and "total" in attrs and int(attrs["total"]) != sum(lengths.values()):
        raise _err(
            path,
            f"data.attrs['total']={attrs['total']} but the episodes hold {sum(lengths.values())} steps",
            "re-record the file",
            key="total",
        )
    nxt = max((_demo_index(n) for n in demos), default=-1) + 1
    return StoreInfo(path, attrs, demos, lengths, ep_attrs, masks, obs_keys, action_dim, nxt)


def _validate_arrays(c: dict, path: Path, name: str) -> None:
    """Read every array of one episode (`c`: its members); actions, obs and next_obs (float) must be finite."""
    finite = {}
    try:
        finite["actions"] = c["actions"][()]
        for grp in ("obs", "next_obs"):
            if grp in c:
                for k, d in c[grp].items():
                    v = d[()]
                    if v.dtype.kind == "f":
                        finite[f"{grp}/{k}"] = v
        for opt in ("rewards", "dones", "interventions", "policy_actions", "states"):
            if opt in c:
                c[opt][()]
    except Exception as e:  # noqa: BLE001
        raise _err(
            path, f"cannot read the episode's arrays ({str(e)[:120]})", "re-record the file", name
        ) from None
    for key, v in finite.items():
        ok = np.isfinite(v)
        if not ok.all():
            bad = int(np.argwhere(~ok)[0][0])
            what = "actions" if key == "actions" else key.split("/")[0]
            raise _err(
                path,
                f"{what} contain NaN/inf (first at step {bad})",
                "drop this episode (or re-record it); training on it would diverge",
                name,
                key,
            )


def iter_episodes(path: str | os.PathLike, demos: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (name, dict of arrays + attrs) for each episode, read whole; never modifies the file (beyond
    merging a stopped writer's journal, see open_h5)."""
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
