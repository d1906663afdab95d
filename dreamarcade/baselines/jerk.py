"""JERK ("Just Enough Retained Knowledge"), the Sonic report's no-network baseline (retro-baselines ``jerk_agent.py``).

Explore: hold RIGHT, jumping (B) with probability 0.1 for 4 steps at a time, 100 steps at a stretch; if that
earned nothing, run LEFT for 70 steps (backtrack). At each episode end the action sequence up to the best
cumulative reward is kept. At the start of an episode, with probability ``exploit_bias + t / total_timesteps``
the best-scoring kept sequence is replayed instead (its score is the mean over its replays). The run's score is
the mean episode reward over all its episodes, as in the contest's evaluation protocol.

It acts on the raw contest env (12 Genesis buttons, ``MultiBinary(12)``), exactly as the original.

Example:
    >>> import tempfile
    >>> from dreamarcade.baselines.jerk import JERKConfig, run_jerk
    >>> from dreamarcade.envs.sonic import make_contest_env
    >>> env = make_contest_env("Airstriker-Genesis", "Level1", scenario="scenario", max_episode_steps=300)
    >>> result = run_jerk(env, JERKConfig(total_timesteps=600), tempfile.mkdtemp(), progress=False)
    >>> env.close(); result["steps"] >= 600
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dreamarcade.baselines.common import (
    RunLogger,
    add_dataclass_args,
    check_counts,
    check_run_dir_free,
    claim_run_dir,
    drop_rows_after,
    plot_learning_curve,
    read_episodes,
    releases_run_dirs,
    save_hyperparameters,
    seed_everything,
)
from dreamarcade.checkpoint import atomic_write_bytes, json_text
from dreamarcade.errors import CheckpointError, check_seed, describe_changes, input_error_status

STATE_FILE = "jerk_state.npz"


@dataclass
class JERKConfig:
    """JERK hyperparameters; defaults are retro-baselines' ``jerk_agent.py``.

    Example (two 100-step episodes of Airstriker; the config is saved with the run):
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> from dreamarcade.baselines.jerk import JERKConfig, run_jerk
        >>> from dreamarcade.envs.sonic import make_contest_env
        >>> cfg = JERKConfig(total_timesteps=200, explore_steps=50, seed=1)
        >>> env = make_contest_env("Airstriker-Genesis", "Level1", scenario="scenario", max_episode_steps=100)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     result = run_jerk(env, cfg, d, progress=False)
        ...     saved = json.loads((Path(d) / "hyperparameters.json").read_text())
        >>> env.close()
        >>> result["steps"], result["episodes"], saved["explore_steps"]
        (200, 2, 50)
    """

    total_timesteps: int = 1_000_000
    exploit_bias: float = 0.25
    explore_steps: int = 100  # steps of moving right per stretch
    backtrack_steps: int = 70  # steps of moving left when a stretch earned nothing
    jump_prob: float = 0.1
    jump_repeat: int = 4
    seed: int = 0
    save_every_episodes: int = 10

    def __post_init__(self) -> None:
        # explore_steps=0 with backtrack_steps=0 looped forever without taking a step
        minimums = {"total_timesteps": 1, "explore_steps": 1, "backtrack_steps": 0, "jump_repeat": 1}
        check_counts(self, {**minimums, "save_every_episodes": 1})
        check_seed("--seed", self.seed)  # it failed in seed_everything, after hyperparameters.json was written
        for name in ("exploit_bias", "jump_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ValueError(f"--{name.replace('_', '-')} must be a probability in [0, 1], got {value}")


class BudgetSpent(Exception):
    """Raised by :class:`TrackedEnv` on a step past its budget: the episode under way is not scored.

    Example:
        >>> import gymnasium as gym
        >>> from dreamarcade.baselines.jerk import BudgetSpent, TrackedEnv
        >>> env = TrackedEnv(gym.make("CartPole-v1"), budget=2)
        >>> _ = env.reset(seed=0)
        >>> _ = env.step(0), env.step(0)
        >>> try:
        ...     env.step(0)
        ... except BudgetSpent as stop:
        ...     print(stop)
        the budget of 2 steps is spent
    """


class TrackedEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Records the actions and cumulative rewards of the current episode, and counts every step ever taken.

    Example (MountainCar pays -1 per step, so the cumulative reward peaks after the first step):
        >>> import gymnasium as gym
        >>> from dreamarcade.baselines.jerk import TrackedEnv
        >>> env = TrackedEnv(gym.make("MountainCar-v0"))
        >>> _ = env.reset(seed=0)
        >>> for action in (2, 2, 0):
        ...     _ = env.step(action)
        >>> env.reward_history, [int(a) for a in env.best_sequence()]
        ([-1.0, -2.0, -3.0], [2])
        >>> _ = env.reset()  # a new episode's history; the step count goes on
        >>> len(env.action_history), env.total_steps_ever
        (0, 3)
    """

    def __init__(self, env: gym.Env, budget: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, budget=budget)
        gym.Wrapper.__init__(self, env)
        self.action_history: list[np.ndarray] = []
        self.reward_history: list[float] = []
        self.total_reward = 0.0
        self.total_steps_ever = 0
        self.budget = budget  # steps ever allowed: a step past it raises BudgetSpent, as the contest's env stops

    def best_sequence(self) -> list[np.ndarray]:
        """The actions up to (and including) the step where the cumulative reward peaked."""
        best = int(np.argmax(self.reward_history)) if self.reward_history else -1
        return self.action_history[: best + 1]

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.action_history, self.reward_history, self.total_reward = [], [], 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.budget is not None and self.total_steps_ever >= self.budget:
            raise BudgetSpent(f"the budget of {self.budget} steps is spent")
        self.total_steps_ever += 1
        self.action_history.append(np.array(action, copy=True))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.total_reward += float(reward)
        self.reward_history.append(self.total_reward)
        return obs, float(reward), terminated, truncated, info


