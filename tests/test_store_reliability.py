"""The episode store under stress: two writers, the wrong task, overwrite that fails, a full disk, big stores,
NaN observations (each a defect a user hit; see robolearn/data/store.py for the design)."""

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_episode, write_store
from gymnasium import spaces

import robolearn.data.store as store
from robolearn.data.store import EpisodeWriter, StoreError, iter_episodes, journal_dir, read_info

ENV = "robolearn/Test-v0"


def spaces_for(ep, act_dim=None):
    obs = spaces.Dict(
        {
            k: spaces.Box(0, 255, v.shape[1:], v.dtype)
            if v.dtype == np.uint8
            else spaces.Box(-np.inf, np.inf, v.shape[1:], v.dtype)
            for k, v in ep.obs.items()
        }
    )
    return obs, spaces.Box(-1, 1, (act_dim or ep.actions.shape[1],), np.float32)


def new_writer(path, ep=None, env_id=ENV, env_kwargs=None, **kw):
    obs, act = spaces_for(ep or make_episode())
    return EpisodeWriter(
        path, env_id, {"obs_mode": "state"} if env_kwargs is None else env_kwargs, obs, act, **kw
    )


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def side_files(folder: Path, keep: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != keep)


def run_py(code: str, *args, timeout=120, **kw) -> subprocess.CompletedProcess:
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )


# ---------------------------------------------------------------------------------- 1. one writer at a time
def test_second_writer_fails_at_once_while_the_first_is_open(tmp_path):
    p = tmp_path / "same.hdf5"
    w = new_writer(p)
    w.append(make_episode(seed=0))
    with pytest.raises(StoreError) as e:
        new_writer(p)
    msg = str(e.value)
    assert str(p) in msg and f"pid {os.getpid()}" in msg and "Fix:" in msg and "close()" in msg
    w.append(make_episode(seed=1))  # the refused writer disturbed nothing
    w.close()
    with new_writer(p) as w2:  # free again after close
        assert w2.append(make_episode(seed=2)) == "demo_2"
    assert read_info(p, validate=True).demos == ["demo_0", "demo_1", "demo_2"]
    assert side_files(tmp_path, "same.hdf5") == []  # lock and journal folder go away with the last writer


HOLDER = """
import sys
from conftest import make_episode
from test_store_reliability import new_writer
w = new_writer(sys.argv[1])
for i in range(3):
    w.append(make_episode(seed=i))
print("ready", flush=True)
sys.stdin.readline()
w.close()
print("closed", flush=True)
"""


def test_second_writer_in_another_process_is_refused_with_its_pid(tmp_path):
    p = tmp_path / "same.hdf5"
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(p)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as e:
            new_writer(p)
        msg = str(e.value)
        assert str(p) in msg and "another process" in msg and f"pid {proc.pid}" in msg
        assert "wait for it" in msg and "out=" in msg
        # readers are never blocked by a writer
        assert len(read_info(p).demos) >= 1
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait(timeout=30)
    with new_writer(p) as w:
        assert w.append(make_episode(seed=9)) == "demo_3"
    assert len(read_info(p, validate=True).demos) == 4


CONCURRENT = """
import sys, time
from conftest import make_episode
from test_store_reliability import new_writer
from robolearn.data.store import StoreError
time.sleep(float(sys.argv[2]))
try:
    w = new_writer(sys.argv[1])
except StoreError as e:
    print("refused", e)
    sys.exit(3)
for i in range(20):
    w.append(make_episode(seed=i))
w.close()
print("kept 20")
"""


def test_two_recorders_at_once_never_lose_episodes(tmp_path):
    """The reported scenario: two writers started together on one file. One records, the other refuses at
    once; the file holds exactly what the one that reported success wrote."""
    p = tmp_path / "same.hdf5"
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(p), "0"], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outs = [(q.wait(timeout=120), q.stdout.read()) for q in procs]
    kept = sum(20 for rc, out in outs if rc == 0 and "kept 20" in out)
    refused = [out for rc, out in outs if rc == 3]
    assert len(read_info(p, validate=True).demos) == kept
    # either both ran one after the other (40) or one was refused with the other's pid
    assert kept == 40 or (kept == 20 and len(refused) == 1 and "another process (pid" in refused[0])


