"""Windows of (observation history, action chunk) over an episode store.

Horizons (the same letters everywhere: To observation steps, Tp predicted actions, Ta executed actions)::

    step:        t-2   t-1    t    t+1   t+2   t+3  ...  t+Tp-1
    obs:        [o    o      o]                                      To = 3 (o[t] is the newest)
    action:                 [a     a     a     a    ...  a]          Tp predicted from o[t-To+1 .. t]
    executed:               [a     a]                                Ta = 2, then re-plan at t+Ta

At episode edges the window is padded with the edge value: observations before the first step repeat
the first observation, actions after the last step repeat the last action (diffusion_policy's choice).
A window is anchored at every step t of an episode, so a dataset has `sum(T_i)` windows.

Two modes: `in_ram=True` (default) reads the selected episodes once into flat arrays and gathers whole
batches with numpy fancy indexing (no per-item Python loop); `in_ram=False` keeps the file closed until
first use in each process (safe with DataLoader workers) and reads each window's slices from disk.

Observation dtypes: uint8 (H, W, 3) arrays are images and stay uint8; every other numeric or bool array
(float64 as robomimic writes it, float16, ints, bool, uint8 low-dim) is low-dim and is cast to float32
when loaded, in both modes. `spec()` gives the policy's dtype ("float32"/"uint8") and keeps the file's own
as ``stored_dtype``. Compressed datasets (gzip as robomimic writes images, lzf as we do) read the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from robolearn.data.store import StoreError, StoreInfo, open_h5, read_info


def policy_dtype(shape, stored_dtype) -> str | None:
    """The dtype a policy sees for an observation key stored as `stored_dtype` with per-step `shape`:
    "uint8" for (H, W, 3) uint8 images, "float32" for any other numeric or bool array, None if neither."""
    dt = np.dtype(stored_dtype)
    if dt == np.uint8 and len(shape) == 3:
        return "uint8"
    if dt.kind in "fiub":
        return "float32"
    return None


class WindowDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        path: str | os.PathLike,
        To: int = 2,
        Tp: int = 16,
        split: str | None = "train",
        sources: list[str] | None = None,
        success_only: bool = False,
        obs_keys: list[str] | None = None,
        in_ram: bool = True,
        demos: list[str] | None = None,
        chunk_labels: str | os.PathLike | None = "auto",
    ):
        if To < 1 or Tp < 1:
            raise ValueError(f"To={To} and Tp={Tp} must both be >= 1")
        self.path = Path(path)
        self.To, self.Tp, self.in_ram = To, Tp, in_ram
        info = read_info(self.path)
        self.info: StoreInfo = info
        self.demos = demos if demos is not None else select_demos(info, split, sources, success_only)
        if not self.demos:
            raise StoreError(
                f"{self.path}: no episodes match split={split!r}, sources={sources}, success_only={success_only} "
                f"(the file has {len(info.demos)} episodes, sources "
                f"{sorted({str(a.get('source', '?')) for a in info.episode_attrs.values()})}). "
                "Fix: relax the filter, or use split=null to take every episode"
            )
        all_keys = sorted(info.obs_keys)
        self.obs_keys = sorted(obs_keys) if obs_keys else all_keys
        missing = [k for k in self.obs_keys if k not in info.obs_keys]
        if missing:
            raise StoreError(
                f"{self.path}: obs keys {missing} not in the file (it has {all_keys}). "
                "Fix: choose from the file's keys"
            )
        self.stored_dtypes = {k: np.dtype(info.obs_keys[k][1]) for k in self.obs_keys}
        self.obs_dtypes = {k: policy_dtype(info.obs_keys[k][0], dt) for k, dt in self.stored_dtypes.items()}
        bad = {k: str(self.stored_dtypes[k]) for k, v in self.obs_dtypes.items() if v is None}
        if bad:
            raise StoreError(
                f"{self.path}: obs keys {sorted(bad)} have non-numeric dtypes {bad}; observations "
                "must be numbers, bools or uint8 (H, W, 3) images. Fix: leave them out with "
                f"obs_keys={sorted(set(self.obs_keys) - set(bad))}"
            )
        lengths = np.array([info.lengths[d] for d in self.demos])
        self.ends = np.cumsum(lengths)
        self.starts = self.ends - lengths
        self.n = int(self.ends[-1])
        # for each global step: the start and last index of its episode
        ep_of_step = np.repeat(np.arange(len(self.demos)), lengths)
        self._ep_start = self.starts[ep_of_step]
        self._ep_last = self.ends[ep_of_step] - 1
        self._obs_off = np.arange(To) - (To - 1)
        self._act_off = np.arange(Tp)
        self._h5: h5py.File | None = None
        self._pid = None
        self.weights = None  # optional per-step sample weights (interventions)
        # action-chunk targets that are plans (DAgger's expert rollouts), per episode, instead of the shifted
        # per-step labels; "auto": the file's sidecar <data>.chunk_labels.hdf5 if there is one
        if chunk_labels == "auto":
            chunk_labels = chunk_labels_path(self.path)
            chunk_labels = chunk_labels if chunk_labels.exists() else None
        self.chunk_labels = read_chunk_labels(chunk_labels, self.demos, Tp) if chunk_labels else {}
        self.chunks = None
        if in_ram:
            self.obs, self.actions, extra = _load_flat(self.path, self.demos, self.obs_dtypes)
            self.interventions = extra.get("interventions")
            if not np.isfinite(self.actions).all():
                raise StoreError(
                    f"{self.path}: actions contain NaN/inf. Fix: run `robolearn inspect {self.path} "
                    "--validate` to find the episode, then drop it"
                )
            if self.chunk_labels:
                self.chunks = self.actions[self.window_indices(np.arange(self.n))[1]]
                for e, d in enumerate(self.demos):
                    if d in self.chunk_labels:
                        if len(self.chunk_labels[d]) != self.ends[e] - self.starts[e]:
                            raise StoreError(
                                f"{chunk_labels}: {d} has {len(self.chunk_labels[d])} chunk labels, the "
                                f"episode {self.ends[e] - self.starts[e]} steps. Fix: delete the stale file"
                            )
                        self.chunks[self.starts[e] : self.ends[e]] = self.chunk_labels[d]

    # ------------------------------------------------------------------ spec the policy is built from
    def spec(self) -> dict:
        """dtype: what the policy is fed (obs are cast on load); stored_dtype: what the file holds."""
        return {
            "obs": {
                k: {
                    "shape": list(self.info.obs_keys[k][0]),
                    "dtype": self.obs_dtypes[k],
                    "stored_dtype": self.stored_dtypes[k].name,
                }
                for k in self.obs_keys
            },
            "action_dim": int(self.info.action_dim),
            "To": self.To,
            "Tp": self.Tp,
        }

    def __len__(self) -> int:
        return self.n

    def window_indices(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global step indices (B, To) of the observation window and (B, Tp) of the action chunk."""
        idx = np.asarray(idx)
        s, last = self._ep_start[idx, None], self._ep_last[idx, None]
        oi = np.clip(idx[:, None] + self._obs_off, s, last)
        ai = np.clip(idx[:, None] + self._act_off, s, last)
        return oi, ai

    def get_batch(self, idx) -> dict:
        """Gather windows for an array of global indices: {"obs": {k: (B, To, ...)}, "action": (B, Tp, Da)}."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.in_ram:
            oi, ai = self.window_indices(idx)
            return {
                "obs": {k: torch.from_numpy(v[oi]) for k, v in self.obs.items()},
                "action": torch.from_numpy(self.actions[ai] if self.chunks is None else self.chunks[idx]),
            }
        items = [self._read_one(int(i)) for i in idx]
        return {
            "obs": {k: torch.from_numpy(np.stack([it[0][k] for it in items])) for k in self.obs_keys},
            "action": torch.from_numpy(np.stack([it[1] for it in items])),
        }

    def __getitem__(self, i: int) -> dict:
        b = self.get_batch(np.array([i]))
        return {"obs": {k: v[0] for k, v in b["obs"].items()}, "action": b["action"][0]}

    def __getitems__(self, idx: list[int]) -> dict:
        # DataLoader's batched fetch: one gather per batch instead of one per item
        return self.get_batch(np.asarray(idx))

    @staticmethod
    def collate(batch):
        return batch  # __getitems__ already returns a collated batch

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        if self.weights is not None:
            idx = rng.choice(self.n, size=batch_size, p=self.weights)
        else:
            idx = rng.integers(0, self.n, size=batch_size)
        return self.get_batch(idx)

    # ------------------------------------------------------------------ lazy reading
    def _file(self) -> h5py.File:
        # opened on first use in each process: h5py handles must not cross a fork (DataLoader workers)
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_h5(self.path)
            self._pid = os.getpid()
        return self._h5

    def _read_one(self, i: int):
        e = int(np.searchsorted(self.ends, i, side="right"))
        g = self._file()["data"][self.demos[e]]
        t = i - int(self.starts[e])
        T = int(self.ends[e] - self.starts[e])
        o_lo, o_hi = max(0, t - self.To + 1), t + 1
        a_lo, a_hi = t, min(T, t + self.Tp)
        obs = {}
        for k in self.obs_keys:
            x = g["obs"][k][o_lo:o_hi].astype(self.obs_dtypes[k], copy=False)
            obs[k] = np.concatenate([np.repeat(x[:1], self.To - len(x), 0), x]) if len(x) < self.To else x
        a = g["actions"][a_lo:a_hi].astype(np.float32)
        if len(a) < self.Tp:
            a = np.concatenate([a, np.repeat(a[-1:], self.Tp - len(a), 0)])
        if self.demos[e] in self.chunk_labels:
            a = self.chunk_labels[self.demos[e]][t]
        return obs, a

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_h5"] = None
        return d


def chunk_labels_path(path: str | os.PathLike) -> Path:
    """The sidecar of an episode store that holds action-chunk labels: <stem>.chunk_labels.hdf5."""
    p = Path(path)
    return p.with_name(p.stem + ".chunk_labels.hdf5")


def read_chunk_labels(path, demos, Tp: int) -> dict[str, np.ndarray]:
    """{demo: (T, Tp, Da) float32} from a chunk-label file (one dataset per demo name, (T, Tp', Da)); chunks
    longer than Tp are cut, shorter ones padded with their last action."""
    out = {}
    with h5py.File(path, "r") as f:
        for d in demos:
            if d in f:
                c = f[d][()].astype(np.float32)
                if c.shape[1] < Tp:
                    c = np.concatenate([c, np.repeat(c[:, -1:], Tp - c.shape[1], 1)], 1)
                out[d] = np.ascontiguousarray(c[:, :Tp])
    return out


def select_demos(info: StoreInfo, split: str | None, sources=None, success_only=False) -> list[str]:
    demos = list(info.demos)
    if split:
        if split not in info.masks:
            # files without masks (or without a valid split): everything is train, nothing is valid
            demos = demos if split == "train" else []
        else:
            allowed = set(info.masks[split])
            demos = [d for d in demos if d in allowed]
    if sources:
        demos = [d for d in demos if str(info.episode_attrs[d].get("source", "")) in sources]
    if success_only:
        demos = [d for d in demos if bool(info.episode_attrs[d].get("success", False))]
    return demos


def _load_flat(path, demos, obs_dtypes: dict[str, str]):
    """obs_dtypes: key -> the dtype to hold it in (see policy_dtype)."""
    with open_h5(path) as f:
        data = f["data"]
        # cast per episode: a float64 file never sits in RAM at twice the size
        obs = {
            k: np.concatenate([data[d]["obs"][k][()].astype(dt, copy=False) for d in demos])
            for k, dt in obs_dtypes.items()
        }
        actions = np.concatenate([data[d]["actions"][()] for d in demos]).astype(np.float32)
        extra = {}
        if all("interventions" in data[d] for d in demos):
            iv = np.concatenate([data[d]["interventions"][()] for d in demos])
            extra["interventions"] = iv.astype(bool)
    return obs, actions, extra
