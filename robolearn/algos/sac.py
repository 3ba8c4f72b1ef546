"""Soft actor-critic (Haarnoja et al. 2018), with the RLPD/REDQ extensions, in one file, top to bottom.

    config -> actors (GaussianActor, ResidualActor) -> critic ensemble -> SAC.update -> train_sac

SAC owns critics, target critics, the entropy temperature and the optimisers; the actor comes in from
outside (fresh, or a bridge on top of a BC policy). One update, with B = batch, N = critics, Da = act dim:

    a', logp'  ~ pi(s')                                      next action from the *current* actor
    y          = r + g^k (1 - terminated) (min_{j in M} Q'_j(s', a') - alpha logp')   M: 2 random critics
    L_Q        = sum_j mean_B (Q_j(s, a) - y)^2
    a~, logp   ~ pi(s)
    L_pi       = mean_B (alpha logp - Q(s, a~)) [+ bc_weight * |mean_pi(s) - a_demo|^2 on demo rows]
    L_alpha    = -mean_B log_alpha (logp + target_entropy)
    theta'    <- (1 - tau) theta' + tau theta                Polyak

Speed (CPU, where an update is ~0.6 GFLOP of 256-wide matmuls and little else): the N critics are one
module with weights (N, in, out), run by one batched matmul per layer (and split over cores by MKL); pi(s')
runs under no_grad; the actor loss runs the critic with requires_grad off so no critic weight-gradients are
computed for it; Adam is the fused CPU kernel; Polyak is one foreach op over all target tensors.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robolearn.algos.replay import Batch, ReplayBuffer

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- config
@dataclass
class SACConfig:
    """Hyperparameters. Defaults are standard SAC (Haarnoja et al. 2018 / CleanRL / SB3) from scratch."""

    gamma: float = 0.99
    """Discount factor, in (0, 1]."""
    tau: float = 0.005
    """Polyak rate for the target critics: target <- (1 - tau) target + tau online, in (0, 1]."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    alpha_lr: float = 3e-4
    """Adam learning rate of log_alpha (the entropy temperature)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of each critic (and of GaussianActor when train_sac builds one)."""
    n_critics: int = 2
    """Critics in the ensemble (2 = clipped double-Q; RLPD uses 10)."""
    critic_subset: int = 2
    """Size of the random critic subset whose min forms the target (REDQ/RLPD); = n_critics: min over all."""
    actor_q: Literal["min", "mean"] = "min"
    """How the actor loss reduces the ensemble: "min" (SAC) or "mean" (REDQ/RLPD with many critics)."""
    layer_norm: bool = False
    """LayerNorm after each hidden critic layer (RLPD; keeps Q bounded with high UTD / offline data)."""
    n_step: int = 1
    """n-step returns (done by the replay buffer, which returns reward sums and per-row discounts)."""
    utd: int = 1
    """Update-to-data ratio: critic updates per env step (RLPD uses 20 with 10 LayerNorm critics)."""
    actor_every: int | None = None
    """Actor/temperature update every this many critic updates; None = utd (once per env step)."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""
    autotune: bool = True
    """Learn alpha so that E[-log pi] tracks target_entropy; False keeps init_alpha."""
    target_entropy: float | None = None
    """Target entropy; None = -act_dim (the SAC heuristic)."""
    backup_entropy: bool = True
    """Subtract alpha * log pi(a'|s') in the critic target (soft Q). RLPD turns it off."""
    target_bounds: tuple[float, float] | None = None
    """Clip the TD target into [lo, hi], the range every true return lies in (None = no clipping). A success
    reward that ends the episode, without the entropy backup, has returns in [0, 1]: a target above 1 is
    bootstrapped overestimation, which the actor then climbs (finetune sets this there)."""
    bc_weight: float = 0.0
    """Weight of a BC term |mean_pi(s) - a|^2 on rows with batch["is_demo"] (0 = off)."""
    cql_weight: float = 0.0
    """Conservative critic (CQL with the policy as the proposal, Kumar et al. 2020): adds
    cql_weight * mean_B (Q_j(s, a~pi(s)) - Q_j(s, a)) per critic to the critic loss, which lowers Q at the
    actor's own actions relative to the buffer's (demos and executed actions). 0 = off."""
    critic_warmup: int = 0
    """First K updates train only the critics (actor and alpha frozen), e.g. when fine-tuning a BC actor."""
    max_grad_norm: float | None = None
    """Clip the global grad norm of each network to this; None = no clipping (norms are still logged)."""
    squash_eps: float = 1e-6
    """tanh correction of the Gaussian actor (train_sac's, and finetune's with bridge=none | gaussian): SB3's and
    CleanRL's log(1 - tanh(u)^2 + eps) with their 1e-6 by default, whose pull back from saturated actions stops
    once tanh(u) rounds to +-1 in float32 (|u| > ~9) and is capped at -log(eps) per dimension; 0 = the exact
    correction (see tanh_gaussian). Chosen by measurement (README, bench/results/sac_vs_sb3_100k.json: 100k steps,
    4 seeds): median return 1073 (Hopper-v5) and 5157 (HalfCheetah-v5) with 1e-6 vs 566 and 4837 (2 seeds)
    exact, SB3 1036 and 5106; locomotion policies saturate, and the exact term keeps pulling them back."""
    bf16: bool = False
    """Hidden-layer matmuls of the critics (and of the GaussianActor that train_sac builds) in bfloat16 with
    fp32 accumulation; weights, Adam, outputs and losses stay fp32. ~2-3x faster updates on CPUs with
    AVX512-BF16/AMX. Off by default: returns not yet validated at full budgets."""
    fused: bool = True
    """Run the update with hand-written backward passes (robolearn.algos.sac_fused: the same math, 1.2x faster
    on CPU) wherever it applies (a GaussianActor or ResidualActor, fp32); False, or any other setup (bf16, other
    actors), runs the autograd update below."""
    learning_starts: int = 5000
    """Env steps of uniform random actions before learning (train_sac); ~0 when starting from demos."""
    buffer_size: int = 1_000_000
    """Replay capacity (train_sac uses min(buffer_size, total_steps))."""

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)

        def check(name: str, ok: bool, valid: str):
            if not ok:
                raise ValueError(f"SACConfig.{name}={getattr(self, name)!r} is invalid: must be {valid}")

        check("gamma", 0.0 < self.gamma <= 1.0, "in (0, 1]")
        check("tau", 0.0 < self.tau <= 1.0, "in (0, 1]")
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            check(name, getattr(self, name) > 0, "> 0")
        check("batch_size", self.batch_size > 0, "> 0")
        check("hidden", len(self.hidden) > 0 and all(h > 0 for h in self.hidden), "non-empty, widths > 0")
        check("n_critics", self.n_critics >= 1, ">= 1")
        check(
            "critic_subset", 1 <= self.critic_subset <= self.n_critics, f"in [1, n_critics={self.n_critics}]"
        )
        check("actor_q", self.actor_q in ("min", "mean"), '"min" or "mean"')
        check("n_step", self.n_step >= 1, ">= 1")
        check("utd", self.utd >= 1, ">= 1")
        check("actor_every", self.actor_every is None or self.actor_every >= 1, "None or >= 1")
        check("init_alpha", self.init_alpha > 0, "> 0")
        check("bc_weight", self.bc_weight >= 0, ">= 0")
        check("critic_warmup", self.critic_warmup >= 0, ">= 0")
        check("cql_weight", self.cql_weight >= 0, ">= 0")
        check("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "None or > 0")
        check("squash_eps", 0.0 <= self.squash_eps < 1.0, "in [0, 1)")
        if self.target_bounds is not None:
            self.target_bounds = (float(self.target_bounds[0]), float(self.target_bounds[1]))
            check(
                "target_bounds",
                self.target_bounds[0] < self.target_bounds[1],
                "None or (lo, hi) with lo < hi",
            )
        check("learning_starts", self.learning_starts >= 0, ">= 0")
        check("buffer_size", self.buffer_size > 0, "> 0")


# ---------------------------------------------------------------------------------------------- actors
class Actor(Protocol):
    """obs (B, obs_dim) -> action (B, Da) in [-1, 1], log_prob (B,) of that action, mean_action (B, Da).

    The action must be reparameterised (differentiable w.r.t. the actor's parameters) and log_prob must be
    differentiable too: the actor loss back-propagates through both."""

    def __call__(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    def parameters(self): ...


class Linear(nn.Linear):
    """nn.Linear whose matmul optionally runs in bfloat16 (fp32 accumulate, fp32 weights/bias/output)."""

    def __init__(self, d_in: int, d_out: int, bf16: bool = False):
        super().__init__(d_in, d_out)
        self.bf16 = bf16

    def forward(self, x: Tensor) -> Tensor:
        if self.bf16:
            return F.linear(x.to(torch.bfloat16), self.weight.to(torch.bfloat16)).float() + self.bias
        return super().forward(x)


def mlp(sizes: list[int], act=nn.ReLU, bf16: bool = False) -> nn.Sequential:
    """Linear/act stack without a final activation (act must take `inplace`)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(Linear(sizes[i], sizes[i + 1], bf16))
        if i < len(sizes) - 2:
            layers.append(act(inplace=True))
    return nn.Sequential(*layers)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG2 = math.log(2.0)


def tanh_gaussian(
    mu: Tensor, log_std: Tensor, eps: float = 0.0, noise: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample a = tanh(u), u ~ N(mu, std) by reparameterisation; return (a, log p(a), tanh(mu)). `noise`: the
    standard-normal draw to use (default: a fresh randn_like(mu)).

    TRAP (tanh log-prob correction): tanh changes the density, p(a) = N(u) / prod_i |d tanh(u_i)/du_i|, so
        log p(a) = sum_i [log N(u_i; mu_i, std_i) - log(1 - tanh(u_i)^2)].
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) exactly, and is stable where tanh(u) -> +-1
    (the naive log(1 - a^2 + 1e-6) of the paper/SB3 clips the density there). `eps` > 0 selects that naive
    form, for comparisons with SB3/CleanRL.
    """
    if noise is None:
        noise = torch.randn_like(mu)
    u = mu + log_std.exp() * noise
    log_prob = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(-1)
    a = torch.tanh(u)
    if eps > 0:
        return a, log_prob - torch.log(1.0 - a.square() + eps).sum(-1), torch.tanh(mu)
    log_prob = log_prob - (2.0 * (_LOG2 - u - F.softplus(-2.0 * u))).sum(-1)
    return a, log_prob, torch.tanh(mu)


class GaussianActor(nn.Module):
    """Tanh-squashed diagonal Gaussian MLP: obs -> (action, log_prob, mean_action), actions in [-1, 1]."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...] = (256, 256),
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        bf16: bool = False,
        squash_eps: float = 0.0,
    ):
        super().__init__()
        self.squash_eps = squash_eps  # tanh_gaussian's eps: 0 = the exact tanh correction
        self.trunk = mlp([obs_dim, *hidden], nn.ReLU, bf16)  # bf16: trunk only, the mean/log_std head is fp32
        self.trunk.append(nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden[-1], 2 * act_dim)  # mean and log_std in one matmul
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)
        # clamp like the SAC reference / SB3: std in [2e-9, 7.4]
        return tanh_gaussian(mu, log_std.clamp(self.log_std_min, self.log_std_max), self.squash_eps)


