"""`robolearn finetune`'s typed config (validated before any work; SAC's own fields come from SACConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from robolearn.algos.bridges import BRIDGES
from robolearn.algos.precision import PRECISIONS
from robolearn.config import (
    REWARD_TYPES,
    TELEOP_DEVICES,
    ConfigError,
    choice,
    existing_file,
    in_range,
    opt,
    positive,
)

INTERVENTIONS = ("scripted", *TELEOP_DEVICES)


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
    residual_max_log_std: float | None = opt(
        None,
        "bridge=residual: cap on the residual's log std (None: its initial log std, so exploration stays near the "
        "BC policy and can only narrow; 2.0 = the SAC default, unbounded in practice)",
    )
    distill_steps: int = opt(1000, "bridge=gaussian: distillation steps onto the BC actions")
    reward_type: str | None = opt(
        None,
        f"reward optimised: {REWARD_TYPES}. robolearn tasks: default sparse; task suites: default their own reward, "
        "sparse replaces it by info['is_success']; other envs: their own",
    )
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
    init_alpha: float | None = opt(
        None,
        "initial entropy temperature; None = 0.1 when learned (small: start close to the BC policy), 0.05 when "
        "held fixed (autotune=false)",
    )
    autotune: bool = opt(
        True,
        "learn the temperature (from init_alpha); false = hold it at init_alpha. With the residual bridge on "
        "a sparse reward a learned one falls to ~0 and can let the residual drift into a collapse (PegInsert): "
        "the regression guard (guard_drop) then fixes it at guard_alpha",
    )
    guard_drop: float | None = opt(
        0.25,
        "with a learned temperature: once a periodic evaluation's success falls this far below step 0's, restore "
        "checkpoints/best.pt's actor and critics and fix the temperature at guard_alpha (robolearn.algos."
        "finetune_guard); None = off",
    )
    guard_alpha: float = opt(0.05, "the fixed temperature after the regression guard fires")
    backup_entropy: bool = opt(
        False,
        "add the entropy bonus to the TD target. Off by default: with a success "
        "reward that ends the episode, a per-step entropy bonus pays the agent to "
        "dawdle (measured on PegInsert: Q rose to 3.5 for a max return of 1 and the "
        "cycle time grew from 35 to 52 steps)",
    )
    target_entropy: float | None = opt(None, "None = -act_dim")
    clip_target: bool = opt(
        True,
        "with a sparse success reward (which ends the episode) and backup_entropy=false, clip the TD target "
        "to the return range [0, 1]: a target above 1 is bootstrapped overestimation",
    )
    bc_weight: float = opt(0.0, "weight of the BC term |mean_pi - a_demo|^2 on demo rows (0 = off)")
    cql_weight: float = opt(
        0.0, "conservative critic: weight of Q(s, a~pi) - Q(s, a_buffer) in the critic loss"
    )
    critic_warmup: int = opt(0, "first K updates train only the critics (keep the BC actor while Q settles)")
    max_grad_norm: float | None = opt(None, "clip each network's gradient norm (None = off)")
    buffer_size: int = opt(1_000_000, "online replay capacity (min(buffer_size, steps) is allocated)")
    eval_every: int = opt(0, "evaluation every N env steps (0 = only at the end)")
    eval_episodes: int = opt(10, "episodes per evaluation (env seeds 0..N-1, as `robolearn eval`)")
    eval_initial: bool = opt(True, "also evaluate the initial actor (= BC for bridge=residual) at step 0")
    ckpt_every: int = opt(1000, "checkpoint every N env steps")
    log_every: int = opt(100, "TensorBoard scalars every N env steps")
    seed: int = opt(0, "seed (torch, numpy, training episodes)")
    obs_norm: bool = opt(
        True,
        "scale the SAC networks' observation with the BC checkpoint's normaliser, clipped to +-5 as the BC "
        "policy clips it (false = raw units; bridge=none without a checkpoint is always raw)",
    )
    chunked: bool = opt(
        True,
        "residual bridge: the BC proposal is its chunk held for Ta steps as the BC policy runs (with the chunk "
        "phase in the SAC observation), so before any update the actor equals BC; false = re-plan every step",
    )
    intervention: str | None = opt(
        None,
        "HIL-SERL's human in the loop during training episodes (evaluations never intervene): scripted (the "
        "task's expert takes over where the policy strays, as `dagger mode=intervention`) | keyboard | gamepad | "
        "spacemouse (a person holds TAB to take over). Executed takeovers are stored as the actions taken, in the "
        "online buffer and, with demos=, in the demo buffer too. None = no interventions",
    )
    intervention_trigger: str = opt(
        "stall",
        "intervention=scripted, when the stand-in takes over: stall (every intervention_every steps it plays the "
        "expert out from the current state; when the expert's steps-to-success shrank by less than "
        "intervention_progress per step, the expert drives) | disagree (the policy's action is more than "
        "intervention_threshold from the expert's; `dagger mode=intervention`'s rule). Measured on Lift "
        "(README): stall 70%, disagree 50%, none 58%",
    )
    intervention_threshold: float = opt(
        0.5, "trigger=disagree: take over when |a_policy - a_expert|_inf > this (env action units)"
    )
    intervention_hold: int | None = opt(
        None,
        "trigger=stall: steps the expert drives (None: to the episode's end); disagree: steps it keeps "
        "control once in agreement again (None: 5)",
    )
    intervention_every: int = opt(10, "trigger=stall: env steps between looks")
    intervention_progress: float = opt(
        0.25, "trigger=stall: least progress per step before it steps in (the expert itself makes 1.0)"
    )
    intervention_steps: int | None = opt(
        None, "intervene only during the first N env steps (None: the whole run)"
    )
    actors: int = opt(0, "Ray actors stepping their own envs (0 = step the env in this process)")
    pull_every: int = opt(
        50, "actors=N: env steps an actor takes per chunk, then it pulls the latest weights"
    )
    address: str | None = opt(
        None, "actors=N: Ray address (None = a local instance; auto | ray://host:10001)"
    )
    precision: str = opt(
        "fp32",
        "matmul precision of the critics' hidden layers: fp32 | bf16 (bf16 products, fp32 weights/Adam) | auto "
        "(bf16 only where a cached micro-benchmark measures it >= 1.3x faster on this machine; "
        "robolearn.algos.precision)",
    )
    threads: int = opt(
        0,
        "torch intra-op threads (0 = 1 thread: SAC's 256-wide nets gain little from more, and extra threads "
        "thrash on a shared CPU; see robolearn.threads)",
    )

    def __post_init__(self):
        choice("bridge", self.bridge, BRIDGES)
        choice("precision", self.precision, PRECISIONS)
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
        if self.guard_drop is not None:
            in_range("guard_drop", self.guard_drop, 0.0, 1.0)
        positive("guard_alpha", self.guard_alpha)
        positive("ckpt_every", self.ckpt_every)
        positive("log_every", self.log_every)
        positive("threads", self.threads, zero_ok=True)
        if self.intervention is not None:
            choice("intervention", self.intervention, INTERVENTIONS)
            choice("intervention_trigger", self.intervention_trigger, ("disagree", "stall"))
            positive("intervention_every", self.intervention_every)
            positive("intervention_progress", self.intervention_progress, zero_ok=True)
            positive("intervention_threshold", self.intervention_threshold, zero_ok=True)
            if self.intervention_hold is not None:
                positive("intervention_hold", self.intervention_hold, zero_ok=True)
            if self.intervention_steps is not None:
                positive("intervention_steps", self.intervention_steps, zero_ok=True)
            if self.actors:
                raise ConfigError(
                    f"intervention={self.intervention} takes over the env this process steps; with actors="
                    f"{self.actors} the Ray actors step their own. Fix: actors=0, or drop intervention"
                )
        positive("actors", self.actors, zero_ok=True)
        positive("pull_every", self.pull_every)
        in_range("seed", self.seed, 0, 99)  # online episodes: env seeds 30_000_000 + seed * 100_000 + i
        try:
            self.sac_config()
        except ValueError as e:  # SACConfig names its field; say which of ours it is
            raise ConfigError(str(e).replace("SACConfig.", "")) from None

    def starts(self) -> int:
        if self.learning_starts is not None:
            return self.learning_starts
        return 500 if self.demos else 5000

    def sac_config(self, reward_type: str | None = None):
        """The SACConfig of this run; `reward_type`: the one the env optimises (finetune resolves it).

        A success reward that ends the episode, without the entropy backup, has every return in [0, 1]: TD
        targets are clipped to it. The temperature is learned from 0.1 unless `autotune=false` (then fixed at
        init_alpha, default 0.05); the regression guard (robolearn.algos.finetune_guard) fixes it at
        guard_alpha if an evaluation collapses."""
        from robolearn.algos.sac import SACConfig

        autotune = self.autotune
        init_alpha = self.init_alpha if self.init_alpha is not None else (0.1 if autotune else 0.05)
        sparse_return = reward_type == "sparse" and not self.backup_entropy
        return SACConfig(
            target_bounds=(0.0, 1.0) if self.clip_target and sparse_return else None,
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
            init_alpha=init_alpha,
            autotune=autotune,
            backup_entropy=self.backup_entropy,
            target_entropy=self.target_entropy,
            bc_weight=self.bc_weight,
            critic_warmup=self.critic_warmup,
            cql_weight=self.cql_weight,
            max_grad_norm=self.max_grad_norm,
            learning_starts=self.starts(),
            buffer_size=self.buffer_size,
        )