def _buttons(env: gym.Env) -> tuple[int, int, int, int]:
    buttons = list(getattr(env.unwrapped, "buttons", []))
    missing = [b for b in ("B", "LEFT", "RIGHT") if b not in buttons]
    if missing or not isinstance(env.action_space, gym.spaces.MultiBinary):
        raise TypeError(
            f"JERK needs a raw stable-retro env with B/LEFT/RIGHT buttons (MultiBinary actions); got action space "
            f"{env.action_space}, buttons {buttons}. Use dreamarcade.envs.sonic.make_contest_env."
        )
    return len(buttons), buttons.index("B"), buttons.index("LEFT"), buttons.index("RIGHT")


def move(env: TrackedEnv, cfg: JERKConfig, num_steps: int, left: bool, rng: random.Random) -> tuple[float, bool]:
    """Run left or right for ``num_steps`` steps, jumping at random; returns (reward, episode over)."""
    n, b, lft, rgt = _buttons(env)
    total, done, jumping_left = 0.0, False, 0
    for _ in range(num_steps):
        action = np.zeros(n, dtype=np.int8)
        action[lft if left else rgt] = 1
        if jumping_left > 0:
            action[b] = 1
            jumping_left -= 1
        elif rng.random() < cfg.jump_prob:
            jumping_left = cfg.jump_repeat - 1
            action[b] = 1
        _, reward, terminated, truncated, _ = env.step(action)
        total += reward
        done = terminated or truncated
        if done:
            break
    return total, done


def exploit(env: TrackedEnv, sequence: list[np.ndarray]) -> float:
    """Replay ``sequence`` from a reset (then no-ops until the episode ends); returns the episode's reward."""
    n = _buttons(env)[0]
    env.reset()
    done, idx = False, 0
    while not done:
        action = sequence[idx] if idx < len(sequence) else np.zeros(n, dtype=np.int8)
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        idx += 1
    return env.total_reward


def _save_state(
    run_dir: Path,
    solutions: list[tuple[list[float], list[np.ndarray]]],
    steps: int,
    n_buttons: int,
    run_info: dict[str, Any] | None = None,
) -> None:
    seqs = [np.stack(s).astype(np.int8) if s else np.zeros((0, n_buttons), np.int8) for _, s in solutions]
    scores = [np.asarray(sc, np.float64) for sc, _ in solutions]
    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        steps=np.array(steps),
        seq_lengths=np.array([len(s) for s in seqs], np.int64),
        sequences=np.concatenate(seqs) if seqs else np.zeros((0, n_buttons), np.int8),
        score_lengths=np.array([len(s) for s in scores], np.int64),
        scores=np.concatenate(scores) if scores else np.zeros(0),
        run_info=np.array(json_text(run_info or {})),  # a str array: loads without pickle
    )
    atomic_write_bytes(run_dir / STATE_FILE, buf.getvalue())


