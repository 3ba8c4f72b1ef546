"""`robolearn compare`: several results.json -> one Markdown table in the shape of HIL-SERL's results table.

Rows are tasks (env ids); each checkpoint (column group) shows success rate and cycle time, and every group
after the first (the baseline) also shows its change vs the baseline on the same task:
success as a RELATIVE change (0.40 -> 0.54 is ``+35%``; from a 0% baseline the absolute ``+54 pp``), cycle time
as a speed ratio (baseline time / this time: ``1.8× faster``, or ``1.3× slower``). Cycle time is the mean time
to success over successful episodes (results.json ``cycle_time_s``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


class CompareError(ValueError):
    """A results file is missing or unreadable; the message names it."""


def load_result(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise CompareError(
            f"{str(path)!r}: no results.json there (run `robolearn eval ... out={path}` first)"
        )
    try:
        res = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CompareError(f"{str(p)!r} is not valid JSON: {e}") from None
    for k in ("env", "success_rate"):
        if k not in res:
            raise CompareError(f"{str(p)!r} has no {k!r}: not a robolearn eval results.json")
    return res


def default_name(res: dict, path: str | Path) -> str:
    pol = str(res.get("policy", ""))
    if pol in ("scripted", "random"):
        return pol
    p = Path(path)
    return (p if p.is_dir() else p.parent).name or pol or str(path)


def _rel_success(base: float, new: float) -> str:
    if base > 0:
        return f"{(new - base) / base:+.0%}"
    return f"{100 * (new - base):+.0f} pp"


def _speed(base: float | None, new: float | None) -> str:
    if base is None or new is None or new <= 0 or base <= 0:
        return "–"
    r = base / new
    if abs(r - 1) < 0.05:
        return "same"
    return f"{r:.1f}× faster" if r > 1 else f"{1 / r:.1f}× slower"


def _fmt_time(t: float | None) -> str:
    return "–" if t is None else f"{t:.1f} s"


def compare_table(results: Sequence[dict], names: Sequence[str]) -> str:
    """results[i] is named names[i]; same name + different env = same column, another row. -> Markdown."""
    if len(results) != len(names):
        raise CompareError(f"{len(names)} names for {len(results)} results; give one name per RESULT")
    cols: list[str] = list(dict.fromkeys(names))
    tasks: list[str] = list(dict.fromkeys(r["env"] for r in results))
    cell: dict[tuple[str, str], dict] = {}
    for r, n in zip(results, names):
        if (r["env"], n) in cell:
            raise CompareError(f"two results named {n!r} for env {r['env']!r}; give distinct --names")
        cell[(r["env"], n)] = r
    base = cols[0]
    header = ["Task"]
    for i, c in enumerate(cols):
        header += [f"{c} success", f"{c} cycle time"]
        if i > 0:
            header += [f"Δ success vs {base}", f"speed vs {base}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for task in tasks:
        row = [task.removeprefix("robolearn/")]
        b = cell.get((task, base))
        for i, c in enumerate(cols):
            r = cell.get((task, c))
            if r is None:
                row += ["–", "–"] + (["–", "–"] if i > 0 else [])
                continue
            n = r.get("episodes")
            row += [f"{r['success_rate']:.0%}" + (f" ({n})" if n else ""), _fmt_time(r.get("cycle_time_s"))]
            if i > 0:
                if b is None:
                    row += ["–", "–"]
                else:
                    row += [
                        _rel_success(b["success_rate"], r["success_rate"]),
                        _speed(b.get("cycle_time_s"), r.get("cycle_time_s")),
                    ]
        lines.append("| " + " | ".join(row) + " |")
    if len(tasks) > 1:  # HIL-SERL's "Average" row: mean success, mean cycle time over tasks that have one
        row = ["**Average**"]
        avg: dict[str, tuple[float | None, float | None]] = {}
        for c in cols:
            rs = [cell[(t, c)] for t in tasks if (t, c) in cell]
            sr = sum(r["success_rate"] for r in rs) / len(rs) if rs else None
            ts = [r["cycle_time_s"] for r in rs if r.get("cycle_time_s") is not None]
            avg[c] = (sr, sum(ts) / len(ts) if ts else None)
        for i, c in enumerate(cols):
            sr, ct = avg[c]
            row += ["–" if sr is None else f"{sr:.0%}", _fmt_time(ct)]
            if i > 0:
                bsr, bct = avg[base]
                row += ["–" if sr is None or bsr is None else _rel_success(bsr, sr), _speed(bct, ct)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
