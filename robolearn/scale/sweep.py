"""`robolearn sweep`: a grid of train / eval / dagger / finetune / loop runs, one Ray task per cell.

    robolearn sweep --config-name bc_results                       # configs/sweep/bc_results.yaml
    robolearn sweep command=train 'grid={policy:[mse,flow],train.seed:[0,1,2]}' \\
        'fixed=[data=datasets/lift.hdf5,train.steps=2000,train.eval_episodes=50]' out=runs/sweep_lift
    robolearn sweep --config-name bc_results address=auto            # on a Ray cluster (from a cluster node)

The grid: `axis: [v1, v2, ...]` makes the override `axis=v` (axis is a field path of the command's config,
e.g. env, policy, train.seed); `axis: {label: override(s), ...}` names variants made of any overrides
(`gmm_mode: [policy=gmm, policy.head_cfg.sample_mode=mode]`). Every override (grid and `fixed`) may use
`{axis}` (that cell's label on the axis), `{cell}` (the cell's folder) and `{out}` (the sweep's folder),
e.g. `data=datasets/{task}.hdf5`. The cells are the product of the axes, in order.

Each cell: its own folder `out/<axis>-<label>__<axis>-<label>.../` given to the command as `out=`; its config composed with
`robolearn.cli.compose(command, fixed + cell overrides)` in the driver, so a wrong value in any cell fails
before any work; run in a Ray task (`cpus_per_cell` CPUs, `threads_per_cell` torch threads) that calls the
library function; `cell.json` written last when it finished. Resumable: a rerun of the same sweep skips
finished cells; unfinished ones continue from their own checkpoints (train/finetune get resume=true when
`checkpoints/last.pt` exists; dagger and loop continue in the same folder by themselves). A worker that dies
mid-cell (killed, out of memory, a node lost) is retried by Ray, `retries` times, from the cell's last
checkpoint. An error of the cell itself (a bad file...) is not retried: the cell is reported failed, the
others go on, the sweep exits 1.

At the end: `out/table.md`, the metric's median [min-max] over the seed axis (rows = the other axes,
columns = `columns`), printed; `out/sweep.json` with every cell (overrides, folder, status, attempts, all
its scalar results). The metric is read from the cell's own files: results.json over summary.json
(train: summary.json; eval/dagger/finetune: results.json; loop: the last stage's eval_<stage>/results.json,
each stage also as `<stage>.<metric>`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.config import ConfigError, choice, opt, positive
from robolearn.errors import UserError
from robolearn.fileutil import write_json_atomic

log = logging.getLogger(__name__)

# command -> "module:function" run in the Ray worker with the composed config. By name: robolearn.loop is
# app-level, this package is not (eval and finetune import it), so it is loaded in the worker only.
RUNNERS = {
    "train": "robolearn.algos.bc:train",
    "eval": "robolearn.eval.runner:evaluate",
    "dagger": "robolearn.algos.dagger:run_dagger",
    "finetune": "robolearn.algos.finetune:finetune",
    "loop": "robolearn.loop:run_loop",
}
RESUMABLE = ("train", "finetune")  # need resume=true to continue from checkpoints/last.pt


@dataclass
class SweepConfig:
    command: str = opt("train", f"what every cell runs: {list(RUNNERS)}")
    grid: Any = opt(
        None,
        "axes: {field: [values]} (override field=value) or {axis: {label: override(s)}}; cells = the "
        "product. e.g. {policy: [mse, flow], train.seed: [0, 1, 2]}",
    )
    fixed: list[str] = opt([], "overrides every cell gets ({axis}, {cell}, {out} are filled in)")
    config_name: str | None = opt(None, "the command's preset (its --config-name), e.g. peg_insert for loop")
    out: str = opt("runs/sweep", "sweep folder: one sub-folder per cell, table.md, sweep.json")
    address: str | None = opt(
        None, "Ray: None = a local instance sized to this machine; auto (on a cluster node) | ray://host:10001"
    )
    num_cpus: int | None = opt(None, "size of the local Ray instance (None = this machine's CPU count)")
    cpus_per_cell: float = opt(1.0, "CPUs Ray reserves for each cell (cells run in parallel as CPUs allow)")
    threads_per_cell: int = opt(1, "torch intra-op threads in each cell")
    retries: int = opt(2, "times a cell whose worker died is run again (from its last checkpoint)")
    metric: str = opt("success_rate", "the table's number, read from each cell's results.json/summary.json")
    seed_axis: str | None = opt(None, "axis aggregated over (median [min-max]); None = the axis named *seed*")
    columns: str | None = opt(None, "axis spread over the table's columns; None = the first other axis if "
                              "two or more remain, else one column")
    dry_run: bool = opt(False, "compose and list the cells, run nothing")

    def __post_init__(self):
        choice("command", self.command, list(RUNNERS))
        if not self.grid or not isinstance(self.grid, dict):
            raise ConfigError(f"grid={self.grid!r}: give a map of axes, e.g. grid={{train.seed:[0,1,2]}}")
        for k, v in self.grid.items():
            if isinstance(v, dict):
                if not v:
                    raise ConfigError(f"grid.{k} has no variants")
            elif not isinstance(v, (list, tuple)) or not v:
                raise ConfigError(f"grid.{k}={v!r} must be a non-empty list of values or a {{label: overrides}} map")
        if not self.out:
            raise ConfigError("out is required (e.g. out=runs/sweep_bc)")
        positive("cpus_per_cell", self.cpus_per_cell)
        positive("threads_per_cell", self.threads_per_cell)
        positive("retries", self.retries, zero_ok=True)
        if self.num_cpus is not None:
            positive("num_cpus", self.num_cpus)
        for name in ("seed_axis", "columns"):
            v = getattr(self, name)
            if v is not None:
                choice(name, v, list(self.grid))

    def seed_key(self) -> str | None:
        if self.seed_axis:
            return self.seed_axis
        return next((k for k in self.grid if "seed" in k.split(".")[-1]), None)


def register_sweep_presets(cs) -> None:
    # configs/sweep/<name>.yaml start with `defaults: [base_sweep, _self_]`
    cs.store(group="sweep", name="base_sweep", node=SweepConfig)


# ------------------------------------------------------------------------------------------------ cells
def _label(v) -> str:
    s = str(v).split("/")[-1] if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", s).strip("-") or "x"


def _fill(text: str, labels: dict[str, str], cell: Path, out: Path) -> str:
    keys = {**labels, "cell": str(cell), "out": str(out)}
    pat = re.compile(r"\{(" + "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True)) + r")\}")
    return pat.sub(lambda m: keys[m.group(1)], text)


def _value(v) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v).lower() if isinstance(v, bool) else str(v)


def cells(cfg: SweepConfig) -> list[dict]:
    """The grid's cells in order: {"id", "labels" {axis: label}, "overrides", "dir"} (overrides filled in)."""
    out = Path(cfg.out).resolve()
    axes = []
    for k, v in cfg.grid.items():
        if isinstance(v, dict):
            axes.append([(k, str(lab), [o] if isinstance(o, str) else list(o)) for lab, o in v.items()])
        else:
            axes.append([(k, _label(x), [f"{k}={_value(x)}"]) for x in v])
    result = []
    for combo in itertools.product(*axes):
        labels = {k: lab for k, lab, _ in combo}
        cid = "__".join(f"{k.split('.')[-1]}-{_label(lab)}" for k, lab in labels.items())
        d = out / cid
        ov = [o for _, _, ovs in combo for o in ovs]
        ov = [_fill(o, labels, d, out) for o in [*cfg.fixed, *ov]] + [f"out={d}"]
        if cfg.config_name:
            ov = ["--config-name", cfg.config_name, *ov]
        result.append({"id": cid, "labels": labels, "overrides": ov, "dir": str(d)})
    ids = [c["id"] for c in result]
    if len(set(ids)) != len(ids):
        raise ConfigError("two cells get the same folder name; give the variants distinct labels")
    return result


