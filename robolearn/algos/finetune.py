"""Online SAC fine-tuning of a behaviour-cloning policy, demos mixed into every batch (RLPD-style):
`robolearn finetune policy=<bc ckpt> env=<id> demos=<file> steps=... out=<run dir>`.

The procedure, top to bottom:

1. the SAC observation: the BC policy's low-dim observation keys (sorted), each over the policy's history
   To (oldest first, padded with the episode's first observation like the BC dataset), flattened and
   concatenated key by key into one vector s (D,). Image observations are refused (state only for now).
   The networks (and buffers) see s scaled by the BC checkpoint's normaliser (`obs_norm`, ObsScaling); the
   BC policy plans from the raw s. Actions: the env's Box rescaled to [-1, 1].
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
   `reward_type`: sparse on robolearn's tasks by default (success only, as HIL-SERL), else the env's own.
4. `learning_starts` env steps of acting without updates (the BC-initialised actor acts; bridge=none acts
   uniformly at random), then `utd` SAC updates per env step (critic warm-up, BC term: see SACConfig).
5. deterministic evaluation (mean action) every `eval_every` env steps on `robolearn eval`'s episode seeds,
   TensorBoard, `results.json` at the end; an evaluation that collapses restores best.pt (finetune_guard).
   Online episodes use the fine-tuning seed range (robolearn.seeds), disjoint from evaluation's and demos'.
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
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from robolearn.algos.bridges import (  # noqa: F401  (re-exported: the bridges' public names)
    BRIDGES,
    GAUSSIAN_HEADS,
    batched,
    bc_base,
    bc_chunk,
    build_actor,
    check_bridge,
    distill_gaussian,
    from_unit,
    held_chunk,
    last_columns,
    to_unit,
)
from robolearn.algos.demos import load_demo_transitions  # noqa: F401
from robolearn.algos.finetune_config import FinetuneConfig
from robolearn.algos.finetune_guard import RegressionGuard
from robolearn.algos.finetuned import (  # noqa: F401
    SACActorPolicy,
    evaluate_actor,
    load_finetuned,
    sac_actor_from_checkpoint,
)
from robolearn.algos.interventions import HumanInTheLoop
from robolearn.algos.obs_layout import FlatHistory, ObsLayout, ObsScaling  # noqa: F401
from robolearn.config import TELEOP_DEVICES, ConfigError
from robolearn.policies.checkpoint import SAC_FORMAT as FORMAT
from robolearn.seeds import FINETUNE_SEED_BASE, add_seeds, data_fields, finetune_seed, warn_if_evaluated

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = FINETUNE_SEED_BASE  # online episodes: 30_000_000 + seed * 100_000 + i (robolearn.seeds)


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

    from robolearn.algos.bc import _clean_stale_tmp, atomic_save
    from robolearn.algos.precision import resolve as resolve_precision
    from robolearn.algos.replay import LinearSchedule, MixedSampler, ReplayBuffer
    from robolearn.algos.sac import SAC
    from robolearn.envutil import is_robolearn_task, make_env
    from robolearn.policies.checkpoint import FORMAT as BC_FORMAT
    from robolearn.policies.checkpoint import build_policy, load_policy, policy_state, read_checkpoint
    from robolearn.signals import interruptible
    from robolearn.threads import apply as apply_threads

    apply_threads(cfg.threads, None, "finetune")  # SAC's 256-wide networks: 1 thread unless told
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
    offline_seeds = (
        data_fields(None, resume_ck)
        if resume_ck is not None
        else (data_fields(cfg.demos, *([raw] if cfg.policy else [])))
    )
    warn_if_evaluated(offline_seeds, (0, 1), cfg.eval_episodes, "finetune")  # run_eval's seeds 0 and 1
    env_id = cfg.env or bc_ck_env
    if not env_id:
        raise ConfigError(
            f"the checkpoint {cfg.policy!r} does not record its env; give env=... "
            "(e.g. env=robolearn/Lift-v0)"
        )
    env_kwargs = dict(bc_ck_kwargs) if env_id == bc_ck_env else {}
    if is_robolearn_task(env_id):
        # default sparse (success only), HIL-SERL's choice and the loop's: on Lift from a 4-demo BC (54%),
        # 15k steps, 3 seeds, the shaped dense reward took the last checkpoint to 18 / 18 / 40% (SAC optimises
        # the shaping, not success) and the sparse reward to 74 / 82 / 74% (bench/hilserl_table.sh)
        env_kwargs["reward_type"] = cfg.reward_type or "sparse"
        env_kwargs["obs_mode"] = "state"  # low-dim keys only (checked below); no rendering cost
    elif cfg.reward_type is not None:  # task suites: reward_type=sparse replaces their reward by is_success
        env_kwargs["reward_type"] = cfg.reward_type
    reward_type = env_kwargs.get("reward_type", cfg.reward_type or "dense")
    person = cfg.intervention in TELEOP_DEVICES  # a person needs to see the scene
    env = make_env(env_id, render_mode="rgb_array" if person else None, **env_kwargs)
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
    base = bc_base(bc, layout, low, high) if bc is not None else None  # per step: the distillation target
    # residual: the BC proposal as the policy runs (its chunk held for Ta steps), or per step (chunked=false)
    if resume_ck is not None:
        bridge_Ta = int(resume_ck.get("bridge_Ta", 0))
    else:
        bridge_Ta = int(bc.spec.get("Ta", 1)) if (use_base and cfg.chunked) else 0
    held = held_chunk(bc, layout, low, high, bridge_Ta) if use_base else None
    scaling = ObsScaling.for_run(bc, layout, cfg.obs_norm, resume_ck)
    scaling_state = scaling.state_dict() if scaling is not None else None  # checkpoints, Ray actors
    obs_dim = layout.dim + (held.extra + da if use_base else 0)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    use_bf16, precision = resolve_precision(cfg.precision, cfg.batch_size, cfg.hidden[-1], cfg.n_critics)
    log.info("precision: %s", precision)
    sac_cfg = replace(cfg.sac_config(reward_type), bf16=use_bf16)  # temperature and TD bounds resolved there
    autotune, init_alpha, bounds = sac_cfg.autotune, sac_cfg.init_alpha, sac_cfg.target_bounds
    log.info(
        "temperature: %s %g, TD target bounds %s", "learned" if autotune else "fixed", init_alpha, bounds
    )
    init_log_std = cfg.init_log_std
    if init_log_std is None and cfg.bridge == "gaussian":
        init_log_std = -2.0
    max_log_std = cfg.residual_max_log_std
    if max_log_std is None and cfg.bridge == "residual":
        max_log_std = -1.0 if init_log_std is None else init_log_std  # the residual's initial log std
    actor = build_actor(
        cfg.bridge, obs_dim, da, cfg.hidden, cfg.residual_scale, init_log_std, max_log_std, sac_cfg.squash_eps
    )

    # ---- demos (rebuilt from the file on a fresh run; from the checkpoint on resume)
    demo_buf = None
    demo_info: dict = {}
    if resume_ck is not None and resume_ck.get("demo_replay") is not None:
        st = resume_ck["demo_replay"]
        demo_buf = ReplayBuffer(obs_dim, da, int(st["capacity"]), cfg.n_step, cfg.gamma)
        demo_buf.load_state_dict(st)
    elif cfg.demos:
        d = load_demo_transitions(cfg.demos, layout, low, high, reward_type, held, scaling)
        # with interventions the takeovers join the demos (HIL-SERL keeps them in both buffers)
        room = min(cfg.buffer_size, cfg.steps) if cfg.intervention else 0
        demo_buf = ReplayBuffer(obs_dim, da, len(d["reward"]) + room, cfg.n_step, cfg.gamma)
        demo_buf.add_batch(d["obs"], d["action"], d["reward"], d["next_obs"], d["terminated"], d["truncated"])
        demo_info = {"demo_episodes": d["episodes"], "demo_transitions": len(d["reward"])}
        log.info("demos: %d episodes, %d transitions from %s", d["episodes"], len(d["reward"]), cfg.demos)
        if cfg.bridge == "gaussian" and resume_ck is None:
            mse = distill_gaussian(
                actor, d["obs"], batched(base, d["obs_raw"]), cfg.distill_steps, init_log_std, seed=cfg.seed
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
    pol = SACActorPolicy(actor, layout, low, high, held, False, env_id, env_kwargs, scaling)

    iv_counts = {"steps": 0, "episodes": 0}  # replaced by the checkpoint's on resume (history below)
    human = HumanInTheLoop(cfg, env, env_id, env_kwargs, iv_counts, low, high) if cfg.intervention else None
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
    guard = RegressionGuard(cfg.guard_drop, cfg.guard_alpha, agent, best_path, history)

    def checkpoint(step: int, path: Path = ckpt_path) -> None:
        atomic_save(
            {
                "format": FORMAT,
                "env_id": env_id,
                "env_kwargs": json.dumps(env_kwargs),
                "bridge": cfg.bridge,
                "bridge_Ta": bridge_Ta,
                "residual_max_log_std": max_log_std,
                "obs_layout": layout.to_json(),
                "obs_scaling": scaling_state,
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
        success, then shortest cycle time, then highest return: tasks without a success signal, such as
        locomotion, are ranked by return); the final one uses seed 0, the default of `robolearn eval`,
        so evaluating best.pt there is not biased by the selection."""
        t0 = time.perf_counter()
        actor.eval()
        # a fresh copy: the training rollout's history and held chunk must not be reset mid-episode
        res = evaluate_actor(pol.fresh(), env_id, env_kwargs, cfg.eval_episodes, seed=0 if final else 1)
        actor.train()
        if not final:
            key = (res["success_rate"], -(res["cycle_time_steps"] or float("inf")), res["return_mean"])
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
    updates0 = agent.step
    t_start = time.perf_counter()
    initial = None
    if cfg.eval_initial and start == 0:
        initial = run_eval(0)
    bar = tqdm(total=cfg.steps, initial=start, desc=f"finetune {cfg.bridge}", unit="step", mininterval=1.0)
    step, need_reset, s = start, True, None
    ep_ret, ep_len, ep_succ = 0.0, 0, False
    iv_counts = history.setdefault("interventions", iv_counts)
    if human is not None:
        human.counts = iv_counts
    recent: list[float] = []
    info: dict = {}
    last_eval = history["eval"][-1]["success_rate"] if history["eval"] else None
    interrupted = False
    remote = None
    if cfg.actors:  # Ray actors step their own envs with the latest weights (robolearn.scale.actors)
        from robolearn.scale.actors import RemoteCollector

        spec = {
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "low": low,
            "high": high,
            "layout": layout.to_json(),
            "obs_scaling": scaling_state,
            "bridge": cfg.bridge,
            "bridge_Ta": bridge_Ta,
            "max_log_std": max_log_std,
            "bc_state": policy_state(bc) if bc is not None else None,
            "obs_dim": obs_dim,
            "da": da,
            "hidden": list(cfg.hidden),
            "residual_scale": cfg.residual_scale,
            "init_log_std": init_log_std,
            "seed": cfg.seed,
        }
        remote = RemoteCollector(spec, cfg.actors, cfg.pull_every, episodes, cfg.address)
    try:
        with interruptible():
            while step < cfg.steps:
                if remote is not None:  # actors=N: transitions stream in from the Ray actors
                    t0 = time.perf_counter()
                    s, a, r, s2, term, trunc, ep = remote.next(actor, step < starts and cfg.bridge == "none")
                    online.add(s, a, r, s2, term, trunc)
                    timing["env"] += time.perf_counter() - t0  # waiting for the actors
                    if ep is not None:
                        ep_ret, ep_len, ep_succ = ep
                else:
                    if need_reset:
                        obs, _ = env.reset(
                            seed=finetune_seed(cfg.seed, episodes)
                        )  # the fine-tuning seed range
                        pol.reset()
                        if human is not None:
                            human.reset()
                        s = pol.observe(obs)
                        ep_ret, ep_len, ep_succ, need_reset = 0.0, 0, False, False
                    t0 = time.perf_counter()
                    if step < starts and cfg.bridge == "none":
                        a = rng.uniform(-1.0, 1.0, da).astype(np.float32)
                    else:
                        a = pol.act_unit(s, deterministic=False)
                    # the human in the loop (if any) sees the policy's action and may take over
                    a, iv = human.act(step, obs, a) if human is not None else (a, False)
                    t1 = time.perf_counter()
                    obs, r, term, trunc, einfo = env.step(from_unit(a, low, high))
                    t2 = time.perf_counter()
                    s2 = pol.observe(obs)  # TRAP: the true final observation is s' (reset comes after)
                    online.add(s, a, r, s2, term, trunc)
                    if human is not None:
                        human.after(iv, demo_buf, (s, a, r, s2, term), episodes, step)
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
                    if human is not None:
                        human.end_episode(writer, step, ep_len)
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
                    guard.after_eval(step, last_eval := run_eval(step)["success_rate"])
                if step % cfg.ckpt_every == 0:
                    checkpoint(step)
                bar.update(1)
                bar.set_postfix(
                    ep=episodes,
                    **({"iv": iv_counts["steps"]} if human is not None else {}),
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
        if remote is not None:
            remote.close()
        if human is not None:
            human.close()
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
        "precision": precision,
        "temperature": {"learned": autotune, "initial": init_alpha, "final": agent.alpha, **guard.record()},
        "td_target_bounds": list(bounds) if bounds else None,
        **res,
        "initial": None
        if initial is None
        else {k: initial[k] for k in ("success_rate", "success_ci", "return_mean", "cycle_time_steps")},
        "history": history["eval"],
        "best_checkpoint": str(best_path) if best["step"] is not None else None,
        "best_step": best["step"],
        **demo_info,
        **({"interventions": {"mode": cfg.intervention, **iv_counts}} if cfg.intervention else {}),
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
        "updates_per_s": (agent.step - updates0) / max(busy, 1e-9),
        "precision": precision,
        "actors": cfg.actors,
        "intervention_steps": iv_counts["steps"] if cfg.intervention else None,
        "actor_restarts": remote.restarts if remote is not None else 0,
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


__all__ = [
    "FinetuneConfig",
    "finetune",
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
