"""What every baseline shares: run directories, CSV + TensorBoard logs, learning curves, devices, seeds.

Kept deliberately small: an agent file reads top to bottom and calls these helpers directly.

Example:
    >>> import tempfile
    >>> from dreamarcade.baselines.common import RunLogger
    >>> with RunLogger(tempfile.mkdtemp(), tensorboard=False) as log:
    ...     log.log_episode(step=100, episodic_return=1.0, episodic_length=10)
    >>> log.episodes_csv.read_text().splitlines()[0]
    'step,episodic_return,episodic_length'
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import json
import math
import numbers
import os
import random
import signal
import sys
import threading
import typing
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamarcade.checkpoint import atomic_write_text, checkpoint_exists
from dreamarcade.errors import DreamArcadeError, check_count


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (cuda when present).

    Fails with a ValueError naming the fix when the device is misspelled or not present on this machine, before any
    work starts (torch itself would fail later, at the first tensor moved there).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} was requested but no CUDA GPU is visible; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ValueError(f"--device {device}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device} was requested but Apple's MPS backend is not available; use cpu.")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device}: only cpu, cuda, cuda:N, mps and auto are supported")
    return dev


class GracefulStop:
    """Turn the first Ctrl-C / SIGTERM into a request to stop at a clean point; a second one interrupts.

    A training loop checks :attr:`requested` between iterations, then saves its checkpoint and returns,
    so an interrupted run can always be continued with ``--resume``. Outside the main thread (where
    signal handlers cannot be installed) it does nothing and :attr:`requested` stays False.

    Example:
        >>> from dreamarcade.baselines.common import GracefulStop
        >>> with GracefulStop() as stop:
        ...     steps = 0
        ...     while not stop.requested and steps < 3:
        ...         steps += 1
        >>> steps
        3
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
            "(send it again to stop at once).",
            file=sys.stderr,  # stdout stays the command's result (JSON) alone
            flush=True,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is signal.SIG_IGN:  # a background job of a shell (or nohup) ignores it
                    continue
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def note_nothing_to_train(step: int, total: int) -> bool:
    """On a resume, say so (on stderr) when the checkpoint's step already reaches the run's total: nothing is
    trained. Returns whether it did."""
    if step < total:
        return False
    print(
        f"Note: the checkpoint is at step {step}, which reaches --total-timesteps {total}: nothing is trained. "
        f"--total-timesteps counts the whole run, not the steps to add: pass a value above {step} to train further.",
        file=sys.stderr,
    )
    return True


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class RunLogger:
    """Writes ``episodes.csv``, ``metrics.csv`` and (optionally) TensorBoard events into ``run_dir``.

    CSV files are appended to, so a resumed run continues the same logs (``resumed_at``: the step it resumes
    from, so TensorBoard drops the replayed steps' events as :func:`drop_rows_after` drops their rows). One writer
    per file: a second logger on the same directory would lose rows when either widens a header. The trainers
    claim their run directory (:func:`claim_run_dir`), so a second process on it is refused.

    Example:
        >>> import tempfile
        >>> from dreamarcade.baselines.common import RunLogger, read_episodes
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with RunLogger(d, tensorboard=False) as log:
        ...         log.log_episode(step=100, episodic_return=1.0, episodic_length=10)
        ...         log.log_metrics(step=100, loss=0.5)
        ...     with RunLogger(d, tensorboard=False) as log:  # a resumed run appends to the same files
        ...         log.log_episode(step=250, episodic_return=3.0, episodic_length=15)
        ...     steps, returns = read_episodes(log.episodes_csv)
        ...     print(steps.tolist(), returns.tolist(), log.metrics_csv.read_text().splitlines())
        [100, 250] [1.0, 3.0] ['step,loss', '100,0.5']
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], tensorboard: bool = True, resumed_at: int | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.episodes_csv = self.run_dir / "episodes.csv"
        self.metrics_csv = self.run_dir / "metrics.csv"
        self._writers: dict[Path, tuple[Any, Any, list[str]]] = {}
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # a resumed run replays the steps after its checkpoint: TensorBoard drops their earlier events
                purge = None if resumed_at is None else int(resumed_at) + 1
                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)
            except ImportError:  # tensorboard is optional; CSV logs are always written
                self._tb = None

    def _write(self, path: Path, row: dict[str, Any]) -> None:
        if path in self._writers and any(k not in self._writers[path][2] for k in row):
            self._writers.pop(path)[0].close()  # a new column: reopened below under the widened header
        if path not in self._writers:
            new = not path.exists() or path.stat().st_size == 0
            if new:
                fields = list(row)
            else:
                last = _last_byte(path)
                if last == b"\r":  # only the row's final "\n" was lost: the row itself is whole
                    with open(path, "ab") as tail:
                        tail.write(b"\n")
                cut = last not in _LINE_ENDS
                with open(path, newline="") as existing:
                    reader = csv.reader(existing)
                    fields = next(reader)
                    added = [k for k in row if k not in fields]
                    rows = [r + [""] * len(added) for r in reader if r] if added or cut else []
                if cut and not rows:  # only a cut header: start the file again
                    fields, added = list(row), []
                elif cut:  # appending to a cut line would glue the next row onto it: drop the partial row
                    rows = rows[:-1]
                if added or cut:  # e.g. an evaluation logged only now: widen the file, never drop the value
                    fields = [*fields, *added]
                    _rewrite_csv(path, fields, rows)
            f = open(path, "a", newline="")  # noqa: SIM115 - kept open for the run, closed in close()
            w = csv.DictWriter(f, fieldnames=fields)
            if new:
                w.writeheader()
            self._writers[path] = (f, w, fields)
        f, w, _ = self._writers[path]
        w.writerow(row)
        f.flush()

    def log_episode(self, step: int, episodic_return: float, episodic_length: int, **extra: float) -> None:
        """Record one finished episode."""
        row = {
            "step": step,
            "episodic_return": float(episodic_return),
            "episodic_length": int(episodic_length),
            **extra,
        }
        self._write(self.episodes_csv, row)
        if self._tb is not None:
            self._tb.add_scalar("charts/episodic_return", episodic_return, step)
            self._tb.add_scalar("charts/episodic_length", episodic_length, step)

    def log_csv(self, filename: str, row: dict[str, Any]) -> None:
        """Append ``row`` to ``run_dir/filename`` by column name (a new column widens the file's header)."""
        self._write(self.run_dir / filename, row)

    def log_metrics(self, step: int, **metrics: float) -> None:
        """Record training metrics (losses, epsilon, steps per second...)."""
        self._write(self.metrics_csv, {"step": step, **{k: float(v) for k, v in metrics.items()}})
        if self._tb is not None:
            for k, v in metrics.items():
                if math.isfinite(float(v)):  # NaN marks "not measured at this step" in the CSV
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        for f, _, _ in self._writers.values():
            f.close()
        self._writers.clear()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LINE_ENDS = (b"\n", b"\r")  # how a log's last byte ends a whole row ("\r": only the row's final "\n" was lost)


def _last_byte(path: Path) -> bytes:
    """The last byte of a non-empty log: not in ``_LINE_ENDS`` when its last row was cut short (a kill, a full disk)."""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _read_step_log(path: Path) -> tuple[list[str], list[list[str]], int] | None:
    """(header, rows, index of the ``step`` column) of a step-keyed log CSV, None for a missing or empty file or
    one without a ``step`` column. A last row cut short (a kill, a full disk) reads as an empty row: "1500,..." cut
    to "15" would otherwise read as step 15."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    cut = _last_byte(path) not in _LINE_ENDS
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if header is None or "step" not in header:
        return None
    if cut and rows:
        rows[-1] = []
    return header, rows, header.index("step")


def drop_rows_after(csv_path: str | os.PathLike[str], step: int) -> int:
    """Atomically remove the rows of a step-keyed log CSV whose ``step`` is above ``step``; return how many.

    A run resumed from a checkpoint at ``step`` replays the steps after it, so rows logged after that checkpoint
    (before a crash or kill) would otherwise be counted twice. A missing or empty file is left alone; a row cut
    short is never kept.
    """
    path = Path(csv_path)
    log = _read_step_log(path)
    if log is None:
        return 0
    header, rows, col = log
    kept = [r for r, s in _whole_rows(path, header, rows, col) if s <= step]
    if len(kept) == len(rows):
        return 0
    _rewrite_csv(path, header, kept)
    return len(rows) - len(kept)


def last_logged_step(csv_path: str | os.PathLike[str]) -> float | None:
    """The largest ``step`` among the whole rows of a step-keyed log CSV; None for a missing or empty log."""
    log = _read_step_log(Path(csv_path))
    if log is None:
        return None
    header, rows, col = log
    steps = [s for _, s in _whole_rows(Path(csv_path), header, rows, col)]
    return max(steps) if steps else None


def _whole_rows(path: Path, header: list[str], rows: list[list[str]], col: int) -> list[tuple[list[str], float]]:
    """The rows of a step log with all their fields, each with its step; a step that is no number is a ValueError
    naming the file and the row (float()'s own message named neither)."""
    out = []
    for i, r in enumerate(rows):
        if len(r) != len(header):
            continue
        try:
            out.append((r, float(r[col])))
        except ValueError:
            raise ValueError(
                f"{path}, line {i + 2}: step {r[col]!r} is not a number (edited by hand?): fix or delete that row"
            ) from None
    return out


def _rewrite_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Replace a log CSV atomically with ``header`` and ``rows``."""
    buf = io.StringIO()
    writer = csv.writer(buf)  # the same dialect RunLogger's DictWriter uses
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def has_episode_statistics(env: gym.Env) -> bool:
    """Whether a recorder of episode statistics is already in ``env``'s wrapper chain (Gymnasium's
    ``RecordEpisodeStatistics`` or SB3's ``Monitor``, which both write ``info["episode"]``), or the env at its bottom
    says it records them itself (``records_episode_statistics``: an env such as
    :class:`~dreamarcade.envs.sonic.RetroLevelsEnv` that holds a wrapped env inside). A second one would assert at
    the end of the first episode: Gymnasium's refuses to overwrite ``info["episode"]``."""
    while isinstance(env, gym.Wrapper):
        kind = type(env)
        if isinstance(env, gym.wrappers.RecordEpisodeStatistics) or (
            kind.__name__ == "Monitor" and kind.__module__.startswith("stable_baselines3")
        ):
            return True
        env = env.env
    return bool(getattr(env, "records_episode_statistics", False))


def read_episodes(csv_path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (steps, returns) from an ``episodes.csv``."""
    steps, rets = [], []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            steps.append(int(float(row["step"])))
            rets.append(float(row["episodic_return"]))
    return np.asarray(steps), np.asarray(rets)


def plot_learning_curve(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    out_png: str | os.PathLike[str],
    title: str,
    window: int = 20,
    xlabel: str = "environment steps",
    ylabel: str = "episodic return",
) -> Path:
    """Plot raw returns (faint) and their running mean over ``window`` episodes for each named curve."""
    fig, ax = new_figure((7, 4.2))
    plotted = False
    for i, (label, (x, y)) in enumerate(curves.items()):
        color = f"C{i}"
        if len(x) == 0:
            continue
        ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
        w = max(1, min(window, len(y)))
        smooth = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(x[w - 1 :], smooth, color=color, linewidth=2, label=f"{label} (mean of {w})")
        plotted = True
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, out_png)
    return out_png


def new_figure(size: tuple[float, float], dpi: int = 110) -> tuple[Any, Any]:
    """A matplotlib (figure, axes) drawn off-screen, without pyplot: the trainers plot while they run, and switching
    the process's backend (``matplotlib.use("Agg")``) would take a notebook's inline plots away."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def save_hyperparameters(run_dir: str | os.PathLike[str], args: Any) -> None:
    """Write the run's hyperparameter dataclass to ``run_dir/hyperparameters.json``."""
    data = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(vars(args))
    atomic_write_text(Path(run_dir) / "hyperparameters.json", json.dumps(data, indent=2, default=str))


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")  # containers that hold write_video's H.264


def check_video_path(path: str | os.PathLike[str], what: str) -> None:
    """Raise ``ValueError`` unless :func:`write_video` can write ``path``: a file (not a folder, not under a file)
    with one of :data:`VIDEO_SUFFIXES`. ``what`` names it (e.g. ``"--video"``). Call it before the work whose frames
    it keeps, so that a bad path is not found after the episodes are played.

    >>> check_video_path("runs/agent.gif", "--video")
    Traceback (most recent call last):
    ...
    ValueError: --video 'runs/agent.gif' is no video file this library writes: end it in .mp4, .mkv, .mov or .avi
    """
    from dreamarcade.checkpoint import check_output_file

    check_output_file(path, what)
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"{what} '{path}' is no video file this library writes: end it in "
            f"{', '.join(VIDEO_SUFFIXES[:-1])} or {VIDEO_SUFFIXES[-1]}"
        )


class VideoWriter:
    """Encode RGB uint8 frames into an H.264 MP4 with PyAV as they come, so a long video never sits in memory.

    Sizes are rounded up to even (padded); grayscale (H, W) frames are shown grey. The container is opened at the
    first frame, written to a temporary file and renamed into ``path`` by :meth:`close` (a run cut off leaves no
    half-written video under ``path``); leaving a ``with`` block on an exception discards it.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from dreamarcade.baselines.common import VideoWriter
        >>> path = Path(tempfile.mkdtemp()) / "clip.mp4"
        >>> with VideoWriter(path, fps=30) as video:
        ...     for t in range(10):
        ...         video.add(np.full((21, 16, 3), 20 * t, np.uint8))
        >>> video.frames, path.stat().st_size > 0
        (10, True)
    """

    def __init__(self, path: str | os.PathLike[str], fps: int = 30) -> None:
        from dreamarcade.errors import require

        self._av = require("av", "writing MP4 videos", extra="video")
        self.path, self.fps, self.frames = Path(path), fps, 0
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._container: Any = None
        self._stream: Any = None
        self._size = (0, 0)

    def add(self, frame: np.ndarray) -> None:
        """Encode one (H, W, 3) or (H, W) uint8 frame; every frame must have the first one's size."""
        f = np.asarray(frame)
        if f.dtype != np.uint8 or f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[2] != 3):
            # a float frame in [0, 1] was cast to black, 300 wrapped to 44
            raise ValueError(f"VideoWriter takes uint8 frames (H, W, 3) or (H, W), got {f.dtype} {f.shape}")
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, axis=2)
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = f.shape[:2]
            self._size = (h + h % 2, w + w % 2)
            self._container = self._av.open(str(self._tmp), mode="w")
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.height, self._stream.width = self._size
            self._stream.pix_fmt = "yuv420p"
        H, W = self._size
        if f.shape[0] > H or f.shape[1] > W:
            raise ValueError(f"frame {self.frames} is {f.shape[1]}x{f.shape[0]}, larger than the video's {W}x{H}")
        if (f.shape[0], f.shape[1]) != (H, W):
            f = np.pad(f, ((0, H - f.shape[0]), (0, W - f.shape[1]), (0, 0)))
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(f, dtype=np.uint8), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush the encoder and move the video into ``path``; None (and no file) if no frame was added."""
        if self._container is None:
            return None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close without writing ``path`` (the temporary file is removed)."""
        if self._container is not None:
            self._container.close()
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike[str], fps: int = 30) -> Path:
    """Write RGB uint8 frames (T, H, W, 3), any iterable of them, to an H.264 MP4 (see :class:`VideoWriter`)."""
    with VideoWriter(path, fps) as video:
        for f in frames:
            video.add(f)
        if not video.frames:
            raise ValueError("write_video got no frames")
    return Path(path)


