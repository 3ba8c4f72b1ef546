"""`robolearn inspect FILE [--validate]`: a table of what an episode store holds."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from robolearn.data.store import StoreError, iter_episodes, journal_status, read_info


def summarize(path, validate: bool = False) -> dict:
    info = read_info(path, validate=validate)
    lengths = np.array([info.lengths[d] for d in info.demos])
    sources = Counter(str(info.episode_attrs[d].get("source", "unknown")) for d in info.demos)
    succ = [bool(info.episode_attrs[d]["success"]) for d in info.demos if "success" in info.episode_attrs[d]]
    amin = amax = asum = None
    n_int, n_steps = 0, 0
    for _, ep in iter_episodes(path):
        a = ep["actions"].astype(np.float64)
        amin = a.min(0) if amin is None else np.minimum(amin, a.min(0))
        amax = a.max(0) if amax is None else np.maximum(amax, a.max(0))
        asum = a.sum(0) if asum is None else asum + a.sum(0)
        n_steps += len(a)
        if "interventions" in ep:
            n_int += int(np.asarray(ep["interventions"]).sum())
    return {
        "file": str(path),
        "env": info.env_id,
        "format": info.attrs.get("format_version", "robomimic (no robolearn attrs)"),
        "episodes": len(info.demos),
        "steps": int(lengths.sum()),
        "length_min": int(lengths.min()),
        "length_mean": float(lengths.mean()),
        "length_max": int(lengths.max()),
        "sources": dict(sources),
        "success_rate": float(np.mean(succ)) if succ else None,
        "intervention_ratio": n_int / max(n_steps, 1),
        "splits": {k: len(v) for k, v in info.masks.items()},
        "obs": {k: {"shape": list(s), "dtype": d} for k, (s, d) in sorted(info.obs_keys.items())},
        "action_dim": info.action_dim,
        "action_min": np.round(amin, 4).tolist(),
        "action_max": np.round(amax, 4).tolist(),
        "action_mean": np.round(asum / max(n_steps, 1), 4).tolist(),
        # episodes a live writer (another process) has journaled but not merged into the file yet
        "journal": journal_status(path),
    }


def inspect_file(path, validate: bool = False, as_json: bool = False, console=None) -> int:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    try:
        s = summarize(path, validate=validate)
    except StoreError as e:
        console.print(f"[red]invalid store[/red]: {e}", highlight=False)
        return 1
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    t = Table(title=f"{path}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    for k in ("env", "format", "episodes", "steps"):
        t.add_row(k, str(s[k]))
    t.add_row("length min/mean/max", f"{s['length_min']} / {s['length_mean']:.1f} / {s['length_max']}")
    t.add_row("sources", ", ".join(f"{k}: {v}" for k, v in s["sources"].items()))
    t.add_row("success rate", "n/a" if s["success_rate"] is None else f"{s['success_rate']:.1%}")
    t.add_row("intervention ratio", f"{s['intervention_ratio']:.1%}")
    t.add_row("splits", ", ".join(f"{k}: {v}" for k, v in s["splits"].items()) or "none")
    for k, v in s["obs"].items():
        t.add_row(f"obs/{k}", f"{tuple(v['shape'])} {v['dtype']}")
    t.add_row("actions", f"dim {s['action_dim']}")
    if s["journal"]["pending"]:
        pid = s["journal"]["writer_pid"]
        t.add_row(
            "journal",
            f"{s['journal']['pending']} more episodes appended by a live writer"
            f"{f' (pid {pid})' if pid else ''}, not shown: merged into the file at its close",
        )
    t.add_row("action min", _fmt(s["action_min"]))
    t.add_row("action max", _fmt(s["action_max"]))
    t.add_row("action mean", _fmt(s["action_mean"]))
    console.print(t)
    if validate:
        console.print(
            "[green]valid[/green]: every episode read back, lengths agree (obs, next_obs, actions), actions and "
            "observations finite"
        )
    return 0


def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:+.3f}" for x in v) + "]"
