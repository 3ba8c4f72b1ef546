"""DAgger, interventions (scripted human) and auto mode: labels, aggregation, retraining."""

import hashlib

import h5py
import numpy as np
import pytest

from robolearn.algos.bc import TrainConfig, TrainLoopConfig, train
from robolearn.algos.dagger import DaggerConfig, ScriptedHuman, run_dagger
from robolearn.config import RecordConfig
from robolearn.policies import PolicyConfig
from robolearn.recording import record


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dagger")
    demos = d / "demos.hdf5"
    record(RecordConfig(env="robolearn/ReachAround-v0", episodes=6, out=str(demos)))
    train(TrainConfig(policy=PolicyConfig(head="mse"), data=str(demos), out=str(d / "bc"),
                      train=TrainLoopConfig(steps=30, batch_size=32, val_every=0, eval_episodes=0)))
    return demos, d / "bc" / "checkpoints" / "last.pt"


def _cfg(bc_run, out, mode, **kw):
    demos, ck = bc_run
    return DaggerConfig(policy=str(ck), data=str(demos), out=str(out), mode=mode, rounds=1, episodes_per_round=2,
                        eval_episodes=2, train=TrainLoopConfig(steps=10, batch_size=32, val_every=0,
                                                               eval_episodes=0), **kw)



@pytest.mark.parametrize("mode, source", [("expert", "dagger"), ("intervention", "intervention"),
                                          ("auto", "intervention")])
def test_round_aggregates_labelled_episodes(bc_run, tmp_path, mode, source):
    demos, _ = bc_run
    before = hashlib.sha256(demos.read_bytes()).hexdigest()
    res = run_dagger(_cfg(bc_run, tmp_path / mode, mode))
    assert hashlib.sha256(demos.read_bytes()).hexdigest() == before  # the user's demos are untouched
    assert (tmp_path / mode / "checkpoints" / "last.pt").exists()
    assert len(res["history"]) == 2 and res["history"][-1]["round"] == 1
    with h5py.File(tmp_path / mode / "aggregate.hdf5", "r") as f:
        eps = [f["data"][k] for k in f["data"] if f["data"][k].attrs["source"] == source]
        assert len(eps) == 2
        for g in eps:
            T = g.attrs["num_samples"]
            assert g["policy_actions"].shape == (T, g["actions"].shape[1])
            assert g["interventions"].shape == (T,)
            if mode == "expert":
                # every visited state is labelled: labels = expert actions; the expert ran with prob beta
                assert res["history"][-1]["labels"] >= T
            else:
                iv = g["interventions"][()]
                same = np.all(g["actions"][()] == g["policy_actions"][()], axis=1)
                assert np.all(same[~iv])  # where nobody intervened the executed action is the learner's
    assert res["expert_labels"] >= res["history"][0]["labels"]


def test_scripted_human_takes_over_and_hands_back():
    class Expert:
        def act(self, obs):
            return np.zeros(2, np.float32)

    h = ScriptedHuman(Expert(), threshold=0.5, hold=2)
    close, far = np.full(2, 0.1, np.float32), np.full(2, 0.9, np.float32)
    seq = [h.decide(None, a)[1] for a in (close, far, close, close, close, close)]
    assert seq == [False, True, True, True, False, False]


def test_config_errors(bc_run, tmp_path):
    from robolearn.config import ConfigError

    demos, ck = bc_run
    with pytest.raises(ConfigError, match="mode='human'.*valid options"):
        DaggerConfig(policy=str(ck), data=str(demos), mode="human")
    with pytest.raises(ConfigError, match="teleop='keyboard' needs mode=intervention"):
        DaggerConfig(policy=str(ck), data=str(demos), mode="expert", teleop="keyboard")


def test_labels_accumulate_over_rounds(bc_run, tmp_path):
    import dataclasses

    res = run_dagger(dataclasses.replace(_cfg(bc_run, tmp_path / "acc", "expert"), rounds=2))
    labels = [h["labels"] for h in res["history"]]
    assert labels == sorted(labels) and labels[2] > labels[1] > labels[0]
    assert res["history"][1]["labels"] - res["history"][0]["labels"] == res["history"][1]["round_labels"]
