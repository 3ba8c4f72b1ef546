"""Files written by other tools (robomimic's own layout and dtypes) train and evaluate.

robomimic's writers (e.g. `dataset_states_to_obs.py`) store low-dim observations, actions and rewards as
float64, dones as int64, images as gzip-compressed uint8, and carry none of robolearn's attrs. The files
here are built with exactly that layout and those dtypes (not with our EpisodeWriter), checked with
robomimic's own reader, then trained on with `robolearn train` and evaluated with `robolearn eval`.
"""

import json

import h5py
import numpy as np
import pytest
import torch

from robolearn.data.dataset import WindowDataset
from robolearn.data.store import iter_episodes

ENV = "robolearn/Lift-v0"
ROBOMIMIC_GYM_TYPE = 2  # robomimic's EnvType.GYM_TYPE


def write_robomimic_file(
    path, episodes, env_name=ENV, env_kwargs=None, valid=(), image_keys=(), obs_dtype=None
):
    """episodes: list of dicts of arrays (obs/next_obs/actions/rewards/dones/states), as robomimic's
    dataset_states_to_obs.py writes them: np.array(list of float64) -> float64, dones int64, images gzip."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for i, ep in enumerate(episodes):
            g = data.create_group(f"demo_{i}")
            g.create_dataset("actions", data=np.asarray(ep["actions"], np.float64))
            g.create_dataset("states", data=np.asarray(ep["states"], np.float64))
            g.create_dataset("rewards", data=np.asarray(ep["rewards"], np.float64))
            g.create_dataset("dones", data=np.asarray(ep["dones"], np.int64))
            for grp in ("obs", "next_obs"):
                for k, v in ep[grp].items():
                    if k in image_keys:
                        g.create_dataset(f"{grp}/{k}", data=np.asarray(v, np.uint8), compression="gzip")
                    else:
                        dt = (obs_dtype or {}).get(k, np.float64)
                        g.create_dataset(f"{grp}/{k}", data=np.asarray(v).astype(dt))
            g.attrs["num_samples"] = len(ep["actions"])
            total += len(ep["actions"])
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(
            {"env_name": env_name, "type": ROBOMIMIC_GYM_TYPE, "env_kwargs": env_kwargs or {}}, indent=4
        )
        # as robomimic.utils.file_utils.create_hdf5_filter_key (split_train_val.py) writes masks
        names = [f"demo_{i}" for i in range(len(episodes))]
        f["mask/train"] = np.array([n for i, n in enumerate(names) if i not in valid], dtype="S")
        f["mask/valid"] = np.array([n for i, n in enumerate(names) if i in valid], dtype="S")


def assert_robomimic_reads(path, lowdim, rgb=(), n_train=None):
    """robomimic's own SequenceDataset accepts the file (its layout, masks and dtypes)."""
    pytest.importorskip("robomimic", reason="robomimic not installed (setup installs it with --no-deps)")
    from robomimic.utils import obs_utils
    from robomimic.utils.dataset import SequenceDataset

    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": list(lowdim), "rgb": list(rgb)}})
    keys = (*lowdim, *rgb)
    ds = SequenceDataset(
        hdf5_path=str(path),
        obs_keys=keys,
        dataset_keys=("actions", "rewards", "dones"),
        seq_length=4,
        frame_stack=1,
        pad_seq_length=True,
        hdf5_cache_mode="low_dim",
        hdf5_use_swmr=True,
        filter_by_attribute="train",
    )
    if n_train is not None:
        assert len(ds) == n_train
    item = ds[0]
    with h5py.File(path, "r") as f:
        first = f["mask/train"][0].decode()
        np.testing.assert_allclose(item["actions"], f[f"data/{first}/actions"][:4])
        for k in lowdim:
            np.testing.assert_allclose(item["obs"][k][0], f[f"data/{first}/obs/{k}"][0])
    return ds


@pytest.fixture(scope="module")
def robomimic_lift(tmp_path_factory):
    """Real Lift episodes from our scripted expert, rewritten with robomimic's layout and dtypes only."""
    from robolearn.cli import main

    d = tmp_path_factory.mktemp("peer")
    rec = d / "recorded.hdf5"
    assert main(["record", f"env={ENV}", "episodes=6", f"out={rec}"]) == 0
    eps = [ep for _, ep in iter_episodes(rec)]
    p = d / "robomimic_lift.hdf5"
    write_robomimic_file(p, eps, env_kwargs={"obs_mode": "state"}, valid=(5,))
    return p, eps


