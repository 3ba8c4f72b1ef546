"""SAC.update for a GaussianActor and a plain CriticEnsemble, with the backward passes written out by hand.

The math is SAC.update's (robolearn/algos/sac.py, which stays the readable reference); only the way it is
computed differs. On CPU at 256-wide layers an update is ~16 matrix products of 256 x 256 x 256 and little
else, so what autograd adds (graph nodes, saved tensors, grad accumulation, zero_grad, a backward engine
that runs op by op, three optimiser calls) is about half of the wall time. Here:

    forward passes keep exactly the activations their backward needs, nothing else;
    each backward is the chain rule written out (ReLU backward = threshold_backward on the saved output);
    the actor loss needs dQ/da only, and with actor_q="min" only the critic that is the minimum of a row
    passes gradient back for that row, so the critic backward runs over B rows in all instead of N x B;
    the gradients go straight into Adam's fused CPU kernel, on the torch optimisers' own state (so
    checkpoints, optimiser state and SAC.state_dict are unchanged).

Same weights, batch and noise give the same update as SAC.update to float rounding
(tests/test_sac.py::test_fused_update_equals_the_autograd_update). SAC uses it where it applies
(`SACConfig.fused`, default on): a GaussianActor, no LayerNorm, fp32. Everything else (the residual and
chunked bridges of fine-tuning, LayerNorm ensembles, bf16) runs SAC.update's autograd path.

Shapes: B batch, N critics, o obs dim, a act dim, i = o + a, H hidden widths.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # sac imports this module lazily; no import cycle at run time
    from robolearn.algos.replay import Batch
    from robolearn.algos.sac import SAC

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG2 = math.log(2.0)
_relu_backward = torch.ops.aten.threshold_backward  # (grad, relu output, 0): grad where output > 0


def supported(agent: SAC) -> str | None:
    """None when the fused update computes exactly what SAC.update does for this agent, else why not."""
    from robolearn.algos.sac import GaussianActor

    cfg = agent.cfg
    if type(agent.actor) is not GaussianActor:
        return f"the actor is a {type(agent.actor).__name__}, not a GaussianActor"
    if cfg.layer_norm:
        return "layer_norm critics"
    if cfg.bf16:
        return "bf16 matmuls"
    if any(getattr(m, "bf16", False) for m in agent.actor.modules()):
        return "a bf16 actor"
    if not all(adam_applies(o) for o in (agent.critic_opt, agent.actor_opt, agent.alpha_opt)):
        return "an optimiser setting the fused Adam step does not cover"
    return None


# ---------------------------------------------------------------------------------------------- actor
def _actor_linears(actor) -> list:
    """GaussianActor's Linear layers in order: trunk layers, then the mean/log_std head."""
    return [m for m in actor.trunk if isinstance(m, torch.nn.Linear)] + [actor.head]


def actor_mlp(actor, obs: Tensor) -> tuple[list[Tensor], Tensor]:
    """GaussianActor's network: the inputs of every layer (for the backward) and the head's (B, 2a) output."""
    lins = _actor_linears(actor)
    hs = [obs]
    h = obs
    for lin in lins[:-1]:
        h = torch.addmm(lin.bias, h, lin.weight.t()).relu_()
        hs.append(h)
    return hs, torch.addmm(lins[-1].bias, h, lins[-1].weight.t())


def squash(actor, out: Tensor, noise: Tensor):
    """tanh_gaussian on the head's output: a = tanh(u), u = mu + std * noise, and log pi(a). Returns a,
    log_prob and what actor_backward needs besides the layer inputs."""
    da = out.shape[1] // 2
    mu, raw_log_std = out[:, :da], out[:, da:]
    log_std = raw_log_std.clamp(actor.log_std_min, actor.log_std_max)
    std = log_std.exp()
    u = torch.addcmul(mu, std, noise)
    a = torch.tanh(u)
    log_prob = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(-1)
    eps = actor.squash_eps
    if eps > 0:
        log_prob = log_prob - torch.log(1.0 - a.square() + eps).sum(-1)
    else:
        log_prob = log_prob - (2.0 * (_LOG2 - u - F.softplus(-2.0 * u))).sum(-1)
    return a, log_prob, (mu, raw_log_std, std, noise)


