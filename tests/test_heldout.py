"""Held-out evaluation by construction: disjoint env-seed ranges, train_seeds in checkpoints, refusals."""

import csv
import json
import logging

import h5py
import pytest
import torch

from robolearn import seeds as S
from robolearn.cli import main

ENV = "robolearn/ReachAround-v0"


def store_seeds(path) -> list[int]:
    with h5py.File(path, "r") as f:
        return sorted(int(f["data"][k].attrs["seed"]) for k in f["data"])


def csv_seeds(out) -> list[int]:
    return [int(r["seed"]) for r in csv.DictReader(open(out / "episodes.csv"))]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("heldout")
    demos = d / "demos.hdf5"
    assert main(["record", f"env={ENV}", "episodes=4", f"out={demos}"]) == 0  # the default seed
    assert main(["train", "policy=mse", f"data={demos}", f"out={d / 'bc'}", "train.steps=20",
                 "train.eval_episodes=0", "train.val_every=0", "train.batch_size=32"]) == 0
    return d, demos, d / "bc" / "checkpoints" / "last.pt"


# ------------------------------------------------------------------------------------------ the ranges
def test_ranges_are_disjoint_and_each_generator_stays_in_its_own():
    ranges = list(S.RANGES.values())
    for a, b in zip(ranges, ranges[1:]):
        assert a.stop <= b.start  # sorted, non-overlapping
    assert S.eval_seed(S.EVAL_SEED_GROUPS - 1, S.EPISODE_SEED_STRIDE - 1) == S.EVAL_RANGE.stop - 1
    from robolearn.algos.finetune import TRAIN_SEED_BASE
    from robolearn.config import RecordConfig

    default = RecordConfig.__dataclass_fields__["seed"].default
    assert default in S.DEMO_RANGE and default % S.EPISODE_SEED_STRIDE == 0  # on the eval grid (group 1000)
    assert TRAIN_SEED_BASE in S.FINETUNE_RANGE
    for run_seed in (0, 1, 99):
        assert S.demo_seed(run_seed, 0) in S.DEMO_RANGE and S.demo_seed(run_seed, 99_999) in S.DEMO_RANGE
        for rnd, ep in ((0, 0), (5, 19), (99, 999)):
            assert S.range_name(S.dagger_seed(run_seed, rnd, ep)) == "DAgger"
        for ep in (0, 12_345, 99_999):
            assert S.range_name(S.finetune_seed(run_seed, ep)) == "SAC fine-tuning"
    with pytest.raises(ValueError, match="outside the DAgger range"):
        S.dagger_seed(100, 0, 0)
    with pytest.raises(ValueError, match="outside the SAC fine-tuning range"):
        S.finetune_seed(100, 0)


