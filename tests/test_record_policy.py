"""`robolearn record expert=<checkpoint>`: a trained agent as the demonstrator (locomotion demos for BC)."""

import gymnasium as gym
import h5py
import numpy as np
import pytest

from robolearn.algos.bc import TrainConfig, TrainLoopConfig, train
from robolearn.algos.finetune import FinetuneConfig, finetune
from robolearn.cli import main
from robolearn.config import RecordConfig
from robolearn.envutil import make_env
from robolearn.policies import PolicyConfig
from robolearn.recording import make_expert, record


def _episodes(path):
    with h5py.File(path, "r") as f:
        return [(g.attrs["source"], int(g.attrs["seed"]), g["actions"][()]) for g in f["data"].values()]


def test_record_from_a_sac_checkpoint_replays_its_actions(tmp_path):
    finetune(
        FinetuneConfig(
            env="Hopper-v5",
            bridge="none",
            out=str(tmp_path / "sac"),
            steps=150,
            learning_starts=50,
            eval_every=0,
            eval_episodes=1,
            batch_size=32,
        )
    )
    ck = tmp_path / "sac" / "checkpoints" / "last.pt"
    out = tmp_path / "hopper.hdf5"
    assert main(["record", "env=Hopper-v5", f"expert={ck}", "episodes=2", f"out={out}"]) == 0
    eps = _episodes(out)
    assert len(eps) == 2 and all(src == "policy" for src, _, _ in eps)
    env = make_env("Hopper-v5")  # robolearn's view of it: dict observations, as the recorder sees them
    actor = make_expert(env, str(ck))  # deterministic: the same actions from the same start
    for _, seed, acts in eps:
        obs, _ = env.reset(seed=seed)
        actor.reset(seed=seed)
        for a in acts:
            np.testing.assert_allclose(actor.act(obs), a, rtol=0, atol=1e-6)
            obs, *_ = env.step(a)
    env.close()


def test_record_from_a_bc_checkpoint(tmp_path):
    demos = tmp_path / "demos.hdf5"
    record(RecordConfig(env="robolearn/ReachAround-v0", episodes=4, out=str(demos)))
    train(
        TrainConfig(
            policy=PolicyConfig(head="mse"),
            data=str(demos),
            out=str(tmp_path / "bc"),
            train=TrainLoopConfig(steps=10, batch_size=16, val_every=0, eval_episodes=0),
        )
    )
    out = tmp_path / "bc_rollouts.hdf5"
    s = record(
        RecordConfig(
            env="robolearn/ReachAround-v0",
            expert=str(tmp_path / "bc/checkpoints/last.pt"),
            episodes=2,
            out=str(out),
        )
    )
    assert s["episodes_kept"] == 2 and {src for src, _, _ in _episodes(out)} == {"policy"}


def test_record_expert_checkpoint_errors(tmp_path, capsys):
    rc = main(
        ["record", "env=Hopper-v5", f"expert={tmp_path}/nope.pt", "episodes=1", f"out={tmp_path}/x.hdf5"]
    )
    assert rc == 2 and "expert=" in capsys.readouterr().err
    with pytest.raises(ValueError, match="scripted"):
        make_expert(gym.make("Hopper-v5"), "bogus")


def test_loop_on_locomotion_with_a_checkpoint_demonstrator(tmp_path):
    """The whole loop on Hopper-v5 with a trained agent as the demonstrator (tiny budgets: plumbing only)."""
    from robolearn.loop import LoopConfig, LoopDaggerConfig, LoopSACConfig, run_loop

    finetune(FinetuneConfig(env="Hopper-v5", bridge="none", out=str(tmp_path / "sac"), steps=150,
                            learning_starts=50, eval_every=0, eval_episodes=1, batch_size=32))
    ck = tmp_path / "sac" / "checkpoints" / "last.pt"
    res = run_loop(LoopConfig(env="Hopper-v5", expert=str(ck), policy="mse", out=str(tmp_path / "L"),
                              demo_episodes=2, eval_episodes=2, videos=0, To=1, Tp=1, Ta=1,
                              bc=TrainLoopConfig(steps=20, batch_size=16, val_every=0, eval_episodes=0),
                              dagger=LoopDaggerConfig(rounds=1, episodes_per_round=2, steps=10),
                              sac=LoopSACConfig(steps=120, eval_every=0, critic_warmup=10, reward_type="dense")))
    assert [r[0] for r in res["rows"]] == ["bc", "dagger", "sac"]
    assert {src for src, _, _ in _episodes(tmp_path / "L" / "demos.hdf5")} == {"policy"}
    # the DAgger stage is labelled by the same checkpoint: every stored label is its action at the stored state
    actor = make_expert(make_env("Hopper-v5"), str(ck))
    n = 0
    with h5py.File(tmp_path / "L" / "dagger" / "round_1" / "episodes.hdf5", "r") as f:
        for g in f["data"].values():
            assert g.attrs["source"] == "dagger"
            for t in range(len(g["actions"])):
                np.testing.assert_allclose(actor.act({"state": g["obs"]["state"][t]}), g["actions"][t], atol=1e-6)
                n += 1
    assert n > 0
    assert "demonstrator (checkpoint)" in (tmp_path / "L" / "report.md").read_text()


def test_record_label_clean_stores_the_expert_action_in_the_noisy_states(tmp_path):
    """DART: noise= perturbs the executed actions, label=clean stores what the expert would do in the states
    that noise led to. Replaying the executed (noisy) actions revisits those states, where the stored labels
    are the expert's noise-free actions."""
    out = tmp_path / "dart.hdf5"
    assert main(["record", "env=robolearn/Lift-v0", "episodes=1", "noise=0.3", "label=clean", f"out={out}"]) == 0
    (_, seed, stored), = _episodes(out)
    env = make_env("robolearn/Lift-v0")
    expert = make_expert(env, "scripted", noise=0.3, seed=seed)
    obs, _ = env.reset(seed=seed)
    expert.reset(seed=seed)
    executed = []
    for label in stored:
        a = expert.act(obs)
        np.testing.assert_allclose(expert.clean_action, label, rtol=0, atol=1e-6)
        executed.append(a)
        obs, *_ = env.step(a)
    env.close()
    assert np.abs(np.array(executed) - stored).max() > 0.1  # the executed actions were the noisy ones
    assert set(np.unique(stored[:, 4])) <= {-1.0, 1.0}  # the expert's gripper command is exactly open/closed


def test_record_label_clean_needs_an_expert_with_a_clean_action(tmp_path, capsys):
    rc = main(["record", "env=robolearn/Lift-v0", "expert=random", "label=clean", f"out={tmp_path / 'x.hdf5'}"])
    assert rc == 2 and "label=clean needs a scripted or checkpoint expert" in capsys.readouterr().err
    assert not (tmp_path / "x.hdf5").exists()
