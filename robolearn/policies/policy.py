"""Policy = normaliser -> observation encoder -> action head. One checkpoint is one runnable policy.

Timing (receding horizon, diffusion_policy's convention), shape letters B, To, Tp, Ta, Da:

    obs:     |o|o|                 To = 2 most recent observations (the last is "now")
    predict:   |a|a|a|a|a|a|a|a|   Tp actions, the first aligned with the last observation
    execute:   |a|a|a|a|           Ta actions, then re-plan (see chunking.ActionChunker)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robolearn.data.normalizer import Normalizer
from robolearn.policies.encoders import EncoderConfig, ObsEncoder


def _heads() -> dict:
    from robolearn.policies import HEADS  # the registry lives in the package __init__ (imports every head)

    return HEADS


@dataclass
class PolicyConfig:
    head: str = "diffusion"
    """Key of robolearn.policies.HEADS: mse | gmm | tokenized | diffusion | flow."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head_cfg: Any = None
    """The head's own config dataclass (HEADS[head][0]); None = its defaults; a dict is converted (from JSON/YAML)."""

    def __post_init__(self):
        heads = _heads()
        if self.head not in heads:
            raise ValueError(f"PolicyConfig.head={self.head!r}; valid options: {sorted(heads)}")
        if isinstance(self.encoder, Mapping):
            self.encoder = _from_dict(EncoderConfig, self.encoder, "PolicyConfig.encoder")
        cfg_cls = heads[self.head][0]
        if self.head_cfg is None:
            self.head_cfg = cfg_cls()
        elif (
            isinstance(self.head_cfg, Mapping)
            or dataclasses.is_dataclass(self.head_cfg)
            and not isinstance(self.head_cfg, cfg_cls)
        ):
            d = self.head_cfg if isinstance(self.head_cfg, Mapping) else dataclasses.asdict(self.head_cfg)
            self.head_cfg = _from_dict(cfg_cls, d, "PolicyConfig.head_cfg")
        if not isinstance(self.head_cfg, cfg_cls):
            raise TypeError(
                f"PolicyConfig.head_cfg is a {type(self.head_cfg).__name__}; head {self.head!r} needs "
                f"{cfg_cls.__name__} (or a dict of its fields)"
            )

    @classmethod
    def from_dict(cls, d: dict) -> PolicyConfig:
        """Inverse of dataclasses.asdict (e.g. from a checkpoint's JSON). Head-config fields an older checkpoint
        lacks take the value it was trained with (the head config's CHECKPOINT_DEFAULTS), not today's default."""
        d = _plain(d)
        heads, head, head_cfg = _heads(), d.get("head"), d.get("head_cfg")
        if isinstance(head_cfg, dict) and head in heads:
            d["head_cfg"] = {**getattr(heads[head][0], "CHECKPOINT_DEFAULTS", {}), **head_cfg}
        return _from_dict(cls, d, "PolicyConfig")


