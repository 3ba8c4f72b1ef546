"""The `imitation` library's DAgger and BC on robolearn's demos, scored like `bench/dagger_results.py` scores ours.

Runs in its own venv: imitation 1.0.1 pins gymnasium~=0.29 and stable-baselines3~=2.2, robolearn gymnasium 1.x.

    python3 -m venv /work/imitation-venv
    /work/imitation-venv/bin/pip install torch==2.13.0            # the local CPU wheel first
    /work/imitation-venv/bin/pip install imitation==1.0.1 mujoco==3.3.0 h5py
    OMP_NUM_THREADS=1 /work/imitation-venv/bin/python bench/dagger_imitation_peer.py --task peginsert \
        --seeds 0 1 2 --json bench/results/dagger_imitation_peginsert.json

Only robolearn's task package (`envs/`, plain gymnasium + mujoco) is imported, never robolearn itself. The
setting mirrors `bench/dagger_results.py`'s PegInsert rows: the first 6 / 12 / 24 demos of the same HDF5 store
(scripted expert, demo seeds 10_000_000..), DAgger from the 6 demos for 2 rounds of 4 episodes with beta 1 then
0.5 (our default schedule; imitation's own default, LinearBetaSchedule(15), would stay above 0.93 for both
rounds, i.e. almost BC with more demos), every visited state labelled by the same scripted expert from the
simulator state, BC with 2,000 batches of 128 per round. Labels = demo steps + every visited step.
Evaluation: the deterministic policy on env seeds 0..49 (robolearn's held-out evaluation range), success =
`info["is_success"]` at any step, as robolearn's evaluator counts it.

What the peer gets as imitation users would set it up: its `bc.BC` trainer (Gaussian policy, NLL loss with
its default entropy and L2 terms, Adam 1e-3) on SB3's `ActorCriticPolicy` with a 256-256 MLP (imitation's
default is 32-32), the Dict observation flattened in a fixed key order and standardised with the initial
demos' mean and std (std floored at 1e-3; imitation does no normalisation itself, robolearn's MSE head uses
min-max ranges from its data), one state per step (To = Tp = Ta = 1; imitation has no chunking). imitation's
DAgger continues training the same network every round; robolearn's retrains from scratch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TASK_ENV = {
    "peginsert": "robolearn/PegInsert-v0",
    "reacharound": "robolearn/ReachAround-v0",
    "lift": "robolearn/Lift-v0",
}
ROLLOUT_SEED_BASE = 20_000_000  # the peer's DAgger rollouts: outside the demo (10M..) and eval (0..) ranges


def import_tasks():
    """robolearn's task package (envs/) as `robolearn_envs`, without importing robolearn."""
    spec = importlib.util.spec_from_file_location(
        "robolearn_envs", ROOT / "envs" / "__init__.py", submodule_search_locations=[str(ROOT / "envs")]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["robolearn_envs"] = mod
    spec.loader.exec_module(mod)
    mod.register_all()
    return mod


def read_demos(path: Path, n: int) -> list[dict]:
    with h5py.File(path, "r") as f:
        names = sorted(f["data"], key=lambda s: int(s.split("_")[-1]))[:n]
        if len(names) < n:
            raise SystemExit(f"{path} holds {len(names)} demos, fewer than {n}")
        eps = []
        for name in names:
            g = f["data"][name]
            eps.append(
                {
                    "obs": {k: g["obs"][k][()] for k in g["obs"]},
                    "next_obs": {k: g["next_obs"][k][()] for k in g["next_obs"]},
                    "actions": g["actions"][()].astype(np.float32),
                    "seed": int(g.attrs["seed"]),
                }
            )
    return eps


def flatten(obs: dict, keys: list[str]) -> np.ndarray:
    """{key: (T, ...)} -> (T, D) float32, keys in `keys` order."""
    return np.concatenate([np.asarray(obs[k], np.float32).reshape(len(obs[k]), -1) for k in keys], 1)


class FlatObs(gym.ObservationWrapper):
    """Dict observation -> flat vector (keys in `keys` order), standardised with (mean, std)."""

    def __init__(self, env, keys, mean, std):
        super().__init__(env)
        self.keys, self.mean, self.std = keys, mean, std
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (len(mean),), np.float32)

    def observation(self, obs):
        return standardise(
            flatten({k: np.asarray(v)[None] for k, v in obs.items()}, self.keys), self.mean, self.std
        )[0]


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x - mean) / std).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="peginsert", choices=sorted(TASK_ENV))
    ap.add_argument(
        "--data", default=None, help="demo store (default datasets/<task>.hdf5, as dagger_results)"
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--bc-demos", nargs="+", type=int, default=[6, 12, 24])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--batches", type=int, default=2000, help="BC batches per round (and for the BC rows)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tasks = import_tasks()

    import imitation
    import stable_baselines3
    from imitation.algorithms import bc
    from imitation.algorithms.dagger import DAggerTrainer
    from imitation.data import rollout
    from imitation.data.types import Trajectory
    from imitation.util import logger as imitation_logger
    from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
    from stable_baselines3.common.vec_env import DummyVecEnv

    quiet = imitation_logger.configure(format_strs=[])  # no per-batch tables on stdout

    env_id = TASK_ENV[a.task]
    src = Path(a.data or ROOT / "datasets" / f"{a.task}.hdf5")
    demos_all = read_demos(src, max(a.bc_demos))
    assert all(d["seed"] >= 10_000_000 for d in demos_all), "demos must come from the demo seed range"
    keys = sorted(demos_all[0]["obs"])

    n0 = a.bc_demos[0]
    x0 = np.concatenate([flatten(d["obs"], keys) for d in demos_all[:n0]])
    mean, std = x0.mean(0), np.maximum(x0.std(0), 1e-3)

    def make_env():
        return FlatObs(gym.make(env_id, obs_mode="state"), keys, mean, std)

    def trajectories(eps) -> list:
        out = []
        for d in eps:  # T observations and the final next observation, as imitation's Trajectory wants
            x = np.concatenate([flatten(d["obs"], keys), flatten(d["next_obs"], keys)[-1:]])
            o = standardise(x, mean, std)
            out.append(Trajectory(obs=o, acts=d["actions"], infos=None, terminal=True))
        return out

    def new_policy(space_env, seed):
        torch.manual_seed(seed)
        return ActorCriticPolicy(
            space_env.observation_space, space_env.action_space, lambda _: 1e-3, net_arch=[256, 256]
        )

    def evaluate(policy) -> float:
        env = make_env()
        wins = 0
        for i in range(a.eval_episodes):  # env seeds 0..N-1: robolearn's evaluation range
            obs, _ = env.reset(seed=i)
            done, win = False, False
            while not done:
                act, _ = policy.predict(obs, deterministic=True)
                obs, _, term, trunc, info = env.step(act)
                win |= bool(info.get("is_success", False))
                done = term or trunc
            wins += win
        return wins / a.eval_episodes

    class Expert(BasePolicy):
        """robolearn's scripted expert for the env inside a 1-env DummyVecEnv (it reads the simulator)."""

        def __init__(self, venv):
            super().__init__(venv.observation_space, venv.action_space)
            self.experts = [tasks.make_expert(e) for e in venv.envs]

        def _predict(self, observation, deterministic=False):
            acts = [x.act() for x in self.experts]
            return torch.as_tensor(np.stack(acts), dtype=torch.float32)

    res: dict = {}
    if a.json and Path(a.json).exists():
        res = json.loads(Path(a.json).read_text()).get("results", {})
    for seed in a.seeds:
        rng = np.random.default_rng(seed)
        for n in a.bc_demos:
            key = f"imitation-bc/{n}/{seed}"
            if key in res:
                continue
            t0 = time.time()
            eps = demos_all[:n]
            env = make_env()
            trainer = bc.BC(
                observation_space=env.observation_space,
                action_space=env.action_space,
                rng=rng,
                policy=new_policy(env, seed),
                demonstrations=rollout.flatten_trajectories(trajectories(eps)),
                batch_size=a.batch_size,
                custom_logger=quiet,
            )
            trainer.train(n_batches=a.batches, progress_bar=False, log_interval=10**9)
            labels = int(sum(len(d["actions"]) for d in eps))
            res[key] = {
                "method": "imitation BC",
                "labels": labels,
                "success_rate": evaluate(trainer.policy),
                "wall_s": time.time() - t0,
            }
            print(key, res[key], flush=True)
        key = f"imitation-dagger/{seed}"
        if key not in res:
            t0 = time.time()
            venv = DummyVecEnv([make_env])
            venv.seed(ROLLOUT_SEED_BASE + 1000 * seed)
            expert = Expert(venv)
            policy = new_policy(venv, seed)
            learner = bc.BC(
                observation_space=venv.observation_space,
                action_space=venv.action_space,
                rng=rng,
                policy=policy,
                batch_size=a.batch_size,
                custom_logger=quiet,
            )
            history = []
            with tempfile.TemporaryDirectory() as scratch:
                dagger = DAggerTrainer(
                    venv=venv,
                    scratch_dir=scratch,
                    rng=rng,
                    bc_trainer=learner,
                    beta_schedule=lambda r: 0.5**r,
                    custom_logger=quiet,
                )  # robolearn's default: 1, then 0.5
                from imitation.algorithms.dagger import _save_dagger_demo

                for i, traj in enumerate(trajectories(demos_all[:n0])):  # the 6 demos join round 0's data
                    _save_dagger_demo(traj, i, dagger._demo_dir_path_for_round(), rng, prefix="initial_data")
                labels = int(sum(len(d["actions"]) for d in demos_all[:n0]))
                for r in range(a.rounds):
                    collector = dagger.create_trajectory_collector()
                    trajs = rollout.generate_trajectories(
                        policy=expert,
                        venv=collector,
                        sample_until=rollout.make_sample_until(min_timesteps=1, min_episodes=a.episodes),
                        deterministic_policy=True,
                        rng=rng,
                    )
                    trajs = trajs[: a.episodes]  # a 1-env venv finishes exactly the episodes asked for
                    labels += int(sum(len(t) for t in trajs))
                    dagger.extend_and_update(
                        dict(
                            n_batches=a.batches,
                            progress_bar=False,
                            log_interval=10**9,
                            log_rollouts_venv=None,
                        )
                    )
                    history.append(
                        {
                            "round": r + 1,
                            "beta": 0.5**r,
                            "labels": labels,
                            "success_rate": evaluate(learner.policy),
                        }
                    )
                    print(key, history[-1], flush=True)
            res[key] = {"method": "imitation DAgger", "history": history, "wall_s": time.time() - t0}
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(
                json.dumps(
                    {
                        "args": vars(a),
                        "versions": {
                            "imitation": imitation.__version__,
                            "stable_baselines3": stable_baselines3.__version__,
                            "gymnasium": gym.__version__,
                            "torch": torch.__version__,
                        },
                        "eval_env_seeds": [0, a.eval_episodes - 1],
                        "results": res,
                    },
                    indent=1,
                )
            )

    def med(vals):
        return f"{np.median(vals):.0%} [{min(vals):.0%}-{max(vals):.0%}]"

    print("\n| method | labels (median) | success, median [min-max] over seeds |\n|---|---:|---|")
    for n in a.bc_demos:
        rows = [res[f"imitation-bc/{n}/{s}"] for s in a.seeds if f"imitation-bc/{n}/{s}" in res]
        if rows:
            print(
                f"| imitation BC, {n} demos | {int(np.median([r['labels'] for r in rows]))} | "
                f"{med([r['success_rate'] for r in rows])} |"
            )
    for r in range(a.rounds):
        rows = [res[f"imitation-dagger/{s}"]["history"][r] for s in a.seeds if f"imitation-dagger/{s}" in res]
        if rows:
            print(
                f"| imitation DAgger, round {r + 1} | {int(np.median([x['labels'] for x in rows]))} | "
                f"{med([x['success_rate'] for x in rows])} |"
            )


if __name__ == "__main__":
    main()
