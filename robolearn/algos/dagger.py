"""DAgger and interventions: `robolearn dagger mode=expert|intervention|auto policy=<ckpt> ...`.

Behaviour cloning drifts off the demonstrations (compounding errors). Each round here:

1. roll out the current learner (with an oracle watching) for `episodes_per_round` episodes;
2. label the visited states, in one of three ways:
   - `mode=expert` — DAgger (Ross et al. 2011): execute a beta-mixture of expert and learner
     (beta_i = beta * beta_decay**i: the expert's action with probability beta_i, per step), and label EVERY
     visited state with the expert's action. Default beta=1: round 1 is the expert's own rollouts (more
     demos), round 2 a per-step 50/50 mixture. From a weak BC that beats beta=0.5 (PegInsert, 6 demos, 2 x 4
     episodes, normaliser refitted, rollout seeds 0-3: 58 / 36 / 42 / 68% with 620-748 labels against
     44 / 64 / 40 / 54% with 807-933): a learner that fails every episode spends 100 labels per episode on
     states off the path. Stored with source="dagger"; `actions` holds the expert's
     labels, `policy_actions` the learner's proposals, `interventions` where the expert's action was run.
   - `mode=intervention` — HG-DAgger (Kelly et al. 2019): the learner drives; a human (teleop=<device>,
     hold the take-over key) or a scripted "human" (the expert takes over once the learner's action strays
     more than `threshold` from the expert's, and hands back after `hold` steps back within it) takes
     control. Stored with source="intervention"; `actions` are the executed actions, `interventions` marks
     the human's steps. Only intervention steps count as expert labels.
   - `mode=auto` — ask only where the learner is unsure: `samples` actions are drawn from the (stochastic)
     head; where their spread (mean per-dim std, in normalised units) exceeds `uncertainty`, the expert is
     queried and its action executed and stored as an intervention. Labels are spent only there.
   Chunk labels (a learner that predicts Tp>1 actions): with `chunk_labels=rollout` (default) the target
   chunk of a labelled step t is a plan the expert would execute: the expert's own Tp-step rollout from
   the saved simulator state s_t, run in a scratch env (a second env of the same id/kwargs, set_state, a
   reset expert; the learner's env is never touched), padded with its last action where the episode would
   end first. `chunk_labels=visited` keeps the old target: the per-step labels at s_t..s_{t+Tp-1}, the states
   the LEARNER visited (no plan anyone executed). The labels live in `round_<i>/chunk_labels.hdf5` (keyed
   by the round's demo names, recomputed from the stored states) and `aggregate.chunk_labels.hdf5` (keyed
   by the aggregate's demo names), the sidecar the BC dataset reads (`WindowDataset(chunk_labels=...)`).
   `drop_hopeless=true`: every `hopeless_every` steps the scratch expert plays the episode out from the
   current state; if even it fails, the episode stops there (counted as `hopeless_dropped`).
   `drop_stalled` (default on for mode=expert with a scripted expert): the same check also measures the
   expert's steps-to-success from the current state; where it shrank by less than `stall_progress` (0.5) x the
   steps taken since the last check, the learner is stuck and its further labels would repeat the same
   correction, so the episode stops there (`stalled_dropped`; `on_stall=takeover` lets the expert finish it,
   labelled, instead). Measured on PegInsert (the learner hovers above the hole, 1-1.5 mm off the 0.8 mm the
   expert waits for, and spent up to 70 labels per episode there): the same success with 26-37% fewer
   labels; on ReachAround it never fires. Off for HG-DAgger, where it cut the episodes before the takeovers.
   mode=expert resets the learner's chunk whenever control changes hands (no stale plan is resumed).
3. aggregate: the round's episodes are recorded into `out/round_<i>/episodes.hdf5`, then appended to
   `out/aggregate.hdf5` (a copy of `data`; the user's file is never modified);
4. retrain BC on the aggregate (from scratch, or `retrain=finetune` from the current weights) and evaluate.
   A retrain from scratch refits the normaliser on the aggregate (`refit_normalizer=false` keeps the initial
   BC checkpoint's; `retrain=finetune` keeps it by default, since its weights were trained on it). Measured
   on PegInsert from a 6-demo BC (MSE, 2 rounds x 4 episodes, 4 rollout seeds, 50 held-out episodes each):
   refit 0.58 / 0.36 / 0.42 / 0.68 against keep 0.24 / 0.40 / 0.16 / 0.46 (README, "DAgger and interventions"). A few demos give narrow ranges,
   and the learner's states then sit far outside them; that costs more than the resolution a tumbled peg
   takes from a refitted range.
   Training on intervention episodes up-weights intervention steps (`intervention_weight`) and can drop
   the learner's steps that led into a takeover (`drop_before_intervention`), see `robolearn.algos.bc`;
   with `takeovers_only=true` (default) HG-DAgger trains on the takeovers and the demos only.

`results.json` logs success rate against the number of expert labels after every round.

Interrupts and reruns: `dagger_state.json` (written atomically after each finished round) says which rounds
are done and which inputs (sha256 of `policy` and `data`, mode) the run belongs to; a rerun in the same
`out=` continues an interrupted round (its finished episodes are kept, its BC run resumes from its
checkpoint) and never appends an episode twice; a rerun with other inputs is refused. An interrupted run
exits 130/143 and writes no results.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from robolearn.algos.bc import TrainConfig, TrainLoopConfig, atomic_save, train
from robolearn.config import TELEOP_DEVICES, ConfigError, choice, existing_file, in_range, opt, positive
from robolearn.data.store import Episode, EpisodeBuilder, EpisodeWriter, iter_episodes, read_info
from robolearn.envutil import get_state, make_env
from robolearn.fileutil import file_digest, write_json_atomic
from robolearn.policies import ActionChunker, ObsHistory, PolicyConfig, load_policy
from robolearn.policies.checkpoint import FORMAT, read_checkpoint
from robolearn.signals import Interrupted, interruptible, stop_point

log = logging.getLogger(__name__)
MODES = ("expert", "intervention", "auto")
CHUNK_LABELS = ("rollout", "visited")


@dataclass
class DaggerConfig:
    policy: str = opt("", "BC checkpoint to start from (checkpoints/last.pt of a `robolearn train` run)")
    data: str = opt("", "the demos it was trained on; new episodes are aggregated onto a copy in out/")
    env: str | None = opt(None, "task (default: the checkpoint's)")
    out: str = opt("runs/dagger", "run folder: aggregate.hdf5, round_<i>/ BC runs, results.json")
    mode: str = opt("expert", f"who labels: {MODES}")
    expert: str = opt(
        "scripted",
        "the oracle: scripted (the task's expert) | a trained agent's checkpoint (.pt), e.g. a SAC agent on "
        "Hopper-v5 (it acts from the observation, with its mean action; no expert rollouts from saved states)",
    )
    teleop: str | None = opt(None, "mode=intervention with a person: keyboard | gamepad | spacemouse")
    rounds: int = opt(5, "DAgger rounds")
    episodes_per_round: int = opt(20, "learner episodes per round")
    beta: float = opt(
        1.0, "mode=expert: probability of executing the expert's action in round 1 (see the module docstring)"
    )
    beta_decay: float = opt(0.5, "mode=expert: beta_i = beta * beta_decay**i")
    expert_noise: float = opt(
        0.0,
        "mode=expert: std of Gaussian noise added to the expert's action when it drives (action units); the "
        "label stays the noise-free action, so its steps show recoveries from small errors (DART)",
    )
    threshold: float = opt(
        0.5, "mode=intervention (scripted human): take over when |a_learner - a_expert|_inf > this"
    )
    hold: int = opt(5, "mode=intervention: steps the scripted human keeps control once in agreement again")
    uncertainty: float = opt(0.15, "mode=auto: query the expert when sampled actions' std exceeds this")
    samples: int = opt(8, "mode=auto: actions sampled to measure the learner's uncertainty")
    retrain: str = opt(
        "scratch", "after each round: scratch (retrain) | finetune (continue from current weights)"
    )
    intervention_weight: float = opt(2.0, "BC sampling weight of intervention steps")
    drop_before_intervention: int = opt(0, "drop the N learner steps that led into each takeover")
    eval_episodes: int = opt(20, "evaluation episodes after each round")
    chunk_labels: str = opt(
        "rollout",
        "chunk targets (Tp>1) of labelled steps: rollout (the expert's own Tp-step plan from the saved state) | "
        "visited (the per-step labels at the states the learner visited next)",
    )
    refit_normalizer: bool | None = opt(
        None,
        "retrains fit the normaliser on the aggregate; None = yes with retrain=scratch, no with retrain=finetune "
        "(those weights were trained on the old normaliser)",
    )
    takeovers_only: bool = opt(
        True, "mode=intervention: train on the takeovers + demos only (the learner's own steps weigh 0)"
    )
    drop_hopeless: bool = opt(
        False, "stop an episode (and its labels) once the expert itself fails from the current state"
    )
    drop_stalled: bool | None = opt(
        None,
        "also stop an episode (and its labels) once the learner makes no progress: the expert's steps-to-success "
        "from the current state shrank by less than stall_progress x the steps taken since the last check "
        "(None: on for mode=expert with a scripted expert; HG-DAgger lost the takeovers it would have had)",
    )
    stall_progress: float = opt(0.5, "drop_stalled: least progress per step (the expert itself makes 1.0)")
    on_stall: str = opt(
        "stop",
        "drop_stalled, mode=expert: stop the episode there, or takeover: the expert drives the rest of it "
        "(labelled: a recovery demonstration from the learner's own stall)",
    )
    hopeless_every: int = opt(10, "drop_hopeless / drop_stalled: check every this many steps")
    seed: int = opt(0, "rollout seed base")
    train: TrainLoopConfig = field(default_factory=lambda: TrainLoopConfig(steps=1000, eval_episodes=0))

    def __post_init__(self):
        existing_file(
            "policy", self.policy, "Train one with `robolearn train ... out=DIR` (DIR/checkpoints/last.pt)."
        )
        existing_file("data", self.data, "Pass the demos the policy was trained on.")
        choice("mode", self.mode, MODES)
        if self.expert != "scripted":
            existing_file(
                "expert",
                self.expert,
                "expert=scripted, or a trained agent's checkpoints/last.pt (a .pt file).",
            )
            wants = [k for k in ("drop_hopeless", "drop_stalled") if getattr(self, k)]
            if wants:
                raise ConfigError(
                    f"{'/'.join(wants)}=true replays the expert from saved simulator states, which needs "
                    f"expert=scripted (expert={self.expert!r} is a checkpoint). Fix: drop the option"
                )
            self.drop_stalled = False
        elif self.drop_stalled is None:  # measured: README "DAgger and interventions"
            self.drop_stalled = self.mode == "expert"
        if self.teleop is not None:
            choice("teleop", self.teleop, TELEOP_DEVICES)
            if self.mode != "intervention":
                raise ConfigError(f"teleop={self.teleop!r} needs mode=intervention (got mode={self.mode!r})")
        choice("retrain", self.retrain, ("scratch", "finetune"))
        choice("chunk_labels", self.chunk_labels, CHUNK_LABELS)
        choice("on_stall", self.on_stall, ("stop", "takeover"))
        if self.on_stall == "takeover" and not (self.mode == "expert" and self.drop_stalled):
            raise ConfigError(
                f"on_stall=takeover acts on drop_stalled in mode=expert (got mode={self.mode!r}, "
                f"drop_stalled={self.drop_stalled}). Fix: mode=expert drop_stalled=true, or on_stall=stop"
            )
        positive("hopeless_every", self.hopeless_every)
        in_range("stall_progress", self.stall_progress, 0.0, 1.0)
        positive("rounds", self.rounds)
        positive("episodes_per_round", self.episodes_per_round)
        in_range("beta", self.beta, 0.0, 1.0)
        in_range("beta_decay", self.beta_decay, 0.0, 1.0)
        positive("expert_noise", self.expert_noise, zero_ok=True)
        positive("threshold", self.threshold)
        positive("hold", self.hold, zero_ok=True)
        positive("uncertainty", self.uncertainty)
        positive("samples", self.samples)
        positive("eval_episodes", self.eval_episodes, zero_ok=True)
        positive("intervention_weight", self.intervention_weight, zero_ok=True)
        positive("drop_before_intervention", self.drop_before_intervention, zero_ok=True)
        self.train.check("train.")


# --------------------------------------------------------------------------------------------- overrides
class ScriptedHuman:
    """A stand-in for a person at the take-over key: the expert grabs control when the learner's action
    strays beyond `threshold` (inf-norm) from its own, and hands back after `hold` agreeing steps."""

    def __init__(self, expert, threshold: float, hold: int):
        self.expert, self.threshold, self.hold = expert, threshold, hold
        self.reset()

    def reset(self):
        self.active, self.calm = False, 0

    def decide(self, obs, policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        a = np.asarray(self.expert.act(obs), np.float32)
        far = float(np.max(np.abs(a - policy_action))) > self.threshold
        if far:
            self.active, self.calm = True, 0
        elif self.active:
            self.calm += 1
            if self.calm > self.hold:
                self.active = False
        return (a, True) if self.active else (policy_action, False)


class StallHuman:
    """A stand-in for a person who watches for trouble rather than for every small disagreement (HIL-SERL's
    operators step in when the robot is stuck or about to fail): every `every` steps it plays the expert out
    from the current simulator state in a scratch env (`Scratch`); when the expert's steps-to-success shrank by
    less than `progress` x the steps since the last look, the expert takes over for `hold` steps, then hands
    back and looks again. Where even the expert would fail from here it does not step in. `expert` acts in
    `env`, the env the policy runs in."""

    def __init__(self, env, expert, scratch: Scratch, every: int, progress: float, hold: int):
        self.env, self.expert, self.scratch = env, expert, scratch
        self.every, self.progress, self.hold = every, progress, hold
        self.reset()

    def reset(self):
        self.t, self.to_go, self.left = 0, None, 0

    def decide(self, obs, policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        t, self.t = self.t, self.t + 1
        if self.left == 0 and t % self.every == 0:
            plan, ok = self.scratch.rollout(get_state(self.env), t, None)
            stuck = self.to_go is not None and len(plan) > self.to_go - self.progress * self.every
            self.to_go = len(plan) if ok else None
            if ok and stuck:
                self.left, self.to_go = self.hold, None  # a new baseline once it hands back
        if self.left > 0:
            self.left -= 1
            return np.asarray(self.expert.act(obs), np.float32), True
        return policy_action, False


# --------------------------------------------------------------------------------------------- rollouts
def _to_np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


class Scratch:
    """A second env of the same id/kwargs plus a fresh expert, to roll the expert out from a saved state
    without touching the env the learner runs in (the experts hold no hidden state, so `reset` is enough).
    Steps the unwrapped env: the episode's step limit is `max_steps` from the saved step on."""

    def __init__(self, env_id: str, env_kwargs: dict, expert_kind: str, seed: int):
        from robolearn.recording import make_expert

        self.env = make_env(env_id, **env_kwargs)
        self.u = self.env.unwrapped
        self.expert = make_expert(self.env, expert_kind, seed=seed)
        self.max_steps = self.env.spec.max_episode_steps if self.env.spec is not None else None

    def rollout(self, state, t: int, n: int | None) -> tuple[np.ndarray, bool]:
        """The expert's actions for up to `n` steps (None: to the episode's end) from `state`, the state at
        step `t` of an episode; stops where the episode would end. Returns (actions (k, Da), success)."""
        self.u.set_state(state)
        self.expert.reset()
        left = None if self.max_steps is None else self.max_steps - t
        n = left if n is None else (n if left is None else min(n, left))
        acts, ok = [], False
        while n is None or len(acts) < n:
            a = np.asarray(self.expert.act(None), np.float32)
            acts.append(a)
            _, _, term, trunc, info = self.u.step(a)
            ok = bool(info.get("is_success", False))
            if term or trunc or (n is None and len(acts) >= 10_000):
                break
        return np.stack(acts), ok

    def chunk_labels(
        self, states: np.ndarray, labels: np.ndarray, labelled: np.ndarray, Tp: int
    ) -> np.ndarray:
        """(T, Tp, Da): at labelled steps the expert's Tp-step rollout from the saved state, elsewhere the
        shifted per-step labels; both padded with their last action where the episode ends first."""
        T = len(labels)
        idx = np.minimum(np.arange(T)[:, None] + np.arange(Tp), T - 1)
        out = labels[idx].astype(np.float32)
        for t in np.flatnonzero(labelled):
            a, _ = self.rollout(states[t], int(t), Tp)
            out[t, : len(a)] = a
            out[t, len(a) :] = a[-1]
        return out

    def close(self):
        self.env.close()


