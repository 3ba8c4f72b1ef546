"""Behaviour cloning: `robolearn train policy=<head> data=<file> out=<run dir>`.

The whole training procedure, top to bottom:

1. windows (obs history To, action chunk Tp) from the HDF5 store's train split; a normaliser fitted on
   them (its statistics are buffers inside the policy, so they travel in the checkpoint);
2. AdamW, linear warm-up then cosine decay, gradient clipping, an EMA copy of the weights;
3. every `val_every` steps the validation loss (mask/valid), every `eval_every` steps evaluation rollouts
   of the EMA policy in the env the data came from (success rate), TensorBoard scalars throughout;
4. an atomic checkpoint (`checkpoints/last.pt`) every `ckpt_every` steps and at the end, holding the
   runnable policy (weights, EMA weights, normaliser, config, spec) and the full training state
   (optimiser, scheduler, step, RNG) so `resume=true` continues the same run.

Runs unchanged under `torchrun --nproc_per_node=N` (DDP, gloo on CPU): each rank samples its own
batches, gradients are averaged, rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING
from torch import nn

from robolearn.config import ConfigError, choice, existing_file, in_range, opt, positive
from robolearn.data.normalizer import MODES as NORMALIZER_MODES
from robolearn.policies import HEADS, Policy, PolicyConfig, build_policy, policy_horizon, policy_state
from robolearn.policies.checkpoint import FORMAT, CheckpointError, load_state_into, read_checkpoint

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ config
PRECISIONS = ("float32", "bfloat16")


@dataclass
class TrainLoopConfig:
    steps: int = opt(2000, "gradient steps")
    batch_size: int = opt(256, "windows per gradient step (per process under torchrun)")
    lr: float = opt(1e-3, "peak AdamW learning rate")
    weight_decay: float = opt(1e-6, "AdamW weight decay")
    warmup_steps: int = opt(100, "linear warm-up steps, then cosine decay to 0")
    grad_clip: float = opt(1.0, "max gradient norm (0 = off)")
    ema_decay: float = opt(0.995, "EMA decay of the weights used for evaluation and act() (0 = off)")
    val_every: int = opt(250, "validation loss every N steps (0 = off)")
    eval_every: int = opt(0, "evaluation rollouts every N steps (0 = only at the end)")
    eval_episodes: int = opt(10, "episodes per evaluation (0 = no rollouts)")
    ckpt_every: int = opt(500, "checkpoint every N steps")
    log_every: int = opt(25, "TensorBoard scalars every N steps")
    seed: int = opt(0, "training seed (torch, numpy)")
    threads: int = opt(
        0,
        "torch intra-op threads (0 = chosen by robolearn.threads: 1 for networks < 5M params, else the free cores)",
    )
    precision: str = opt(
        "float32",
        "float32, or bfloat16 (autocast: bf16 convs/matmuls, fp32 weights and loss; ~1.7x faster for big U-Nets "
        "on CPUs with AVX512-BF16/AMX, no gain for small nets)",
    )

    def check(self, prefix: str = "train.") -> None:
        """Validate; `prefix` names the fields as the user typed them (train.steps, bc.steps, dagger.train.lr)."""
        for name in ("steps", "batch_size", "lr", "ckpt_every", "log_every"):
            positive(f"{prefix}{name}", getattr(self, name))
        for name in (
            "weight_decay",
            "warmup_steps",
            "grad_clip",
            "val_every",
            "eval_every",
            "eval_episodes",
            "threads",
        ):
            positive(f"{prefix}{name}", getattr(self, name), zero_ok=True)
        in_range(f"{prefix}ema_decay", self.ema_decay, 0.0, 0.99999)
        choice(f"{prefix}precision", self.precision, PRECISIONS)


@dataclass
class TrainConfig:
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"policy": "diffusion"}])
    # filled from the `policy` config group (policy=<head>); MISSING here so that each head's own config
    # replaces the node instead of being merged into another head's
    policy: PolicyConfig = MISSING
    data: str = opt("", "HDF5 episode store to learn from")
    out: str = opt("runs/bc", "run folder: checkpoints/last.pt, TensorBoard log, config.json (the resolved settings)")
    resume: bool = opt(False, "continue the run in out/ from checkpoints/last.pt")
    To: int | None = opt(None, "observation history length (default: the task's, see task_defaults, else 2)")
    Tp: int | None = opt(None, "predicted action chunk length (default: the head's, see policy_horizon)")
    Ta: int | None = opt(None, "actions executed per plan (receding horizon), <= Tp (default: the head's)")
    obs_keys: list[str] | None = opt(None, "observation keys to use (default: all in the file)")
    obs_normalizer: str | None = opt(
        None,
        "low-dim observation scaling: minmax (to [-1, 1], ranges floored) or meanstd (zero mean, unit std); "
        "actions always use minmax (default: the task's, else minmax)",
    )
    task_defaults: bool = opt(
        True,
        "fill the fields left unset (To, Tp/Ta, obs_keys, obs_normalizer, and the policy's encoder / head_cfg "
        "while they are at their defaults) from the data's task's measured settings (robolearn_envs.BC_DEFAULTS)",
    )
    sources: list[str] | None = opt(None, "keep only episodes with these sources (default: all)")
    success_only: bool = opt(False, "keep only successful episodes")
    intervention_weight: float = opt(1.0, "sampling weight of steps where a human/expert intervened")
    drop_before_intervention: int = opt(0, "drop the N policy steps before each intervention (led to it)")
    policy_step_weight: float = opt(
        1.0,
        "sampling weight of the learner's own (unlabelled) steps in "
        "source=intervention episodes (0 = learn only from the takeovers)",
    )
    init_from: str | None = opt(
        None, "initialise the weights from this checkpoint (fine-tune instead of scratch)"
    )
    normalizer_from: str | None = opt(
        None, "copy the normaliser statistics of this checkpoint instead of fitting them on the data"
    )
    env: str | None = opt(None, "env for evaluation rollouts (default: the one recorded in the data)")
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def __post_init__(self):
        existing_file("data", self.data, "Record one with `robolearn record ... out=FILE`.")
        if not self.out:
            raise ConfigError("out is required (e.g. out=runs/bc_lift)")
        choice("policy.head", self.policy.head, sorted(HEADS))
        if self.task_defaults:
            _apply_task_defaults(self)
        if self.To is None:
            self.To = 2
        if self.obs_normalizer is None:
            self.obs_normalizer = "minmax"
        positive("To", self.To)
        choice("obs_normalizer", self.obs_normalizer, NORMALIZER_MODES)
        Tp, Ta = policy_horizon(self.policy.head)
        if self.Tp is None:
            self.Tp = Tp
        if self.Ta is None:
            self.Ta = min(Ta, self.Tp)
        positive("Tp", self.Tp)
        positive("Ta", self.Ta)
        if self.Ta > self.Tp:
            raise ConfigError(f"Ta={self.Ta} must be <= Tp={self.Tp} (execute at most what was predicted)")
        positive("intervention_weight", self.intervention_weight, zero_ok=True)
        positive("drop_before_intervention", self.drop_before_intervention, zero_ok=True)
        positive("policy_step_weight", self.policy_step_weight, zero_ok=True)
        if self.init_from:
            existing_file("init_from", self.init_from)
        if self.normalizer_from:
            existing_file("normalizer_from", self.normalizer_from)
        self.train.check("train.")


def _apply_task_defaults(cfg: TrainConfig) -> None:
    """Fill cfg's unset fields from the data's task's BC_DEFAULTS (see TrainConfig.task_defaults)."""
    from robolearn_envs import BC_DEFAULTS

    from robolearn.data.store import read_info

    info = read_info(cfg.data)
    d = BC_DEFAULTS.get(cfg.env or info.env_id)
    if not d:
        return
    applied = []
    for name in ("To", "obs_normalizer"):
        if getattr(cfg, name) is None and name in d:
            setattr(cfg, name, d[name])
            applied.append(f"{name}={d[name]}")
    if cfg.Tp is None and cfg.Ta is None and "Tp" in d:
        cfg.Tp, cfg.Ta = d["Tp"], d["Ta"]
        applied.append(f"Tp={cfg.Tp} Ta={cfg.Ta}")
    keys = d.get("obs_keys")
    if cfg.obs_keys is None and keys:
        if set(keys) <= set(info.obs_keys):
            cfg.obs_keys = list(keys)
            applied.append(f"obs_keys={keys}")
        else:  # e.g. PushT-v1 data recorded before eef_in_block existed
            log.warning(
                "task default obs_keys=%s skipped: the data lacks %s (re-record it to use them)",
                keys,
                sorted(set(keys) - set(info.obs_keys)),
            )
    pc = cfg.policy
    enc = d.get("encoder")
    if enc and pc.encoder == type(pc.encoder)():
        pc.encoder = type(pc.encoder)(**{**asdict(pc.encoder), **enc})
        applied.append(f"policy.encoder={enc}")
    head = d.get("head_cfg", {}).get(pc.head)
    if head and pc.head_cfg == type(pc.head_cfg)():
        pc.head_cfg = type(pc.head_cfg)(**{**asdict(pc.head_cfg), **head})
        applied.append(f"policy.head_cfg={head}")
    if applied:
        log.info(
            "task defaults for %s (task_defaults=false turns them off): %s",
            cfg.env or info.env_id,
            ", ".join(applied),
        )


