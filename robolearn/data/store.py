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
    /mask/<split>                demo names (bytes, resizable), e.g. mask/train, mask/valid

Writing (`EpisodeWriter`): crash-safe, one writer at a time, constant cost per episode.

- Lock: a writer holds an exclusive `flock` on `.<name>.journal/lock` beside the store (the file holds its
  pid) from construction until `close()`. A second writer fails at once with a StoreError naming that pid.
- Journal: the first episode creates the store file (temp file, fsync, atomic rename). Each later `append`
  writes its episode as a small HDF5 file `.<name>.journal/<index>.hdf5` (temp file, fsync, atomic rename,
  fsync of the folder), so an episode is durable when `append` returns, at a cost that does not depend on
  the size of the store.
- Merge: when the journal holds more than JOURNAL_FRACTION (25%) of the store file's bytes (and at least
  JOURNAL_MIN_BYTES, 256 KiB), and at `close()`, the store is copied to a temp file, the journaled episodes
  are copied in (HDF5 object copy), `mask/*` (resizable datasets) are appended to and `data.attrs["total"]`
  updated, the temp file is fsynced and atomically renamed over the store, then the journal files are
  deleted. The copy is paid for by the 25% of the store that filled the journal, so its cost per episode is
  constant; nothing inside the file is ever deleted, so the file has (almost) no dead space. Merging is
  idempotent (episodes already in the store are skipped) and journal files carry the store's `store_uid`,
  so they only ever land in their own store.
- Crash safety: a kill (SIGKILL included) at any instant leaves the store file as it was before or after a
  merge, never half-written, and every episode whose `append` returned is in the store or in the journal.
  Readers (`open_h5`, `read_info`, `iter_episodes`) treat a journal like SQLite's hot journal: if no writer
  holds the lock they merge it before reading (this is the only time reading changes a file); if they
  cannot (read-only folder, disk full) they warn and read the store file without it. While a writer in
  another process is live, readers see the store file: every episode but the last <= 25% (or 256 KiB) of
  them, all of them after its `close()`; in the writer's own process they see everything (the writer
  merges first).
- `close()` (also `with EpisodeWriter(...) as w:`, and as a best effort when the writer is garbage
  collected or the interpreter exits) merges the journal and releases the lock. A writer that is never
  closed loses nothing: the next open recovers its journal.
- `overwrite=True` records into `<stem>.partial<suffix>` beside the store and replaces the store with it
  (atomic rename) only on `close(commit=True)`. `close(commit=False)`, an exception in the `with` block,
  a crash or an unclosed writer leave the old store untouched and the finished episodes in the .partial file.
- Disk full: an append or merge that runs out of space removes its temp file, leaves the store as it was
  and raises a StoreError with the free and the needed space. A failed merge keeps the episodes in the
  journal; appends go on into the journal until they fail themselves.
- Appending to an existing store checks the env id, env kwargs, observation and action spaces against the
  store's attrs (as far as they go: files written by others are checked against their episodes), and every
  episode's obs keys/shapes/dtypes and action dimension against the store's episodes, before anything is
  written.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
import weakref
from collections.abc import Iterator
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


# --------------------------------------------------------------------------------------------- side files
def journal_dir(path: str | os.PathLike) -> Path:
    """The folder beside a store that holds its writer's lock and journal: `<dir>/.<name>.journal`."""
    p = Path(path)
    return p.with_name(f".{p.name}.journal")


def partial_path(path: str | os.PathLike) -> Path:
    """Where `overwrite=True` records until the new store is complete: `<stem>.partial<suffix>`."""
    p = Path(path)
    return p.with_name(f"{p.stem}.partial{p.suffix}")


def _listdir(d: Path) -> list[str]:
    try:
        return os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _entries(d: Path) -> list[Path]:
    """The committed journal files in `d`, in append order."""
    names = [n for n in _listdir(d) if n.endswith(".hdf5") and n[:-5].isdigit()]
    return [d / n for n in sorted(names, key=lambda n: int(n[:-5]))]