def test_robomimic_layout_and_dtypes(robomimic_lift):
    p, eps = robomimic_lift
    with h5py.File(p, "r") as f:
        data = f["data"]
        assert set(data.attrs) == {"total", "env_args"}  # nothing of robolearn's
        assert set(f.attrs) == set()
        g = data["demo_0"]
        assert set(g.attrs) == {"num_samples"}
        assert g["actions"].dtype == np.float64 and g["rewards"].dtype == np.float64
        assert g["dones"].dtype == np.int64 and g["states"].dtype == np.float64
        assert all(g["obs"][k].dtype == np.float64 for k in g["obs"])
        assert "interventions" not in g and "policy_actions" not in g
    lowdim = sorted(eps[0]["obs"])
    assert_robomimic_reads(p, lowdim, n_train=sum(len(e["actions"]) for e in eps[:5]))


@pytest.mark.parametrize("in_ram", [True, False])
def test_float64_obs_load_as_float32(robomimic_lift, in_ram):
    p, eps = robomimic_lift
    ds = WindowDataset(p, To=2, Tp=4, in_ram=in_ram)
    spec = ds.spec()
    for k, v in spec["obs"].items():
        assert v["dtype"] == "float32" and v["stored_dtype"] == "float64", (k, v)
    b = ds.get_batch(np.arange(len(ds)))
    assert all(x.dtype == torch.float32 for x in b["obs"].values())
    assert b["action"].dtype == torch.float32
    k = sorted(eps[0]["obs"])[0]
    np.testing.assert_allclose(b["obs"][k][0, -1].numpy(), eps[0]["obs"][k][0], rtol=1e-6)