class ResidualActor(nn.Module):
    """SAC on top of a frozen policy whose head has no tractable log-prob (diffusion, tokens, GMM+chunks).

    action = clip(base(obs) + scale * r, -1, 1),  r = tanh(u), u ~ N(mu(obs, base), std(obs, base))

    `base`: opaque callable obs (B, obs_dim) -> (B, Da) in [-1, 1], run under no_grad and never trained
    (it is deliberately *not* registered as a submodule, so its parameters stay out of the optimiser and
    out of this module's state_dict). The residual sees cat[obs, base_action].

    APPROXIMATION: log_prob is log p(r), the density of the residual in its own [-1, 1] units, not of the
    action. The exact action density differs by (a) the constant -Da * log(scale) of the affine map, which
    leaves every gradient unchanged and only shifts what the temperature's target entropy means (the target
    applies to r, which is the useful knob: with scale 0.1 the action-space target would force r wide), and
    (b) the clip at +-1, which piles mass on the bounds and is ignored. The base's own stochasticity, if
    any, is treated as part of the environment.

    The last layer starts at zero, so at initialisation mean_action == base(obs) exactly.
    """

    def __init__(
        self,
        base: Callable[[Tensor], Tensor],
        obs_dim: int,
        act_dim: int,
        scale: float = 0.1,
        hidden: tuple[int, ...] = (256, 256),
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        init_log_std: float = -1.0,
    ):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"ResidualActor: scale={scale} must be > 0")
        self.__dict__["base"] = base  # bypass nn.Module.__setattr__: keep the base out of parameters()
        self.scale = scale
        self.trunk = mlp([obs_dim + act_dim, *hidden])
        self.trunk.append(nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden[-1], 2 * act_dim)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[act_dim:] = init_log_std
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            base_action = self.base(obs)
        mu, log_std = self.head(self.trunk(torch.cat([obs, base_action], -1))).chunk(2, dim=-1)
        r, log_prob, r_mean = tanh_gaussian(mu, log_std.clamp(self.log_std_min, self.log_std_max))
        action = (base_action + self.scale * r).clamp(-1.0, 1.0)
        mean_action = (base_action + self.scale * r_mean).clamp(-1.0, 1.0)
        return action, log_prob, mean_action