def register_policy_group(cs) -> None:
    """`policy=<head>` picks the head; `policy.head_cfg.<field>=...` tunes it (LeRobot-style per-policy configs)."""
    for name in HEADS:
        cs.store(group="policy", name=name, node=PolicyConfig(head=name))


# ------------------------------------------------------------------------------------------------ helpers
class _LossModule(nn.Module):
    """DDP wraps forward(); our policies expose loss(batch), so forward calls it."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(self, batch):
        return self.policy.loss(batch)


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # fused: one kernel over all parameters (the per-tensor loop was ~18% of a small U-Net's step on CPU)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float, step: int) -> None:
    # warm-up of the decay (as in diffusion_policy's EMAModel): early on the EMA follows the weights closely
    d = min(decay, (1 + step) / (10 + step))
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].lerp_(v, 1 - d)
        else:
            ema[k].copy_(v)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder); the last good one is intact."""


def _clean_stale_tmp(path: Path) -> None:
    """Remove temp files of checkpoint writes whose process is gone (a kill during torch.save)."""
    from robolearn.data.episodes import remove_stale_tmp

    remove_stale_tmp(path)


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temp file then rename: a crash never leaves a half-written checkpoint, and a failed
    write (disk full, read-only folder) removes its temp file and keeps the previous checkpoint."""
    import shutil

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointWriteError(
            e.errno,
            f"cannot create the checkpoint folder {path.parent}: {e.strerror}. Fix: out= a writable folder",
        ) from None
    _clean_stale_tmp(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (
        OSError,
        RuntimeError,
    ) as e:  # torch reports a full disk as RuntimeError("... unexpected pos ...")
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = -1
        old = path.stat().st_size if path.exists() else 0
        need = max(old, written)
        full = (isinstance(e, OSError) and e.errno == 28) or (0 <= free < max(need, 1 << 20))
        why = (
            f"no space left on the device (free {free / 1e6:.1f} MB, the checkpoint needs about "
            f"{max(need, written) / 1e6:.1f} MB)"
            if full
            else f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        )
        keep = f"the previous {path.name} is intact" if path.exists() else "no earlier checkpoint existed"
        raise CheckpointWriteError(
            28 if full else getattr(e, "errno", None) or 5,
            f"could not write the checkpoint {path}: {why}; {keep}. Fix: free space (or out= another disk), "
            "then rerun with resume=true",
        ) from None


def build_dataset(cfg: TrainConfig, split: str | None):
    from robolearn.data.dataset import WindowDataset
    from robolearn.data.store import read_info

    info = read_info(cfg.data)
    if split == "valid" and "valid" not in info.masks:
        return None
    ds = WindowDataset(
        cfg.data,
        To=cfg.To,
        Tp=cfg.Tp,
        split=split,
        sources=cfg.sources,
        success_only=cfg.success_only,
        obs_keys=cfg.obs_keys,
    )
    if split == "train":
        _intervention_weights(ds, cfg)
    return ds


def _intervention_weights(ds, cfg: TrainConfig) -> None:
    """Per-step sampling weights for episodes with source=intervention: the takeover steps weigh
    `intervention_weight`, the learner's own steps `policy_step_weight`, and the `drop_before_intervention`
    learner steps that led into each takeover 0. Other episodes (demos, DAgger labels) weigh 1."""
    iv = ds.interventions
    if iv is None or not iv.any():
        return
    src = np.repeat([str(ds.info.episode_attrs[d].get("source", "")) for d in ds.demos], ds.ends - ds.starts)
    in_iv_ep = src == "intervention"
    if not in_iv_ep.any():
        return
    w = np.ones(len(iv))
    w[in_iv_ep & iv] = cfg.intervention_weight
    w[in_iv_ep & ~iv] = cfg.policy_step_weight
    if cfg.drop_before_intervention:
        starts = np.flatnonzero(in_iv_ep & iv & ~np.r_[False, iv[:-1]])  # first step of each takeover
        for s in starts:
            lo = max(int(ds._ep_start[s]), s - cfg.drop_before_intervention)
            w[lo:s] = 0.0
    if w.sum() <= 0:
        raise ConfigError("every training step has weight 0 (policy_step_weight=0 and no interventions?)")
    ds.weights = w / w.sum()


def make_policy(cfg: TrainConfig, ds) -> Policy:
    from robolearn.data.normalizer import Normalizer

    spec = ds.spec()
    spec["Ta"] = cfg.Ta
    lowdim = {k: v for k, v in ds.obs.items() if v.dtype != np.uint8}
    modes = {"action": "minmax", **{k: cfg.obs_normalizer for k in lowdim}}
    norm = Normalizer.from_data({"action": ds.actions, **lowdim}, mode=modes)
    if cfg.normalizer_from:  # e.g. DAgger retrains: keep the initial demos' ranges
        ck = read_checkpoint(cfg.normalizer_from, (FORMAT,), field="normalizer_from")
        sd = {k[len("normalizer.") :]: v for k, v in ck["model"].items() if k.startswith("normalizer.")}
        load_state_into(norm, sd, f"normalizer_from={cfg.normalizer_from!r}")
    try:
        policy = Policy(spec, cfg.policy, norm)
    except ValueError as e:  # e.g. image observations that are not (H, W, 3) uint8
        raise ConfigError(f"data={cfg.data!r}: cannot build a {cfg.policy.head} policy for it: {e}") from None
    policy.fit_data(ds.actions)
    return policy


def _rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _to_plain(cfg) -> dict:
    return json.loads(
        json.dumps(asdict(cfg), default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    )


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite or exploded; the message gives the numbers and the fix."""


