"""Evaluation contracts: fixed seeds, reproducible per-episode results, clear mismatch errors, read-only inputs,
reference rows (scripted ~100%, random ~0%), and the plot/compare CLIs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from robolearn.cli import main
from robolearn.eval.config import EvalConfig
from robolearn.eval.metrics import wilson_interval
from robolearn.eval.runner import EvalError, episode_seeds, evaluate, evaluate_policy

torch.set_num_threads(1)

TASKS = ["robolearn/Lift-v0", "robolearn/PushT-v0", "robolearn/ReachAround-v0", "robolearn/PegInsert-v0"]


def make_policy(env_id="robolearn/Lift-v0", action_dim=None, head="gmm", seed=0):
    """A randomly initialised small policy whose obs spec matches env_id's state observations."""
    from robolearn.data.normalizer import Normalizer
    from robolearn.envutil import make_env
    from robolearn.policies import EncoderConfig, Policy, PolicyConfig

    env = make_env(env_id, obs_mode="state")
    obs_space, Da = env.observation_space, action_dim or env.action_space.shape[0]
    env.close()
    spec = {
        "obs": {k: {"shape": list(s.shape), "dtype": "float32"} for k, s in obs_space.spaces.items()},
        "action_dim": Da,
        "To": 2,
        "Tp": 4,
        "Ta": 2,
    }
    g = np.random.default_rng(seed)
    arrays = {k: g.normal(size=(64, *s.shape)).astype(np.float32) for k, s in obs_space.spaces.items()}
    arrays["action"] = g.uniform(-1, 1, size=(64, Da)).astype(np.float32)
    torch.manual_seed(seed)
    cfg = PolicyConfig(head=head, encoder=EncoderConfig(mlp_hidden=[32]), head_cfg={"hidden": [32]})
    return Policy(spec, cfg, Normalizer.from_data(arrays))


def save_ckpt(policy, path, env_id="robolearn/Lift-v0"):
    from robolearn.policies import policy_state

    ckpt = policy_state(policy)
    ckpt["env_id"], ckpt["env_kwargs"] = env_id, {"obs_mode": "state", "reward_type": "dense"}
    torch.save(ckpt, path)
    return path


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (45, 50, 0.7864, 0.9565)],
)
def test_wilson_interval_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_episode_seeds_are_fixed():
    assert episode_seeds([0, 2], 3) == [
        (0, 0, 0),
        (0, 1, 1),
        (0, 2, 2),
        (2, 0, 20000),
        (2, 1, 20001),
        (2, 2, 20002),
    ]


def test_video_decodes_to_expected_frame_count(tmp_path):
    import imageio.v2 as imageio

    from robolearn.eval.video import mark_frame, write_video

    frames = [mark_frame(np.full((48, 64, 3), i * 10, np.uint8), f"f{i}", (0, 200, 0)) for i in range(12)]
    p = write_video(tmp_path / "v.mp4", frames, fps=10)
    r = imageio.get_reader(p)
    assert r.count_frames() == 12
    assert r.get_data(0).shape == (48, 64, 3)


# ----------------------------------------------------------------------------------------- references
@pytest.mark.parametrize("env_id", TASKS)
def test_scripted_expert_succeeds(env_id):
    res = evaluate_policy("scripted", env_id, {"obs_mode": "state"}, episodes=12, seed=0)
    assert res["success_rate"] >= 0.95, res
    assert res["episodes"] == 12 and res["cycle_time_steps"] is not None
    assert res["cycle_time_s"] == pytest.approx(res["cycle_time_steps"] * 0.1)
    for r in res["records"]:
        if r["success"]:
            assert r["steps_to_success"] <= r["length"]
            assert r["time_to_success_s"] == pytest.approx(r["steps_to_success"] * 0.1)


@pytest.mark.parametrize("env_id", ["robolearn/Lift-v0", "robolearn/PegInsert-v0"])
def test_random_policy_near_zero(env_id):
    res = evaluate_policy("random", env_id, {"obs_mode": "state"}, episodes=8, seed=0)
    assert res["success_rate"] <= 0.15, res
    assert res["cycle_time_s"] is None or res["successes"] > 0


