"""Contracts of robolearn.algos.sac and robolearn.algos.replay (fast unless marked slow)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robolearn.algos.replay import LinearSchedule, MixedSampler, ReplayBuffer, mix
from robolearn.algos.sac import SAC, GaussianActor, ResidualActor, SACConfig, td_target, train_sac

OBS, ACT = 5, 2
SMALL = dict(hidden=(32, 32), batch_size=16)


def filled_buffer(n=200, reward=0.0, seed=0, **kw) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(OBS, ACT, capacity=n, **kw)
    for t in range(n):
        buf.add(
            rng.normal(size=OBS),
            rng.uniform(-1, 1, ACT),
            reward + rng.normal(),
            rng.normal(size=OBS),
            terminated=t % 50 == 49,
        )
    return buf


class StubActor(nn.Module):
    """Deterministic actor: a fixed action and log-prob, both depending on one parameter."""

    def __init__(self, action: float = 0.3, log_prob: float = -1.0):
        super().__init__()
        self.a, self.lp = nn.Parameter(torch.tensor(action)), nn.Parameter(torch.tensor(log_prob))

    def forward(self, obs):
        B = obs.shape[0]
        a = torch.tanh(self.a).expand(B, ACT)
        return a, self.lp.expand(B), a


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field,value",
    [
        ("gamma", 1.5),
        ("gamma", 0.0),
        ("tau", 0.0),
        ("batch_size", 0),
        ("utd", 0),
        ("critic_subset", 3),
        ("n_step", 0),
        ("actor_q", "max"),
    ],
)
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"SACConfig\.{field}={value!r}.*must be"):
        SACConfig(**{field: value})


# ---------------------------------------------------------------------------------------------- replay
def test_mixed_sampler_default_is_symmetric():
    demo, online = filled_buffer(reward=100.0), filled_buffer(reward=-100.0, seed=1)
    batch = MixedSampler(demo, online).sample(256, np.random.default_rng(0))
    assert batch["is_demo"].dtype == torch.bool and int(batch["is_demo"].sum()) == 128
    assert (batch["reward"][batch["is_demo"]] > 50).all() and (batch["reward"][~batch["is_demo"]] < -50).all()


def test_mixed_sampler_schedule_changes_ratio():
    demo, online = filled_buffer(reward=100.0), filled_buffer(reward=-100.0, seed=1)
    sampler, rng = (
        MixedSampler(demo, online, demo_ratio=LinearSchedule(0.5, 0.1, steps=100)),
        np.random.default_rng(0),
    )
    n_demo = {s: int(sampler.sample(200, rng, step=s)["is_demo"].sum()) for s in (0, 50, 100, 1000)}
    assert n_demo == {0: 100, 50: 60, 100: 20, 1000: 20}
    # without an explicit step, the sampler counts its own calls
    sampler = MixedSampler(demo, online, demo_ratio=LinearSchedule(1.0, 0.0, steps=2))
    assert [int(sampler.sample(10, rng)["is_demo"].sum()) for _ in range(3)] == [10, 5, 0]


def test_mix_adds_is_demo():
    a, b = (
        filled_buffer().sample(3, np.random.default_rng(0)),
        filled_buffer().sample(5, np.random.default_rng(1)),
    )
    out = mix(a, b)
    assert out["obs"].shape == (8, OBS) and out["is_demo"].tolist() == [True] * 3 + [False] * 5


def test_n_step_returns_by_hand():
    g = 0.5
    buf = ReplayBuffer(1, 1, capacity=10, n_step=3, gamma=g)
    # episode A: 4 steps, terminated at t=3; episode B: 2 steps, truncated at t=5; then t=6, 7 still running
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    term = [0, 0, 0, 1, 0, 0, 0, 0]
    trunc = [0, 0, 0, 0, 0, 1, 0, 0]
    for t, r in enumerate(rewards):
        buf.add([t], [0.0], r, [t + 1], bool(term[t]), bool(trunc[t]))
    b = buf.get(np.arange(8))
    exp_reward = [
        1 + g * 2 + g * g * 4,
        2 + g * 4 + g * g * 8,
        4 + g * 8,
        8,
        16 + g * 32,
        32,
        64 + g * 128,
        128,
    ]  # windows stop after an episode end and at the newest transition
    exp_steps = [3, 3, 2, 1, 2, 1, 2, 1]
    exp_next = [3, 4, 4, 4, 6, 6, 8, 8]
    exp_term = [0, 1, 1, 1, 0, 0, 0, 0]
    np.testing.assert_allclose(b["reward"].numpy(), exp_reward)
    np.testing.assert_allclose(b["discount"].numpy(), [g**k for k in exp_steps])
    assert b["next_obs"][:, 0].tolist() == exp_next and b["terminated"].tolist() == exp_term
    # wrap-around: the write head (oldest slot once full) also ends a window
    for t in range(8, 12):
        buf.add([t], [0.0], 1.0, [t + 1], False, False)
    b = buf.get(np.array([1]))  # slot 1 holds t=11, the newest: the next slot (t=2) is older, not its future
    assert float(b["reward"][0]) == 1.0 and float(b["discount"][0]) == g


def test_buffer_state_dict_round_trip_weights_only(tmp_path):
    buf = filled_buffer(n=50, n_step=3)
    for t in range(20):  # wrap around
        buf.add(np.full(OBS, t), np.zeros(ACT), t, np.zeros(OBS), False)
    torch.save(buf.state_dict(), tmp_path / "buf.pt")
    other = ReplayBuffer(OBS, ACT, capacity=50, n_step=3)
    other.load_state_dict(torch.load(tmp_path / "buf.pt", weights_only=True))
    assert (other.ptr, other.size) == (buf.ptr, buf.size)
    for k in ("obs", "next_obs", "action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(other, k), getattr(buf, k))


# ---------------------------------------------------------------------------------------------- targets
def test_td_target_by_hand():
    # two critics' Q'(s', a') for B = 3; gamma 0.9; the third row is a 2-step return (discount 0.81)
    q_next = torch.tensor([[5.0, 3.0, 1.0], [4.0, 6.0, 2.0]]).min(0).values  # [4, 3, 1]
    y = td_target(
        reward=torch.tensor([1.0, 2.0, 1.5]),
        discount=torch.tensor([0.9, 0.9, 0.81]),
        terminated=torch.tensor([0.0, 1.0, 0.0]),
        q_next=q_next,
        next_logp=torch.tensor([-1.0, 0.5, 2.0]),
        alpha=0.2,
    )
    torch.testing.assert_close(y, torch.tensor([1 + 0.9 * (4 + 0.2), 2.0, 1.5 + 0.81 * (1 - 0.4)]))
    y = td_target(
        torch.tensor([1.0]),
        torch.tensor([0.9]),
        torch.tensor([0.0]),
        torch.tensor([4.0]),
        torch.tensor([-1.0]),
        0.2,
        backup_entropy=False,
    )
    torch.testing.assert_close(y, torch.tensor([1 + 0.9 * 4.0]))


def test_td_target_bounds_clip_into_the_return_range():
    y = td_target(
        torch.tensor([0.0, 1.0, 0.0]),
        torch.tensor([0.99, 0.99, 0.99]),
        torch.tensor([0.0, 1.0, 0.0]),
        torch.tensor([1.8, 5.0, -0.4]),
        torch.zeros(3),
        0.1,
        backup_entropy=False,
        bounds=(0.0, 1.0),
    )
    torch.testing.assert_close(y, torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="target_bounds"):
        SACConfig(target_bounds=(1.0, 0.0))


@pytest.mark.parametrize("fused", [True, False])
def test_ensemble_q_stays_within_max_return_on_a_sparse_reward_toy(fused):
    # Sparse success reward that ends the episode: every true return is in [0, 1]. Critics that start
    # overestimating (output bias +3) and bootstrap from themselves (gamma 0.99) stay far above 1 for
    # thousands of updates; with target_bounds=(0, 1) their Q comes down to the return range.
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(OBS, ACT, capacity=400)
    for t in range(400):
        success = t % 40 == 39 and rng.random() < 0.5
        buf.add(rng.normal(size=OBS), rng.uniform(-1, 1, ACT), float(success), rng.normal(size=OBS), success)

    def q_max(bounds):
        torch.manual_seed(0)
        actor = GaussianActor(OBS, ACT, (32, 32))
        cfg = SACConfig(
            n_critics=10,
            critic_subset=2,
            layer_norm=True,
            backup_entropy=False,
            fused=fused,
            target_bounds=bounds,
            critic_lr=1e-3,
            **SMALL,
        )
        agent = SAC(actor, OBS, ACT, cfg)
        with torch.no_grad():
            for c in (agent.critic, agent.critic_target):
                c.out.bias += 3.0
        sample = np.random.default_rng(1)
        for _ in range(600):
            info = agent.update(buf.sample(16, sample))
        return info["q/max"]

    assert q_max((0.0, 1.0)) <= 1.1
    assert q_max(None) > 1.5  # the toy does overestimate without the bounds


def test_conservative_term_lowers_q_at_the_actors_actions():
    # Buffer actions are all -0.5; the actor always proposes +0.5, where the critics have no data. The CQL
    # term pushes Q there far below Q at the buffer's actions; without it the gap is much smaller (~-0.9
    # here, from the critics' extrapolation alone, vs ~-30 with cql_weight=1).
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(OBS, ACT, capacity=300)
    for t in range(300):
        buf.add(rng.normal(size=OBS), np.full(ACT, -0.5), rng.random(), rng.normal(size=OBS), t % 30 == 29)

    def gap(cql_weight):
        torch.manual_seed(0)
        actor = StubActor(action=math.atanh(0.5))
        agent = SAC(actor, OBS, ACT, SACConfig(cql_weight=cql_weight, critic_lr=1e-3, **SMALL))
        sample = np.random.default_rng(1)
        for _ in range(300):
            agent.update(buf.sample(16, sample))
        obs = torch.as_tensor(rng.normal(size=(64, OBS)), dtype=torch.float32)
        with torch.no_grad():
            q_pi = agent.critic(obs, torch.full((64, ACT), 0.5)).mean()
            q_data = agent.critic(obs, torch.full((64, ACT), -0.5)).mean()
        return float(q_pi - q_data), agent

    g_on, agent = gap(1.0)
    g_off, _ = gap(0.0)
    assert agent.fused is None  # the hand-written update does not cover the term: autograd runs it
    assert g_on < -0.3 and g_on < g_off - 0.3, (g_on, g_off)


def test_update_critic_loss_matches_hand_target():
    cfg = SACConfig(gamma=0.9, init_alpha=0.5, **SMALL)
    agent = SAC(StubActor(action=0.3, log_prob=-1.0), OBS, ACT, cfg)
    batch = filled_buffer().sample(16, np.random.default_rng(0))
    del batch["discount"]  # falls back to cfg.gamma
    with torch.no_grad():
        q = agent.critic(batch["obs"], batch["action"]).numpy()  # (2, B)
        a_next = torch.full((16, ACT), math.tanh(0.3))
        q_next = agent.critic_target(batch["next_obs"], a_next).numpy().min(0)
    r, d = batch["reward"].numpy(), batch["terminated"].numpy()
    y = r + 0.9 * (1 - d) * (q_next - 0.5 * -1.0)
    expected = sum(((q[j] - y) ** 2).mean() for j in range(2))
    info = agent.update(batch)
    assert info["losses/critic"] == pytest.approx(expected, rel=1e-5)
    assert set(info) >= {
        "losses/critic",
        "losses/actor",
        "losses/alpha",
        "alpha",
        "q/mean",
        "q/max",
        "q/min",
        "grad_norm/critic",
        "grad_norm/actor",
    }


def test_target_min_over_random_pair_of_ensemble():
    agent = SAC(StubActor(), OBS, ACT, SACConfig(n_critics=5, critic_subset=2, **SMALL))
    q = torch.randn(5, 7)
    seen = set()
    for _ in range(30):
        out = agent.target_min(q)
        pairs = [p for p in itertools.combinations(range(5), 2) if torch.equal(out, q[list(p)].min(0).values)]
        assert pairs, "target is not the min over any pair of critics"
        seen.add(pairs[0])
    assert len(seen) > 3  # the pair is redrawn
    agent = SAC(StubActor(), OBS, ACT, SACConfig(n_critics=3, critic_subset=3, **SMALL))
    q = torch.randn(3, 7)
    assert torch.equal(agent.target_min(q), q.min(0).values)


@pytest.mark.parametrize("log_prob,direction", [(-10.0, -1), (5.0, +1)])
def test_temperature_moves_toward_target_entropy(log_prob, direction):
    # entropy = -log_prob. Target -ACT = -2: entropy 10 is too high -> alpha falls; -5 too low -> alpha rises
    agent = SAC(StubActor(log_prob=log_prob), OBS, ACT, SACConfig(alpha_lr=0.05, **SMALL))
    buf, rng = filled_buffer(), np.random.default_rng(0)
    alphas = [agent.update(buf.sample(16, rng)) and agent.alpha for _ in range(5)]
    assert all(direction * (b - a) > 0 for a, b in zip([1.0, *alphas], alphas))


def test_polyak_update_math():
    tau = 0.1
    agent = SAC(StubActor(), OBS, ACT, SACConfig(tau=tau, **SMALL))
    with torch.no_grad():
        for p in agent.critic_target.parameters():
            p.fill_(1.0)
    before = [p.clone() for p in agent.critic_target.parameters()]
    agent.update(filled_buffer().sample(16, np.random.default_rng(0)))
    for old, new, online in zip(before, agent.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(new, (1 - tau) * old + tau * online)


def test_nan_loss_raises_naming_loss_and_step():
    agent = SAC(StubActor(), OBS, ACT, SACConfig(**SMALL))
    buf, rng = filled_buffer(), np.random.default_rng(0)
    agent.update(buf.sample(16, rng))
    agent.update(buf.sample(16, rng))
    bad = buf.sample(16, rng)
    bad["reward"][3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"losses/critic is nan at update step 2"):
        agent.update(bad)
    bad = buf.sample(16, rng)
    with torch.no_grad():
        agent.actor.lp.fill_(float("inf"))  # log-prob inf: the target is finite only without entropy backup
    agent.cfg.backup_entropy = False
    with pytest.raises(FloatingPointError, match=r"losses/actor is -?inf at update step 2"):
        agent.update(bad)


def test_critic_warmup_freezes_actor_and_utd_schedules_actor():
    agent = SAC(GaussianActor(OBS, ACT, (32, 32)), OBS, ACT, SACConfig(critic_warmup=3, **SMALL))
    buf, rng = filled_buffer(), np.random.default_rng(0)
    init = [p.clone() for p in agent.actor.parameters()]
    for _ in range(3):
        agent.update(buf.sample(16, rng))
    assert all(torch.equal(a, b) for a, b in zip(init, agent.actor.parameters())) and agent.actor_steps == 0
    agent.update(buf.sample(16, rng))
    assert (
        not all(torch.equal(a, b) for a, b in zip(init, agent.actor.parameters())) and agent.actor_steps == 1
    )
    agent = SAC(GaussianActor(OBS, ACT, (32, 32)), OBS, ACT, SACConfig(utd=4, **SMALL))
    for _ in range(8):
        agent.update(buf.sample(16, rng))
    assert (agent.step, agent.actor_steps) == (8, 2)


def test_bc_term_pulls_mean_action_to_demo_actions():
    torch.manual_seed(0)
    cfg = SACConfig(bc_weight=100.0, autotune=False, init_alpha=1e-3, actor_lr=1e-2, **SMALL)
    agent = SAC(GaussianActor(OBS, ACT, (32, 32)), OBS, ACT, cfg)
    buf, rng = filled_buffer(), np.random.default_rng(0)
    demo = filled_buffer(seed=3)
    demo.action[:] = 0.5
    sampler = MixedSampler(demo, buf)
    for _ in range(150):
        agent.update(sampler.sample(32, rng))
    with torch.no_grad():
        mean = agent.actor(torch.from_numpy(demo.obs))[2]
    assert (mean - 0.5).abs().mean() < 0.1


@pytest.mark.parametrize("fused", [False, True], ids=["autograd", "fused"])
def test_state_dict_round_trip_is_bit_exact(tmp_path, fused):
    torch.manual_seed(0)
    cfg = SACConfig(n_critics=3, critic_subset=2, layer_norm=True, n_step=2, fused=fused, **SMALL)
    agent, buf = SAC(GaussianActor(OBS, ACT, (32, 32)), OBS, ACT, cfg), filled_buffer(n_step=2)
    assert (agent.fused is not None) == fused
    rng = np.random.default_rng(0)
    for _ in range(5):
        agent.update(buf.sample(16, rng))
    torch.save(
        {"agent": agent.state_dict(), "buffer": buf.state_dict(), "rng": rng.bit_generator.state},
        tmp_path / "ckpt.pt",
    )

    def cont(agent, buf, rng):
        torch.manual_seed(123)
        return [agent.update(buf.sample(16, rng)) for _ in range(5)]

    ref = cont(agent, buf, rng)
    torch.manual_seed(99)  # a differently initialised copy, overwritten by the checkpoint
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    agent2 = SAC(GaussianActor(OBS, ACT, (32, 32)), OBS, ACT, cfg)
    buf2 = ReplayBuffer(OBS, ACT, capacity=200, n_step=2)
    agent2.load_state_dict(ckpt["agent"])
    buf2.load_state_dict(ckpt["buffer"])
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = ckpt["rng"]
    assert agent2.step == 5 and agent2.actor_steps == 5
    assert ref == cont(agent2, buf2, rng2)
    s1, s2 = agent.state_dict(), agent2.state_dict()
    for key in ("actor", "critic", "critic_target"):
        assert all(torch.equal(s1[key][k], s2[key][k]) for k in s1[key])
    assert torch.equal(s1["log_alpha"], s2["log_alpha"])
    for key in ("critic_opt", "actor_opt"):
        for i, st in s1[key]["state"].items():
            assert all(torch.equal(v, s2[key]["state"][i][k]) for k, v in st.items())


# ---------------------------------------------------------------------------------------------- fused update
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"actor_q": "mean"},
        {"n_critics": 5, "critic_subset": 2},
        {"squash_eps": 0.0},  # the exact tanh correction (the default is SB3's 1e-6)
        {"bc_weight": 0.5},
        {"max_grad_norm": 0.05, "hidden": (48, 32, 16)},
        {"utd": 2, "critic_warmup": 1, "backup_entropy": False, "n_step": 3},
        {"layer_norm": True, "n_critics": 10, "critic_subset": 2},
        {"residual": 0.1, "layer_norm": True, "bc_weight": 0.5},
        {"residual": 0.7, "actor_q": "mean", "max_grad_norm": 0.05},
    ],
    ids=[
        "default",
        "mean",
        "redq",
        "sb3eps",
        "bc",
        "clip-3layers",
        "utd-warmup-nstep",
        "rlpd-layernorm",
        "residual-layernorm-bc",
        "residual-clipped",
    ],
)
def test_fused_update_equals_the_autograd_update(kw):
    """sac_fused (hand-written backward passes, the default) and SAC.update's autograd path, from the same
    weights, batches and noise: the same parameters, optimiser state, temperature and logged values. The
    residual cases are fine-tuning's actor (base = the BC action in the observation's last columns, here
    often outside [-1, 1], so the clip's gradient is exercised)."""
    from robolearn.algos.bridges import last_columns

    kw = dict(kw)
    n_step, hidden, residual = kw.pop("n_step", 1), kw.pop("hidden", (64, 64)), kw.pop("residual", None)

    def make(fused):
        torch.manual_seed(0)
        cfg = SACConfig(fused=fused, hidden=hidden, batch_size=64, n_step=n_step, **kw)
        if residual is not None:
            actor = ResidualActor(
                last_columns(ACT), OBS, ACT, scale=residual, hidden=hidden, init_log_std=-0.5
            )
            with torch.no_grad():  # away from its zero-initialised last layer, so every gradient is non-zero
                actor.head.weight.normal_(0.0, 0.1)
        else:
            actor = GaussianActor(OBS, ACT, cfg.hidden, squash_eps=cfg.squash_eps)
        return SAC(actor, OBS, ACT, cfg)

    ref, fused = make(False), make(True)
    assert ref.fused is None and fused.fused is not None
    buf = filled_buffer(n_step=n_step)
    rng = np.random.default_rng(0)
    init = [p.detach().clone() for p in [*ref.actor.parameters(), *ref.critic.parameters()]]
    for step in range(4):
        batch = buf.sample(64, rng)
        batch["is_demo"] = torch.arange(64) % 3 == 0
        torch.manual_seed(100 + step)
        info_ref = ref.update(batch)
        torch.manual_seed(100 + step)
        info = fused.update(batch)
        assert info.keys() == info_ref.keys()
        for k, v in info_ref.items():
            assert info[k] == pytest.approx(v, rel=1e-4, abs=1e-6, nan_ok=True), (step, k)
    assert (fused.step, fused.actor_steps) == (ref.step, ref.actor_steps)
    assert fused.log_alpha.item() == pytest.approx(ref.log_alpha.item(), abs=1e-7)
    pairs = [
        *zip(ref.actor.parameters(), fused.actor.parameters()),
        *zip(ref.critic.parameters(), fused.critic.parameters()),
    ]
    # Adam's first steps are ~lr * sign(grad), so rounding can flip a near-zero gradient's step: compare the
    # summed difference with the summed movement (a wrong term gives O(1))
    for (p_ref, p), p0 in zip(pairs, init):
        moved = (p_ref - p0).abs().sum()
        assert moved > 0
        assert (p - p_ref).abs().sum() < 1e-3 * moved
    for p_ref, p in zip(ref.critic_target.parameters(), fused.critic_target.parameters()):
        assert torch.allclose(p, p_ref, atol=1e-6)
    for opt_ref, opt in ((ref.critic_opt, fused.critic_opt), (ref.actor_opt, fused.actor_opt)):
        s_ref, s = opt_ref.state_dict()["state"], opt.state_dict()["state"]
        assert s.keys() == s_ref.keys()
        for i in s:
            assert s[i]["step"] == s_ref[i]["step"]
            assert torch.allclose(s[i]["exp_avg"], s_ref[i]["exp_avg"], atol=1e-6)


