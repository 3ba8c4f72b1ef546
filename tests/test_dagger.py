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
    train(
        TrainConfig(
            policy=PolicyConfig(head="mse"),
            data=str(demos),
            out=str(d / "bc"),
            train=TrainLoopConfig(steps=30, batch_size=32, val_every=0, eval_episodes=0),
        )
    )
    return demos, d / "bc" / "checkpoints" / "last.pt"


def _cfg(bc_run, out, mode, **kw):
    demos, ck = bc_run
    kw.setdefault("eval_episodes", 2)
    return DaggerConfig(
        policy=str(ck),
        data=str(demos),
        out=str(out),
        mode=mode,
        rounds=1,
        episodes_per_round=2,
        train=TrainLoopConfig(steps=10, batch_size=32, val_every=0, eval_episodes=0),
        **kw,
    )


@pytest.mark.parametrize(
    "mode, source", [("expert", "dagger"), ("intervention", "intervention"), ("auto", "intervention")]
)
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


def test_expert_noise_perturbs_the_path_but_not_the_labels(bc_run, tmp_path):
    """DART inside DAgger: with the expert driving (beta=1), noise moves the visited states, and every stored
    label is still the noise-free expert action at the state it was taken in."""
    import gymnasium as gym
    import robolearn_envs

    def episodes(out):
        with h5py.File(out / "aggregate.hdf5", "r") as f:
            return [
                {k: f["data"][d][k][()] for k in ("actions", "states")}
                for d in sorted(f["data"])
                if f["data"][d].attrs["source"] == "dagger"
            ]

    kw = dict(beta=1.0, eval_episodes=0, drop_stalled=False)
    run_dagger(_cfg(bc_run, tmp_path / "c", "expert", **kw))
    run_dagger(_cfg(bc_run, tmp_path / "n", "expert", expert_noise=0.3, **kw))
    clean, noisy = episodes(tmp_path / "c"), episodes(tmp_path / "n")
    assert len(noisy) == len(clean) == 2
    T = min(len(noisy[0]["states"]), len(clean[0]["states"]))
    assert not np.allclose(noisy[0]["states"][:T], clean[0]["states"][:T])  # the noise changed the path
    env = gym.make("robolearn/ReachAround-v0")
    env.reset(seed=0)
    for e in noisy:
        for t in range(0, len(e["actions"]), 7):
            env.unwrapped.set_state(e["states"][t])
            label = robolearn_envs.make_expert(env, seed=0).act(None)
            np.testing.assert_allclose(e["actions"][t], label, atol=1e-6)
    with pytest.raises(Exception, match="expert_noise"):
        _cfg(bc_run, tmp_path / "bad", "expert", expert_noise=-0.1)


def _norm_buffers(path):
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in ck["model"].items() if k.startswith("normalizer.")}


@pytest.mark.parametrize(
    "refit, retrain, expect",
    [(False, "scratch", False), (True, "scratch", True), (None, "scratch", True), (None, "finetune", False)],
)
def test_retrain_refits_the_normalizer_unless_told_to_keep_it(bc_run, tmp_path, refit, retrain, expect):
    import torch

    _, ck = bc_run
    kw = (
        {} if refit is None else {"refit_normalizer": refit}
    )  # None: the default (measured, see algos/dagger.py)
    run_dagger(_cfg(bc_run, tmp_path / "n", "expert", beta=0.0, eval_episodes=0, retrain=retrain, **kw))
    init, new = _norm_buffers(ck), _norm_buffers(tmp_path / "n" / "round_1" / "checkpoints" / "last.pt")
    assert init.keys() == new.keys() and init
    same = all(torch.equal(init[k], new[k]) for k in init)
    assert same != expect  # learner rollouts widen the ranges when refitted