def help_field(text: str, default: Any) -> Any:
    """A dataclass field with ``default`` whose ``--help`` text is ``text`` (read by the CLIs' parsers)."""
    return dataclasses.field(default=default, metadata={"help": text})


def check_counts(config: Any, minimums: dict[str, int], hints: dict[str, str] | None = None) -> None:
    """Each named field of ``config`` must be an integer >= its minimum; a ValueError names the CLI flag.

    Numpy integers (a sweep's ``np.arange``) are accepted and stored as ``int``. ``hints`` adds a note per field to
    the message (what the minimum means, e.g. "0: the env's own cap").

    >>> from types import SimpleNamespace
    >>> check_counts(SimpleNamespace(batch_size=0), {"batch_size": 1})
    Traceback (most recent call last):
    ...
    ValueError: --batch-size must be an integer >= 1, got 0
    """
    hints = hints or {}
    for name, low in minimums.items():
        flag = f"--{name.replace('_', '-')}"
        setattr(config, name, check_count(flag, getattr(config, name), low, hints.get(name, "")))


def check_choices(config: Any) -> None:
    """Each ``Literal[...]`` field of the dataclass ``config`` must hold one of its values; a ValueError names the
    CLI flag. argparse checks them on the command line; this is the check for configs built in Python, where a
    misspelled value was taken (``controller="v_only"`` evolved a full controller).

    >>> import dataclasses, typing
    >>> @dataclasses.dataclass
    ... class Config:
    ...     mode: typing.Literal["fast", "exact"] = "exact"
    >>> check_choices(Config(mode="Fast"))
    Traceback (most recent call last):
    ...
    ValueError: --mode must be one of 'fast', 'exact', got 'Fast'
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        ftype = hints.get(f.name)
        if typing.get_origin(ftype) is typing.Literal:
            allowed = typing.get_args(ftype)
            value = getattr(config, f.name)
            if value not in allowed or type(value) is not type(allowed[0]):
                flag = f"--{f.name.replace('_', '-')}"
                raise ValueError(f"{flag} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def check_ranges(
    config: Any, ranges: dict[str, tuple[float, float | None, bool]], hints: dict[str, str] | None = None
) -> None:
    """Each named float field of ``config`` must be finite and in its range ``(low, high, low_included)``
    (``high`` None: no upper bound, which is always included); None values are skipped (an optional setting that
    is off). A ValueError names the CLI flag, as :func:`check_counts` does, with the field's note from ``hints``
    after the range (what a bound means, e.g. "0: the env's default").

    >>> from types import SimpleNamespace
    >>> check_ranges(SimpleNamespace(gamma=float("nan")), {"gamma": (0.0, 1.0, True)})
    Traceback (most recent call last):
    ...
    ValueError: --gamma must be a finite number in [0.0, 1.0], got nan
    """
    for name, (low, high, low_included) in ranges.items():
        value = getattr(config, name)
        if value is None:
            continue
        try:
            above = value >= low if low_included else value > low
        except TypeError:  # not a number at all (a string from a hand-edited config): refused below
            above = False
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy floats too
        inside = number and math.isfinite(value) and above and (high is None or value <= high)
        if not inside:
            bracket = "[" if low_included else "("
            where = f"{bracket}{low}, {high}]" if high is not None else f"{bracket}{low}, inf)"
            hint = (hints or {}).get(name, "")
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number in {where}{hint}, got {value!r}")


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts (rounds, repeats, envs, episodes): an integer >= 1, else a usage error.

    >>> positive_int("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def name_and_path(text: str) -> tuple[str, str]:
    """An argparse ``type`` for labelled paths (``NAME=PATH``): ``(name, path)``, else a usage error naming it.

    >>> name_and_path("tdc=runs/emb_tdc")
    ('tdc', 'runs/emb_tdc')
    >>> name_and_path("runs/emb_tdc")  # a bare path would otherwise be taken as a label
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected NAME=PATH (a label, '=', a path), got 'runs/emb_tdc'
    """
    name, _, path = text.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (a label, '=', a path), got {text!r}")
    return name, path


class _StoreTuple(argparse.Action):
    """Store the ``nargs`` values of a tuple field as a tuple (argparse gives a list)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, tuple(values))


