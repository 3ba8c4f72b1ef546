"""Per-key normalisation whose statistics are buffers, so they ship inside every checkpoint.

Every key is stored as an affine map ``y = x * scale + offset`` (plus the raw min/max/mean/std for
reference), so a checkpoint can be un-normalised without knowing which mode produced it.
Image keys (uint8) carry no statistics: they map to float in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

MODES = ("minmax", "meanstd")
# A dim whose data range is below CONST_RANGE is treated as constant (scale 1, centred). Without it,
# near-constant dims (e.g. a cube's quaternion x/y, range ~1e-4 while it rests flat) are blown up ~1e4x, and
# the tiny tilts seen at test time land far outside [-1, 1]: policies then act on noise.
CONST_RANGE = 1e-3
# Above it, min-max scaling divides by at least MIN_RANGE: a dim that only jitters (PushT's block z, range
# 1.1 mm from contact; the eef yaw, 5 mrad; the closed fingers, 3 mm) was scaled 400-1800x, so jitter filled
# [-1, 1] in training and hit the +-5 clamp in rollouts. With the floor it moves the input by < 0.1.
MIN_RANGE = 0.05
# The same floor for mean/std scaling: the std is taken as at least MIN_STD (a scale of at most 40, as min-max's
# floor gives). Without it PushT-v1's block z (std 0.2 mm, contact jitter) was scaled ~5000x.
MIN_STD = MIN_RANGE / 2


# names a ModuleDict entry cannot take: its own attributes ("half", "type", "keys", "train", ...)
_TAKEN = frozenset(dir(nn.ModuleDict()))


def _escape(key: str) -> str:
    # nn.Module names cannot contain "." (e.g. LeRobot-style "observation.state").
    name = key.replace("%", "%25").replace(".", "%2E")
    if name in _TAKEN:  # e.g. an obs key "half": escape its first character (no other key escapes to it)
        name = f"%{ord(name[0]):02X}{name[1:]}"
    return name


class _KeyStats(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        for name in ("scale", "offset", "min", "max", "mean", "std"):
            self.register_buffer(name, torch.zeros(shape, dtype=torch.float32))


class Normalizer(nn.Module):
    """``normalize(key, x)`` / ``unnormalize(key, x)`` with x shaped (..., *feature_shape)."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], image_keys: tuple[str, ...] = ()):
        super().__init__()
        self.stats = nn.ModuleDict({_escape(k): _KeyStats(tuple(s)) for k, s in shapes.items()})
        self.keys = tuple(shapes)
        self.image_keys = tuple(image_keys)

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def from_data(
        cls, arrays: Mapping[str, np.ndarray], mode: Mapping[str, str] | str = "minmax"
    ) -> Normalizer:
        """arrays: key -> (N, *shape). uint8 arrays are treated as images (no statistics)."""
        modes = {k: mode for k in arrays} if isinstance(mode, str) else dict(mode)
        for k, m in modes.items():
            if m not in MODES:
                raise ValueError(f"Normalizer mode for key {k!r} is {m!r}; valid modes: {MODES}")
        image_keys = tuple(k for k, a in arrays.items() if np.asarray(a).dtype == np.uint8)
        shapes = {k: tuple(np.asarray(a).shape[1:]) for k, a in arrays.items() if k not in image_keys}
        norm = cls(shapes, image_keys)
        for k in shapes:
            a = torch.as_tensor(np.asarray(arrays[k]), dtype=torch.float64)
            if a.ndim < 1 or a.shape[0] == 0:
                raise ValueError(
                    f"Normalizer.from_data: key {k!r} needs shape (N, ...) with N > 0, got {tuple(a.shape)}"
                )
            lo, hi = a.amin(0), a.amax(0)
            mean, std = a.mean(0), a.std(0, unbiased=False)
            rng = hi - lo
            # Constant dims (either mode): scale 1 and centre on 0 instead of dividing by ~0.
            const = rng < CONST_RANGE
            if modes.get(k, "minmax") == "minmax":
                scale = torch.where(const, torch.ones_like(rng), 2.0 / rng.clamp_min(MIN_RANGE))
                offset = -(hi + lo) / 2 * scale
            else:
                scale = torch.where(const, torch.ones_like(std), 1.0 / std.clamp_min(MIN_STD))
                offset = -mean * scale
            s = norm.stats[_escape(k)]
            for name, v in (
                ("scale", scale),
                ("offset", offset),
                ("min", lo),
                ("max", hi),
                ("mean", mean),
                ("std", std),
            ):
                getattr(s, name).copy_(v.to(torch.float32))
        return norm

    @classmethod
    def empty(cls, spec: Mapping) -> Normalizer:
        """Zero buffers shaped from a policy spec (obs keys + "action"), to be filled by load_state_dict."""
        shapes, images = {}, []
        for k, v in spec["obs"].items():
            if v["dtype"] == "uint8":
                images.append(k)
            else:
                shapes[k] = tuple(v["shape"])
        shapes["action"] = (int(spec["action_dim"]),)
        return cls(shapes, tuple(images))

    # ----------------------------------------------------------------------------------- transforms
    def _get(self, key: str) -> _KeyStats:
        try:
            return self.stats[_escape(key)]
        except KeyError:
            raise KeyError(
                f"Normalizer has no statistics for key {key!r}; known keys: {self.keys}, "
                f"image keys: {self.image_keys}"
            ) from None

    def normalize(self, key: str, x: Tensor) -> Tensor:
        if key in self.image_keys or x.dtype == torch.uint8:  # images need no statistics
            return x.float() / 255.0
        s = self._get(key)
        return x.to(s.scale.dtype) * s.scale + s.offset

    def unnormalize(self, key: str, x: Tensor) -> Tensor:
        if key in self.image_keys:
            return x * 255.0
        s = self._get(key)
        return (x.to(s.scale.dtype) - s.offset) / s.scale
