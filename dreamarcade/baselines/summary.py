"""``python -m dreamarcade.baselines summary RUN_DIR [RUN_DIR ...]``: where a run stands, from its ``episodes.csv``.

Every bundled agent (DQN, PPO, imitation, JERK) logs one row per finished episode to ``RUN_DIR/episodes.csv``.
This command reads those logs (while the run is still going, too) and prints, per run: the last logged step,
the number of episodes, the mean return of the last ``--window`` episodes, the best such running mean and where
it was reached, the first step at which the running mean reached ``--target`` (if given), and a Markdown table of
the mean return in blocks of ``--block`` steps. ``--png`` draws all runs' learning curves in one figure;
``--json`` writes the numbers for scripts. ``--column`` summarizes another per-episode column instead of the game's
``episodic_return``: e.g. ``train_return``, the return the agent was trained on (the imitation agent logs it: the
game reward plus the imitation reward and any exploration bonus), which shows progress while the game score is
still 0.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from dreamarcade.baselines.common import RunLogger
    >>> from dreamarcade.baselines.summary import summarize
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with RunLogger(d, tensorboard=False) as log:
    ...         for i in range(10):  # returns -20, -16, ..., 16 at steps 1000, 2000, ..., 10000
    ...             log.log_episode(step=1000 * (i + 1), episodic_return=-20.0 + 4 * i, episodic_length=1000)
    ...     s = summarize(d, window=4, block=5000, target=10.0)
    >>> s.last_step, s.episodes, s.mean_last, s.target_step
    (10000, 10, 10.0, 10000)
    >>> [(b.start, b.episodes, b.mean_return, b.best_return, b.mean_length) for b in s.blocks]
    [(0, 4, -14.0, -8.0, 1000.0), (5000, 5, 4.0, 12.0, 1000.0), (10000, 1, 16.0, 16.0, 1000.0)]
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dreamarcade.baselines.common import plot_learning_curve
from dreamarcade.checkpoint import atomic_write_text, check_output_file, json_text

__all__ = ["Block", "RunSummary", "summarize", "format_summary", "main"]


@dataclass
class Block:
    """Episodes that ended in steps ``[start, start + size)``: their count, mean and best return, mean length.

    Example:
        >>> Block(start=0, size=50000, episodes=3, mean_return=-20.5, best_return=-19.0, mean_length=880.0).end
        50000
    """

    start: int
    size: int
    episodes: int
    mean_return: float
    best_return: float
    mean_length: float | None = None  # None where the log has no episodic_length column

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class RunSummary:
    """What :func:`summarize` reads from one run's ``episodes.csv``.

    ``mean_last``: mean return of the last ``window`` episodes (of all of them if fewer). ``best_mean`` /
    ``best_mean_step``: the highest running mean over ``window`` consecutive episodes and the step of its last
    episode (None with fewer than ``window`` episodes). ``target_step``: the first step at which that running mean
    reached ``target`` (None if it never did or no target was given). ``column``: the ``episodes.csv`` column these
    returns are (``episodic_return``, the game's, unless :func:`summarize` was asked for another).

    Example:
        >>> s = RunSummary("runs/a", window=20, last_step=0, episodes=0, mean_last=None, best_episode=None)
        >>> s.target_step is None, s.blocks
        (True, [])
    """

    run_dir: str
    window: int
    last_step: int
    episodes: int
    mean_last: float | None
    best_episode: float | None
    best_mean: float | None = None
    best_mean_step: int | None = None
    target: float | None = None
    target_step: int | None = None
    blocks: list[Block] = field(default_factory=list)
    column: str = "episodic_return"  # the episodes.csv column read as the return


# what a run directory holds before its first episode ends (episodes.csv is written from then on)
_RUN_MARKERS = ("checkpoint", "metrics.csv", "hyperparameters.json", "imitation_config.json", "jerk_state.npz")


def _episodes_csv(run_dir: str | Path) -> Path | None:
    """The run's episodes.csv; None for a run that has not finished an episode yet."""
    run_dir = Path(run_dir)
    path = run_dir / "episodes.csv" if run_dir.is_dir() or not run_dir.suffix else run_dir
    if not path.is_file() and run_dir.is_dir() and any((run_dir / m).exists() for m in _RUN_MARKERS):
        return None
    if not path.is_file():
        raise FileNotFoundError(
            f"No episodes.csv in '{run_dir}'. Pass the --run-dir of a dqn, ppo, imitation or jerk run (the agents "
            "write RUN_DIR/episodes.csv from their first finished episode on)."
        )
    return path


def _read(path: Path | None, column: str = "episodic_return") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(steps, returns, lengths or None) of an episodes.csv, the returns read from ``column`` (empty for None: no
    episode finished yet)."""
    steps: list[int] = []
    returns: list[float] = []
    lengths: list[float] = []
    if path is None:
        return np.zeros(0, np.int64), np.zeros(0), None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("step", column) if c not in (reader.fieldnames or [])]
        if reader.fieldnames is not None and missing:  # a header-only file of another kind is not an empty log
            raise ValueError(f"no column {' or '.join(missing)} in its header {reader.fieldnames}")
        has_length = "episodic_length" in (reader.fieldnames or [])
        for row in reader:
            if None in row.values() or "" in (row.get("step"), row.get(column)):
                continue  # a line cut short (a killed run, a full disk): not an episode
            steps.append(int(float(row["step"])))
            returns.append(float(row[column]))
            if has_length:
                lengths.append(float(row["episodic_length"]))
    return np.asarray(steps, np.int64), np.asarray(returns), np.asarray(lengths) if has_length else None


def summarize(
    run_dir: str | Path,
    window: int = 20,
    block: int = 50_000,
    target: float | None = None,
    column: str = "episodic_return",
) -> RunSummary:
    """Summarize the ``episodes.csv`` of ``run_dir`` (or the CSV file itself): see :class:`RunSummary`. The
    "returns" are the log's ``column`` (default the game's ``episodic_return``)."""
    if window < 1 or block < 1:
        raise ValueError(f"window and block must be >= 1, got window={window}, block={block}")
    path = _episodes_csv(run_dir)
    try:
        steps, returns, lengths = _read(path, column)
    except (KeyError, ValueError, OverflowError) as exc:  # OverflowError: a step of inf or 1e30
        hint = "" if column == "episodic_return" else f" (--column {column}: not every agent logs it)"
        raise ValueError(
            f"'{path}' is not an episodes log with the columns step, {column}{hint}: {exc}. Pass a run directory "
            "written by one of the bundled agents."
        ) from None
    s = RunSummary(
        run_dir=str(run_dir),
        window=window,
        last_step=int(steps.max()) if len(steps) else 0,
        episodes=len(returns),
        mean_last=float(returns[-window:].mean()) if len(returns) else None,
        best_episode=float(returns.max()) if len(returns) else None,
        target=target,
        column=column,
    )
    if len(returns) >= window:
        running = np.convolve(returns, np.ones(window) / window, mode="valid")  # running[i]: episodes i..i+window-1
        best = int(np.argmax(running))
        s.best_mean, s.best_mean_step = float(running[best]), int(steps[best + window - 1])
        if target is not None:
            hit = np.flatnonzero(running >= target - 1e-9)
            s.target_step = int(steps[hit[0] + window - 1]) if len(hit) else None
    if len(steps):
        starts = (steps // block) * block
        for start in range(0, int(starts.max()) + 1, block):
            in_block = starts == start
            if in_block.any():
                length = float(lengths[in_block].mean()) if lengths is not None else None
                s.blocks.append(
                    Block(start, block, int(in_block.sum()), float(returns[in_block].mean()),
                          float(returns[in_block].max()), length)
                )  # fmt: skip
    return s


def _steps(n: int) -> str:
    if n == 0:
        return "0"
    return f"{n / 1e6:g}M" if n >= 1_000_000 and n % 100_000 == 0 else f"{n / 1e3:g}k" if n % 1000 == 0 else str(n)


def format_summary(s: RunSummary) -> str:
    """The summary as Markdown: a few lines of totals, then the table of blocks."""
    if s.episodes == 0:
        return f"## {s.run_dir}\nno finished episode logged yet\n"
    lines = [
        f"## {s.run_dir}" + ("" if s.column == "episodic_return" else f" ({s.column})"),
        f"- last logged step {s.last_step:,}, {s.episodes} episodes, best episode {s.best_episode:g}",
        f"- mean of the last {min(s.window, s.episodes)} episodes: {s.mean_last:.2f}",
    ]
    if s.best_mean is not None:
        best = f"{s.best_mean:.2f} (at step {s.best_mean_step:,})"
        lines.append(f"- best mean over {s.window} consecutive episodes: {best}")
    if s.target is not None:
        reached = f"first at step {s.target_step:,}" if s.target_step is not None else "not reached"
        lines.append(f"- mean of {s.window} episodes >= {s.target:g}: {reached}")
    lines += ["", "| steps | episodes | mean return | best episode | mean length |", "|---|---|---|---|---|"]
    for b in s.blocks:
        length = f"{b.mean_length:.0f}" if b.mean_length is not None else "-"
        row = f"{_steps(b.start)}-{_steps(b.end)} | {b.episodes} | {b.mean_return:.1f} | {b.best_return:g} | {length}"
        lines.append(f"| {row} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamarcade.baselines summary",
        description="Summarize runs from their episodes.csv: totals, the mean over the last episodes, a table of "
        "the mean return per block of steps, and optionally one learning-curve PNG of all runs.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or episodes.csv files)")
    parser.add_argument("--window", type=int, default=20, help="episodes in the running mean (default 20)")
    parser.add_argument("--block", type=int, default=50_000, help="steps per row of the table (default 50000)")
    parser.add_argument("--target", type=float, default=None, help="report the first step the running mean >= this")
    parser.add_argument("--png", default=None, help="write the learning curves of all runs to this PNG")
    parser.add_argument("--json", default=None, help="write the summaries to this JSON file")
    parser.add_argument(
        "--column",
        default="episodic_return",
        help="the episodes.csv column to summarize (default episodic_return, the game's return; train_return: the "
        "return the imitation agent trains on, imitation reward and bonus included)",
    )
    args = parser.parse_args(argv)
    if args.png and Path(args.png).suffix.lower() != ".png":
        parser.error(f"--png writes a PNG image: give a path ending in .png, got {args.png}")
    try:
        for path, flag in ((args.png, "--png"), (args.json, "--json")):
            if path:
                check_output_file(path, flag)
        summaries = [summarize(d, args.window, args.block, args.target, args.column) for d in args.run_dirs]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(format_summary(s) for s in summaries), end="")
    if args.png:
        curves = {s.run_dir: _read(_episodes_csv(s.run_dir), args.column)[:2] for s in summaries if s.episodes}
        ylabel = "episodic return" if args.column == "episodic_return" else args.column
        out = plot_learning_curve(curves, args.png, title="learning curves", window=args.window, ylabel=ylabel)
        print(f"learning curves: {out}")
    if args.json:
        atomic_write_text(args.json, json_text([asdict(s) for s in summaries], indent=2) + "\n")  # strict: NaN -> null
        print(f"summaries: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