def test_help_documents_the_ranges(capsys):
    for cmd in ("record", "eval"):
        assert main([cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "[10000000, 20000000)" in text and "[0, 10000000)" in text and "allow_train_seeds" in text


# ------------------------------------------------------------------------------ record -> train -> eval
def test_default_record_and_eval_are_disjoint_and_checkpoint_names_its_seeds(run, capsys):
    d, demos, ckpt = run
    demo = store_seeds(demos)
    assert demo == [S.DEMO_SEED_BASE + i for i in range(4)]
    ck = torch.load(ckpt, weights_only=True)
    assert ck["train_seeds"].dtype == torch.int64 and ck["train_seeds"].tolist() == demo
    assert ck["train_seeds_unknown"] == 0
    out = d / "ev"
    assert main(["eval", f"policy={ckpt}", "episodes=3", f"out={out}", "videos=0"]) == 0
    ev = csv_seeds(out)
    assert ev == [0, 1, 2] and not set(ev) & set(demo)
    assert json.loads((out / "results.json").read_text())["overlaps_training_seeds"] == 0


def test_eval_on_the_demo_seeds_is_refused_before_any_rollout(run, capsys, monkeypatch):
    import robolearn.eval.runner as runner

    d, _, ckpt = run
    group = S.DEMO_SEED_BASE // S.EPISODE_SEED_STRIDE
    monkeypatch.setattr(runner, "_rollout", lambda *a, **k: pytest.fail("rolled out on training seeds"))
    out = d / "refused"
    rc = main(["eval", f"policy={ckpt}", "episodes=3", f"seeds=[{group}]", f"out={out}", "videos=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    msg = " ".join(err.split())
    assert "10000000, 10000001, 10000002" in msg and f"[{group}]" in msg  # the seeds, the group
    assert "s*10000+i" in msg and "seeds=[0]" in msg and "allow_train_seeds=true" in msg  # rule, fix
    assert not out.exists()


def test_allow_train_seeds_evaluates_warns_and_counts(run, caplog):
    d, demos, ckpt = run
    group = S.DEMO_SEED_BASE // S.EPISODE_SEED_STRIDE
    out = d / "allowed"
    with caplog.at_level(logging.WARNING):
        rc = main(["eval", f"policy={ckpt}", "episodes=5", f"seeds=[{group}]", "allow_train_seeds=true",
                   f"out={out}", "videos=0"])
    assert rc == 0
    assert any("allow_train_seeds" in r.getMessage() and "seed" in r.getMessage() for r in caplog.records)
    assert set(csv_seeds(out)) & set(store_seeds(demos)) == set(store_seeds(demos))
    assert json.loads((out / "results.json").read_text())["overlaps_training_seeds"] == 4  # 4 demos of 5


def test_checkpoint_without_train_seeds_evaluates_with_a_warning(run, caplog):
    d, _, ckpt = run
    ck = torch.load(ckpt, weights_only=True)
    del ck["train_seeds"], ck["train_seeds_unknown"]
    old = d / "old.pt"
    torch.save(ck, old)
    with caplog.at_level(logging.WARNING):
        assert main(["eval", f"policy={old}", "episodes=2", f"out={d / 'old_ev'}", "videos=0"]) == 0
    assert any("cannot be checked" in r.getMessage() for r in caplog.records)
    assert json.loads((d / "old_ev" / "results.json").read_text())["overlaps_training_seeds"] is None


def test_dagger_rollouts_use_their_range_and_the_retrained_checkpoint_carries_them(run):
    from robolearn.algos.bc import TrainLoopConfig
    from robolearn.algos.dagger import DaggerConfig, run_dagger

    d, demos, ckpt = run
    out = d / "dagger"
    run_dagger(DaggerConfig(policy=str(ckpt), data=str(demos), out=str(out), rounds=1, episodes_per_round=2,
                            eval_episodes=0, train=TrainLoopConfig(steps=5, batch_size=32, val_every=0,
                                                                   eval_episodes=0)))
    rollouts = store_seeds(out / "round_1" / "episodes.hdf5")
    assert rollouts == [S.dagger_seed(0, 0, 0), S.dagger_seed(0, 0, 1)]
    assert all(S.range_name(s) == "DAgger" for s in rollouts)
    ck = torch.load(out / "round_1" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["train_seeds"].tolist() == sorted(store_seeds(demos) + rollouts)


def test_finetune_online_episodes_use_their_range_and_the_checkpoint_carries_all_seeds(run, capsys):
    from robolearn.algos.finetune import FinetuneConfig, finetune

    d, demos, ckpt = run
    out = d / "ft"
    summary = finetune(FinetuneConfig(policy=str(ckpt), demos=str(demos), out=str(out), steps=60,
                                      learning_starts=30, batch_size=32, hidden=[32, 32], eval_episodes=1,
                                      eval_initial=False))
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    seeds = ck["train_seeds"].tolist()
    online = [s for s in seeds if s not in store_seeds(demos)]
    assert set(store_seeds(demos)) <= set(seeds)
    assert online == [S.finetune_seed(0, e) for e in range(summary["episodes"] + 1)]
    group = S.DEMO_SEED_BASE // S.EPISODE_SEED_STRIDE
    rc = main(["eval", f"policy={out / 'checkpoints' / 'last.pt'}", "episodes=2", f"seeds=[{group}]",
               f"out={d / 'ft_ev'}", "videos=0"])
    assert rc == 2 and "refusing to evaluate on training seeds" in capsys.readouterr().err


def test_training_data_in_the_eval_range_is_warned_about(caplog, tmp_path):
    from robolearn.config import RecordConfig

    with caplog.at_level(logging.WARNING):
        RecordConfig(env=ENV, episodes=1, seed=0, out=str(tmp_path / "x.hdf5"))
        S.warn_if_evaluated(S.checkpoint_fields([3, S.DEMO_SEED_BASE]), (0, 1), 5, "finetune")
        S.warn_if_evaluated(S.checkpoint_fields([5, S.DEMO_SEED_BASE]), (0, 1), 5, "quiet")
    msgs = [r.getMessage() for r in caplog.records]
    assert any("seed=0 records demos in the evaluation seed range" in m for m in msgs)
    assert any("1 of finetune's evaluation env seeds (3)" in m for m in msgs)
    assert not any("quiet" in m for m in msgs)
    fields = S.merge_checkpoint_fields(S.checkpoint_fields([1, 2]), {"train_seeds": torch.tensor([2, 7])}, {})
    assert fields["train_seeds"].tolist() == [1, 2, 7] and fields["train_seeds_unknown"] == 1  # {} says nothing