# ---------------------------------------------------------------------------------------------- critics
class EnsembleLinear(nn.Module):
    """N independent Linear layers as one: x (N, B, in) -> (N, B, out) by one batched matmul.

    bf16=True: the matmul (and its backward) runs in bfloat16 with fp32 accumulation; weights, bias, the
    output and the optimiser stay fp32 (the TPU default for matmuls)."""

    def __init__(self, n: int, d_in: int, d_out: int, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n, 1, d_out))
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.bf16:
            return torch.bmm(x.to(torch.bfloat16), self.weight.to(torch.bfloat16)).float() + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over features with separate affine parameters per ensemble member."""

    def __init__(self, n: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, d))
        self.bias = nn.Parameter(torch.zeros(n, 1, d))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:]), self.weight)


class CriticEnsemble(nn.Module):
    """N Q-networks Q_j(s, a), j < N, evaluated together: (obs (B, obs_dim), action (B, Da)) -> (N, B)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        n: int,
        layer_norm: bool = False,
        bf16: bool = False,
    ):
        super().__init__()
        self.n = n
        sizes = [obs_dim + act_dim, *hidden]
        # bf16 for the hidden layers only: the 256 -> 1 output layer costs nothing and a bf16 Q (8-bit
        # mantissa: Q = 500 resolves to +-2) would swamp the TD error
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b, bf16) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(n, h) for h in hidden) if layer_norm else None
        self.out = EnsembleLinear(n, hidden[-1], 1)

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        x = torch.cat([obs, action], -1).expand(self.n, -1, -1)  # (N, B, in), a view: no copy
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = F.relu_(x)  # in place: the matmul's backward doesn't need its output; one less 512 KB pass
        return self.out(x).squeeze(-1)


