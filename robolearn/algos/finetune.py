"""Online SAC fine-tuning of a behaviour-cloning policy, demos mixed into every batch (RLPD-style):
`robolearn finetune policy=<bc ckpt> env=<id> demos=<file> steps=... out=<run dir>`.

The procedure, top to bottom:

1. the SAC observation: the BC policy's low-dim observation keys (sorted), each over the policy's history
   To (oldest first, padded with the episode's first observation like the BC dataset), flattened and
   concatenated key by key into one vector s (D,). Image observations are refused (state only for now).
   Raw units, no normaliser. Actions: the env's Box rescaled to [-1, 1] (our tasks already are).
2. the actor, from the BC checkpoint through an explicit *bridge* (`bridge=`):

   - `residual` (default, any head): `sac.ResidualActor` on top of the frozen BC policy,
     a = clip(base(s) + residual_scale * tanh(u), -1, 1). base(s) = the FIRST action of the BC chunk,
     made deterministic: the mean for `mse`, the mean of the most likely component for `gmm`; for sampling
     heads (diffusion, flow, tokenized) `policy.act` with a torch.Generator re-seeded (0) at every call.
     The base action is computed ONCE per transition and stored as the last Da columns of the SAC
     observation, s_sac = [s, base(s)] (D + Da,): updates never re-run the BC network (a diffusion base
     would cost 2 x batch x denoising steps per update otherwise), the critic sees what the base proposes,
     and a base with leftover randomness is simply part of the observed state. The residual's last layer
     starts at zero, so at step 0 the actor's mean action IS the BC policy's (deterministic) first action.
   - `gaussian` (heads mse, gmm): a fresh `sac.GaussianActor` on s, initialised by distillation:
     `distill_steps` Adam steps regressing tanh(mu(s)) onto the BC base's first action on the demo
     states (targets clipped to +-0.99, since tanh never reaches +-1), log_std pulled to `init_log_std`.
     The BC network is not needed afterwards. (Distillation rather than copying the GMM's likeliest
     component: the same code serves mse and gmm, and the GMM lives in the normalised chunk space.)
     Needs `demos=`.
   - `none`: a fresh `sac.GaussianActor` (SAC from scratch: the "SAC without BC" baseline). With a
     checkpoint it still uses the checkpoint's observation keys/history; with `policy=` empty it uses all
     of the env's low-dim keys and To=1 (then `env=` is required).

   A head that cannot be bridged as asked fails naming the head and the valid bridges.
3. replay: online transitions in a ring buffer; demo transitions (from `demos=`, built the same way) in
   their own buffer; each batch draws `demo_ratio` of its rows from the demos (schedulable linearly to
   `demo_ratio_end` over `demo_ratio_steps` env steps), see `robolearn.algos.replay.MixedSampler`.
   Demo rewards: the file's, when its reward_type is the env's; dense -> sparse is relabelled exactly
   (every robolearn task terminates on success and its sparse reward is `is_success`, so r = 1 on the
   terminal step of a successful episode, 0 elsewhere); sparse -> dense cannot be and is refused.
   `reward_type` defaults to the checkpoint's (= the BC training data's) env_kwargs.
4. `learning_starts` env steps of acting without updates (the BC-initialised actor acts; bridge=none acts
   uniformly at random), then `utd` SAC updates per env step (critic warm-up, BC term: see SACConfig).
5. deterministic evaluation (mean action) every `eval_every` env steps on the fixed episode seeds of
   `robolearn eval` (env seed i for episode i), TensorBoard throughout, `results.json` at the end. Online
   training episodes reset from the fine-tuning seed range (robolearn.seeds: 30_000_000 + seed * 100_000 +
   episode), disjoint from evaluation's [0, 10_000_000) and from the demos'.
6. `out/checkpoints/last.pt` every `ckpt_every` env steps, at the end and on Ctrl-C/SIGTERM: the full state
   (SAC networks/optimisers/temperature, both buffers, RNGs, step, episode counter) plus the BC policy's
   weights, so it is runnable without the original file; loadable with torch.load(weights_only=True).
   Its `train_seeds` (int64 tensor) are the env seeds of everything it learnt from: the BC checkpoint's
   train_seeds, the demo file's episodes and its own online episodes; `robolearn eval` refuses them.
   `resume=true` continues (the interrupted episode is cut: its last stored transition is marked
   truncated and a new episode starts).

Running a fine-tuned checkpoint (format "robolearn-sac/1"):

    ck = torch.load(path, weights_only=True)
    actor = sac_actor_from_checkpoint(ck)        # .env_id, .env_kwargs, .reset(), .act(obs_dict) -> (Da,)
    actor.reset(); obs, _ = env.reset(seed=0); a = actor.act(obs)   # env units, keeps its own history
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robolearn.config import REWARD_TYPES, ConfigError, choice, existing_file, in_range, opt, positive
from robolearn.seeds import FINETUNE_SEED_BASE, add_seeds, data_fields, finetune_seed, warn_if_evaluated

log = logging.getLogger(__name__)

FORMAT = "robolearn-sac/1"
BRIDGES = ("residual", "gaussian", "none")
GAUSSIAN_HEADS = ("mse", "gmm")  # heads whose first action is a deterministic mean we can distil
TRAIN_SEED_BASE = FINETUNE_SEED_BASE  # online episodes: 30_000_000 + seed * 100_000 + i (robolearn.seeds)


# ------------------------------------------------------------------------------------------------ config
@dataclass
class FinetuneConfig:
    policy: str = opt(
        "",
        "BC checkpoint to fine-tune (checkpoints/last.pt of `robolearn train`); "
        "may be empty only with bridge=none",
    )
    env: str | None = opt(None, "task (default: the checkpoint's)")
    demos: str | None = opt(None, "HDF5 demos mixed into every batch (default: none = online data only)")
    out: str = opt("runs/finetune", "run folder: checkpoints/last.pt, tb/, results.json, config.json")
    resume: bool = opt(False, "continue the run in out/ from checkpoints/last.pt")
    steps: int = opt(5000, "online env steps")
    bridge: str = opt("residual", f"how the BC policy becomes the SAC actor: {BRIDGES}")
    residual_scale: float = opt(0.1, "bridge=residual: max size of the residual, in [-1, 1] action units")
    init_log_std: float | None = opt(
        None,
        "initial log std of the actor's pre-tanh Gaussian (None: -1 for "
        "residual, in residual units; -2 for gaussian; bridge=none: MLP init)",
    )
    distill_steps: int = opt(1000, "bridge=gaussian: distillation steps onto the BC actions")
    reward_type: str | None = opt(None, f"reward optimised: {REWARD_TYPES} (default: the checkpoint's)")
    demo_ratio: float = opt(0.5, "share of demo transitions in each batch (RLPD: 0.5)")
    demo_ratio_end: float | None = opt(None, "anneal demo_ratio linearly to this (None = constant)")
    demo_ratio_steps: int = opt(0, "... over this many env steps (needed with demo_ratio_end)")
    learning_starts: int | None = opt(
        None, "env steps before the first update (None: 500 with demos, else 5000)"
    )
    utd: int = opt(1, "critic updates per env step")
    batch_size: int = opt(256, "transitions per update")
    gamma: float = opt(0.99, "discount")
    tau: float = opt(0.005, "Polyak rate of the target critics")
    actor_lr: float = opt(3e-4, "actor learning rate")
    critic_lr: float = opt(3e-4, "critic learning rate")
    alpha_lr: float = opt(3e-4, "temperature learning rate")
    hidden: list[int] = opt([256, 256], "hidden widths of the critics and of the actor's MLP")
    n_critics: int = opt(2, "critics in the ensemble (RLPD: 10)")
    critic_subset: int = opt(2, "random critics whose min forms the target (<= n_critics)")
    layer_norm: bool = opt(True, "LayerNorm in the critics (RLPD: keeps Q bounded with offline data)")
    n_step: int = opt(1, "n-step returns")
    init_alpha: float = opt(0.1, "initial entropy temperature (small: start close to the BC policy)")
    autotune: bool = opt(True, "learn the temperature")
    backup_entropy: bool = opt(False, "add the entropy bonus to the TD target. Off by default: with a success "
                               "reward that ends the episode, a per-step entropy bonus pays the agent to "
                               "dawdle (measured on PegInsert: Q rose to 3.5 for a max return of 1 and the "
                               "cycle time grew from 35 to 52 steps)")
    target_entropy: float | None = opt(None, "None = -act_dim")
    bc_weight: float = opt(0.0, "weight of the BC term |mean_pi - a_demo|^2 on demo rows (0 = off)")
    critic_warmup: int = opt(0, "first K updates train only the critics (keep the BC actor while Q settles)")
    max_grad_norm: float | None = opt(None, "clip each network's gradient norm (None = off)")
    buffer_size: int = opt(1_000_000, "online replay capacity (min(buffer_size, steps) is allocated)")
    eval_every: int = opt(0, "evaluation every N env steps (0 = only at the end)")
    eval_episodes: int = opt(10, "episodes per evaluation (env seeds 0..N-1, as `robolearn eval`)")
    eval_initial: bool = opt(True, "also evaluate the initial actor (= BC for bridge=residual) at step 0")
    ckpt_every: int = opt(1000, "checkpoint every N env steps")
    log_every: int = opt(100, "TensorBoard scalars every N env steps")
    seed: int = opt(0, "seed (torch, numpy, training episodes)")
    threads: int = opt(
        1,
        "torch intra-op threads (0 = torch's default; SAC's 256-wide nets gain little from "
        "more, and extra threads thrash on a shared CPU)",
    )

    def __post_init__(self):
        choice("bridge", self.bridge, BRIDGES)
        if self.policy:
            existing_file("policy", self.policy, "Train one with `robolearn train ... out=DIR`.")
        elif self.bridge != "none":
            raise ConfigError(
                f"policy is required with bridge={self.bridge!r} (e.g. policy=runs/bc/checkpoints/"
                "last.pt); only bridge=none (SAC from scratch) runs without one"
            )
        elif not self.env:
            raise ConfigError("env is required when no policy is given (e.g. env=robolearn/Lift-v0)")
        if self.env:
            from robolearn.config import env_id

            env_id("env", self.env)
        if self.demos:
            existing_file("demos", self.demos, "Record some with `robolearn record ... out=FILE`.")
        if self.bridge == "gaussian" and not self.demos:
            raise ConfigError(
                "bridge=gaussian distils the BC policy on the demo states: give demos=FILE "
                "(or use bridge=residual)"
            )
        if self.bc_weight > 0 and not self.demos:
            raise ConfigError(f"bc_weight={self.bc_weight} needs demos=FILE (the BC term uses demo actions)")
        if not self.out:
            raise ConfigError("out is required (e.g. out=runs/finetune_lift)")
        positive("steps", self.steps)
        positive("residual_scale", self.residual_scale)
        positive("distill_steps", self.distill_steps, zero_ok=True)
        if self.reward_type is not None:
            choice("reward_type", self.reward_type, REWARD_TYPES)
        in_range("demo_ratio", self.demo_ratio, 0.0, 1.0)
        if self.demo_ratio_end is not None:
            in_range("demo_ratio_end", self.demo_ratio_end, 0.0, 1.0)
            positive("demo_ratio_steps", self.demo_ratio_steps)
        positive("demo_ratio_steps", self.demo_ratio_steps, zero_ok=True)
        if self.learning_starts is not None:
            positive("learning_starts", self.learning_starts, zero_ok=True)
        positive("eval_every", self.eval_every, zero_ok=True)
        positive("eval_episodes", self.eval_episodes)
        positive("ckpt_every", self.ckpt_every)
        positive("log_every", self.log_every)
        positive("threads", self.threads, zero_ok=True)
        in_range("seed", self.seed, 0, 99)  # online episodes: env seeds 30_000_000 + seed * 100_000 + i
        try:
            self.sac_config()
        except ValueError as e:  # SACConfig names its field; say which of ours it is
            raise ConfigError(str(e).replace("SACConfig.", "")) from None

    def starts(self) -> int:
        if self.learning_starts is not None:
            return self.learning_starts
        return 500 if self.demos else 5000

    def sac_config(self):
        from robolearn.algos.sac import SACConfig

        return SACConfig(
            gamma=self.gamma,
            tau=self.tau,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            alpha_lr=self.alpha_lr,
            batch_size=self.batch_size,
            hidden=tuple(self.hidden),
            n_critics=self.n_critics,
            critic_subset=self.critic_subset,
            layer_norm=self.layer_norm,
            n_step=self.n_step,
            utd=self.utd,
            init_alpha=self.init_alpha,
            autotune=self.autotune,
            backup_entropy=self.backup_entropy,
            target_entropy=self.target_entropy,
            bc_weight=self.bc_weight,
            critic_warmup=self.critic_warmup,
            max_grad_norm=self.max_grad_norm,
            learning_starts=self.starts(),
            buffer_size=self.buffer_size,
        )


# ------------------------------------------------------------------------------------------------ observations
@dataclass
class ObsLayout:
    """Which low-dim keys (sorted), their per-step shapes and the history To -> one flat vector (D,).

    flat = cat_k [obs[k][t-To+1], ..., obs[k][t]].reshape(-1)   key by key, oldest step first."""

    keys: list[str]
    shapes: list[tuple[int, ...]]
    To: int

    @property
    def sizes(self) -> list[int]:
        return [self.To * math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    @classmethod
    def from_spec(cls, spec: dict) -> ObsLayout:
        images = sorted(k for k, v in spec["obs"].items() if v["dtype"] == "uint8")
        if images:
            raise ConfigError(
                f"finetune works on low-dim (state) observations only, but the policy observes image keys "
                f"{images}. Fix: train the BC policy on obs_mode=state data (or with train obs_keys= "
                "restricted to low-dim keys)"
            )
        keys = sorted(spec["obs"])
        return cls(keys, [tuple(int(d) for d in spec["obs"][k]["shape"]) for k in keys], int(spec["To"]))

    def histories(self, seq: dict[str, np.ndarray]) -> np.ndarray:
        """One episode's observations {k: (T, *shape)} -> (T, D): the flat history at every step, padded
        at the start with the first observation (as WindowDataset / ObsHistory do)."""
        T = len(seq[self.keys[0]])
        idx = np.clip(np.arange(T)[:, None] + np.arange(self.To)[None] - (self.To - 1), 0, T - 1)  # (T, To)
        return np.concatenate([np.asarray(seq[k], np.float32)[idx].reshape(T, -1) for k in self.keys], axis=1)

    def unflatten(self, x: Tensor) -> dict[str, Tensor]:
        """(B, D) -> {k: (B, To, *shape)} for the BC policy."""
        parts = torch.split(x, self.sizes, dim=-1)
        return {k: p.reshape(x.shape[0], self.To, *s) for k, p, s in zip(self.keys, parts, self.shapes)}

    def to_json(self) -> str:
        return json.dumps({"keys": self.keys, "shapes": [list(s) for s in self.shapes], "To": self.To})

    @classmethod
    def from_json(cls, text: str) -> ObsLayout:
        d = json.loads(text)
        return cls(list(d["keys"]), [tuple(s) for s in d["shapes"]], int(d["To"]))


class FlatHistory:
    """Single-env observation history -> flat vector (D,); the first observation fills the history."""

    def __init__(self, layout: ObsLayout):
        self.layout = layout
        self.buf: np.ndarray | None = None  # (To, D / To) per key, kept flat per step

    def reset(self) -> None:
        self.buf = None

    def push(self, obs: dict) -> np.ndarray:
        L = self.layout
        missing = [k for k in L.keys if k not in obs]
        if missing:
            raise KeyError(f"observation is missing keys {missing}; the fine-tuned actor expects {L.keys}")
        step = [np.asarray(obs[k], np.float32).reshape(1, -1) for k in L.keys]  # per key (1, prod(shape))
        if self.buf is None:
            self.buf = [np.repeat(s, L.To, axis=0) for s in step]
        else:
            for b, s in zip(self.buf, step):
                b[:-1] = b[1:].copy()
                b[-1] = s[0]
        return np.concatenate([b.reshape(-1) for b in self.buf])


# ------------------------------------------------------------------------------------------------ bridges
def check_bridge(head: str | None, bridge: str) -> None:
    """Fail clearly when `head` cannot be bridged as `bridge`."""
    choice("bridge", bridge, BRIDGES)
    if bridge == "gaussian" and head not in GAUSSIAN_HEADS:
        valid = ["residual", "none"] + (["gaussian"] if head in GAUSSIAN_HEADS else [])
        raise ConfigError(
            f"bridge='gaussian' cannot be used with the {head!r} head: it initialises a Gaussian actor from a "
            f"deterministic mean action, which only the {list(GAUSSIAN_HEADS)} heads have (a {head!r} policy "
            f"has no tractable mean/log-prob). Valid bridges for {head!r}: {valid} "
            "(bridge=residual trains a residual on top of the frozen policy)"
        )


def to_unit(a: Tensor | np.ndarray, low: np.ndarray, high: np.ndarray):
    """Env action units -> [-1, 1] (clipped)."""
    if isinstance(a, Tensor):
        lo, hi = torch.as_tensor(low, dtype=a.dtype), torch.as_tensor(high, dtype=a.dtype)
        return (2.0 * (a - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0)
    return np.clip(2.0 * (np.asarray(a, np.float32) - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)


def from_unit(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (low + (np.asarray(a, np.float32) + 1.0) * 0.5 * (high - low)).astype(np.float32)


def bc_base(policy, layout: ObsLayout, low: np.ndarray, high: np.ndarray) -> Callable[[Tensor], Tensor]:
    """The frozen BC policy as a map flat history (B, D) -> first chunk action (B, Da) in [-1, 1]: mse its
    mean, gmm the mean of the likeliest component, other heads a fresh sample from one seeded generator.

    Sampling (not a fixed noise vector) matters: a flow/diffusion head run from the same noise at every
    step blends its modes over time (measured on Lift: the gripper command crept from open to closed while
    the arm already rose, 0% success vs 75% sampled). The sample is stored in the SAC observation (its last
    Da columns), so the critic and the residual see the proposal that was actually made."""
    policy.eval().requires_grad_(False)
    head = policy.cfg.head
    gen = torch.Generator(device=policy.device).manual_seed(0)

    @torch.no_grad()
    def base(x: Tensor) -> Tensor:
        obs = layout.unflatten(x.float())
        if head == "gmm":
            logits, mean, _ = policy.head.dist_params(policy.encode(obs))
            a = mean[torch.arange(len(x)), logits.argmax(-1)].view(len(x), policy.Tp, policy.Da)
            a = policy.normalizer.unnormalize("action", a)
        elif head == "mse":
            a = policy.act(obs)
        else:
            a = policy.act(obs, generator=gen)
        return to_unit(a[:, 0].float().cpu(), low, high)

    return base


def batched(fn: Callable[[Tensor], Tensor], x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    if len(x) == 0:
        return np.zeros((0, 0), np.float32)
    return np.concatenate([fn(torch.from_numpy(x[i : i + chunk])).numpy() for i in range(0, len(x), chunk)])


def last_columns(da: int) -> Callable[[Tensor], Tensor]:
    """ResidualActor's base: the BC action stored as the last Da columns of the SAC observation."""

    def base(obs: Tensor) -> Tensor:
        return obs[:, -da:]

    return base