# ---------------------------------------------------------------------------------- 2. same task only
@pytest.mark.parametrize(
    "change, words",
    [
        ({"env_id": "robolearn/PushT-v0"}, ["env_id: stored 'robolearn/Test-v0', new 'robolearn/PushT-v0'"]),
        ({"env_kwargs": {"obs_mode": "image"}}, ["obs_mode", "stored 'state'", "new 'image'"]),
        ({"obs": {"pos": 5}}, ["observation space", "obs/pos: stored (4,) float32, new (5,) float32"]),
        ({"obs": {"extra": 3}}, ["observation space", "obs keys not in the store: ['extra']"]),
        ({"act_dim": 4}, ["action space: stored Box(shape=(3,)", "new Box(shape=(4,)"]),
    ],
)
def test_appending_another_task_is_refused_before_anything_is_written(tmp_path, change, words):
    p = tmp_path / "lift.hdf5"
    write_store(p, n=3)
    before = digest(p)
    ep = make_episode()
    obs, act = spaces_for(ep, change.get("act_dim"))
    for k, d in change.get("obs", {}).items():
        obs = spaces.Dict({**obs.spaces, k: spaces.Box(-np.inf, np.inf, (d,), np.float32)})
    with pytest.raises(StoreError) as e:
        EpisodeWriter(p, change.get("env_id", ENV), change.get("env_kwargs", {"obs_mode": "state"}), obs, act)
    msg = str(e.value)
    for w in [str(p), "nothing was written", "Fix:", "out=", "overwrite=true", *words]:
        assert w in msg, (w, msg)
    assert digest(p) == before
    assert side_files(tmp_path, "lift.hdf5") == []


def test_record_of_another_env_into_a_store_is_refused(tmp_path):
    from robolearn.config import RecordConfig
    from robolearn.recording import record

    out = tmp_path / "lift.hdf5"
    record(RecordConfig(env="robolearn/Lift-v0", episodes=1, out=str(out)))
    before = digest(out)
    with pytest.raises(
        StoreError, match=r"env_id: stored 'robolearn/Lift-v0', new 'robolearn/PushT-v0'.*Fix"
    ):
        record(RecordConfig(env="robolearn/PushT-v0", episodes=1, out=str(out)))
    with pytest.raises(StoreError, match=r"reward_type: stored 'dense', new 'sparse'"):
        record(RecordConfig(env="robolearn/Lift-v0", episodes=1, out=str(out), reward_type="sparse"))
    assert digest(out) == before


def _robomimic_file(p: Path, env_name="Lift", obs_key="robot0_eef_pos", dim=3, act=7, n=2):
    rng = np.random.default_rng(0)
    with h5py.File(p, "w") as f:
        d = f.create_group("data")
        d.attrs["env_args"] = json.dumps(
            {"env_name": env_name, "type": 1, "env_kwargs": {"control_freq": 20}}
        )
        for i in range(n):
            g = d.create_group(f"demo_{i}")
            g["actions"] = rng.uniform(-1, 1, (10, act)).astype(np.float32)
            g.create_group("obs")[obs_key] = rng.normal(size=(10, dim)).astype(np.float32)
            g.create_group("next_obs")[obs_key] = rng.normal(size=(10, dim)).astype(np.float32)
            g["rewards"] = np.zeros(10, np.float32)
            g["dones"] = np.zeros(10, np.uint8)
            g.attrs["num_samples"] = 10
        d.attrs["total"] = 10 * n
        f.create_group("mask")["train"] = np.array([f"demo_{i}" for i in range(n)], dtype="S")


def test_foreign_store_gets_the_checks_its_attrs_allow(tmp_path):
    p = tmp_path / "rm.hdf5"
    _robomimic_file(p)
    before = digest(p)
    with pytest.raises(StoreError, match="env_id: stored 'Lift', new 'robolearn/Lift-v0'"):
        EpisodeWriter(p, "robolearn/Lift-v0", {})
    w = EpisodeWriter(p, "Lift", {})  # no spaces recorded: checked against its episodes instead
    with pytest.raises(StoreError, match=r"obs keys missing: \['robot0_eef_pos'\].*nothing was written"):
        w.append(make_episode(T=10, act_dim=7))
    w.close()
    assert digest(p) == before
    obs = spaces.Dict({"pos": spaces.Box(-1, 1, (3,), np.float32)})
    with pytest.raises(StoreError, match="observation space"):
        EpisodeWriter(p, "Lift", {}, obs_space=obs)
    with pytest.raises(StoreError, match="the stored episodes have 7-D actions"):
        EpisodeWriter(p, "Lift", {}, action_space=spaces.Box(-1, 1, (3,), np.float32))
    assert digest(p) == before
    # a matching episode goes in, and the old fixed-size mask becomes a resizable one robomimic still reads
    e = make_episode(T=10, act_dim=7)
    e.obs = {"robot0_eef_pos": e.obs["pos"][:, :3]}
    e.next_obs = {"robot0_eef_pos": e.next_obs["pos"][:, :3]}
    with EpisodeWriter(p, "Lift", {}) as w:
        for _ in range(3):
            w.append(e)
    info = read_info(p, validate=True)
    assert info.demos == info.masks["train"] == [f"demo_{i}" for i in range(5)]
    with h5py.File(p, "r") as f:
        assert f["mask/train"].maxshape == (None,) and f["data"].attrs["total"] == 50


