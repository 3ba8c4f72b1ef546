"""Policy-layer contracts, parametrised over every registered head (robolearn.policies.HEADS)."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from robolearn.data.normalizer import Normalizer
from robolearn.policies import (
    HEADS,
    ActionChunker,
    EncoderConfig,
    ObsHistory,
    Policy,
    PolicyConfig,
    build_policy,
    load_policy,
    policy_state,
)
from robolearn.policies.checkpoint import CheckpointError

torch.set_num_threads(1)

ALL_HEADS = sorted(HEADS)

# Small-but-learning configs per head; every other field keeps its default.
SMALL = {
    "mse": {"hidden": [64, 64]},
    "gmm": {"hidden": [64, 64]},
    "tokenized": {"num_bins": 64, "n_layer": 1, "n_head": 2, "n_embd": 32},
    "diffusion": {"denoiser": "mlp", "mlp_hidden": [128, 128], "time_embed_dim": 32},
    "flow": {"denoiser": "mlp", "mlp_hidden": [128, 128], "time_embed_dim": 32},
}
ENC = EncoderConfig(mlp_hidden=[64], cnn_channels=[8, 16], cnn_feature_dim=16, num_groups=4)


def small_cfg(head: str, **over) -> PolicyConfig:
    return PolicyConfig(head=head, encoder=ENC, head_cfg={**SMALL[head], **over})


def state_spec(To=2, Tp=4, Ta=2, Da=2, obs_dim=6):
    return {
        "obs": {"state": {"shape": [obs_dim], "dtype": "float32"}},
        "action_dim": Da,
        "To": To,
        "Tp": Tp,
        "Ta": Ta,
    }


def image_spec():
    spec = state_spec()
    spec["obs"]["agentview.rgb"] = {"shape": [32, 32, 3], "dtype": "uint8"}  # "." in a key on purpose
    return spec


def fake_data(spec, n, seed=0):
    """Raw windows {"obs": {key: (n, To, *shape)}, "action": (n, Tp, Da)} and a Normalizer over them."""
    g = np.random.default_rng(seed)
    obs = {}
    for k, v in spec["obs"].items():
        shape = (n, spec["To"], *v["shape"])
        obs[k] = (
            g.integers(0, 256, shape, dtype=np.uint8)
            if v["dtype"] == "uint8"
            else (g.normal(size=shape) * 3 + 1).astype(np.float32)
        )
    action = (g.normal(size=(n, spec["Tp"], spec["action_dim"])) * 2).astype(np.float32)
    arrays = {k: a.reshape(-1, *a.shape[2:]) for k, a in obs.items() if a.dtype != np.uint8}
    arrays["action"] = action.reshape(-1, spec["action_dim"])
    return {"obs": obs, "action": action}, Normalizer.from_data(arrays)


def to_torch(batch):
    return {
        "obs": {k: torch.as_tensor(v) for k, v in batch["obs"].items()},
        "action": torch.as_tensor(batch["action"]),
    }


def train(policy, batch, steps, lr=1e-3, bs=None):
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    policy.train()
    losses = []
    n = batch["action"].shape[0]
    for _ in range(steps):
        b = batch
        if bs is not None:
            idx = torch.randint(0, n, (bs,))
            b = {"obs": {k: v[idx] for k, v in batch["obs"].items()}, "action": batch["action"][idx]}
        loss, info = policy.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    policy.eval()
    return losses


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("spec_fn", [state_spec, image_spec], ids=["state", "image"])
@pytest.mark.parametrize("head", ALL_HEADS)
def test_shapes(head, spec_fn):
    torch.manual_seed(0)
    spec = spec_fn()
    data, norm = fake_data(spec, 8)
    policy = Policy(spec, small_cfg(head), norm)
    loss, info = policy.loss(to_torch(data))
    assert loss.ndim == 0 and torch.isfinite(loss) and all(isinstance(v, float) for v in info.values())
    loss.backward()
    cond = policy.encode(data["obs"])
    assert cond.shape == (8, policy.encoder.out_dim)
    act = policy.act(data["obs"])  # numpy in
    assert act.shape == (8, spec["Tp"], spec["action_dim"]) and not act.requires_grad
    assert policy.training  # act() restores the mode
    assert policy.act({k: torch.as_tensor(v[:1]) for k, v in data["obs"].items()}).shape == (1, 4, 2)


@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_unet_denoiser_shapes(head):
    torch.manual_seed(0)
    spec = image_spec()
    data, norm = fake_data(spec, 4)
    policy = Policy(spec, small_cfg(head, denoiser="unet", down_dims=[16, 32], n_groups=4), norm)
    loss, _ = policy.loss(to_torch(data))
    loss.backward()
    assert policy.act(data["obs"]).shape == (4, 4, 2)
    with pytest.raises(ValueError, match="Tp must be divisible by 4"):
        Policy({**spec, "Tp": 6}, small_cfg(head, denoiser="unet", down_dims=[16, 32, 64], n_groups=4), norm)


def test_unet_matmul_convs_match_torch():
    from robolearn.policies.denoisers import clear_inference_caches, conv1d, upsample

    torch.manual_seed(0)
    C = 256  # the GEMM path is batch-1 inference on big (>= 2**18 weights) or bf16 layers only
    x = torch.randn(1, C, 8)
    with torch.no_grad():
        for conv in (
            torch.nn.Conv1d(C, C, 5, padding=2),
            torch.nn.Conv1d(C, C, 5, stride=2, padding=2),
            torch.nn.Conv1d(C, 1024, 1),
        ):
            torch.testing.assert_close(
                conv1d(x, conv),
                torch.nn.functional.conv1d(x, conv.weight, conv.bias, conv.stride, conv.padding),
            )
        up = torch.nn.ConvTranspose1d(C, C, 4, stride=2, padding=1)
        ref = torch.nn.functional.conv_transpose1d(x, up.weight, up.bias, 2, 1)
        torch.testing.assert_close(upsample(x, up), ref)

        # Prepacked weights (oneDNN) follow in-place updates and load_state_dict; copies start with no cache.
        conv = torch.nn.Conv1d(C, C, 5, padding=2)
        conv1d(x, conv)
        conv.weight.mul_(-2.0)
        torch.testing.assert_close(
            conv1d(x, conv), torch.nn.functional.conv1d(x, conv.weight, conv.bias, 1, 2)
        )
        other = torch.nn.Conv1d(C, C, 5, padding=2)
        conv.load_state_dict(other.state_dict())
        torch.testing.assert_close(conv1d(x, conv), other(x))
        twin = copy.deepcopy(conv)
        assert not twin.__dict__.get("_packed")
        torch.testing.assert_close(conv1d(x, twin), other(x))
        conv.weight.data.mul_(0.5)  # invisible to the version key: clear the caches by hand
        clear_inference_caches(conv)
        torch.testing.assert_close(conv1d(x, conv), torch.nn.functional.conv1d(x, conv.weight, conv.bias, 1, 2))


@pytest.mark.parametrize("k,p", [(5, 2), (1, 0)])
def test_bf16_autocast_conv_gradients(k, p):
    """Under bf16 autocast, stride-1 convs use our backward (input grad as a conv, weight grad as a GEMM)."""
    from robolearn.policies.denoisers import conv1d

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(256, 256, k, padding=p)  # >= 2**16 weights: our backward (smaller: native)
    x = torch.randn(8, 256, 4, requires_grad=True)
    g = torch.randn(8, 256, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv1d(x, conv)
    assert y.dtype == torch.bfloat16 and type(y.grad_fn).__name__ == "_Conv1dBF16Backward"
    got = torch.autograd.grad(y, [x, conv.weight, conv.bias], g)
    # reference: float32 conv on the same bf16-rounded inputs
    xr = x.detach().bfloat16().float().requires_grad_()
    wr = conv.weight.detach().bfloat16().float().requires_grad_()
    br = conv.bias.detach().bfloat16().float().requires_grad_()
    ref = torch.autograd.grad(torch.nn.functional.conv1d(xr, wr, br, padding=p), [xr, wr, br], g)
    torch.testing.assert_close(y.float(), torch.nn.functional.conv1d(xr, wr, br, padding=p), atol=0.05, rtol=0.02)
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32  # gradients reach the float32 master weights
        torch.testing.assert_close(a, b, atol=0.05 * b.abs().max().item(), rtol=0.02)


def test_unet_batch1_matches_batched():
    from robolearn.policies.denoisers import ConditionalUnet1D

    torch.manual_seed(0)
    net = ConditionalUnet1D(3, 8, [64, 128, 256], 5, 8, 16).eval()  # 256-ch layers take the GEMM path
    x, t, c = torch.randn(3, 8, 3), torch.tensor([3.0, 50.0, 99.0]), torch.randn(3, 8)
    with torch.no_grad():
        batched = net(x, t, c)  # native convs
        single = torch.cat([net(x[i : i + 1], t[i : i + 1], c[i : i + 1]) for i in range(3)])  # GEMM path
    torch.testing.assert_close(single, batched, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_ddim_inline_matches_diffusers_step(prediction_type):
    from robolearn.policies.diffusion import DiffusionConfig, DiffusionHead

    torch.manual_seed(0)
    cfg = DiffusionConfig(denoiser="mlp", mlp_hidden=[32], time_embed_dim=16, prediction_type=prediction_type)
    head = DiffusionHead(cfg, 8, 4, 2).eval()
    cond = torch.randn(3, 8)
    with torch.no_grad():
        ours = head.sample(cond, generator=torch.Generator().manual_seed(1))
        sched = head.sample_scheduler
        x = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(1))
        for t in sched.timesteps:
            eps = head.denoiser(x, t.expand(3).float(), cond)
            x = sched.step(eps, t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ learning
@pytest.mark.parametrize("head", ALL_HEADS)
def test_overfits_one_batch(head):
    torch.manual_seed(0)
    spec = state_spec()
    data, norm = fake_data(spec, 16)
    policy = Policy(spec, small_cfg(head), norm)
    losses = train(policy, to_torch(data), 200, lr=2e-3)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    if head == "gmm":  # NLL goes negative
        assert last < first - 1.0, (first, last)
    else:
        assert last < 0.5 * first, (first, last)


BIMODAL_STEPS = {"mse": 150, "gmm": 300, "tokenized": 150, "diffusion": 600, "flow": 600}


@pytest.mark.parametrize("head", ALL_HEADS)
def test_bimodal(head):
    """Actions are +-1 (50/50) under a constant observation: only MSE may average the modes."""
    torch.manual_seed(0)
    spec = {"obs": {"state": {"shape": [1], "dtype": "float32"}}, "action_dim": 1, "To": 1, "Tp": 1, "Ta": 1}
    n = 512
    action = torch.where(torch.rand(n) < 0.5, -1.0, 1.0).view(n, 1, 1)
    obs = torch.zeros(n, 1, 1)
    norm = Normalizer.from_data({"state": obs.view(n, 1).numpy(), "action": action.view(n, 1).numpy()})
    policy = Policy(spec, small_cfg(head), norm)
    train(policy, {"obs": {"state": obs}, "action": action}, BIMODAL_STEPS[head], lr=2e-3, bs=128)
    samples = policy.act(
        {"state": torch.zeros(400, 1, 1)}, generator=torch.Generator().manual_seed(0)
    ).flatten()
    if head == "mse":
        assert samples.abs().max() < 0.3, samples.abs().max()
        return
    near_pos = ((samples - 1).abs() < 0.2).float().mean().item()
    near_neg = ((samples + 1).abs() < 0.2).float().mean().item()
    assert near_pos + near_neg >= 0.8, (near_pos, near_neg)
    assert min(near_pos, near_neg) >= 0.3, (near_pos, near_neg)


def test_gmm_log_prob_and_mode_sampling():
    torch.manual_seed(0)
    spec = state_spec()
    data, norm = fake_data(spec, 4)
    policy = Policy(spec, small_cfg("gmm", sample_mode="mode"), norm).eval()
    cond = policy.encode(data["obs"])
    a = policy.normalizer.normalize("action", torch.as_tensor(data["action"]))
    assert policy.head.log_prob(cond, a).shape == (4,)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    assert torch.equal(policy.act(data["obs"], generator=g1), policy.act(data["obs"], generator=g2))


@pytest.mark.parametrize("head", ["mse", "tokenized", "diffusion", "flow"])
def test_log_prob_only_where_tractable(head):
    spec = state_spec()
    _, norm = fake_data(spec, 4)
    policy = Policy(spec, small_cfg(head), norm)
    with pytest.raises(NotImplementedError, match="no tractable log-probability"):
        policy.head.log_prob(torch.zeros(1, policy.encoder.out_dim), torch.zeros(1, 4, 2))


def test_tokenized_quantile_bins_are_buffers():
    torch.manual_seed(0)
    spec = state_spec()
    data, norm = fake_data(spec, 32)
    policy = Policy(spec, small_cfg("tokenized", binning="quantile"), norm)
    assert not bool(policy.head.fitted)
    policy.fit_data(data["action"])
    assert bool(policy.head.fitted)
    sd = policy.state_dict()
    assert "head.bin_centers" in sd and "head.bin_edges" in sd
    assert not torch.allclose(sd["head.bin_centers"][0], torch.linspace(-1, 1, 64))
    tok = policy.head.tokenize(norm.normalize("action", torch.as_tensor(data["action"])))
    assert tok.shape == (32, spec["Tp"] * spec["action_dim"]) and tok.min() >= 0 and tok.max() < 64


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("head", ALL_HEADS)
def test_save_load_bit_exact(head, tmp_path):
    torch.manual_seed(0)
    spec = image_spec()
    data, norm = fake_data(spec, 4)
    policy = Policy(spec, small_cfg(head), norm)
    train(policy, to_torch(data), 2)
    ema = {
        k: v.clone() + (0.01 if v.is_floating_point() and k.startswith("head.") else 0)
        for k, v in policy.state_dict().items()
    }
    ckpt = policy_state(policy, ema_state_dict=ema)
    ckpt.update(step=2, optimizer={"lr": 1e-3})  # trainer keys ride along and are ignored
    path = tmp_path / "policy.pt"
    torch.save(ckpt, path)

    loaded = load_policy(path, use_ema=False)
    assert loaded.cfg == policy.cfg and loaded.spec == json.loads(json.dumps(spec))
    for k, v in policy.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    a1 = policy.act(data["obs"], generator=torch.Generator().manual_seed(7))
    a2 = loaded.act(data["obs"], generator=torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2)

    loaded_ema = load_policy(path)  # use_ema=True by default
    for k, v in ema.items():
        assert torch.equal(v, loaded_ema.state_dict()[k]), k


def test_load_rejects_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a robolearn checkpoint"):
        load_policy(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="not a robolearn checkpoint"):
        load_policy(other)

    spec = state_spec()
    _, norm = fake_data(spec, 4)
    ckpt = policy_state(Policy(spec, small_cfg("mse"), norm))
    with pytest.raises(CheckpointError, match="unsupported checkpoint format version"):
        build_policy({**ckpt, "format": "robolearn-policy/99"})
    with pytest.raises(CheckpointError, match="unknown"):
        build_policy({**ckpt, "head": "nope"})


def test_checkpoint_is_plain_data(tmp_path):
    spec = state_spec()
    _, norm = fake_data(spec, 4)
    ckpt = policy_state(Policy(spec, small_cfg("diffusion"), norm))
    torch.save(ckpt, tmp_path / "p.pt")
    raw = torch.load(tmp_path / "p.pt", weights_only=True)  # would raise on any pickled object
    assert raw["format"] == "robolearn-policy/1" and raw["head"] == "diffusion" and raw["ema"] is None
    assert PolicyConfig.from_dict(json.loads(raw["config"])) == small_cfg("diffusion")


# ------------------------------------------------------------------------------------------------ configs
def test_config_validation_names_field():
    with pytest.raises(ValueError, match=r"PolicyConfig.head='nope'.*diffusion"):
        PolicyConfig(head="nope")
    with pytest.raises(ValueError, match=r"DiffusionConfig.denoiser='transformer'.*unet"):
        PolicyConfig(head="diffusion", head_cfg={"denoiser": "transformer"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['bogus'\]"):
        PolicyConfig(head="gmm", head_cfg={"bogus": 1})
    with pytest.raises(ValueError, match="EncoderConfig.crop_ratio=1.5"):
        EncoderConfig(crop_ratio=1.5)
    cfg = PolicyConfig(head="flow")
    assert PolicyConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    for _name, (cfg_cls, _) in HEADS.items():
        cfg_cls()  # defaults are valid


# ------------------------------------------------------------------------------------------------ normalizer
def test_normalizer_floors_the_range_of_jittering_dims():
    """A dim that only jitters (PushT's block z: 1.1 mm of contact jitter around 1.5 cm) must not be blown up:
    min-max divides by at least MIN_RANGE, so a test-time jitter twice the training range stays well inside
    [-1, 1] (it used to be scaled 1800x and hit the +-5 clamp)."""
    from robolearn.data.normalizer import MIN_RANGE, MIN_STD

    g = np.random.default_rng(0)
    x = np.stack([g.uniform(-0.12, 0.12, 500), 0.015 + g.uniform(-5.5e-4, 5.5e-4, 500)], 1).astype(np.float32)
    norm = Normalizer.from_data({"block_pos": x})
    scale = norm.stats["block_pos"].scale
    assert scale[1] == pytest.approx(2.0 / MIN_RANGE) and scale[0] == pytest.approx(2.0 / np.ptp(x[:, 0]), rel=1e-5)
    jitter = torch.tensor([[0.0, 0.015 + 1.1e-3]])
    assert norm.normalize("block_pos", jitter)[0, 1].abs() < 0.1
    y = norm.normalize("block_pos", torch.as_tensor(x))
    assert y[:, 0].min() == pytest.approx(-1, abs=1e-5) and y[:, 0].max() == pytest.approx(1, abs=1e-5)
    # mean/std scaling floors the std the same way (PushT-v1's block z, std 0.2 mm, was scaled ~5000x)
    zs = Normalizer.from_data({"block_pos": x}, mode="meanstd")
    st = zs.stats["block_pos"]
    assert st.scale[1] == pytest.approx(1.0 / MIN_STD) and st.scale[0] == pytest.approx(1.0 / x[:, 0].std(), rel=1e-4)
    assert (zs.normalize("block_pos", jitter)[0, 1] - zs.normalize("block_pos", torch.tensor([[0.0, 0.015]]))[0, 1]).abs() < 0.1
    y = zs.normalize("block_pos", torch.as_tensor(x))
    assert y[:, 0].mean().abs() < 1e-4 and y[:, 0].std(unbiased=False) == pytest.approx(1, abs=1e-4)


def test_normalizer_round_trip_and_state_dict():
    g = np.random.default_rng(0)
    x = g.normal(size=(100, 3)).astype(np.float32) * 5 + 2
    x[:, 1] = 4.0  # constant dim
    img = g.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    for mode in ("minmax", "meanstd"):
        norm = Normalizer.from_data({"state": x, "action": x[:, :2], "cam": img}, mode=mode)
        t = torch.as_tensor(x)
        y = norm.normalize("state", t)
        assert torch.isfinite(y).all()
        if mode == "minmax":
            assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5 and torch.all(y[:, 1] == 0)
        torch.testing.assert_close(norm.unnormalize("state", y), t, atol=1e-4, rtol=1e-5)
        assert norm.normalize("state", t.view(10, 10, 3)).shape == (10, 10, 3)  # leading dims broadcast
        c = norm.normalize("cam", torch.as_tensor(img))
        assert c.dtype == torch.float32 and c.max() <= 1.0
        sd = norm.state_dict()
        assert {"stats.state.scale", "stats.state.offset", "stats.action.min"} <= set(sd)
        spec = {
            "obs": {
                "state": {"shape": [3], "dtype": "float32"},
                "cam": {"shape": [8, 8, 3], "dtype": "uint8"},
            },
            "action_dim": 2,
        }
        empty = Normalizer.empty(spec)
        empty.load_state_dict(sd)
        torch.testing.assert_close(empty.normalize("state", t), y)
    with pytest.raises(ValueError, match="mode for key 'state'"):
        Normalizer.from_data({"state": x}, mode={"state": "zscore"})


# ------------------------------------------------------------------------------------------------ chunking
class CountingPolicy:
    """Chunk k is filled with 100*k + step index; checks which chunk and step each action came from."""

    def __init__(self, B=2, Tp=5, Da=3):
        self.B, self.Tp, self.Da, self.calls = B, Tp, Da, 0

    def act(self, obs, generator=None):
        chunk = 100.0 * self.calls + torch.arange(self.Tp, dtype=torch.float32).view(1, self.Tp, 1)
        self.calls += 1
        return chunk.expand(self.B, self.Tp, self.Da).clone()


def test_chunker_receding_horizon():
    pol, chunker = CountingPolicy(), ActionChunker(Ta=3)
    got = [chunker.act(pol, {})[0, 0].item() for _ in range(7)]
    assert got == [0, 1, 2, 100, 101, 102, 200] and chunker.num_plans == 3
    chunker.reset(mask=np.array([False, True]))  # an env finished: re-plan the batch
    assert chunker.act(pol, {})[0, 0].item() == 300


def test_chunker_temporal_ensemble():
    pol, chunker = CountingPolicy(), ActionChunker(Ta=1, temporal_ensemble=True, k=0.0)
    outs = [chunker.act(pol, {}) for _ in range(3)]
    assert all(o.shape == (2, 3) for o in outs) and chunker.num_plans == 3
    # step 2 averages chunk0[2]=2, chunk1[1]=101, chunk2[0]=200 with equal weights (k=0)
    assert outs[2][0, 0].item() == pytest.approx((2 + 101 + 200) / 3)
    chunker.reset(mask=np.array([True, False]))
    out = chunker.act(pol, {})
    assert out[0, 0].item() == 300 and out[1, 0].item() == pytest.approx((3 + 102 + 201 + 300) / 4)


def test_obs_history_pads_and_resets():
    h = ObsHistory(To=3)
    o = h.reset({"s": np.array([[1.0], [2.0]])})
    assert o["s"].shape == (2, 3, 1) and (o["s"][:, :, 0] == [[1, 1, 1], [2, 2, 2]]).all()
    o = h.push({"s": np.array([[3.0], [4.0]])})
    assert (o["s"][:, :, 0] == [[1, 1, 3], [2, 2, 4]]).all()
    h.reset(mask=np.array([False, True]))
    o = h.push({"s": np.array([[5.0], [6.0]])})
    assert (o["s"][:, :, 0] == [[1, 3, 5], [6, 6, 6]]).all()


@pytest.mark.parametrize("head", ["diffusion", "flow"])
def test_bfloat16_inference_copy_tracks_weights(head):
    torch.manual_seed(0)
    spec = state_spec()
    data, norm = fake_data(spec, 4)
    kw = dict(denoiser="unet", down_dims=[16, 32], n_groups=4)
    fast = Policy(spec, small_cfg(head, inference_dtype="bfloat16", **kw), norm)
    ref = Policy(spec, small_cfg(head, **kw), norm)
    shadows = []
    for _ in range(2):
        ref.load_state_dict(fast.state_dict())
        a = fast.act(data["obs"], generator=torch.Generator().manual_seed(0))
        b = ref.act(data["obs"], generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b, atol=0.1, rtol=0.05)
        shadows.append(fast.head.denoiser.__dict__["_inference_copy"][1])
        assert next(shadows[-1].parameters()).dtype == torch.bfloat16
        assert not any(k.startswith("head.denoiser._inference") for k in fast.state_dict())
        train(fast, to_torch(data), 1, lr=1e-2)  # the cached bf16 copy must follow the new weights
    assert shadows[0] is not shadows[1]
    fast.act(data["obs"])
    shadow = fast.head.denoiser.__dict__["_inference_copy"][1]
    fast.act(data["obs"])
    assert fast.head.denoiser.__dict__["_inference_copy"][1] is shadow  # unchanged weights: cache hit


def test_rollout_loop_with_real_policy():
    """ObsHistory -> ActionChunker -> Policy.act, as eval/rollouts will use them (2 envs, numpy obs)."""
    torch.manual_seed(0)
    spec = image_spec()
    _, norm = fake_data(spec, 4)
    policy = Policy(spec, small_cfg("flow"), norm).eval()
    g = np.random.default_rng(0)

    def env_obs():
        return {
            "state": g.normal(size=(2, 6)).astype(np.float32),
            "agentview.rgb": g.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
        }

    history, chunker = ObsHistory(spec["To"]), ActionChunker(spec["Ta"])
    obs = history.reset(env_obs())
    for _ in range(5):
        action = chunker.act(policy, obs)
        assert action.shape == (2, spec["action_dim"]) and torch.isfinite(action).all()
        obs = history.push(env_obs())
    assert chunker.num_plans == 3  # Ta=2: steps 0, 2, 4 re-plan


def test_fast_mish_matches_torch():
    from robolearn.policies.layers import mish

    x = torch.cat([torch.linspace(-100, 100, 20001), torch.tensor([-1e4, 1e4, 0.0])]).requires_grad_()
    ref = torch.nn.functional.mish(x)
    out = mish(x)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    (g,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4)
    x64 = torch.randn(50, dtype=torch.float64, requires_grad=True) * 4
    assert torch.autograd.gradcheck(mish, (x64.detach().requires_grad_(),))
    with torch.no_grad():  # inference path (no autograd node)
        torch.testing.assert_close(mish(x.detach()), ref.detach(), atol=2e-6, rtol=1e-5)


def test_gmm_holds_its_mode_within_an_episode():
    """A bimodal GMM (actions +-1 under one observation) keeps both modes across envs, but each env stays on
    the mode it drew for the whole episode (re-planning every step); without hold_mode it flips sides."""
    torch.manual_seed(0)
    spec = {"obs": {"state": {"shape": [1], "dtype": "float32"}}, "action_dim": 1, "To": 1, "Tp": 1, "Ta": 1}
    n = 512
    action = torch.where(torch.rand(n) < 0.5, -1.0, 1.0).view(n, 1, 1)
    obs = torch.zeros(n, 1, 1)
    norm = Normalizer.from_data({"state": obs.view(n, 1).numpy(), "action": action.view(n, 1).numpy()})
    policy = Policy(spec, small_cfg("gmm"), norm)
    train(policy, {"obs": {"state": obs}, "action": action}, BIMODAL_STEPS["gmm"], lr=2e-3, bs=128)

    def episode(hold: bool) -> torch.Tensor:
        policy.head.cfg.hold_mode = hold
        chunker, gen = ActionChunker(1), torch.Generator().manual_seed(0)
        steps = [chunker.act(policy, {"state": torch.zeros(200, 1, 1)}, generator=gen) for _ in range(30)]
        return torch.stack(steps, 1).squeeze(-1).sign()  # (envs, steps)

    sides = episode(hold=True)
    assert bool((sides == sides[:, :1]).all()), "an env switched modes within the episode"
    share = (sides[:, 0] > 0).float().mean().item()
    assert 0.3 <= share <= 0.7, share  # both modes kept across envs
    flips = episode(hold=False)
    assert not bool((flips == flips[:, :1]).all())
    # an episode start (reset) draws the mode anew
    chunker, gen = ActionChunker(1), torch.Generator().manual_seed(1)
    policy.head.cfg.hold_mode = True
    first = chunker.act(policy, {"state": torch.zeros(200, 1, 1)}, generator=gen).sign()
    chunker.reset(mask=np.ones(200, bool))
    again = chunker.act(policy, {"state": torch.zeros(200, 1, 1)}, generator=gen).sign()
    assert not torch.equal(first, again)


def test_diffusion_prediction_type_defaults_by_denoiser_and_old_checkpoints_keep_epsilon():
    """The MLP denoiser predicts x0 by default (epsilon: 48-72% on ReachAround, x0: 100%), the U-Net the noise;
    a checkpoint written before the field existed was trained on epsilon and must load as epsilon. (That x0
    prediction keeps both modes is test_bimodal[diffusion]: its small config uses the MLP denoiser.)"""
    import dataclasses

    from robolearn.policies import PolicyConfig
    from robolearn.policies.diffusion import DiffusionConfig

    assert DiffusionConfig(denoiser="mlp").prediction_type == "sample"
    assert DiffusionConfig(denoiser="unet").prediction_type == "epsilon"
    assert DiffusionConfig(denoiser="mlp", prediction_type="epsilon").prediction_type == "epsilon"
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionConfig(prediction_type="v")
    new = dataclasses.asdict(PolicyConfig(head="diffusion", head_cfg={"denoiser": "mlp"}))
    assert PolicyConfig.from_dict(new).head_cfg.prediction_type == "sample"  # a new checkpoint round-trips
    old = dict(new, head_cfg={k: v for k, v in new["head_cfg"].items() if k != "prediction_type"})
    assert PolicyConfig.from_dict(old).head_cfg.prediction_type == "epsilon"



def test_tokenized_soft_targets_are_a_gaussian_over_the_bins():
    from robolearn.policies.tokenized import TokenizedConfig, TokenizedHead

    head = TokenizedHead(TokenizedConfig(num_bins=21, label_sigma=0.1), cond_dim=8, Tp=2, Da=3)
    a = torch.tensor([[[0.0, 0.5, -1.0], [0.3, 1.0, -0.2]]])
    p = head.soft_targets(a)
    assert p.shape == (1, 6, 21)
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 6))
    # the most probable bin is the one-hot token, its mean is the action (away from the clamped ends)
    assert torch.equal(p.argmax(-1), head.tokenize(a))
    mean = (p * head.bin_centers[torch.arange(6) % 3]).sum(-1).view(1, 2, 3)
    torch.testing.assert_close(mean[0, 0, :2], a[0, 0, :2], atol=1e-3, rtol=0)
    # neighbouring bins share credit: about 1 sigma = one bin (0.1) either side
    assert 0.15 < p[0, 0, 9] < 0.3 and 0.15 < p[0, 0, 11] < 0.3
    # and the loss trains on them (finite, differentiable)
    loss, _ = head.loss(torch.randn(1, 8, requires_grad=True), a)
    loss.backward()
    assert torch.isfinite(loss)