def _check_converged(first_losses: list[float], loss_ema: float | None, tc: TrainLoopConfig) -> None:
    """A run whose smoothed final loss is >1000x its first steps' (and large in absolute terms) diverged:
    say so instead of reporting success (train.lr=20 once ended at loss 3.5e31 with exit 0)."""
    if not first_losses or loss_ema is None:
        return
    start = float(min(first_losses[:5]))  # the loss before (almost) any update
    if loss_ema > 1e3 * max(abs(start), 1e-3) and loss_ema > 1e2:
        raise TrainingDiverged(
            f"training diverged: the loss rose from {start:.4g} (first steps) to {loss_ema:.4g} at the end; "
            f"the checkpoint holds the diverged weights. Fix: lower train.lr (now {tc.lr:g}) or train.grad_clip"
        )


def _check_resumable(ck: dict, cfg: TrainConfig, ckpt_path: Path) -> None:
    """resume=true with another head, horizon or obs keys cannot continue the run: say which field differs."""
    old = ck.get("train_config") or {}
    want = {"policy": cfg.policy.head, "To": cfg.To, "Tp": cfg.Tp, "obs_keys": cfg.obs_keys}
    have = {
        "policy": ck.get("head"),
        "To": old.get("To"),
        "Tp": old.get("Tp"),
        "obs_keys": old.get("obs_keys"),
    }
    diff = [
        f"{k}={want[k]!r} (the run has {have[k]!r})"
        for k in want
        if have[k] is not None and want[k] != have[k] and not (k == "obs_keys" and want[k] is None)
    ]
    if diff:
        raise CheckpointError(
            f"resume=true: {ckpt_path} was trained with other settings: {', '.join(diff)}. Fix: resume with the "
            "run's settings, or start a new run in another out="
        )