def test_train_and_eval_on_robomimic_file(robomimic_lift, tmp_path):
    from robolearn.cli import main

    p, _ = robomimic_lift
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "policy=mse",
                f"data={p}",
                f"out={run}",
                "train.steps=30",
                "train.eval_episodes=0",
                "train.batch_size=32",
                "train.val_every=0",
            ]
        )
        == 0
    )
    ckpt = run / "checkpoints" / "last.pt"
    raw = torch.load(ckpt, weights_only=True)
    spec = json.loads(raw["spec"])
    assert {v["dtype"] for v in spec["obs"].values()} == {"float32"}
    assert {v["stored_dtype"] for v in spec["obs"].values()} == {"float64"}
    out = tmp_path / "eval"
    assert main(["eval", f"policy={ckpt}", "episodes=2", f"out={out}", "videos=0"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["env"] == ENV and res["episodes"] == 2


def test_policy_casts_env_observations(robomimic_lift, tmp_path):
    """A policy trained on float64 files takes float64, float32 (and int) env observations alike."""
    from robolearn.algos.bc import TrainConfig, TrainLoopConfig, train
    from robolearn.policies import PolicyConfig, load_policy

    p, eps = robomimic_lift
    train(
        TrainConfig(
            policy=PolicyConfig(head="mse"),
            data=str(p),
            out=str(tmp_path / "r"),
            train=TrainLoopConfig(steps=2, batch_size=8, val_every=0, eval_episodes=0, ckpt_every=2),
        )
    )
    pol = load_policy(tmp_path / "r" / "checkpoints" / "last.pt")
    obs64 = {k: np.repeat(np.asarray(v[:1], np.float64)[None], pol.To, 1) for k, v in eps[0]["obs"].items()}
    a64 = pol.act(obs64)
    a32 = pol.act({k: v.astype(np.float32) for k, v in obs64.items()})
    at = pol.act({k: torch.from_numpy(v) for k, v in obs64.items()})
    assert a64.dtype == torch.float32 and a64.shape == (1, pol.Tp, 5)
    torch.testing.assert_close(a64, a32)
    torch.testing.assert_close(a64, at)


# ------------------------------------------------------------------------ other dtypes, gzip images
def _synthetic(n=3, T=12, image=False, seed=0):
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        obs = {
            "pos": rng.normal(size=(T + 1, 3)),
            "half": rng.normal(size=(T + 1, 2)),
            "count": rng.integers(-5, 50, size=(T + 1, 2)),
            "flag": rng.integers(0, 2, size=(T + 1, 1)),
            "contact": rng.random((T + 1, 1)) < 0.5,
            "mode": rng.integers(0, 4, size=(T + 1, 2)),
        }
        if image:
            obs["agentview_image"] = rng.integers(0, 256, size=(T + 1, 32, 32, 3))
        eps.append(
            {
                "obs": {k: v[:-1] for k, v in obs.items()},
                "next_obs": {k: v[1:] for k, v in obs.items()},
                "actions": rng.uniform(-1, 1, size=(T, 5)),
                "rewards": np.zeros(T),
                "dones": np.r_[np.zeros(T - 1), 1],
                "states": rng.normal(size=(T, 9)),
            }
        )
    return eps


DTYPES = {
    "pos": np.float64,
    "half": np.float16,
    "count": np.int32,
    "flag": np.int64,
    "contact": np.bool_,
    "mode": np.uint8,
}


@pytest.mark.parametrize("in_ram", [True, False])
def test_float16_int_bool_uint8_lowdim_load_as_float32(tmp_path, in_ram):
    eps = _synthetic()
    p = tmp_path / "mixed.hdf5"
    write_robomimic_file(p, eps, obs_dtype=DTYPES)
    ds = WindowDataset(p, To=2, Tp=4, split=None, in_ram=in_ram)
    spec = ds.spec()
    for k, dt in DTYPES.items():
        assert spec["obs"][k]["dtype"] == "float32", k
        assert spec["obs"][k]["stored_dtype"] == np.dtype(dt).name, k
    assert spec["obs"]["mode"]["shape"] == [2]  # uint8 low-dim is numbers, not an image
    b = ds.get_batch(np.arange(len(ds)))
    for k, dt in DTYPES.items():
        x = b["obs"][k]
        assert x.dtype == torch.float32, k
        np.testing.assert_array_equal(x[0, -1].numpy(), eps[0]["obs"][k][0].astype(dt).astype(np.float32))


def test_uint8_lowdim_policy_is_not_an_image(tmp_path):
    from robolearn.algos.bc import TrainConfig, TrainLoopConfig, make_policy
    from robolearn.policies import PolicyConfig

    p = tmp_path / "mixed.hdf5"
    write_robomimic_file(p, _synthetic(), obs_dtype=DTYPES)
    ds = WindowDataset(p, To=2, Tp=4, split=None)
    cfg = TrainConfig(
        policy=PolicyConfig(head="mse"),
        data=str(p),
        To=2,
        Tp=4,
        Ta=2,
        train=TrainLoopConfig(steps=1, eval_episodes=0),
    )
    pol = make_policy(cfg, ds)
    assert pol.encoder.image_keys == [] and "mode" in pol.encoder.lowdim_keys
    assert "mode" in pol.normalizer.keys
    # raw uint8/int/bool env observations are cast to float32 and normalised like the training data
    raw = {k: np.stack([v[:2]]).astype(DTYPES[k]) for k, v in _synthetic(n=1)[0]["obs"].items()}
    a = pol.act(raw)
    b = pol.act({k: v.astype(np.float32) for k, v in raw.items()})
    torch.testing.assert_close(a, b)


def test_gzip_uint8_images_train(tmp_path):
    from robolearn.algos.bc import TrainConfig, TrainLoopConfig, train
    from robolearn.policies import PolicyConfig, load_policy
    from robolearn.policies.encoders import EncoderConfig

    eps = _synthetic(n=3, T=10, image=True)
    p = tmp_path / "images.hdf5"
    write_robomimic_file(
        p,
        eps,
        env_kwargs={"obs_mode": "both"},
        valid=(2,),
        image_keys=("agentview_image",),
        obs_dtype={"pos": np.float64},
    )
    with h5py.File(p, "r") as f:
        d = f["data/demo_0/obs/agentview_image"]
        assert d.compression == "gzip" and d.dtype == np.uint8 and d.shape == (10, 32, 32, 3)
    assert_robomimic_reads(p, ["pos"], rgb=["agentview_image"], n_train=20)
    for in_ram in (True, False):
        ds = WindowDataset(p, To=2, Tp=4, in_ram=in_ram, obs_keys=["agentview_image", "pos"])
        spec = ds.spec()
        assert spec["obs"]["agentview_image"] == {
            "shape": [32, 32, 3],
            "dtype": "uint8",
            "stored_dtype": "uint8",
        }
        img = ds.get_batch(np.arange(3))["obs"]["agentview_image"]
        assert img.dtype == torch.uint8
        np.testing.assert_array_equal(img[0, -1].numpy(), eps[0]["obs"]["agentview_image"][0])
    enc = EncoderConfig(mlp_hidden=[32], cnn_channels=[8, 8], cnn_feature_dim=16, num_groups=4)
    cfg = TrainConfig(
        policy=PolicyConfig(head="mse", encoder=enc),
        data=str(p),
        out=str(tmp_path / "run"),
        obs_keys=["agentview_image", "pos"],
        train=TrainLoopConfig(steps=5, batch_size=8, val_every=5, eval_episodes=0, ckpt_every=5),
    )
    s = train(cfg)
    assert s["steps"] == 5
    pol = load_policy(tmp_path / "run" / "checkpoints" / "last.pt")
    assert pol.encoder.image_keys == ["agentview_image"]
    obs = {
        "pos": np.zeros((1, pol.To, 3), np.float64),
        "agentview_image": np.zeros((1, pol.To, 32, 32, 3), np.uint8),
    }
    assert pol.act(obs).shape == (1, pol.Tp, 5)


def test_obs_keys_named_like_module_attributes(tmp_path):
    """A file's obs key may be any name, also one nn.ModuleDict already uses ("half", "type", "keys")."""
    from robolearn.data.normalizer import Normalizer

    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(size=(50, 2)).astype(np.float32) for k in ("half", "type", "keys", "action")}
    norm = Normalizer.from_data(arrays)
    spec = {"obs": {k: {"shape": [2], "dtype": "float32"} for k in ("half", "type", "keys")}, "action_dim": 2}
    back = Normalizer.empty(spec)
    back.load_state_dict(norm.state_dict())
    for k, x in arrays.items():
        y = back.normalize(k, torch.from_numpy(x))
        assert -1 - 1e-5 <= float(y.min()) and float(y.max()) <= 1 + 1e-5, k
        torch.testing.assert_close(back.unnormalize(k, y), torch.from_numpy(x), atol=1e-5, rtol=1e-5)


def test_spec_errors_say_how_to_fix():
    from robolearn.policies.policy import validate_spec

    base = {"action_dim": 2, "To": 1, "Tp": 2, "Ta": 1}
    with pytest.raises(ValueError, match="float64.*stored_dtype"):
        validate_spec({**base, "obs": {"pos": {"shape": [3], "dtype": "float64"}}})
    with pytest.raises(ValueError, match="stored_dtype='S8'"):
        validate_spec({**base, "obs": {"pos": {"shape": [3], "dtype": "float32", "stored_dtype": "S8"}}})
    with pytest.raises(ValueError, match="stored_dtype='nope'"):
        validate_spec({**base, "obs": {"pos": {"shape": [3], "dtype": "float32", "stored_dtype": "nope"}}})
    validate_spec({**base, "obs": {"pos": {"shape": [3], "dtype": "float32", "stored_dtype": "float16"}}})


def test_non_numeric_obs_key_is_refused_with_the_fix(tmp_path):
    from robolearn.data.store import StoreError

    p = tmp_path / "str.hdf5"
    eps = _synthetic(n=1)
    eps[0]["obs"]["name"] = np.array([b"cube"] * len(eps[0]["actions"]), dtype="S8")
    write_robomimic_file(p, eps, obs_dtype={"name": "S8"})
    with pytest.raises(StoreError, match=r"\['name'\].*non-numeric.*obs_keys="):
        WindowDataset(p, split=None)
    assert WindowDataset(p, split=None, obs_keys=["pos"]).spec()["obs"]["pos"]["dtype"] == "float32"