def _load_state(run_dir: Path) -> tuple[list[tuple[list[float], list[np.ndarray]]], int, dict[str, Any] | None]:
    path = run_dir / STATE_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            seq_split = np.cumsum(z["seq_lengths"])[:-1]
            score_split = np.cumsum(z["score_lengths"])[:-1]
            seqs = np.split(z["sequences"], seq_split) if len(z["seq_lengths"]) else []
            scores = np.split(z["scores"], score_split) if len(z["score_lengths"]) else []
            solutions = [(list(map(float, sc)), list(sq)) for sc, sq in zip(scores, seqs, strict=True)]
            info = json.loads(str(z["run_info"])) if "run_info" in z.files else None  # None: an older state
            if info is not None and not isinstance(info, dict):  # valid JSON, but not what was written
                raise ValueError(f"run_info is {type(info).__name__}, not an object")
            return solutions, int(z["steps"]), info
    except Exception as exc:  # zipfile and numpy raise many kinds on bad bytes (NotImplementedError, EOFError...)
        raise CheckpointError(
            f"Corrupt JERK state '{path}' ({type(exc).__name__}: {exc}). Restore it, or start the run again "
            "without --resume in a new --run-dir."
        ) from exc


@releases_run_dirs  # the run directory's claim ends with the run, also when it raises
def run_jerk(
    env: gym.Env,
    config: JERKConfig,
    run_dir: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run JERK for ``config.total_timesteps`` steps; log every episode; return the score (mean episode reward).

    ``resume``: continue from ``run_dir/jerk_state.npz`` (or from step 0 without one); episodes logged after the
    saved step are dropped from ``episodes.csv``, since those steps are played again, with random draws seeded from
    (``seed``, saved step) rather than a replay of the first part's. Without ``resume``, a
    ``run_dir`` that already holds a state file or logged episodes is refused (:class:`RunDirInUseError`, a
    FileExistsError). ``run_info``: what ``env`` plays, as JSON values (the CLI's game, state, scenario and episode
    limit): kept in the state with ``config``'s settings (all but ``total_timesteps`` and ``save_every_episodes``),
    and a resume with other values of either is refused (it mixed two levels' episodes and replayed one level's best
    sequences in the other; or one score came from two exploit biases).
    """
    run_dir = Path(run_dir)
    csv = run_dir / "episodes.csv"
    if not resume:
        check_run_dir_free(run_dir, state_files=(STATE_FILE,))
    claim_run_dir(run_dir)  # before the resume below drops log rows: one process per run directory
    solutions: list[tuple[list[float], list[np.ndarray]]] = []
    saved_steps = 0
    # the algorithm's settings (all but the budget and the save interval) are kept in the state with run_info: a
    # resume with another exploit bias, stretch length or seed went on without a word, one score from two settings
    algo = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("total_timesteps", "save_every_episodes")}
    state_info = {**(run_info or {}), "jerk": algo}
    if resume and (run_dir / STATE_FILE).exists():  # read before anything is written: a corrupt one changes nothing
        solutions, saved_steps, saved_info = _load_state(run_dir)
        saved_algo = saved_info.pop("jerk", None) if saved_info is not None else None  # None: an older state
        changes = [describe_changes(saved_algo, algo)] if saved_algo is not None else []
        if run_info is not None and saved_info is not None:
            changes.append(describe_changes(saved_info, run_info))
        if any(changes):
            raise CheckpointError(
                f"--resume: the JERK state in {run_dir} was played with other settings "
                f"({', '.join(c for c in changes if c)}): resume with the same ones, or use a new --run-dir."
            )
    save_hyperparameters(run_dir, config)
    seed_everything(config.seed)
    tracked = TrackedEnv(env, budget=config.total_timesteps)  # the contest stops the env at the budget
    n_buttons = _buttons(tracked)[0]
    tracked.total_steps_ever = saved_steps
    if resume:
        drop_rows_after(csv, tracked.total_steps_ever)  # the state is saved right after its last logged episode
    # a resumed run draws afresh from (seed, step): reseeding with the seed alone would replay the first part's
    # jumps, exploit choices and sticky actions
    run_seed = config.seed
    if tracked.total_steps_ever:
        run_seed = int(np.random.SeedSequence([config.seed, tracked.total_steps_ever]).generate_state(1)[0] >> 1)
    rng = random.Random(run_seed)
    episode_returns: list[float] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.total_timesteps, initial=tracked.total_steps_ever, unit="step", dynamic_ncols=True)
    tracked.reset(seed=run_seed)
    with RunLogger(run_dir, resumed_at=tracked.total_steps_ever if resume else None) as logger:
        new_episode = False
        try:
            while tracked.total_steps_ever < config.total_timesteps:
                if new_episode:
                    p_exploit = config.exploit_bias + tracked.total_steps_ever / config.total_timesteps
                    if solutions and rng.random() < p_exploit:
                        solutions.sort(key=lambda sol: np.mean(sol[0]))
                        best_scores, best_seq = solutions[-1]
                        ret = exploit(tracked, best_seq)
                        best_scores.append(ret)
                        episode_returns.append(ret)
                        logger.log_episode(tracked.total_steps_ever, ret, len(tracked.reward_history), exploit=1)
                        _after_episode(bar, tracked, episode_returns, run_dir, solutions, n_buttons, config, state_info)
                        continue
                    tracked.reset()
                    new_episode = False
                reward, new_episode = move(tracked, config, config.explore_steps, left=False, rng=rng)
                if not new_episode and reward <= 0:
                    _, new_episode = move(tracked, config, config.backtrack_steps, left=True, rng=rng)
                if new_episode:
                    ret = tracked.total_reward
                    solutions.append(([max(tracked.reward_history)], tracked.best_sequence()))
                    episode_returns.append(ret)
                    logger.log_episode(tracked.total_steps_ever, ret, len(tracked.reward_history), exploit=0)
                    _after_episode(bar, tracked, episode_returns, run_dir, solutions, n_buttons, config, state_info)
                elif bar is not None:
                    bar.update(tracked.total_steps_ever - bar.n)
        except BudgetSpent:  # the episode the budget cut is not scored, as in the contest and the PPO protocol
            pass
    if bar is not None:
        bar.close()
    _save_state(run_dir, solutions, tracked.total_steps_ever, n_buttons, state_info)
    if csv.exists() and csv.stat().st_size:
        plot_learning_curve({"JERK": read_episodes(csv)}, run_dir / "learning_curve.png", f"JERK: {run_dir.name}")
    all_returns = [float(r) for r in read_episodes(csv)[1]] if csv.exists() else episode_returns
    score = float(np.mean(all_returns)) if all_returns else float("nan")
    return {"score": score, "episodes": len(all_returns), "steps": tracked.total_steps_ever}


def _after_episode(
    bar: Any,
    tracked: TrackedEnv,
    returns: list[float],
    run_dir: Path,
    solutions: list[tuple[list[float], list[np.ndarray]]],
    n_buttons: int,
    config: JERKConfig,
    run_info: dict[str, Any] | None,
) -> None:
    if bar is not None:
        bar.update(tracked.total_steps_ever - bar.n)
        bar.set_postfix(ret=f"{np.mean(returns[-20:]):.1f}")
    if len(returns) % config.save_every_episodes == 0:
        _save_state(run_dir, solutions, tracked.total_steps_ever, n_buttons, run_info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamarcade.baselines jerk",
        description="JERK on one Sonic contest level (or Airstriker). Score = mean episode reward over the run.",
    )
    parser.add_argument("--game", default="SonicTheHedgehog-Genesis")
    parser.add_argument("--state", default="GreenHillZone.Act1")
    parser.add_argument("--scenario", default="contest", help="'contest' for Sonic; Airstriker has only 'scenario'")
    parser.add_argument("--run-dir", default=None, help="default runs/metarl/jerk/<game>_<state>")
    parser.add_argument("--resume", action="store_true", help="continue from <run-dir>/jerk_state.npz")
    parser.add_argument("--max-episode-steps", type=int, default=4500)
    add_dataclass_args(parser, JERKConfig, exclude=("save_every_episodes",))
    args = parser.parse_args(argv)
    from dreamarcade.envs.sonic import make_contest_env
    from dreamarcade.errors import DreamArcadeError

    try:
        config = JERKConfig(**{k: getattr(args, k) for k in JERKConfig.__dataclass_fields__ if hasattr(args, k)})
    except ValueError as exc:
        parser.error(str(exc))
    run_dir = Path(args.run_dir or f"runs/metarl/jerk/{args.game}_{args.state}")
    try:
        cap = args.max_episode_steps
        env = make_contest_env(args.game, args.state, scenario=args.scenario, max_episode_steps=cap)
    except (DreamArcadeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        info = {"game": args.game, "state": args.state, "scenario": args.scenario}
        result = run_jerk(env, config, run_dir, resume=args.resume, run_info={**info, "max_episode_steps": cap})
    except Exception as exc:  # a run already there, another process on it, a corrupt state: one line
        return input_error_status(exc)
    finally:
        env.close()
    print(json_text({"run_dir": str(run_dir), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
