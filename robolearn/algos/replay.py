"""Replay for SAC: a preallocated numpy ring buffer, n-step returns, and demo/online mixing (RLPD).

Batches are dicts of float32 torch tensors (shapes with B = batch size)::

    obs (B, obs_dim)   action (B, Da)   reward (B,)   next_obs (B, obs_dim)
    terminated (B,)    discount (B,)    is_demo (B,) bool   # is_demo only from `mix` / `MixedSampler`

`reward` is the n-step discounted sum r_t + g r_{t+1} + ... and `discount` is g^k for the k steps it
summed (k < n where an episode ended or the buffer's newest transition was reached), so the SAC target is
``reward + discount * (1 - terminated) * V(next_obs)`` for any n; with n = 1 `discount` is just gamma.

`terminated` vs `truncated`: only `terminated` (a true terminal state: fall, success) stops bootstrapping.
`truncated` (time limit) is stored too, but only to stop an n-step window at the episode's end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Batch = dict[str, Tensor]


class ReplayBuffer:
    """Preallocated ring buffer of single-env transitions (obs, action, reward, next_obs, terminated).

    Transitions must be added in time order per episode (one env, or one demo episode per `add_batch`
    call): n-step windows walk forward through consecutive slots and stop at `terminated | truncated`.
    For a vectorised env, keep one buffer per sub-env or use n_step=1.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, n_step: int = 1, gamma: float = 0.99):
        if capacity <= 0:
            raise ValueError(f"ReplayBuffer: capacity={capacity} must be > 0")
        if n_step < 1:
            raise ValueError(f"ReplayBuffer: n_step={n_step} must be >= 1")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"ReplayBuffer: gamma={gamma} must be in (0, 1]")
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        self.n_step, self.gamma = n_step, gamma
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.truncated = np.zeros(capacity, bool)
        self.ptr = 0  # next slot to write; when full, also the oldest transition
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool = False) -> None:
        """One transition. `next_obs` must be the true s' (the final observation when the episode ended),
        not the reset observation of the next episode."""
        i = self.ptr
        self.obs[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = terminated
        self.truncated[i] = truncated
        self.ptr = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated=None) -> None:
        """T consecutive transitions (T, ...), e.g. a demo episode. Set truncated[-1] for an episode that
        ended without a terminal state, so n-step windows don't run into whatever is added next."""
        n = len(reward)
        if truncated is None:
            truncated = np.zeros(n, bool)
        if n > self.capacity:  # only the newest `capacity` survive a wrap anyway
            sl = slice(n - self.capacity, n)
            obs, action, reward, next_obs = obs[sl], action[sl], reward[sl], next_obs[sl]
            terminated, truncated, n = terminated[sl], truncated[sl], self.capacity
        idx = (self.ptr + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.action[idx] = action
        self.reward[idx] = reward
        self.next_obs[idx] = next_obs
        self.terminated[idx] = terminated
        self.truncated[idx] = truncated
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        """n transitions uniformly with replacement, as torch tensors (see module docstring)."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        idx = rng.integers(0, self.size, size=n)
        return self.get(idx)

    def get(self, idx: np.ndarray) -> Batch:
        if self.n_step == 1:
            last, reward = idx, self.reward[idx]
            discount = np.full(len(idx), self.gamma, np.float32)
        else:
            last, reward, discount = self._n_step(idx)
        return {
            "obs": torch.from_numpy(self.obs[idx]),
            "action": torch.from_numpy(self.action[idx]),
            "reward": torch.from_numpy(reward),
            "next_obs": torch.from_numpy(self.next_obs[last]),
            "terminated": torch.from_numpy(self.terminated[last]),
            "discount": torch.from_numpy(discount),
        }

    def _n_step(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Walk k = 0..n-1 slots forward. A window stops after a transition that ended its episode
        # (terminated or truncated) and before the write head (slot `ptr` is either empty or the oldest
        # transition, which belongs to another time). The bootstrap state is next_obs of the last step kept.
        done = self.truncated | (self.terminated > 0)
        reward = np.zeros(len(idx), np.float32)
        alive = np.ones(len(idx), bool)
        last = idx.copy()
        steps = np.zeros(len(idx), np.int64)
        for k in range(self.n_step):
            j = (idx + k) % self.capacity
            if k > 0:
                alive &= ~done[(j - 1) % self.capacity] & (j != self.ptr)
            reward += np.where(alive, self.gamma**k * self.reward[j], 0.0).astype(np.float32)
            last = np.where(alive, j, last)
            steps += alive
        discount = (self.gamma**steps).astype(np.float32)
        return last, reward, discount

    # ---- checkpointing: plain tensors + ints, loadable with torch.load(weights_only=True)
    def state_dict(self) -> dict:
        """Arrays as CPU tensors sharing memory with the numpy storage (zero-copy), trimmed to `size`.
        (Raw numpy arrays are refused by torch.load(weights_only=True), tensors are not.)"""
        n = self.size
        return {
            "obs": torch.from_numpy(self.obs[:n]),
            "next_obs": torch.from_numpy(self.next_obs[:n]),
            "action": torch.from_numpy(self.action[:n]),
            "reward": torch.from_numpy(self.reward[:n]),
            "terminated": torch.from_numpy(self.terminated[:n]),
            "truncated": torch.from_numpy(self.truncated[:n]),
            "ptr": self.ptr,
            "size": self.size,
            "capacity": self.capacity,
            "n_step": self.n_step,
            "gamma": self.gamma,
        }

    def load_state_dict(self, state: Mapping) -> None:
        for key in ("capacity", "n_step"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"ReplayBuffer.load_state_dict: {key}={state[key]} != this buffer's {getattr(self, key)}"
                )
        n = int(state["size"])
        for key in ("obs", "next_obs", "action", "reward", "terminated", "truncated"):
            value = state[key]
            getattr(self, key)[:n] = value.numpy() if isinstance(value, Tensor) else value
        self.size, self.ptr, self.gamma = n, int(state["ptr"]), float(state["gamma"])


# ---- demo / online mixing (RLPD: every batch is half demos, half online, "symmetric sampling")
def mix(demo_batch: Batch, online_batch: Batch) -> Batch:
    """Concatenate two batches along B and add `is_demo` (True for the demo rows, which come first)."""
    keys = demo_batch.keys() & online_batch.keys()
    out = {k: torch.cat([demo_batch[k], online_batch[k]]) for k in keys if k != "is_demo"}
    n_demo, n_online = len(demo_batch["obs"]), len(online_batch["obs"])
    out["is_demo"] = torch.cat(
        [torch.ones(n_demo, dtype=torch.bool), torch.zeros(n_online, dtype=torch.bool)]
    )
    return out


@dataclass(frozen=True)
class ConstantSchedule:
    """A constant demo ratio."""

    value: float

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class LinearSchedule:
    """Linear from `start` to `end` over `steps` sampler steps, then `end`."""

    start: float
    end: float
    steps: int

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError(f"LinearSchedule: steps={self.steps} must be > 0")

    def __call__(self, step: int) -> float:
        frac = min(max(step, 0) / self.steps, 1.0)
        return self.start + frac * (self.end - self.start)


class MixedSampler:
    """Batches with a fraction `demo_ratio(step)` of demo rows (rounded), the rest online; adds `is_demo`.

    demo_ratio: a float (constant) or a callable step -> ratio in [0, 1] (e.g. `LinearSchedule(0.5, 0.1, 50_000)`).
    The default 0.5 is RLPD's symmetric sampling. `step` defaults to the number of `sample` calls so far.
    """

    def __init__(
        self,
        demo_buffer: ReplayBuffer,
        online_buffer: ReplayBuffer,
        demo_ratio: float | Callable[[int], float] = 0.5,
    ):
        self.demo, self.online = demo_buffer, online_buffer
        self.demo_ratio = (
            ConstantSchedule(float(demo_ratio)) if isinstance(demo_ratio, (int, float)) else demo_ratio
        )
        self.calls = 0

    def ratio(self, step: int | None = None) -> float:
        r = float(self.demo_ratio(self.calls if step is None else step))
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"MixedSampler: demo_ratio({step}) = {r} is outside [0, 1]")
        return r

    def sample(self, n: int, rng: np.random.Generator, step: int | None = None) -> Batch:
        n_demo = int(round(self.ratio(step) * n))
        if len(self.online) == 0:  # nothing online yet: all demos
            n_demo = n
        self.calls += 1
        if n_demo == n:
            return mix(self.demo.sample(n, rng), _empty_like(self.online))
        if n_demo == 0:
            return mix(_empty_like(self.demo), self.online.sample(n, rng))
        return mix(self.demo.sample(n_demo, rng), self.online.sample(n - n_demo, rng))


def _empty_like(buffer: ReplayBuffer) -> Batch:
    return buffer.get(np.zeros(0, np.int64))
