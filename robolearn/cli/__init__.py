"""The one `robolearn` command: `robolearn <command> key=value ...` (Hydra overrides).

Commands that take a config (record, train, eval, finetune, dagger, loop) compose it with Hydra's
Compose API from the typed dataclasses in `robolearn.config` (plus YAML under `configs/` where a
command has presets), so `robolearn train policy=diffusion data=x.hdf5 train.steps=2000` works and a
wrong value fails before any work. File-oriented commands (inspect, convert, plot, compare) take
ordinary arguments.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from robolearn.errors import UserError  # re-exported: the CLI prints it without a traceback

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"


# ------------------------------------------------------------------------------------------- composing
def compose(command: str, overrides: list[str]):
    """Compose the typed config of `command` with Hydra overrides; returns the dataclass instance."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from robolearn.config import ConfigError

    register_configs(command)
    config_name = command
    rest = []
    i = 0
    while i < len(
        overrides
    ):  # --config-name NAME / --config-name=NAME picks a preset under configs/<command>/
        o = overrides[i]
        if o == "--config-name" and i + 1 < len(overrides):
            config_name = f"{command}/{overrides[i + 1]}"
            i += 2
            continue
        if o.startswith("--config-name="):
            config_name = f"{command}/{o.split('=', 1)[1]}"
        else:
            rest.append(o)
        i += 1
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=rest)
        return OmegaConf.to_object(cfg)
    except ConfigError as e:
        raise UserError(f"config error: {e}") from None
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).replace("\n\n", "\n").strip()
        raise UserError(f"config error: {msg}\n(see `robolearn {command} --help` for the fields)") from None
    except ValueError as e:
        raise UserError(f"config error: {e}") from None
    finally:
        GlobalHydra.instance().clear()


def _config_help(command: str, cls) -> str:
    from robolearn.config import help_lines

    doc = (COMMANDS[command][1] or "").strip()
    return "\n".join(
        [f"usage: robolearn {command} [key=value ...]", "", doc, "", "fields:", *help_lines(cls)]
    )


def _wants_help(args: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in args)


def _summary_table(title: str, summary: dict) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        t.add_row(k, str(v))
    console.print(t)


# name -> (function or "module:function", one-line help). A command whose module is not there (a stage
# not built yet) is left out of --help instead of showing a stub.
C = "robolearn.cli.commands:"
COMMANDS: dict[str, tuple[str, str]] = {
    "record": (C + "cmd_record", "Record episodes (scripted expert or teleop) into an HDF5 store."),
    "inspect": (C + "cmd_inspect", "Summarise an HDF5 store; --validate exits non-zero on any defect."),
    "convert": (C + "cmd_convert", "Import a Minari dataset into robolearn's HDF5 layout."),
    "train": (C + "cmd_train", "Train a behaviour-cloning policy (mse|gmm|tokenized|diffusion|flow)."),
    "eval": (C + "cmd_eval", "Evaluate a checkpoint (or scripted/random) on fixed seeds."),
    "plot": (C + "cmd_plot", "Learning curves (PNG) from run folders' TensorBoard logs."),
    "compare": (C + "cmd_compare", "A HIL-SERL-style table from several results.json."),
    "dagger": (C + "cmd_dagger", "DAgger / interventions: label, aggregate, retrain."),
    "finetune": (C + "cmd_finetune", "Fine-tune a BC policy online with SAC, demos mixed in."),
    "loop": (C + "cmd_loop", "The whole loop: demos -> BC -> DAgger -> SAC -> eval, one report."),
    "sweep": (C + "cmd_sweep", "A grid of train/eval/dagger/finetune/loop runs on Ray, one table."),
}


def _resolve(entry: str) -> Callable[[list[str]], int]:
    import importlib

    mod, fn = entry.split(":")
    return getattr(importlib.import_module(mod), fn)


def _available() -> dict[str, tuple[str, str]]:
    return dict(COMMANDS)


