"""The commands behind `robolearn <command>`: parse/compose the config, call the library, print a table,
pick the exit code. Nothing in the library imports this module."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from robolearn.cli import CONFIG_DIR, UserError, _config_help, _summary_table, _wants_help, compose, console
from robolearn.signals import exit_code


def cmd_record(args: list[str]) -> int:
    from robolearn.config import RecordConfig

    if _wants_help(args):
        from robolearn.seeds import HELP

        print(_config_help("record", RecordConfig))
        print(f"\n{HELP}")
        return 0
    cfg = compose("record", args)
    if cfg.teleop is not None:
        from robolearn.teleop.app import record_teleop

        summary = record_teleop(cfg)
    else:
        from robolearn.recording import record

        summary = record(cfg)
    _summary_table(f"record {cfg.env}", summary)
    return exit_code(signum=summary.get("signal", 2)) if summary.get("interrupted") else 0


def cmd_inspect(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="robolearn inspect", description="Summarise (and validate) an episode store."
    )
    p.add_argument("file")
    p.add_argument("--validate", action="store_true", help="read every array; exit non-zero on any defect")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = p.parse_args(args)
    from robolearn.data.inspect import inspect_file

    return inspect_file(a.file, validate=a.validate, as_json=a.json, console=console)


def cmd_convert(args: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="robolearn convert",
        description="Import a Minari dataset (from minari's local storage, ~/.minari or $MINARI_DATASETS_PATH) "
        "into robolearn's HDF5 layout.",
    )
    p.add_argument("dataset", help="Minari dataset id, e.g. mujoco/pusher/expert-v0")
    p.add_argument("out", help="HDF5 file to write")
    p.add_argument("--source", default="policy", help="episode source attribute (default: policy)")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(args)
    from robolearn.data.convert import convert_minari

    summary = convert_minari(a.dataset, a.out, source=a.source, overwrite=a.overwrite)
    _summary_table(f"convert {a.dataset}", summary)
    return 0


def cmd_train(args: list[str]) -> int:
    from robolearn.algos.bc import TrainConfig, train
    from robolearn.cli import _config_help, _summary_table, compose
    from robolearn.policies import HEADS

    if any(a in ("-h", "--help") for a in args):
        print(_config_help("train", TrainConfig))
        print("  policy=<head>                            one of", sorted(HEADS))
        print("  policy.head_cfg.<field>=...              the head's own config (e.g. num_modes for gmm)")
        return 0

    cfg = compose("train", args)
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        _summary_table(f"train {cfg.policy.head}", summary)
    return exit_code(signum=summary["signal"]) if summary.get("interrupted") else 0


def cmd_dagger(args: list[str]) -> int:
    from robolearn.algos.dagger import DaggerConfig, run_dagger
    from robolearn.cli import _config_help, _summary_table, compose

    if any(a in ("-h", "--help") for a in args):
        print(_config_help("dagger", DaggerConfig))
        return 0
    cfg = compose("dagger", args)
    res = run_dagger(cfg)
    rows = {
        f"round {h['round']}": f"labels {h['labels']}, success {h.get('success_rate', float('nan')):.2f}"
        for h in res["history"]
    }
    _summary_table(
        f"dagger mode={cfg.mode} {res['env']}",
        {**rows, "policy": res["policy"], "aggregate": res["aggregate"]},
    )
    return 0


def cmd_finetune(args: list[str]) -> int:
    from robolearn.algos.finetune import GAUSSIAN_HEADS, FinetuneConfig, finetune
    from robolearn.cli import _config_help, _summary_table

    if any(a in ("-h", "--help") for a in args):
        print(_config_help("finetune", FinetuneConfig))
        print(
            f"\n  bridges: residual (any head), gaussian ({'/'.join(GAUSSIAN_HEADS)} heads), none (SAC from scratch)"
        )
        return 0
    from robolearn.cli import compose

    cfg = compose("finetune", args)
    summary = finetune(cfg)  # ConfigError / FloatingPointError: main() prints the message, exit 2
    _summary_table(f"finetune {cfg.bridge}", summary)
    from robolearn.signals import exit_code

    return exit_code(signum=summary["signal"]) if summary.get("interrupted") else 0


def cmd_eval(args: list[str]) -> int:
    from robolearn.cli import _config_help, _wants_help
    from robolearn.eval.config import EvalConfig

    if _wants_help(args):
        print(_config_help("eval", EvalConfig))
        from robolearn.seeds import HELP

        print(
            "\nEpisode i of seed s starts from env seed s*10000+i: every checkpoint sees the same initial states."
        )
        print(f"\n{HELP}")
        return 0
    from robolearn.cli import compose

    cfg = compose("eval", args)
    from robolearn.eval.runner import evaluate

    evaluate(cfg)  # EvalError / CheckpointError: main() prints the message, exit 2
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
    p.add_argument("--cols", type=int, default=1, help="panels per row (a grid for many tags; default 1)")
    a = p.parse_args(args)
    from robolearn.cli import console
    from robolearn.eval.plots import PlotError, plot_runs

    try:
        out = plot_runs(a.runs, a.out, tags=a.tag, x=a.x, band=a.band, cols=a.cols)
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


def cmd_loop(args: list[str]) -> int:
    from rich.table import Table

    from robolearn.cli import _config_help, compose, console
    from robolearn.loop import LoopConfig, run_loop

    if any(a in ("-h", "--help") for a in args):
        print(_config_help("loop", LoopConfig))
        print(
            "\npresets: robolearn loop --config-name <name>, with <name> one of:",
            sorted(p.stem for p in (CONFIG_DIR / "loop").glob("*.yaml")),
        )
        return 0
    cfg = compose("loop", args)
    res = run_loop(cfg)
    t = Table(title=f"robolearn loop: {cfg.env} ({cfg.policy})")
    for c in ("stage", "success", "95% CI", "cycle time (steps)", "return"):
        t.add_column(c)
    for name, r in ([("expert", res["expert"])] if res["expert"] else []) + res["rows"]:
        ci = r.get("success_ci") or [0, 0]
        ct = r.get("cycle_time_steps")
        t.add_row(
            name,
            f"{r['success_rate']:.0%}",
            f"{ci[0]:.0%}-{ci[1]:.0%}",
            "-" if ct is None else f"{ct:.1f}",
            f"{r.get('return_mean', 0):.1f}",
        )
    console.print(t)
    console.print(f"report: {res['report']}")
    if res["video"]:
        console.print(f"video: {res['video']}")
    return 0


def cmd_sweep(args: list[str]) -> int:
    from robolearn.cli import _config_help, compose, console
    from robolearn.scale.sweep import SweepConfig, run_sweep

    if _wants_help(args):
        from robolearn.scale import sweep

        print(_config_help("sweep", SweepConfig))
        print(
            "\npresets: robolearn sweep --config-name <name>, with <name> one of:",
            sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml")),
        )
        print("\n" + (sweep.__doc__ or "").split("\n\n", 2)[2].strip())
        return 0
    cfg = compose("sweep", args)
    res = run_sweep(cfg, compose=compose, echo=lambda m: console.print(m, markup=False, highlight=False))
    if cfg.dry_run:
        return 0
    console.print(res["table"], markup=False, highlight=False)
    console.print(f"table: {cfg.out}/table.md, every cell: {cfg.out}/sweep.json", markup=False, highlight=False)
    if res["failed"]:
        console.print(f"{len(res['failed'])} cell(s) failed: {res['failed']} (see their cell.log; rerun to retry)",
                      markup=False, highlight=False)
        return 1
    return 0