def _scalar(value: str, kind: type, optional: bool) -> Any:
    if optional and value.lower() in ("", "none"):
        return None
    return kind(value)


def _converter(kind: type, optional: bool) -> Callable[[str], Any]:
    convert = functools.partial(_scalar, kind=kind, optional=optional)
    convert.__name__ = kind.__name__  # type: ignore[attr-defined]  (argparse names it in "invalid int value")
    return convert


def _tuple_nargs(targs: tuple[Any, ...]) -> int | str | None:
    """argparse's ``nargs`` for ``tuple[T, ...]`` ("+") or ``tuple[T, T]`` (2); None for other tuples."""
    elems = targs[:1] if len(targs) == 2 and targs[1] is Ellipsis else targs
    if not elems or len(set(elems)) != 1 or elems[0] not in (int, float, str):
        return None
    return "+" if elems is not targs else len(targs)


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    defaults: Any = None,
    exclude: typing.Iterable[str] = (),
    *,
    given_only: bool = False,
) -> None:
    """Add one ``--field-name`` flag per field of the dataclass ``cls`` to ``parser``.

    Field types: ``bool`` (``--flag/--no-flag``); ``int``, ``float``, ``str`` and ``Literal[...]`` (the values are
    the choices), each also as ``Optional`` (``none`` gives None); ``tuple[T, ...]`` (one or more values) and
    ``tuple[T, T]`` (exactly that many) of int, float or str. Any other type raises TypeError rather than being
    parsed wrongly.
    The help text is the field's ``metadata["help"]`` (:func:`help_field`) and its default. Defaults come from
    ``defaults`` (an instance of ``cls``), else the dataclass defaults. ``exclude``: fields that get no flag.
    ``given_only``: a flag not given parses to None (its help still shows the default), so that the caller can
    lay the flags given over presets of its own.

    Example:
        >>> import argparse, dataclasses, typing
        >>> @dataclasses.dataclass
        ... class Cfg:
        ...     mode: typing.Literal["fast", "exact"] = "exact"
        ...     sizes: tuple[int, ...] = (32, 64)
        ...     target_kl: float | None = None
        >>> p = argparse.ArgumentParser()
        >>> add_dataclass_args(p, Cfg)
        >>> Cfg(**vars(p.parse_args(["--mode", "fast", "--sizes", "8", "16", "--target-kl", "0.02"])))
        Cfg(mode='fast', sizes=(8, 16), target_kl=0.02)
    """
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        text = " ".join(filter(None, [f.metadata.get("help"), f"(default: {default})"]))
        kw: dict[str, Any] = {
            "default": None if given_only else default,
            "help": text.replace("%", "%%"),  # argparse %-formats help texts: "5%" in a help text broke --help
        }
        ftype, optional = hints[f.name], False
        args = [a for a in typing.get_args(ftype) if a is not type(None)]
        if len(args) == 1 and type(None) in typing.get_args(ftype):
            ftype, optional = args[0], True
        origin, targs = typing.get_origin(ftype), typing.get_args(ftype)
        if ftype is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif ftype in (int, float, str):
            kw["type"] = _converter(ftype, optional)
        elif origin is typing.Literal and len({type(v) for v in targs}) == 1 and type(targs[0]) in (int, str):
            kw["type"] = _converter(type(targs[0]), optional)
            kw["choices"] = list(targs) + ([None] if optional else [])
        elif origin is tuple and _tuple_nargs(targs) is not None and not optional:
            kw.update(type=_converter(targs[0], False), nargs=_tuple_nargs(targs), action=_StoreTuple)
        else:
            raise TypeError(
                "dataclass CLI flags support bool, int, float, str and Literal fields (or Optional of them) and "
                "tuples of int, float or str; "
                f"{cls.__name__}.{f.name} is {ftype}"
            )
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)


