"""robolearn SAC vs Stable-Baselines3 SAC, side by side in one process: env steps/s and return.

Same hyperparameters for both (net 256x256, batch 256, lr 3e-4, gamma 0.99, tau 0.005, train_freq 1,
gradient_steps 1, auto entropy with target -act_dim, same learning_starts, same torch thread count).
Runs alternate ours / SB3 per (env, seed), so background load hits both alike.

  steps/s   env steps per wall-clock second over the window after learning starts (the steady state)
  return    deterministic evaluation (mean action) at the step budget, `--eval-episodes` episodes
  time      split of the whole run: env.step / update (replay sampling + gradient steps) / other

Full run (19-22 min per 100k-step run at 1 thread on this machine, 18 runs: ~6 h of one core; it resumes, so
it can be spread over sessions):
  OMP_NUM_THREADS=1 .venv/bin/python bench/sac_vs_sb3.py --steps 100000 --learning-starts 5000 --seeds 3 \
      --threads 1 --impls ours,ours-bf16,sb3 --json bench/results/sac_vs_sb3_100k.json --resume
Short measurement:
  .venv/bin/python bench/sac_vs_sb3.py --steps 4000 --learning-starts 1000 --seeds 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from robolearn.algos.sac import SACConfig, evaluate, train_sac


class TimedEnv(gym.Wrapper):
    """Accumulates wall-clock time spent in env.step."""

    def __init__(self, env):
        super().__init__(env)
        self.step_time = 0.0

    def step(self, action):
        t0 = time.perf_counter()
        out = self.env.step(action)
        self.step_time += time.perf_counter() - t0
        return out


def run_ours(
    env_id: str,
    steps: int,
    learning_starts: int,
    seed: int,
    eval_episodes: int,
    precision: str = "fp32",
    squash_eps: float = 0.0,
    fused: bool = True,
    eval_every: int = 0,
) -> dict:
    """precision: fp32 | bf16 | auto (robolearn.algos.precision: bf16 where measured faster here);
    squash_eps: 0 = our exact tanh correction, 1e-6 = SB3's log(1 - a^2 + 1e-6) (SACConfig.squash_eps);
    fused: False = the autograd update instead of sac_fused's hand-written backward (the same math);
    eval_every > 0: also a learning curve, `eval_episodes` deterministic episodes every that many steps."""
    from robolearn.algos.precision import resolve

    cfg = SACConfig(learning_starts=learning_starts, squash_eps=squash_eps, fused=fused)
    cfg.bf16, why = resolve(precision, cfg.batch_size, cfg.hidden[-1], cfg.n_critics)
    print(f"{env_id}, seed {seed}, our precision: {why}", flush=True)
    out = train_sac(
        env_id, cfg, total_steps=steps, seed=seed, eval_every=eval_every, eval_episodes=eval_episodes
    )
    t0 = time.perf_counter()
    ret = evaluate(gym.make(env_id), out["agent"].actor, eval_episodes, seed=10_000 + seed)
    return {
        "sps": out["sps_learning"],
        "return": ret,
        "total": out["time/total"],
        "env": out["time/env"],
        "update": out["time/update"],
        "other": out["time/other"],
        "eval_s": time.perf_counter() - t0,
        "precision": why,
        "curve": out["evals"],
    }


def run_sb3(
    env_id: str, steps: int, learning_starts: int, seed: int, eval_episodes: int, eval_every: int = 0
) -> dict:
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Timed(SB3SAC):
        update_time = 0.0

        def train(self, gradient_steps: int, batch_size: int = 64) -> None:
            t0 = time.perf_counter()
            super().train(gradient_steps, batch_size)
            self.update_time += time.perf_counter() - t0

    class Policy:  # SB3's deterministic action, rescaled back to [-1, 1] for robolearn's `evaluate`
        def __call__(self, obs):
            a, _ = model.predict(obs.numpy(), deterministic=True)
            low, high = env.action_space.low, env.action_space.high
            a = torch.as_tensor(2.0 * (a - low) / (high - low) - 1.0, dtype=torch.float32)
            return a, None, a

    class LearnClock(BaseCallback):
        """When learning starts, and the learning curve (its evaluation time is left out of steps/s)."""

        t_learn = None
        eval_time = 0.0  # all evaluations (left out of `total`)
        eval_time_learning = 0.0  # those after learning started (left out of steps/s)
        curve: list = []

        def _on_step(self) -> bool:
            if self.t_learn is None and self.num_timesteps >= learning_starts:
                self.t_learn = time.perf_counter()
            if eval_every and self.num_timesteps % eval_every == 0:
                t0 = time.perf_counter()
                ret = evaluate(gym.make(env_id), Policy(), eval_episodes, seed=10_000 + seed)
                self.curve = [*self.curve, (self.num_timesteps, ret)]
                self.eval_time += time.perf_counter() - t0
                if self.t_learn is not None:
                    self.eval_time_learning += time.perf_counter() - t0
            return True

    env = TimedEnv(gym.make(env_id))
    model = Timed(
        "MlpPolicy",
        env,
        learning_rate=3e-4,
        buffer_size=min(1_000_000, steps),
        learning_starts=learning_starts,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto",
        target_entropy="auto",
        policy_kwargs=dict(net_arch=[256, 256]),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    clock = LearnClock()
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, callback=clock)
    t_end = time.perf_counter()
    total = t_end - t0 - clock.eval_time

    t1 = time.perf_counter()
    ret = evaluate(gym.make(env_id), Policy(), eval_episodes, seed=10_000 + seed)
    return {
        "sps": (steps - learning_starts) / (t_end - clock.t_learn - clock.eval_time_learning),
        "return": ret,
        "total": total,
        "env": env.step_time,
        "update": model.update_time,
        "other": total - env.step_time - model.update_time,
        "eval_s": time.perf_counter() - t1,
        "curve": clock.curve,
    }


def gemm_floor_ms(obs_dim: int, act_dim: int, batch: int = 256, hidden: int = 256, critics: int = 2) -> float:
    """Time of the matrix products one SAC update cannot avoid, run back to back on preallocated tensors.

    Any SAC with these sizes (both implementations here) runs, per update: the actor on s' (no grad), the
    target critics on (s', a'), the critics on (s, a) forward and backward (weight grads, and input grads of
    every layer but the first), the actor on s forward and backward, and the critics on (s, pi(s)) forward
    and backward to the action only. This is their GEMMs alone, with no autograd, allocation, elementwise
    op or optimiser: a lower bound on the update time on this CPU (fp32, the current thread count).
    """
    B, H, o, a, n = batch, hidden, obs_dim, act_dim, critics
    i = o + a
    fwd = lambda d_in, d_out: [(B, d_in, d_out)]  # noqa: E731  x (B, in) @ W (in, out)
    actor_fwd = fwd(o, H) + fwd(H, H) + fwd(H, 2 * a)
    critic_fwd = (fwd(i, H) + fwd(H, H) + fwd(H, 1)) * n
    critic_dx = [(B, 1, H), (B, H, H), (B, H, i)] * n  # dX = dY @ W^T per layer (last to first)
    critic_dx_hidden = [(B, 1, H), (B, H, H)] * n  # the critic loss needs no input grad at layer 1
    critic_dw = [(H, B, 1), (H, B, H), (i, B, H)] * n  # dW = X^T @ dY per layer
    actor_bwd = [(H, B, 2 * a), (B, 2 * a, H), (H, B, H), (B, H, H), (o, B, H)]
    shapes = (
        actor_fwd  # a' ~ pi(s')
        + critic_fwd  # target critics
        + critic_fwd
        + critic_dw
        + critic_dx_hidden  # critic loss
        + actor_fwd
        + critic_fwd
        + critic_dx
        + actor_bwd  # actor loss through the critics into pi
    )
    ops = [(torch.randn(m, k), torch.randn(k, nn), torch.empty(m, nn)) for m, k, nn in shapes]

    def run():
        for x, w, y in ops:
            torch.mm(x, w, out=y)

    for _ in range(20):
        run()
    reps = 200
    t0 = time.perf_counter()
    for _ in range(reps):
        run()
    return 1e3 * (time.perf_counter() - t0) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100_000, help="env steps per run (the return budget)")
    ap.add_argument("--learning-starts", type=int, default=5000, help="random-action steps before updates")
    ap.add_argument("--seeds", type=int, default=3, help="seeds FIRST..FIRST+N-1 per env (--first-seed)")
    ap.add_argument("--first-seed", type=int, default=0, help="the first seed (to spread seeds over processes)")
    ap.add_argument("--envs", default="HalfCheetah-v5,Hopper-v5", help="comma-separated gymnasium ids")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both implementations)")
    ap.add_argument("--eval-episodes", type=int, default=5)
    ap.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="also a learning curve per run: --eval-episodes deterministic episodes every N env steps (left out "
        "of steps/s); the JSON's `curve`",
    )
    ap.add_argument(
        "--impls",
        default="ours,sb3",
        help="comma-separated subset of ours, ours-bf16 (bf16 matmuls, opt-in), ours-auto (bf16 where the "
        "precision probe measures it faster on this machine), ours-sb3eps (SB3's tanh correction), ours-autograd "
        "(the autograd update instead of the fused one), sb3",
    )
    ap.add_argument("--json", default=None, help="also write all per-run results here")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="with --json: keep the runs it holds (same budget) and run only the missing (env, impl, seed)s; "
        "speed ratios then compare runs from different sessions, returns are unaffected",
    )
    ap.add_argument(
        "--floor", action="store_true", help="also time the update's unavoidable GEMMs (the speed ceiling)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    known = {
        "ours": run_ours,
        "ours-bf16": lambda *a, **k: run_ours(*a, precision="bf16", **k),
        "ours-auto": lambda *a, **k: run_ours(*a, precision="auto", **k),
        "ours-sb3eps": lambda *a, **k: run_ours(*a, squash_eps=1e-6, **k),
        "ours-autograd": lambda *a, **k: run_ours(*a, fused=False, **k),
        "sb3": run_sb3,
    }
    impls = {name: known[name] for name in args.impls.split(",")}

    results: dict = {}
    budget = {k: getattr(args, k) for k in ("steps", "learning_starts", "threads", "eval_episodes")}
    if args.resume and args.json and Path(args.json).exists():
        old = json.loads(Path(args.json).read_text())
        if {k: old["args"].get(k) for k in budget} != budget:
            raise SystemExit(
                f"--resume: {args.json} was run with other settings {old['args']}; use another --json"
            )
        results = old["results"]
    for env_id in args.envs.split(","):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name, fn in impls.items():
                done = results.get(env_id, {}).get(name, [])
                if any(r.get("seed") == seed for r in done):
                    continue  # --resume: finished in an earlier session
                r = fn(
                    env_id,
                    args.steps,
                    args.learning_starts,
                    seed,
                    args.eval_episodes,
                    eval_every=args.eval_every,
                )
                r = {"seed": seed, **r}
                results.setdefault(env_id, {}).setdefault(name, []).append(r)
                if args.json:  # after every run, so a long grid survives a stop (see --resume)
                    Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
                print(
                    f"{env_id} seed {seed} {name:9s}: {r['sps']:7.1f} steps/s  return {r['return']:8.1f}  "
                    f"(env {r['env']:.1f}s, update {r['update']:.1f}s, other {r['other']:.1f}s)",
                    flush=True,
                )

    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    print(
        f"\n## SAC: robolearn vs SB3 — {args.steps} steps, learning_starts {args.learning_starts}, "
        f"{args.seeds} seed(s), {args.threads} torch thread(s); medians over seeds\n"
    )
    print("| env | impl | steps/s | SB3 steps/s | speed ratio | return | SB3 return | return ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    nan = float("nan")
    for env_id, by in results.items():
        s = by.get("sb3")
        ss, rs = (med(s, "sps"), med(s, "return")) if s else (nan, nan)
        for name, o in by.items():
            if name == "sb3":
                continue
            so, ro = med(o, "sps"), med(o, "return")
            print(
                f"| {env_id} | {name} | {so:.1f} | {ss:.1f} | {so / ss:.2f}x | {ro:.1f} | {rs:.1f} | "
                f"{ro / rs if rs else nan:.2f} |"
            )
    print("\nTime per env step over the whole run (ms; % of the run):\n")
    print("| env | impl | env.step | update | other | total |")
    print("|---|---|---:|---:|---:|---:|")
    for env_id, by in results.items():
        for name, rs in by.items():
            tot = med(rs, "total")
            cells = [
                f"{1e3 * med(rs, k) / args.steps:.2f} ({100 * med(rs, k) / tot:.0f}%)"
                for k in ("env", "update", "other")
            ]
            print(f"| {env_id} | {name} | {' | '.join(cells)} | {1e3 * tot / args.steps:.2f} |")
    floors = {}
    if args.floor:
        print("\nSpeed ceiling: the update's GEMMs alone (bench docstring of gemm_floor_ms), fp32:\n")
        print("| env | GEMM floor ms/update | SB3 ms/step | best possible ratio (floor + our env/other) |")
        print("|---|---:|---:|---:|")
        for env_id, by in results.items():
            e = gym.make(env_id)
            od, ad = int(np.prod(e.observation_space.shape)), int(np.prod(e.action_space.shape))
            floor = gemm_floor_ms(od, ad)
            sb3_ms = 1e3 / med(by["sb3"], "sps") if "sb3" in by else nan
            ours = by.get("ours", by.get("ours-bf16"))
            rest = 1e3 * (med(ours, "env") + med(ours, "other")) / args.steps if ours else 0.0
            floors[env_id] = {
                "gemm_floor_ms": floor,
                "sb3_ms_per_step": sb3_ms,
                "ceiling": sb3_ms / (floor + rest),
            }
            print(f"| {env_id} | {floor:.2f} | {sb3_ms:.2f} | {sb3_ms / (floor + rest):.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "floor": floors}, f, indent=1)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