def _check_env_fits(
    env_id: str | None, env_kwargs: dict, spec: dict, tc: TrainLoopConfig, field: str
) -> None:
    """Before training: the evaluation env must take the policy's observations and actions (else the run
    would fail at its final evaluation, after all the training)."""
    if not env_id or tc.eval_episodes == 0:
        return
    from robolearn.envutil import make_env
    from robolearn.eval.runner import EvalError, check_compatible

    try:
        env = make_env(env_id, **env_kwargs)
    except Exception as e:  # noqa: BLE001 - gymnasium raises many kinds for an env it cannot build
        raise ConfigError(
            f"{field}={env_id!r} (used for evaluation) cannot be built: {e}. Fix: env=<task id>, "
            "or train.eval_episodes=0"
        ) from None
    try:
        check_compatible(spec, env.observation_space, env.action_space, env_id)
    except EvalError as e:
        raise ConfigError(
            f"{e}. Fix: train on data from that env, choose obs_keys=, or train.eval_episodes=0"
        ) from None
    finally:
        env.close()


# ------------------------------------------------------------------------------------------------ train
def train(cfg: TrainConfig) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from robolearn.data.store import read_info
    from robolearn.seeds import merge_checkpoint_fields, store_checkpoint_fields

    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if ddp:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        rank = dist.get_rank()
    tc = cfg.train
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    info = read_info(cfg.data)
    env_id = cfg.env or info.env_id
    env_kwargs = info.env_kwargs
    seed_fields = store_checkpoint_fields(info)  # train_seeds: `robolearn eval` refuses these env seeds

    ds = build_dataset(cfg, "train")
    val = build_dataset(cfg, "valid")
    torch.manual_seed(tc.seed)
    policy = make_policy(cfg, ds)
    from robolearn.threads import apply as apply_threads

    apply_threads(tc.threads, policy.num_params(), f"train {cfg.policy.head}")
    _check_env_fits(env_id, env_kwargs, policy.spec, tc, "env" if cfg.env else "the data's env_id")
    if cfg.init_from:
        init = read_checkpoint(cfg.init_from, (FORMAT,), field="init_from")
        load_state_into(
            policy,
            init["ema"] if init.get("ema") is not None else init["model"],
            f"init_from={cfg.init_from!r}",
        )
        seed_fields = merge_checkpoint_fields(seed_fields, init)  # what the initial weights were trained on
    optim = make_optimizer(policy, tc.lr, tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(tc.warmup_steps, tc.steps))
    ema = {k: v.detach().clone() for k, v in policy.state_dict().items()} if tc.ema_decay > 0 else None
    rng = np.random.default_rng(tc.seed + 1000 * rank)
    start = 0
    history: dict[str, list] = {"eval": []}

    _clean_stale_tmp(ckpt_path)
    if cfg.resume and not ckpt_path.exists():
        # killed before its first checkpoint: nothing to continue, so resume=true starts the run
        log.info("resume=true: no checkpoint in %s yet; starting the run from step 0", ckpt_path.parent)
    elif cfg.resume:
        ck = read_checkpoint(ckpt_path, (FORMAT,), field="resume=true: out")
        _check_resumable(ck, cfg, ckpt_path)
        if ck.get("train_config", {}).get("data") not in (None, cfg.data):
            log.warning(
                "resuming with data=%s but the run was trained on %s", cfg.data, ck["train_config"]["data"]
            )
        load_state_into(policy, ck["model"], f"resume=true ({ckpt_path})")
        if ema is not None and ck.get("ema") is not None:
            ema = ck["ema"]
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start = int(ck["step"])
        rng.bit_generator.state = json.loads(ck["rng_numpy"])
        torch.set_rng_state(ck["rng_torch"])
        history = json.loads(ck.get("history", '{"eval": []}'))
        log.info("resumed %s at step %d", ckpt_path, start)

    model: nn.Module = _LossModule(policy)
    if ddp:
        model = nn.parallel.DistributedDataParallel(model)
    writer = SummaryWriter(str(out / "tb"), purge_step=start if start else None) if rank == 0 else None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(_to_plain(cfg), indent=2))

    def checkpoint(step: int) -> None:
        if rank != 0:
            return
        ck = policy_state(policy, ema)
        ck.update(
            optimizer=optim.state_dict(),
            scheduler=sched.state_dict(),
            step=step,
            rng_numpy=_rng_state(rng),
            rng_torch=torch.get_rng_state(),
            train_config=_to_plain(cfg),
            env_id=env_id or "",
            env_kwargs=json.dumps(env_kwargs),
            history=json.dumps(history),
            **seed_fields,
        )
        atomic_save(ck, ckpt_path)

    def eval_policy(step: int) -> dict | None:
        if rank != 0 or tc.eval_episodes == 0 or not env_id:
            return None
        from robolearn.eval.runner import evaluate_policy

        p = build_policy(policy_state(policy, ema), use_ema=True)
        res = evaluate_policy(p, env_id, env_kwargs, episodes=tc.eval_episodes, seed=0, Ta=cfg.Ta)
        writer.add_scalar("eval/success_rate", res["success_rate"], step)
        writer.add_scalar("eval/return", res["return_mean"], step)
        if res.get("cycle_time_steps") is not None:
            writer.add_scalar("eval/cycle_time_steps", res["cycle_time_steps"], step)
        history["eval"].append(
            {"step": step, "success_rate": res["success_rate"], "return": res["return_mean"]}
        )
        return res

    @torch.no_grad()
    def val_loss() -> float | None:
        if val is None:
            return None
        policy.eval()
        vrng = np.random.default_rng(12345)
        losses = [policy.loss(val.sample(min(256, len(val)), vrng))[0].item() for _ in range(4)]
        policy.train()
        return float(np.mean(losses))

    t0 = time.time()
    policy.train()
    bar = tqdm(
        range(start, tc.steps),
        initial=start,
        total=tc.steps,
        desc=f"train {cfg.policy.head}",
        disable=rank != 0,
        unit="step",
        mininterval=1.0,
    )
    loss_ema, last_val, last_eval = None, None, None
    step = start
    from robolearn.signals import interruptible

    first_losses: list[float] = []
    try:
        with interruptible():
            for step in bar:
                batch = ds.sample(tc.batch_size, rng)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.precision == "bfloat16"):
                    loss, linfo = model(batch)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"BC loss is {loss.item()} at step {step} (the last checkpoint, if any, is kept). Fix: "
                        f"lower train.lr (now {tc.lr:g}) or check the data with `robolearn inspect --validate`"
                    )
                if len(first_losses) < 5:
                    first_losses.append(loss.item())
                optim.zero_grad(set_to_none=True)
                loss.backward()
                gn = nn.utils.clip_grad_norm_(policy.parameters(), tc.grad_clip) if tc.grad_clip else None
                optim.step()
                sched.step()
                if ema is not None:
                    ema_update(ema, policy, tc.ema_decay, step)
                loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
                done = step + 1
                if writer is not None and done % tc.log_every == 0:
                    writer.add_scalar("train/loss", loss.item(), done)
                    writer.add_scalar("train/lr", sched.get_last_lr()[0], done)
                    if gn is not None:
                        writer.add_scalar("train/grad_norm", float(gn), done)
                    for k, v in linfo.items():
                        writer.add_scalar(f"train/{k}", v, done)
                if tc.val_every and done % tc.val_every == 0:
                    last_val = val_loss()
                    if writer is not None and last_val is not None:
                        writer.add_scalar("valid/loss", last_val, done)
                if tc.eval_every and done % tc.eval_every == 0 and done < tc.steps:
                    r = eval_policy(done)
                    last_eval = r["success_rate"] if r else last_eval
                if done % tc.ckpt_every == 0:
                    checkpoint(done)
                bar.set_postfix(
                    loss=f"{loss_ema:.4f}", **({"val": f"{last_val:.4f}"} if last_val else {}), refresh=False
                )
            step = tc.steps
    except KeyboardInterrupt as e:
        bar.close()
        checkpoint(step)  # Ctrl-C/SIGTERM: keep what was learned; resume=true continues from here
        if writer is not None:
            writer.close()
        log.info("interrupted at step %d; checkpoint saved to %s (resume=true continues)", step, ckpt_path)
        return {
            "interrupted": True,
            "signal": getattr(e, "signum", 2),
            "step": step,
            "checkpoint": str(ckpt_path),
        }
    bar.close()
    _check_converged(first_losses, loss_ema, tc)
    elapsed = time.time() - t0
    final_val = val_loss()
    checkpoint(tc.steps)
    res = eval_policy(tc.steps) if start < tc.steps or not history["eval"] else None
    if res is not None:
        checkpoint(tc.steps)  # store the final evaluation in the checkpoint's history
    if writer is not None:
        writer.close()
    summary = {
        "head": cfg.policy.head,
        "params": policy.num_params(),
        "steps": tc.steps,
        "train_loss": loss_ema,
        "valid_loss": final_val,
        "success_rate": None if res is None else res["success_rate"],
        "eval_episodes": 0 if res is None else res["episodes"],
        "samples_per_s": (tc.steps - start) * tc.batch_size / max(elapsed, 1e-9),
        "seconds": elapsed,
        "checkpoint": str(ckpt_path),
        "tensorboard": str(out / "tb"),
    }
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if ddp:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary


__all__ = ["TrainConfig", "TrainLoopConfig", "train", "register_policy_group", "atomic_save"]
