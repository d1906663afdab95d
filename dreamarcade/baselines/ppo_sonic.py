"""The Sonic pipeline of "Gotta Learn Fast" on top of :mod:`dreamarcade.baselines.ppo`.

* :func:`joint_train`: joint PPO over a set of levels (one subprocess worker per level, or N workers each drawing
  a random level at every reset), with the test levels evaluated every ``eval_every_steps`` so the overfitting
  the report shows (test score falling after ~500k steps) is visible as a curve (``test_score_curve.png``).
* :func:`sonic_protocol`: the evaluation protocol: for each test level, train for N timesteps (default 1M) from
  scratch or fine-tuning from a checkpoint; the level's score is the mean episode reward over the whole run.
* :func:`report_table`: the tech report's table (PPO from scratch, joint PPO, joint PPO + fine-tune) next to the
  report's numbers.

CLI (see ``--help`` of each)::

    python -m dreamarcade.baselines ppo joint --train-levels train --eval-levels test --total-timesteps 8000000
    python -m dreamarcade.baselines ppo protocol --levels test --label "PPO (from scratch)" \\
        --run-dir runs/metarl/protocol_scratch
    python -m dreamarcade.baselines ppo protocol --levels test --init-from runs/metarl/joint/checkpoint \\
        --label "Joint PPO + fine-tune" --run-dir runs/metarl/protocol_finetune
    python -m dreamarcade.baselines ppo table runs/metarl/protocol_scratch runs/metarl/protocol_finetune

Each protocol run needs its own ``--run-dir``: a directory remembers its label, checkpoint and budget, and a call
with other ones is refused rather than reporting the stored scores under a new label.

stable-retro allows one emulator per process, so every env here runs in a subprocess (AsyncVectorEnv).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dreamarcade.baselines.common import claim_run_dir, plot_learning_curve, read_episodes, releases_run_dirs
from dreamarcade.baselines.ppo import (
    RUN_SETTINGS,
    PPOConfig,
    PPOResult,
    add_config_args,
    build_agent,
    check_agent_fits,
    check_same_network,
    config_from_args,
    load_agent,
    train_ppo,
)
from dreamarcade.checkpoint import atomic_write_text, check_output_file, json_text, read_json_object
from dreamarcade.envs.sonic import check_level_settings
from dreamarcade.errors import check_count, describe_changes, input_checks

# "Gotta Learn Fast" Table (mean score over the 11 test levels, 1M steps each); provenance: README, meta-RL section.
REPORT_SCORES: dict[str, float] = {
    "PPO (from scratch)": 1488.0,  # "~1488": recalled by the project's reference notes, not checked against the PDF
    "Joint PPO + fine-tune": 3127.9,
    "JERK": 1904.0,
    "Rainbow (from scratch)": 2748.6,
    "Human": 7438.2,
}


def level_env_fn(
    game: str,
    state: str,
    scenario: str = "contest",
    reward_scale: float | None = 0.01,
    backtracking: bool = False,
    max_episode_steps: int | None = 4500,
) -> Callable[[], gym.Env]:
    """A picklable factory of the PPO training stack on one level (runs in a worker process)."""

    def thunk() -> gym.Env:
        from dreamarcade.envs.sonic import make_sonic_env

        return make_sonic_env(
            game,
            state,
            scenario=scenario,
            reward_scale=reward_scale,
            backtracking=backtracking,
            max_episode_steps=max_episode_steps,
        )

    return thunk


def random_level_env_fn(levels: Sequence[Any], **kwargs: Any) -> Callable[[], gym.Env]:
    """A factory of a worker that plays a random level of ``levels`` in every episode."""
    levels = [tuple(lv) for lv in levels]

    def thunk() -> gym.Env:
        from dreamarcade.envs.sonic import RetroLevelsEnv

        return RetroLevelsEnv(levels, **kwargs)

    return thunk


def _check_levels(levels: Sequence[Any]) -> None:
    """Fail in the main process, with a clear message, before starting any worker."""
    from dreamarcade.envs.sonic import check_level, check_roms

    with input_checks():
        for game, state in levels:
            check_level(game, state)
        check_roms(g for g, _ in levels)  # one error naming every missing ROM


@releases_run_dirs
def joint_train(
    train_levels: Sequence[Any],
    config: PPOConfig,
    run_dir: str | os.PathLike[str],
    *,
    eval_levels: Sequence[Any] = (),
    num_envs: int | None = None,
    scenario: str = "contest",
    reward_scale: float | None = 0.01,
    max_episode_steps: int | None = 4500,
    resume: bool = False,
    progress: bool = True,
) -> PPOResult:
    """Joint PPO over ``train_levels`` in parallel worker processes; test levels scored every ``eval_every_steps``.

    ``num_envs`` None (or equal to the number of levels): worker i always plays level i. Otherwise each of the
    ``num_envs`` workers draws a random training level at every reset.
    """
    if num_envs is not None:
        with input_checks():
            num_envs = check_count("--workers", num_envs, hint=" (worker processes; leave it out for one per level)")
    _check_levels(list(train_levels) + list(eval_levels))
    claim_run_dir(run_dir)  # held until the test-score curve below is written (train_ppo inside keeps it)
    env_kwargs = dict(scenario=scenario, reward_scale=reward_scale, max_episode_steps=max_episode_steps)
    if num_envs is None or num_envs == len(train_levels):
        fns = [level_env_fn(g, s, **env_kwargs) for g, s in train_levels]
    else:
        fns = [random_level_env_fn(train_levels, **env_kwargs) for _ in range(num_envs)]
    eval_fns = {
        f"{g}:{s}": level_env_fn(g, s, scenario=scenario, reward_scale=None, max_episode_steps=max_episode_steps)
        for g, s in eval_levels
    }
    config = dataclasses.replace(config, vector_mode="async")
    run_info = {  # what the run plays: a resume with other levels or env settings would mix two runs' curves
        "train_levels": [f"{g}:{s}" for g, s in train_levels],
        "eval_levels": [f"{g}:{s}" for g, s in eval_levels],
        "workers": num_envs or len(train_levels),
        **env_kwargs,
    }
    result = train_ppo(
        fns, config, run_dir, resume=resume, eval_env_fns=eval_fns or None, progress=progress, run_info=run_info
    )
    eval_csv = Path(run_dir) / "eval.csv"
    if eval_csv.exists():  # the whole run's test scores, resumed parts included
        import csv

        with open(eval_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        steps = np.array([float(r["step"]) for r in rows])
        curves = {"test levels (mean)": (steps, np.array([float(r["eval/mean"]) for r in rows]))}
        plot_learning_curve(
            curves,
            Path(run_dir) / "test_score_curve.png",
            "Joint PPO: score on held-out test levels during training",
            window=1,
            ylabel="mean episode reward (test levels)",
        )
    return result


def _check_init_fits(
    loaded: Any, levels: Sequence[Any], config: PPOConfig, source: str, env_kwargs: dict[str, Any]
) -> None:
    """Refuse a fine-tuning checkpoint that cannot act in these levels' envs or is not the network ``config``
    builds. One env per game is started here and closed (the levels of a game share their spaces)."""
    for game in dict.fromkeys(g for g, _ in levels):
        state = next(s for g, s in levels if g == game)
        env = level_env_fn(game, state, **env_kwargs)()
        try:
            check_agent_fits(loaded, env.observation_space, env.action_space, source)
            check_same_network(loaded, build_agent(env.observation_space, env.action_space, config), source)
        finally:
            env.close()


@releases_run_dirs
def sonic_protocol(
    levels: Sequence[Any],
    config: PPOConfig,
    run_dir: str | os.PathLike[str],
    *,
    timesteps: int = 1_000_000,
    init_checkpoint: str | os.PathLike[str] | None = None,
    label: str = "PPO",
    scenario: str = "contest",
    reward_scale: float | None = 0.01,
    max_episode_steps: int | None = 4500,
    progress: bool = True,
) -> dict[str, Any]:
    """Per level: ``timesteps`` of PPO (from scratch, or fine-tuned from ``init_checkpoint``); score = mean episode
    reward over the run, counting the episodes that ended within the ``timesteps`` budget (training goes on to the
    end of its last rollout; NaN if no episode ended). Writes ``scores.json`` in ``run_dir``.

    Resumable: call again with the same arguments and finished levels are kept, an unfinished level continues from
    its checkpoint. A ``run_dir`` written with another ``label``, ``init_checkpoint``, ``timesteps``, ``scenario``,
    ``reward_scale``, ``max_episode_steps`` or PPO setting (all of ``config`` but the device, threads and checkpoint
    and evaluation intervals) is refused (ValueError): use a new ``run_dir``. ``scores.json`` records them all. If
    the run is stopped (Ctrl-C / SIGTERM), the interrupted level is not scored and the returned summary has
    ``stopped_early=True``.
    """
    _check_levels(levels)
    run_dir = Path(run_dir)
    claim_run_dir(run_dir)  # scores.json; each level's directory is claimed by its own train_ppo
    out = run_dir / "scores.json"
    # the env settings change what an episode's return means, so they are part of the run too (files written
    # before they were recorded read as this call's settings)
    this_run = {
        "label": label,
        "timesteps_per_level": timesteps,
        "init_checkpoint": str(init_checkpoint or ""),
        "scenario": scenario,
        "reward_scale": reward_scale,
        "max_episode_steps": max_episode_steps,
    }
    with input_checks():
        # checked before the settings are recorded: a refused call must not tie the run directory to them; and
        # before they are compared with a run's (a NaN reward scale read as "another run's setting")
        timesteps = check_count("--timesteps-per-level", timesteps, hint=" (steps of PPO per level)")
        cfg = dataclasses.replace(config, total_timesteps=timesteps, num_envs=1, vector_mode="async")
        cfg.validate()
        # the learning settings too: a call with another learning rate or seed scored the remaining levels under the
        # same label, one mean from two methods (the device, threads and logging intervals change no score)
        this_run["ppo"] = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_SETTINGS}
        for game, state in levels:  # a level, scenario, reward scale or limit its envs would refuse at the first level
            check_level_settings(game, state, scenario, reward_scale, max_episode_steps)
        summary: dict[str, Any] = read_json_object(out) if out.exists() else {}
        for key, value in this_run.items():
            stored = summary.get(key, value)
            same = _same_path(stored, value) if key == "init_checkpoint" else stored == value
            if not same and key == "ppo":
                raise ValueError(
                    f"{out} was written by a protocol run with other PPO settings ({describe_changes(stored, value)}); "
                    "its scores and level checkpoints belong to that run. Use another --run-dir for this one (or the "
                    "same settings to continue that run)."
                )
            if not same:
                raise ValueError(
                    f"{out} was written by a protocol run with {key}={stored!r}, but this call has {key}={value!r}; "
                    f"its scores and level checkpoints belong to that run. Use another --run-dir for this one (or "
                    f"the same {key} to continue that run)."
                )
        if init_checkpoint is not None:  # a missing, corrupt or unfitting checkpoint is refused here, not in a level
            env_kwargs = dict(scenario=scenario, reward_scale=reward_scale, max_episode_steps=max_episode_steps)
            _check_init_fits(load_agent(init_checkpoint)[0], levels, cfg, str(init_checkpoint), env_kwargs)
    summary.update(this_run)
    scores = summary.setdefault("scores", {})
    # Written before any level trains, so a level directory left by a stopped run is always tied to its settings.
    atomic_write_text(out, json_text(summary, indent=2))
    for game, state in levels:
        name = f"{game}:{state}"
        level_dir = run_dir / name.replace(":", "_")
        if name not in scores:
            fn = level_env_fn(game, state, scenario, reward_scale, max_episode_steps=max_episode_steps)
            result = train_ppo([fn], cfg, level_dir, init_checkpoint=init_checkpoint, resume=True, progress=progress)
            if result.stopped_early:  # a partial run is no score: the level continues from its checkpoint next time
                print(f"Protocol stopped during {name}; run the same command again to continue.", file=sys.stderr)
                return dict(summary, stopped_early=True)
            log = level_dir / "episodes.csv"  # written at the first finished episode: absent if none ended
            steps, returns = read_episodes(log) if log.exists() else (np.zeros(0, np.int64), np.zeros(0))
            # train_ppo rounds the budget up to whole rollouts; the contest's env stops at the budget itself
            returns = returns[steps <= timesteps]
            scores[name] = {
                "score": float(np.mean(returns)) if len(returns) else float("nan"),
                "episodes": len(returns),
            }
            summary["mean_score"] = _mean_score(scores)
            atomic_write_text(out, json_text(summary, indent=2))
            if result.stop_requested and (game, state) != tuple(levels[-1]):  # it came in the level's last update:
                # the level is scored, and the next is not begun
                print(f"Protocol stopped after {name}; run the same command again to continue.", file=sys.stderr)
                return dict(summary, stopped_early=True)
    summary["mean_score"] = _mean_score(scores)
    atomic_write_text(out, json_text(summary, indent=2))
    return summary


def _mean_score(scores: dict[str, dict[str, Any]]) -> float:
    """The mean of the levels' scores; a level no episode finished has a NaN score (null in scores.json)."""
    return float(np.mean([np.nan if v["score"] is None else v["score"] for v in scores.values()]))


