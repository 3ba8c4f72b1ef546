"""CLI entry points: `robolearn eval` (Hydra-composed EvalConfig), `robolearn plot`, `robolearn compare`."""

from __future__ import annotations

import argparse


def cmd_eval(args: list[str]) -> int:
    from robolearn.cli import UserError, _config_help, _wants_help
    from robolearn.eval.config import EvalConfig

    if _wants_help(args):
        print(_config_help("eval", EvalConfig))
        print(
            "\nEpisode i of seed s starts from env seed s*10000+i: every checkpoint sees the same initial states."
        )
        return 0
    from robolearn.cli import compose

    cfg = compose("eval", args)
    from robolearn.eval.runner import EvalError, evaluate
    from robolearn.policies.checkpoint import CheckpointError

    try:
        evaluate(cfg)
    except (EvalError, CheckpointError) as e:
        raise UserError(str(e)) from None
    return 0


def cmd_plot(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="robolearn plot",
        description="Learning curves (PNG) from run folders' TensorBoard logs. Runs named <name>_s0, <name>_s1, "
        "... (or _seed0) are grouped into mean ± band.",
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run folder(s) holding events.out.tfevents.* files"
    )
    p.add_argument("--out", default="curves.png", help="PNG to write (default: curves.png)")
    p.add_argument(
        "--tag",
        action="append",
        default=None,
        help="scalar tag to plot, repeatable (default: every tag the runs share, one subplot each)",
    )
    p.add_argument(
        "--x",
        choices=("step", "env_steps"),
        default="step",
        help="x axis: the logged step, or env steps from a charts/env_steps scalar",
    )
    p.add_argument("--band", choices=("minmax", "std"), default="minmax", help="spread across seeds")
    a = p.parse_args(args)
    from robolearn.cli import UserError, console
    from robolearn.eval.plots import PlotError, plot_runs

    try:
        out = plot_runs(a.runs, a.out, tags=a.tag, x=a.x, band=a.band)
    except PlotError as e:
        raise UserError(str(e)) from None
    console.print(f"wrote {out}")
    return 0


def cmd_compare(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="robolearn compare",
        description="A HIL-SERL-style Markdown table (rows = tasks; per checkpoint: success rate, cycle time, and "
        "the change vs the first = baseline) from several `robolearn eval` results.",
    )
    p.add_argument("results", nargs="+", metavar="RESULT", help="results.json, or a folder containing one")
    p.add_argument(
        "--names",
        default=None,
        help="comma-separated column name per RESULT (e.g. BC,BC+DAgger); the same name on results "
        "of different tasks puts them in one column. Default: each result's folder name",
    )
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    a = p.parse_args(args)
    from pathlib import Path

    from robolearn.cli import UserError, console
    from robolearn.eval.compare import CompareError, compare_table, default_name, load_result

    try:
        results = [load_result(r) for r in a.results]
        names = (
            [n.strip() for n in a.names.split(",")]
            if a.names
            else [default_name(res, path) for res, path in zip(results, a.results)]
        )
        table = compare_table(results, names)
    except CompareError as e:
        raise UserError(str(e)) from None
    console.print(table, markup=False, highlight=False)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(table)
        console.print(f"wrote {a.out}")
    return 0
