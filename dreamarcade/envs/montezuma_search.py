"""Find successful Montezuma's Revenge trajectories with a Go-Explore style search over ALE states.

The search stands in for the "YouTube videos" of the paper: it finds several *distinct* action sequences
that collect the key (+100), open a door (+300) and leave the first room, which the demo recorder then
replays with sound into domain-shifted video files.

Go-Explore (Ecoffet et al. 2019), phase 1 only, with a coarse domain-knowledge cell
``(room, x // cell_x, y // cell_y, has_key, score // 100)`` read from RAM (the score level counts the key and each
opened door). Each step of the search: pick an archived cell (weight ``(1 / sqrt(1 + times_chosen) + 0.5 /
sqrt(1 + times_seen)) * score_bias ** (score_level + has_key)``: Go-Explore's count-based selection, pushed towards
the cells that scored more), ``restoreState`` its emulator state,
take random actions (each repeated with probability 0.95, as in Go-Explore), and archive every new cell,
or a known cell reached with a higher score or the same score in fewer steps. Losing a life ends the
exploration from that cell (a demonstration should not die).

Montezuma RAM addresses used (checked by experiment with ale-py 0.12: the values change exactly when the
player moves / changes room / loses a life / picks up the key): room ``ram[3]``, x ``ram[42]``,
y ``ram[43]``, lives ``ram[58]``, inventory ``ram[65]`` (bit 1 = key... any non-zero inventory counts),
skull x ``ram[47]``.

**Start delay.** The game is deterministic from power-on, so the rolling skull of the first room is a clock:
if every recording starts at power-on, the skull's position is tied to the player's progress, and a video
embedding can learn the clock instead of the player. Real uploaders start playing at different moments.
``go_explore(start_delay=d)`` therefore first takes ``d`` NOOP agent steps (the player stands still while the
skull rolls) and searches from there; the NOOPs are the first ``d`` actions of the trajectory, so it still
replays exactly from reset, and the recorder starts the video after them. The skull's motion repeats every
:data:`SKULL_PERIOD` agent steps (measured under NOOPs), so the CLI's default draws ``d`` uniformly from
``0 .. 2 * SKULL_PERIOD - 1`` per search (seeded): each trajectory gets its own skull phase.

Example (a short search only maps part of the first room; ~200k agent steps find the key and the door,
``result.best_score >= 400``, in a minute or two):
    >>> from dreamarcade.envs.montezuma_search import go_explore
    >>> result = go_explore(seed=0, max_steps=1_000)
    >>> result.steps >= 1_000, result.cells > 10  # the last exploration runs to its end
    (True, True)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamarcade.checkpoint import atomic_write_text, check_output_file
from dreamarcade.errors import input_checks, input_error_status, require

ROOM, X, Y, LIVES, INVENTORY = 3, 42, 43, 58, 65
SKULL_X = 47
FRAMESKIP = 4  # agent steps are 4 emulator frames (15 Hz), the rate the videos are embedded at
SKULL_PERIOD = 102  # agent steps after which ram[47] (skull x) repeats under NOOPs (ale-py 0.12, measured)
DEFAULT_MAX_START_DELAY = 2 * SKULL_PERIOD
N_ACTIONS = 18  # Montezuma's minimal action set is all 18 ALE actions


def make_montezuma(frameskip: int = FRAMESKIP, sound: bool = False, render_mode: str | None = None) -> Any:
    """A deterministic ``ALE/MontezumaRevenge-v5`` (no sticky actions), so action lists replay exactly."""
    require("ale_py", "Montezuma's Revenge (ALE)")
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    kwargs: dict[str, Any] = dict(frameskip=frameskip, repeat_action_probability=0.0, full_action_space=False)
    if sound:
        kwargs["sound_obs"] = True
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make("ALE/MontezumaRevenge-v5", **kwargs)


@dataclass
class Cell:
    """One archived cell: the shortest/best action sequence known to reach it, and its emulator state.

    Example (archive the start, walk away, return to it with ``restoreState``):
        >>> from dreamarcade.envs.montezuma_search import X, Cell, cell_key, make_montezuma
        >>> env = make_montezuma()
        >>> _ = env.reset(seed=0)
        >>> ale = env.unwrapped.ale
        >>> start = Cell(actions=[], score=0.0, state=ale.cloneState())
        >>> cell_key(ale.getRAM(), start.score, cell_x=8, cell_y=8)  # (room, x // 8, y // 8, has key, score // 100)
        (1, 9, 29, 0, 0)
        >>> for _ in range(10):
        ...     _ = env.step(3)  # RIGHT
        >>> int(ale.getRAM()[X])
        89
        >>> ale.restoreState(start.state)
        >>> int(ale.getRAM()[X])
        77
        >>> env.close()
    """

    actions: list[int]
    score: float
    state: Any
    chosen: int = 0
    seen: int = 0


@dataclass
class SearchResult:
    """The best trajectory the search found and the archive size.

    Example (a search far too short to score keeps its leading NOOPs; saved as JSON and read back):
        >>> import tempfile
        >>> from pathlib import Path
        >>> from dreamarcade.envs.montezuma_search import (
        ...     go_explore, load_start_delays, load_trajectories, save_trajectories
        ... )
        >>> result = go_explore(seed=0, max_steps=200, start_delay=3)
        >>> result.best_score, result.left_room, result.actions, result.start_delay
        (0.0, False, [0, 0, 0], 3)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = save_trajectories(Path(d) / "trajectories.json", [result])
        ...     load_trajectories(path) == [result.actions], load_start_delays(path)
        (True, [3])
    """

    actions: list[int]
    best_score: float
    cells: int
    steps: int
    seed: int
    left_room: bool
    start_delay: int = 0  # leading NOOP agent steps (part of ``actions``) before the player starts


def cell_key(ram: np.ndarray, score: float, cell_x: int, cell_y: int) -> tuple[int, ...]:
    """The coarse Go-Explore cell of a RAM state (room, x bucket, y bucket, has key, score level)."""
    return (
        int(ram[ROOM]),
        int(ram[X]) // cell_x,
        int(ram[Y]) // cell_y,
        int(ram[INVENTORY] != 0),
        int(score // 100),
    )


def go_explore(
    seed: int = 0,
    max_steps: int = 300_000,
    explore_steps: int = 50,
    repeat_prob: float = 0.95,
    cell_x: int = 8,
    cell_y: int = 8,
    score_bias: float = 4.0,
    target_score: float = 400.0,
    leave_room: bool = True,
    forbid_actions: tuple[int, ...] = (),
    progress: bool = False,
    start_delay: int = 0,
) -> SearchResult:
    """Run the search until a trajectory reaches ``target_score`` (and left room 1 if ``leave_room``).

    ``forbid_actions`` removes actions from the random exploration; different seeds and forbidden sets give
    visibly different demonstrations (e.g. one that never uses the FIRE-jumps of another).
    ``start_delay`` NOOP agent steps are taken before the search starts (see the module docstring); they are
    the first actions of every archived trajectory and count in ``SearchResult.steps``.
    """
    if start_delay < 0:
        raise ValueError(f"start_delay must be >= 0 agent steps, got {start_delay}")
    env = make_montezuma()
    env.reset(seed=seed)
    ale = env.unwrapped.ale
    for _ in range(start_delay):
        env.step(0)
    rng = np.random.default_rng(seed)
    actions_allowed = [a for a in range(env.action_space.n) if a not in forbid_actions]
    start_ram = ale.getRAM()
    start_room = int(start_ram[ROOM])
    archive: dict[tuple[int, ...], Cell] = {
        cell_key(start_ram, 0.0, cell_x, cell_y): Cell(actions=[0] * start_delay, score=0.0, state=ale.cloneState())
    }
    steps = start_delay
    best: tuple[float, list[int], bool] = (0.0, [0] * start_delay, False)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_steps, desc=f"go-explore seed {seed}", unit="step")
    while steps < max_steps:
        keys = list(archive)
        # Go-Explore's count-based selection, biased towards higher-scoring cells so the search pushes on.
        weights = np.array(
            [
                (1.0 / math.sqrt(1 + archive[k].chosen) + 0.5 / math.sqrt(1 + archive[k].seen))
                * score_bias ** (k[4] + k[3])
                for k in keys
            ]
        )
        key = keys[rng.choice(len(keys), p=weights / weights.sum())]
        cell = archive[key]
        cell.chosen += 1
        ale.restoreState(cell.state)
        lives = int(ale.getRAM()[LIVES])
        actions, score = list(cell.actions), cell.score
        action = int(rng.choice(actions_allowed))
        for _ in range(explore_steps):
            if rng.random() > repeat_prob:
                action = int(rng.choice(actions_allowed))
            _, reward, terminated, truncated, _ = env.step(action)
            steps += 1
            actions.append(action)
            score += float(reward)
            ram = ale.getRAM()
            if terminated or truncated or int(ram[LIVES]) < lives:
                break
            k = cell_key(ram, score, cell_x, cell_y)
            old = archive.get(k)
            if old is not None:
                old.seen += 1
            if old is None or score > old.score or (score == old.score and len(actions) < len(old.actions)):
                archive[k] = Cell(
                    actions=list(actions),
                    score=score,
                    state=ale.cloneState(),
                    chosen=0 if old is None else old.chosen,
                    seen=0 if old is None else old.seen,
                )
            left = int(ram[ROOM]) != start_room and score >= target_score
            if score > best[0] or (left and not best[2]):
                best = (score, list(actions), left)
            if score >= target_score and (left or not leave_room):
                if bar is not None:
                    bar.close()
                env.close()
                return SearchResult(list(actions), score, len(archive), steps, seed, left, start_delay)
        if bar is not None:  # through update(), which honours mininterval (TQDM_MININTERVAL): a forced refresh
            # and set_postfix's own drew the bar twice per exploration, megabytes of log per search
            bar.set_postfix(cells=len(archive), best=best[0], refresh=False)
            bar.update(min(steps, max_steps) - bar.n)
    if bar is not None:
        bar.close()
    env.close()
    return SearchResult(best[1], best[0], len(archive), steps, seed, best[2], start_delay)


def replay(actions: list[int], seed: int = 0) -> dict[str, Any]:
    """Replay ``actions`` from reset and report score, lives, room and whether the key was collected."""
    env = make_montezuma()
    env.reset(seed=seed)
    ale = env.unwrapped.ale
    score, got_key, rooms = 0.0, False, []
    lives0 = int(ale.getRAM()[LIVES])
    for a in actions:
        _, r, term, trunc, _ = env.step(int(a))
        score += float(r)
        ram = ale.getRAM()
        got_key |= bool(ram[INVENTORY] != 0)
        rooms.append(int(ram[ROOM]))
        if term or trunc:
            break
    ram = ale.getRAM()
    out = {"score": score, "got_key": got_key, "final_room": int(ram[ROOM]), "lives_lost": lives0 - int(ram[LIVES])}
    env.close()
    return out


def save_trajectories(path: str | os.PathLike[str], results: list[SearchResult]) -> Path:
    """Write trajectories as JSON (action lists + provenance); never pickle."""
    data = {
        "game": "ALE/MontezumaRevenge-v5",
        "frameskip": FRAMESKIP,
        "repeat_action_probability": 0.0,
        "trajectories": [dataclasses.asdict(r) for r in results],
    }
    atomic_write_text(path, json.dumps(data))
    return Path(path)


def reached_target(result: SearchResult, target_score: float, leave_room: bool = True) -> bool:
    """Whether a search found what :func:`go_explore` searches for: the target score, and (``leave_room``) the way
    out of room 1."""
    return bool(result.best_score >= target_score and (result.left_room or not leave_room))


def load_results(path: str | os.PathLike[str]) -> list[SearchResult]:
    """The full records saved by :func:`save_trajectories` (files written before ``start_delay`` read 0)."""
    names = {f.name for f in dataclasses.fields(SearchResult)}
    return [SearchResult(**{k: v for k, v in t.items() if k in names}) for t in _trajectory_records(path)]


def _trajectory_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The ``trajectories`` records of a file written by :func:`save_trajectories` (a clear error otherwise)."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None  # refused below, naming the file
    records = data.get("trajectories") if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(t, dict) and "actions" in t for t in records):
        raise ValueError(
            f'\'{path}\' is not a trajectory file: expected {{"trajectories": [{{"actions": [...]}}, ...]}} as '
            "written by python -m dreamarcade.envs.montezuma_search"
        )
    for i, t in enumerate(records):  # -1 would play the last action silently, 99 fail deep inside ale-py
        actions = t["actions"]
        fields = {
            "seed": int,
            "start_delay": int,
            "steps": int,
            "cells": int,
            "best_score": (int, float),
            "left_room": bool,
        }
        wrong = [
            name
            for name, kind in fields.items()
            if name in t and (not isinstance(t[name], kind) or (kind is not bool and isinstance(t[name], bool)))
        ]
        if wrong or not 0 <= t.get("start_delay", 0) <= len(actions if isinstance(actions, list) else []):
            raise ValueError(
                f"'{path}': trajectory {i} has fields of the wrong type or range "
                f"({', '.join(wrong) or 'start_delay'}): seed, steps and start_delay (0 to the number of "
                "actions) are integers, best_score a number and left_room true or false, as montezuma_search "
                "writes them"
            )
        if not isinstance(actions, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) and 0 <= a < N_ACTIONS for a in actions
        ):
            raise ValueError(
                f"'{path}': trajectory {i}'s actions must be a list of ALE action indices 0-{N_ACTIONS - 1} "
                "(Montezuma's full action set)"
            )
    return records


def load_trajectories(path: str | os.PathLike[str]) -> list[list[int]]:
    """Action lists saved by :func:`save_trajectories`."""
    return [list(map(int, t["actions"])) for t in _trajectory_records(path)]


def load_start_delays(path: str | os.PathLike[str]) -> list[int]:
    """Per trajectory, its leading NOOP steps (``start_delay``; 0 for files written before the option)."""
    return [int(t.get("start_delay", 0)) for t in _trajectory_records(path)]


def draw_start_delay(seed: int, max_start_delay: int) -> int:
    """The seeded start delay of search ``seed``: uniform in ``0 .. max_start_delay - 1`` (0 if the max is 0)."""
    if max_start_delay < 0:
        raise ValueError(f"max_start_delay must be >= 0, got {max_start_delay}")
    if max_start_delay == 0:
        return 0
    return int(np.random.default_rng([seed, 0x5CB11]).integers(max_start_delay))


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m dreamarcade.envs.montezuma_search --n 4 --out runs/imitation/trajectories.json``."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4, help="number of distinct trajectories to find")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=400_000, help="emulator agent-steps per search")
    p.add_argument("--target-score", type=float, default=400.0)
    p.add_argument(
        "--leave-room",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a search is done once it reaches --target-score and has left the first room (--no-leave-room: the "
        "score alone)",
    )
    p.add_argument(
        "--max-start-delay",
        type=int,
        default=DEFAULT_MAX_START_DELAY,
        help="each search first waits a seeded number of NOOP agent steps in [0, this) so every trajectory has "
        f"its own skull phase (default {DEFAULT_MAX_START_DELAY} = two skull periods; 0 = start at power-on)",
    )
    p.add_argument("--out", default="runs/imitation/trajectories.json")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the trajectories already in --out (the file is rewritten after each one found) and search the rest",
    )
    args = p.parse_args(argv)
    if args.n < 1 or args.seed < 0 or args.max_start_delay < 0:
        p.error(
            f"--n must be >= 1, --seed >= 0 and --max-start-delay >= 0, got --n {args.n} --seed {args.seed} "
            f"--max-start-delay {args.max_start_delay}"
        )
    out = Path(args.out)
    try:  # a directory, or a path under a file: refused now, not after the search
        check_output_file(out, "--out")
    except ValueError as exc:
        p.error(str(exc))
    results: list[SearchResult] = []
    if out.exists():
        if not args.resume:
            print(
                f"error: {out} exists; pass --resume to keep its trajectories and find the rest, "
                "or choose another --out",
                file=sys.stderr,
            )
            return 2
        try:
            with input_checks():  # not JSON, or not a trajectory file: one line naming the file
                results = load_results(out)
        except Exception as exc:
            return input_error_status(exc, parser=p)
        seeds = [r.seed for r in results]
        if seeds != list(range(args.seed, args.seed + len(seeds))):
            print(
                f"error: {out} holds the searches of seeds {seeds}, not {args.seed}, {args.seed + 1}, ...; "
                f"resume with --seed {seeds[0] if seeds else args.seed}",
                file=sys.stderr,
            )
            return 2
        delays = [draw_start_delay(r.seed, args.max_start_delay) for r in results]
        if any(r.start_delay != d for r, d in zip(results, delays)):  # the delay is drawn from (seed, max)
            print(
                f"error: {out} was searched with start delays {[r.start_delay for r in results]}, which "
                f"--max-start-delay {args.max_start_delay} does not give ({delays}); resume with the --max-start-delay "
                "the file was searched with, or choose another --out",
                file=sys.stderr,
            )
            return 2
        reached = [reached_target(r, args.target_score, args.leave_room) for r in results]
        if not all(reached):  # a search that fell short is searched again (with this run's --max-steps)
            first = reached.index(False)
            print(
                f"resuming: searching seed {results[first].seed} again (it scored {results[first].best_score}, "
                f"left room 1: {results[first].left_room}; the target is --target-score {args.target_score}"
                f"{' and leaving the room' if args.leave_room else ''}) and the ones after it",
                flush=True,
            )
            results = results[:first]
        print(f"resuming: {len(results)} of {args.n} trajectories already in {out}", flush=True)
    for i in range(len(results), args.n):
        delay = draw_start_delay(args.seed + i, args.max_start_delay)
        r = go_explore(
            seed=args.seed + i,
            max_steps=args.max_steps,
            target_score=args.target_score,
            leave_room=args.leave_room,
            progress=True,
            start_delay=delay,
        )
        check = replay(r.actions)
        print(
            f"trajectory {i}: start delay {delay} score {r.best_score} left_room {r.left_room} "
            f"len {len(r.actions)} search steps {r.steps} replay {check}",
            flush=True,
        )
        results.append(r)
        save_trajectories(out, results)  # after each search: a kill loses at most the one in progress
    print(f"wrote {out}")
    short = [r.seed for r in results if not reached_target(r, args.target_score, args.leave_room)]
    if short:  # saved (resumable), but not demonstrations of the target: say so, and fail the command
        print(
            f"error: the searches of seeds {short} did not reach --target-score {args.target_score}"
            f"{' and leave the first room' if args.leave_room else ''}; run the same "
            "command with a larger --max-steps and --resume to search them again",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