def _same_path(a: str, b: str) -> bool:
    """Whether two stored checkpoint paths name the same directory ("" = from scratch)."""
    if not a or not b:
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def report_table(protocol_dirs: Sequence[str | os.PathLike[str]]) -> str:
    """A markdown table of protocol runs (mean score over their levels), with the tech report's numbers."""
    lines = ["| agent | levels | steps/level | mean score (this run) | tech report |", "|---|---|---|---|---|"]
    labels: set[str] = set()
    for d in protocol_dirs:
        if not (Path(d) / "scores.json").is_file():
            raise FileNotFoundError(
                f"No scores.json in '{d}': pass the --run-dir of a `ppo protocol` run (it writes scores.json after "
                "its first level)."
            )
        s = read_json_object(Path(d) / "scores.json")
        if not s.get("scores"):
            raise ValueError(
                f"{d} has no finished level yet (its protocol run was stopped during the first one): run its "
                "`ppo protocol` command again to continue it, or leave it out of the table."
            )
        labels.add(s["label"])
        report = REPORT_SCORES.get(s["label"])
        mean = s.get("mean_score")  # null (NaN) when a level ended no episode within its budget
        shown = "- (a level ended no episode)" if mean is None else f"{mean:.1f}"
        lines.append(
            f"| {s['label']} | {len(s['scores'])} | {s['timesteps_per_level']:,} | {shown} | "
            f"{'' if report is None else report} |"
        )
    for name, value in REPORT_SCORES.items():
        if name not in labels:
            lines.append(f"| {name} (report only) | 11 | 1,000,000 | - | {value} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# CLI (subcommands of `python -m dreamarcade.baselines ppo`)
# ----------------------------------------------------------------------------------------------------------------------
def _levels_arg(spec: str) -> list[tuple[str, str]]:
    from dreamarcade.envs.sonic import parse_levels

    with input_checks():
        return [tuple(lv) for lv in parse_levels(spec)]


def _env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default="contest", help="'contest' for Sonic; Airstriker has only 'scenario'")
    p.add_argument("--reward-scale", type=float, default=0.01, help="retro-baselines PPO: 0.01")
    p.add_argument("--max-episode-steps", type=int, default=4500)