def read_metrics(command: str, cell_dir: Path) -> dict:
    """A cell's scalar results, from its own files (results.json over summary.json)."""
    d = Path(cell_dir)
    m: dict[str, Any] = {}
    if command == "loop":
        stages = [p for s in ("bc", "dagger", "sac") if (p := d / f"eval_{s}" / "results.json").exists()]
        for p in stages:
            r = json.loads(p.read_text())
            name = p.parent.name.removeprefix("eval_")
            m.update({f"{name}.{k}": v for k, v in r.items() if _scalar(v)})
        if stages:
            m.update({k: v for k, v in json.loads(stages[-1].read_text()).items() if _scalar(v)})
        return m
    for name in ("summary.json", "results.json"):
        p = d / name
        if p.exists():
            m.update({k: v for k, v in json.loads(p.read_text()).items() if _scalar(v)})
    return m


def _scalar(v) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _load(entry: str):
    import importlib

    mod, fn = entry.split(":")
    return getattr(importlib.import_module(mod), fn)


def run_cell(command: str, cfg, cell_dir: str, threads: int) -> dict:
    """Body of a cell's Ray task (also runnable in-process): resume if there is a checkpoint, run, mark done."""
    import torch

    d = Path(cell_dir)
    d.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    attempts = json.loads((d / "attempts.json").read_text()) if (d / "attempts.json").exists() else []
    ck = d / "checkpoints" / "last.pt"
    resumed = command in RESUMABLE and ck.exists()
    attempts.append({"pid": os.getpid(), "start": time.time(), "resumed": resumed})
    write_json_atomic(d / "attempts.json", attempts)
    if resumed:
        cfg = dataclasses.replace(cfg, resume=True)
    log_f = open(d / "cell.log", "a")  # noqa: SIM115 - the cell's stdout/stderr/logging for its whole run
    handler = logging.StreamHandler(log_f)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log_f
    t0 = time.time()
    try:
        kw = {"show": False} if command == "eval" else {}
        res = _load(RUNNERS[command])(cfg, **kw)
    finally:
        sys.stdout, sys.stderr = old
        root.removeHandler(handler)
        log_f.close()
    if isinstance(res, dict) and res.get("interrupted"):
        from robolearn.signals import Interrupted

        raise Interrupted(res.get("signal", 2), f"{d.name} interrupted at step {res.get('step')}")
    record = {"done": True, "command": command, "seconds": time.time() - t0, "attempts": len(attempts),
              "resumed": resumed, "metrics": read_metrics(command, d)}
    write_json_atomic(d / "cell.json", record)  # last: a cell.json means the cell finished
    return record


