"""The BC trainer and the `robolearn train` command: checkpoints, resume, DDP, config errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robolearn.algos.bc import TrainConfig, TrainLoopConfig, train
from robolearn.config import RecordConfig
from robolearn.policies import PolicyConfig, load_policy, policy_horizon
from robolearn.recording import record

ROBOLEARN = str(Path(sys.executable).parent / "robolearn")


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    p = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    s = record(RecordConfig(env="robolearn/Lift-v0", episodes=12, out=str(p)))
    assert s["episodes_kept"] == 12
    return p


def _cfg(data, out, head="mse", steps=40, **kw):
    return TrainConfig(policy=PolicyConfig(head=head), data=str(data), out=str(out),
                       train=TrainLoopConfig(steps=steps, batch_size=32, ckpt_every=20, val_every=0,
                                             eval_episodes=0, log_every=5, **kw))


def test_train_writes_runnable_checkpoint_and_tensorboard(lift_demos, tmp_path):
    s = train(_cfg(lift_demos, tmp_path / "run"))
    ck = tmp_path / "run" / "checkpoints" / "last.pt"
    assert ck.exists() and s["steps"] == 40
    raw = torch.load(ck, weights_only=True)  # no pickled objects: loads with weights_only
    assert raw["step"] == 40 and raw["env_id"] == "robolearn/Lift-v0"
    p = load_policy(ck)
    obs = {k: np.zeros((1, 2, *v["shape"]), np.float32) for k, v in p.spec["obs"].items()}
    assert p.act(obs).shape == (1, 8, 5)
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents*"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["policy"]["head"] == "mse"


@pytest.mark.parametrize("head,precision", [("mse", "float32"), ("diffusion", "bfloat16")])
def test_loss_decreases(lift_demos, tmp_path, head, precision):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (tensorboard present)

    train(_cfg(lift_demos, tmp_path / "run", head=head, steps=150, precision=precision))
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])


def test_resume_continues_exactly(lift_demos, tmp_path, monkeypatch):
    """Interrupted at step 20 and resumed == trained straight to 40 (weights, EMA, optimiser, RNG)."""
    train(_cfg(lift_demos, tmp_path / "straight"))
    from robolearn.data import dataset as dsmod

    calls = {"n": 0}
    orig = dsmod.WindowDataset.sample

    def sample(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 21:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(dsmod.WindowDataset, "sample", sample)
    s = train(_cfg(lift_demos, tmp_path / "resumed"))
    assert s["interrupted"] and s["step"] == 20
    assert torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)["step"] == 20
    monkeypatch.setattr(dsmod.WindowDataset, "sample", orig)
    cfg = _cfg(lift_demos, tmp_path / "resumed")
    cfg.resume = True
    train(cfg)
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert b["step"] == 40
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
        torch.testing.assert_close(a["ema"][k], b["ema"][k], rtol=0, atol=0)


def test_cli_config_errors_name_field_and_options(lift_demos, tmp_path):
    def run(*args):
        return subprocess.run([ROBOLEARN, "train", *args], capture_output=True, text=True)

    r = run("policy=transformerx", f"data={lift_demos}")
    assert r.returncode == 2 and "policy/transformerx" in r.stderr and "diffusion" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("policy=mse", f"data={lift_demos}", "train.steps=-3")
    assert r.returncode == 2 and "train.steps=-3" in r.stderr
    r = run("policy=mse", f"data={tmp_path}/missing.hdf5")
    assert r.returncode == 2 and "missing.hdf5" in r.stderr and "no such file" in r.stderr
    r = run("policy=mse", f"data={lift_demos}", "train.precision=float16")
    assert r.returncode == 2 and "train.precision='float16'" in r.stderr and "bfloat16" in r.stderr
    r = run("policy=mse", f"data={lift_demos}", "Ta=20", "Tp=8")
    assert r.returncode == 2 and "Ta=20" in r.stderr


def test_ddp_two_processes(lift_demos, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", ROBOLEARN, "train", "policy=mse",
         f"data={lift_demos}", f"out={tmp_path / 'ddp'}", "train.steps=20", "train.eval_episodes=0",
         "train.batch_size=16", "train.val_every=0"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ck = torch.load(tmp_path / "ddp/checkpoints/last.pt", weights_only=True)
    assert ck["step"] == 20


def test_intervention_weights(tmp_path):
    from conftest import make_episode, write_store

    from robolearn.algos.bc import build_dataset
    from robolearn.data.store import EpisodeWriter

    p = tmp_path / "iv.hdf5"
    write_store(p, n=2)
    e = make_episode(T=20, seed=7, source="intervention")
    e.interventions = np.zeros(20, bool)
    e.interventions[10:15] = True
    EpisodeWriter(p, "robolearn/Test-v0").append(e)
    cfg = TrainConfig(policy=PolicyConfig(head="mse"), data=str(p), out=str(tmp_path / "o"),
                      intervention_weight=3.0, drop_before_intervention=2, policy_step_weight=0.5)
    ds = build_dataset(cfg, "train")
    w = ds.weights * (1 / ds.weights[0])  # demo steps weigh 1
    off = int(ds.starts[-1])
    np.testing.assert_allclose(w[off + 10 : off + 15], 3.0)
    np.testing.assert_allclose(w[off + 8 : off + 10], 0.0)
    np.testing.assert_allclose(w[off : off + 8], 0.5)


def test_horizon_defaults_to_the_heads_own(lift_demos, tmp_path):
    """GMM trains per step (Tp=Ta=1, robomimic's layout: a chunk-wide mixture collapsed on ReachAround), the
    other heads on 8-step chunks executed 4 at a time; an explicit Tp/Ta wins and Ta never exceeds Tp."""
    assert policy_horizon("gmm") == (1, 1) and policy_horizon("flow") == (8, 4)
    gmm = TrainConfig(policy=PolicyConfig(head="gmm"), data=str(lift_demos), out=str(tmp_path / "g"))
    flow = TrainConfig(policy=PolicyConfig(head="flow"), data=str(lift_demos), out=str(tmp_path / "f"))
    assert (gmm.Tp, gmm.Ta) == (1, 1) and (flow.Tp, flow.Ta) == (8, 4)
    short = TrainConfig(policy=PolicyConfig(head="flow"), data=str(lift_demos), out=str(tmp_path / "s"), Tp=2)
    assert (short.Tp, short.Ta) == (2, 2)
    s = train(_cfg(lift_demos, tmp_path / "run", head="gmm", steps=5))
    assert s["steps"] == 5
    p = load_policy(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (p.Tp, p.spec["Ta"]) == (1, 1)


def test_meanstd_obs_normalizer_and_relu_mlps(lift_demos, tmp_path):
    """obs_normalizer=meanstd standardises every low-dim observation key (actions stay min-max in [-1, 1]), and
    activation=relu puts ReLUs, not Mish, in the encoder MLP and the MSE head; the checkpoint reloads as
    trained."""
    import h5py

    from robolearn.data.normalizer import MIN_STD

    cfg = _cfg(lift_demos, tmp_path / "run")
    cfg.obs_normalizer = "meanstd"
    cfg.policy = PolicyConfig(head="mse", encoder={"activation": "relu"}, head_cfg={"activation": "relu"})
    train(cfg)
    p = load_policy(tmp_path / "run/checkpoints/last.pt")
    acts = [type(m).__name__ for m in p.modules() if type(m).__name__ in ("ReLU", "Mish")]
    assert acts and set(acts) == {"ReLU"}
    with h5py.File(lift_demos) as f:
        g = f["data"]
        x = np.concatenate([g[k]["obs/cube_pos"][()] for k in g])
        a = np.concatenate([g[k]["actions"][()] for k in g])
    y = p.normalizer.normalize("cube_pos", torch.as_tensor(x)).numpy()
    st = p.normalizer.stats["cube_pos"]
    torch.testing.assert_close(st.scale, 1 / st.std.clamp_min(MIN_STD))  # the standardisation (std floored)
    torch.testing.assert_close(st.offset, -st.mean * st.scale)
    # fitted on the train split (valid episodes held out), so over all demos only close to 0 / 1
    assert np.abs(y.mean(0)).max() < 0.3 and np.abs(y.std(0) - 1).max() < 0.3
    ya = p.normalizer.normalize("action", torch.as_tensor(a)).numpy()
    assert ya.min() >= -1.001 and ya.max() <= 1.001


def test_obs_normalizer_and_activation_errors_name_the_options(lift_demos, tmp_path):
    from robolearn.config import ConfigError
    from robolearn.policies import EncoderConfig, MSEConfig

    with pytest.raises(ConfigError, match="obs_normalizer.*meanstd"):
        TrainConfig(policy=PolicyConfig(head="mse"), data=str(lift_demos), out=str(tmp_path), obs_normalizer="zca")
    with pytest.raises(ValueError, match="activation='tanh'.*relu"):
        EncoderConfig(activation="tanh")
    with pytest.raises(ValueError, match="activation='gelu'.*mish"):
        MSEConfig(activation="gelu")
    for head in ("flow", "diffusion"):
        with pytest.raises(ValueError, match="activation='elu'.*relu"):
            PolicyConfig(head=head, head_cfg={"denoiser": "mlp", "activation": "elu"})


@pytest.mark.parametrize("act", ["relu", "mish"])
def test_mlp_denoiser_activation(act):
    """The flow/diffusion MLP denoiser uses the activation it is given (and only it) and still samples chunks."""
    from robolearn.policies.denoisers import build_denoiser
    from robolearn.policies.flow import FlowConfig

    net = build_denoiser(FlowConfig(denoiser="mlp", mlp_hidden=[32, 32], activation=act), cond_dim=5, Tp=2, Da=3)
    names = {type(m).__name__.lower() for m in net.body}
    assert act in names and ({"relu", "mish"} - {act}).isdisjoint(names)
    out = net(torch.zeros(4, 2, 3), torch.rand(4), torch.zeros(4, 5))
    assert out.shape == (4, 2, 3) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def pusht1_demos(tmp_path_factory):
    p = tmp_path_factory.mktemp("demos") / "pusht1.hdf5"
    record(RecordConfig(env="robolearn/PushT-v1", episodes=2, out=str(p)))
    return p


def test_task_defaults_fill_only_what_the_user_left_unset(pusht1_demos, lift_demos, tmp_path):
    """PushT-v1 data brings its measured BC settings (robolearn_envs.BC_DEFAULTS); a field or policy section the
    user set keeps the user's value; task_defaults=false and tasks without an entry get the generic defaults."""
    from robolearn_envs import BC_DEFAULTS

    from robolearn.policies import EncoderConfig

    d = BC_DEFAULTS["robolearn/PushT-v1"]
    c = TrainConfig(policy=PolicyConfig(head="flow"), data=str(pusht1_demos), out=str(tmp_path))
    assert (c.To, c.Tp, c.Ta, c.obs_normalizer) == (d["To"], d["Tp"], d["Ta"], d["obs_normalizer"])
    assert c.obs_keys == d["obs_keys"] and c.policy.head_cfg.denoiser == "mlp"
    assert c.policy.encoder.activation == "relu" and c.policy.encoder.mlp_hidden == [512, 512]
    enc = EncoderConfig(mlp_hidden=[64])
    c = TrainConfig(
        policy=PolicyConfig(head="mse", encoder=enc), data=str(pusht1_demos), out=str(tmp_path), To=2, Tp=4
    )
    assert (c.To, c.Tp, c.Ta) == (2, 4, 4) and c.policy.encoder == enc  # Ta: the head's default, <= Tp
    assert c.policy.head_cfg.activation == "relu" and c.obs_normalizer == "meanstd"
    for data, flag in ((pusht1_demos, False), (lift_demos, True)):
        c = TrainConfig(policy=PolicyConfig(head="flow"), data=str(data), out=str(tmp_path), task_defaults=flag)
        assert (c.To, c.Tp, c.Ta, c.obs_keys, c.obs_normalizer) == (2, 8, 4, None, "minmax")
        assert c.policy.encoder == EncoderConfig() and c.policy.head_cfg.denoiser == "unet"
    # the resolved settings travel in the checkpoint: training and reloading give a per-step policy
    s = train(_cfg(pusht1_demos, tmp_path / "run", head="mse", steps=5))
    p = load_policy(tmp_path / "run/checkpoints/last.pt")
    assert s["steps"] == 5 and (p.To, p.spec["Tp"]) == (1, 1) and sorted(p.spec["obs"]) == sorted(d["obs_keys"])
