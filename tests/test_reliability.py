"""Nothing lost, nothing silently wrong: interrupted stages, broken checkpoints, bad values found before work.

Each test is a case a user hit (see the reliability issue): it failed before the fix and passes now."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch

from robolearn.algos.bc import TrainConfig, TrainLoopConfig, atomic_save, train
from robolearn.cli import main
from robolearn.config import RecordConfig
from robolearn.policies import PolicyConfig
from robolearn.recording import record
from robolearn.signals import Interrupted, interruptible, stop_point

ROBOLEARN = str(Path(sys.executable).parent / "robolearn")
ENV = "robolearn/ReachAround-v0"


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    p = tmp_path_factory.mktemp("rel") / "demos.hdf5"
    assert record(RecordConfig(env=ENV, episodes=6, out=str(p)))["episodes_kept"] == 6
    return p


def _tcfg(data, out, head="mse", steps=20, **kw):
    return TrainConfig(
        policy=PolicyConfig(head=head),
        data=str(data),
        out=str(out),
        train=TrainLoopConfig(steps=steps, batch_size=32, val_every=0, eval_episodes=0, **kw),
    )


@pytest.fixture(scope="module")
def bc_ckpt(demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("bc")
    train(_tcfg(demos, out))
    return out / "checkpoints" / "last.pt"


def _cli(capsys, *args) -> tuple[int, str]:
    rc = main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


# ------------------------------------------------------------------------------------------------ signals
def test_deferred_stop_survives_an_inner_context():
    """DAgger records under a deferred context and retrains under an immediate one: a Ctrl-C that arrived
    while collecting must stop the retraining at once, and one that arrived during retraining must not be
    cleared when the inner context exits (two Ctrl-C's once did nothing)."""
    with pytest.raises(Interrupted) as e, interruptible(deferred=True):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        with interruptible():  # entered with a stop pending: raises at once
            pytest.fail("the inner context ran although a stop was pending")
    assert e.value.signum == signal.SIGTERM
    with pytest.raises(Interrupted), interruptible(deferred=True):
        with interruptible(deferred=True):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        stop_point()  # the inner exit kept the request
    with interruptible(deferred=True):
        stop_point()  # a new outermost context starts clean


def test_sigterm_train_exits_143_and_resume_continues(demos, tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen(
        [
            ROBOLEARN,
            "train",
            "policy=mse",
            f"data={demos}",
            f"out={out}",
            "train.steps=100000",
            "train.eval_episodes=0",
            "train.val_every=0",
            "train.batch_size=16",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 60
    while not (out / "tb").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    log = p.communicate(timeout=60)[0]
    assert p.returncode == 143, log
    assert "Traceback" not in log
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < ck["step"] < 100000
    assert not (out / "summary.json").exists()  # nothing claims the run finished


# ------------------------------------------------------------------------------------------------ loop
def test_interrupted_stage_stops_the_loop_and_rerun_finishes(tmp_path, monkeypatch):
    from robolearn import loop

    cfg = loop.LoopConfig(
        env=ENV,
        policy="mse",
        out=str(tmp_path / "L"),
        demo_episodes=3,
        stages=["bc"],
        eval_episodes=2,
        videos=0,
        bc=TrainLoopConfig(steps=20, batch_size=16, val_every=0, eval_episodes=0),
    )
    real = loop.train

    def interrupted_train(tcfg):
        real(
            TrainConfig(**{**tcfg.__dict__, "train": TrainLoopConfig(**{**tcfg.train.__dict__, "steps": 5})})
        )
        return {"interrupted": True, "signal": 15, "step": 5}

    monkeypatch.setattr(loop, "train", interrupted_train)
    with pytest.raises(Interrupted) as e:
        loop.run_loop(cfg)
    assert e.value.signum == 15
    out = Path(cfg.out)
    assert not (out / "eval_bc").exists() and not (out / "report.md").exists()
    assert json.loads((out / "bc" / "stage.json").read_text())["done"] is False
    monkeypatch.setattr(loop, "train", real)
    res = loop.run_loop(cfg)  # resumes BC from its 5-step checkpoint to 20 steps, then evaluates
    assert torch.load(out / "bc/checkpoints/last.pt", weights_only=True)["step"] == 20
    assert json.loads((out / "bc" / "stage.json").read_text())["done"] is True
    assert (out / "report.md").exists() and res["rows"][0][0] == "bc"
    first_eval = (out / "eval_bc" / "stage.json").read_text()
    # a changed upstream stage invalidates everything computed from it
    cfg.bc.steps = 30
    loop.run_loop(cfg)
    assert torch.load(out / "bc/checkpoints/last.pt", weights_only=True)["step"] == 30
    assert (out / "eval_bc" / "stage.json").read_text() != first_eval
    stale = sorted(p.name for p in (out / "stale").iterdir())
    assert any(s.startswith("bc-") for s in stale) and any(s.startswith("eval_bc-") for s in stale)


def test_loop_config_names_fields_as_typed(capsys):
    for arg, want in (
        ("bc.steps=0", "bc.steps=0"),
        ("dagger.rounds=-1", "dagger.rounds=-1"),
        ("sac.steps=-5", "sac.steps=-5"),
        ("sac.intervention=bogus", "sac.intervention='bogus'"),
    ):
        rc, text = _cli(capsys, "loop", f"env={ENV}", arg)
        assert rc == 2 and want in text and "Traceback" not in text, text


# ------------------------------------------------------------------------------------------------ DAgger
def _dcfg(demos, ck, out, **kw):
    from robolearn.algos.dagger import DaggerConfig

    return DaggerConfig(
        policy=str(ck),
        data=str(demos),
        out=str(out),
        mode="expert",
        rounds=1,
        episodes_per_round=2,
        eval_episodes=0,
        train=TrainLoopConfig(steps=10, batch_size=16, val_every=0, eval_episodes=0),
        **kw,
    )


def _round_seeds(agg: Path, rnd: int) -> list[int]:
    with h5py.File(agg, "r") as f:
        return sorted(
            int(g.attrs["seed"]) for g in f["data"].values() if int(g.attrs.get("round", -1)) == rnd
        )


def test_dagger_rerun_after_kill_never_duplicates_episodes(demos, bc_ckpt, tmp_path):
    from robolearn.algos.dagger import run_dagger

    out = tmp_path / "d"
    run_dagger(_dcfg(demos, bc_ckpt, out))
    seeds = _round_seeds(out / "aggregate.hdf5", 0)
    assert len(seeds) == 2
    # a kill after the round's episodes reached the aggregate but before the round's state was saved
    st = json.loads((out / "dagger_state.json").read_text())
    st.update(
        round=0, history=st["history"][:0], policy=str(bc_ckpt), labels=st["history"][0]["labels"] - 2 * 0
    )
    (out / "dagger_state.json").write_text(json.dumps(st))
    res = run_dagger(_dcfg(demos, bc_ckpt, out))
    assert _round_seeds(out / "aggregate.hdf5", 0) == seeds  # not appended twice
    assert res["history"][-1]["round"] == 1


def test_dagger_refuses_an_out_dir_of_other_inputs(demos, bc_ckpt, tmp_path):
    from robolearn.algos.dagger import run_dagger
    from robolearn.config import ConfigError

    out = tmp_path / "d"
    run_dagger(_dcfg(demos, bc_ckpt, out))
    other = tmp_path / "other.hdf5"
    record(RecordConfig(env=ENV, episodes=3, seed=777, out=str(other)))
    with pytest.raises(ConfigError, match="other inputs.*data"):
        run_dagger(_dcfg(other, bc_ckpt, out))


def test_dagger_interrupted_retrain_stops_without_results(demos, bc_ckpt, tmp_path, monkeypatch):
    from robolearn.algos import dagger

    monkeypatch.setattr(dagger, "train", lambda cfg: {"interrupted": True, "signal": 15, "step": 3})
    out = tmp_path / "d"
    with pytest.raises(Interrupted):
        dagger.run_dagger(_dcfg(demos, bc_ckpt, out))
    assert not (out / "results.json").exists()
    assert (
        not (out / "dagger_state.json").exists()
        or json.loads((out / "dagger_state.json").read_text())["round"] == 0
    )
    # the round's finished episodes are kept for the rerun
    assert len(_round_seeds(out / "round_1" / "episodes.hdf5", 0)) == 2


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture
def broken(tmp_path, bc_ckpt):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(bc_ckpt.read_bytes()[: bc_ckpt.stat().st_size // 2])
    sac = tmp_path / "sac.pt"
    torch.save({"format": "robolearn-sac/1", "sac": {}}, sac)
    return {"empty": empty, "cut": cut, "sac": sac}


@pytest.mark.parametrize("kind", ["empty", "cut", "sac"])
def test_broken_checkpoints_give_one_clear_error_everywhere(kind, broken, demos, tmp_path, capsys):
    bad = broken[kind]
    cases = [
        ("train", "policy=mse", f"data={demos}", f"out={tmp_path}/t", "train.steps=2", f"init_from={bad}"),
        ("dagger", f"policy={bad}", f"data={demos}", f"out={tmp_path}/d", "rounds=1"),
        ("finetune", f"policy={bad}", f"out={tmp_path}/f", "steps=10", f"env={ENV}"),
    ]
    if kind != "sac":  # eval runs SAC checkpoints (a sac checkpoint there is legitimate)
        cases.append(("eval", f"policy={bad}", f"env={ENV}", "episodes=1", f"out={tmp_path}/e"))
    for args in cases:
        rc, text = _cli(capsys, *args)
        assert rc == 2, (args, text)
        assert "Traceback" not in text and str(bad) in text, (args, text)
        want = {
            "empty": "is empty (0 bytes",
            "cut": "not a robolearn checkpoint",
            "sac": "fine-tuned SAC checkpoint",
        }
        assert want[kind] in text, (args, text)


def test_resume_with_other_settings_or_a_broken_checkpoint(demos, tmp_path, capsys):
    out = tmp_path / "r"
    train(_tcfg(demos, out))
    rc, text = _cli(
        capsys, "train", "policy=gmm", f"data={demos}", f"out={out}", "resume=true", "train.steps=30"
    )
    assert rc == 2 and "policy='gmm' (the run has 'mse')" in text and "Traceback" not in text
    rc, text = _cli(capsys, "train", "policy=mse", f"data={demos}", f"out={out}", "resume=true", "Tp=4")
    assert rc == 2 and "Tp=4 (the run has 8)" in text
    (out / "checkpoints" / "last.pt").write_bytes(b"\x00" * 100)
    rc, text = _cli(capsys, "train", "policy=mse", f"data={demos}", f"out={out}", "resume=true")
    assert rc == 2 and "last.pt" in text and "Traceback" not in text


def test_resume_before_the_first_checkpoint_starts_the_run(demos, tmp_path):
    out = tmp_path / "fresh"
    (out / "checkpoints").mkdir(parents=True)
    stale = out / "checkpoints" / ".last.pt.tmp-999999999"  # a write killed mid-way (pid long gone)
    stale.write_bytes(b"half")
    cfg = _tcfg(demos, out)
    cfg.resume = True
    s = train(cfg)
    assert s["steps"] == 20 and not stale.exists()


def test_checkpoint_write_on_a_full_disk(tmp_path, bc_ckpt):
    from robolearn.algos.bc import CheckpointWriteError

    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.decode().strip()[:80]})")
    try:
        ck = torch.load(bc_ckpt, weights_only=True)
        small = {"format": ck["format"], "w": torch.zeros(1000)}
        atomic_save(small, mnt / "last.pt")
        before = (mnt / "last.pt").read_bytes()
        big = {**small, "w": torch.zeros(2_000_000)}  # 8 MB on a 1 MB disk
        with pytest.raises(
            CheckpointWriteError, match=r"no space left.*previous last.pt is intact.*resume=true"
        ):
            atomic_save(big, mnt / "last.pt")
        assert (mnt / "last.pt").read_bytes() == before
        assert sorted(p.name for p in mnt.iterdir()) == ["last.pt"]  # no temp file left behind
        assert main(["eval", "--help"]) == 0
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ------------------------------------------------------------------------------------------------ checked early
def test_values_checked_before_work(demos, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    rc, text = _cli(capsys, "eval", "policy=scripted", f"env={ENV}", "episodes=1", f"out={f}")
    assert rc == 2 and "is a file" in text and f.read_text() == "keep me"
    # the evaluation env lacks the data's observation keys: found before training, not after it
    lift = tmp_path / "lift.hdf5"
    record(RecordConfig(env="robolearn/Lift-v0", episodes=2, out=str(lift)))
    rc, text = _cli(
        capsys,
        "train",
        "policy=mse",
        f"data={lift}",
        f"out={tmp_path}/x",
        f"env={ENV}",
        "train.steps=5",
        "train.eval_episodes=2",
    )
    assert rc == 2 and "Traceback" not in text and not (tmp_path / "x" / "checkpoints").exists(), text


def test_diverging_training_is_an_error(demos, tmp_path, capsys):
    rc, text = _cli(
        capsys,
        "train",
        "policy=mse",
        f"data={demos}",
        f"out={tmp_path}/lr",
        "train.lr=20",
        "train.steps=200",
        "train.warmup_steps=1",
        "train.grad_clip=0",
        "train.eval_episodes=0",
        "train.val_every=0",
    )
    assert rc != 0 and "train.lr" in text and "Traceback" not in text, text