def test_fused_update_is_used_where_it_is_exact():
    """The fused update covers the Gaussian and residual actors with fp32 critics (LayerNorm or not); other
    setups (bf16, any other actor, fused=False) keep autograd."""
    base = lambda x: torch.zeros(x.shape[0], ACT)  # noqa: E731
    for actor, cfg in [
        (GaussianActor(OBS, ACT, (32, 32)), SACConfig(**SMALL)),
        (GaussianActor(OBS, ACT, (32, 32)), SACConfig(layer_norm=True, **SMALL)),
        (ResidualActor(base, OBS, ACT, hidden=(32, 32)), SACConfig(layer_norm=True, **SMALL)),
    ]:
        assert SAC(actor, OBS, ACT, cfg).fused is not None
    for actor, cfg in [
        (GaussianActor(OBS, ACT, (32, 32)), SACConfig(fused=False, **SMALL)),
        (GaussianActor(OBS, ACT, (32, 32), bf16=True), SACConfig(bf16=True, **SMALL)),
        (StubActor(), SACConfig(**SMALL)),
    ]:
        assert SAC(actor, OBS, ACT, cfg).fused is None


# ---------------------------------------------------------------------------------------------- actors
def test_gaussian_actor_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = GaussianActor(OBS, ACT, (32, 32))
    obs = torch.randn(64, OBS)
    a, logp, mean = actor(obs)
    mu, log_std = actor.head(actor.trunk(obs)).chunk(2, -1)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, log_std.clamp(-20, 2).exp()),
        torch.distributions.TanhTransform(cache_size=1),
    )
    a64 = a.double().clamp(-1 + 1e-6, 1 - 1e-6)
    ref = (
        torch.distributions.TransformedDistribution(
            torch.distributions.Normal(mu.double(), log_std.clamp(-20, 2).exp().double()),
            torch.distributions.TanhTransform(),
        )
        .log_prob(a64)
        .sum(-1)
    )
    torch.testing.assert_close(logp.double(), ref, atol=2e-3, rtol=1e-3)
    assert dist.sample().shape == a.shape and (a.abs() <= 1).all() and torch.equal(mean, torch.tanh(mu))
    assert logp.requires_grad and a.requires_grad