def actor_backward(
    actor, hs: list[Tensor], saved, a: Tensor, g_a: Tensor, g_logp: Tensor, g_mean: Tensor | None
) -> dict:
    """Gradients of a loss L(a, log_prob, tanh(mu)) w.r.t. the actor's parameters, given the layer inputs hs
    and squash's `saved`, g_a = dL/da (B, a),
    g_logp = dL/dlog_prob (B,) and optionally g_mean = dL/dtanh(mu). Returns {parameter: grad}.

    u = mu + std * noise:  da/du = 1 - a^2;  dlog_prob/du = 2 tanh(u) (exact form) or
    2a (1 - a^2) / (1 - a^2 + eps);  dlog_prob/dlog_std = -1 (the Gaussian's own term);  du/dlog_std = std * noise.
    """
    mu, raw_log_std, std, noise = saved
    one_minus_a2 = 1.0 - a.square()
    eps = actor.squash_eps
    dlogp_du = 2.0 * a if eps <= 0 else 2.0 * a * one_minus_a2 / (one_minus_a2 + eps)
    gl = g_logp[:, None]
    g_u = g_a * one_minus_a2 + gl * dlogp_du
    g_mu = g_u
    if g_mean is not None:
        t = torch.tanh(mu)
        g_mu = g_mu + g_mean * (1.0 - t.square())
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
    """CriticEnsemble.forward: (N, B) Q-values; keep=True also returns the input and hidden activations."""
    x = torch.cat([obs, action], -1).expand(critic.n, -1, -1)
    hs = [x]
    h = x
    for layer in critic.layers:
        h = torch.baddbmm(layer.bias, h, layer.weight).relu_()
        hs.append(h)
    q = torch.baddbmm(critic.out.bias, h, critic.out.weight).squeeze(-1)
    return (q, hs) if keep else q


def critic_backward_params(critic, hs: list[Tensor], g_q: Tensor) -> dict:
    """Gradients w.r.t. the critics' parameters of a loss with dL/dQ = g_q (N, B)."""
    grads = {}
    g = g_q.unsqueeze(-1)  # (N, B, 1)
    grads[critic.out.weight] = torch.bmm(hs[-1].transpose(1, 2), g)
    grads[critic.out.bias] = g.sum(1, keepdim=True)
    d = _relu_backward(g * critic.out.weight.transpose(1, 2), hs[-1], 0)  # (N, B, H): outer product
    layers = critic.layers
    for k in range(len(layers) - 1, -1, -1):
        grads[layers[k].weight] = torch.bmm(hs[k].transpose(1, 2), d)
        grads[layers[k].bias] = d.sum(1, keepdim=True)
        if k > 0:  # no input gradient at the first layer: the critic loss does not train the inputs
            d = _relu_backward(torch.bmm(d, layers[k].weight.transpose(1, 2)), hs[k], 0)
    return grads


def critic_backward_action(critic, hs: list[Tensor], g_q: Tensor, act_dim: int, rows=None) -> Tensor:
    """dL/daction (B, a) for dL/dQ = g_q (N, B), no parameter gradients. rows[j]: the only rows where
    g_q[j] is non-zero (None: all rows), so critic j's backward runs over those rows alone."""
    n, b = g_q.shape
    obs_dim = hs[0].shape[-1] - act_dim
    layers = critic.layers
    if rows is None:
        d = _relu_backward(g_q.unsqueeze(-1) * critic.out.weight.transpose(1, 2), hs[-1], 0)
        for k in range(len(layers) - 1, 0, -1):
            d = _relu_backward(torch.bmm(d, layers[k].weight.transpose(1, 2)), hs[k], 0)
        return torch.bmm(d, layers[0].weight[:, obs_dim:].transpose(1, 2)).sum(0)
    g_a = torch.zeros(b, act_dim)
    for j in range(n):
        r = rows[j]
        if r.numel() == 0:
            continue
        d = g_q[j, r].unsqueeze(-1) * critic.out.weight[j].t()  # (R, H)
        d = _relu_backward(d, hs[-1][j, r], 0)
        for k in range(len(layers) - 1, 0, -1):
            d = _relu_backward(d @ layers[k].weight[j].t(), hs[k][j, r], 0)
        g_a.index_add_(0, r, d @ layers[0].weight[j, obs_dim:].t())
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
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gs)))
    if agent.cfg.max_grad_norm is not None:  # torch.nn.utils.clip_grads_with_norm_
        torch._foreach_mul_(gs, (agent.cfg.max_grad_norm / (norm + 1e-6)).clamp(max=1.0))
    adam_step(opt, params, gs)
    return float(norm)


