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

import json
import logging
import os
import uuid
from pathlib import Path

import h5py
import numpy as np

# the store's public names (and the helpers other modules and tests reach for), importable from here as before
from robolearn.data.episodes import (  # noqa: F401  # noqa: E402,F401
    FORMAT_VERSION,
    JOURNAL_FRACTION,
    JOURNAL_MIN_BYTES,
    ROBOMIMIC_GYM_TYPE,
    SOURCES,
    VALID_EVERY,
    Episode,
    EpisodeBuilder,
    StoreError,
    _decode,
    _demo_index,
    _err,
    _fsync_dir,
    _fsync_file,
    _pid_alive,
    _signals_deferred,
    check_episode,
    remove_stale_tmp,
    space_spec,
)
from robolearn.data.journal import (  # noqa: F401
    _OPEN,
    _busy_error,
    _clear_journal,
    _disk_full,
    _entries,
    _episode_bytes,
    _free,
    _is_disk_full,
    _Lock,
    _merge,
    _new_store,
    _take,
    _unlink_quietly,
    _write_entry,
    journal_dir,
    partial_path,
)
from robolearn.data.reader import (  # noqa: F401  # noqa: E402,F401
    StoreInfo,
    _env_id,
    _env_kwargs,
    _open_raw,
    iter_episodes,
    journal_status,
    open_h5,
    read_info,
)

log = logging.getLogger(__name__)


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
        remove_stale_tmp(self.path)

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