def _cmd_joint(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = joint_train(
        _levels_arg(args.train_levels),
        config,
        args.run_dir,
        eval_levels=_levels_arg(args.eval_levels) if args.eval_levels else (),
        num_envs=args.workers,
        scenario=args.scenario,
        reward_scale=args.reward_scale,
        max_episode_steps=args.max_episode_steps,
        resume=args.resume,
    )
    print(
        json_text(
            {
                "run_dir": args.run_dir,
                "global_step": result.global_step,
                "train_score": result.run_episodes()[1],  # the whole run's, resumed parts included
                "sps": round(result.steps_per_second, 1),
                "eval": result.eval_history[-1:],
            }
        )
    )
    return 0


def _cmd_protocol(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = sonic_protocol(
        _levels_arg(args.levels),
        config,
        args.run_dir,
        timesteps=args.timesteps_per_level,
        init_checkpoint=args.init_from,
        label=args.label,
        scenario=args.scenario,
        reward_scale=args.reward_scale,
        max_episode_steps=args.max_episode_steps,
    )
    print(json_text(summary))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    args.levels, args.label = args.level, args.label or "Joint PPO + fine-tune"
    return _cmd_protocol(args)


def _cmd_table(args: argparse.Namespace) -> int:
    with input_checks(OSError):  # it only reads the runs' scores.json files
        if args.out:
            check_output_file(args.out, "--out")
        table = report_table(args.runs)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    print(table)
    return 0


# PPOConfig fields that get no protocol flag: set by the protocol itself (one async env per level, the per-level
# budget), or not part of it (a level's score is the mean of its training episodes, as in the contest, so held-out
# evaluation during training has nothing to evaluate)
_PROTOCOL_SETS = ("num_envs", "vector_mode", "total_timesteps", "eval_every_steps", "eval_episodes")


def add_commands(sub: Any) -> None:
    """Register ``joint``, ``protocol``, ``finetune`` and ``table`` on the ``ppo`` CLI."""
    p = sub.add_parser("joint", help="joint PPO over a set of levels (one worker process per level)")
    p.add_argument("--train-levels", default="train", help="'train', 'test' or GAME:STATE,GAME:STATE,...")
    p.add_argument("--eval-levels", default="test", help="levels scored during training ('' for none)")
    p.add_argument("--workers", type=int, default=None, help="default: one per level; else random level per episode")
    p.add_argument("--run-dir", default="runs/metarl/joint")
    p.add_argument("--resume", action="store_true")
    _env_args(p)
    # one worker process per level (or --workers), always async: the config's env count and vector mode do not apply
    add_config_args(
        p,
        PPOConfig(total_timesteps=8_000_000, eval_every_steps=250_000, eval_episodes=1),
        exclude=("num_envs", "vector_mode"),
    )
    p.set_defaults(func=_cmd_joint)

    p = sub.add_parser("protocol", help="the Sonic evaluation protocol over test levels (score = mean episode reward)")
    p.add_argument("--levels", default="test")
    p.add_argument("--timesteps-per-level", type=int, default=1_000_000)
    p.add_argument("--init-from", default=None, help="PPO checkpoint to fine-tune from (default: from scratch)")
    p.add_argument("--label", default="PPO (from scratch)")
    p.add_argument("--run-dir", default="runs/metarl/protocol")
    _env_args(p)
    add_config_args(p, exclude=_PROTOCOL_SETS)
    p.set_defaults(func=_cmd_protocol)

    p = sub.add_parser("finetune", help="fine-tune a checkpoint on one level for N timesteps (protocol on one level)")
    p.add_argument("--init-from", required=True)
    p.add_argument("--level", required=True, help="GAME:STATE")
    p.add_argument("--timesteps-per-level", type=int, default=1_000_000)
    p.add_argument("--label", default=None)
    p.add_argument("--run-dir", default="runs/metarl/finetune")
    _env_args(p)
    add_config_args(p, exclude=_PROTOCOL_SETS)
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("table", help="the tech report's table from protocol run directories")
    p.add_argument("runs", nargs="+", help="protocol run directories (each holds scores.json)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.set_defaults(func=_cmd_table)