# ---------------------------------------------------------------------------------- 3. overwrite keeps the old
def test_overwrite_replaces_only_when_committed(tmp_path):
    p = tmp_path / "demos.hdf5"
    write_store(p, n=5)
    before = digest(p)
    w = new_writer(p, overwrite=True)
    for i in range(3):
        w.append(make_episode(seed=100 + i))
    assert digest(p) == before and len(read_info(p).demos) == 5  # nothing visible before the commit
    where = w.close(commit=False)
    assert where == w.partial == tmp_path / "demos.partial.hdf5"
    assert digest(p) == before
    assert [e["attrs"]["seed"] for _, e in iter_episodes(where)] == [100, 101, 102]
    # an exception inside `with` is an abort too
    with pytest.raises(RuntimeError, match="expert exploded"):
        with new_writer(p, overwrite=True) as w:
            w.append(make_episode(seed=200))
            raise RuntimeError("expert exploded")
    assert digest(p) == before and [e["attrs"]["seed"] for _, e in iter_episodes(where)] == [200]
    # a complete recording replaces the store atomically, and the .partial file is gone
    with new_writer(p, overwrite=True) as w:
        w.append(make_episode(seed=300))
        w.append(make_episode(seed=301))
    assert [e["attrs"]["seed"] for _, e in iter_episodes(p)] == [300, 301]
    assert side_files(tmp_path, "demos.hdf5") == []


def test_record_overwrite_that_fails_keeps_the_old_store(tmp_path, monkeypatch):
    import robolearn.recording as rec
    from robolearn.config import RecordConfig

    out = tmp_path / "lift.hdf5"
    rec.record(RecordConfig(env="robolearn/Lift-v0", episodes=2, out=str(out)))
    before = digest(out)
    real, calls = rec.run_episode, []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the simulation exploded")
        return real(*a, **kw)

    monkeypatch.setattr(rec, "run_episode", failing)
    with pytest.raises(RuntimeError) as e:
        rec.record(RecordConfig(env="robolearn/Lift-v0", episodes=5, out=str(out), overwrite=True, seed=50))
    partial = tmp_path / "lift.partial.hdf5"
    assert (
        "the simulation exploded" in str(e.value)
        and str(partial) in str(e.value)
        and "unchanged" in str(e.value)
    )
    assert digest(out) == before
    assert [e["attrs"]["seed"] for _, e in iter_episodes(partial)] == [50, 51]

    def interrupted(*a, **kw):  # Ctrl-C after two episodes: summary says where they are
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(rec, "run_episode", interrupted)
    s = rec.record(RecordConfig(env="robolearn/Lift-v0", episodes=5, out=str(out), overwrite=True, seed=70))
    assert (
        s["interrupted"]
        and s["episodes_kept"] == 2
        and s["file"] == str(partial)
        and "unchanged" in s["note"]
    )
    assert digest(out) == before
    assert [e["attrs"]["seed"] for _, e in iter_episodes(partial)] == [70, 71]
    monkeypatch.setattr(rec, "run_episode", real)
    s = rec.record(RecordConfig(env="robolearn/Lift-v0", episodes=1, out=str(out), overwrite=True, seed=90))
    assert s["file"] == str(out) and "note" not in s and not partial.exists()
    assert [e["attrs"]["seed"] for _, e in iter_episodes(out)] == [90]


