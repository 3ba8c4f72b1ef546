"""SAC.update for the Gaussian and residual actors, with the backward passes written out by hand.

The math is SAC.update's (robolearn/algos/sac.py, which stays the readable reference); only the way it is
computed differs. On CPU at 256-wide layers an update is ~15 matrix products of 256 x 256 x 256 and little
else, so what autograd adds (graph nodes, saved tensors, grad accumulation, zero_grad, a backward engine
that runs op by op, three optimiser calls) is a large share of the wall time. Here:

    forward passes keep exactly the activations their backward needs, nothing else;
    each backward is the chain rule written out (ReLU backward = threshold_backward on the saved output,
    LayerNorm backward = aten's native_layer_norm_backward on the saved mean and rstd);
    the actor runs once over [s'; s] (the critic step between its two uses does not change it);
    the actor loss needs dQ/da only, and with actor_q="min" over 2 critics only the critic that is the
    minimum of a row passes gradient back for that row, so that backward runs over B rows instead of 2B;
    the gradients go straight into Adam's fused CPU kernel, on the torch optimisers' own state (so
    checkpoints, optimiser state and SAC.state_dict are unchanged).

Same weights, batch and noise give the same update as SAC.update to float rounding
(tests/test_sac.py::test_fused_update_equals_the_autograd_update, 10 configurations). SAC uses it where it
applies (`SACConfig.fused`, default on): a GaussianActor (SAC from scratch, bridge=gaussian) or a
ResidualActor (fine-tuning's residual bridge), fp32 critics with or without LayerNorm. bf16 matmuls and any
other actor run SAC.update's autograd path.

Measured (Hopper-v5, 1 thread, bench/sac_vs_sb3.py --impls ours,ours-autograd,sb3): update 9.7 ms fused vs
11.9 ms autograd vs SB3's 15.1 ms; fine-tuning's residual actor with 2 LayerNorm critics 16.4 vs 19.9 ms.

Shapes: B batch, N critics, o obs dim, a act dim, i = o + a, H hidden widths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

# sac imports this module only inside SAC(): no cycle
from robolearn.algos.sac import GaussianActor, ResidualActor, tanh_gaussian, td_target

if TYPE_CHECKING:
    from robolearn.algos.replay import Batch
    from robolearn.algos.sac import SAC

_relu_backward = torch.ops.aten.threshold_backward  # (grad, relu output, 0): grad where output > 0


def supported(agent: SAC) -> str | None:
    """None when the fused update computes exactly what SAC.update does for this agent, else why not."""
    cfg = agent.cfg
    if type(agent.actor) not in (GaussianActor, ResidualActor):
        return f"the actor is a {type(agent.actor).__name__}, not a GaussianActor or ResidualActor"
    if cfg.cql_weight > 0:
        return "the conservative critic term (cql_weight > 0)"
    if cfg.bf16 or any(getattr(m, "bf16", False) for m in agent.actor.modules()):
        return "bf16 matmuls"
    if not all(adam_applies(o) for o in (agent.critic_opt, agent.actor_opt, agent.alpha_opt)):
        return "an optimiser setting the fused Adam step does not cover"
    return None


# ---------------------------------------------------------------------------------------------- actor
def _actor_linears(actor) -> list:
    """The actor's Linear layers in order: trunk layers, then the mean/log_std head."""
    return [m for m in actor.trunk if isinstance(m, torch.nn.Linear)] + [actor.head]


def actor_input(actor, obs: Tensor) -> tuple[Tensor, Tensor | None]:
    """What the actor's network reads, and the frozen base action of a ResidualActor (None otherwise)."""
    if not hasattr(actor, "base"):
        return obs, None
    base = actor.base(obs)  # under the caller's no_grad, as ResidualActor.forward runs it
    return torch.cat([obs, base], -1), base


