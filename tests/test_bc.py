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