def parse_dataclass_args(cls: type, argv: list[str] | None, description: str, prog: str | None = None) -> Any:
    """Build an argparse CLI from a hyperparameter dataclass and parse ``argv`` into an instance.

    The flags are :func:`add_dataclass_args`'s. A ValueError of the dataclass's own checks is a usage error (exit 2).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_dataclass_args(parser, cls)
    ns = parser.parse_args(argv)
    try:
        return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
    except ValueError as exc:  # the config's own checks: a usage error naming the flag, not a traceback
        parser.error(str(exc))


class RunDirInUseError(DreamArcadeError, FileExistsError):
    """A new (not resumed) run was pointed at a directory that already holds a run.

    Example:
        >>> import gymnasium as gym, tempfile
        >>> from dreamarcade.baselines.common import RunDirInUseError
        >>> from dreamarcade.baselines.ppo import PPOConfig, train_ppo
        >>> cfg = PPOConfig(total_timesteps=64, num_steps=64, num_minibatches=1, update_epochs=1)
        >>> envs = [lambda: gym.make("CartPole-v1")]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = train_ppo(envs, cfg, d, progress=False, tensorboard=False)
        ...     try:
        ...         train_ppo(envs, cfg, d, progress=False, tensorboard=False)  # the same run_dir, no resume
        ...     except RunDirInUseError as err:
        ...         print(isinstance(err, FileExistsError), str(err).split("(")[1].split(")")[0])
        True checkpoint/, episodes.csv, metrics.csv
    """


class RunDirNotAFolderError(DreamArcadeError, NotADirectoryError):
    """The run directory's path is a file, or lies under one (:func:`claim_run_dir`, :func:`check_run_dir_free`).

    Example:
        >>> from dreamarcade.baselines.common import RunDirNotAFolderError
        >>> issubclass(RunDirNotAFolderError, NotADirectoryError)
        True
    """


def check_folder_path(folder: str | os.PathLike[str], what: str = "run directory (--run-dir)") -> None:
    """Raise :class:`RunDirNotAFolderError` if ``folder`` is a file or lies under one (``what`` names it).

    For a command to call before work whose results go into ``folder`` (missing folders are created later).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from dreamarcade.baselines.common import check_folder_path
        >>> d = Path(tempfile.mkdtemp())
        >>> check_folder_path(d / "new" / "run")  # fine: created when written
        >>> (d / "notes.txt").write_text("")
        0
        >>> check_folder_path(d / "notes.txt" / "bundle", "--out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dreamarcade.baselines.common.RunDirNotAFolderError: --out '...bundle' lies under '...notes.txt', which is a ...
    """
    folder = Path(folder)
    there = next((q for q in (folder, *folder.parents) if q.exists()), None)  # the rest is created
    if there is not None and not there.is_dir():
        where = "is a file" if there == folder else f"lies under '{there}', which is a file"
        raise RunDirNotAFolderError(f"{what} '{folder}' {where}, not a folder: pass a folder path.")


def check_run_dir_free(
    run_dir: str | os.PathLike[str],
    state_files: tuple[str, ...] = (),
    checkpoint_dir: str = "checkpoint",
    log_dir: str = "",
) -> None:
    """Raise :class:`RunDirInUseError` if ``run_dir`` already holds a run (a checkpoint or logged rows).

    What a new, not resumed, run checks before it writes anything, so two runs never mix in one directory.
    ``state_files``: the agent's own resume files (e.g. JERK's ``jerk_state.npz``), which count as a run too.
    ``checkpoint_dir`` / ``log_dir``: where this kind of run keeps them, relative to ``run_dir`` ("" = itself).
    """
    run_dir = Path(run_dir)
    check_folder_path(run_dir)
    found = [f"{checkpoint_dir or '.'}/"] if checkpoint_exists(run_dir / checkpoint_dir) else []
    found += [n for n in state_files if (run_dir / n).exists()]
    logs = run_dir / log_dir
    found += [str(Path(log_dir) / n) for n in ("episodes.csv", "metrics.csv", "eval.csv") if _has_rows(logs / n)]
    if found:
        raise RunDirInUseError(
            f"{run_dir} already holds a run ({', '.join(found)}). Pass resume=True (--resume) to continue "
            "it, or use a new run directory."
        )


class RunDirBusyError(DreamArcadeError, BlockingIOError):
    """Another process is writing to the run directory (:func:`claim_run_dir`); ``holder`` is its pid as its lock
    file records it ("unknown" if it records none).

    Example:
        >>> from dreamarcade.baselines.common import RunDirBusyError
        >>> issubclass(RunDirBusyError, BlockingIOError), RunDirBusyError("busy").holder
        (True, 'unknown')
    """

    holder: str = "unknown"


LOCK_FILE = ".dreamarcade.lock"
# run directory -> (the open, flock-ed lock file, the claiming thread, whether the claim created the directory)
_claims: dict[Path, tuple[Any, int, bool]] = {}
_claims_guard = threading.Lock()
_F = typing.TypeVar("_F", bound=Callable[..., Any])


def claim_run_dir(run_dir: str | os.PathLike[str]) -> None:
    """Create ``run_dir`` (and its parents) and make this process its only writer until :func:`release_run_dir`.

    Trainers claim their run directory before they change anything in it (a resume drops the log rows after its
    checkpoint), so that a second process on the same directory, such as a ``--resume`` started twice, stops with
    :class:`RunDirBusyError` instead of cutting the first one's logs and overwriting its checkpoints. A claim is an
    advisory ``flock`` on ``run_dir/.dreamarcade.lock`` (which names the holder's pid); the system drops it when the
    process ends, however it ends. A claim this thread already holds is kept (a trainer that calls another on the
    same directory); one held by another thread of the process is refused too. Trainers are decorated with
    :func:`releases_run_dirs`, which releases their claims when they return or raise. Without ``fcntl`` (Windows)
    nothing is locked.

    Example:
        >>> import tempfile
        >>> from dreamarcade.baselines.common import claim_run_dir, release_run_dir
        >>> d = tempfile.mkdtemp()
        >>> claim_run_dir(d); claim_run_dir(d)  # again from this process: fine
        >>> release_run_dir(d)
    """
    path = Path(run_dir).resolve()
    check_folder_path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    with _claims_guard:
        if path in _claims:
            if _claims[path][1] != threading.get_ident():  # its claim would end with the other thread's run
                raise RunDirBusyError(
                    f"{run_dir} is in use by another thread of this process: use another run directory per thread."
                )
            return
        lock = open(path / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the claim, closed by release_run_dir
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            busy = RunDirBusyError(
                f"{run_dir} is in use by another process (pid {holder}): two runs writing to one directory would "
                "mix their logs and checkpoints. Wait for it to end (or stop it), or use another run directory."
            )
            busy.holder = holder
            raise busy from None
        except OSError as exc:
            lock.close()  # a filesystem without flock (NFS without lockd): a raw OSError stopped every run
            warnings.warn(
                f"{run_dir}: this filesystem cannot lock files ({exc.strerror}), so a second run started in this "
                "directory would not be stopped: start one run per directory.",
                stacklevel=2,
            )
            return
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        _claims[path] = (lock, threading.get_ident(), created)


def release_run_dir(run_dir: str | os.PathLike[str]) -> None:
    """End this process's claim on ``run_dir`` (:func:`claim_run_dir`); nothing happens without one. A directory
    the claim created and nothing was written to (a refused ``--resume`` of a mistyped path) is removed again."""
    path = Path(run_dir).resolve()
    with _claims_guard:
        held = _claims.pop(path, None)
    if held is None:
        return
    lock, _, created = held
    lock.close()  # closing the file releases the flock
    if created and [p.name for p in path.iterdir()] == [LOCK_FILE]:
        with contextlib.suppress(OSError):  # another process may claim it meanwhile: then it stays
            (path / LOCK_FILE).unlink()
            path.rmdir()


def releases_run_dirs(fn: _F) -> _F:
    """Decorate a trainer: the run directories it claims (:func:`claim_run_dir`) are released when it returns or
    raises, so a notebook or test process that survives a failed run does not keep other processes out.

    Example:
        >>> import tempfile
        >>> from dreamarcade.baselines.common import _claims, claim_run_dir, releases_run_dirs
        >>> @releases_run_dirs
        ... def fails(d):
        ...     claim_run_dir(d)
        ...     raise RuntimeError("mid-run")
        >>> try:
        ...     fails(tempfile.mkdtemp())
        ... except RuntimeError:
        ...     print(len(_claims))
        0
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        me = threading.get_ident()
        with _claims_guard:
            before = set(_claims)
        try:
            return fn(*args, **kwargs)
        finally:
            with _claims_guard:
                new = [p for p, (_, owner, _) in _claims.items() if p not in before and owner == me]
            for path in new:
                release_run_dir(path)

    return typing.cast(_F, wrapper)


def _has_rows(csv_path: Path) -> bool:
    """Whether a log CSV holds at least one row below its header."""
    if not csv_path.exists():
        return False
    with open(csv_path, newline="") as f:
        return sum(1 for line in f if line.strip()) > 1