# ---------------------------------------------------------------------------------------------- SAC
def td_target(
    reward: Tensor,
    discount: Tensor,
    terminated: Tensor,
    q_next: Tensor,
    next_logp: Tensor,
    alpha: Tensor | float,
    backup_entropy: bool = True,
    bounds: tuple[float, float] | None = None,
) -> Tensor:
    """Soft TD target, all (B,): y = r + discount (1 - terminated) (Q'(s', a') - alpha log pi(a'|s')).

    `reward` is the (n-step) discounted reward sum and `discount` = gamma^k for the k steps it covers.
    TRAP: bootstrap on `terminated` only. A time-limit `truncated` state is not terminal (the task would
    go on), so its target still bootstraps from V(s'), which is why the buffer must hold the true final
    observation as s' (never the reset observation of the next episode).
    `bounds` = (lo, hi) clips y into the range of true returns (SACConfig.target_bounds).
    """
    v_next = q_next - alpha * next_logp if backup_entropy else q_next
    y = reward + discount * (1.0 - terminated) * v_next
    return y if bounds is None else y.clamp(bounds[0], bounds[1])


class SAC:
    """Critic ensemble + targets + temperature + optimisers around an actor given from outside.

    agent = SAC(actor, obs_dim, act_dim, cfg); info = agent.update(batch)   # one critic step (+ actor)
    """

    def __init__(self, actor: nn.Module, obs_dim: int, act_dim: int, cfg: SACConfig | None = None):
        self.cfg = cfg = cfg or SACConfig()
        self.actor, self.obs_dim, self.act_dim = actor, obs_dim, act_dim
        self.critic = CriticEnsemble(obs_dim, act_dim, cfg.hidden, cfg.n_critics, cfg.layer_norm, cfg.bf16)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), requires_grad=cfg.autotune)
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.actor_every = cfg.actor_every or cfg.utd
        self.actor_params = [p for p in actor.parameters() if p.requires_grad]
        self.critic_params = list(self.critic.parameters())
        # fused=True: the single-kernel CPU Adam (torch >= 2.4), ~2x fewer passes over the weights
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=cfg.critic_lr, fused=True)
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=cfg.actor_lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.step = 0  # critic updates done
        self.actor_steps = 0
        self.generator = torch.Generator().manual_seed(0)  # critic-subset draws (only used when N > subset)
        self.fused = None  # the hand-written update (sac_fused.update) when cfg.fused and it applies here
        if cfg.fused:
            from robolearn.algos import sac_fused

            why_not = sac_fused.supported(self)
            self.fused = sac_fused.update if why_not is None else None
            if why_not is not None:
                log.debug("SAC: autograd update (the fused one does not apply: %s)", why_not)
        self._actor_info: dict[str, float] = {
            "losses/actor": float("nan"),
            "losses/alpha": float("nan"),
            "grad_norm/actor": float("nan"),
        }

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def _check(self, name: str, loss: Tensor) -> float:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"SAC: {name} is {value} at update step {self.step}")
        return value

    def target_min(self, q: Tensor) -> Tensor:
        """(N, B) -> (B,): min over a random subset of `critic_subset` critics (all of them when equal)."""
        m = self.cfg.critic_subset
        if m < self.critic.n:
            q = q[torch.randperm(self.critic.n, generator=self.generator)[:m]]
        return q.min(0).values

    def _step(self, opt, params, loss: Tensor) -> float:
        """backward + optional clipping + Adam step; returns the global grad norm before clipping."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return self._clip_and_step(opt, params)

    def _clip_and_step(self, opt, params) -> float:
        """Optional clipping of the params' .grad + Adam step; returns the global grad norm before clipping."""
        norm = self.clip_grads([p.grad for p in params if p.grad is not None])
        opt.step()
        return norm

    def clip_grads(self, grads: list[Tensor]) -> float:
        """The global norm of `grads` (returned, before clipping); scales them in place to cfg.max_grad_norm
        when set (torch.nn.utils.clip_grads_with_norm_'s rule). Shared by the autograd and fused updates."""
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if self.cfg.max_grad_norm is not None:
            torch._foreach_mul_(grads, (self.cfg.max_grad_norm / (norm + 1e-6)).clamp(max=1.0))
        return float(norm)

    def unpack(self, batch: Batch):
        """obs, action, reward, next_obs, terminated (float), discount (gamma when absent), alpha (detached) and
        whether this update also trains the actor and temperature (every actor_every, after critic_warmup)."""
        reward = batch["reward"]
        discount = batch.get("discount")
        if discount is None:
            discount = torch.full_like(reward, self.cfg.gamma)
        do_actor = self.step >= self.cfg.critic_warmup and (self.step + 1) % self.actor_every == 0
        alpha = self.log_alpha.detach().exp()
        terminated = batch["terminated"].float()
        return batch["obs"], batch["action"], reward, batch["next_obs"], terminated, discount, alpha, do_actor

    def update(self, batch: Batch) -> dict[str, float]:
        """One critic gradient step, plus an actor and temperature step every `actor_every` calls (after
        `critic_warmup`). batch: obs, action, reward, next_obs, terminated [, discount, is_demo]."""
        if self.fused is not None:
            return self.fused(self, batch)  # the same math with hand-written backward passes (sac_fused)
        cfg = self.cfg
        obs, action, reward, next_obs, terminated, discount, alpha, do_actor = self.unpack(batch)

        # ---- next action from the current actor, no grad. (Merging this with the actor-loss pass into one
        # forward on cat[s, s'] saves a call but costs ~10% more FLOPs: backward then runs over all 2B rows.)
        with torch.no_grad():
            next_action, next_logp, _ = self.actor(next_obs)

        # ---- critic target (see td_target for the terminated/truncated trap)
        with torch.no_grad():
            q_next = self.target_min(self.critic_target(next_obs, next_action))
            target = td_target(
                reward, discount, terminated, q_next, next_logp, alpha, cfg.backup_entropy, cfg.target_bounds
            )

        q = self.critic(obs, action)  # (N, B)
        critic_loss = (q - target).square().mean(1).sum()  # CleanRL's sum of MSEs (SB3 halves it; Adam: same)
        info = {"losses/critic": self._check("losses/critic", critic_loss)}
        if cfg.cql_weight > 0:  # conservative: Q at the actor's actions down, at the buffer's actions up
            with torch.no_grad():
                a_cur = self.actor(obs)[0]
            gap = (self.critic(obs, a_cur) - q).mean(1)  # (N,)
            info["q/cql_gap"] = float(gap.detach().mean())
            critic_loss = critic_loss + cfg.cql_weight * gap.sum()
        info["grad_norm/critic"] = self._step(self.critic_opt, self.critic_params, critic_loss)

        # ---- actor and temperature
        if do_actor:
            a_pi, logp_pi, mean_pi = self.actor(obs)  # the actor is unchanged so far: same as SB3/CleanRL
            self.critic.requires_grad_(False)  # grads flow through Q into a~ only: no critic weight grads
            try:
                q_pi = self.critic(obs, a_pi)
            finally:
                self.critic.requires_grad_(True)
            q_pi = q_pi.min(0).values if cfg.actor_q == "min" else q_pi.mean(0)
            actor_loss = (alpha * logp_pi - q_pi).mean()
            if cfg.bc_weight > 0 and "is_demo" in batch:
                demo = batch["is_demo"].float()
                bc = ((mean_pi - action).square().sum(-1) * demo).sum() / demo.sum().clamp(min=1.0)
                actor_loss = actor_loss + cfg.bc_weight * bc
            self._actor_info["losses/actor"] = self._check("losses/actor", actor_loss)
            self._actor_info["grad_norm/actor"] = self._step(self.actor_opt, self.actor_params, actor_loss)
            if cfg.autotune:
                # d/dlog_alpha of -log_alpha (logp + H*) pushes alpha up when entropy -logp < H*
                alpha_loss = -(self.log_alpha * (logp_pi.detach() + self.target_entropy)).mean()
                self._actor_info["losses/alpha"] = self._check("losses/alpha", alpha_loss)
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()
            self.actor_steps += 1

        # ---- Polyak: theta' <- theta' + tau (theta - theta'), one foreach kernel over all tensors
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), self.critic_params, cfg.tau)
        self.step += 1

        qd = q.detach()
        q_mean, q_max, q_min = torch.stack([qd.mean(), qd.max(), qd.min()]).tolist()
        info.update(self._actor_info)
        info.update({"alpha": float(alpha), "q/mean": q_mean, "q/max": q_max, "q/min": q_min})
        return info

    # ---- checkpointing
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "critic_opt": self.critic_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "step": self.step,
            "actor_steps": self.actor_steps,
            "generator": self.generator.get_state(),
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.step, self.actor_steps = int(state["step"]), int(state["actor_steps"])
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------------------- training
def evaluate(env, actor, episodes: int, seed: int) -> float:
    """Mean return of the deterministic policy (mean action) over `episodes` episodes."""
    low, high = env.action_space.low, env.action_space.high
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, 0.0
        while not done:
            with torch.no_grad():
                _, _, a = actor(torch.as_tensor(obs, dtype=torch.float32)[None])
            obs, r, term, trunc, _ = env.step(low + (a[0].numpy() + 1.0) * 0.5 * (high - low))
            ret += float(r)
            done = term or trunc
        returns.append(ret)
    return float(np.mean(returns))


