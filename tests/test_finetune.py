"""`robolearn finetune`: SAC fine-tuning of BC checkpoints with demos (fast unless marked slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robolearn.algos import finetune as ft
from robolearn.algos.bc import TrainConfig, TrainLoopConfig, train
from robolearn.algos.finetune import FinetuneConfig, finetune, sac_actor_from_checkpoint
from robolearn.config import ConfigError, RecordConfig
from robolearn.policies import PolicyConfig, load_policy
from robolearn.recording import record

ROBOLEARN = str(Path(sys.executable).parent / "robolearn")
ENV = "robolearn/Lift-v0"


@pytest.fixture(scope="module")
def bc(tmp_path_factory):
    """8 Lift demos and tiny gmm / mse BC checkpoints trained on them (50 steps each)."""
    root = tmp_path_factory.mktemp("ft")
    demos = root / "lift.hdf5"
    assert record(RecordConfig(env=ENV, episodes=8, out=str(demos)))["episodes_kept"] == 8
    ckpts = {}
    for head in ("gmm", "mse"):
        cfg = TrainConfig(
            policy=PolicyConfig(head=head),
            data=str(demos),
            out=str(root / f"bc_{head}"),
            train=TrainLoopConfig(
                steps=50, batch_size=32, val_every=0, eval_episodes=0, ckpt_every=50, log_every=25
            ),
        )
        train(cfg)
        ckpts[head] = root / f"bc_{head}" / "checkpoints" / "last.pt"
    return demos, ckpts


def small(policy, demos, out, **kw) -> FinetuneConfig:
    args = dict(
        policy=str(policy),
        demos=None if demos is None else str(demos),
        out=str(out),
        steps=120,
        learning_starts=40,
        batch_size=32,
        hidden=[32, 32],
        eval_episodes=1,
        eval_initial=False,
        ckpt_every=60,
        log_every=20,
        distill_steps=20,
    )
    args.update(kw)
    return FinetuneConfig(**args)


@pytest.mark.parametrize("head", ["gmm", "mse"])
def test_finetune_runs_and_writes_checkpoint_and_results(bc, tmp_path, head):
    demos, ckpts = bc
    s = finetune(small(ckpts[head], demos, tmp_path / "run"))
    assert s["env_steps"] == 120 and s["updates"] == 120 - 40 + 1
    ck_path = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = torch.load(ck_path, weights_only=True)  # plain data + tensors only
    assert ck["format"] == ft.FORMAT and ck["step"] == 120 and ck["bridge"] == "residual"
    assert ck["replay"]["size"] == 120 and ck["demo_replay"]["size"] > 0
    assert ck["bc_policy"]["head"] == head and ck["bc_path"] == str(ckpts[head].resolve())
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    for k in ("success_rate", "success_ci", "return_mean", "cycle_time_steps"):
        assert k in res
    assert res["episodes"] == 1
    # residual bridge on Lift's default sparse reward: a learned temperature (guarded) and TD targets in [0, 1]
    assert res["temperature"]["learned"] and res["temperature"]["initial"] == 0.1
    assert "rollback" not in res["temperature"]  # no evaluation fell (eval_initial=False: nothing to compare)
    assert res["td_target_bounds"] == [0.0, 1.0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 120
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents*"))
    # the temperature's resolution does not depend on the head: one run checks autotune=false
    if head == "mse":
        finetune(small(ckpts[head], demos, tmp_path / "fixed", autotune=False))
        fixed = json.loads((tmp_path / "fixed" / "results.json").read_text())["temperature"]
        assert fixed == {"learned": False, "initial": 0.05, "final": pytest.approx(0.05)}


def test_batches_follow_demo_ratio(bc, tmp_path, monkeypatch):
    demos, ckpts = bc
    seen = []
    from robolearn.algos import sac as sacmod

    orig = sacmod.SAC.update

    def update(self, batch):
        seen.append(float(batch["is_demo"].float().mean()))
        return orig(self, batch)

    monkeypatch.setattr(sacmod.SAC, "update", update)
    finetune(small(ckpts["mse"], demos, tmp_path / "a", steps=60, demo_ratio=0.25))
    assert seen and all(abs(r - 0.25) < 1e-6 for r in seen)  # 8 of 32 rows
    seen.clear()
    # annealed 1.0 -> 0.0 over env steps 0..100: at env step t the ratio is 1 - t / 100
    finetune(
        small(
            ckpts["mse"],
            demos,
            tmp_path / "b",
            steps=100,
            demo_ratio=1.0,
            demo_ratio_end=0.0,
            demo_ratio_steps=100,
        )
    )
    expect = [round((1 - t / 100) * 32) / 32 for t in range(40, 101)]
    np.testing.assert_allclose(seen, expect)


def _interrupt_at_env_step_70(monkeypatch):
    """Ctrl-C during the update of env step 70 (small(): learning starts at 40); returns the real sampler."""
    from robolearn.algos import replay as replaymod

    calls = {"n": 0}
    orig = replaymod.MixedSampler.sample

    def sample(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 31:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(replaymod.MixedSampler, "sample", sample)
    return orig


def test_resume_restores_buffer_and_step(bc, tmp_path, monkeypatch):
    from robolearn.algos import replay as replaymod

    demos, ckpts = bc
    orig = _interrupt_at_env_step_70(monkeypatch)
    s = finetune(small(ckpts["gmm"], demos, tmp_path / "run"))
    assert s["interrupted"] and s["step"] == 70
    ck = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert ck["step"] == 70 and ck["replay"]["size"] == 70 and ck["sac"]["step"] == 30
    episodes_before = ck["episodes"]
    monkeypatch.setattr(replaymod.MixedSampler, "sample", orig)
    s = finetune(small(ckpts["gmm"], demos, tmp_path / "run", resume=True))
    assert not s.get("interrupted") and s["env_steps"] == 120
    ck = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert ck["step"] == 120 and ck["replay"]["size"] == 120
    assert ck["sac"]["step"] == 30 + 50  # updates continued from the restored agent
    assert ck["replay"]["truncated"][69]  # the cut episode ends at the interruption
    assert ck["episodes"] >= episodes_before


def test_gaussian_bridge_on_diffusion_fails_clearly(bc, tmp_path):
    demos, ckpts = bc
    raw = torch.load(ckpts["mse"], weights_only=True)
    with pytest.raises(ConfigError, match=r"'diffusion'.*residual.*none"):
        ft.check_bridge("diffusion", "gaussian")
    # a real diffusion checkpoint through the whole command
    cfg = TrainConfig(
        policy=PolicyConfig(head="diffusion"),
        data=str(demos),
        out=str(tmp_path / "bc_diff"),
        train=TrainLoopConfig(steps=2, batch_size=8, val_every=0, eval_episodes=0, ckpt_every=2),
    )
    train(cfg)
    diff = tmp_path / "bc_diff" / "checkpoints" / "last.pt"
    with pytest.raises(ConfigError, match=r"bridge='gaussian' cannot be used with the 'diffusion' head"):
        finetune(small(diff, demos, tmp_path / "run", bridge="gaussian"))
    assert raw["head"] == "mse"


def test_gaussian_bridge_distils_mse(bc, tmp_path):
    demos, ckpts = bc
    s = finetune(small(ckpts["mse"], demos, tmp_path / "run", bridge="gaussian", steps=50, distill_steps=200))
    assert s["env_steps"] == 50
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["distill_mse"] < 0.05


@pytest.mark.parametrize("head", ["mse", "gmm"])
def test_residual_actor_starts_at_bc_first_action(bc, head):
    demos, ckpts = bc
    policy = load_policy(ckpts[head])
    layout = ft.ObsLayout.from_spec(policy.spec)
    low, high = -np.ones(5, np.float32), np.ones(5, np.float32)
    base = ft.held_chunk(policy, layout, low, high, 0)  # the per-step bridge (chunked=false)
    actor = ft.build_actor("residual", layout.dim + 5, 5, [32, 32], 0.1, None)
    pol = ft.SACActorPolicy(actor, layout, low, high, base)
    from robolearn.envutil import make_env

    env = make_env(ENV)
    obs, _ = env.reset(seed=3)
    hist = {k: np.repeat(np.asarray(obs[k])[None, None], policy.To, axis=1) for k in policy.spec["obs"]}
    if head == "mse":
        want = policy.act(hist)[0, 0].numpy()
    else:  # the mean of the likeliest component
        logits, mean, _ = policy.head.dist_params(policy.encode(hist))
        chunk = mean[0, logits[0].argmax()].view(1, policy.Tp, policy.Da)
        want = policy.normalizer.unnormalize("action", chunk)[0, 0].detach().numpy()
    pol.reset()
    np.testing.assert_allclose(pol.act(obs), np.clip(want, -1, 1), atol=1e-6)


def test_sac_actor_from_checkpoint_acts_without_bc_file(bc, tmp_path):
    demos, ckpts = bc
    finetune(small(ckpts["gmm"], demos, tmp_path / "run", steps=60))
    ck = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    actor = sac_actor_from_checkpoint(ck)
    assert actor.env_id == ENV and actor.env_kwargs["obs_mode"] == "state"
    from robolearn.envutil import make_env

    env = make_env(actor.env_id, **actor.env_kwargs)
    obs, _ = env.reset(seed=0)
    actor.reset()
    a1 = actor.act(obs)
    assert a1.shape == (5,) and np.all(np.abs(a1) <= 1)
    actor.reset()
    np.testing.assert_array_equal(actor.act(obs), a1)  # deterministic
    # matches the evaluation the trainer ran
    res = ft.evaluate_actor(actor, actor.env_id, actor.env_kwargs, 1)
    assert res["return_mean"] == pytest.approx(
        json.loads((tmp_path / "run/results.json").read_text())["return_mean"]
    )
    with pytest.raises(ValueError, match="robolearn-sac/1"):
        sac_actor_from_checkpoint(torch.load(ckpts["gmm"], weights_only=True))


def test_sac_observation_is_scaled_by_the_bc_normaliser(bc, tmp_path):
    """obs_norm (the default): the networks see the history as the BC policy's normaliser scales it, in the
    online buffer, the demo buffer and the checkpoint alike; the BC base still plans from the raw history."""
    from robolearn.algos.obs_layout import OBS_CLIP, ObsLayout, ObsScaling
    from robolearn.envutil import make_env

    demos, ckpts = bc
    bc_policy = load_policy(ckpts["mse"])
    layout = ObsLayout.from_spec(bc_policy.spec)
    scaling = ObsScaling.from_policy(bc_policy, layout)
    env = make_env(ENV)
    obs, _ = env.reset(seed=0)
    x = ft.FlatHistory(layout).push(obs)
    want = np.concatenate(
        [
            np.tile(
                bc_policy.normalizer.normalize(k, torch.as_tensor(obs[k])[None]).clamp(-5, 5).numpy(),
                layout.To,
            ).reshape(-1)
            for k in layout.keys
        ]
    )
    np.testing.assert_allclose(scaling(x), want, atol=1e-5)
    assert np.abs(scaling(x * 1e3)).max() <= OBS_CLIP

    finetune(small(ckpts["mse"], demos, tmp_path / "run", steps=60))
    ck = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    np.testing.assert_allclose(ck["obs_scaling"]["scale"].numpy(), scaling.scale)
    D = layout.dim
    online = ck["replay"]["obs"][: ck["replay"]["size"], :D].numpy()
    assert np.abs(online).max() <= OBS_CLIP and np.abs(online).max() > 0.5  # scaled, not metres
    demo_obs = ck["demo_replay"]["obs"][: ck["demo_replay"]["size"], :D].numpy()
    raw = ft.load_demo_transitions(str(demos), layout, -np.ones(5), np.ones(5), "sparse", None)["obs"]
    np.testing.assert_allclose(demo_obs, scaling(raw), atol=1e-5)
    actor = sac_actor_from_checkpoint(ck)  # the loaded actor scales as the run did
    actor.reset()
    s = actor.observe(obs)
    np.testing.assert_allclose(s[:D], scaling(x), atol=1e-6)
    base = ft.held_chunk(
        bc_policy, layout, -np.ones(5, np.float32), np.ones(5, np.float32), int(ck["bridge_Ta"])
    )
    np.testing.assert_allclose(s[D:], base(x), atol=1e-5)  # the BC proposal from the raw history

    raw_run = finetune(small(ckpts["mse"], demos, tmp_path / "raw", steps=60, obs_norm=False))
    assert raw_run["env_steps"] == 60
    ck = torch.load(tmp_path / "raw/checkpoints/last.pt", weights_only=True)
    assert ck["obs_scaling"] is None
    a = sac_actor_from_checkpoint(ck)
    a.reset()
    np.testing.assert_allclose(a.observe(obs)[:D], x)


def test_no_demos_and_bridge_none(bc, tmp_path):
    demos, ckpts = bc
    s = finetune(small(ckpts["mse"], None, tmp_path / "a", steps=60))
    assert s["env_steps"] == 60
    ck = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    assert ck["demo_replay"] is None
    s = finetune(small("", None, tmp_path / "b", steps=60, bridge="none", env=ENV))
    ck = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert ck["bc_policy"] is None and ck["bridge"] == "none"
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["temperature"]["learned"] and res["temperature"]["initial"] == 0.1  # SAC from scratch: learned
    assert sac_actor_from_checkpoint(ck).act(
        {
            k: np.zeros(v, np.float32)
            for k, v in zip(*[json.loads(ck["obs_layout"])[x] for x in ("keys", "shapes")])
        }
    ).shape == (5,)


def test_nan_stops_with_sac_message(bc, tmp_path, monkeypatch):
    demos, ckpts = bc
    from robolearn.algos import replay as replaymod

    orig = replaymod.MixedSampler.sample

    def sample(self, *a, **k):
        b = orig(self, *a, **k)
        b["reward"] = b["reward"] * float("nan")
        return b

    monkeypatch.setattr(replaymod.MixedSampler, "sample", sample)
    with pytest.raises(FloatingPointError, match=r"losses/critic is nan at update step 0.*env step 40"):
        finetune(small(ckpts["mse"], demos, tmp_path / "run"))


def test_config_errors(bc, tmp_path):
    demos, ckpts = bc
    with pytest.raises(ConfigError, match="bridge='bogus'"):
        small(ckpts["mse"], demos, tmp_path, bridge="bogus")
    with pytest.raises(ConfigError, match="demo_ratio=1.5"):
        small(ckpts["mse"], demos, tmp_path, demo_ratio=1.5)
    with pytest.raises(ConfigError, match="bridge=gaussian .* demos"):
        small(ckpts["mse"], None, tmp_path, bridge="gaussian")
    with pytest.raises(ConfigError, match="policy is required"):
        small("", demos, tmp_path)


def test_cli_contract(bc, tmp_path):
    """The command the project's contract check runs: exit 0, checkpoints written; --help lists fields."""
    demos, ckpts = bc
    out = tmp_path / "cli"
    r = subprocess.run(
        [
            ROBOLEARN,
            "finetune",
            f"policy={ckpts['gmm']}",
            f"env={ENV}",
            f"demos={demos}",
            f"out={out}",
            "steps=80",
            "learning_starts=40",
            "batch_size=32",
            "hidden=[32,32]",
            "eval_episodes=1",
            "eval_initial=false",
            "threads=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((out / "checkpoints").glob("*.pt")) and (out / "results.json").exists()
    h = subprocess.run([ROBOLEARN, "finetune", "--help"], capture_output=True, text=True, timeout=60)
    assert h.returncode == 0 and "demo_ratio" in h.stdout and "bridge" in h.stdout
    bad = subprocess.run(
        [ROBOLEARN, "finetune", f"policy={ckpts['gmm']}", "demo_ratio=2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "demo_ratio" in bad.stderr


@pytest.mark.slow
def test_finetuning_does_not_destroy_a_good_bc_policy(tmp_path):
    """Lift: BC from 30 expert demos, then 3000 env steps of fine-tuning with demos; the success rate stays
    within a margin of the BC actor's (the residual actor's step-0 evaluation). (ReachAround with an mse head
    was used before held-out seeds; there mse averages the two ways round the pillar: 30% held out.)"""
    demos = tmp_path / "lift.hdf5"
    record(RecordConfig(env="robolearn/Lift-v0", episodes=30, out=str(demos)))
    train(
        TrainConfig(
            policy=PolicyConfig(head="mse"),
            data=str(demos),
            out=str(tmp_path / "bc"),
            train=TrainLoopConfig(steps=1500, batch_size=128, val_every=0, eval_episodes=0, ckpt_every=1500),
        )
    )
    s = finetune(
        FinetuneConfig(
            policy=str(tmp_path / "bc/checkpoints/last.pt"),
            demos=str(demos),
            out=str(tmp_path / "ft"),
            steps=3000,
            learning_starts=500,
            eval_episodes=20,
            critic_warmup=500,
            threads=1,
        )
    )
    res = json.loads((tmp_path / "ft/results.json").read_text())
    bc_rate = res["initial"]["success_rate"]
    print(f"Lift: BC (step 0) success {bc_rate:.2f}, after 3000 SAC steps {s['success_rate']:.2f}")
    assert bc_rate >= 0.5, f"the BC policy itself is not good enough for this test: {bc_rate}"
    assert s["success_rate"] >= bc_rate - 0.2, (bc_rate, s["success_rate"])


@pytest.mark.parametrize("head", ["mse", "flow"])
def test_chunked_bridge_is_the_bc_policy_before_any_update(bc, tmp_path, head):
    """Before any SAC update the fine-tuned actor runs the BC policy as `robolearn eval` runs it: the chunk
    planned every Ta steps and executed (a per-step re-plan is a different policy: Lift flow 100% -> 38%).
    mse: the same actions, so the same per-episode results; flow: one noise draw per chunk, Ta steps each."""
    from robolearn.eval.config import EvalConfig
    from robolearn.eval.runner import evaluate

    demos, ckpts = bc
    ck = ckpts["mse"]
    if head == "flow":
        train(
            TrainConfig(
                policy=PolicyConfig(head="flow", head_cfg={"denoiser": "mlp"}),
                data=str(demos),
                out=str(tmp_path / "bc_flow"),
                train=TrainLoopConfig(steps=30, batch_size=32, val_every=0, eval_episodes=0),
            )
        )
        ck = tmp_path / "bc_flow" / "checkpoints" / "last.pt"
    # 40 env steps, no update; the BC data's dense reward, so that eval returns compare like for like
    finetune(small(ck, demos, tmp_path / "run", steps=40, learning_starts=1000, reward_type="dense"))
    sac_ck = tmp_path / "run" / "checkpoints" / "last.pt"
    raw = torch.load(sac_ck, weights_only=True)
    policy = load_policy(ck)
    assert raw["bridge_Ta"] == policy.spec["Ta"] == 4
    actor = sac_actor_from_checkpoint(raw)
    from robolearn.envutil import make_env

    env = make_env(ENV)
    obs, _ = env.reset(seed=5)
    actor.reset()
    calls = {"n": 0}
    chunk = actor.base.chunk

    def counting(x):
        calls["n"] += 1
        return chunk(x)

    actor.base.chunk = counting
    for _ in range(12):
        obs, *_ = env.step(actor.act(obs))
    assert calls["n"] == 3  # planned at steps 0, 4, 8: held for Ta = 4 steps
    if head == "mse":
        a = evaluate(
            EvalConfig(policy=str(ck), env=ENV, episodes=4, out=str(tmp_path / "e_bc"), videos=0), show=False
        )
        b = evaluate(
            EvalConfig(policy=str(sac_ck), env=ENV, episodes=4, out=str(tmp_path / "e_sac"), videos=0),
            show=False,
        )
        ea = json.loads((tmp_path / "e_bc" / "episodes.json").read_text())
        eb = json.loads((tmp_path / "e_sac" / "episodes.json").read_text())
        assert [r["return"] for r in ea] == pytest.approx([r["return"] for r in eb], abs=1e-4)
        assert a["success_rate"] == b["success_rate"]


def test_residual_std_stays_bounded(bc, tmp_path):
    """The residual's exploration noise can narrow but never grow past its initial std (the entropy bonus once
    inflated it 0.37 -> 0.84 and training success fell from 92% to ~50%)."""
    demos, ckpts = bc
    finetune(
        small(
            ckpts["mse"],
            demos,
            tmp_path / "run",
            steps=200,
            learning_starts=40,
            init_alpha=1.0,
            autotune=True,
        )
    )
    raw = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert raw["residual_max_log_std"] == -1.0
    actor = sac_actor_from_checkpoint(raw, deterministic=False)
    from robolearn.envutil import make_env

    env = make_env(ENV)
    obs, _ = env.reset(seed=11)
    actor.reset()
    rows = []
    for _ in range(20):  # states along a rollout
        x = actor.observe(obs)
        rows.append(x)
        obs, *_ = env.step(env.action_space.sample())
    s = torch.from_numpy(np.stack(rows)).float()
    with torch.no_grad():
        _, log_std = actor.actor.head(actor.actor.trunk(torch.cat([s, s[:, -5:]], -1))).chunk(2, dim=-1)
    clamped = log_std.clamp(actor.actor.log_std_min, actor.actor.log_std_max)
    assert float(clamped.max()) <= -1.0 + 1e-6
    assert actor.actor.log_std_max == -1.0


def test_best_checkpoint_follows_return_where_there_is_no_success(tmp_path, monkeypatch):
    """Locomotion has no success signal: best.pt is the evaluation with the highest return, not the first one
    (the bug: a Hopper run kept its untrained step-0 actor as best.pt)."""
    # step 0, 50, 100, 150; then the final evaluation
    _fake_evals(monkeypatch, [(0.0, 10.0), (0.0, 50.0), (0.0, 30.0), (0.0, 20.0)], then=(0.0, 0.0))
    finetune(
        FinetuneConfig(
            env="Hopper-v5",
            bridge="none",
            out=str(tmp_path / "h"),
            steps=200,
            learning_starts=20,
            batch_size=16,
            eval_every=50,
            eval_episodes=1,
            ckpt_every=50,
        )
    )
    assert json.loads((tmp_path / "h" / "results.json").read_text())["best_step"] == 50


def test_precision_is_validated_and_reported(bc, tmp_path, monkeypatch):
    demos, ckpts = bc
    with pytest.raises(ConfigError, match="precision='fp16'"):
        small(ckpts["mse"], demos, tmp_path, precision="fp16")
    monkeypatch.setenv("ROBOLEARN_CACHE", str(tmp_path / "cache"))
    from robolearn.algos import precision as pr

    monkeypatch.setattr(pr, "probe", lambda *a: {"fp32_ms": 3.0, "bf16_ms": 1.0, "speedup": 3.0})
    from robolearn.algos import sac as sacmod

    built = []  # the bf16 flag of the SAC that finetune builds

    class Spy(sacmod.SAC):
        def __init__(self, actor, obs_dim, act_dim, cfg=None):
            built.append(cfg.bf16)
            super().__init__(actor, obs_dim, act_dim, cfg)

    monkeypatch.setattr(sacmod, "SAC", Spy)
    s = finetune(small(ckpts["mse"], demos, tmp_path / "run", steps=50, precision="auto"))
    assert built == [True] and s["precision"].startswith("bf16 (precision=auto")
    assert json.loads((tmp_path / "run/results.json").read_text())["precision"] == s["precision"]


def test_scripted_interventions_are_executed_and_stored_in_both_buffers(bc, tmp_path, monkeypatch):
    """intervention=scripted (HIL-SERL's human in the loop): where the stand-in takes over, the env runs the
    expert's action, and that transition enters the online buffer and the demo buffer; intervention_steps ends
    the interventions; evaluations never intervene; a task without an expert is refused before work starts."""
    from robolearn.algos.dagger import ScriptedHuman

    demos, ckpts = bc
    taken = []
    orig = ScriptedHuman.decide

    def decide(self, obs, a_pol):
        a, iv = orig(self, obs, a_pol)
        taken.append((np.array(a, np.float32), iv))
        return a, iv

    monkeypatch.setattr(ScriptedHuman, "decide", decide)
    # threshold 0: any disagreement hands control to the expert, i.e. every step
    s = finetune(
        small(
            ckpts["mse"],
            demos,
            tmp_path / "all",
            intervention="scripted",
            intervention_trigger="disagree",
            intervention_threshold=0.0,
        )
    )
    assert s["intervention_steps"] == 120 and len(taken) == 120 and all(iv for _, iv in taken)
    ck = torch.load(tmp_path / "all/checkpoints/last.pt", weights_only=True)
    exp = np.clip(np.stack([a for a, _ in taken]), -1, 1)  # Lift's actions are in [-1, 1]
    np.testing.assert_allclose(ck["replay"]["action"].numpy(), exp, atol=1e-6)
    res = json.loads((tmp_path / "all/results.json").read_text())
    assert res["interventions"] == {
        "mode": "scripted",
        "steps": 120,
        "episodes": res["interventions"]["episodes"],
    }
    assert res["interventions"]["episodes"] >= 1
    assert ck["demo_replay"]["size"] == res["demo_transitions"] + 120  # the takeovers joined the demos
    np.testing.assert_allclose(ck["demo_replay"]["action"][-120:].numpy(), exp, atol=1e-6)

    taken.clear()  # only the first 50 env steps are watched
    s = finetune(
        small(
            ckpts["mse"],
            demos,
            tmp_path / "first",
            intervention="scripted",
            intervention_trigger="disagree",
            intervention_threshold=0.0,
            intervention_steps=50,
        )
    )
    assert s["intervention_steps"] == 50 and len(taken) == 50
    taken.clear()  # a human who never disagrees enough changes nothing
    s = finetune(
        small(
            ckpts["mse"],
            demos,
            tmp_path / "none",
            intervention="scripted",
            intervention_trigger="disagree",
            intervention_threshold=5.0,
        )
    )
    assert s["intervention_steps"] == 0 and len(taken) == 120 and not any(iv for _, iv in taken)

    with pytest.raises(ConfigError, match="intervention='bogus'"):
        small(ckpts["mse"], demos, tmp_path, intervention="bogus")
    with pytest.raises(ConfigError, match="intervention_trigger='bogus'"):
        small(ckpts["mse"], demos, tmp_path, intervention="scripted", intervention_trigger="bogus")
    s = finetune(  # the watchful stand-in: it looks every 10 steps and drives where the policy stalls
        small(ckpts["mse"], demos, tmp_path / "stall", intervention="scripted", intervention_trigger="stall")
    )
    # the untrained policy stalls, so it steps in; never in the first 10 steps of an episode (a baseline look)
    assert 0 < s["intervention_steps"] < 120
    with pytest.raises(ConfigError, match="actors=2"):
        small(ckpts["mse"], demos, tmp_path, intervention="scripted", actors=2)
    with pytest.raises(ConfigError, match="intervention=scripted needs the task's scripted expert"):
        finetune(
            FinetuneConfig(
                bridge="none", env="Hopper-v5", out=str(tmp_path / "hop"), steps=10, intervention="scripted"
            )
        )


def test_a_person_in_the_loop_without_a_display_is_a_clear_error(bc, tmp_path):
    import os

    demos, ckpts = bc
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    out = tmp_path / "person"
    r = subprocess.run(
        [ROBOLEARN, "finetune", f"policy={ckpts['mse']}", f"demos={demos}", "steps=50", f"out={out}",
         "intervention=keyboard"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no display" in r.stderr and "Traceback" not in r.stdout + r.stderr
    assert not (out / "checkpoints").exists()


def test_intervention_counts_survive_an_interrupt_and_resume(bc, tmp_path, monkeypatch):
    from robolearn.algos import replay as replaymod

    demos, ckpts = bc
    orig = _interrupt_at_env_step_70(monkeypatch)
    kw = dict(intervention="scripted", intervention_trigger="disagree", intervention_threshold=0.0)
    assert finetune(small(ckpts["mse"], demos, tmp_path / "run", **kw))["step"] == 70
    ck = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert json.loads(ck["history"])["interventions"]["steps"] == 70
    n_demo = ck["demo_replay"]["size"]
    monkeypatch.setattr(replaymod.MixedSampler, "sample", orig)
    s = finetune(small(ckpts["mse"], demos, tmp_path / "run", resume=True, **kw))
    assert s["intervention_steps"] == 120  # every step of the whole run, counted once
    ck = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert ck["demo_replay"]["size"] == n_demo + 50  # the takeovers before the interrupt were kept


def _fake_evals(monkeypatch, results, then=(0.5, 0.5)):
    """evaluate_actor replaced by a scripted sequence of (success rate, mean return), then `then`."""
    results = iter(results)

    def fake_eval(actor, env_id, env_kwargs, episodes, seed=0, **kw):
        sr, ret = next(results, then)
        return {
            "success_rate": sr,
            "success_ci": [sr, sr],
            "return_mean": ret,
            "return_std": 0.0,
            "cycle_time_steps": None,
            "length_mean": 1.0,
            "episodes": [],
        }

    monkeypatch.setattr(ft, "evaluate_actor", fake_eval)


def test_regression_guard_restores_best_and_fixes_the_temperature():
    from robolearn.algos.finetune_guard import RegressionGuard
    from robolearn.algos.sac import SAC, GaussianActor, SACConfig

    def agent(autotune=True):
        return SAC(
            GaussianActor(4, 2, (16,)), 4, 2, SACConfig(hidden=(16,), autotune=autotune, init_alpha=0.1)
        )

    def run(tmp, a, drop=0.25):
        best = tmp / "best.pt"
        torch.save({"sac": a.state_dict(), "step": 0}, best)
        snapshot = {k: v.clone() for k, v in a.actor.state_dict().items()}
        with torch.no_grad():
            for p in [*a.actor.parameters(), *a.critic.parameters()]:
                p.add_(1.0)  # training moved the weights
        history = {"eval": [{"step": 0, "success_rate": 0.7}]}
        return RegressionGuard(drop, 0.05, a, best, history), history, snapshot

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        a = agent()
        g, history, snapshot = run(Path(d), a)
        assert not g.after_eval(5000, 0.5) and a.cfg.autotune  # a 20-point dip is within the noise
        assert g.after_eval(10000, 0.4)  # 30 points below step 0's 70%
        for k, v in a.actor.state_dict().items():
            torch.testing.assert_close(v, snapshot[k])  # best.pt's actor is back
        assert not a.cfg.autotune and a.alpha == pytest.approx(0.05) and not a.log_alpha.requires_grad
        assert history["rollback"]["step"] == 10000 and history["rollback"]["restored_step"] == 0
        assert g.record()["rollback"]["initial_success"] == 0.7
        assert not g.after_eval(15000, 0.0)  # fires once
        # a resumed run with that history keeps the fixed temperature
        b = agent()
        RegressionGuard(0.25, 0.05, b, Path(d) / "best.pt", history)
        assert not b.cfg.autotune and b.alpha == pytest.approx(0.05)
        # off with a fixed temperature, or with guard_drop=None
        for c, drop in ((agent(autotune=False), 0.25), (agent(), None)):
            g, _, _ = run(Path(d), c, drop)
            assert not g.after_eval(10000, 0.0)


def test_finetune_rolls_back_when_evaluation_collapses(bc, tmp_path, monkeypatch):
    demos, ckpts = bc
    # evaluations at steps 0, 50, 100: a 50-point fall at step 100
    _fake_evals(monkeypatch, [(0.8, 0.8), (0.8, 0.8), (0.3, 0.3)])
    finetune(small(ckpts["mse"], demos, tmp_path / "g", steps=150, eval_every=50, eval_initial=True))
    res = json.loads((tmp_path / "g" / "results.json").read_text())
    t = res["temperature"]
    assert t["learned"] and t["initial"] == 0.1 and t["final"] == pytest.approx(0.05)
    assert t["rollback"]["step"] == 100 and t["rollback"]["restored_step"] == 0
    ck = torch.load(tmp_path / "g" / "checkpoints" / "last.pt", weights_only=True)
    assert json.loads(ck["history"])["rollback"]["step"] == 100  # a resume keeps the fixed temperature
    # no fall, no rollback: the temperature stays learned
    _fake_evals(monkeypatch, [(0.8, 0.8), (0.7, 0.7), (0.6, 0.6)])
    finetune(small(ckpts["mse"], demos, tmp_path / "n", steps=150, eval_every=50, eval_initial=True))
    t = json.loads((tmp_path / "n" / "results.json").read_text())["temperature"]
    assert "rollback" not in t and t["final"] != pytest.approx(0.05)