# ------------------------------------------------------------------------------------------------ sweep
def run_sweep(cfg: SweepConfig, compose=None, echo=print) -> dict:
    """Run (or finish) the sweep; returns sweep.json's dict. compose: (command, overrides) -> config (default
    robolearn.cli.compose, loaded by name like the runners)."""
    from robolearn.scale import connect, unwrap

    compose = compose or _load("robolearn.cli:compose")
    out = Path(cfg.out).resolve()
    grid = cells(cfg)
    for c in grid:  # every cell's config, composed and validated before any work
        try:
            c["cfg"] = compose(cfg.command, c["overrides"])
        except (UserError, ConfigError) as e:
            raise UserError(f"cell {c['id']}: {e}") from None
        c["status"] = "done" if (Path(c["dir"]) / "cell.json").exists() else "pending"
    todo = [c for c in grid if c["status"] != "done"]
    echo(f"sweep {cfg.command}: {len(grid)} cells, {len(grid) - len(todo)} already done, {len(todo)} to run "
         f"-> {out}")
    if cfg.dry_run:
        for c in grid:
            echo(f"  [{c['status']}] {c['id']}: {' '.join(c['overrides'])}")
        return {"cells": [{k: v for k, v in c.items() if k != "cfg"} for c in grid]}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if todo:
        ray, started = connect(cfg.address, num_cpus=cfg.num_cpus)
        try:
            task = ray.remote(run_cell).options(
                num_cpus=cfg.cpus_per_cell, max_retries=cfg.retries, retry_exceptions=False
            )
            refs = {task.remote(cfg.command, c["cfg"], c["dir"], cfg.threads_per_cell): c for c in todo}
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                c = refs[ready[0]]
                try:
                    ray.get(ready[0])
                    c["status"] = "done"
                except Exception as e:  # noqa: BLE001 - one cell's failure is reported; the others go on
                    err = unwrap(e)
                    c["status"], c["error"] = "failed", f"{type(err).__name__}: {str(err).strip()[-2000:]}"
                    if isinstance(err, KeyboardInterrupt):
                        raise err from None
                n_done = sum(x["status"] == "done" for x in grid)
                echo(f"[{n_done}/{len(grid)}] {c['id']}: {c['status']}"
                     + (f" ({c['error'].splitlines()[0]})" if c.get("error") else ""))
        except KeyboardInterrupt:
            echo("sweep interrupted: finished cells are kept; rerun the same command to continue the others")
            raise
        finally:
            if started:
                ray.shutdown()
    for c in grid:
        f = Path(c["dir"]) / "cell.json"
        if f.exists():
            rec = json.loads(f.read_text())
            c.update(metrics=rec["metrics"], attempts=rec["attempts"], seconds=rec["seconds"])
        c.pop("cfg", None)
    table = make_table(cfg, grid)
    (out / "table.md").write_text(table)
    result = {
        "command": cfg.command,
        "metric": cfg.metric,
        "config": dataclasses.asdict(cfg),
        "wall_s": time.time() - t0,
        "cells": grid,
        "table": table,
        "failed": [c["id"] for c in grid if c["status"] != "done"],
    }
    write_json_atomic(out / "sweep.json", result)
    return result


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and 0.0 <= v <= 1.0:
        return f"{v:.0%}"
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def aggregate(values: list[float]) -> str:
    """median [min-max] (a single value as is)."""
    if not values:
        return "-"
    if len(values) == 1:
        return _fmt(values[0])
    return f"{_fmt(float(np.median(values)))} [{_fmt(min(values))}-{_fmt(max(values))}]"