def _unlink_quietly(p: Path) -> None:
    try:
        p.unlink(missing_ok=True)
    except OSError:
        pass


def _free(d: Path) -> int | None:
    for p in (d, d.parent):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


class _Lock:
    """An exclusive `flock` on `<journal dir>/lock`; the file says `<pid> <role>` of its holder."""

    def __init__(self, store: Path, fd: int):
        self.store, self.dir, self.fd = store, journal_dir(store), fd

    @classmethod
    def try_acquire(cls, store: Path, role: str) -> _Lock | None:
        """The lock, or None when someone else holds it; OSError when the lock file cannot be made."""
        d = journal_dir(store)
        lock = d / "lock"
        for _ in range(100):
            d.mkdir(exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed by a holder that just released it
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # we locked a file that its last holder unlinked on release: take the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)
            return cls(store, fd)
        raise OSError(errno.EAGAIN, "the lock file keeps changing", str(lock))

    def release(self) -> None:
        """Unlock; remove the lock file and the folder when the journal is empty."""
        if self.fd < 0:
            return
        try:
            if all(n == "lock" for n in _listdir(self.dir)):
                _unlink_quietly(self.dir / "lock")  # while still locked: see the inode check in try_acquire
                try:
                    self.dir.rmdir()
                except OSError:
                    pass
        finally:
            os.close(self.fd)
            self.fd = -1

    def disown(self) -> None:
        """Drop a lock inherited through fork without unlocking it for the parent."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _holder(store: Path) -> tuple[int | None, str]:
    try:
        words = (journal_dir(store) / "lock").read_text().split()
        return int(words[0]), (words[1] if len(words) > 1 else "write")
    except (OSError, ValueError, IndexError):
        return None, "write"


def _take(store: Path, role: str, wait_s: float = 120.0) -> _Lock | None:
    """The lock; None if a writer holds it. A reader that is recovering the journal is waited for."""
    deadline = time.monotonic() + wait_s
    while True:
        lk = _Lock.try_acquire(store, role)
        if lk is not None:
            return lk
        pid, held_by = _holder(store)
        if time.monotonic() > deadline:
            return None
        if held_by != "recover" and (pid is not None or time.monotonic() > deadline - wait_s + 2.0):
            return None  # a writer (give a holder that has not written its pid yet 2 s to show who it is)
        time.sleep(0.05)


def _busy_error(path: Path) -> StoreError:
    pid, _ = _holder(path)
    if pid == os.getpid():
        return _err(
            path,
            f"another EpisodeWriter in this process (pid {pid}) is writing to it",
            "close() the first writer before opening another one (or use `with EpisodeWriter(...) as w:`)",
        )
    who = f"another process (pid {pid})" if pid else "another process"
    return _err(
        path,
        f"{who} is writing to it (it holds {journal_dir(path) / 'lock'})",
        "wait for it to finish, or write to another file with out=...",
    )


# --------------------------------------------------------------------------------------------- disk full
def _is_disk_full(e: BaseException, d: Path, need: int = 0) -> bool:
    """h5py reports ENOSPC as OSError or RuntimeError, often only in the message; look at the whole chain,
    and failing that treat any I/O error with less free space than needed as a full disk."""
    x: BaseException | None = e
    seen = set()
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(x) for s in ("No space left", "Disk quota exceeded", "ENOSPC")):
            return True
        x = x.__cause__ or x.__context__
    if not isinstance(e, (OSError, RuntimeError)):
        return False
    free = _free(d)
    return free is not None and free < max(need, 1 << 20)


def _disk_full(path: Path, free: int | None, need: int, merging: int = 0) -> StoreError:
    free_s = "an unknown amount" if free is None else f"{free / 1e6:.1f} MB"
    if merging:
        return _err(
            path,
            f"the disk is full: merging the {merging} journaled episodes into the store needs about "
            f"{need / 1e6:.1f} MB (a copy of the store plus the episodes) but {free_s} is free in {path.parent}; "
            f"the store file is unchanged and the episodes are safe in {journal_dir(path)}",
            f"free space on that disk, then run `robolearn inspect {path}` (it merges them)",
        )
    return _err(
        path,
        f"the disk is full: this append needs about {need / 1e6:.1f} MB but {free_s} is free in {path.parent}; "
        "the episode was not written, the store holds every episode appended before",
        "free space on that disk, or record to another disk with out=...",
    )


def _episode_bytes(ep: Episode) -> int:
    arrays = [
        *ep.obs.values(),
        *ep.next_obs.values(),
        ep.actions,
        ep.rewards,
        ep.dones,
        ep.states,
        ep.interventions,
        ep.policy_actions,
    ]
    arrays = [np.asarray(a) for a in arrays if a is not None]
    return sum(a.nbytes for a in arrays) + 4096 * len(arrays) + (64 << 10)


# --------------------------------------------------------------------------------------------- file writes
def _mask_dataset(mask: h5py.Group, split: str, names: list[str]) -> None:
    """mask/<split> as a resizable fixed-width bytes dataset (robomimic reads it like its own)."""
    width = max([16] + [len(n) for n in names])
    mask.create_dataset(
        split,
        data=np.array([n.encode() for n in names], dtype=f"S{width}"),
        maxshape=(None,),
        chunks=(MASK_CHUNK,),
    )


def _mask_append(mask: h5py.Group, split: str, names: list[str]) -> None:
    if split in mask:
        d = mask[split]
        if (
            isinstance(d, h5py.Dataset)
            and d.ndim == 1
            and d.maxshape[0] is None
            and d.dtype.kind == "S"
            and d.dtype.itemsize >= max(len(n) for n in names)
        ):
            n = d.shape[0]
            d.resize((n + len(names),))
            d[n:] = np.array([x.encode() for x in names], dtype=d.dtype)
            return
        # a fixed-size mask (written by others or by older robolearn): rewritten once as a resizable one
        names = [_decode(x) for x in d[()]] + names
        del mask[split]
    _mask_dataset(mask, split, names)


@contextmanager
def _in_memory_h5():
    """An HDF5 file that lives in memory (core driver); `f.id.get_file_image()` gives its bytes. Episodes are
    built this way and written with plain os.write: on a full disk that fails with a clean OSError, where
    HDF5 writing to disk itself leaves its file handles broken (and the interpreter segfaulting at exit)."""
    f = h5py.File(f"robolearn-mem-{uuid.uuid4().hex}.hdf5", "w", driver="core", backing_store=False)
    try:
        yield f
    finally:
        f.close()


def _image(f: h5py.File) -> bytes:
    f.flush()
    return f.id.get_file_image()


def _write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a new file and fsync it (the caller renames it into place)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_store(path: Path, tmp: Path, file_attrs: dict, uid: str, name: str, split: str, ep: Episode) -> None:
    """Create the store file holding one episode: temp file, fsync, atomic rename."""
    with _in_memory_h5() as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        f.attrs["store_uid"] = uid
        data = f.create_group("data")
        data.attrs["total"] = len(ep)
        data.attrs["env_args"] = json.dumps(
            {
                "env_name": file_attrs["env_id"],
                "type": ROBOMIMIC_GYM_TYPE,
                "env_kwargs": json.loads(file_attrs["env_kwargs"]),
            }
        )
        for k, v in file_attrs.items():
            data.attrs[k] = v
        _write_episode(data.create_group(name), ep)
        _mask_dataset(f.create_group("mask"), split, [name])
        image = _image(f)
    try:
        _write_bytes(tmp, image)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _write_entry(d: Path, index: int, uid: str, name: str, split: str, ep: Episode) -> int:
    """Journal one episode as `<d>/<index>.hdf5` (temp file, fsync, atomic rename); returns its size."""
    final = d / f"{index:09d}.hdf5"
    tmp = d / f"{index:09d}.hdf5.tmp"
    with _in_memory_h5() as f:
        f.attrs["store_uid"] = uid
        f.attrs["demo"] = name
        f.attrs["split"] = split
        _write_episode(f.create_group("data").create_group(name), ep)
        image = _image(f)
    try:
        _write_bytes(tmp, image)
        os.rename(tmp, final)
        _fsync_dir(d)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return len(image)


def _reserve(path: Path, nbytes: int) -> None:
    """Allocate `nbytes` past the end of `path` so that HDF5, writing there, cannot run out of space (it
    truncates the file to what it used when it closes). Raises OSError(ENOSPC) when the disk is too full."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, os.fstat(fd).st_size, nbytes)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        # EOPNOTSUPP/EINVAL: a file system without fallocate; the free-space check above has to do
    finally:
        os.close(fd)


def _merge(path: Path) -> int:
    """Merge the journal of `path` into the store file (the caller holds the lock); returns the number of
    episodes added. On failure (StoreError: disk full, unreadable store) the store and journal are as before."""
    d = journal_dir(path)
    for n in _listdir(d):
        if n.endswith(".tmp"):  # a killed writer's unfinished file: never committed, nothing to keep
            _unlink_quietly(d / n)
    entries = _entries(d)
    if not entries or not path.exists():
        return 0  # (journal files without a store file are dropped by the next store's first merge: uid)
    with _open_raw(path) as f:
        uid = _decode(f.attrs["store_uid"]) if "store_uid" in f.attrs else None
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise _err(
                path,
                "not an episode store (no 'data' group), but a journal of one lies beside it",
                f"restore the store file, or delete {d} if its episodes are not needed",
            )
        todo = [e for e in entries if f"demo_{int(e.name[:-5])}" not in data]
    done = [e for e in entries if e not in todo]  # merged before a kill stopped the cleanup
    heads = {}
    for e in todo:
        try:
            with h5py.File(e, "r") as j:
                heads[e] = (
                    _decode(j.attrs["demo"]),
                    _decode(j.attrs["split"]),
                    _decode(j.attrs["store_uid"]),
                )
        except Exception as x:  # noqa: BLE001 - renamed into place only after fsync: a disk fault; keep it aside
            os.replace(e, e.with_name(e.name + ".broken"))
            log.warning(
                "%s: journal file %s is unreadable (%s); moved aside as %s.broken", path, e, x, e.name
            )
    todo = [e for e in todo if e in heads]
    added, dropped = 0, []
    if todo:
        reserve = int(1.5 * sum(e.stat().st_size for e in todo)) + (1 << 20)  # the episodes plus metadata
        need = path.stat().st_size + reserve
        free = _free(d)
        if free is not None and free < need:
            raise _disk_full(path, free, need, merging=len(todo))
        tmp = d / "merge.tmp"
        try:
            shutil.copyfile(path, tmp)
            _reserve(tmp, reserve)
            with h5py.File(tmp, "r+") as f:
                data = f["data"]
                steps, by_split = 0, {}
                for e in todo:
                    name, split, juid = heads[e]
                    if (uid is not None and juid != uid) or name in data:
                        dropped.append(e)  # written for another store of this name, or already in
                        continue
                    with h5py.File(e, "r") as j:
                        j.copy(j["data"][name], data, name=name)
                    uid = uid or juid
                    steps += int(data[name]["actions"].shape[0])
                    by_split.setdefault(split, []).append(name)
                    added += 1
                if added:
                    if "total" in data.attrs:
                        data.attrs["total"] = int(data.attrs["total"]) + steps
                    mask = f.require_group("mask")
                    for split, names in by_split.items():
                        _mask_append(mask, split, names)
                    if "store_uid" not in f.attrs:
                        f.attrs["store_uid"] = uid
            if added:
                _fsync_file(tmp)
                os.replace(tmp, path)
                _fsync_dir(path.parent)
        except BaseException as e:
            _unlink_quietly(tmp)
            if isinstance(e, Exception) and _is_disk_full(e, d, need):
                raise _disk_full(path, _free(d), need, merging=len(todo)) from None
            raise
        finally:
            _unlink_quietly(tmp)
    if dropped:
        log.warning(
            "%s: dropped %d journaled episodes that were written for an earlier store of this name",
            path,
            len(dropped),
        )
    for e in (*done, *todo):
        _unlink_quietly(e)
    return added


def _clear_journal(path: Path) -> None:
    d = journal_dir(path)
    for n in _listdir(d):
        if n != "lock":
            _unlink_quietly(d / n)


# --------------------------------------------------------------------------------------------- writer
_OPEN: weakref.WeakSet[EpisodeWriter] = weakref.WeakSet()  # writers of this process that are not closed


class EpisodeWriter:
    """Appends episodes to an HDF5 store; see the module docstring for the lock, journal and merge.

    `env_id`/`env_kwargs` describe how to rebuild the env; `obs_space`/`action_space` are gymnasium spaces
    (stored as JSON). Appending to an existing store checks that they agree with the store's. Call `close()`
    when done (or use `with EpisodeWriter(...) as w:`); with `overwrite=True` only `close(commit=True)`
    replaces the old store.
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
        self._closed = True
        self._locks: list[_Lock] = []
        self.path = Path(path)
        if self.path.is_dir():
            raise _err(
                self.path, "is a folder, not an HDF5 file", "pass a file name, e.g. out=datasets/demos.hdf5"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file_attrs = {
            "format_version": FORMAT_VERSION,
            "env_id": env_id,
            "env_kwargs": json.dumps(env_kwargs or {}, sort_keys=True),
            "obs_space": json.dumps(space_spec(obs_space)) if obs_space is not None else "{}",
            "action_space": json.dumps(space_spec(action_space)) if action_space is not None else "{}",
            "env_spec": json.dumps(env_spec or {"id": env_id, "kwargs": env_kwargs or {}}, sort_keys=True),
        }
        self._pid = os.getpid()
        self._next = 0
        self._layout: tuple[dict, int] | None = None  # (obs key -> (shape, dtype), action dim) of the store
        self._journal_bytes = 0
        self._merge_at: float | None = None  # journal bytes at which to retry a merge that failed
        self.partial: Path | None = None  # overwrite=True: the file being recorded until close(commit=True)
        self.appended = 0
        self._final: Path | None = None
        self._lock(self.path)
        try:
            self._clean_stale_tmp()
            if overwrite and self.path.exists():
                self.partial = partial_path(self.path)
                self._lock(self.partial)
                self._discard_old_partial()
            self.target = self.partial or self.path
            with _signals_deferred():
                try:
                    _merge(self.target)  # the journal of a writer that was killed
                except StoreError:
                    raise
                except Exception as e:
                    if _is_disk_full(e, self.target.parent):
                        raise _disk_full(self.target, _free(self.target.parent), 0, merging=1) from None
                    raise
            if self.target.exists():
                self._check_existing(env_id, env_kwargs, obs_space is not None, action_space is not None)
            else:
                self._uid = uuid.uuid4().hex
            self._main_bytes = self.target.stat().st_size if self.target.exists() else 0
        except BaseException:
            self._release()
            raise
        self._closed = False
        _OPEN.add(self)

    # -- opening
    def _lock(self, p: Path) -> None:
        try:
            lk = _take(p, "write")
        except OSError as e:
            if _is_disk_full(e, p.parent):
                raise _disk_full(p, _free(p.parent), 1 << 16) from None
            raise _err(
                p,
                f"cannot create the lock file {journal_dir(p) / 'lock'} ({e.strerror or e})",
                "write to a folder you can write to (out=...)",
            ) from None
        if lk is None:
            raise _busy_error(p)
        self._locks.append(lk)

    def _clean_stale_tmp(self) -> None:  # temp files of robolearn versions that copied the store per append
        for p in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                p.unlink(missing_ok=True)

    def _discard_old_partial(self) -> None:
        p = self.partial
        entries = _entries(journal_dir(p))
        if p.exists() or entries:
            log.warning(
                "%s: removing %s, left by an earlier overwrite=true recording that did not finish",
                self.path,
                p,
            )
        _unlink_quietly(p)
        _clear_journal(p)

    def _check_existing(self, env_id, env_kwargs, has_obs: bool, has_act: bool) -> None:
        with _open_raw(self.target) as f:
            lay = _store_layout(f, self.target)
        self._uid = lay["uid"] or uuid.uuid4().hex
        self._next = lay["next_index"]
        self._layout = lay["episode"]
        diffs = _differences(lay, self.file_attrs, env_id, env_kwargs, has_obs, has_act)
        if diffs:
            raise _err(
                self.target,
                "the episodes to append are not of the store's task/setup ("
                + "; ".join(diffs)
                + "); nothing was written",
                "record into a new file with out=..., or pass overwrite=true to replace this store",
            )

    # -- appending
    def append(self, ep: Episode) -> str:
        """Write `ep` as data/demo_<i>; returns the demo name. Durable when it returns (see the module doc)."""
        if self._closed:
            raise _err(self.path, "the writer is closed", "open a new EpisodeWriter to append more episodes")
        check_episode(ep, where=str(self.path))
        lay = _episode_layout(ep)
        if self._layout is not None and lay != self._layout:
            raise _err(
                self.path,
                "the episode does not match the store's episodes ("
                + _layout_diff(self._layout, lay)
                + "); nothing was written",
                "keep one observation/action space per file: write these "
                "episodes to another file with out=...",
            )
        index = self._next
        name = f"demo_{index}"
        split = "valid" if index % VALID_EVERY == VALID_EVERY - 1 else "train"
        d = journal_dir(self.target)
        need = _episode_bytes(ep)
        free = _free(d)
        if free is not None and free < need:
            raise _disk_full(self.target, free, need)
        # SIGINT/SIGTERM are held back while HDF5 is being written (and delivered right after): a
        # KeyboardInterrupt raised inside h5py can deadlock its shutdown; SIGKILL is covered by the renames.
        with _signals_deferred():
            try:
                if self.target.exists():
                    self._journal_bytes += _write_entry(d, index, self._uid, name, split, ep)
                else:
                    _new_store(self.target, d / "create.tmp", self.file_attrs, self._uid, name, split, ep)
                    self._main_bytes = self.target.stat().st_size
            except Exception as e:
                if _is_disk_full(e, d, need):
                    raise _disk_full(self.target, _free(d), need) from None
                raise
        self._next += 1
        self.appended += 1
        self._layout = lay
        due = self._merge_at
        if due is None:
            due = max(JOURNAL_FRACTION * self._main_bytes, JOURNAL_MIN_BYTES)
        if self._journal_bytes > due:
            try:
                self.flush()
            except (StoreError, OSError, RuntimeError) as e:  # the episode is safe in the journal: go on
                if self._merge_at is None:
                    log.warning("%s (appending goes on; the episodes stay in the journal)", e)
                self._merge_at = self._journal_bytes + JOURNAL_FRACTION * self._main_bytes
        return name

    def flush(self) -> None:
        """Merge the journal into the store file now (readers in this process call it before reading)."""
        if self._closed or os.getpid() != self._pid:
            return
        with _signals_deferred():
            _merge(self.target)
        self._journal_bytes = 0
        self._merge_at = None
        self._main_bytes = self.target.stat().st_size if self.target.exists() else 0

    # -- closing
    def close(self, commit: bool = True) -> Path | None:
        """Merge the journal and release the lock; returns the file that holds the episodes. With
        overwrite=True, commit=True replaces the old store by the new one, commit=False keeps the old store
        and leaves the new episodes in `self.partial`. Closing twice is a no-op."""
        if self._closed:
            return self._final
        if os.getpid() != self._pid:
            self._disown()
            return None
        try:
            self.flush()
            if self.partial is None:
                self._final = self.path
            elif commit and self.partial.exists():
                with _signals_deferred():
                    os.replace(self.partial, self.path)
                    _fsync_dir(self.path.parent)
                    _clear_journal(self.path)  # pending episodes of the store just replaced
                self._final = self.path
            else:
                self._final = self.partial if self.partial.exists() else self.path
        finally:
            self._release()
        return self._final

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close(commit=True)
            return
        try:
            self.close(commit=False)
        except Exception as e:  # noqa: BLE001 - the exception in flight is the one to report
            log.warning("%s", e)

    def _release(self) -> None:
        for lk in reversed(self._locks):
            try:
                lk.release()
            except OSError:
                pass
        self._locks = []
        self._closed = True
        _OPEN.discard(self)

    def _disown(self) -> None:
        for lk in self._locks:
            lk.disown()
        self._locks = []
        self._closed = True
        _OPEN.discard(self)

    def _finalize(self) -> None:
        """Close a writer its owner forgot (garbage collection, interpreter exit); never raises."""
        try:
            if os.getpid() != self._pid:
                self._disown()
                return
            final = self.close(commit=False)
            if self.partial is not None and final == self.partial:
                log.warning(
                    "%s: the EpisodeWriter(overwrite=True) was not closed, so the store is unchanged and "
                    "the %d new episodes are in %s. Fix: call writer.close() when the recording is "
                    "complete",
                    self.path,
                    self.appended,
                    self.partial,
                )
        except Exception as e:  # noqa: BLE001
            try:
                log.warning("%s", e)
            except Exception:  # noqa: BLE001 - logging torn down at exit
                pass

    def __del__(self):
        if not getattr(self, "_closed", True):
            self._finalize()


@atexit.register
def _close_writers_at_exit() -> None:
    for w in list(_OPEN):
        w._finalize()


def _disown_writers_after_fork() -> None:  # a forked child (e.g. a DataLoader worker) owns no writer
    for w in list(_OPEN):
        w._disown()


os.register_at_fork(after_in_child=_disown_writers_after_fork)


def _live_writer(path: Path) -> EpisodeWriter | None:
    if not _OPEN:
        return None
    key = os.path.realpath(path)
    for w in list(_OPEN):
        if not w._closed and w._pid == os.getpid() and os.path.realpath(w.target) == key:
            return w
    return None


# --------------------------------------------------------------------------------------------- checks
def _episode_layout(ep: Episode) -> tuple[dict, int]:
    obs = {k: (tuple(np.shape(v)[1:]), str(np.asarray(v).dtype)) for k, v in ep.obs.items()}
    return obs, int(ep.actions.shape[1])


def _layout_diff(old: tuple[dict, int], new: tuple[dict, int]) -> str:
    out = []
    (oo, oa), (no, na) = old, new
    if set(oo) - set(no):
        out.append(f"obs keys missing: {sorted(set(oo) - set(no))}")
    if set(no) - set(oo):
        out.append(f"obs keys not in the store: {sorted(set(no) - set(oo))}")
    for k in sorted(set(oo) & set(no)):
        if oo[k] != no[k]:
            out.append(f"obs/{k}: stored {oo[k][0]} {oo[k][1]}, new {no[k][0]} {no[k][1]}")
    if oa != na:
        out.append(f"actions: stored {oa}-D, new {na}-D")
    return "; ".join(out)


def _store_layout(f: h5py.File, path: Path) -> dict:
    """What a writer needs to know of an existing store, without visiting every episode."""
    data = f.get("data")
    if not isinstance(data, h5py.Group):
        raise _err(
            path,
            f"not a robolearn/robomimic episode store (no 'data' group; top-level keys: "
            f"{list(f.keys())[:8]})",
            "write to a new file with out=..., or pass overwrite=true",
        )
    attrs = {k: _decode(v) for k, v in data.attrs.items()}
    names = [n for n in data.keys() if _demo_index(n) >= 0]
    episode = None
    if names:
        g = data[min(names, key=_demo_index)]
        try:
            obs = {k: (tuple(d.shape[1:]), str(d.dtype)) for k, d in g["obs"].items()}
            act = g["actions"].shape
            episode = (obs, int(act[1]) if len(act) == 2 else -1)
        except (KeyError, AttributeError):
            episode = None  # a broken first episode: read_info names it; do not guess a layout
    return {
        "attrs": attrs,
        "uid": _decode(f.attrs["store_uid"]) if "store_uid" in f.attrs else None,
        "next_index": max((_demo_index(n) for n in names), default=-1) + 1,
        "episode": episode,
    }


def _flat_space(spec: dict, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    if spec.get("type") == "Dict":
        out = {}
        for k, s in spec.get("spaces", {}).items():
            out.update(_flat_space(s, f"{prefix}{k}/" if s.get("type") == "Dict" else f"{prefix}{k}"))
        return out
    return {prefix: (tuple(spec.get("shape", ())), str(spec.get("dtype", "?")))}


def _box_str(spec: dict) -> str:
    def bound(v):
        a = np.asarray(v, np.float64)
        return f"{a.flat[0]:g}" if a.size and (a == a.flat[0]).all() else np.array2string(a, precision=3)

    return (
        f"Box(shape={tuple(spec.get('shape', ()))}, {spec.get('dtype', '?')}, low={bound(spec.get('low', []))}, "
        f"high={bound(spec.get('high', []))})"
    )


def _json(v) -> dict | None:
    if not isinstance(v, str) or v in ("", "{}"):
        return None
    try:
        out = json.loads(v)
    except json.JSONDecodeError:
        return None
    return out if isinstance(out, dict) and out else None


def _differences(lay: dict, new_attrs: dict, env_id, env_kwargs, has_obs: bool, has_act: bool) -> list[str]:
    """How the writer's env/spaces differ from an existing store's, as far as the store's attrs tell."""
    attrs, diffs = lay["attrs"], []
    old_id = _env_id(attrs)
    if old_id is not None and env_id is not None and old_id != env_id:
        diffs.append(f"env_id: stored {old_id!r}, new {env_id!r}")
    old_kw = _env_kwargs(attrs)
    if env_kwargs is not None and old_kw:
        # only keys both sides name: a key one side leaves out takes the env's default, unknown here
        for k in sorted(set(old_kw) & set(env_kwargs)):
            if old_kw[k] != env_kwargs[k]:
                diffs.append(f"env_kwargs {k}: stored {old_kw[k]!r}, new {env_kwargs[k]!r}")
    if has_obs:
        new = _flat_space(json.loads(new_attrs["obs_space"]))
        old_spec = _json(attrs.get("obs_space"))
        if old_spec is not None:
            old = _flat_space(old_spec)
        elif lay["episode"] is not None and "" not in new:  # no space recorded: the stored episodes tell
            old = {k: v for k, v in lay["episode"][0].items()}
            new = {k: (shape, old[k][1] if k in old else dt) for k, (shape, dt) in new.items()}
        else:
            old = new
        if old != new:
            d = _layout_diff((old, 0), (new, 0))
            diffs.append(f"observation space: {d}")
    if has_act:
        new = json.loads(new_attrs["action_space"])
        old_spec = _json(attrs.get("action_space"))
        if old_spec is not None:
            if old_spec != new:
                diffs.append(f"action space: stored {_box_str(old_spec)}, new {_box_str(new)}")
        elif (
            lay["episode"] is not None and lay["episode"][1] >= 0 and [lay["episode"][1]] != new.get("shape")
        ):
            diffs.append(
                f"action space: the stored episodes have {lay['episode'][1]}-D actions, new {_box_str(new)}"
            )
    return diffs


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
