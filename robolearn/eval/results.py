"""What `robolearn eval` leaves behind: results.json (written last and atomically), episodes.csv/json, the
summary table; and the check that `out=` can take them before any rollout."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

CSV_FIELDS = (
    "index",
    "seed_group",
    "episode",
    "seed",
    "success",
    "return",
    "length",
    "steps_to_success",
    "time_to_success_s",
    "score",
    "video",
)


def write_results(out: Path, results: dict, records: list[dict]) -> None:
    """Per-episode files first, results.json last and atomically: a results.json means a finished evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "episodes.json").write_text(json.dumps(records, indent=1) + "\n")
    with open(out / "episodes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in records:
            w.writerow({k: "" if r[k] is None else r[k] for k in CSV_FIELDS})
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out / "results.json")


def check_out_dir(out: Path, field: str = "out") -> None:
    """Before any rollout: out= must be (or become) a writable folder, so results are never lost at the end."""
    if out.exists() and not out.is_dir():
        raise _eval_error(
            f"{field}={str(out)!r} is a file; the results go into a folder (results.json, episodes.csv, "
            f"videos/). Fix: {field}=<a new folder>"
        )
    anc = out
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise _eval_error(
            f"{field}={str(out)!r} cannot be written ({anc} is not a writable folder). Fix: "
            f"{field}=<a writable folder>"
        )


def print_summary(results: dict, out: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"eval {results['policy']} on {results['env']}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    lo, hi = results["success_ci"]
    cyc = results["cycle_time_s"]
    rows = [
        (
            "episodes",
            f"{results['episodes']} ({len(results['seeds'])} seed(s) x {results['episodes_per_seed']})",
        ),
        ("success_rate", f"{results['success_rate']:.1%}  [95% CI {lo:.1%}, {hi:.1%}]"),
        ("return", f"{results['return_mean']:.3g} ± {results['return_std']:.3g}"),
        ("length_mean", f"{results['length_mean']:.1f}"),
        ("cycle_time", "-" if cyc is None else f"{cyc:.2f} s ({results['cycle_time_steps']:.1f} steps)"),
        ("per seed", ", ".join(f"{s}: {v:.0%}" for s, v in results["success_rate_per_seed"].items())),
        ("speed", f"{results['episodes_per_s']:.2f} episodes/s ({results['workers']} worker(s))"),
    ]
    if out is not None:
        rows.append(("written", str(out / "results.json")))
    for k, v in rows:
        t.add_row(k, v)
    Console(soft_wrap=True).print(t)


def _eval_error(msg: str):
    from robolearn.eval.runner import EvalError  # the runner's error type (imported late: it imports us)

    return EvalError(msg)
