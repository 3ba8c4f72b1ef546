"""`robolearn finetune ... actors=N`: SAC with N remote actors on Ray (Ape-X / distributed-SAC shaped).

Each actor is a Ray actor process with its own env and its own copy of the SAC actor network (and the frozen
BC base for bridge=residual). It steps its env `pull_every` steps at a time with the weights the learner sent
with that request (so it pulls the latest actor weights every `pull_every` of its env steps) and returns the
transitions; the learner adds them to the online replay one by one and runs `utd` updates per collected step,
exactly as the single-process loop does, while the actors already collect the next chunk. Evaluation,
checkpoints (every ckpt_every collected env steps) and resume=true are the learner's, as without actors.

Episode seeds: actor j of N runs online episodes j, j+N, j+2N, ... (from the run's episode counter on resume)
in the fine-tuning seed range, so actors never replay each other's initial states.

Failure: an actor that dies (killed, out of memory) is started again with a fresh env at its next episode and
the learner keeps going (the transitions of its lost chunk are simply not there); `restarts` counts them.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
import torch

from robolearn.scale import connect

log = logging.getLogger(__name__)


class EnvActor:
    """One remote actor (the class is wrapped by ray.remote in RemoteCollector)."""

    def __init__(self, spec: dict, index: int, n: int, first_episode: int):
        from robolearn.algos.bridges import build_actor, held_chunk
        from robolearn.algos.finetuned import SACActorPolicy
        from robolearn.algos.obs_layout import ObsLayout, ObsScaling
        from robolearn.envutil import make_env
        from robolearn.policies.checkpoint import build_policy

        torch.set_num_threads(1)
        torch.manual_seed(1000 * int(spec["seed"]) + 7919 * (index + 1))
        self.spec, self.index, self.n = spec, index, n
        self.episode = first_episode + index
        self.env = make_env(spec["env_id"], **spec["env_kwargs"])
        self.low, self.high = np.asarray(spec["low"], np.float32), np.asarray(spec["high"], np.float32)
        layout = ObsLayout.from_json(spec["layout"])
        base = None
        if spec["bc_state"] is not None and spec["bridge"] == "residual":
            base = held_chunk(build_policy(spec["bc_state"], use_ema=True), layout, self.low, self.high,
                              int(spec.get("bridge_Ta", 0)))
        self.actor = build_actor(spec["bridge"], spec["obs_dim"], spec["da"], spec["hidden"],
                                 spec["residual_scale"], spec["init_log_std"], spec.get("max_log_std"))
        self.pol = SACActorPolicy(self.actor, layout, self.low, self.high, base, deterministic=False,
                                  env_id=spec["env_id"], env_kwargs=spec["env_kwargs"],
                                  scaling=ObsScaling.from_state(spec.get("obs_scaling")))
        self.rng = np.random.default_rng([int(spec["seed"]), index])
        self.need_reset, self.s = True, None
        self.ep = [0.0, 0, False]

    def pid(self) -> int:
        import os

        return os.getpid()

    def collect(self, weights: dict | None, k: int, uniform: bool) -> dict:
        """k env steps with `weights` (None: keep the current ones); uniform: random actions (bridge=none warm-up)."""
        from robolearn.algos.bridges import from_unit
        from robolearn.seeds import finetune_seed

        if weights is not None:
            self.actor.load_state_dict(weights)
        da = int(self.spec["da"])
        cols: dict[str, list] = {k_: [] for k_ in ("obs", "action", "reward", "next_obs", "term", "trunc")}
        ends = []
        for i in range(k):
            if self.need_reset:
                obs, _ = self.env.reset(seed=finetune_seed(self.spec["seed"], self.episode))
                self.pol.reset()
                self.s = self.pol.observe(obs)
                self.ep, self.need_reset = [0.0, 0, False], False
            if uniform:
                a = self.rng.uniform(-1.0, 1.0, da).astype(np.float32)
            else:
                with torch.no_grad():
                    a = self.pol.act_unit(self.s, deterministic=False)
            obs, r, term, trunc, info = self.env.step(from_unit(a, self.low, self.high))
            s2 = self.pol.observe(obs)
            for key, v in zip(cols, (self.s, a, r, s2, term, trunc)):
                cols[key].append(v)
            self.ep[0] += float(r)
            self.ep[1] += 1
            self.ep[2] |= bool(info.get("is_success", False))
            self.s = s2
            if term or trunc:
                ends.append((i, tuple(self.ep)))
                self.episode += self.n
                self.need_reset = True
        out = {key: np.asarray(v) for key, v in cols.items()}
        out["ends"] = ends
        return out


class RemoteCollector:
    """The learner's side: N EnvActors, one outstanding `collect` each; `next()` -> one transition at a time."""

    def __init__(self, spec: dict, n: int, pull_every: int, first_episode: int, address: str | None = None):
        self.ray, self.started = connect(address)
        self.spec, self.n, self.k = spec, int(n), int(pull_every)
        self.cls = self.ray.remote(num_cpus=1, max_restarts=0)(EnvActor)
        self.first_episode = first_episode
        self.actors = [self._spawn(j) for j in range(self.n)]
        self.pending: dict = {}
        self.queue: deque = deque()
        self.restarts = 0
        self.collected = 0

    def _spawn(self, j: int):
        return self.cls.remote(self.spec, j, self.n, self.first_episode)

    def _submit(self, j: int, weights_ref, uniform: bool) -> None:
        self.pending[self.actors[j].collect.remote(weights_ref, self.k, uniform)] = j

    def next(self, actor: torch.nn.Module, uniform: bool = False):
        """The next transition (s, a, r, s2, term, trunc, episode) where episode = (return, length, success) on
        an episode's last step, else None. Blocks until an actor's chunk arrives; sends the current weights
        with each new request."""
        while not self.queue:
            if not self.pending:
                w = self._weights(actor)
                for j in range(self.n):
                    self._submit(j, w, uniform)
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            j = self.pending.pop(ready[0])
            try:
                b = self.ray.get(ready[0])
            except self.ray.exceptions.RayActorError as e:
                self.restarts += 1
                log.warning("actor %d died (%s); starting a new one, the learner keeps going", j,
                            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                self.first_episode += self.k  # a fresh actor: new episode indices (never a replayed start)
                self.actors[j] = self._spawn(j)
                self._submit(j, self._weights(actor), uniform)
                continue
            self._submit(j, self._weights(actor), uniform)  # collects its next chunk while we learn on this one
            ends = dict(b["ends"])
            for i in range(len(b["reward"])):
                self.queue.append((b["obs"][i], b["action"][i], float(b["reward"][i]), b["next_obs"][i],
                                   bool(b["term"][i]), bool(b["trunc"][i]), ends.get(i)))
        self.collected += 1
        return self.queue.popleft()

    def _weights(self, actor: torch.nn.Module):
        return self.ray.put({k: v.detach().cpu().clone() for k, v in actor.state_dict().items()})

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.started:
            self.ray.shutdown()


__all__ = ["EnvActor", "RemoteCollector"]