def actor_mlp(actor, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """The actor's network: the inputs of every layer (for the backward) and the head's (B, 2a) output."""
    lins = _actor_linears(actor)
    hs = [x]
    h = x
    for lin in lins[:-1]:
        h = torch.addmm(lin.bias, h, lin.weight.t()).relu_()
        hs.append(h)
    return hs, torch.addmm(lins[-1].bias, h, lins[-1].weight.t())


def squash(actor, out: Tensor, noise: Tensor):
    """tanh_gaussian on the head's output with the given noise: t = tanh(u), u = mu + std * noise, and
    log pi(t). Returns t, log_prob and what actor_backward needs besides the layer inputs. (GaussianActor's
    action is t; a ResidualActor's is to_action(base, t) and its log_prob is that of t, the residual.)"""
    da = out.shape[1] // 2
    mu, raw_log_std = out[:, :da], out[:, da:]
    log_std = raw_log_std.clamp(actor.log_std_min, actor.log_std_max)
    t, log_prob, _ = tanh_gaussian(mu, log_std, getattr(actor, "squash_eps", 0.0), noise)
    return t, log_prob, (mu, raw_log_std, log_std.exp(), noise)


def to_action(actor, base: Tensor | None, t: Tensor) -> Tensor:
    """GaussianActor: t. ResidualActor: clip(base + scale * t, -1, 1)."""
    return t if base is None else (base + actor.scale * t).clamp(-1.0, 1.0)


def action_grad(actor, base: Tensor | None, t: Tensor, g: Tensor) -> Tensor:
    """dL/dt from dL/d to_action(base, t) (the clip passes gradient inside [-1, 1], as torch.clamp does)."""
    if base is None:
        return g
    x = base + actor.scale * t
    return g * actor.scale * ((x >= -1.0) & (x <= 1.0))


def actor_backward(
    actor, hs: list[Tensor], saved, t: Tensor, g_t: Tensor, g_logp: Tensor, g_mean: Tensor | None
) -> dict:
    """Gradients of a loss L(t, log_prob, tanh(mu)) w.r.t. the actor's parameters, given the layer inputs hs,
    squash's `saved`, g_t = dL/dt (B, a), g_logp = dL/dlog_prob (B,) and optionally g_mean = dL/dtanh(mu).
    Returns {parameter: grad}.

    u = mu + std * noise:  dt/du = 1 - t^2;  dlog_prob/du = 2 tanh(u) (exact form) or
    2t (1 - t^2) / (1 - t^2 + eps);  dlog_prob/dlog_std = -1 (the Gaussian's own term);  du/dlog_std = std * noise.
    """
    mu, raw_log_std, std, noise = saved
    one_minus_t2 = 1.0 - t.square()
    eps = getattr(actor, "squash_eps", 0.0)
    dlogp_du = 2.0 * t if eps <= 0 else 2.0 * t * one_minus_t2 / (one_minus_t2 + eps)
    gl = g_logp[:, None]
    g_u = g_t * one_minus_t2 + gl * dlogp_du
    g_mu = g_u
    if g_mean is not None:
        g_mu = g_mu + g_mean * (1.0 - torch.tanh(mu).square())
    g_ls = g_u * std * noise - gl
    inside = (raw_log_std >= actor.log_std_min) & (raw_log_std <= actor.log_std_max)  # clamp's backward
    g_out = torch.cat([g_mu, g_ls * inside], 1)
    lins = _actor_linears(actor)
    grads = {}
    d = g_out
    for k in range(len(lins) - 1, -1, -1):
        lin = lins[k]
        grads[lin.weight] = d.t() @ hs[k]
        grads[lin.bias] = d.sum(0)
        if k > 0:
            d = _relu_backward(d @ lin.weight, hs[k], 0)
    return grads


# ---------------------------------------------------------------------------------------------- critics
def critic_forward(critic, obs: Tensor, action: Tensor, keep: bool):
    """CriticEnsemble.forward: (N, B) Q-values; keep=True also returns (hs, lns): the input and each hidden
    layer's output, and per hidden layer the LayerNorm's (input, normalised input, mean, rstd) (LN critics)."""
    x = torch.cat([obs, action], -1).expand(critic.n, -1, -1)
    hs, lns = [x], []
    h = x
    for k, layer in enumerate(critic.layers):
        z = torch.baddbmm(layer.bias, h, layer.weight)
        if critic.norms is not None:  # EnsembleLayerNorm: LN without affine, then a per-member affine
            norm = critic.norms[k]
            zhat, mean, rstd = torch.native_layer_norm(z, z.shape[-1:], None, None, 1e-5)
            lns.append((z, zhat, mean, rstd))
            z = torch.addcmul(norm.bias, zhat, norm.weight)
        h = z.relu_()
        hs.append(h)
    q = torch.baddbmm(critic.out.bias, h, critic.out.weight).squeeze(-1)
    return (q, (hs, lns)) if keep else q


def _pre_activation_grad(
    critic, k: int, d: Tensor, h: Tensor, ln, j=None, grads: dict | None = None
) -> Tensor:
    """dL/d(hidden layer k's matmul output) from dL/d(its ReLU output h); ln: that layer's saved LayerNorm
    tensors (rows already selected), j: the ensemble member when d holds one member's rows, grads: where
    to put the LayerNorm's affine gradients (None: not wanted)."""
    d = _relu_backward(d, h, 0)
    if critic.norms is None:
        return d
    z, zhat, mean, rstd = ln
    norm = critic.norms[k]
    w = norm.weight if j is None else norm.weight[j]
    if grads is not None:
        grads[norm.weight] = (d * zhat).sum(1, keepdim=True)
        grads[norm.bias] = d.sum(1, keepdim=True)
    return torch.ops.aten.native_layer_norm_backward(
        d * w, z, z.shape[-1:], mean, rstd, None, None, [True, False, False]
    )[0]


def critic_backward_params(critic, saved, g_q: Tensor) -> dict:
    """Gradients w.r.t. the critics' parameters of a loss with dL/dQ = g_q (N, B)."""
    hs, lns = saved
    grads = {}
    g = g_q.unsqueeze(-1)  # (N, B, 1)
    grads[critic.out.weight] = torch.bmm(hs[-1].transpose(1, 2), g)
    grads[critic.out.bias] = g.sum(1, keepdim=True)
    layers = critic.layers
    d = g * critic.out.weight.transpose(1, 2)  # dL/dh_last (N, B, H): an outer product
    for k in range(len(layers) - 1, -1, -1):
        d = _pre_activation_grad(critic, k, d, hs[k + 1], lns[k] if lns else None, grads=grads)
        grads[layers[k].weight] = torch.bmm(hs[k].transpose(1, 2), d)
        grads[layers[k].bias] = d.sum(1, keepdim=True)
        if k > 0:  # no input gradient at the first layer: the critic loss does not train the inputs
            d = torch.bmm(d, layers[k].weight.transpose(1, 2))
    return grads


def critic_backward_action(critic, saved, g_q: Tensor, act_dim: int, rows=None) -> Tensor:
    """dL/daction (B, a) for dL/dQ = g_q (N, B), no parameter gradients. rows[j]: the only rows where
    g_q[j] is non-zero (None: all rows), so critic j's backward runs over those rows alone."""
    hs, lns = saved
    n, b = g_q.shape
    obs_dim = hs[0].shape[-1] - act_dim
    layers = critic.layers
    if rows is None:
        d = g_q.unsqueeze(-1) * critic.out.weight.transpose(1, 2)
        for k in range(len(layers) - 1, -1, -1):
            d = _pre_activation_grad(critic, k, d, hs[k + 1], lns[k] if lns else None)
            w = layers[k].weight if k > 0 else layers[0].weight[:, obs_dim:]
            d = torch.bmm(d, w.transpose(1, 2))
        return d.sum(0)
    g_a = torch.zeros(b, act_dim)
    for j in range(n):
        r = rows[j]
        if r.numel() == 0:
            continue
        d = g_q[j, r].unsqueeze(-1) * critic.out.weight[j].t()  # (R, H)
        for k in range(len(layers) - 1, -1, -1):
            ln = tuple(x[j, r] for x in lns[k]) if lns else None
            d = _pre_activation_grad(critic, k, d, hs[k + 1][j, r], ln, j=j)
            d = d @ (layers[k].weight[j] if k > 0 else layers[0].weight[j, obs_dim:]).t()
        g_a.index_add_(0, r, d)
    return g_a


# ---------------------------------------------------------------------------------------------- optimiser
def adam_step(opt: torch.optim.Adam, params: list[Tensor], grads: list[Tensor]) -> None:
    """torch.optim.Adam's step for one param group, as its fused CPU kernel, on the optimiser's own state (so
    opt.state_dict() and a resumed run are unchanged): what Adam.step does minus its per-call bookkeeping."""
    group = opt.param_groups[0]
    state = opt.state
    for p in params:
        if not state[p]:  # Adam's lazy initialisation (its fused layout: a float32 step tensor)
            state[p]["step"] = torch.zeros((), dtype=torch.float32)
            state[p]["exp_avg"] = torch.zeros_like(p)
            state[p]["exp_avg_sq"] = torch.zeros_like(p)
    steps = [state[p]["step"] for p in params]
    torch._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    torch._fused_adam_(
        params,
        grads,
        [state[p]["exp_avg"] for p in params],
        [state[p]["exp_avg_sq"] for p in params],
        [],
        steps,
        amsgrad=False,
        lr=float(group["lr"]),
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


def adam_applies(opt: torch.optim.Adam) -> bool:
    g = opt.param_groups
    return len(g) == 1 and not g[0]["amsgrad"] and not g[0]["maximize"] and not g[0]["differentiable"]


def _step(agent: SAC, opt, params: list[Tensor], grads: dict) -> float:
    """Global grad norm (returned, before clipping), optional clipping to cfg.max_grad_norm, Adam step."""
    gs = [grads[p] for p in params]
    norm = agent.clip_grads(gs)
    adam_step(opt, params, gs)
    return norm


# ---------------------------------------------------------------------------------------------- update


def update(agent: SAC, batch: Batch) -> dict[str, float]:
    """One SAC.update (critic step, plus actor and temperature every actor_every calls after critic_warmup)."""
    cfg = agent.cfg
    actor, critic = agent.actor, agent.critic
    obs, action, reward, next_obs, terminated, discount, alpha, do_actor = agent.unpack(batch)
    b = obs.shape[0]

    with torch.no_grad():
        # ---- the actor on s' (for the target) and, when the actor is trained this step, on s (for its loss,
        # after the critic step, which does not change the actor): one pass over both. Noise is drawn as
        # SAC.update draws it: s' first, then s.
        da = agent.act_dim
        x_next, base_next = actor_input(actor, next_obs)
        noise_next = torch.randn_like(action)  # (B, a), as tanh_gaussian's randn_like(mu)
        if do_actor:
            x, base = actor_input(actor, obs)
            noise = torch.randn_like(action)
            hs_all, out_all = actor_mlp(actor, torch.cat([x_next, x]))
            out_next, out = out_all[:b], out_all[b:]
            hs_pi = [h[b:] for h in hs_all]
        else:
            out_next = actor_mlp(actor, x_next)[1]

        # ---- critic target: y = r + discount (1 - terminated) (min_M Q'(s', a') - alpha log pi(a'|s'))
        t_next, next_logp, _ = squash(actor, out_next, noise_next)
        next_action = to_action(actor, base_next, t_next)
        q_next = agent.target_min(critic_forward(agent.critic_target, next_obs, next_action, keep=False))
        target = td_target(
            reward, discount, terminated, q_next, next_logp, alpha, cfg.backup_entropy, cfg.target_bounds
        )

        # ---- critic loss sum_j mean_B (Q_j - y)^2: dL/dQ_j = 2 (Q_j - y) / B
        q, saved_c = critic_forward(critic, obs, action, keep=True)
        err = q - target
        critic_loss = err.square().mean(1).sum()
        info = {"losses/critic": agent._check("losses/critic", critic_loss)}
        grads = critic_backward_params(critic, saved_c, err * (2.0 / b))
        info["grad_norm/critic"] = _step(agent, agent.critic_opt, agent.critic_params, grads)

        # ---- actor loss mean_B (alpha log pi(a~|s) - Q(s, a~)) [+ BC on demo rows], against the new critics
        if do_actor:
            t_pi, logp_pi, saved = squash(actor, out, noise)
            a_pi = to_action(actor, base, t_pi)
            q_pi, saved_q = critic_forward(critic, obs, a_pi, keep=True)
            if cfg.actor_q == "min":
                q_red, idx = q_pi.min(0)
                g_q = torch.zeros_like(q_pi).scatter_(0, idx[None], -1.0 / b)
                # per-member row subsets pay when they halve the work (2 critics); with many critics the
                # subsets are small and one batched backward over all rows is faster
                rows = (
                    [torch.nonzero(idx == j).squeeze(1) for j in range(critic.n)] if critic.n <= 3 else None
                )
            else:
                q_red, rows = q_pi.mean(0), None
                g_q = torch.full_like(q_pi, -1.0 / (b * critic.n))
            actor_loss = (alpha * logp_pi - q_red).mean()
            g_a = critic_backward_action(critic, saved_q, g_q, da, rows)
            g_mean = None
            if cfg.bc_weight > 0 and "is_demo" in batch:
                demo = batch["is_demo"].float()
                n_demo = demo.sum().clamp(min=1.0)
                t_mean = torch.tanh(saved[0])
                diff = to_action(actor, base, t_mean) - action
                actor_loss = actor_loss + cfg.bc_weight * (diff.square().sum(-1) * demo).sum() / n_demo
                g_mean = action_grad(
                    actor, base, t_mean, diff * (2.0 * cfg.bc_weight / n_demo) * demo[:, None]
                )
            g_logp = torch.full((b,), float(alpha) / b)
            agent._actor_info["losses/actor"] = agent._check("losses/actor", actor_loss)
            grads = actor_backward(
                actor, hs_pi, saved, t_pi, action_grad(actor, base, t_pi, g_a), g_logp, g_mean
            )
            agent._actor_info["grad_norm/actor"] = _step(agent, agent.actor_opt, agent.actor_params, grads)
            if cfg.autotune:
                # L_alpha = -mean(log_alpha (log pi + H*)): dL/dlog_alpha = -mean(log pi + H*)
                alpha_loss = -(agent.log_alpha.detach() * (logp_pi + agent.target_entropy)).mean()
                agent._actor_info["losses/alpha"] = agent._check("losses/alpha", alpha_loss)
                g_alpha = -(logp_pi + agent.target_entropy).mean().reshape(())
                adam_step(agent.alpha_opt, [agent.log_alpha], [g_alpha])
            agent.actor_steps += 1

        torch._foreach_lerp_(list(agent.critic_target.parameters()), agent.critic_params, cfg.tau)
    agent.step += 1

    q_mean, q_max, q_min = torch.stack([q.mean(), q.max(), q.min()]).tolist()
    info.update(agent._actor_info)
    info.update({"alpha": float(alpha), "q/mean": q_mean, "q/max": q_max, "q/min": q_min})
    return info
