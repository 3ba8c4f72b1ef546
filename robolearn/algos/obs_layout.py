"""The SAC observation of a fine-tuning run: the BC policy's observation history flattened in a fixed key
order (+ the BC proposal for residual bridges), and a single-env history that builds it."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robolearn.config import ConfigError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ observations
@dataclass
class ObsLayout:
    """Which low-dim keys (sorted), their per-step shapes and the history To -> one flat vector (D,).

    flat = cat_k [obs[k][t-To+1], ..., obs[k][t]].reshape(-1)   key by key, oldest step first."""

    keys: list[str]
    shapes: list[tuple[int, ...]]
    To: int

    @property
    def sizes(self) -> list[int]:
        return [self.To * math.prod(s) for s in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    @classmethod
    def from_spec(cls, spec: dict) -> ObsLayout:
        images = sorted(k for k, v in spec["obs"].items() if v["dtype"] == "uint8")
        if images:
            raise ConfigError(
                f"finetune works on low-dim (state) observations only, but the policy observes image keys "
                f"{images}. Fix: train the BC policy on obs_mode=state data (or with train obs_keys= "
                "restricted to low-dim keys)"
            )
        keys = sorted(spec["obs"])
        return cls(keys, [tuple(int(d) for d in spec["obs"][k]["shape"]) for k in keys], int(spec["To"]))

    def histories(self, seq: dict[str, np.ndarray]) -> np.ndarray:
        """One episode's observations {k: (T, *shape)} -> (T, D): the flat history at every step, padded
        at the start with the first observation (as WindowDataset / ObsHistory do)."""
        T = len(seq[self.keys[0]])
        idx = np.clip(np.arange(T)[:, None] + np.arange(self.To)[None] - (self.To - 1), 0, T - 1)  # (T, To)
        return np.concatenate([np.asarray(seq[k], np.float32)[idx].reshape(T, -1) for k in self.keys], axis=1)

    def unflatten(self, x: Tensor) -> dict[str, Tensor]:
        """(B, D) -> {k: (B, To, *shape)} for the BC policy."""
        parts = torch.split(x, self.sizes, dim=-1)
        return {k: p.reshape(x.shape[0], self.To, *s) for k, p, s in zip(self.keys, parts, self.shapes)}

    def to_json(self) -> str:
        return json.dumps({"keys": self.keys, "shapes": [list(s) for s in self.shapes], "To": self.To})

    @classmethod
    def from_json(cls, text: str) -> ObsLayout:
        d = json.loads(text)
        return cls(list(d["keys"]), [tuple(s) for s in d["shapes"]], int(d["To"]))


class FlatHistory:
    """Single-env observation history -> flat vector (D,); the first observation fills the history."""

    def __init__(self, layout: ObsLayout):
        self.layout = layout
        self.buf: np.ndarray | None = None  # (To, D / To) per key, kept flat per step

    def reset(self) -> None:
        self.buf = None

    def push(self, obs: dict) -> np.ndarray:
        L = self.layout
        missing = [k for k in L.keys if k not in obs]
        if missing:
            raise KeyError(f"observation is missing keys {missing}; the fine-tuned actor expects {L.keys}")
        step = [np.asarray(obs[k], np.float32).reshape(1, -1) for k in L.keys]  # per key (1, prod(shape))
        if self.buf is None:
            self.buf = [np.repeat(s, L.To, axis=0) for s in step]
        else:
            for b, s in zip(self.buf, step):
                b[:-1] = b[1:].copy()
                b[-1] = s[0]
        return np.concatenate([b.reshape(-1) for b in self.buf])


# ------------------------------------------------------------------------------------------------ scaling
OBS_CLIP = 5.0  # as the BC policy clamps its normalised inputs (Policy.encode)


@dataclass
class ObsScaling:
    """The SAC networks' view of the flat history: ``clip(x * scale + offset, +-OBS_CLIP)`` on its first D
    columns, with the BC checkpoint's normaliser statistics tiled over the history (the policy's own view of
    the same observation). Raw positions in metres differ by millimetres between states that a precise task
    tells apart; scaled, they differ by the fraction of the demos' range that the BC policy sees. Columns after
    D (the held chunk's phase and base action, already in [0, 1] / [-1, 1]) pass through unchanged."""

    scale: np.ndarray  # (D,)
    offset: np.ndarray  # (D,)

    @classmethod
    def from_policy(cls, policy, layout: ObsLayout) -> ObsScaling:
        scale, offset = [], []
        for k, shape in zip(layout.keys, layout.shapes):
            n = math.prod(shape)
            one = torch.zeros((1, *shape))
            off = policy.normalizer.normalize(k, one).reshape(n)  # x = 0 -> offset
            sc = policy.normalizer.normalize(k, one + 1).reshape(n) - off  # x = 1 -> scale + offset
            scale.append(np.tile(sc.detach().numpy(), layout.To))
            offset.append(np.tile(off.detach().numpy(), layout.To))
        return cls(np.concatenate(scale).astype(np.float32), np.concatenate(offset).astype(np.float32))

    @classmethod
    def for_run(cls, policy, layout: ObsLayout, enabled: bool, resume_ck: dict | None) -> ObsScaling | None:
        """A fine-tuning run's scaling: the resumed checkpoint's (None: written before obs_norm existed, raw),
        else the BC policy's when `enabled` (no policy, e.g. bridge=none from scratch: raw)."""
        if resume_ck is not None:
            return cls.from_state(resume_ck.get("obs_scaling"))
        return cls.from_policy(policy, layout) if (policy is not None and enabled) else None

    @property
    def dim(self) -> int:
        return len(self.scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        D = self.dim
        head = np.clip(x[..., :D] * self.scale + self.offset, -OBS_CLIP, OBS_CLIP)
        return np.concatenate([head, x[..., D:]], axis=-1).astype(np.float32)

    def state_dict(self) -> dict:
        return {"scale": torch.from_numpy(self.scale.copy()), "offset": torch.from_numpy(self.offset.copy())}

    @classmethod
    def from_state(cls, st: dict | None) -> ObsScaling | None:
        if not st:
            return None
        return cls(np.asarray(st["scale"], np.float32), np.asarray(st["offset"], np.float32))