def _plain(v):
    """Mappings/sequences (e.g. OmegaConf DictConfig/ListConfig from Hydra) -> dict/list, so configs stay
    JSON-serialisable."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, Sequence) and not isinstance(v, str):
        return [_plain(x) for x in v]
    return v


def _from_dict(cls, d: Mapping, where: str):
    d = _plain(d)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown} for {cls.__name__}; valid fields: {sorted(names)}"
        )
    return cls(**d)


def validate_spec(spec: dict) -> None:
    for k in ("obs", "action_dim", "To", "Tp", "Ta"):
        if k not in spec:
            raise ValueError(f"policy spec is missing {k!r}; expected keys obs, action_dim, To, Tp, Ta")
    if not 1 <= int(spec["Ta"]) <= int(spec["Tp"]):
        raise ValueError(f"policy spec: need 1 <= Ta <= Tp, got Ta={spec['Ta']}, Tp={spec['Tp']}")
    if int(spec["To"]) < 1 or int(spec["action_dim"]) < 1:
        raise ValueError(
            f"policy spec: To and action_dim must be >= 1, got To={spec['To']}, "
            f"action_dim={spec['action_dim']}"
        )
    for k, v in spec["obs"].items():
        # dtype is what the policy is fed (low-dim float32, images uint8); the file's own dtype (float64,
        # float16, ints, bool, uint8 low-dim) goes in the optional stored_dtype, cast when data is loaded
        if v.get("dtype") not in ("float32", "uint8"):
            raise ValueError(
                f"policy spec obs[{k!r}].dtype={v.get('dtype')!r}; valid: 'float32', 'uint8' (the policy's input "
                "dtype: build the spec with WindowDataset.spec(), which casts low-dim obs to float32 and keeps "
                "the file's dtype as 'stored_dtype')"
            )
        if v["dtype"] == "uint8" and len(v["shape"]) != 3:
            raise ValueError(
                f"policy spec obs[{k!r}]: uint8 images must be (H, W, 3), got {v['shape']} "
                "(uint8 low-dim obs are dtype 'float32' with stored_dtype 'uint8')"
            )
        sd = v.get("stored_dtype")
        if sd is not None:
            try:
                ok = np.dtype(sd).kind in "fiub"
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(
                    f"policy spec obs[{k!r}].stored_dtype={sd!r}: not a numeric or bool numpy dtype name"
                )


class Policy(nn.Module):
    """encoder(obs history) -> cond -> head -> action chunk; normaliser statistics are buffers."""

    def __init__(self, spec: dict, cfg: PolicyConfig, normalizer: Normalizer):
        super().__init__()
        validate_spec(spec)
        self.spec, self.cfg = spec, cfg
        self.To, self.Tp, self.Ta, self.Da = (int(spec[k]) for k in ("To", "Tp", "Ta", "action_dim"))
        need = {k for k, v in spec["obs"].items() if v["dtype"] != "uint8"} | {"action"}
        if set(normalizer.keys) != need:
            raise ValueError(
                f"normalizer keys {sorted(normalizer.keys)} must be exactly the low-dim obs keys plus "
                f"'action': {sorted(need)} (build it from exactly those arrays)"
            )
        self.normalizer = normalizer
        self.encoder = ObsEncoder(spec, cfg.encoder)
        head_cls = _heads()[cfg.head][1]
        self.head = head_cls(cfg.head_cfg, self.encoder.out_dim, self.Tp, self.Da)

    # ---------------------------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _prepare_obs(self, obs: dict) -> dict[str, Tensor]:
        out = {}
        dev = self.device
        for k, v in self.spec["obs"].items():
            if k not in obs:
                raise KeyError(
                    f"observation is missing key {k!r}; the policy expects {sorted(self.spec['obs'])}"
                )
            x = torch.as_tensor(np.asarray(obs[k]) if not isinstance(obs[k], Tensor) else obs[k], device=dev)
            if v["dtype"] == "float32" and x.dtype != torch.float32:
                # env obs may be float64/int/bool/uint8 low-dim (so may robomimic files, cast on load):
                # feed what the policy was trained on; a uint8 low-dim key must not be mistaken for an image
                x = x.float()
            want = (self.To, *v["shape"])
            if tuple(x.shape[1:]) != want:
                raise ValueError(
                    f"obs[{k!r}] has shape {tuple(x.shape)}; expected (B, To, *shape) = (B, {', '.join(map(str, want))})"
                )
            # clamp: an observation far outside the training range must not dominate the features
            out[k] = self.normalizer.normalize(k, x).clamp(-5.0, 5.0)
        return out

    # ---------------------------------------------------------------------------------------- API
    def encode(self, obs: dict) -> Tensor:
        """obs {key: (B, To, *shape)} raw -> cond (B, C). Normalises internally (random crop if training)."""
        return self.encoder(self._prepare_obs(obs))

    def loss(self, batch: dict) -> tuple[Tensor, dict[str, float]]:
        """batch = {"obs": {key: (B, To, *shape)}, "action": (B, Tp, Da)} RAW tensors -> (loss, info)."""
        action = torch.as_tensor(batch["action"], device=self.device)
        if tuple(action.shape[1:]) != (self.Tp, self.Da):
            raise ValueError(
                f"batch['action'] has shape {tuple(action.shape)}; expected (B, Tp, Da) = "
                f"(B, {self.Tp}, {self.Da})"
            )
        cond = self.encode(batch["obs"])
        return self.head.loss(cond, self.normalizer.normalize("action", action))

    @torch.no_grad()
    def act(self, obs: dict, generator: torch.Generator | None = None, memory: dict | None = None) -> Tensor:
        """obs {key: (B, To, *shape)} numpy or torch, raw -> action chunk (B, Tp, Da), unnormalised.

        Always runs in eval behaviour (centre crop, no dropout), restoring the training flag afterwards.
        `memory`: per-env state a head may keep across re-plans (the GMM head's held component); the caller
        owns it (ActionChunker) and clears it at episode starts with `forget(memory, mask)`.
        """
        was_training = self.training
        if was_training:
            self.eval()
        try:
            cond = self.encode(obs)
            if memory is not None and hasattr(self.head, "forget"):
                a = self.head.sample(cond, generator=generator, memory=memory)
            else:
                a = self.head.sample(cond, generator=generator)
            return self.normalizer.unnormalize("action", a)
        finally:
            if was_training:
                self.train()

    def forget(self, memory: dict, mask=None) -> None:
        """Clear the per-env memory of `act` for all envs (mask None) or those where mask is True."""
        if hasattr(self.head, "forget"):
            self.head.forget(
                memory, None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.bool)
            )

    @torch.no_grad()
    def fit_data(self, action: Tensor | np.ndarray) -> None:
        """Fit data-dependent head buffers (tokenized quantile bins) from RAW dataset actions (N, [Tp,] Da).
        Call once before training; a no-op for heads without such buffers."""
        a = torch.as_tensor(
            np.asarray(action) if not isinstance(action, Tensor) else action, device=self.device
        )
        a = self.normalizer.normalize("action", a.float())
        self.head.fit_data(a.reshape(-1, 1, self.Da).expand(-1, self.Tp, -1) if a.ndim == 2 else a)

    def num_params(self) -> int:
        return sum(math.prod(p.shape) for p in self.parameters())