KILLED_OVERWRITE = """
import os, signal, sys
from conftest import make_episode
from test_store_reliability import new_writer
w = new_writer(sys.argv[1], overwrite=True)
for i in range(4):
    w.append(make_episode(seed=40 + i))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_overwrite_keeps_old_store_and_finished_episodes(tmp_path):
    p = tmp_path / "demos.hdf5"
    write_store(p, n=3)
    before = digest(p)
    r = run_py(KILLED_OVERWRITE, p)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert digest(p) == before
    partial = tmp_path / "demos.partial.hdf5"
    assert [e["attrs"]["seed"] for _, e in iter_episodes(partial)] == [
        40,
        41,
        42,
        43,
    ]  # recovered from its journal


# ---------------------------------------------------------------------------------- 4. disk full
FILL = """
import sys
from pathlib import Path
from conftest import make_episode
import robolearn.data.store as store
from test_store_reliability import new_writer
if sys.argv[2] == "h5py":  # skip the free-space pre-check, so that HDF5 itself runs out of space
    store._episode_bytes = lambda ep: 0
w = new_writer(sys.argv[1], make_episode(image=True))
n = 0
try:
    while True:
        w.append(make_episode(T=40, seed=n, image=True))
        n += 1
except store.StoreError as e:
    print("APPEND", n, e, flush=True)
try:
    w.close()
    print("CLOSED", flush=True)
except store.StoreError as e:
    print("CLOSE", e, flush=True)
"""


@pytest.fixture
def tiny_disk(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a 3 MB tmpfs")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


@pytest.mark.parametrize("where", ["precheck", "h5py"])
def test_disk_full_gives_a_clear_error_and_a_valid_store(tiny_disk, where):
    p = tiny_disk / "demos.hdf5"
    r = run_py(FILL, p, where)
    assert r.returncode == 0, r.stdout + r.stderr  # no segfault, no traceback
    assert "Traceback" not in r.stderr and "Segmentation" not in r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("APPEND"))
    appended = int(line.split()[1])
    assert appended > 5
    for w in (str(p), "disk is full", "MB", "free", "needs about", "Fix: free space", "out="):
        assert w in line, (w, line)
    # nothing half-written is left, and every episode whose append returned is in the store or its journal
    assert not [q for q in tiny_disk.rglob("*.tmp")], list(tiny_disk.rglob("*"))
    info = read_info(p, validate=True)
    pending = len(store._entries(journal_dir(p)))
    assert len(info.demos) + pending == appended
    assert info.demos == [f"demo_{i}" for i in range(len(info.demos))]
    if pending:  # close could not merge them: it said so, and where they are
        close = next(x for x in r.stdout.splitlines() if x.startswith(("CLOSE", "CLOSED")))
        assert "safe in" in close and str(journal_dir(p)) in close
        # once there is space again, the next reader merges them: nothing was lost
        subprocess.run(["mount", "-o", "remount,size=30m", str(tiny_disk)], check=True)
        assert read_info(p, validate=True).demos == [f"demo_{i}" for i in range(appended)]
    else:
        assert "CLOSED" in r.stdout
    assert not [q for q in tiny_disk.rglob("*.tmp")]


def test_disk_full_message_names_free_and_needed_space(tmp_path, monkeypatch):
    """Without a tmpfs: the message the pre-check gives when the disk has less room than the episode."""
    p = tmp_path / "demos.hdf5"
    w = new_writer(p)
    w.append(make_episode(seed=0))
    before = digest(p)
    monkeypatch.setattr(store, "_free", lambda d: 1000)
    with pytest.raises(StoreError) as e:
        w.append(make_episode(seed=1))
    assert "the disk is full" in str(e.value) and "0.0 MB is free" in str(e.value) and "out=" in str(e.value)
    monkeypatch.undo()
    assert digest(p) == before and w.append(make_episode(seed=1)) == "demo_1"
    w.close()


# ---------------------------------------------------------------------------------- 5. constant cost per episode
def test_appends_do_not_copy_the_store_each_time(tmp_path, monkeypatch):
    p = tmp_path / "big.hdf5"
    w = new_writer(p)
    for i in range(400):
        w.append(make_episode(seed=i))
    close_(w)
    copies = []
    real = shutil.copyfile
    monkeypatch.setattr(shutil, "copyfile", lambda a, b, **kw: copies.append(a) or real(a, b, **kw))
    w = new_writer(p)
    for i in range(60):
        w.append(make_episode(seed=1000 + i))
    close_(w)
    assert len(copies) <= 2, f"{len(copies)} copies of the store for 60 appends"  # <= 1 merge + close
    info = read_info(p, validate=True)
    assert info.demos == [f"demo_{i}" for i in range(460)]
    assert info.masks["valid"] == [f"demo_{i}" for i in range(9, 460, 10)]


def close_(w) -> None:  # (so that these two also run, and fail for their own reason, on the old writer)
    getattr(w, "close", lambda: None)()


def repacked_size(p: Path, tmp: Path) -> int:
    out = tmp / "repacked.hdf5"
    with h5py.File(p, "r") as src, h5py.File(out, "w") as dst:
        for k in src:
            src.copy(src[k], dst, name=k)
    n = out.stat().st_size
    out.unlink()
    return n


def test_recorded_store_has_little_dead_space(tmp_path):
    p = tmp_path / "grown.hdf5"
    w = new_writer(p)
    for i in range(300):
        w.append(make_episode(seed=i))
    close_(w)
    with h5py.File(p, "r") as f:
        assert f["mask/train"].maxshape == (None,)  # appended to, never deleted and recreated
    dead = 1 - repacked_size(p, tmp_path) / p.stat().st_size
    assert dead <= 0.10, f"{dead:.1%} of the file is dead space"


def test_robomimic_reads_a_store_grown_by_merges(tmp_path):
    pytest.importorskip("robomimic", reason="robomimic not installed (setup installs it with --no-deps)")
    from robomimic.utils import obs_utils
    from robomimic.utils.dataset import SequenceDataset

    p = tmp_path / "grown.hdf5"
    eps = [make_episode(T=12 + i % 5, seed=i) for i in range(25)]
    w = new_writer(p)
    for e in eps[:12]:
        w.append(e)
    w.close()
    with new_writer(p) as w:  # a second session: old masks appended to
        for e in eps[12:]:
            w.append(e)
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["pos", "vel"], "rgb": []}})
    for split, idx in (("train", [i for i in range(25) if i % 10 != 9]), ("valid", [9, 19])):
        ds = SequenceDataset(
            hdf5_path=str(p),
            obs_keys=("pos", "vel"),
            dataset_keys=("actions",),
            seq_length=1,
            frame_stack=1,
            pad_seq_length=True,
            hdf5_cache_mode="low_dim",
            hdf5_use_swmr=True,
            filter_by_attribute=split,
        )
        assert len(ds) == sum(len(eps[i]) for i in idx)


KILL_IN_MERGE = """
import os, signal, sys
import robolearn.data.store as store
from conftest import make_episode
from test_store_reliability import new_writer
stage = sys.argv[2]
real_replace, merges = os.replace, []
def replace(a, b):  # the 5th merge (several journaled episodes by then) is killed
    merging = str(a).endswith("merge.tmp")
    merges.append(1) if merging else None
    if merging and len(merges) == 5 and stage == "before_rename":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(a, b)
    if merging and len(merges) == 5 and stage == "after_rename":
        os.kill(os.getpid(), signal.SIGKILL)