def build_actor(
    bridge: str, obs_dim: int, act_dim: int, hidden, residual_scale: float, init_log_std: float | None
) -> nn.Module:
    from robolearn.algos.sac import GaussianActor, ResidualActor

    if bridge == "residual":
        return ResidualActor(
            last_columns(act_dim),
            obs_dim,
            act_dim,
            scale=residual_scale,
            hidden=tuple(hidden),
            init_log_std=-1.0 if init_log_std is None else init_log_std,
        )
    return GaussianActor(obs_dim, act_dim, tuple(hidden))  # bridge=gaussian: then distilled


def distill_gaussian(
    actor: nn.Module,
    obs: np.ndarray,
    target: np.ndarray,
    steps: int,
    log_std: float,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Regress a GaussianActor's tanh(mu(s)) onto target actions (N, Da) in [-1, 1] (clipped to +-0.99: tanh
    never reaches +-1) and pull its log_std to `log_std`. Returns the final mean-squared error."""
    rng = np.random.default_rng(seed)
    x, y = torch.from_numpy(obs), torch.from_numpy(np.clip(target, -0.99, 0.99))
    opt = torch.optim.Adam(actor.parameters(), lr=lr)
    mse = float("nan")
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(0, len(x), size=min(batch_size, len(x))))
        mu, ls = actor.head(actor.trunk(x[i])).chunk(2, dim=-1)
        err = (torch.tanh(mu) - y[i]).square().sum(-1).mean()
        loss = err + 0.1 * (ls - log_std).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mse = float(err.detach()) / y.shape[1]
    return mse


# ------------------------------------------------------------------------------------------------ demos
def load_demo_transitions(
    path, layout: ObsLayout, low, high, reward_type: str, base: Callable[[Tensor], Tensor] | None
) -> dict[str, np.ndarray]:
    """Demo file -> transition arrays in the SAC layout (obs/next_obs (N, D [+ Da]), action (N, Da) in
    [-1, 1], reward, terminated, truncated). Rewards: see the module docstring (relabelled dense -> sparse)."""
    from robolearn.data.store import iter_episodes, read_info

    info = read_info(path)
    missing = [k for k in layout.keys if k not in info.obs_keys]
    if missing:
        raise ConfigError(
            f"demos={str(path)!r} lacks observation keys {missing} that the policy uses "
            f"(the file has {sorted(info.obs_keys)})"
        )
    file_rt = info.env_kwargs.get("reward_type", "dense")
    if file_rt != reward_type and not (file_rt == "dense" and reward_type == "sparse"):
        raise ConfigError(
            f"demos={str(path)!r} were recorded with reward_type={file_rt!r}; their rewards cannot "
            f"be relabelled as {reward_type!r}. Fix: record them with reward_type={reward_type}, or "
            f"fine-tune with reward_type={file_rt}"
        )
    parts: dict[str, list] = {k: [] for k in ("h", "action", "reward", "terminated", "truncated")}
    for name, ep in iter_episodes(path):
        T = len(ep["actions"])
        if T == 0:
            continue
        nxt = ep.get("next_obs")
        if nxt is None:
            raise ConfigError(f"demos={str(path)!r}, episode {name}: no next_obs (needed for transitions)")
        seq = {k: np.concatenate([ep["obs"][k], nxt[k][-1:]]) for k in layout.keys}  # (T + 1, ...)
        parts["h"].append(layout.histories(seq))  # obs[t] = h[t], next_obs[t] = h[t + 1]
        parts["action"].append(to_unit(ep["actions"], low, high))
        done = bool(np.asarray(ep.get("dones", np.zeros(T)))[-1])
        if reward_type == file_rt:
            r = np.asarray(ep.get("rewards", np.zeros(T)), np.float32)
        else:  # dense -> sparse: is_success; robolearn tasks terminate on success
            r = np.zeros(T, np.float32)
            r[-1] = float(done and bool(ep["attrs"].get("success", False)))
        term = np.zeros(T, np.float32)
        term[-1] = float(done)
        trunc = np.zeros(T, bool)
        trunc[-1] = not done
        parts["reward"].append(r)
        parts["terminated"].append(term)
        parts["truncated"].append(trunc)
    if not parts["h"]:
        raise ConfigError(f"demos={str(path)!r} holds no transitions")
    lens = [len(h) for h in parts["h"]]  # T + 1 per episode
    h = np.concatenate(parts["h"])
    if base is not None:
        h = np.concatenate([h, batched(base, h)], axis=1)
    ends = np.cumsum(lens)
    first = np.concatenate([np.arange(e - n, e - 1) for e, n in zip(ends, lens)])
    return {
        "obs": h[first],
        "next_obs": h[first + 1],
        "action": np.concatenate(parts["action"]),
        "reward": np.concatenate(parts["reward"]),
        "terminated": np.concatenate(parts["terminated"]),
        "truncated": np.concatenate(parts["truncated"]),
        "episodes": len(lens),
    }


# ------------------------------------------------------------------------------------------------ acting
class SACActorPolicy:
    """A fine-tuned actor as a single-env policy: `reset()`, `act(obs_dict) -> (Da,)` in env units.

    Keeps its own observation history; acts with the deterministic mean action unless
    `deterministic=False`. `observe(obs)` returns the SAC observation (history [+ BC action])."""

    def __init__(
        self,
        actor: nn.Module,
        layout: ObsLayout,
        low: np.ndarray,
        high: np.ndarray,
        base: Callable[[Tensor], Tensor] | None = None,
        deterministic: bool = True,
        env_id: str | None = None,
        env_kwargs: dict | None = None,
    ):
        self.actor, self.layout, self.base = actor, layout, base
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.deterministic = deterministic
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.action_dim = len(self.low)
        self.history = FlatHistory(layout)

    def reset(self) -> None:
        self.history.reset()

    def observe(self, obs: dict) -> np.ndarray:
        x = self.history.push(obs)
        if self.base is not None:
            x = np.concatenate([x, self.base(torch.from_numpy(x)[None])[0].numpy()])
        return x

    @torch.no_grad()
    def act_unit(self, s: np.ndarray, deterministic: bool | None = None) -> np.ndarray:
        a, _, mean = self.actor(torch.from_numpy(np.asarray(s, np.float32))[None])
        det = self.deterministic if deterministic is None else deterministic
        return (mean if det else a)[0].numpy()

    def act(self, obs: dict) -> np.ndarray:
        return from_unit(self.act_unit(self.observe(obs)), self.low, self.high)


def evaluate_actor(pol: SACActorPolicy, env_id: str, env_kwargs: dict, episodes: int, seed: int = 0) -> dict:
    """Deterministic rollouts through `robolearn eval`'s runner (same env seeds seed*10_000 + i, same metrics)."""
    from robolearn.eval.runner import evaluate_policy

    was = pol.deterministic
    pol.deterministic = True
    try:
        return evaluate_policy(pol, env_id, env_kwargs, episodes=episodes, seed=seed)
    finally:
        pol.deterministic = was


