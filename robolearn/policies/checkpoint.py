"""Checkpoints as plain data + tensors only (loadable with ``torch.load(weights_only=True)``: a checkpoint
from a stranger cannot run code). One checkpoint = one runnable policy: spec, config, weights, normaliser.

    {"format": "robolearn-policy/1", "spec": json, "config": json, "head": str, "model": state_dict,
     "ema": state_dict | None, ...trainer keys (optimizer, step, ...) are ignored here}
"""

from __future__ import annotations

import dataclasses
import json
import os

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
    policy = Policy(spec, cfg, Normalizer.empty(spec))
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    policy.load_state_dict(state)
    return policy.eval()


def load_policy(
    path: str | os.PathLike, use_ema: bool = True, map_location: str | torch.device = "cpu"
) -> Policy:
    """File -> Policy. Uses weights_only loading: no pickled objects, no code execution."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - anything torch.load rejects is "not a checkpoint" to the user
        raise CheckpointError(
            f"{os.fspath(path)!r} is not a robolearn checkpoint (torch.load with "
            f"weights_only=True failed: {type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from e
    try:
        return build_policy(ckpt, use_ema=use_ema)
    except CheckpointError as e:
        raise CheckpointError(f"{os.fspath(path)!r}: {e}") from None