store.os.replace = replace
w = new_writer(sys.argv[1])
for i in range(200):
    w.append(make_episode(seed=i))
    print(i, flush=True)
"""


@pytest.mark.parametrize("stage", ["before_rename", "after_rename"])
def test_kill_during_a_merge_loses_and_duplicates_nothing(tmp_path, stage):
    p = tmp_path / "k.hdf5"
    r = run_py(KILL_IN_MERGE, p, stage)
    assert r.returncode == -signal.SIGKILL, r.stderr
    returned = len(r.stdout.split())  # appends that returned before the kill
    assert returned >= 6
    info = read_info(p, validate=True)  # recovers the journal; idempotent after a rename that completed
    assert info.demos == [f"demo_{i}" for i in range(returned + 1)] or info.demos == [
        f"demo_{i}" for i in range(returned)
    ]
    assert sorted(sum(info.masks.values(), []), key=lambda s: int(s[5:])) == info.demos
    assert [e["attrs"]["seed"] for _, e in iter_episodes(p)] == list(range(len(info.demos)))
    assert side_files(tmp_path, "k.hdf5") == []


UNCLOSED = """
import sys
from conftest import make_episode
from test_store_reliability import new_writer
w = new_writer(sys.argv[1])
for i in range(int(sys.argv[2])):
    w.append(make_episode(seed=i))
if sys.argv[3] == "exit":
    sys.exit(0)  # never closed: atexit merges