def collect_round(
    policy,
    env,
    expert,
    cfg: DaggerConfig,
    rnd: int,
    writer: EpisodeWriter,
    human=None,
    start_ep: int = 0,
    scratch: Scratch | None = None,
) -> dict:
    """Roll out learner episodes `start_ep..episodes_per_round-1` with the oracle; append them to `writer`
    (each episode's attrs hold its `labels` count, so an interrupted round continues where it stopped)."""
    from robolearn.seeds import dagger_seed

    To, Ta = policy.spec["To"], policy.spec.get("Ta", 1)
    beta = cfg.beta * cfg.beta_decay**rnd
    rng = np.random.default_rng(cfg.seed * 7919 + rnd)
    gen = torch.Generator().manual_seed(cfg.seed * 31 + rnd)
    override = human if human is not None else ScriptedHuman(expert, cfg.threshold, cfg.hold)
    labels, steps, successes = 0, 0, 0
    source = "dagger" if cfg.mode == "expert" else "intervention"
    low, high = env.action_space.low, env.action_space.high
    for ep in range(start_ep, cfg.episodes_per_round):
        ep_labels = labels
        seed = dagger_seed(cfg.seed, rnd, ep)  # the DAgger range: disjoint from eval and demo seeds
        obs, info = env.reset(seed=seed)
        expert.reset(seed=seed)
        override.reset()
        hist, chunker = ObsHistory(To), ActionChunker(Ta)
        h = hist.push({k: v[None] for k, v in obs.items()})
        b = EpisodeBuilder(obs, get_state(env))
        hopeless, stalled, was_expert, to_go, taken = False, False, False, None, False
        while True:
            stop_point()
            watch = cfg.drop_hopeless or cfg.drop_stalled
            if watch and not taken and scratch is not None and len(b) and len(b) % cfg.hopeless_every == 0:
                plan, ok = scratch.rollout(get_state(env), len(b), None)
                if not ok:
                    hopeless = True  # the expert cannot succeed from here: label no further
                    break
                if cfg.drop_stalled and to_go is not None:
                    if len(plan) > to_go - cfg.stall_progress * cfg.hopeless_every:
                        stalled = True  # the learner is not getting closer: its labels would repeat
                        if cfg.on_stall == "takeover" and cfg.mode == "expert":
                            taken = True  # the expert shows the way out of the learner's own stall
                        else:
                            break
                to_go = len(plan)
            if cfg.mode == "expert":
                use_expert = taken or rng.random() < beta
                if use_expert != was_expert:
                    chunker.reset()  # control changes hands: the learner never resumes a stale plan
                was_expert = use_expert
            a_pol = _to_np(chunker.act(policy, h, generator=gen))[0].astype(np.float32)
            if cfg.mode == "expert":
                a_exp = np.asarray(expert.act(obs), np.float32)
                executed, label, iv = (a_exp if use_expert else a_pol), a_exp, use_expert
                if use_expert and cfg.expert_noise > 0:
                    jitter = rng.normal(0.0, cfg.expert_noise, a_exp.shape)
                    executed = np.clip(a_exp + jitter, low, high).astype(np.float32)
                labels += 1
            elif cfg.mode == "intervention":
                executed, iv = override.decide(obs, a_pol)
                label = executed
                labels += int(iv)
            else:  # auto: query only where the learner is unsure
                hb = {k: np.repeat(v, cfg.samples, 0) for k, v in h.items()}
                s = policy.act(hb, generator=gen)[:, 0]  # (samples, Da)
                spread = float(policy.normalizer.normalize("action", s).std(0).mean())
                iv = spread > cfg.uncertainty
                executed = np.asarray(expert.act(obs), np.float32) if iv else a_pol
                label = executed
                labels += int(iv)
                if iv:
                    chunker.reset()  # the plan no longer matches the executed action
            obs, r, term, trunc, info = env.step(executed)
            b.add(label, obs, r, term, get_state(env), intervention=iv, policy_action=a_pol)
            h = hist.push({k: v[None] for k, v in obs.items()})
            if human is not None and hasattr(human, "render"):
                human.render(env.render(), f"round {rnd} ep {ep} step {len(b)}")
            if term or trunc:
                break
        success = bool(info.get("is_success", False))
        successes += success
        steps += len(b)
        extra = {"hopeless": True} if hopeless else {"stalled": True} if stalled else {}
        writer.append(
            b.finish(
                source,
                success=success,
                seed=seed,
                mode=cfg.mode,
                round=rnd,
                labels=labels - ep_labels,
                **extra,
            )
        )
    return {"round_labels": labels, "steps": steps, "rollout_success": successes / cfg.episodes_per_round}