def sac_actor_from_checkpoint(ck: dict, deterministic: bool = True) -> SACActorPolicy:
    """A "robolearn-sac/1" checkpoint dict (torch.load(path, weights_only=True)) -> SACActorPolicy with
    `reset()`, `act(obs_dict) -> np.ndarray (Da,)` in env units, `env_id`, `env_kwargs`, `action_dim`.
    Runs without the original BC file (its weights are in the checkpoint)."""
    from robolearn.policies.checkpoint import CheckpointError, build_policy

    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        got = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"not a fine-tuned SAC checkpoint: format={got!r}, expected {FORMAT!r}")
    layout = ObsLayout.from_json(ck["obs_layout"])
    low, high = ck["action_low"].numpy(), ck["action_high"].numpy()
    da = len(low)
    base = None
    if ck["bridge"] == "residual":
        base = bc_base(build_policy(ck["bc_policy"], use_ema=True), layout, low, high)
    obs_dim = layout.dim + (da if base is not None else 0)
    actor = build_actor(ck["bridge"], obs_dim, da, ck["actor_hidden"], float(ck["residual_scale"]), None)
    actor.load_state_dict(ck["sac"]["actor"])
    actor.eval()
    return SACActorPolicy(
        actor,
        layout,
        low,
        high,
        base,
        deterministic,
        ck.get("env_id"),
        json.loads(ck.get("env_kwargs") or "{}"),
    )


