"""Executing action chunks in an environment loop: observation history and receding horizon / ACT-style
temporal ensembling. Both work on a batch of B (vector) envs.

    history = ObsHistory(To)
    chunker = ActionChunker(Ta)                      # or ActionChunker(Ta, temporal_ensemble=True)
    obs = history.reset(env.reset()[0])
    while ...:
        action = chunker.act(policy, obs)            # (B, Da), one per env step
        o, r, term, trunc, info = env.step(action.numpy())
        obs = history.push(o)
        done = term | trunc                          # on autoreset: history.reset(o_new, mask=done)
        chunker.reset(mask=done)                     # before the next act()
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from torch import Tensor


class ObsHistory:
    """Last To observations per env; at episode start the history is padded with the first observation."""

    def __init__(self, To: int):
        if To < 1:
            raise ValueError(f"ObsHistory: To={To!r} must be >= 1")
        self.To = To
        self.buf: dict[str, np.ndarray] | None = None  # key -> (B, To, *shape)
        self._fresh: np.ndarray | None = None

    def reset(self, obs: dict | None = None, mask: np.ndarray | None = None) -> dict[str, np.ndarray] | None:
        """Start new episodes: all envs (``mask`` None) or those where ``mask`` is True. The next pushed
        observation fills their whole history. With ``obs`` given it is pushed now and the history returned."""
        if mask is None or self.buf is None:
            self.buf, self._fresh = None, None
        else:
            m = np.asarray(mask, bool)
            self._fresh = m.copy() if self._fresh is None else (self._fresh | m)
        return self.push(obs) if obs is not None else None

    def push(self, obs: dict) -> dict[str, np.ndarray]:
        """obs {key: (B, *shape)} -> history {key: (B, To, *shape)}."""
        obs = {k: np.asarray(v.cpu() if isinstance(v, Tensor) else v) for k, v in obs.items()}
        if self.buf is None:
            self.buf = {k: np.repeat(v[:, None], self.To, axis=1) for k, v in obs.items()}
        else:
            for k, v in obs.items():
                b = self.buf[k]
                b[:, :-1] = b[:, 1:].copy()
                b[:, -1] = v
                if self._fresh is not None and self._fresh.any():
                    b[self._fresh] = v[self._fresh][:, None]
        self._fresh = None
        return self.get()

    def get(self) -> dict[str, np.ndarray]:
        if self.buf is None:
            raise RuntimeError("ObsHistory is empty: push (or reset with) an observation first")
        return {k: v.copy() for k, v in self.buf.items()}


class ActionChunker:
    """One action per env step from chunk-predicting policies.

    Receding horizon (default): plan Tp actions, execute the first Ta, then re-plan.
    Temporal ensembling (ACT, Zhao et al. 2023): plan EVERY step and average, for the current step, every
    still-overlapping chunk's prediction with weights exp(-k * i), i = 0 for the oldest prediction
    (ACT's convention: older predictions weigh more, k = 0.01).
    """

    def __init__(self, Ta: int, temporal_ensemble: bool = False, k: float = 0.01):
        if Ta < 1:
            raise ValueError(f"ActionChunker: Ta={Ta!r} must be >= 1")
        self.Ta, self.temporal_ensemble, self.k = Ta, temporal_ensemble, k
        self.num_plans = 0
        self._policy = None
        self.reset()

    def reset(self, mask: np.ndarray | Tensor | None = None) -> None:
        """Forget plans (all envs, or those with ``mask`` True). Receding horizon re-plans the whole batch at the
        next act(), since a reset env must not keep executing its previous episode's chunk. The policy's
        per-env memory (e.g. the GMM head's held mode) is cleared for those envs too."""
        if mask is None:
            self.memory: dict = {}
        elif self._policy is not None and hasattr(self._policy, "forget"):
            self._policy.forget(self.memory, mask)
        if mask is None or not self.temporal_ensemble:
            if mask is None or bool(np.asarray(mask).any()):
                self._queue: list[Tensor] = []
                self._chunks: deque = deque()
            return
        m = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        for entry in self._chunks:
            entry[1] &= ~m.to(entry[1].device)

    def act(self, policy, obs: dict, generator: torch.Generator | None = None) -> Tensor:
        """obs {key: (B, To, *shape)} -> action (B, Da) for this step (unnormalised, torch)."""
        self._policy = policy
        if not self.temporal_ensemble:
            if not self._queue:
                chunk = self._plan(policy, obs, generator)  # (B, Tp, Da)
                self.num_plans += 1
                self._queue = list(chunk[:, : self.Ta].unbind(1))
            return self._queue.pop(0)
        chunk = self._plan(policy, obs, generator)
        self.num_plans += 1
        B, Tp = chunk.shape[:2]
        self._chunks.append([chunk, torch.ones(B, dtype=torch.bool, device=chunk.device)])
        while len(self._chunks) > Tp:
            self._chunks.popleft()
        n = len(self._chunks)
        # Entry j (0 = oldest) was planned n-1-j steps ago, so its prediction for now is chunk[:, n-1-j].
        preds = torch.stack([c[:, n - 1 - j] for j, (c, _) in enumerate(self._chunks)], 0)  # (n, B, Da)
        valid = torch.stack([v for _, v in self._chunks], 0).to(preds.dtype)  # (n, B)
        w = torch.tensor([math.exp(-self.k * j) for j in range(n)], dtype=preds.dtype, device=preds.device)
        w = w[:, None] * valid
        return (w[..., None] * preds).sum(0) / w.sum(0)[:, None]

    def _plan(self, policy, obs, generator):
        if hasattr(policy, "forget"):  # a robolearn Policy: it may keep per-env memory across re-plans
            return policy.act(obs, generator=generator, memory=self.memory)
        return policy.act(obs, generator=generator)


class PolicyAgent:
    """A trained policy as a single-env controller: `reset()` at each episode start, then
    `act(obs_dict) -> action` (np.ndarray (Da,), env units). It keeps the observation history (To) and runs the
    predicted chunk receding-horizon (Ta actions per plan) as the evaluator does; a stochastic head draws its
    noise from a generator seeded with `seed` (re-seeded by `reset(seed=...)`)."""

    def __init__(self, policy, seed: int = 0):
        self.policy = policy
        self._gen = torch.Generator().manual_seed(int(seed))
        self.reset()

    mode = None  # recorders store an expert's mode attribute when it has one

    @property
    def spec(self) -> dict:
        return self.policy.spec

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._gen = torch.Generator().manual_seed(int(seed))
        self._hist = ObsHistory(self.policy.To)
        self._chunker = ActionChunker(self.policy.spec.get("Ta", 1))

    def act(self, obs: dict) -> np.ndarray:
        h = self._hist.push({k: np.asarray(v)[None] for k, v in obs.items()})
        a = self._chunker.act(self.policy, h, generator=self._gen)
        return np.asarray(a.detach().cpu().numpy() if isinstance(a, Tensor) else a, np.float32)[0]