# ---------------------------------------------------------------------------------------------- update


def update(agent: SAC, batch: Batch) -> dict[str, float]:
    """One SAC.update (critic step, plus actor and temperature every actor_every calls after critic_warmup)."""
    cfg = agent.cfg
    actor, critic = agent.actor, agent.critic
    obs, action, reward, next_obs = batch["obs"], batch["action"], batch["reward"], batch["next_obs"]
    terminated = batch["terminated"].float()
    discount = batch.get("discount")
    if discount is None:
        discount = torch.full_like(reward, cfg.gamma)
    alpha = agent.log_alpha.detach().exp()
    do_actor = agent.step >= cfg.critic_warmup and (agent.step + 1) % agent.actor_every == 0
    b = obs.shape[0]

    with torch.no_grad():
        # ---- the actor on s' (for the target) and, when the actor is trained this step, on s (for its loss,
        # after the critic step, which does not change the actor): one pass over both. Noise is drawn as
        # SAC.update draws it: s' first, then s.
        da = agent.act_dim
        noise_next = torch.randn_like(action)  # (B, a), as tanh_gaussian's randn_like(mu)
        if do_actor:
            noise = torch.randn_like(action)
            hs_all, out_all = actor_mlp(actor, torch.cat([next_obs, obs]))
            out_next, out = out_all[:b], out_all[b:]
            hs_pi = [h[b:] for h in hs_all]
        else:
            out_next = actor_mlp(actor, next_obs)[1]

        # ---- critic target: y = r + discount (1 - terminated) (min_M Q'(s', a') - alpha log pi(a'|s'))
        next_action, next_logp, _ = squash(actor, out_next, noise_next)
        q_next = agent.target_min(critic_forward(agent.critic_target, next_obs, next_action, keep=False))
        v_next = q_next - alpha * next_logp if cfg.backup_entropy else q_next
        target = reward + discount * (1.0 - terminated) * v_next

        # ---- critic loss sum_j mean_B (Q_j - y)^2: dL/dQ_j = 2 (Q_j - y) / B
        q, hs = critic_forward(critic, obs, action, keep=True)
        err = q - target
        critic_loss = err.square().mean(1).sum()
        info = {"losses/critic": agent._check("losses/critic", critic_loss)}
        grads = critic_backward_params(critic, hs, err * (2.0 / b))
        info["grad_norm/critic"] = _step(agent, agent.critic_opt, agent.critic_params, grads)

        # ---- actor loss mean_B (alpha log pi(a~|s) - Q(s, a~)) [+ BC on demo rows], against the new critics
        if do_actor:
            a_pi, logp_pi, saved = squash(actor, out, noise)
            q_pi, hs_q = critic_forward(critic, obs, a_pi, keep=True)
            if cfg.actor_q == "min":
                q_red, idx = q_pi.min(0)
                g_q = torch.zeros_like(q_pi).scatter_(0, idx[None], -1.0 / b)
                rows = [torch.nonzero(idx == j).squeeze(1) for j in range(critic.n)]
            else:
                q_red, rows = q_pi.mean(0), None
                g_q = torch.full_like(q_pi, -1.0 / (b * critic.n))
            actor_loss = (alpha * logp_pi - q_red).mean()
            g_a = critic_backward_action(critic, hs_q, g_q, da, rows)
            g_mean = None
            if cfg.bc_weight > 0 and "is_demo" in batch:
                demo = batch["is_demo"].float()
                n_demo = demo.sum().clamp(min=1.0)
                diff = torch.tanh(saved[0]) - action
                actor_loss = actor_loss + cfg.bc_weight * (diff.square().sum(-1) * demo).sum() / n_demo
                g_mean = diff * (2.0 * cfg.bc_weight / n_demo) * demo[:, None]
            g_logp = torch.full((b,), float(alpha) / b)
            agent._actor_info["losses/actor"] = agent._check("losses/actor", actor_loss)
            grads = actor_backward(actor, hs_pi, saved, a_pi, g_a, g_logp, g_mean)
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