def load_finetuned(path: str | os.PathLike, deterministic: bool = True) -> SACActorPolicy:
    """File -> SACActorPolicy (weights_only load: no code execution)."""
    from robolearn.policies.checkpoint import read_checkpoint

    return sac_actor_from_checkpoint(read_checkpoint(path, (FORMAT,), field="policy"), deterministic)


# ------------------------------------------------------------------------------------------------ train
def _plain_cfg(cfg: FinetuneConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))


def _buffer_into(buffer, state: dict) -> None:
    """Load a saved ReplayBuffer state into `buffer`, also when the capacity changed (then chronologically)."""
    if int(state["capacity"]) == buffer.capacity and int(state["n_step"]) == buffer.n_step:
        buffer.load_state_dict(state)
        return
    n, ptr = int(state["size"]), int(state["ptr"])
    order = np.r_[ptr:n, 0:ptr] if n == int(state["capacity"]) else np.arange(n)
    arr = {
        k: state[k].numpy()[order] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    }
    buffer.add_batch(
        arr["obs"], arr["action"], arr["reward"], arr["next_obs"], arr["terminated"], arr["truncated"]
    )


def finetune(cfg: FinetuneConfig) -> dict:
    """Run the fine-tuning; returns the summary dict (also the end of out/results.json's story)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from robolearn.algos.bc import atomic_save
    from robolearn.algos.replay import LinearSchedule, MixedSampler, ReplayBuffer
    from robolearn.algos.sac import SAC
    from robolearn.envutil import is_robolearn_task, make_env
    from robolearn.algos.bc import _clean_stale_tmp
    from robolearn.policies.checkpoint import build_policy, load_policy, policy_state, read_checkpoint
    from robolearn.policies.checkpoint import FORMAT as BC_FORMAT
    from robolearn.signals import interruptible

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    resume_ck = None
    _clean_stale_tmp(ckpt_path)
    if cfg.resume and not ckpt_path.exists():
        # killed before its first checkpoint: nothing to continue, so resume=true starts the run
        log.info("resume=true: no checkpoint in %s yet; starting the run from env step 0", ckpt_path.parent)
    elif cfg.resume:
        resume_ck = read_checkpoint(ckpt_path, (FORMAT,), field="resume=true: out")
        if resume_ck["bridge"] != cfg.bridge:
            raise ConfigError(
                f"resume=true with bridge={cfg.bridge!r}, but the run used bridge="
                f"{resume_ck['bridge']!r}. Fix: bridge={resume_ck['bridge']}"
            )

    # ---- the BC policy (from the run's checkpoint when resuming: the original file may be gone)
    bc = None
    bc_ck_env, bc_ck_kwargs = None, {}
    if resume_ck is not None and resume_ck.get("bc_policy") is not None:
        bc = build_policy(resume_ck["bc_policy"], use_ema=True)
        bc_ck_env, bc_ck_kwargs = (
            resume_ck.get("bc_env_id"),
            json.loads(resume_ck.get("bc_env_kwargs") or "{}"),
        )
    elif cfg.policy:
        raw = read_checkpoint(cfg.policy, (BC_FORMAT,), field="policy")
        bc = load_policy(cfg.policy, use_ema=True)
        bc_ck_env = raw.get("env_id") or None
        kw = raw.get("env_kwargs") or {}
        bc_ck_kwargs = json.loads(kw) if isinstance(kw, str) else dict(kw)
    if bc is not None:
        check_bridge(bc.cfg.head, cfg.bridge)
    # train_seeds of the BC checkpoint and the demos (on resume: the run's checkpoint holds them)
    offline_seeds = data_fields(None, resume_ck) if resume_ck is not None else (
        data_fields(cfg.demos, *([raw] if cfg.policy else [])))
    warn_if_evaluated(offline_seeds, (0, 1), cfg.eval_episodes, "finetune")  # run_eval's seeds 0 and 1
    env_id = cfg.env or bc_ck_env
    if not env_id:
        raise ConfigError(
            f"the checkpoint {cfg.policy!r} does not record its env; give env=... "
            "(e.g. env=robolearn/Lift-v0)"
        )
    env_kwargs = dict(bc_ck_kwargs) if env_id == bc_ck_env else {}
    if is_robolearn_task(env_id):
        env_kwargs.setdefault("reward_type", "dense")
        if cfg.reward_type is not None:
            env_kwargs["reward_type"] = cfg.reward_type
        env_kwargs["obs_mode"] = "state"  # low-dim keys only (checked below); no rendering cost
    reward_type = env_kwargs.get("reward_type", cfg.reward_type or "dense")
    env = make_env(env_id, **env_kwargs)
    space = env.action_space
    if len(space.shape) != 1 or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise ConfigError(f"env {env_id!r} has action space {space}; finetune needs a bounded 1-D Box")
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    da = int(space.shape[0])

    if bc is not None:
        layout = ObsLayout.from_spec(bc.spec)
        if int(bc.spec["action_dim"]) != da:
            raise ConfigError(
                f"the policy outputs action_dim={bc.spec['action_dim']} but env {env_id!r} takes {da}"
            )
        env_shapes = {k: tuple(s.shape) for k, s in env.observation_space.spaces.items()}
        bad = [k for k, s in zip(layout.keys, layout.shapes) if env_shapes.get(k) != s]
        if bad:
            raise ConfigError(
                f"env {env_id!r} does not provide the policy's observation keys/shapes {bad} "
                f"(env: {env_shapes})"
            )
    else:
        sp = env.observation_space.spaces
        keys = sorted(k for k, s in sp.items() if s.dtype != np.uint8)
        layout = ObsLayout(keys, [tuple(sp[k].shape) for k in keys], 1)
    use_base = cfg.bridge == "residual"
    base = bc_base(bc, layout, low, high) if bc is not None else None
    obs_dim = layout.dim + (da if use_base else 0)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    sac_cfg = cfg.sac_config()
    init_log_std = cfg.init_log_std
    if init_log_std is None and cfg.bridge == "gaussian":
        init_log_std = -2.0
    actor = build_actor(cfg.bridge, obs_dim, da, cfg.hidden, cfg.residual_scale, init_log_std)

    # ---- demos (rebuilt from the file on a fresh run; from the checkpoint on resume)
    demo_buf = None
    demo_info: dict = {}
    if resume_ck is not None and resume_ck.get("demo_replay") is not None:
        st = resume_ck["demo_replay"]
        demo_buf = ReplayBuffer(obs_dim, da, int(st["capacity"]), cfg.n_step, cfg.gamma)
        demo_buf.load_state_dict(st)
    elif cfg.demos:
        d = load_demo_transitions(cfg.demos, layout, low, high, reward_type, base if use_base else None)
        demo_buf = ReplayBuffer(obs_dim, da, len(d["reward"]), cfg.n_step, cfg.gamma)
        demo_buf.add_batch(d["obs"], d["action"], d["reward"], d["next_obs"], d["terminated"], d["truncated"])
        demo_info = {"demo_episodes": d["episodes"], "demo_transitions": len(d["reward"])}
        log.info("demos: %d episodes, %d transitions from %s", d["episodes"], len(d["reward"]), cfg.demos)
        if cfg.bridge == "gaussian" and resume_ck is None:
            mse = distill_gaussian(
                actor, d["obs"], batched(base, d["obs"]), cfg.distill_steps, init_log_std, seed=cfg.seed
            )
            demo_info["distill_mse"] = mse
            log.info(
                "bridge=gaussian: distilled the %s policy in %d steps, mse per dim %.4g",
                bc.cfg.head,
                cfg.distill_steps,
                mse,
            )

    agent = SAC(actor, obs_dim, da, sac_cfg)
    capacity = min(cfg.buffer_size, cfg.steps)
    online = ReplayBuffer(obs_dim, da, capacity, cfg.n_step, cfg.gamma)
    schedule = (
        LinearSchedule(cfg.demo_ratio, cfg.demo_ratio_end, cfg.demo_ratio_steps)
        if cfg.demo_ratio_end is not None
        else cfg.demo_ratio
    )
    sampler = MixedSampler(demo_buf, online, schedule) if demo_buf is not None else None
    pol = SACActorPolicy(
        actor,
        layout,
        low,
        high,
        base if use_base else None,
        deterministic=False,
        env_id=env_id,
        env_kwargs=env_kwargs,
    )

    start, episodes = 0, 0
    history: dict = {"eval": []}
    timing = {"env": 0.0, "update": 0.0, "act": 0.0, "eval": 0.0}
    if resume_ck is not None:
        agent.load_state_dict(resume_ck["sac"])
        _buffer_into(online, resume_ck["replay"])
        if len(online):  # the interrupted episode is cut here: stop n-step windows at its last transition
            online.truncated[(online.ptr - 1) % online.capacity] = True
        start, episodes = int(resume_ck["step"]), int(resume_ck["episodes"])
        rng.bit_generator.state = json.loads(resume_ck["rng_numpy"])
        torch.set_rng_state(resume_ck["rng_torch"])
        history = json.loads(resume_ck.get("history") or '{"eval": []}')
        log.info("resumed %s at env step %d (%d online transitions)", ckpt_path, start, len(online))

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(_plain_cfg(cfg), indent=2))
    writer = SummaryWriter(str(out / "tb"), purge_step=start if start else None)
    bc_state = policy_state(bc) if bc is not None else None
    bc_path = str(Path(cfg.policy).resolve()) if cfg.policy else ""
    if resume_ck is not None:
        bc_path = resume_ck.get("bc_path", bc_path)

    best_path = ckpt_path.with_name("best.pt")
    best: dict = history.setdefault("best", {"key": None, "step": None})  # in the checkpoint: survives resume

    def checkpoint(step: int, path: Path = ckpt_path) -> None:
        atomic_save(
            {
                "format": FORMAT,
                "env_id": env_id,
                "env_kwargs": json.dumps(env_kwargs),
                "bridge": cfg.bridge,
                "obs_layout": layout.to_json(),
                "action_low": torch.from_numpy(low),
                "action_high": torch.from_numpy(high),
                "residual_scale": cfg.residual_scale,
                "actor_hidden": list(cfg.hidden),
                "bc_policy": bc_state,
                "bc_path": bc_path,
                "bc_env_id": bc_ck_env,
                "bc_env_kwargs": json.dumps(bc_ck_kwargs),
                "sac": agent.state_dict(),
                "replay": online.state_dict(),
                "demo_replay": demo_buf.state_dict() if demo_buf is not None else None,
                "step": step,
                "episodes": episodes,
                "rng_numpy": json.dumps(rng.bit_generator.state),
                "rng_torch": torch.get_rng_state(),
                "finetune_config": _plain_cfg(cfg),
                "history": json.dumps(history),
                # + the online episodes 0..episodes (the one running, if any, included)
                **add_seeds(offline_seeds, (finetune_seed(cfg.seed, e) for e in range(episodes + 1) if step)),
            },
            path,
        )

    def run_eval(step: int, final: bool = False) -> dict:
        """Periodic evaluations use eval seed 1 (env seeds 10000+i) and keep checkpoints/best.pt (highest
        success, then shortest cycle time); the final one uses seed 0, the default of `robolearn eval`,
        so evaluating best.pt there is not biased by the selection."""
        t0 = time.perf_counter()
        actor.eval()
        res = evaluate_actor(pol, env_id, env_kwargs, cfg.eval_episodes, seed=0 if final else 1)
        actor.train()
        if not final:
            key = (res["success_rate"], -(res["cycle_time_steps"] or float("inf")))
            if best["key"] is None or list(key) > list(best["key"]):
                best.update(key=list(key), step=step)
                checkpoint(step, best_path)
        timing["eval"] += time.perf_counter() - t0
        writer.add_scalar("eval/success_rate", res["success_rate"], step)
        writer.add_scalar("eval/return", res["return_mean"], step)
        if res["cycle_time_steps"] is not None:
            writer.add_scalar("eval/cycle_time_steps", res["cycle_time_steps"], step)
        history["eval"].append(
            {"step": step, **{k: res[k] for k in ("success_rate", "return_mean", "cycle_time_steps")}}
        )
        log.info(
            "step %d: eval success %.0f%%, return %.2f", step, 100 * res["success_rate"], res["return_mean"]
        )
        return res

    starts = cfg.starts()
    t_start = time.perf_counter()
    initial = None
    if cfg.eval_initial and start == 0:
        initial = run_eval(0)
    bar = tqdm(total=cfg.steps, initial=start, desc=f"finetune {cfg.bridge}", unit="step", mininterval=1.0)
    step, need_reset, s = start, True, None
    ep_ret, ep_len, ep_succ = 0.0, 0, False
    recent: list[float] = []
    info: dict = {}
    last_eval = history["eval"][-1]["success_rate"] if history["eval"] else None
    interrupted = False
    try:
        with interruptible():
            while step < cfg.steps:
                if need_reset:
                    obs, _ = env.reset(seed=finetune_seed(cfg.seed, episodes))  # the fine-tuning seed range
                    pol.reset()
                    s = pol.observe(obs)
                    ep_ret, ep_len, ep_succ, need_reset = 0.0, 0, False, False
                t0 = time.perf_counter()
                if step < starts and cfg.bridge == "none":
                    a = rng.uniform(-1.0, 1.0, da).astype(np.float32)
                else:
                    a = pol.act_unit(s, deterministic=False)
                t1 = time.perf_counter()
                obs, r, term, trunc, einfo = env.step(from_unit(a, low, high))
                t2 = time.perf_counter()
                s2 = pol.observe(obs)  # TRAP: the true final observation is s' (reset comes after)
                online.add(s, a, r, s2, term, trunc)
                timing["act"] += (t1 - t0) + (time.perf_counter() - t2)
                timing["env"] += t2 - t1
                ep_ret += float(r)
                ep_len += 1
                ep_succ |= bool(einfo.get("is_success", False))
                s = s2
                step += 1
                if term or trunc:
                    episodes += 1
                    recent = (recent + [ep_ret])[-10:]
                    writer.add_scalar("charts/episodic_return", ep_ret, step)
                    writer.add_scalar("charts/episodic_length", ep_len, step)
                    writer.add_scalar("charts/episodic_success", float(ep_succ), step)
                    need_reset = True

                if step >= starts:
                    t0 = time.perf_counter()
                    for _ in range(cfg.utd):
                        if sampler is not None:
                            batch = sampler.sample(cfg.batch_size, rng, step=step)
                        else:
                            batch = online.sample(cfg.batch_size, rng)
                            batch["is_demo"] = torch.zeros(cfg.batch_size, dtype=torch.bool)
                        info = agent.update(batch)
                    timing["update"] += time.perf_counter() - t0
                    if step % cfg.log_every == 0:
                        for k, v in info.items():
                            writer.add_scalar(k, v, step)
                        if sampler is not None:
                            writer.add_scalar("charts/demo_ratio", sampler.ratio(step), step)
                if step % cfg.log_every == 0:
                    busy = time.perf_counter() - t_start - timing["eval"]
                    writer.add_scalar("charts/SPS", (step - start) / max(busy, 1e-9), step)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                    last_eval = run_eval(step)["success_rate"]
                if step % cfg.ckpt_every == 0:
                    checkpoint(step)
                bar.update(1)
                bar.set_postfix(
                    ep=episodes,
                    ret=f"{np.mean(recent):.2f}" if recent else "-",
                    **({"eval": f"{last_eval:.0%}"} if last_eval is not None else {}),
                    refresh=False,
                )
    except KeyboardInterrupt as e:
        interrupted = getattr(e, "signum", 2)
    except FloatingPointError as e:
        bar.close()
        writer.close()
        raise FloatingPointError(
            f"{e} (env step {step}); the run stopped. {ckpt_path} holds the last good "
            "state. Fix: lower the learning rates, set max_grad_norm=, or layer_norm=true"
        ) from None
    finally:
        bar.close()
    if interrupted:
        checkpoint(step)  # Ctrl-C/SIGTERM: nothing is lost; resume=true continues from here
        writer.close()
        log.info(
            "interrupted at env step %d; checkpoint saved to %s (resume=true continues)", step, ckpt_path
        )
        return {"interrupted": True, "signal": interrupted, "step": step, "checkpoint": str(ckpt_path)}

    busy = time.perf_counter() - t_start - timing["eval"]
    checkpoint(cfg.steps)
    res = run_eval(cfg.steps, final=True)
    checkpoint(cfg.steps)  # with the final evaluation in its history
    writer.close()
    results = {
        "policy": str(ckpt_path),
        "bc_policy": bc_path,
        "policy_info": {
            "kind": "sac",
            "format": FORMAT,
            "bridge": cfg.bridge,
            "head": bc.cfg.head if bc is not None else None,
            "To": layout.To,
        },
        "env": env_id,
        "env_kwargs": env_kwargs,
        "episodes_per_seed": cfg.eval_episodes,
        "seeds": [0],
        "episode_seed_rule": "env seed = seed * 10000 + episode",
        "steps": cfg.steps,
        **res,
        "initial": None
        if initial is None
        else {k: initial[k] for k in ("success_rate", "success_ci", "return_mean", "cycle_time_steps")},
        "history": history["eval"],
        "best_checkpoint": str(best_path) if best["step"] is not None else None,
        "best_step": best["step"],
        **demo_info,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    n = cfg.steps - start
    summary = {
        "bridge": cfg.bridge,
        "head": bc.cfg.head if bc is not None else "-",
        "env_steps": cfg.steps,
        "episodes": episodes,
        "updates": agent.step,
        "success_rate": res["success_rate"],
        "success_ci": "[{:.2f}, {:.2f}]".format(*res["success_ci"]),
        "initial_success_rate": None if initial is None else initial["success_rate"],
        "return_mean": res["return_mean"],
        "cycle_time_steps": res["cycle_time_steps"],
        "env_steps_per_s": n / max(busy, 1e-9),
        "time_env_s": timing["env"],
        "time_update_s": timing["update"],
        "time_act_s": timing["act"],
        "time_eval_s": timing["eval"],
        "checkpoint": str(ckpt_path),
        "results": str(out / "results.json"),
        "tensorboard": str(out / "tb"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_finetune(args: list[str]) -> int:
    from robolearn.cli import UserError, _config_help, _summary_table

    if any(a in ("-h", "--help") for a in args):
        print(_config_help("finetune", FinetuneConfig))
        print(
            f"\n  bridges: residual (any head), gaussian ({'/'.join(GAUSSIAN_HEADS)} heads), none (SAC from scratch)"
        )
        return 0
    from robolearn.cli import compose

    cfg = compose("finetune", args)
    try:
        summary = finetune(cfg)
    except (ConfigError, FloatingPointError) as e:
        raise UserError(str(e)) from None
    _summary_table(f"finetune {cfg.bridge}", summary)
    from robolearn.signals import exit_code

    return exit_code(signum=summary["signal"]) if summary.get("interrupted") else 0


__all__ = [
    "FinetuneConfig",
    "finetune",
    "cmd_finetune",
    "sac_actor_from_checkpoint",
    "load_finetuned",
    "SACActorPolicy",
    "ObsLayout",
    "check_bridge",
    "bc_base",
    "evaluate_actor",
    "FORMAT",
    "BRIDGES",
]