import os
os._exit(0)  # no cleanup at all, like a kill: the next reader recovers the journal
"""


@pytest.mark.parametrize("how", ["exit", "_exit"])
def test_unclosed_writer_loses_nothing(tmp_path, how):
    p = tmp_path / "u.hdf5"
    r = run_py(UNCLOSED, p, 30, how)
    assert r.returncode == 0, r.stderr
    if how == "exit":
        assert side_files(tmp_path, "u.hdf5") == []  # merged at exit
    else:
        assert store._entries(journal_dir(p))  # left for the next reader
    assert read_info(p, validate=True).demos == [f"demo_{i}" for i in range(30)]
    assert side_files(tmp_path, "u.hdf5") == []


def test_readers_in_the_writers_process_see_every_episode(tmp_path):
    p = tmp_path / "live.hdf5"
    w = new_writer(p)
    for i in range(40):
        w.append(make_episode(seed=i))
        if i in (0, 7, 39):
            assert len(read_info(p).demos) == i + 1
    assert len(list(iter_episodes(p))) == 40
    w.close()


def test_reader_that_cannot_merge_warns_and_reads_the_store_file(tmp_path, monkeypatch, caplog):
    p = tmp_path / "ro.hdf5"
    r = run_py(UNCLOSED, p, 30, "_exit")
    assert r.returncode == 0, r.stderr
    n_file = len(h5py.File(p, "r")["data"])
    assert n_file < 30

    def readonly(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store._Lock, "try_acquire", readonly)
    with caplog.at_level("WARNING"):
        assert len(read_info(p, validate=True).demos) == n_file
    assert "not merged" in caplog.text and "robolearn inspect" in caplog.text
    monkeypatch.undo()
    assert len(read_info(p).demos) == 30


def _forked_reader(path, q):
    q.put(len(read_info(path).demos))


def test_forked_worker_never_merges_the_parents_journal(tmp_path):
    """DataLoader workers fork with the writer open: they read the store file, the parent keeps its lock."""
    p = tmp_path / "f.hdf5"
    w = new_writer(p)
    for i in range(30):
        w.append(make_episode(seed=i))
    pending = len(store._entries(journal_dir(p)))
    assert pending
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_forked_reader, args=(p, q))
    proc.start()
    seen = q.get(timeout=60)
    proc.join(timeout=60)
    assert seen == 30 - pending and len(store._entries(journal_dir(p))) == pending
    with pytest.raises(StoreError, match="is writing"):
        new_writer(p)  # the parent still holds the lock
    w.close()
    assert len(read_info(p).demos) == 30


# ---------------------------------------------------------------------------------- 6. NaN / short next_obs
def _edit(p, fn):
    with h5py.File(p, "r+") as f:
        fn(f["data/demo_1"])


def _set(g, key, step, value):
    a = g[key][()]
    a[step, 0] = value
    g[key][...] = a


def _shorten(g, key):
    a = g[key][()]
    del g[key]
    g[key] = a[:-1]


@pytest.mark.parametrize(
    "edit, words, needs_validate",
    [
        (lambda g: _set(g, "obs/pos", 4, np.nan), ["demo_1", "obs/pos", "NaN/inf", "step 4"], True),
        (lambda g: _set(g, "next_obs/vel", 2, np.inf), ["demo_1", "next_obs/vel", "NaN/inf", "step 2"], True),
        (lambda g: _shorten(g, "next_obs/pos"), ["demo_1", "next_obs/pos", "steps but actions has"], False),
    ],
)
def test_bad_observations_fail_validation_and_inspect(tmp_path, capsys, edit, words, needs_validate):
    from robolearn.cli import main

    p = tmp_path / "bad.hdf5"
    write_store(p, n=3)
    _edit(p, edit)
    with pytest.raises(StoreError) as e:
        read_info(p, validate=True)
    for w in [str(p), "Fix:", *words]:
        assert w in str(e.value), (w, str(e.value))
    if not needs_validate:
        with pytest.raises(StoreError, match="next_obs"):
            read_info(p)  # shapes alone tell
    capsys.readouterr()
    assert main(["inspect", str(p), "--validate"]) != 0
    out = capsys.readouterr()
    assert "demo_1" in out.out + out.err and "Traceback" not in out.out + out.err


def test_writer_refuses_nan_observations(tmp_path):
    p = tmp_path / "n.hdf5"
    w = new_writer(p)
    e = make_episode()
    e.next_obs = {k: v.copy() for k, v in e.next_obs.items()}  # (views of obs in make_episode)
    e.next_obs["pos"][3, 1] = np.nan
    with pytest.raises(StoreError, match=r"next_obs.*NaN.*step 3"):
        w.append(e)
    assert not p.exists()
    w.close()
