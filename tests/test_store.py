"""The episode store: round trip, robomimic compatibility, bad input, crash safety, the window dataset."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from conftest import make_episode, write_store

from robolearn.data.dataset import WindowDataset
from robolearn.data.normalizer import Normalizer
from robolearn.data.store import EpisodeWriter, StoreError, iter_episodes, read_info


def test_round_trip_identical_arrays(store):
    path, eps = store
    got = dict(iter_episodes(path))
    assert list(got) == [f"demo_{i}" for i in range(len(eps))]
    for i, e in enumerate(eps):
        g = got[f"demo_{i}"]
        for k in e.obs:
            np.testing.assert_array_equal(g["obs"][k], e.obs[k])
            np.testing.assert_array_equal(g["next_obs"][k], e.next_obs[k])
        for k in ("actions", "rewards", "dones", "states", "interventions", "policy_actions"):
            np.testing.assert_array_equal(g[k], getattr(e, k))
        assert g["attrs"]["source"] == "scripted" and g["attrs"]["seed"] == i
        assert g["attrs"]["num_samples"] == len(e)


def test_layout_matches_robomimic_contract(store):
    path, eps = store
    with h5py.File(path, "r") as f:
        data = f["data"]
        assert data.attrs["total"] == sum(len(e) for e in eps)
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "robolearn/Test-v0" and "env_kwargs" in env_args
        assert data.attrs["format_version"] == "robolearn-hdf5/1"
        assert json.loads(data.attrs["action_space"])["shape"] == [3]
        train = [x.decode() for x in f["mask/train"][()]]
        valid = [x.decode() for x in f["mask/valid"][()]]
        assert sorted(train + valid, key=lambda s: int(s[5:])) == [f"demo_{i}" for i in range(len(eps))]
        assert valid == ["demo_9"]


def test_append_continues_numbering(store):
    path, eps = store
    w = EpisodeWriter(path, "robolearn/Test-v0")
    assert w.append(make_episode(seed=99)) == f"demo_{len(eps)}"
    assert len(read_info(path).demos) == len(eps) + 1


def test_reading_never_modifies_the_file(store):
    path, _ = store
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    read_info(path, validate=True)
    list(iter_episodes(path))
    WindowDataset(path, To=2, Tp=4).get_batch(np.arange(5))
    WindowDataset(path, To=2, Tp=4, in_ram=False).get_batch(np.arange(5))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


# ---------------------------------------------------------------------------------- bad input
def _corrupt(path, how):
    with h5py.File(path, "r+") as f:
        g = f["data/demo_1"]
        if how == "missing_actions":
            del g["actions"]
        elif how == "length_mismatch":
            a = g["actions"][()]
            del g["actions"]
            g["actions"] = a[:-2]
        elif how == "nan_actions":
            a = g["actions"][()]
            a[3, 1] = np.nan
            g["actions"][...] = a
        elif how == "inf_actions":
            a = g["actions"][()]
            a[0, 0] = np.inf
            g["actions"][...] = a
        elif how == "wrong_dtype":
            del g["actions"]
            g["actions"] = np.array([b"x"] * g.attrs["num_samples"] * 3).reshape(-1, 3)
        elif how == "wrong_shape":
            a = g["actions"][()]
            del g["actions"]
            g["actions"] = a[:, :2]
        elif how == "missing_obs":
            del g["obs"]


@pytest.mark.parametrize(
    "how, words",
    [
        ("missing_actions", ["demo_1", "actions", "Fix"]),
        ("length_mismatch", ["demo_1", "obs", "steps"]),
        ("nan_actions", ["demo_1", "actions", "NaN", "step 3"]),
        ("inf_actions", ["demo_1", "actions", "NaN/inf"]),
        ("wrong_dtype", ["demo_1", "actions", "dtype"]),
        ("wrong_shape", ["demo_1", "actions", "dimension"]),
        ("missing_obs", ["demo_1", "obs"]),
    ],
)
def test_bad_episode_is_named(store, how, words):
    path, _ = store
    _corrupt(path, how)
    before = path.read_bytes()
    with pytest.raises(StoreError) as e:
        read_info(path, validate=True)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert str(path) in str(e.value)
    assert path.read_bytes() == before  # reading changed nothing


def test_foreign_file(tmp_path):
    p = tmp_path / "foreign.hdf5"
    with h5py.File(p, "w") as f:
        f["x"] = [1, 2, 3]
    with pytest.raises(StoreError, match="no 'data' group.*convert"):
        read_info(p)


def test_truncated_and_garbage_files(store, tmp_path):
    path, _ = store
    t = tmp_path / "trunc.hdf5"
    t.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StoreError, match="truncated or corrupt"):
        read_info(t, validate=True)
    g = tmp_path / "garbage.hdf5"
    g.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="truncated or corrupt"):
        read_info(g)
    with pytest.raises(StoreError, match="no such file"):
        read_info(tmp_path / "missing.hdf5")


def test_empty_store(tmp_path):
    p = tmp_path / "empty.hdf5"
    with h5py.File(p, "w") as f:
        f.create_group("data")
    with pytest.raises(StoreError, match="no episodes"):
        read_info(p)


def test_writer_refuses_bad_episodes(tmp_path):
    w = EpisodeWriter(tmp_path / "x.hdf5", "robolearn/Test-v0")
    e = make_episode()
    e.actions[2, 0] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        w.append(e)
    e = make_episode()
    e.rewards = e.rewards[:-1]
    with pytest.raises(StoreError, match="rewards"):
        w.append(e)
    e = make_episode(source="alien")
    with pytest.raises(StoreError, match="source"):
        w.append(e)
    assert not (tmp_path / "x.hdf5").exists()  # nothing half-written


# ---------------------------------------------------------------------------------- crash safety
WRITER = r"""
import sys, numpy as np
from robolearn.data.store import Episode, EpisodeWriter
w = EpisodeWriter(sys.argv[1], "robolearn/Test-v0")
i = 0
while True:
    T = 50 + i % 7
    rng = np.random.default_rng(i)
    o = {"pos": rng.normal(size=(T, 4)).astype(np.float32),
         "image_front": rng.integers(0, 255, size=(T, 16, 16, 3), dtype=np.uint8)}
    w.append(Episode(obs=o, next_obs=o, actions=rng.uniform(-1, 1, (T, 3)).astype(np.float32),
                     rewards=np.zeros(T, np.float32), dones=np.zeros(T, np.uint8), seed=i))
    i += 1
    print(i, flush=True)