def _round_stats(info) -> dict:
    """A finished round's label/step/success counts, from its episode file (also after a resumed round)."""
    ea = [info.episode_attrs[d] for d in info.demos]
    return {
        "round_labels": int(sum(int(a.get("labels", 0)) for a in ea)),
        "steps": int(sum(info.lengths.values())),
        "rollout_success": float(np.mean([bool(a.get("success")) for a in ea])),
        "hopeless_dropped": int(sum(bool(a.get("hopeless", False)) for a in ea)),
        "stalled_dropped": int(sum(bool(a.get("stalled", False)) for a in ea)),
    }


def _round_chunk_labels(round_file: Path, scratch: Scratch, Tp: int) -> Path:
    """round_<i>/chunk_labels.hdf5: the expert-rollout chunk labels of the round's episodes, keyed by their
    demo name (recomputed from the saved states, so an interrupted round needs no bookkeeping)."""
    import h5py

    path = round_file.with_name("chunk_labels.hdf5")
    have = set(read_info(round_file).demos)
    if path.exists():
        with h5py.File(path, "r") as f:
            if set(f) == have and all(f[d].shape[1] == Tp for d in f):
                return path
    tmp = path.with_name(".chunk_labels.hdf5.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["Tp"] = Tp
        for name, e in iter_episodes(round_file):
            iv = e.get("interventions")
            mode = str(e["attrs"].get("mode", "expert"))
            labelled = np.ones(len(e["actions"]), bool) if mode == "expert" or iv is None else iv.astype(bool)
            f.create_dataset(name, data=scratch.chunk_labels(e["states"], e["actions"], labelled, Tp))
            f.attrs[f"seed_{name}"] = int(e["attrs"].get("seed", -1))
    tmp.replace(path)
    return path


def _aggregate_chunk_labels(agg: Path, out: Path) -> None:
    """<aggregate>.chunk_labels.hdf5 (read by the BC dataset): each aggregated DAgger episode's chunk labels,
    found by (round, seed) in round_<r+1>/chunk_labels.hdf5. Rebuilt whole each round (atomically)."""
    import h5py

    from robolearn.data.dataset import chunk_labels_path

    info = read_info(agg)
    tmp = out / ".aggregate.chunk_labels.hdf5.tmp"
    with h5py.File(tmp, "w") as dst:
        for r in sorted({int(a.get("round", -1)) for a in info.episode_attrs.values()} - {-1}):
            src_path = out / f"round_{r + 1}" / "chunk_labels.hdf5"
            if not src_path.exists():
                continue
            with h5py.File(src_path, "r") as src:
                by_seed = {int(src.attrs[f"seed_{n}"]): n for n in src}
                for d, a in info.episode_attrs.items():
                    if int(a.get("round", -1)) == r and int(a.get("seed", -1)) in by_seed:
                        dst.create_dataset(d, data=src[by_seed[int(a["seed"])]][()])
    tmp.replace(chunk_labels_path(agg))


def _aggregate_round(agg: Path, round_file: Path, rnd: int, env_id: str, env_kwargs: dict, env) -> None:
    """Append round `rnd`'s episodes to the aggregate, skipping any already there (a rerun after a kill
    between appending and saving the state must not duplicate them)."""
    info = read_info(agg)
    have = {int(a.get("seed", -1)) for a in info.episode_attrs.values() if int(a.get("round", -1)) == rnd}
    todo = [(n, e) for n, e in iter_episodes(round_file) if int(e["attrs"].get("seed", -1)) not in have]
    if not todo:
        return
    w = EpisodeWriter(agg, env_id, env_kwargs, env.observation_space, env.action_space)
    try:
        for _, e in todo:
            w.append(Episode.from_stored(e, default_source="dagger"))
    finally:
        if hasattr(w, "close"):
            w.close()


# --------------------------------------------------------------------------------------------- the loop
def run_dagger(cfg: DaggerConfig) -> dict:
    from robolearn.eval.runner import evaluate_policy
    from robolearn.recording import make_expert

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ck = read_checkpoint(cfg.policy, (FORMAT,), field="policy")
    policy = load_policy(cfg.policy)
    data_info = read_info(cfg.data)
    env_id = cfg.env or ck.get("env_id") or data_info.env_id
    env_kwargs = json.loads(ck.get("env_kwargs", "{}")) or data_info.env_kwargs
    tc = ck.get("train_config", {})
    pcfg = PolicyConfig.from_dict(json.loads(ck["config"]) if isinstance(ck["config"], str) else ck["config"])
    Tp = int(tc.get("Tp", policy.spec["Tp"]))
    if cfg.chunk_labels == "rollout" and Tp > 1 and cfg.expert != "scripted":
        raise ConfigError(
            f"the policy predicts Tp={Tp}-step chunks and chunk_labels=rollout labels them with the expert's own "
            f"plan from saved simulator states, which needs expert=scripted (expert={cfg.expert!r} is a "
            "checkpoint). Fix: chunk_labels=visited, or a policy trained with Tp=1"
        )
    agg = out / "aggregate.hdf5"
    state_path = out / "dagger_state.json"
    inputs = {
        "policy": file_digest(Path(cfg.policy)),
        "data": file_digest(Path(cfg.data)),
        "mode": cfg.mode,
        "episodes_per_round": cfg.episodes_per_round,
        "seed": cfg.seed,
        "chunk_labels": cfg.chunk_labels,
        "drop_hopeless": cfg.drop_hopeless,
    }
    if cfg.drop_stalled:  # only when on, as runs from before the option had it off
        inputs["drop_stalled"] = True
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state is not None and state.get("inputs") != inputs:
        old = state.get("inputs") or {}
        diff = [k for k in inputs if old.get(k) != inputs[k]]
        raise ConfigError(
            f"out={cfg.out!r} holds a DAgger run with other inputs ({', '.join(diff) or 'unknown'} differ: policy/data "
            "are compared by content). Fix: out=<a new folder> for this run, or delete the old one"
        )
    (out / "results.json").unlink(missing_ok=True)  # written again only when every round is done
    if state is None:
        tmp = out / ".aggregate.hdf5.tmp"
        shutil.copyfile(cfg.data, tmp)  # the user's demos stay untouched
        tmp.replace(agg)
        demo_steps = sum(data_info.lengths.values())
        state = {"round": 0, "labels": demo_steps, "history": [], "policy": cfg.policy, "inputs": inputs}
    else:
        policy = load_policy(state["policy"])
        log.info("resuming DAgger at round %d", state["round"])
    env = make_env(env_id, render_mode="rgb_array" if cfg.teleop else None, **env_kwargs)
    expert = make_expert(env, cfg.expert, seed=cfg.seed)
    rollout_chunks = cfg.chunk_labels == "rollout" and Tp > 1
    refit = cfg.refit_normalizer if cfg.refit_normalizer is not None else cfg.retrain == "scratch"
    scratch = (
        Scratch(env_id, env_kwargs, cfg.expert, cfg.seed)
        if rollout_chunks or cfg.drop_hopeless or cfg.drop_stalled
        else None
    )
    if not rollout_chunks:
        from robolearn.data.dataset import chunk_labels_path

        chunk_labels_path(agg).unlink(missing_ok=True)  # visited: the shifted per-step labels
    human = None
    if cfg.teleop:
        from robolearn.teleop.app import HumanOverride

        human = HumanOverride(env, device=cfg.teleop)

    def evaluate(p, label: str) -> dict:
        r = evaluate_policy(p, env_id, env_kwargs, episodes=cfg.eval_episodes, seed=0, Ta=p.spec.get("Ta"))
        log.info("%s: success %.2f", label, r["success_rate"])
        return r

    if not state["history"] and cfg.eval_episodes:
        r0 = evaluate(policy, "round 0 (BC)")
        state["history"].append(
            {
                "round": 0,
                "labels": state["labels"],
                "success_rate": r0["success_rate"],
                "success_ci": r0["success_ci"],
                "cycle_time_steps": r0.get("cycle_time_steps"),
            }
        )
    with interruptible(deferred=True):
        for rnd in range(state["round"], cfg.rounds):
            run_dir = out / f"round_{rnd + 1}"
            round_file = run_dir / "episodes.hdf5"
            have = len(read_info(round_file).demos) if round_file.exists() else 0
            if have < cfg.episodes_per_round:  # a fresh round, or the rest of an interrupted one
                run_dir.mkdir(parents=True, exist_ok=True)
                writer = EpisodeWriter(
                    round_file, env_id, env_kwargs, env.observation_space, env.action_space
                )
                try:
                    collect_round(
                        policy, env, expert, cfg, rnd, writer, human, start_ep=have, scratch=scratch
                    )
                finally:
                    if hasattr(writer, "close"):
                        writer.close()
            stats = _round_stats(read_info(round_file))
            _aggregate_round(agg, round_file, rnd, env_id, env_kwargs, env)
            if rollout_chunks:
                _round_chunk_labels(round_file, scratch, Tp)
                _aggregate_chunk_labels(agg, out)
            train_dir = run_dir
            tcfg = TrainConfig(
                policy=pcfg,
                data=str(agg),
                out=str(train_dir),
                To=tc.get("To", policy.spec["To"]),
                Tp=tc.get("Tp", policy.spec["Tp"]),
                Ta=tc.get("Ta", policy.spec.get("Ta", 1)),
                obs_keys=tc.get("obs_keys"),
                intervention_weight=cfg.intervention_weight,
                drop_before_intervention=cfg.drop_before_intervention,
                policy_step_weight=0.0
                if cfg.mode == "auto" or (cfg.mode == "intervention" and cfg.takeovers_only)
                else 1.0,
                normalizer_from=None if refit else cfg.policy,
                init_from=state["policy"] if cfg.retrain == "finetune" else None,
                env=env_id,
                train=cfg.train,
                resume=(train_dir / "checkpoints" / "last.pt").exists(),
            )
            summary = train(tcfg)
            if summary.get("interrupted"):
                raise Interrupted(
                    summary.get("signal", 2), f"DAgger round {rnd + 1} interrupted while retraining"
                )
            stop_point()  # a Ctrl-C that arrived while retraining ends the run here
            new_policy = str(train_dir / "checkpoints" / "last.pt")
            policy = load_policy(new_policy)
            entry = {"round": rnd + 1, "labels": state["labels"] + stats["round_labels"], **stats}
            if cfg.eval_episodes:
                r = evaluate(policy, f"round {rnd + 1}")
                entry.update(
                    success_rate=r["success_rate"],
                    success_ci=r["success_ci"],
                    cycle_time_steps=r.get("cycle_time_steps"),
                )
            state["labels"] += stats["round_labels"]
            state["policy"] = new_policy
            state["history"].append(entry)
            state["round"] = rnd + 1
            write_json_atomic(state_path, state)  # a finished round is never redone
    env.close()
    if scratch is not None:
        scratch.close()
    final = state["history"][-1]
    results = {
        "mode": cfg.mode,
        "env": env_id,
        "rounds": cfg.rounds,
        "expert_labels": state["labels"],
        "success_rate": final.get("success_rate"),
        "success_ci": final.get("success_ci"),
        "cycle_time_steps": final.get("cycle_time_steps"),
        "policy": state["policy"],
        "aggregate": str(agg),
        "history": state["history"],
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }
    final_ck = torch.load(state["policy"], map_location="cpu", weights_only=True)
    atomic_save(final_ck, out / "checkpoints" / "last.pt")
    _plot_history(state["history"], out / "success_vs_labels.png", cfg.mode)
    write_json_atomic(out / "results.json", results)  # last: a results.json means every round is done
    return results


def _plot_history(history: list[dict], path: Path, mode: str) -> None:
    pts = [(h["labels"], h["success_rate"]) for h in history if h.get("success_rate") is not None]
    if not pts:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(*zip(*pts), marker="o", label=mode)
    ax.set_xlabel("expert-labelled steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
