"""`robolearn loop`: demos -> BC -> DAgger -> SAC fine-tuning -> evaluation, into one report folder.

    robolearn loop --config-name peg_insert          # configs/loop/peg_insert.yaml
    robolearn loop env=robolearn/PushT-v0 policy=gmm out=runs/loop_pusht

Every stage writes into its own sub-folder of `out/` with a `stage.json` naming its inputs (config and the
sha256 of the files it read). A stage is done only when its run completed (`"done": true`); an interrupted
stage makes the loop exit 130/143 at once, and rerunning the same command resumes it from its own
checkpoint. When a stage's inputs change (an upstream stage was retrained, a config value differs), its old
folder is moved to `out/stale/` and the stage runs again, so no report mixes results of different runs:

    out/demos.hdf5           scripted demonstrations (or a copy of `demos=`)
    out/bc/                  robolearn train run          out/eval_bc/       its evaluation
    out/dagger/              robolearn dagger run         out/eval_dagger/
    out/sac/                 robolearn finetune run       out/eval_sac/
    out/report.md            the HIL-SERL-shaped table, summary.png (success and cycle time per stage),
                             sac_diagnostics.png, videos, config and versions
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robolearn.algos.bc import TrainConfig, TrainLoopConfig, train
from robolearn.config import ConfigError, choice, env_id, opt, positive
from robolearn.fileutil import file_digest, write_json_atomic
from robolearn.seeds import demo_seed
from robolearn.signals import Interrupted

log = logging.getLogger(__name__)
STAGES = ("bc", "dagger", "sac")


@dataclass
class LoopDaggerConfig:
    mode: str = opt("expert", "expert | intervention | auto (see robolearn dagger)")
    rounds: int = opt(2, "DAgger rounds")
    episodes_per_round: int = opt(10, "learner episodes per round")
    beta: float = opt(
        0.5,
        "mode=expert: share of expert actions in round 1 (robolearn dagger's default 1 would make a "
        "1-round stage expert rollouts only)",
    )
    steps: int = opt(1000, "BC gradient steps per round")
    retrain: str = opt("finetune", "scratch | finetune")


@dataclass
class LoopSACConfig:
    steps: int = opt(5000, "online env steps of SAC fine-tuning")
    bridge: str = opt("residual", "how the BC policy becomes the SAC actor (see robolearn finetune)")
    demo_ratio: float = opt(0.5, "share of demo transitions in each batch")
    reward_type: str = opt("sparse", "reward SAC optimises: sparse (success, HIL-SERL's choice) | dense")
    utd: int = opt(1, "critic updates per env step")
    eval_every: int = opt(
        1000, "evaluation every N env steps; keeps checkpoints/best.pt (0 = only at the end)"
    )
    critic_warmup: int = opt(1000, "critic-only updates before the actor moves")
    bc_weight: float = opt(1.0, "BC term on demo actions in the actor loss")
    intervention: str | None = opt(
        None,
        "a human in the loop during fine-tuning: scripted | keyboard | gamepad | spacemouse (robolearn finetune)",
    )


@dataclass
class LoopConfig:
    env: str = opt("robolearn/PegInsert-v0", "task")
    policy: str = opt("gmm", "BC head: mse | gmm | tokenized | diffusion | flow")
    out: str = opt("runs/loop", "report folder")
    demos: str | None = opt(None, "use this demo file instead of recording")
    demo_episodes: int = opt(30, "demos to record")
    expert: str = opt(
        "scripted",
        "the demonstrator (demos, DAgger labels, the reference row): scripted (the task's expert) | a checkpoint "
        "(.pt) of a trained agent, e.g. a SAC agent on Hopper-v5 (robolearn record expert=<checkpoint>)",
    )
    stages: list[str] = opt(list(STAGES), f"which stages run, in order: subset of {STAGES}")
    seed: int = opt(0, "seed for recording and training")
    eval_episodes: int = opt(50, "evaluation episodes per stage (same seeds for every stage)")
    eval_workers: int = opt(1, "parallel envs for evaluation")
    videos: int = opt(2, "eval videos per stage")
    To: int = opt(2, "BC observation history")
    Tp: int = opt(8, "BC action chunk")
    Ta: int = opt(4, "BC executed actions per plan")
    bc: TrainLoopConfig = field(default_factory=lambda: TrainLoopConfig(steps=2000, eval_episodes=0))
    head_cfg: dict[str, Any] = opt({}, "overrides of the head's config (e.g. {denoiser: mlp})")
    dagger: LoopDaggerConfig = field(default_factory=LoopDaggerConfig)
    sac: LoopSACConfig = field(default_factory=LoopSACConfig)

    def __post_init__(self):
        from robolearn.policies import HEADS

        env_id("env", self.env)
        if self.expert != "scripted" and not Path(self.expert).is_file():
            raise ConfigError(
                f"expert={self.expert!r}: no such checkpoint file; expert=scripted or a .pt file"
            )
        self.bc.check("bc.")
        positive("eval_workers", self.eval_workers)
        positive("videos", self.videos, zero_ok=True)
        for name in ("rounds", "episodes_per_round", "steps"):
            positive(f"dagger.{name}", getattr(self.dagger, name))
        choice("dagger.retrain", self.dagger.retrain, ("scratch", "finetune"))
        for name in ("steps", "utd"):
            positive(f"sac.{name}", getattr(self.sac, name))
        for name in ("eval_every", "critic_warmup", "bc_weight"):
            positive(f"sac.{name}", getattr(self.sac, name), zero_ok=True)
        if not 0.0 <= self.sac.demo_ratio <= 1.0:
            raise ConfigError(f"sac.demo_ratio={self.sac.demo_ratio!r} must be in [0, 1]")
        choice("sac.reward_type", self.sac.reward_type, ("sparse", "dense"))
        if self.sac.intervention is not None:
            from robolearn.algos.finetune_config import INTERVENTIONS

            choice("sac.intervention", self.sac.intervention, INTERVENTIONS)
        choice("policy", self.policy, sorted(HEADS))
        for s in self.stages:
            choice("stages[]", s, STAGES)
        positive("demo_episodes", self.demo_episodes)
        positive("eval_episodes", self.eval_episodes)
        choice("dagger.mode", self.dagger.mode, ("expert", "intervention", "auto"))
        if self.demos is not None and not Path(self.demos).exists():
            raise ConfigError(f"demos={self.demos!r}: no such file")


def register_loop_presets(cs) -> None:
    # configs/loop/<task>.yaml start with `defaults: [base_loop, _self_]`
    cs.store(group="loop", name="base_loop", node=LoopConfig)


# ------------------------------------------------------------------------------------------------ stages
class Stage:
    """A loop stage's folder and its `stage.json`: {"inputs": ..., "done": bool}.

    `begin()` -> True when the stage already completed on these inputs (skip it). A folder whose inputs
    differ (or that predates stage.json) is moved to out/stale/<name>-<time>/ and the stage starts afresh;
    one with the same inputs and done=false is an interrupted run that resumes from its own checkpoint."""

    def __init__(self, out: Path, name: str, inputs: dict):
        self.out, self.name, self.dir = out, name, out / name
        self.inputs = json.loads(json.dumps(inputs, sort_keys=True, default=str))
        self.marker = self.dir / "stage.json"

    def begin(self) -> bool:
        if self.marker.exists():
            try:
                st = json.loads(self.marker.read_text())
            except json.JSONDecodeError:
                st = {}
            if st.get("inputs") == self.inputs:
                return bool(st.get("done"))
            self._set_aside("its inputs changed")
        elif self.dir.exists() and any(self.dir.iterdir()):
            self._set_aside("it has no stage.json (written by an older robolearn, or by hand)")
        self._write(done=False)
        return False

    def finish(self) -> None:
        self._write(done=True)

    def _write(self, done: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.marker, {"stage": self.name, "inputs": self.inputs, "done": done})

    def _set_aside(self, why: str) -> None:
        dest = self.out / "stale" / f"{self.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
            n += 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.dir), str(dest))
        log.warning(
            "stage %s: %s; its old results moved to %s and the stage runs again", self.name, why, dest
        )


def _raise_if_interrupted(summary: dict, stage: str) -> None:
    if summary.get("interrupted"):
        raise Interrupted(summary.get("signal", 2), f"stage {stage} interrupted; rerun the loop to resume it")


def stage_demos(cfg: LoopConfig, out: Path) -> Path:
    from robolearn.config import RecordConfig
    from robolearn.data.store import read_info
    from robolearn.recording import record

    demos = out / "demos.hdf5"
    if cfg.demos:
        if not demos.exists():
            tmp = out / ".demos.hdf5.tmp"
            shutil.copyfile(cfg.demos, tmp)
            tmp.replace(demos)
        return demos
    have = len(read_info(demos).demos) if demos.exists() else 0
    if have < cfg.demo_episodes:  # resume an interrupted recording: only the missing episodes, new seeds
        _raise_if_interrupted(
            record(
                RecordConfig(
                    env=cfg.env,
                    episodes=cfg.demo_episodes - have,
                    out=str(demos),
                    seed=demo_seed(cfg.seed, have),  # the demo range: disjoint from the stages' eval seeds
                    expert=cfg.expert,
                    # a trained agent on a task without success (locomotion): every episode is a demo
                    success_only=cfg.expert == "scripted",
                )
            ),
            "demos",
        )
    return demos


def stage_bc(cfg: LoopConfig, out: Path, demos: Path) -> Path:
    from robolearn.policies import PolicyConfig

    st = Stage(
        out,
        "bc",
        {
            "demos": file_digest(demos),
            "policy": cfg.policy,
            "head_cfg": cfg.head_cfg,
            "To": cfg.To,
            "Tp": cfg.Tp,
            "Ta": cfg.Ta,
            "bc": asdict(cfg.bc),
            "seed": cfg.seed,
        },
    )
    ck = st.dir / "checkpoints" / "last.pt"
    if st.begin():
        return ck
    bc = TrainLoopConfig(**{**asdict(cfg.bc), "seed": cfg.seed})
    tcfg = TrainConfig(
        policy=PolicyConfig(head=cfg.policy, head_cfg=dict(cfg.head_cfg) or None),
        data=str(demos),
        out=str(st.dir),
        To=cfg.To,
        Tp=cfg.Tp,
        Ta=cfg.Ta,
        train=bc,
        resume=ck.exists(),
    )
    _raise_if_interrupted(train(tcfg), "bc")
    st.finish()
    return ck


def stage_dagger(cfg: LoopConfig, out: Path, demos: Path, policy: Path) -> Path:
    from robolearn.algos.dagger import DaggerConfig, run_dagger

    st = Stage(
        out,
        "dagger",
        {
            "demos": file_digest(demos),
            "policy": file_digest(policy),
            "dagger": asdict(cfg.dagger),
            "bc": asdict(cfg.bc),
            "seed": cfg.seed,
        },
    )
    if st.begin():
        return st.dir / "checkpoints" / "last.pt"
    d = cfg.dagger
    run_dagger(
        DaggerConfig(
            policy=str(policy),
            data=str(demos),
            env=cfg.env,
            out=str(st.dir),
            mode=d.mode,
            expert=cfg.expert,
            rounds=d.rounds,
            episodes_per_round=d.episodes_per_round,
            beta=d.beta,
            retrain=d.retrain,
            eval_episodes=0,
            seed=cfg.seed,
            train=TrainLoopConfig(**{**asdict(cfg.bc), "steps": d.steps, "seed": cfg.seed}),
        )
    )
    st.finish()
    return st.dir / "checkpoints" / "last.pt"


def stage_sac(cfg: LoopConfig, out: Path, demos: Path, policy: Path) -> Path:
    from robolearn.algos.finetune import FinetuneConfig, finetune

    st = Stage(
        out,
        "sac",
        {
            "demos": file_digest(demos),
            "policy": file_digest(policy),
            # intervention only when set, so loops from before the option resume their SAC stage
            "sac": {k: v for k, v in asdict(cfg.sac).items() if not (k == "intervention" and v is None)},
            "eval_episodes": cfg.eval_episodes,
            "seed": cfg.seed,
        },
    )
    ck = st.dir / "checkpoints" / "last.pt"
    # best.pt: the fine-tuned actor that did best on finetune's periodic evaluations (eval seed 1);
    # the loop evaluates it on seed 0, so the selection does not bias the table
    best = st.dir / "checkpoints" / "best.pt"
    if st.begin():
        return best if best.exists() else ck
    s = cfg.sac
    fcfg = FinetuneConfig(
        policy=str(policy),
        env=cfg.env,
        demos=str(demos),
        out=str(st.dir),
        steps=s.steps,
        bridge=s.bridge,
        demo_ratio=s.demo_ratio,
        reward_type=s.reward_type,
        utd=s.utd,
        eval_every=s.eval_every,
        eval_episodes=min(cfg.eval_episodes, 20),
        seed=cfg.seed,
        critic_warmup=s.critic_warmup,
        bc_weight=s.bc_weight,
        intervention=s.intervention,
        resume=ck.exists(),
    )
    _raise_if_interrupted(finetune(fcfg), "sac")
    st.finish()
    return best if best.exists() else ck


def stage_eval(cfg: LoopConfig, out: Path, name: str, ckpt: Path) -> dict:
    from robolearn.eval.config import EvalConfig
    from robolearn.eval.runner import evaluate

    st = Stage(
        out,
        f"eval_{name}",
        {"policy": file_digest(ckpt), "episodes": cfg.eval_episodes, "seeds": [0], "env": cfg.env},
    )
    if st.begin():
        return json.loads((st.dir / "results.json").read_text())
    # every stage is evaluated on the same fixed episode seeds (seed 0: env seeds 0..episodes-1) and with the
    # dense reward, so the return column compares (the SAC stage trains on the sparse one by default)
    res = evaluate(
        EvalConfig(
            policy=str(ckpt),
            env=cfg.env,
            episodes=cfg.eval_episodes,
            seeds=[0],
            workers=cfg.eval_workers,
            out=str(st.dir),
            videos=cfg.videos,
            reward_type="dense" if cfg.env.startswith("robolearn/") else None,
        ),
        show=False,
    )
    st.finish()
    return res


# ------------------------------------------------------------------------------------------------ report
def write_report(cfg: LoopConfig, out: Path, rows: list[tuple[str, dict]], expert: dict | None) -> Path:
    import robolearn

    lines = [f"# robolearn loop: {cfg.env}, BC head `{cfg.policy}`", ""]
    lines += [
        "| stage | success rate (95% CI) | cycle time (steps) | return | vs BC |",
        "|---|---|---|---|---|",
    ]
    base = rows[0][1] if rows else None
    ref = "scripted expert" if cfg.expert == "scripted" else "demonstrator (checkpoint)"
    for name, r in ([(ref, expert)] if expert else []) + rows:
        ci = r.get("success_ci") or [float("nan")] * 2
        ct = r.get("cycle_time_steps")
        rel = ""
        if base is not None and name != rows[0][0] and name != ref:
            d = r["success_rate"] - base["success_rate"]
            rel = f"{d:+.0%} success"
            if ct and base.get("cycle_time_steps"):
                rel += f", {base['cycle_time_steps'] / ct:.2f}x cycle speed"
        lines.append(
            f"| {name} | {r['success_rate']:.0%} ({ci[0]:.0%}-{ci[1]:.0%}) | "
            f"{'-' if ct is None else f'{ct:.1f}'} | {r.get('return_mean', float('nan')):.1f} | {rel} |"
        )
    lines += [
        "",
        f"{cfg.eval_episodes} evaluation episodes per stage on the same env seeds (0..{cfg.eval_episodes - 1}).",
        "",
    ]
    for name, _ in rows:
        vids = sorted((out / f"eval_{name}" / "videos").glob("*.mp4"))
        if vids:
            lines.append(f"- {name} video: `{vids[0].relative_to(out)}`")
    if (out / "summary.png").exists():
        lines += ["", "![success rate and cycle time per stage](summary.png)"]
    if (out / "sac_diagnostics.png").exists():
        lines += [
            "",
            "SAC diagnostics (Q, temperature, losses):",
            "",
            "![SAC diagnostics](sac_diagnostics.png)",
        ]
    lines += [
        "",
        "## Config",
        "```json",
        json.dumps(asdict(cfg), indent=2, default=str),
        "```",
        "",
        "## Versions",
        "",
    ]
    for mod in ("torch", "mujoco", "gymnasium", "numpy", "diffusers", "h5py"):
        try:
            lines.append(f"- {mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001
            pass
    lines.append(f"- robolearn {robolearn.__version__}, Python {platform.python_version()}")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    return path


def run_loop(cfg: LoopConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").unlink(missing_ok=True)  # rewritten from the stages' results once every stage is done
    demos = stage_demos(cfg, out)
    rows: list[tuple[str, dict]] = []
    ckpt = stage_bc(cfg, out, demos)
    rows.append(("bc", stage_eval(cfg, out, "bc", ckpt)))
    if "dagger" in cfg.stages:
        ckpt = stage_dagger(cfg, out, demos, ckpt)
        rows.append(("dagger", stage_eval(cfg, out, "dagger", ckpt)))
    if "sac" in cfg.stages:
        sac_ck = stage_sac(cfg, out, demos, ckpt)
        rows.append(("sac", stage_eval(cfg, out, "sac", sac_ck)))
    expert = _expert_row(cfg, out)
    _draw_figures(out, rows, expert)
    report = write_report(cfg, out, rows, expert)
    video = next(iter(sorted(out.glob(f"eval_{rows[-1][0]}/videos/*.mp4"))), None)
    return {"report": str(report), "video": str(video) if video else None, "rows": rows, "expert": expert}


def _draw_figures(out: Path, rows: list[tuple[str, dict]], expert: dict | None) -> None:
    """summary.png: success and cycle time per stage (+ SAC over env steps); sac_diagnostics.png: Q, alpha,
    losses in a small grid. A figure that cannot be drawn is logged, never fatal (the table is the result)."""
    from robolearn.eval.plots import SAC_DIAGNOSTIC_TAGS, plot_loop_summary, plot_runs, read_scalars

    for old in ("curves.png", "summary.png", "sac_diagnostics.png"):
        (out / old).unlink(missing_ok=True)
    try:
        res = out / "sac" / "results.json"
        hist = json.loads(res.read_text()).get("history") if res.exists() else None
        plot_loop_summary(rows, out / "summary.png", expert=expert, sac_history=hist)
    except Exception as e:  # noqa: BLE001
        log.warning("summary figure not drawn: %s", e)
    try:
        if (out / "sac" / "tb").exists():
            have = read_scalars(out / "sac")
            tags = [t for t in SAC_DIAGNOSTIC_TAGS if t in have]
            if tags:
                plot_runs([str(out / "sac")], out / "sac_diagnostics.png", tags=tags, x="step", cols=3)
    except Exception as e:  # noqa: BLE001
        log.warning("SAC diagnostics not drawn: %s", e)


def _expert_row(cfg: LoopConfig, out: Path) -> dict | None:
    from robolearn.eval.config import EvalConfig
    from robolearn.eval.runner import evaluate

    st = Stage(
        out,
        "eval_expert",
        {
            "policy": cfg.expert if cfg.expert == "scripted" else file_digest(Path(cfg.expert)),
            "episodes": cfg.eval_episodes,
            "seeds": [0],
            "env": cfg.env,
        },
    )
    if st.begin():
        return json.loads((st.dir / "results.json").read_text())
    res = evaluate(
        EvalConfig(
            policy=cfg.expert, env=cfg.env, episodes=cfg.eval_episodes, seeds=[0], out=str(st.dir), videos=0
        ),
        show=False,
    )
    st.finish()
    return res
