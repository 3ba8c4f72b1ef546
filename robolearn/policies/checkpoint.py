"""Checkpoints as plain data + tensors only (loadable with ``torch.load(weights_only=True)``: a checkpoint
from a stranger cannot run code). One checkpoint = one runnable policy: spec, config, weights, normaliser.

    {"format": "robolearn-policy/1", "spec": json, "config": json, "head": str, "model": state_dict,
     "ema": state_dict | None, ...trainer keys (optimizer, step, ...) are ignored here}
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from robolearn.data.normalizer import Normalizer
from robolearn.policies.policy import Policy, PolicyConfig

FORMAT = "robolearn-policy/1"


class CheckpointError(ValueError):
    """The file or dict is not a loadable robolearn policy checkpoint."""


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, np.ndarray)):
        return list(np.asarray(o).tolist())
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def policy_state(policy: Policy, ema_state_dict: dict | None = None) -> dict:
    """-> checkpoint dict (plain data + tensors). ``ema_state_dict``: a state_dict of the same Policy."""
    return {
        "format": FORMAT,
        "spec": json.dumps(policy.spec, default=_json_default),
        "config": json.dumps(dataclasses.asdict(policy.cfg)),
        "head": policy.cfg.head,
        "model": policy.state_dict(),
        "ema": ema_state_dict,
    }


def build_policy(ckpt: dict, use_ema: bool = True) -> Policy:
    """Checkpoint dict -> Policy in eval mode (EMA weights when present and ``use_ema``)."""
    from robolearn.policies import HEADS

    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(
            "not a robolearn checkpoint: expected a dict with a 'format' key "
            f"({FORMAT!r}), got {type(ckpt).__name__}"
            + (f" with keys {sorted(map(str, ckpt))[:10]}" if isinstance(ckpt, dict) else "")
        )
    fmt = ckpt["format"]
    if not isinstance(fmt, str) or not fmt.startswith("robolearn-policy/"):
        raise CheckpointError(f"not a robolearn policy checkpoint: format={fmt!r}, expected {FORMAT!r}")
    if fmt != FORMAT:
        raise CheckpointError(
            f"unsupported checkpoint format version {fmt!r}; this robolearn reads {FORMAT!r}"
        )
    for k in ("spec", "config", "head", "model"):
        if k not in ckpt:
            raise CheckpointError(f"robolearn checkpoint is missing {k!r}")
    if ckpt["head"] not in HEADS:
        raise CheckpointError(
            f"checkpoint head {ckpt['head']!r} is unknown; registered heads: {sorted(HEADS)}"
        )
    spec = json.loads(ckpt["spec"])
    cfg = PolicyConfig.from_dict(json.loads(ckpt["config"]))
    if cfg.head != ckpt["head"]:
        raise CheckpointError(f"checkpoint head {ckpt['head']!r} disagrees with its config head {cfg.head!r}")
    try:
        policy = Policy(spec, cfg, Normalizer.empty(spec))
    except ValueError as e:
        raise CheckpointError(f"checkpoint spec/config do not build a policy: {e}") from None
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    load_state_into(policy, state, "checkpoint")
    return policy.eval()


SAC_FORMAT = "robolearn-sac/1"  # a `robolearn finetune` checkpoint (see robolearn.algos.finetune)
KINDS = {
    FORMAT: "a behaviour-cloning policy checkpoint (from `robolearn train` or `robolearn dagger`)",
    SAC_FORMAT: "a fine-tuned SAC checkpoint (from `robolearn finetune`)",
}


def read_checkpoint(
    path: str | os.PathLike,
    expect: tuple[str, ...] | None = (FORMAT,),
    field: str = "policy",
    map_location: str | torch.device = "cpu",
) -> dict:
    """The one checkpoint reader: file -> checkpoint dict, or CheckpointError naming the file, what it is and
    the fix. `expect`: the formats the caller can use (None = any robolearn format); `field`: the config field
    the path came from, so the message names what the user typed. weights_only loading: no code runs."""
    p = Path(path)
    where = f"{field}={os.fspath(path)!r}"
    if not p.exists():
        raise CheckpointError(
            f"{where}: no such file. Fix: check the path (a run keeps it in <out>/checkpoints/last.pt)"
        )
    if p.is_dir():
        hint = p / "checkpoints" / "last.pt"
        raise CheckpointError(
            f"{where} is a folder, not a checkpoint. Fix: pass the file"
            + (f", e.g. {field}={hint}" if hint.exists() else " (<run>/checkpoints/last.pt)")
        )
    if p.stat().st_size == 0:
        raise CheckpointError(
            f"{where}: the file is empty (0 bytes: an interrupted copy or download?). Fix: use the run's "
            "checkpoints/last.pt (robolearn writes checkpoints atomically) or retrain"
        )
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything torch.load rejects is "not a checkpoint" to the user
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"{where}: not a robolearn checkpoint (unreadable: truncated, corrupt, or not a torch file; "
            f"{p.stat().st_size} bytes; torch.load said {type(e).__name__}: {first}). "
            "Fix: use another checkpoint, e.g. the run's checkpoints/last.pt, or retrain"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("format"), str):
        keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else None
        raise CheckpointError(
            f"{where}: not a robolearn checkpoint (a {type(ckpt).__name__}"
            + (f" with keys {keys}" if keys is not None else "")
            + f", no 'format' key). Fix: pass a file written by robolearn ({' or '.join(KINDS)})"
        )
    fmt = ckpt["format"]
    if expect is not None and fmt not in expect:
        what = KINDS.get(fmt, f"a file of format {fmt!r}")
        need = " or ".join(KINDS.get(e, e) for e in expect)
        raise CheckpointError(f"{where} is {what}, but {field}= needs {need}")
    if expect is None and fmt not in KINDS:
        raise CheckpointError(
            f"{where}: unknown checkpoint format {fmt!r}; this robolearn reads {sorted(KINDS)}"
        )
    return ckpt


def load_state_into(module: torch.nn.Module, state: dict, where: str) -> None:
    """module.load_state_dict(state), with a mismatch (another head, horizon or obs layout) as CheckpointError."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3] or lines[:1])[:300]
        raise CheckpointError(
            f"{where}: its weights do not fit this policy (another head, horizon Tp/To, or observation keys?): "
            f"{detail}"
        ) from None


def load_policy(
    path: str | os.PathLike,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    field: str = "policy",
) -> Policy:
    """File -> Policy. Uses weights_only loading: no pickled objects, no code execution."""
    ckpt = read_checkpoint(path, (FORMAT,), field=field, map_location=map_location)
    try:
        return build_policy(ckpt, use_ema=use_ema)
    except CheckpointError as e:
        raise CheckpointError(f"{field}={os.fspath(path)!r}: {e}") from None