"""


def test_kill_at_random_instants_loses_at_most_one_episode(tmp_path):
    """SIGKILL/SIGTERM a writing subprocess at 50 random instants; the store stays valid. (Ctrl-C goes
    through the recorder's deferred handler: test_record_ctrl_c_keeps_finished_episodes.)"""
    rng = random.Random(0)
    path = tmp_path / "k.hdf5"
    total_kept = 0
    for _trial in range(50):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        # wait for the interpreter to get going, then kill at a random instant within a few appends
        first = proc.stdout.readline()
        assert first, "writer failed to start"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(rng.choice([signal.SIGKILL, signal.SIGTERM]))
        proc.wait(timeout=60)  # a writer that hangs on a signal fails here instead of stalling the suite
        info = read_info(path, validate=True)
        n = len(info.demos)
        assert n >= total_kept + 1  # every episode the writer reported finished is still there
        assert info.demos == [f"demo_{i}" for i in range(n)]
        total_kept = n
    leftovers = [p for p in tmp_path.iterdir() if p.name != "k.hdf5"]
    # temp files of killed writers are cleaned by the next writer; at most the last one can remain
    assert len(leftovers) <= 1


# ---------------------------------------------------------------------------------- windows
def test_windows_pad_at_edges(tmp_path):
    p = tmp_path / "w.hdf5"
    eps = write_store(p, n=3)
    ds = WindowDataset(p, To=3, Tp=5, split=None)
    assert len(ds) == sum(len(e) for e in eps)
    # the first window of episode 1: obs padded with its first obs, actions its first 5
    i = len(eps[0])
    b = ds[i]
    e = eps[1]
    np.testing.assert_array_equal(b["obs"]["pos"].numpy(), e.obs["pos"][[0, 0, 0]])
    np.testing.assert_array_equal(b["action"].numpy(), e.actions[:5])
    # the last window of episode 1: actions padded with its last action
    b = ds[i + len(e) - 1]
    np.testing.assert_array_equal(b["action"].numpy(), e.actions[[-1] * 5])
    np.testing.assert_array_equal(b["obs"]["pos"].numpy(), e.obs["pos"][-3:])


def test_ram_and_lazy_modes_agree(store):
    path, _ = store
    a = WindowDataset(path, To=2, Tp=8)
    b = WindowDataset(path, To=2, Tp=8, in_ram=False)
    idx = np.random.default_rng(0).integers(0, len(a), 64)
    x, y = a.get_batch(idx), b.get_batch(idx)
    for k in x["obs"]:
        torch.testing.assert_close(x["obs"][k], y["obs"][k])
    torch.testing.assert_close(x["action"], y["action"])


def test_dataloader_workers(store):
    path, _ = store
    ds = WindowDataset(path, To=2, Tp=4, in_ram=False)
    dl = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, collate_fn=WindowDataset.collate,
                                     shuffle=True)
    n = sum(b["action"].shape[0] for b in dl)
    assert n == len(ds)


