"""Windowed samples/s: robolearn's WindowDataset vs robomimic's SequenceDataset on the same file.

    .venv/bin/python bench/data_loading.py [--file datasets/pusht.hdf5] [--runs 3]

Both read the same HDF5 store (robomimic is installed beside our pins with --no-deps by scripts/setup.sh)
and produce the same windows: 2 observation steps + 16 actions, low-dim keys, batches of 256.
robomimic: `hdf5_cache_mode="low_dim"` (its fastest, everything in RAM) through a torch DataLoader
(num_workers=0) - how its trainer uses it. robolearn: in-RAM mode, `sample()` gathering whole batches
with numpy fancy indexing; and lazy mode (h5py per window) for reference. Median of --runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from robolearn.data.dataset import WindowDataset
from robolearn.data.store import read_info

B, TO, TP = 256, 2, 16


def ours_ram(path, n_batches):
    ds = WindowDataset(path, To=TO, Tp=TP, split=None)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(n_batches):
        ds.sample(B, rng)
    return n_batches * B / (time.perf_counter() - t)


def ours_lazy(path, n_batches):
    ds = WindowDataset(path, To=TO, Tp=TP, split=None, in_ram=False)
    dl = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, collate_fn=WindowDataset.collate)
    it, t, n = iter(dl), time.perf_counter(), 0
    for _ in range(n_batches):
        n += next(it)["action"].shape[0]
    return n / (time.perf_counter() - t)


def robomimic_seq(path, n_batches):
    from robomimic.utils import obs_utils
    from robomimic.utils.dataset import SequenceDataset

    keys = sorted(read_info(path).obs_keys)
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": keys, "rgb": []}})
    ds = SequenceDataset(hdf5_path=str(path), obs_keys=keys, dataset_keys=("actions",), seq_length=TP,
                         frame_stack=TO, pad_seq_length=True, pad_frame_stack=True, hdf5_cache_mode="low_dim",
                         hdf5_use_swmr=True, filter_by_attribute=None)
    dl = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, num_workers=0)
    it, t, n = iter(dl), time.perf_counter(), 0
    for _ in range(n_batches):
        n += next(it)["actions"].shape[0]
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default="datasets/pusht.hdf5")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batches", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for name, fn, nb in (("robolearn (RAM, batched gather)", ours_ram, a.batches * 10),
                         ("robolearn (lazy h5py, DataLoader)", ours_lazy, max(2, a.batches // 10)),
                         ("robomimic SequenceDataset (low_dim cache)", robomimic_seq, a.batches)):
        try:
            rows[name] = statistics.median(fn(a.file, nb) for _ in range(a.runs))
        except ImportError as e:
            print(f"{name}: skipped ({e})")
    info = read_info(a.file)
    print(f"\n{a.file}: {len(info.demos)} episodes, {sum(info.lengths.values())} steps; windows To={TO}, Tp={TP}, "
          f"batch {B}; median of {a.runs} runs\n")
    ref = rows.get("robomimic SequenceDataset (low_dim cache)")
    print("| loader | windows/s | vs robomimic |\n|---|---:|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:,.0f} | {'' if not ref else f'{v / ref:.1f}x'} |")


if __name__ == "__main__":
    main()