def test_chunk_labels_are_the_experts_rollout_from_the_saved_state(bc_run, tmp_path):
    import gymnasium as gym
    import robolearn_envs

    from robolearn.data.dataset import WindowDataset, chunk_labels_path
    from robolearn.policies import load_policy

    out = tmp_path / "c"
    run_dagger(_cfg(bc_run, out, "expert", beta=0.3, eval_episodes=0))
    agg = out / "aggregate.hdf5"
    assert chunk_labels_path(agg).exists() and (out / "round_1" / "chunk_labels.hdf5").exists()
    Tp = load_policy(str(out / "round_1" / "checkpoints" / "last.pt")).spec["Tp"]
    assert Tp > 1
    ds = WindowDataset(agg, To=2, Tp=Tp, split=None)
    env = gym.make("robolearn/ReachAround-v0")
    env.reset(seed=0)
    checked = differs = 0
    with h5py.File(agg, "r") as f:
        for e, d in enumerate(ds.demos):
            g = f["data"][d]
            if g.attrs["source"] != "dagger":
                continue
            T = int(g.attrs["num_samples"])
            for t in (0, T // 2, T - 2):  # T - 2: the rollout may outlast the episode
                env.unwrapped.set_state(g["states"][t])
                exp = robolearn_envs.make_expert(env, seed=99)  # a fresh expert from the saved state
                want = []
                for _ in range(Tp):
                    want.append(exp.act(None))
                    _, _, term, _, _ = env.unwrapped.step(want[-1])
                    if term or t + len(want) >= 60:  # ReachAround's episode limit
                        break
                want += [want[-1]] * (Tp - len(want))
                got = ds.get_batch(np.array([ds.starts[e] + t]))["action"][0].numpy()
                np.testing.assert_array_equal(got, np.stack(want))
                checked += 1
                shifted = g["actions"][()][np.minimum(np.arange(t, t + Tp), T - 1)]
                differs += not np.array_equal(got, shifted)  # not the labels at the states visited next
    assert checked >= 6 and differs >= 1
    visited = run_dagger(
        _cfg(bc_run, tmp_path / "v", "expert", beta=0.3, eval_episodes=0, chunk_labels="visited")
    )
    assert not chunk_labels_path(tmp_path / "v" / "aggregate.hdf5").exists() and visited["history"]


def test_beta_mixing_resets_the_learners_chunk_when_control_changes_hands(bc_run, tmp_path, monkeypatch):
    from robolearn.policies import ActionChunker

    resets = []
    orig = ActionChunker.reset
    monkeypatch.setattr(ActionChunker, "reset", lambda self: (resets.append(1), orig(self))[1])
    run_dagger(_cfg(bc_run, tmp_path / "b", "expert", beta=0.5, eval_episodes=0))
    changes, eps = 0, 0
    with h5py.File(tmp_path / "b" / "round_1" / "episodes.hdf5", "r") as f:
        for d in f["data"]:
            eps += 1  # a new chunker resets itself once
            iv = f["data"][d]["interventions"][()].astype(int)
            changes += int(np.abs(np.diff(np.r_[0, iv])).sum())  # the learner has control before step 0
    assert changes >= 2 and len(resets) == eps + changes  # and once each time control changed hands


def test_takeovers_only_and_drop_hopeless(bc_run, tmp_path, monkeypatch):
    import robolearn.algos.dagger as dg

    seen = []
    real = dg.train
    monkeypatch.setattr(dg, "train", lambda c: (seen.append(c.policy_step_weight), real(c))[1])
    run_dagger(_cfg(bc_run, tmp_path / "i", "intervention", eval_episodes=0))
    run_dagger(_cfg(bc_run, tmp_path / "j", "intervention", eval_episodes=0, takeovers_only=False))
    assert seen == [0.0, 1.0]
    # the learner crashes into the pillar from where the expert could still go round: with a scratch
    # expert that always fails, every episode is stopped at the first check
    monkeypatch.setattr(dg.Scratch, "rollout", lambda self, s, t, n: (np.zeros((1, 5), np.float32), False))
    res = run_dagger(
        _cfg(
            bc_run,
            tmp_path / "h",
            "expert",
            eval_episodes=0,
            drop_hopeless=True,
            hopeless_every=3,
            chunk_labels="visited",
        )
    )
    assert res["history"][-1]["hopeless_dropped"] == 2 and res["history"][-1]["steps"] == 2 * 3


def test_drop_stalled_stops_or_hands_over_where_the_learner_makes_no_progress(bc_run, tmp_path, monkeypatch):
    import robolearn.algos.dagger as dg

    # the scratch expert always needs 20 more steps: whatever the learner does, it gets no closer
    monkeypatch.setattr(dg.Scratch, "rollout", lambda self, s, t, n: (np.zeros((20, 5), np.float32), True))
    kw = dict(eval_episodes=0, drop_stalled=True, hopeless_every=3, chunk_labels="visited", beta=0.0)
    res = run_dagger(_cfg(bc_run, tmp_path / "s", "expert", **kw))
    last = res["history"][-1]
    assert last["stalled_dropped"] == 2 and last["hopeless_dropped"] == 0
    # checked at step 3 (sets the mark), stalled at step 6
    assert last["steps"] == 2 * 6 and last["round_labels"] == 2 * 6
    res = run_dagger(_cfg(bc_run, tmp_path / "t", "expert", on_stall="takeover", **kw))
    with h5py.File(tmp_path / "t" / "round_1" / "episodes.hdf5", "r") as f:
        for d in f["data"]:
            iv = f["data"][d]["interventions"][()].astype(bool)
            assert len(iv) > 6 and not iv[:6].any() and iv[6:].all()  # beta=0: the learner, then the expert
    # an expert's steps-to-go that shrinks as fast as the steps taken: never stalled
    left = iter(range(1000, 0, -3))
    monkeypatch.setattr(
        dg.Scratch, "rollout", lambda self, s, t, n: (np.zeros((next(left), 5), np.float32), True)
    )
    res = run_dagger(_cfg(bc_run, tmp_path / "p", "expert", **kw))
    assert res["history"][-1]["stalled_dropped"] == 0 and res["history"][-1]["steps"] > 2 * 6


def test_a_checkpoint_expert_refuses_what_needs_a_scripted_one(bc_run, tmp_path):
    from robolearn.config import ConfigError

    _, ck = bc_run
    with pytest.raises(ConfigError, match="drop_stalled=true .* needs expert=scripted"):
        _cfg(bc_run, tmp_path / "a", "expert", expert=str(ck), drop_stalled=True)
    cfg = _cfg(bc_run, tmp_path / "b", "expert", expert=str(ck))
    assert cfg.drop_stalled is False  # the default: on only where the expert can replay saved states
    assert _cfg(bc_run, tmp_path / "c", "expert").drop_stalled is True
    assert _cfg(bc_run, tmp_path / "d", "intervention").drop_stalled is False
    with pytest.raises(ConfigError, match="on_stall=takeover acts on drop_stalled in mode=expert"):
        _cfg(bc_run, tmp_path / "e", "intervention", on_stall="takeover")
    with pytest.raises(ConfigError, match="Tp=8-step chunks .* Fix: chunk_labels=visited"):
        run_dagger(cfg)
    assert not (tmp_path / "b" / "aggregate.hdf5").exists()  # refused before any work


def test_stall_human_steps_in_only_where_the_policy_makes_no_progress():
    """StallHuman (finetune intervention_trigger=stall): a policy that is the expert is never interrupted; a
    policy that does nothing is taken over at its second look (step `every`), for `hold` steps, by the expert."""
    from robolearn.algos.dagger import Scratch, StallHuman
    from robolearn.envutil import make_env
    from robolearn.recording import make_expert

    env = make_env("robolearn/Lift-v0")
    expert = make_expert(env, "scripted")
    scratch = Scratch("robolearn/Lift-v0", {}, "scripted", 0)
    human = StallHuman(env, expert, scratch, every=5, progress=0.5, hold=3)
    for policy, expect in (("expert", []), ("idle", [5, 6, 7])):
        obs, _ = env.reset(seed=3)
        human.reset()
        taken = []
        for t in range(12):
            a_exp = np.asarray(expert.act(obs), np.float32)
            a_pol = a_exp if policy == "expert" else np.zeros_like(a_exp)
            a, iv = human.decide(obs, a_pol)
            if iv:
                taken.append(t)
                np.testing.assert_allclose(a, a_exp)
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
        assert taken == expect, (policy, taken)
    scratch.close()
    env.close()