def test_squash_eps_is_sb3s_tanh_correction_and_only_differs_at_saturation():
    from robolearn.algos.sac import tanh_gaussian

    mu = torch.tensor([[0.3, -1.0], [12.0, -15.0]], requires_grad=True)  # row 1: tanh(u) rounds to +-1
    log_std = torch.full((2, 2), -9.0)
    torch.manual_seed(0)
    a, exact, _ = tanh_gaussian(mu, log_std)
    torch.manual_seed(0)
    a2, naive, _ = tanh_gaussian(mu, log_std, eps=1e-6)
    torch.manual_seed(0)
    u = mu + log_std.exp() * torch.randn(2, 2)  # the same draw
    assert torch.equal(a, a2)
    exact_corr = (2.0 * (math.log(2) - u - F.softplus(-2.0 * u))).sum(-1)  # log(1 - tanh(u)^2), exactly
    sb3_corr = torch.log(1 - a.square() + 1e-6).sum(-1)  # SB3's SquashedDiagGaussianDistribution.log_prob
    torch.testing.assert_close(naive, exact + exact_corr - sb3_corr)
    assert naive[0].item() == pytest.approx(exact[0].item(), abs=1e-3)  # unsaturated: the same density
    assert naive[1] - exact[1] < -10  # saturated: SB3's form caps the correction at -log(eps) per dimension
    (g,) = torch.autograd.grad(naive[1], mu, retain_graph=True)
    assert g.abs().max() < 1e-3  # ... and its pull back from saturation vanishes; the exact one keeps it
    (g,) = torch.autograd.grad(exact[1], mu)
    assert (g[1].abs() > 1.0).all()  # d/du of -log(1 - tanh(u)^2) -> 2 sign(u)


