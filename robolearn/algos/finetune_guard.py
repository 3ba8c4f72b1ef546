"""The regression guard of `robolearn finetune`: when a periodic evaluation falls far below the step-0
evaluation (the BC policy as bridged), restore checkpoints/best.pt's actor and critics and hold the entropy
temperature fixed from then on.

Why (README, "What stops the PegInsert collapse"): with a learned temperature, alpha decays at a constant rate
(0.1 -> 0.0004 over 20k updates) whatever the task. On Lift and the Panda that is what lets the residual improve
on BC; on PegInsert it removes the only pull back to the base and the residual drifts to a collapse (70% ->
35% by 5k steps, 0% by 20k on every seed). A fixed alpha of 0.05 stops the collapse but also most of Lift's
gain. The guard keeps the learned temperature until an evaluation shows the collapse, then switches.

It fires at most once. Its record (`history["rollback"]`) is in every checkpoint, so a resumed run keeps the
fixed temperature.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def fix_temperature(agent, alpha: float) -> None:
    """From now on the agent's temperature is `alpha` and is not learned."""
    agent.cfg = replace(agent.cfg, autotune=False)
    with torch.no_grad():
        agent.log_alpha.requires_grad_(False)
        agent.log_alpha.fill_(math.log(alpha))


class RegressionGuard:
    def __init__(self, drop: float | None, alpha: float, agent, best_path: Path, history: dict):
        self.drop, self.alpha, self.agent = drop, alpha, agent
        self.best_path, self.history = best_path, history
        fired = history.get("rollback")
        if fired is not None:  # a resumed run that had fired: its temperature stays fixed
            fix_temperature(agent, fired["alpha"])

    def record(self) -> dict:
        """results.json's view: {"rollback": {...}} once fired, else {}."""
        fired = self.history.get("rollback")
        return {"rollback": fired} if fired is not None else {}

    def after_eval(self, step: int, success: float) -> bool:
        """Call after each periodic evaluation; True when it fired (the agent's weights were replaced)."""
        evals = self.history["eval"]
        active = self.drop is not None and self.agent.cfg.autotune  # firing fixes the temperature: once only
        if not active or not evals or evals[0]["step"] != 0 or not self.best_path.exists():
            return False
        base = float(evals[0]["success_rate"])
        if success > base - self.drop:
            return False
        best = torch.load(self.best_path, map_location="cpu", weights_only=True)
        sac = best["sac"]
        for name in ("actor", "critic", "critic_target"):
            getattr(self.agent, name).load_state_dict(sac[name])
        for name in ("actor_opt", "critic_opt"):
            getattr(self.agent, name).load_state_dict(sac[name])
        fix_temperature(self.agent, self.alpha)
        self.history["rollback"] = {
            "step": step,
            "success": success,
            "initial_success": base,
            "restored_step": int(best["step"]),
            "alpha": self.alpha,
        }
        log.warning(
            "step %d: evaluation success %.0f%% is %.0f+ points below the initial %.0f%%: "
            "restored best.pt (step %d) and fixed the temperature at %g",
            *(step, 100 * success, 100 * self.drop, 100 * base, int(best["step"]), self.alpha),
        )
        return True