def register_configs(command: str | None = None) -> None:
    """Put every command's schema into Hydra's ConfigStore (idempotent).

    The `policy` config group (policy=<head>) exists only while composing `train`: other commands have a
    plain `policy` field (a checkpoint path) that a same-named group would capture."""
    from hydra.core.config_store import ConfigStore

    from robolearn.algos.bc import register_policy_group
    from robolearn.loop import register_loop_presets

    cs = ConfigStore.instance()
    for name, cls in command_configs().items():
        cs.store(name=name, node=cls)
    if command in (None, "train"):
        register_policy_group(cs)
    else:
        cs.repo.pop("policy", None)
    register_loop_presets(cs)
    from robolearn.scale.sweep import register_sweep_presets

    register_sweep_presets(cs)


def command_configs() -> dict[str, type]:
    """command -> its config dataclass."""
    from robolearn.algos.bc import TrainConfig
    from robolearn.algos.dagger import DaggerConfig
    from robolearn.algos.finetune import FinetuneConfig
    from robolearn.config import RecordConfig
    from robolearn.eval.config import EvalConfig
    from robolearn.loop import LoopConfig
    from robolearn.scale.sweep import SweepConfig

    return {
        "record": RecordConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
        "dagger": DaggerConfig,
        "finetune": FinetuneConfig,
        "loop": LoopConfig,
        "sweep": SweepConfig,
    }


def usage() -> str:
    lines = ["usage: robolearn <command> [key=value ...]", "", "commands:"]
    for name, (_, doc) in _available().items():
        lines.append(f"  {name:<10} {doc}")
    lines += [
        "",
        "`robolearn <command> --help` lists a command's fields. Example:",
        "  robolearn record env=robolearn/Lift-v0 expert=scripted episodes=50 out=datasets/lift.hdf5",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event-file watcher chats at INFO
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    cmd = argv[0]
    avail = _available()
    if cmd not in avail:
        err_console.print(f"robolearn: unknown command {cmd!r}; valid commands: {list(avail)}")
        return 2
    debug = "--debug" in argv or os.environ.get("ROBOLEARN_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return _resolve(avail[cmd][0])(argv[1:]) or 0
    except KeyboardInterrupt as e:
        from robolearn.signals import exit_code

        err_console.print(
            f"robolearn {cmd}: interrupted ({e}); finished work is kept, rerun the same command to continue",
            markup=False,
            highlight=False,
        )
        return exit_code(e)
    except Exception as e:  # noqa: BLE001 - sorted below: the user's errors get a message, bugs a traceback
        msg = user_message(e)
        if msg is None or debug:
            raise
        err_console.print(f"robolearn {cmd}: {msg}", markup=False, highlight=False)
        return 2 if isinstance(e, (UserError, ValueError, FloatingPointError)) else 1


def user_message(e: BaseException) -> str | None:
    """The message of an error the user can act on (bad config, file, checkpoint, disk), else None (a bug:
    shown with its traceback). `--debug` or ROBOLEARN_DEBUG=1 shows the traceback for every error."""
    from robolearn.config import ConfigError
    from robolearn.data.store import StoreError
    from robolearn.policies.checkpoint import CheckpointError

    known: tuple[type[BaseException], ...] = (UserError, ConfigError, StoreError, CheckpointError)
    try:
        from robolearn.eval.runner import EvalError

        known += (EvalError,)
    except ImportError:
        pass
    if isinstance(e, known):
        return str(e)
    if isinstance(e, FloatingPointError):  # our trainers raise it with the step, the value and the fix
        return str(e)
    if isinstance(e, OSError) and e.errno in (
        errno.ENOSPC,
        errno.EACCES,
        errno.EROFS,
        errno.EPERM,
        errno.EDQUOT,
        errno.ENOENT,
        errno.EISDIR,
        errno.ENOTDIR,
    ):
        if "Fix:" in str(e):  # our own OSErrors (checkpoint writes) carry the whole message
            return e.strerror if e.strerror and "Fix:" in e.strerror else str(e)
        fix = {
            errno.ENOSPC: "free space or use out= on another disk",
            errno.EDQUOT: "free space",
            errno.ENOENT: "check the path",
        }.get(e.errno, "use a writable out= folder")
        return f"{e.strerror or e}: {e.filename or '?'}. Fix: {fix}"
    return None


if __name__ == "__main__":
    sys.exit(main())