def test_residual_actor_zero_residual_reproduces_base():
    base_net = nn.Sequential(nn.Linear(OBS, ACT), nn.Tanh())
    actor = ResidualActor(base_net, OBS, ACT, scale=0.2, hidden=(32, 32))
    obs = torch.randn(10, OBS)
    a, logp, mean = actor(obs)
    with torch.no_grad():
        base = base_net(obs)
    torch.testing.assert_close(mean, base, rtol=0, atol=0)  # zero-initialised last layer: mean residual 0
    assert ((a - base).abs() <= 0.2 + 1e-6).all() and logp.shape == (10,)
    # the base stays frozen and out of the optimiser / checkpoint
    assert not any(k.startswith("base") for k in actor.state_dict())
    agent = SAC(actor, OBS, ACT, SACConfig(**SMALL))
    before = [p.clone() for p in base_net.parameters()]
    agent.update(filled_buffer().sample(16, np.random.default_rng(0)))
    assert all(torch.equal(x, y) for x, y in zip(before, base_net.parameters()))


# ---------------------------------------------------------------------------------------------- training
def test_train_sac_smoke_logs(tmp_path):
    cfg = SACConfig(learning_starts=100, hidden=(32, 32), batch_size=32)
    out = train_sac(
        "Pendulum-v1", cfg, total_steps=400, seed=0, log_dir=str(tmp_path), eval_every=400, eval_episodes=1
    )
    assert len(out["episodic_returns"]) == 2 and math.isfinite(out["final_eval"])
    assert out["time/env"] > 0 and out["time/update"] > 0 and out["agent"].step == 301
    assert list(tmp_path.glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sac_learns_pendulum():
    cfg = SACConfig(
        learning_starts=1000, hidden=(64, 64), batch_size=128, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3
    )
    out = train_sac("Pendulum-v1", cfg, total_steps=6000, seed=0, eval_every=1000, eval_episodes=3, threads=1)
    first, last = out["evals"][0][1], out["final_eval"]
    assert last > first + 300 and last > -600, out["evals"]


def test_bf16_matmuls_track_fp32():
    torch.manual_seed(0)
    cfg = SACConfig(**SMALL)
    ref = SAC(GaussianActor(OBS, ACT, (32, 32)), OBS, ACT, cfg)
    fast = SAC(GaussianActor(OBS, ACT, (32, 32), bf16=True), OBS, ACT, SACConfig(bf16=True, **SMALL))
    fast.critic.load_state_dict(ref.critic.state_dict())
    fast.actor.load_state_dict(ref.actor.state_dict())
    obs, act = torch.randn(64, OBS), torch.rand(64, ACT) * 2 - 1
    q_ref, q = ref.critic(obs, act), fast.critic(obs, act)
    assert q.dtype == torch.float32 and (q - q_ref).abs().max() < 2e-2 * q_ref.abs().max()
    info = fast.update(filled_buffer().sample(16, np.random.default_rng(0)))
    assert all(math.isfinite(v) for v in info.values())


def test_update_matches_stable_baselines3_given_the_same_weights_batch_and_noise(monkeypatch):
    """One SAC update here and in SB3 2.x (the peer of bench/sac_vs_sb3.py) from the same weights, batch and
    Gaussian noise: the same algorithm up to float rounding (SB3 halves the critic loss and adds 1e-6 inside
    its tanh correction; Adam ignores the first and the second is below the noise). So a return gap between
    the two at equal budgets is seed noise, not a different update."""
    sb3 = pytest.importorskip("stable_baselines3")
    import gymnasium as gym
    import torch.distributions.normal as normal_mod
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    import robolearn.algos.sac as sac_mod

    torch.manual_seed(0)
    m = sb3.SAC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        batch_size=64,
        buffer_size=100,
        learning_starts=0,
        policy_kwargs=dict(net_arch=[64, 64]),
        device="cpu",
        seed=0,
    )
    m.set_logger(configure(None, []))
    o, a = 3, 1
    actor = GaussianActor(o, a, (64, 64), squash_eps=SACConfig().squash_eps)  # SB3's tanh correction
    agent = SAC(actor, o, a, SACConfig(hidden=(64, 64), batch_size=64))
    with torch.no_grad():  # SB3's weights into ours (our ensemble stores W as (N, in, out))
        sa = m.actor
        for ours_lin, theirs in ((actor.trunk[0], sa.latent_pi[0]), (actor.trunk[2], sa.latent_pi[2])):
            ours_lin.weight.copy_(theirs.weight), ours_lin.bias.copy_(theirs.bias)
        actor.head.weight.copy_(torch.cat([sa.mu.weight, sa.log_std.weight]))
        actor.head.bias.copy_(torch.cat([sa.mu.bias, sa.log_std.bias]))
        for src, dst in ((m.critic, agent.critic), (m.critic_target, agent.critic_target)):
            for j, q in enumerate(src.q_networks):
                for layer, lin in zip([*dst.layers, dst.out], (q[0], q[2], q[4])):
                    layer.weight[j].copy_(lin.weight.T), layer.bias[j, 0].copy_(lin.bias)
    w0 = m.actor.latent_pi[2].weight.detach().clone()
    c0 = [q[2].weight.detach().clone() for q in m.critic.q_networks]
    t0 = [q[2].weight.detach().clone() for q in m.critic_target.q_networks]
    g = torch.Generator().manual_seed(1)
    B = 64
    batch = dict(
        obs=torch.randn(B, o, generator=g),
        action=torch.rand(B, a, generator=g) * 2 - 1,
        reward=torch.randn(B, generator=g),
        next_obs=torch.randn(B, o, generator=g),
        terminated=(torch.rand(B, generator=g) < 0.2).float(),
    )
    eps_obs, eps_next = torch.randn(B, a, generator=g), torch.randn(B, a, generator=g)
    # SB3 samples pi(s) then pi(s'); we sample pi(s') then pi(s): each gets the same noise for the same rows
    theirs, ours = [eps_obs, eps_next], [eps_next, eps_obs]
    monkeypatch.setattr(normal_mod, "_standard_normal", lambda shape, dtype, device: theirs.pop(0))
    monkeypatch.setattr(sac_mod.torch, "randn_like", lambda x: ours.pop(0))
    m.replay_buffer.sample = lambda n, env=None: ReplayBufferSamples(
        batch["obs"],
        batch["action"],
        batch["next_obs"],
        batch["terminated"][:, None],
        batch["reward"][:, None],
        None,
    )
    m.train(1, B)
    info = agent.update(batch)
    assert theirs == [] and ours == []  # each drew exactly its two noise tensors
    # Adam's first step is ~lr * sign(grad): rounding flips the sign of a few near-zero gradients, so compare
    # the summed difference with the summed movement (measured: 4e-5 of it; a wrong term gives O(1))
    moved = (m.actor.latent_pi[2].weight - w0).abs().sum()
    assert moved > 0
    assert (actor.trunk[2].weight - m.actor.latent_pi[2].weight).abs().sum() < 1e-3 * moved
    for j, q in enumerate(m.critic.q_networks):
        moved = (q[2].weight - c0[j]).abs().sum()
        assert (agent.critic.layers[1].weight[j].T - q[2].weight).abs().sum() < 1e-3 * moved, j
        qt = m.critic_target.q_networks[j][2].weight
        moved = (qt - t0[j]).abs().sum()  # Polyak: tau of the critic's step
        # (rounding of the tiny lerp step: 1e-3 of it measured; tau 0.006 instead of 0.005 gives 0.2)
        assert (agent.critic_target.layers[1].weight[j].T - qt).abs().sum() < 0.02 * moved, j
    assert agent.log_alpha.item() == pytest.approx(m.log_ent_coef.item(), abs=1e-7)
    assert info["losses/critic"] == pytest.approx(2 * m.logger.name_to_value["train/critic_loss"], rel=1e-4)