def test_split_and_filters(tmp_path):
    p = tmp_path / "f.hdf5"
    write_store(p, n=12)
    w = EpisodeWriter(p, "robolearn/Test-v0")
    w.append(make_episode(source="teleop", success=False, seed=50))
    tr = WindowDataset(p, split="train")
    va = WindowDataset(p, split="valid")
    assert set(tr.demos).isdisjoint(va.demos) and va.demos == ["demo_9"]
    assert WindowDataset(p, split=None, sources=["teleop"]).demos == ["demo_12"]
    assert "demo_12" not in WindowDataset(p, split=None, success_only=True).demos
    with pytest.raises(StoreError, match="no episodes match"):
        WindowDataset(p, split=None, sources=["dagger"])
    spec = tr.spec()
    assert spec["action_dim"] == 3 and spec["obs"]["pos"]["shape"] == [4]


def test_normalizer_from_dataset_travels_in_state_dict(store):
    path, _ = store
    ds = WindowDataset(path)
    norm = Normalizer.from_data({"action": ds.actions, **ds.obs}, mode="minmax")
    sd = norm.state_dict()
    assert any("action" in k for k in sd)
    x = torch.from_numpy(ds.actions)
    y = norm.normalize("action", x)
    assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    torch.testing.assert_close(norm.unnormalize("action", y), x, atol=1e-5, rtol=1e-5)


def test_robomimic_sequence_dataset_reads_our_file(store):
    rm = pytest.importorskip("robomimic", reason="robomimic not installed (setup installs it with --no-deps)")
    from robomimic.utils import obs_utils
    from robomimic.utils.dataset import SequenceDataset

    path, eps = store
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["pos", "vel"], "rgb": []}})
    ds = SequenceDataset(hdf5_path=str(path), obs_keys=("pos", "vel"), dataset_keys=("actions", "rewards", "dones"),
                         seq_length=4, frame_stack=1, pad_seq_length=True, hdf5_cache_mode="low_dim",
                         hdf5_use_swmr=True, filter_by_attribute="train")
    assert rm is not None and len(ds) == sum(len(e) for i, e in enumerate(eps) if i != 9)
    item = ds[0]
    np.testing.assert_allclose(item["actions"], eps[0].actions[:4])
    np.testing.assert_allclose(item["obs"]["pos"][0], eps[0].obs["pos"][0])


def test_we_read_a_robomimic_written_file(tmp_path):
    """A file with only robomimic's keys (no robolearn attrs, no masks) reads and windows."""
    p = tmp_path / "rm.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(p, "w") as f:
        d = f.create_group("data")
        d.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        tot = 0
        for i in range(3):
            g = d.create_group(f"demo_{i}")
            T = 15
            g["actions"] = rng.uniform(-1, 1, (T, 7))
            g.create_group("obs")["robot0_eef_pos"] = rng.normal(size=(T, 3))
            g.create_group("next_obs")["robot0_eef_pos"] = rng.normal(size=(T, 3))
            g["rewards"] = np.zeros(T)
            g["dones"] = np.zeros(T)
            g["states"] = rng.normal(size=(T, 32))
            g.attrs["num_samples"] = T
            tot += T
        d.attrs["total"] = tot
    info = read_info(p, validate=True)
    assert info.env_id == "Lift" and info.action_dim == 7
    ds = WindowDataset(p, To=2, Tp=4)
    b = ds.get_batch(np.arange(len(ds)))
    assert b["action"].shape == (45, 4, 7) and b["action"].dtype == torch.float32