def make_table(cfg: SweepConfig, grid: list[dict]) -> str:
    """Markdown: the metric's median [min-max] over the seed axis; rows = the other axes, columns = `columns`."""
    seed = cfg.seed_key()
    rest = [k for k in cfg.grid if k != seed]
    col = cfg.columns or (rest[0] if len(rest) >= 2 else None)
    row_axes = [k for k in rest if k != col]
    order = {k: list(dict.fromkeys(c["labels"][k] for c in grid)) for k in cfg.grid}
    cols = order[col] if col else [cfg.metric]
    rows = list(itertools.product(*[order[k] for k in row_axes])) if row_axes else [()]
    over = f"median [min-max] over {seed} {order[seed]}" if seed else "one run per cell"
    heads = [a.split(".")[-1] for a in row_axes] or ["run"]
    lines = [f"{cfg.metric}, {over}", "", "| " + " | ".join([*heads, *cols]) + " |",
             "|" + "---|" * (len(heads) + len(cols))]
    for r in rows:
        cells_ = []
        for cv in cols:
            sel = [c for c in grid if all(c["labels"][k] == v for k, v in zip(row_axes, r))
                   and (col is None or c["labels"][col] == cv)]
            vals = [c["metrics"].get(cfg.metric) for c in sel if c.get("metrics")]
            vals = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            missing = len(sel) - len(vals)
            cells_.append(aggregate(vals) + (f" ({missing} missing)" if missing and vals else ""))
        lines.append("| " + " | ".join([*(r or ("all",)), *cells_]) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["SweepConfig", "run_sweep", "cells", "make_table", "read_metrics", "run_cell", "RUNNERS"]
