"""The field's task suites through robolearn (robolearn_envs.suites): Meta-World (metaworld/<task>-v3) and
gym-hil (gym_hil/PandaPickCubeBase-v0). Skipped only when the optional extra `suites` is not installed."""

import importlib.util
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

HAVE_MW = importlib.util.find_spec("metaworld") is not None
HAVE_HIL = (
    importlib.util.find_spec("gym_hil") is not None and importlib.util.find_spec("packaging") is not None
)
need_mw = pytest.mark.skipif(not HAVE_MW, reason="Meta-World not installed (pip install -e '.[suites]')")
need_hil = pytest.mark.skipif(not HAVE_HIL, reason="gym-hil not installed (pip install -e '.[suites]')")

MW_ID = "metaworld/reach-v3"
HIL_ID = "gym_hil/PandaPickCubeBase-v0"


def make(env_id, **kw):
    from robolearn.envutil import make_env

    return make_env(env_id, **kw)


def rollout(env, seed, expert=None, steps=10**9):
    from robolearn.recording import make_expert

    expert = expert or make_expert(env, "scripted", seed=seed)
    expert.reset(seed=seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(expert.act(obs))
        if term or trunc:
            break
    return info


@need_mw
def test_metaworld_ids_match_metaworld():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3
    from robolearn_envs import suites

    assert [f"{t}-v3" for t in suites.METAWORLD_TASKS] == list(ALL_V3_ENVIRONMENTS)
    assert [f"{t}-v3" for t in suites.MT10_TASKS] == list(MT10_V3)


@pytest.mark.parametrize(
    "env_id", [pytest.param("metaworld/pick-place-v3", marks=need_mw), pytest.param(HIL_ID, marks=need_hil)]
)
def test_check_env_and_conventions(env_id):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite Box bounds of object poses
        check_env(env, skip_render_check=True)
    assert env.action_space.dtype == np.float32 and env.action_space.shape == (4,)
    obs, _ = env.reset(seed=3)
    assert all(v.dtype == np.float32 for v in obs.values())
    o2, _ = env.reset(seed=3)
    for k in obs:
        np.testing.assert_array_equal(obs[k], o2[k])  # one seed, one initial state
    _, _, _, _, info = env.step(env.action_space.sample())
    assert isinstance(info["is_success"], bool)
    env.close()


@need_mw
def test_metaworld_obs_layout_and_goal_randomisation():
    from robolearn_envs.suites.metaworld_env import flat_obs

    env = make("metaworld/pick-place-v3")
    raw = env.unwrapped.env  # Meta-World's SawyerXYZEnv under the adapter
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(
        flat_obs(obs), raw._get_obs()[:18].tolist() + obs_prev(obs) + list(raw._target_pos), atol=1e-5
    )
    np.testing.assert_allclose(obs["hand_pos"], raw.get_endeff_pos(), atol=1e-5)
    np.testing.assert_allclose(obs["obj1_pos"], raw._get_pos_objects(), atol=1e-5)
    goals = {tuple(np.round(env.reset(seed=s)[0]["goal"], 5)) for s in range(6)}
    assert len(goals) == 6  # a fresh draw per seed (goals="sampled")


def obs_prev(obs):
    keys = (
        "prev_hand_pos",
        "prev_gripper",
        "prev_obj1_pos",
        "prev_obj1_quat",
        "prev_obj2_pos",
        "prev_obj2_quat",
    )
    return np.concatenate([obs[k] for k in keys]).tolist()


@need_mw
def test_metaworld_scripted_policy_succeeds():
    env = make("metaworld/pick-place-v3")
    assert all(rollout(env, s)["is_success"] for s in range(3))


@need_hil
def test_panda_pick_expert_succeeds_on_random_cubes():
    import gymnasium as gym
    from robolearn_envs.suites.gym_hil_env import PandaPickExpert, wrap

    env = make(HIL_ID)
    assert rollout(env, 0)["is_success"]
    rnd = wrap(gym.make(HIL_ID), random_block_position=True)
    starts = {tuple(rnd.reset(seed=s)[0]["block_pos"][:2].round(4)) for s in range(3)}
    assert len(starts) == 3
    assert all(rollout(rnd, s, PandaPickExpert(rnd))["is_success"] for s in range(5))


def _loop(tmp_path, env_id, *record_args):
    from robolearn.cli import main
    from robolearn.data.store import iter_episodes

    demos = tmp_path / "demos.hdf5"
    assert main(["record", f"env={env_id}", "episodes=3", f"out={demos}", *record_args]) == 0
    eps = [e for _, e in iter_episodes(demos)]
    assert len(eps) == 3 and all(e["attrs"]["success"] for e in eps)
    assert (
        main(
            [
                "train",
                "policy=mse",
                f"data={demos}",
                f"out={tmp_path / 'bc'}",
                "train.steps=20",
                "train.eval_episodes=0",
                "train.val_every=0",
                "train.batch_size=32",
            ]
        )
        == 0
    )
    ckpt = tmp_path / "bc" / "checkpoints" / "last.pt"
    assert main(["eval", f"policy={ckpt}", "episodes=2", f"out={tmp_path / 'ev'}", "videos=0"]) == 0
    assert (tmp_path / "ev" / "results.json").is_file()
    return eps


def _replay(env_id, ep):
    from robolearn_envs.suites import find_adapter

    env = make(env_id)
    env.reset(seed=int(ep["attrs"]["seed"]))
    ad = find_adapter(env)
    T = len(ep["actions"])
    for t in sorted({0, 1, T // 2, T - 1}):
        obs = ad.set_state(ep["states"][t])
        for k in obs:
            np.testing.assert_allclose(obs[k], ep["obs"][k][t], atol=1e-5, err_msg=f"{k} at t={t}")
    # and stepping on from a restored state reproduces the recorded next observation
    t = T // 2
    ad.set_state(ep["states"][t])
    nxt, *_ = env.step(ep["actions"][t])
    for k in nxt:
        np.testing.assert_allclose(nxt[k], ep["next_obs"][k][t], atol=1e-4, err_msg=k)
    env.close()


@need_mw
def test_metaworld_record_train_eval_and_replay(tmp_path):
    eps = _loop(tmp_path, MW_ID)
    assert eps[0]["states"].shape[0] == len(eps[0]["actions"])
    _replay(MW_ID, eps[0])


@need_hil
def test_gym_hil_record_train_eval_and_replay(tmp_path):
    eps = _loop(tmp_path, HIL_ID)
    _replay(HIL_ID, eps[0])


@need_hil
def test_env_kwargs_reach_the_store_and_every_later_stage(tmp_path, capsys):
    import json

    import torch

    from robolearn.cli import main
    from robolearn.data.store import read_info

    eps = _loop(tmp_path, HIL_ID, "+env_kwargs.random_block_position=true")
    assert read_info(tmp_path / "demos.hdf5").env_kwargs == {"random_block_position": True}
    assert len({tuple(e["obs"]["block_pos"][0][:2].round(4)) for e in eps}) == 3  # the cube moves per seed
    ck = torch.load(tmp_path / "bc" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert json.loads(ck["env_kwargs"])["random_block_position"] is True  # eval/finetune rebuild this env
    capsys.readouterr()
    bad = tmp_path / "bad.hdf5"
    assert (
        main(["record", f"env={HIL_ID}", "episodes=1", f"out={bad}", "+env_kwargs.random_block_positon=1"])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "does not take these env_kwargs" in err and "random_block_positon" in err and "Traceback" not in err
    )
    assert not bad.exists()


@need_mw
def test_sparse_reward_replaces_a_suites_reward_by_its_success_signal():
    from robolearn.envutil import make_env
    from robolearn.errors import UserError

    env = make_env(MW_ID, reward_type="sparse")
    env.reset(seed=0)
    dense = make_env(MW_ID)
    dense.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        _, r, *_, info = env.step(a)
        _, rd, *_ = dense.step(a)
        assert r == float(info["is_success"]) and rd != r  # Meta-World's own reward is shaped
    with pytest.raises(UserError, match="needs an env with a success signal"):
        make_env("Pendulum-v1", reward_type="sparse")


def test_unknown_suite_ids_fail_clearly():
    from robolearn.config import ConfigError, env_id

    with pytest.raises(ConfigError, match="metaworld/<task>-v3"):
        env_id("env", "metaworld/nope-v3")
