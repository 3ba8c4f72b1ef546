"""`robolearn plot`: learning curves from run folders' TensorBoard event files (matplotlib, Agg backend).

Runs whose folder names differ only by a seed suffix (``_s0``, ``-s1``, ``_seed2``, ``_seed-3``) form one group,
drawn as the mean over seeds with a band (min–max by default, or ±1 std). Curves of one group are aligned by
linear interpolation onto the union of their x values, cut to the range all seeds reached, so a seed that
stopped early does not pull the mean. One subplot per tag.

x axis: ``step`` = the TensorBoard global step; ``env_steps`` = the value of a scalar named like ``env_steps``
(e.g. ``charts/env_steps``) logged at the same global steps; runs without one fall back to the step (warned).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SEED_SUFFIX = re.compile(r"^(?P<group>.+?)[_-](?:s|seed)[_-]?(?P<seed>\d+)$")
ENV_STEP_TAGS = ("charts/env_steps", "env_steps", "train/env_steps", "global/env_steps")


class PlotError(ValueError):
    """Nothing to plot (no event files, unknown tag, ...); the message says which run/tag."""


def group_name(run_name: str) -> str:
    m = SEED_SUFFIX.match(run_name)
    return m.group("group") if m else run_name


def read_scalars(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All scalar series under run_dir (event files found recursively) -> {tag: (steps, values)}, sorted by
    step; a step logged twice (a resumed run) keeps its last value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{str(run_dir)!r} is not a folder")
    dirs = sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")})
    if not dirs:
        raise PlotError(f"{str(run_dir)!r} has no TensorBoard event files (events.out.tfevents.*)")
    series: dict[str, dict[int, float]] = {}
    for d in dirs:
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})  # 0 = keep every point
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            s = series.setdefault(tag, {})
            for ev in acc.Scalars(tag):
                s[int(ev.step)] = float(ev.value)
    return {t: (np.array(sorted(s)), np.array([s[k] for k in sorted(s)])) for t, s in series.items()}


def _to_env_steps(run: str, scalars: dict, steps: np.ndarray) -> np.ndarray:
    for tag in ENV_STEP_TAGS:
        if tag in scalars:
            xs, env = scalars[tag]
            return np.interp(steps, xs, env)
    log.warning(
        "run %s logs no env-step scalar (%s); using the global step as x", run, "/".join(ENV_STEP_TAGS)
    )
    return steps.astype(float)


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path = "curves.png",
    tags: Sequence[str] | None = None,
    x: str = "step",
    band: str = "minmax",
    cols: int = 1,
) -> Path:
    """Plot learning curves of run_dirs into `out` (PNG); returns its path. One panel per tag, `cols` panels
    per row (a grid stays readable at 100% zoom where one column of 24 panels did not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in ("step", "env_steps"):
        raise PlotError(f"x={x!r} is not valid; valid options: ['step', 'env_steps']")
    if band not in ("minmax", "std"):
        raise PlotError(f"band={band!r} is not valid; valid options: ['minmax', 'std']")
    runs = {str(d): read_scalars(d) for d in run_dirs}
    tag_sets = [set(s) - set(ENV_STEP_TAGS) for s in runs.values()]
    if tags:
        for t in tags:
            have = [r for r, s in runs.items() if t in s]
            if not have:
                common = sorted(set.union(*tag_sets))
                raise PlotError(f"tag {t!r} is in none of the runs; their scalar tags: {common}")
    else:
        shared = set.intersection(*tag_sets)
        tags = sorted(shared or set.union(*tag_sets))
        if not tags:
            raise PlotError("the runs log no scalars")
    groups: dict[str, list[str]] = {}
    for r in runs:
        groups.setdefault(group_name(Path(r).resolve().name), []).append(r)

    if cols < 1:
        raise PlotError(f"cols={cols!r} must be >= 1")
    cols = min(cols, len(tags))
    nrows = -(-len(tags) // cols)
    w = 7 if cols == 1 else 4.2
    fig, axes = plt.subplots(
        nrows, cols, figsize=(w * cols, (3.2 if cols == 1 else 2.8) * nrows), squeeze=False
    )
    for ax in axes.flat[len(tags) :]:
        ax.set_visible(False)
    for ax, tag in zip(axes.flat, tags):
        for gi, (g, members) in enumerate(groups.items()):
            curves = []
            for r in members:
                if tag not in runs[r]:
                    continue
                steps, vals = runs[r][tag]
                xs = _to_env_steps(r, runs[r], steps) if x == "env_steps" else steps.astype(float)
                curves.append((xs, vals))
            if not curves:
                continue
            color = f"C{gi % 10}"
            label = g if len(curves) == 1 else f"{g} ({len(curves)} seeds)"
            if len(curves) == 1:
                ax.plot(*curves[0], color=color, label=label)
                continue
            hi_x = min(c[0].max() for c in curves)
            grid = np.unique(np.concatenate([c[0] for c in curves]))
            grid = grid[grid <= hi_x]
            ys = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
            mean = ys.mean(0)
            lo, hi = (ys.min(0), ys.max(0)) if band == "minmax" else (mean - ys.std(0), mean + ys.std(0))
            ax.plot(grid, mean, color=color, label=label)
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_title(tag)
        ax.set_xlabel("env steps" if x == "env_steps" else "step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# SAC diagnostics a person looks at first (the loop report's second figure); only those a run logged are drawn
SAC_DIAGNOSTIC_TAGS = ("q/mean", "q/max", "alpha", "losses/critic", "losses/actor", "charts/episodic_return")


def plot_loop_summary(
    rows: Sequence[tuple[str, dict]],
    out: str | Path,
    expert: dict | None = None,
    sac_history: Sequence[dict] | None = None,
) -> Path:
    """The loop report's figure: success rate and cycle time of every stage (held-out evaluation, with the
    expert as a reference line), and SAC's periodic evaluations over env steps beside the BC level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = ([("scripted expert", expert)] if expert else []) + list(rows)
    names = [n for n, _ in bars]
    succ = [r["success_rate"] for _, r in bars]
    ci = np.array([r.get("success_ci") or [v, v] for (_, r), v in zip(bars, succ)], float)
    cyc = [r.get("cycle_time_steps") for _, r in bars]
    ncols = 3 if sac_history else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.4 * ncols, 3.4))
    colors = (["0.6"] if expert else []) + [f"C{i}" for i in range(len(rows))]
    ax = axes[0]
    err = [np.clip(np.subtract(succ, ci[:, 0]), 0, None), np.clip(np.subtract(ci[:, 1], succ), 0, None)]
    ax.bar(names, succ, color=colors, yerr=err, capsize=4, ecolor="0.3")
    for i, v in enumerate(succ):
        ax.text(i, v + 0.02, f"{v:.0%}", ha="left", va="bottom", fontsize=9)
    ax.set_ylim(0, 1.15)
    ax.set_title("success rate (95% CI)")
    ax = axes[1]
    ax.bar(names, [np.nan if v is None else v for v in cyc], color=colors)
    top = max([v for v in cyc if v is not None] or [1.0])
    for i, v in enumerate(cyc):
        ax.text(
            i,
            (v if v is not None else 0) + 0.01 * top,
            "no success" if v is None else f"{v:.0f}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylim(0, 1.2 * top)
    ax.set_title("cycle time (env steps to success)")
    for a in axes[:2]:
        a.grid(alpha=0.3, axis="y")
        a.tick_params(axis="x", labelsize=8)
    if sac_history:
        ax = axes[2]
        steps = [h["step"] for h in sac_history]
        ax.plot(
            steps,
            [h["success_rate"] for h in sac_history],
            marker="o",
            color="C2",
            label="SAC (periodic eval)",
        )
        if rows:
            ax.axhline(rows[0][1]["success_rate"], color="C0", ls=":", label=f"{rows[0][0]} (start)")
        if expert:
            ax.axhline(expert["success_rate"], color="k", ls="--", lw=1, label="scripted expert")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("env steps")
        ax.set_title("SAC fine-tuning: success rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out)
