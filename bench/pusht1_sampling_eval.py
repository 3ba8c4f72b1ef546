import json, sys
import torch
from robolearn.policies import load_policy
from robolearn.eval.runner import evaluate_policy
torch.set_num_threads(1)
ck = sys.argv[1]
out = {}
_randn = torch.randn
for name, steps, zero in (("steps20", 20, False), ("zero_noise", 10, True), ("steps4", 4, False)):
    policy = load_policy(ck)
    policy.head.cfg.num_inference_steps = steps
    n = steps
    policy.head.euler_t = torch.arange(n, dtype=torch.float32) / n * policy.head.cfg.time_scale
    torch.randn = (lambda *a, **k: torch.zeros(*a[:3], dtype=k.get("dtype"))) if zero else _randn
    r = evaluate_policy(policy, "robolearn/PushT-v1", {"obs_mode": "state", "reward_type": "dense"}, episodes=50, seed=0)
    torch.randn = _randn
    out[name] = {k: r[k] for k in ("success_rate", "score", "cycle_time_steps")}
    print(name, out[name], flush=True)
json.dump(out, open(ck.replace("checkpoints/last.pt", "sampling.json"), "w"), indent=1)