def test_workers_do_not_change_reference_results():
    """AsyncVectorEnv (2 subprocesses) and SyncVectorEnv run exactly the same seeded episodes."""
    kw = dict(env_kwargs={"obs_mode": "state"}, episodes=3, seed=[0, 1])
    one = evaluate_policy("scripted", "robolearn/Lift-v0", workers=1, noise=0.1, **kw)["records"]
    two = evaluate_policy("scripted", "robolearn/Lift-v0", workers=2, noise=0.1, **kw)["records"]
    assert [r["seed"] for r in one] == [0, 1, 2, 10000, 10001, 10002]
    assert one == two


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_eval_is_reproducible_and_read_only(tmp_path):
    import imageio.v2 as imageio

    ckpt = save_ckpt(make_policy(), tmp_path / "policy.pt")
    before = sha(ckpt), ckpt.stat().st_mtime_ns
    outs = []
    for run in ("a", "b"):
        cfg = EvalConfig(policy=str(ckpt), episodes=3, seeds=[0, 1], out=str(tmp_path / run), videos=1)
        res = evaluate(cfg, show=False)
        outs.append(json.loads((tmp_path / run / "episodes.json").read_text()))
        assert res["env"] == "robolearn/Lift-v0"  # taken from the checkpoint
    assert (sha(ckpt), ckpt.stat().st_mtime_ns) == before
    strip = lambda recs: [{k: v for k, v in r.items() if k != "video"} for r in recs]  # noqa: E731
    assert strip(outs[0]) == strip(outs[1])
    assert len(outs[0]) == 6 and [r["seed"] for r in outs[0]] == [0, 1, 2, 10000, 10001, 10002]
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    for key in (
        "success_rate",
        "success_ci",
        "return_mean",
        "return_std",
        "length_mean",
        "cycle_time_steps",
        "cycle_time_s",
        "episodes",
        "env",
        "policy",
        "success_rate_per_seed",
    ):
        assert key in res
    assert set(res["success_rate_per_seed"]) == {"0", "1"}
    csv_lines = (tmp_path / "a" / "episodes.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 7 and csv_lines[0].startswith("index,seed_group,episode,seed,success")
    video = tmp_path / "a" / "videos" / "episode_0.mp4"
    assert imageio.get_reader(video).count_frames() == outs[0][0]["length"] + 1  # reset frame + one per step


def test_action_dim_mismatch_fails_before_rollout(tmp_path, monkeypatch):
    import robolearn.eval.runner as runner

    ckpt = save_ckpt(make_policy(action_dim=3), tmp_path / "wrong.pt", env_id="robolearn/Other-v0")
    monkeypatch.setattr(runner, "_rollout", lambda *a, **k: pytest.fail("rolled out despite the mismatch"))
    cfg = EvalConfig(policy=str(ckpt), env="robolearn/Lift-v0", episodes=2, out=str(tmp_path / "o"))
    with pytest.raises(EvalError, match=r"action_dim=3.*robolearn/Lift-v0.*takes 5"):
        evaluate(cfg, show=False)
    assert not (tmp_path / "o").exists()


def test_obs_key_mismatch_names_both(tmp_path):
    policy = make_policy("robolearn/ReachAround-v0")
    with pytest.raises(EvalError, match=r"goal_to_eef.*policy obs keys.*env obs keys.*cube_pos"):
        evaluate_policy(policy, "robolearn/Lift-v0", {"obs_mode": "state"}, episodes=1)


def test_eval_cli(tmp_path, capsys):
    ckpt = save_ckpt(make_policy(head="mse"), tmp_path / "p.pt")
    out = tmp_path / "cli"
    assert main(["eval", f"policy={ckpt}", "episodes=2", f"out={out}", "videos=0", "Ta=1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["episodes"] == 2 and res["policy_info"]["Ta"] == 1
    assert main(["eval", "policy=scripted", "episodes=2", f"out={out}"]) == 2  # env required
    assert "env is required" in capsys.readouterr().err
    assert main(["eval", f"policy={ckpt}", "Ta=9", f"out={out}"]) == 2
    assert "Ta=9 must be in [1, Tp=4]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("over", "msg"),
    [
        ({"episodes": 0}, "episodes=0"),
        ({"seeds": []}, "seeds"),
        ({"obs_mode": "rgb"}, "obs_mode='rgb'"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_config_validation_names_field(over, msg):
    with pytest.raises(ValueError, match=msg):
        EvalConfig(**{"policy": "random", "env": "robolearn/Lift-v0", **over})


# ------------------------------------------------------------------------------------- compare and plot
def fake_result(path, env, sr, cycle, n=50):
    path.mkdir(parents=True)
    (path / "results.json").write_text(
        json.dumps(
            {
                "env": env,
                "policy": str(path / "p.pt"),
                "success_rate": sr,
                "cycle_time_s": cycle,
                "episodes": n,
            }
        )
    )
    return path


def test_compare_cli(tmp_path, capsys):
    a = fake_result(tmp_path / "bc", "robolearn/Lift-v0", 0.40, 9.0)
    b = fake_result(tmp_path / "dagger", "robolearn/Lift-v0", 0.54, 5.0)
    md = tmp_path / "table.md"
    assert (
        main(["compare", str(a), str(b / "results.json"), "--names", "BC,BC+DAgger", "--out", str(md)]) == 0
    )
    table = md.read_text()
    assert table in capsys.readouterr().out
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Task | BC success | BC cycle time | BC+DAgger success")
    assert "| Lift-v0 | 40% (50) | 9.0 s | 54% (50) | 5.0 s | +35% | 1.8× faster |" == lines[2]
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_plot_cli(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for name, seed in (("bc_s0", 0), ("bc_s1", 1), ("sac", 2)):
        w = SummaryWriter(str(tmp_path / name))
        for step in range(0, 50, 10):
            w.add_scalar("eval/success_rate", min(1.0, step / 40 + 0.1 * seed), step)
            w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.close()
    out = tmp_path / "curves.png"
    runs = [str(tmp_path / n) for n in ("bc_s0", "bc_s1", "sac")]
    assert main(["plot", *runs, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = tmp_path / "one.png"
    assert main(["plot", *runs, "--out", str(one), "--tag", "eval/success_rate", "--x", "env_steps"]) == 0
    assert one.exists()
    assert main(["plot", *runs, "--tag", "nope"]) == 2

    from robolearn.eval.plots import group_name

    assert [group_name(n) for n in ("bc_s0", "bc-seed12", "bc_seed_3", "sac", "s1")] == [
        "bc",
        "bc",
        "bc",
        "sac",
        "s1",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("env_id", TASKS)
def test_scripted_expert_succeeds_50_episodes(env_id):
    res = evaluate_policy("scripted", env_id, {"obs_mode": "state"}, episodes=50, seed=[0, 1])
    assert res["success_rate"] >= 0.95, res
