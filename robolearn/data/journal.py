"""The store's write-ahead journal, single-writer lock, disk-space checks and merges (the design is in
robolearn.data.store's docstring). Also the registry of this process's open writers, so a reader here
sees their episodes."""

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
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from robolearn.data.episodes import (  # noqa: F401
    FORMAT_VERSION,
    MASK_CHUNK,
    ROBOMIMIC_GYM_TYPE,
    Episode,
    StoreError,
    _decode,
    _err,
    _fsync_dir,
    _fsync_file,
    _open_raw,
    _write_episode,
)

log = logging.getLogger(__name__)


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


_OPEN: weakref.WeakSet = weakref.WeakSet()  # writers of this process that are not closed


@atexit.register
def _close_writers_at_exit() -> None:
    for w in list(_OPEN):
        w._finalize()


def _disown_writers_after_fork() -> None:  # a forked child (e.g. a DataLoader worker) owns no writer
    for w in list(_OPEN):
        w._disown()


os.register_at_fork(after_in_child=_disown_writers_after_fork)


def _live_writer(path: Path):  # -> the EpisodeWriter (robolearn.data.store) of this process, or None
    if not _OPEN:
        return None
    key = os.path.realpath(path)
    for w in list(_OPEN):
        if not w._closed and w._pid == os.getpid() and os.path.realpath(w.target) == key:
            return w
    return None