def test_append_checks_action_space_only_when_recorded(tmp_path):
    from gymnasium import spaces

    p = tmp_path / "a.hdf5"
    EpisodeWriter(p, "robolearn/Test-v0").append(make_episode())  # no spaces recorded
    EpisodeWriter(p, "robolearn/Test-v0", action_space=spaces.Box(-1, 1, (3,), np.float32)).append(make_episode())
    q = tmp_path / "b.hdf5"
    EpisodeWriter(q, "robolearn/Test-v0", action_space=spaces.Box(-1, 1, (3,), np.float32)).append(make_episode())
    with pytest.raises(StoreError, match="action space"):
        EpisodeWriter(q, "robolearn/Test-v0", action_space=spaces.Box(-1, 1, (4,), np.float32))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_record_ctrl_c_keeps_finished_episodes(tmp_path, sig):
    """The real recorder, interrupted like a person would: it stops cleanly, exit 128+signal, every finished
    episode in a valid file."""
    exe = os.path.join(os.path.dirname(sys.executable), "robolearn")
    out = tmp_path / "rec.hdf5"
    proc = subprocess.Popen([exe, "record", "env=robolearn/Lift-v0", "episodes=500", f"out={out}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and len(read_info(out).demos) >= 3):
        time.sleep(0.2)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig  # 130 for Ctrl-C, 143 for SIGTERM
    info = read_info(out, validate=True)
    assert 3 <= len(info.demos) < 500


def test_convert_minari_dataset(tmp_path, monkeypatch):
    """`robolearn convert` reads a Minari dataset from local storage (built here with minari's own writer)."""
    minari = pytest.importorskip("minari")
    import gymnasium as gym
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from robolearn.data.convert import convert_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(0)
    buffers = []
    for ep, T in enumerate((12, 7, 20)):
        o, _ = env.reset(seed=ep)
        obs, acts, rews = [o], [], []
        for _ in range(T):
            a = rng.uniform(-2, 2, size=1).astype(np.float32)
            o, r, *_ = env.step(a)
            obs.append(o), acts.append(a), rews.append(r)
        buffers.append(
            EpisodeBuffer(id=ep, seed=ep, observations=np.array(obs), actions=np.array(acts), rewards=rews,
                          terminations=[False] * T, truncations=[False] * (T - 1) + [True],
                          infos={"success": np.array([False] * (T - 1) + [ep == 1])})
        )
    with pytest.warns(UserWarning):  # minari asks for an author email and an eval env
        minari.create_dataset_from_buffers("test/pendulum-v0", buffers, env=env, algorithm_name="random")

    out = tmp_path / "pendulum.hdf5"
    s = convert_minari("test/pendulum-v0", str(out))
    assert s == {"file": str(out), "env": "Pendulum-v1", "episodes": 3, "steps": 39}
    info = read_info(out, validate=True)
    assert info.env_id == "Pendulum-v1" and len(info.demos) == 3
    got = dict(iter_episodes(out))
    for i, b in enumerate(buffers):
        g = got[f"demo_{i}"]
        np.testing.assert_allclose(g["actions"], b.actions)
        np.testing.assert_allclose(g["obs"]["state"], b.observations[:-1], rtol=1e-6)
        np.testing.assert_allclose(g["next_obs"]["state"], b.observations[1:], rtol=1e-6)
        np.testing.assert_allclose(g["rewards"], b.rewards, rtol=1e-6)
        assert g["attrs"]["success"] == (i == 1) and g["attrs"]["source"] == "policy"
    with pytest.raises(StoreError, match="not in local storage.*test/pendulum-v0"):
        convert_minari("test/missing-v0", str(tmp_path / "x.hdf5"))
