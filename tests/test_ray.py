"""Scaling out on Ray (robolearn.scale), on one local Ray instance with 2 CPUs shared by the module's tests:
a 2x2 sweep whose table matches the cells' own files, a cell whose worker is killed resumes from its
checkpoint, eval backend=ray equals the local runner episode by episode, an unreachable address is a clear
error, finetune actors=2 trains and checkpoints (and survives a killed actor)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="ray is not importable (pip install -c constraints.txt -e '.[ray]')")

from robolearn.cli import compose, main  # noqa: E402
from robolearn.scale.sweep import run_sweep  # noqa: E402

torch.set_num_threads(1)
LIFT = "robolearn/Lift-v0"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local instance for the whole module (~5 s to start); robolearn.scale.connect() reuses it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    from robolearn.api import record

    p = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    record(env=LIFT, episodes=4, out=str(p))
    return p


def sweep_cfg(*overrides):
    return compose("sweep", list(overrides))


def fixed(*ov: str) -> str:
    """fixed=[...] as Hydra wants it: each override quoted (they contain '=')."""
    return "fixed=[" + ",".join(f"'{o}'" for o in ov) + "]"


# ------------------------------------------------------------------------------------------------ sweep
def test_sweep_2x2_table_matches_cells(tmp_path, lift_demos):
    out = tmp_path / "sw"
    cfg = sweep_cfg(
        "command=train",
        "grid={policy:[mse,gmm],train.seed:[0,1]}",
        fixed(f"data={lift_demos}", "train.steps=30", "train.batch_size=16", "train.eval_episodes=3",
              "train.val_every=0"),
        f"out={out}",
    )
    res = run_sweep(cfg, compose=compose, echo=lambda m: None)
    assert res["failed"] == [] and len(res["cells"]) == 4
    ids = sorted(c["id"] for c in res["cells"])
    assert ids == sorted(f"policy-{h}__seed-{s}" for h in ("mse", "gmm") for s in (0, 1))
    for h in ("mse", "gmm"):
        own = [json.loads((out / f"policy-{h}__seed-{s}" / "summary.json").read_text())["success_rate"]
               for s in (0, 1)]
        assert all(o is not None for o in own)
        med, lo, hi = np.median(own), min(own), max(own)
        row = next(line for line in res["table"].splitlines() if line.startswith(f"| {h} |"))
        assert row == f"| {h} | {med:.0%} [{lo:.0%}-{hi:.0%}] |"
        assert json.loads((out / f"policy-{h}__seed-0" / "summary.json").read_text())["head"] == h
    saved = json.loads((out / "sweep.json").read_text())
    assert {c["id"]: c["metrics"]["success_rate"] for c in saved["cells"]} == {
        c["id"]: json.loads((out / c["id"] / "summary.json").read_text())["success_rate"] for c in saved["cells"]
    }
    assert (out / "table.md").read_text() == res["table"]
    # a rerun skips every finished cell (nothing is trained again)
    before = {c: (out / c / "checkpoints" / "last.pt").stat().st_mtime_ns for c in ids}
    again = run_sweep(cfg, compose=compose, echo=lambda m: None)
    assert again["table"] == res["table"]
    assert before == {c: (out / c / "checkpoints" / "last.pt").stat().st_mtime_ns for c in ids}


def test_sweep_bad_cell_fails_before_any_work(tmp_path, capsys):
    rc = main(["sweep", "command=eval", "grid={env:[robolearn/Lift-v0,robolearn/Nope-v0]}",
               fixed("policy=scripted", "episodes=1", "videos=0"), f"out={tmp_path / 'bad'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cell env-Nope-v0" in err and "Nope-v0" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_killed_cell_resumes_from_its_checkpoint(tmp_path, lift_demos):
    """SIGKILL the worker running a cell after its first checkpoint: Ray runs the cell again, which resumes."""
    out = tmp_path / "kill"
    cell = out / "seed-0"
    steps = 3000
    cfg = sweep_cfg(
        "command=train",
        "grid={train.seed:[0]}",
        fixed(f"data={lift_demos}", "policy=mse", f"train.steps={steps}", "train.batch_size=8",
              "train.ckpt_every=100", "train.eval_episodes=0", "train.val_every=0", "train.log_every=1000"),
        f"out={out}",
        "retries=1",
    )
    killed = {}

    def killer():
        t_end = time.time() + 120
        while time.time() < t_end and not killed:
            ck, att = cell / "checkpoints" / "last.pt", cell / "attempts.json"
            if ck.exists() and att.exists():
                pid = json.loads(att.read_text())[0]["pid"]
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.01)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    res = run_sweep(cfg, compose=compose, echo=lambda m: None)
    th.join()
    assert killed, "the cell finished before its worker could be killed"
    assert res["failed"] == []
    attempts = json.loads((cell / "attempts.json").read_text())
    assert len(attempts) == 2 and attempts[0]["pid"] == killed["pid"] and attempts[1]["resumed"] is True
    assert "resumed" in (cell / "cell.log").read_text()  # train's own "resumed ... at step N" line
    summary = json.loads((cell / "summary.json").read_text())
    assert summary["steps"] == steps
    assert json.loads((cell / "cell.json").read_text())["attempts"] == 2


def test_unreachable_address_is_a_clear_error(tmp_path, capsys):
    rc = main(["sweep", "command=eval", "grid={env:[robolearn/Lift-v0]}", fixed("policy=scripted", "episodes=1"),
               f"out={tmp_path / 's'}", "address=ray://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "cannot reach the Ray cluster at address='ray://127.0.0.1:9'" in err and "Traceback" not in err
    rc = main(["eval", "policy=scripted", f"env={LIFT}", "episodes=1", "backend=ray", "address=127.0.0.1:9",
               f"out={tmp_path / 'e'}"])
    assert rc == 2 and "cannot reach the Ray cluster" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- eval
def small_policy(head="mse"):
    from robolearn.data.normalizer import Normalizer
    from robolearn.envutil import make_env
    from robolearn.policies import EncoderConfig, Policy, PolicyConfig, policy_state

    env = make_env(LIFT, obs_mode="state")
    sp, da = env.observation_space, env.action_space.shape[0]
    env.close()
    spec = {"obs": {k: {"shape": list(s.shape), "dtype": "float32"} for k, s in sp.spaces.items()},
            "action_dim": da, "To": 2, "Tp": 4, "Ta": 2}
    g = np.random.default_rng(0)
    arrays = {k: g.normal(size=(64, *s.shape)).astype(np.float32) for k, s in sp.spaces.items()}
    arrays["action"] = g.uniform(-1, 1, size=(64, da)).astype(np.float32)
    torch.manual_seed(0)
    p = Policy(spec, PolicyConfig(head=head, encoder=EncoderConfig(mlp_hidden=[32]), head_cfg={"hidden": [32]}),
               Normalizer.from_data(arrays))
    ck = policy_state(p)
    ck["env_id"], ck["env_kwargs"] = LIFT, {"obs_mode": "state", "reward_type": "dense"}
    return ck


@pytest.mark.parametrize("policy", ["checkpoint", "scripted"])
def test_ray_eval_equals_local_episode_by_episode(tmp_path, policy):
    from robolearn.eval.config import EvalConfig
    from robolearn.eval.runner import evaluate

    if policy == "checkpoint":  # mse: deterministic, so the split cannot change an episode
        policy = str(tmp_path / "p.pt")
        torch.save(small_policy(), policy)
    kw = dict(policy=policy, env=LIFT, episodes=3, seeds=[0, 1], videos=1, noise=0.1 if policy == "scripted" else 0)
    local = evaluate(EvalConfig(**kw, out=str(tmp_path / "local")), show=False)
    remote = evaluate(EvalConfig(**kw, out=str(tmp_path / "ray"), backend="ray", workers=2), show=False)
    recs = [json.loads((tmp_path / d / "episodes.json").read_text()) for d in ("local", "ray")]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "video"} for r in rs]  # noqa: E731
    assert [r["seed"] for r in recs[1]] == [0, 1, 2, 10000, 10001, 10002]
    assert strip(recs[0]) == strip(recs[1])
    for k in ("success_rate", "return_mean", "length_mean", "cycle_time_steps", "success_rate_per_seed"):
        assert local[k] == remote[k]
    assert remote["backend"] == "ray" and [os.path.basename(v) for v in remote["videos"]] == ["episode_0.mp4"]


# --------------------------------------------------------------------------------------------- finetune
def test_finetune_two_actors_trains_checkpoints_and_survives_a_dead_actor(tmp_path, monkeypatch):
    from robolearn.algos.finetune import FinetuneConfig, finetune
    from robolearn.policies.checkpoint import read_checkpoint
    from robolearn.scale import actors as actors_mod

    made = {}
    orig = actors_mod.RemoteCollector.__init__

    def spy(self, *a, **k):
        orig(self, *a, **k)
        made["c"], made["pids"] = self, self.pids()

    monkeypatch.setattr(actors_mod.RemoteCollector, "__init__", spy)
    killed = {}
    done = threading.Event()  # until the run ends (Ray's start-up alone can take minutes on a loaded machine)

    def killer():
        while not done.is_set():
            c = made.get("c")
            if c is not None and c.collected >= 150:
                os.kill(made["pids"][0], signal.SIGKILL)
                killed["pid"] = made["pids"][0]
                return
            time.sleep(0.01)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    out = tmp_path / "sac"
    kw = dict(env=LIFT, bridge="none", steps=400, learning_starts=100, batch_size=32, hidden=[32, 32],
              eval_episodes=2, eval_initial=False, ckpt_every=100, log_every=100, pull_every=20, out=str(out))
    try:
        s = finetune(FinetuneConfig(**kw, actors=2))
    finally:
        done.set()
    th.join()
    assert killed, "the run ended before an actor could be killed"
    assert s["actors"] == 2 and s["actor_restarts"] >= 1 and s["env_steps"] == 400
    assert s["updates"] == 400 - 100 + 1  # utd=1 per collected step from learning_starts on
    assert s["env_steps_per_s"] > 0 and s["updates_per_s"] > 0
    ck = read_checkpoint(out / "checkpoints" / "last.pt", None, field="t")
    assert int(ck["step"]) == 400 and json.loads((out / "results.json").read_text())["steps"] == 400
    # resume continues the run with actors, from the checkpoint's step
    s2 = finetune(FinetuneConfig(**{**kw, "steps": 500}, actors=2, resume=True))
    assert s2["env_steps"] == 500 and s2["updates"] == 500 - 100 + 1