def train_sac(
    env_id: str,
    cfg: SACConfig | None = None,
    total_steps: int = 100_000,
    seed: int = 0,
    log_dir: str | None = None,
    eval_every: int = 0,
    actor: nn.Module | None = None,
    eval_episodes: int = 5,
    threads: int | None = None,
    log_every: int = 1000,
) -> dict:
    """CleanRL-style SAC from scratch on a gymnasium env with flat Box observations and actions.

    Returns stats: episodic_returns [(step, return)], evals [(step, mean return)], final_eval (when
    eval_every > 0, else NaN), sps, sps_learning (env steps/s after learning_starts), and the wall-clock
    split time/env, time/update (sampling + gradient steps), time/other (action selection, bookkeeping).
    """
    import gymnasium as gym

    cfg = cfg or SACConfig()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make(env_id)
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
    low, high = env.action_space.low, env.action_space.high
    actor = (
        actor
        if actor is not None
        else GaussianActor(obs_dim, act_dim, cfg.hidden, bf16=cfg.bf16, squash_eps=cfg.squash_eps)
    )
    agent = SAC(actor, obs_dim, act_dim, cfg)
    buffer = ReplayBuffer(obs_dim, act_dim, min(cfg.buffer_size, total_steps), cfg.n_step, cfg.gamma)
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir)

    stats: dict = {"episodic_returns": [], "evals": [], "final_eval": float("nan")}
    t_env = t_update = 0.0
    t_start = time.perf_counter()
    t_learn = None
    obs, _ = env.reset(seed=seed)
    ep_ret, info = 0.0, {}
    for step in range(total_steps):
        # actions live in [-1, 1] (what the actor and the buffer see) and are rescaled for the env
        if step < cfg.learning_starts:
            action = rng.uniform(-1.0, 1.0, act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32)[None])[0][0].numpy()
        t0 = time.perf_counter()
        next_obs, reward, terminated, truncated, _ = env.step(low + (action + 1.0) * 0.5 * (high - low))
        t_env += time.perf_counter() - t0
        # TRAP: with a single (non-vector) env, `next_obs` IS the final observation when the episode ends;
        # store it as s' and only then reset. (Vector envs autoreset and hide it in info["final_obs"].)
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        ep_ret += float(reward)
        if terminated or truncated:
            stats["episodic_returns"].append((step + 1, ep_ret))
            if writer:
                writer.add_scalar("charts/episodic_return", ep_ret, step + 1)
            ep_ret = 0.0
            obs, _ = env.reset()
        else:
            obs = next_obs

        if step + 1 >= cfg.learning_starts:
            if t_learn is None:
                t_learn = time.perf_counter()
            t0 = time.perf_counter()
            for _ in range(cfg.utd):
                info = agent.update(buffer.sample(cfg.batch_size, rng))
            t_update += time.perf_counter() - t0
            if writer and (step + 1) % log_every == 0:
                for k, v in info.items():
                    writer.add_scalar(k, v, step + 1)
                writer.add_scalar("charts/SPS", (step + 1) / (time.perf_counter() - t_start), step + 1)

        if eval_every and (step + 1) % eval_every == 0:
            t0 = time.perf_counter()
            ret = evaluate(gym.make(env_id), actor, eval_episodes, seed=10_000 + seed)
            t_start += time.perf_counter() - t0  # evaluation is excluded from all timings
            if t_learn is not None:
                t_learn += time.perf_counter() - t0
            stats["evals"].append((step + 1, ret))
            if writer:
                writer.add_scalar("charts/eval_return", ret, step + 1)
            log.info("step %d eval return %.1f", step + 1, ret)

    total = time.perf_counter() - t_start
    learn_steps = total_steps - cfg.learning_starts
    stats.update(
        {
            "final_eval": stats["evals"][-1][1] if stats["evals"] else float("nan"),
            "sps": total_steps / total,
            "sps_learning": learn_steps / (time.perf_counter() - t_learn)
            if t_learn and learn_steps > 0
            else float("nan"),
            "time/total": total,
            "time/env": t_env,
            "time/update": t_update,
            "time/other": total - t_env - t_update,
            "last_update": info,
            "agent": agent,
            "buffer": buffer,
        }
    )
    if writer:
        writer.close()
    env.close()
    return stats
