"""Errors that name what went wrong and what to do about it.

Every heavy dependency (vizdoom, stable-retro, box2d, av, ray, ale-py) is imported lazily through
:func:`require`, so a missing one raises :class:`MissingExtraError` naming the pip extra to install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

# module to import -> (extra that provides it, pip requirement shown to the user)
_EXTRA_OF_MODULE: dict[str, str] = {
    "ale_py": "atari",
    "vizdoom": "doom",
    "stable_retro": "retro",
    "Box2D": "box2d",
    "av": "video",
    "ray": "distributed",
    "cma": "core",
    "stable_baselines3": "test",
    "cv2": "core",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


class DreamArcadeError(Exception):
    """Base class of every error raised on purpose by dreamarcade.

    Example:
        >>> from dreamarcade.checkpoint import load_checkpoint
        >>> try:
        ...     load_checkpoint("no_such_checkpoint")
        ... except DreamArcadeError as err:  # one clause catches every dreamarcade error
        ...     print(type(err).__name__)
        CheckpointError
    """


class MissingExtraError(DreamArcadeError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it.

    Raised by :func:`require`. It is also an ImportError, so ``except ImportError`` code keeps working.

    Example:
        >>> try:
        ...     require("not_installed", extra="video")  # a module missing from this environment
        ... except MissingExtraError as err:
        ...     print(err.extra, isinstance(err, ImportError))
        ...     print(err)
        video True
        The optional dependency 'not_installed' is not installed; install it with `pip install 'dreamarcade[video]'`.
    """

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        self.module = module
        self.extra = extra
        what = f" (needed for {purpose})" if purpose else ""
        if extra == "core":
            fix = "reinstall dreamarcade: `pip install dreamarcade`"
        else:
            fix = f"install it with `pip install 'dreamarcade[{extra}]'`"
        super().__init__(f"The optional dependency '{module}' is not installed{what}; {fix}.")


class CheckpointError(DreamArcadeError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the model or env it is loaded into.

    Example:
        >>> from dreamarcade.checkpoint import load_checkpoint
        >>> try:
        ...     load_checkpoint("no_such_checkpoint")
        ... except CheckpointError as err:
        ...     print(str(err).split(". ")[0])
        No complete checkpoint in 'no_such_checkpoint': expected config.json and weights.safetensors
    """


class MissingROMError(DreamArcadeError, FileNotFoundError):
    """A game ROM has not been imported; the message names the game, its SHA-1 and the import command.

    Example:
        >>> from dreamarcade.envs.sonic import check_rom
        >>> check_rom("Airstriker-Genesis")  # the one ROM stable-retro ships: no error
        >>> try:
        ...     check_rom("SonicTheHedgehog-Genesis")  # the Sonic ROMs are the user's to import
        ... except MissingROMError as err:  # not imported (a fresh install): the message says what to do
        ...     message = str(err)
        ...     assert message.startswith("The ROM of SonicTheHedgehog-Genesis-v0 (SHA-1 "), message
        ...     assert "is not imported" in message
        ...     assert "69e102855d4389c3fd1a8f3dc7d193f8eee5fe5b" in message and "stable_retro.import" in message
    """


class VideoError(DreamArcadeError, ValueError):
    """A video file cannot be read or is unsuitable (empty, too short, no audio when audio is needed).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from dreamarcade.reward_models.video import probe_video
        >>> with tempfile.TemporaryDirectory() as d:
        ...     empty = Path(d) / "gameplay.mp4"
        ...     empty.touch()
        ...     try:
        ...         probe_video(empty)
        ...     except VideoError as err:
        ...         print(str(err).split("' ")[1])
        is empty (0 bytes). Re-download or re-record it.
    """


class WorkerDiedError(DreamArcadeError, RuntimeError):
    """A worker process of a pool died (killed, out of memory, a crashed emulator) while it held a task: the pool
    would wait for that task forever. The work is resumable: run the same command again.

    Example:
        >>> from dreamarcade.errors import WorkerDiedError
        >>> issubclass(WorkerDiedError, RuntimeError), issubclass(WorkerDiedError, DreamArcadeError)
        (True, True)
    """


class DivergedError(DreamArcadeError, FloatingPointError):
    """Training produced a NaN or infinite loss or weights (a learning rate too high for the data, usually). Raised
    before such weights are saved, so the last checkpoint stays usable.

    Example:
        >>> from dreamarcade.errors import DivergedError
        >>> issubclass(DivergedError, FloatingPointError), issubclass(DivergedError, DreamArcadeError)
        (True, True)
    """


_BAD_INPUT = "_dreamarcade_bad_input"


@contextlib.contextmanager
def input_checks(*kinds: type[Exception]) -> Iterator[None]:
    """Mark the ValueErrors and TypeErrors (and errors of ``kinds``) raised inside as bad input.

    The command-line tools print a marked error, or any :class:`DreamArcadeError`, as one line and exit with
    status 2; every other error keeps its traceback. Wrap what checks a command's arguments, files and settings,
    never the work itself: a ValueError from a bug in a training loop must show where it came from. The error
    keeps its type; only a mark is added (:func:`is_input_error` reads it).

    >>> try:
    ...     with input_checks():
    ...         int("ten")  # a setting that is not a number
    ... except ValueError as err:
    ...     print(is_input_error(err), is_input_error(ValueError("raised by a training loop")))
    True False
    """
    try:
        yield
    except (ValueError, TypeError, *kinds) as exc:
        setattr(exc, _BAD_INPUT, True)
        raise


def is_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` is bad input (a :class:`DreamArcadeError`, or raised inside :func:`input_checks`), not a bug.

    >>> is_input_error(CheckpointError("no checkpoint")), is_input_error(ValueError("a bug"))
    (True, False)
    """
    return isinstance(exc, DreamArcadeError) or bool(getattr(exc, _BAD_INPUT, False))


def input_error_status(exc: BaseException, parser: argparse.ArgumentParser | None = None, prog: str = "") -> int:
    """Report bad input as one line and return exit status 2; re-raise any other error with its traceback.

    The command-line tools end with ``except Exception as exc: return input_error_status(exc)``. Bad input
    (:func:`is_input_error`) is printed as ``error: ...`` (``prog: error: ...`` with ``prog``) on stderr, or, with
    ``parser``, reported by ``parser.error`` (usage line, exit status 2). Anything else is a bug or a crash mid-run,
    and is raised again unchanged.

    >>> import contextlib, io
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = input_error_status(CheckpointError("no checkpoint in 'runs/x'"))
    >>> status, err.getvalue()
    (2, "error: no checkpoint in 'runs/x'\\n")
    """
    if not is_input_error(exc):
        raise exc
    if parser is not None:
        parser.error(str(exc))
    print(f"{prog}: error: {exc}" if prog else f"error: {exc}", file=sys.stderr)
    return 2


def extra_for(module: str) -> str:
    """Return the dreamarcade extra that provides ``module`` (``"core"`` if it is a base dependency)."""
    return _EXTRA_OF_MODULE.get(module.split(".")[0], "all")


def require(module: str, purpose: str = "", extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it.

    >>> np = require("numpy")
    >>> np.__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the module exists but one of *its* imports failed: show the real error
        if is_installed(top):  # installed, but its import failed (a broken install, a missing system library)
            raise
        raise MissingExtraError(module, extra or extra_for(module), purpose) from exc


def check_count(name: str, value: object, low: int = 1, hint: str = "") -> int:
    """``value`` as an int, or a ValueError naming ``name`` unless it is an integer >= ``low`` (bools refused).

    Numpy integers (a sweep's ``np.arange``) are accepted; floats are not, so 2.5 is never truncated silently.
    ``hint`` is added to the message after the minimum (what the minimum means).

    >>> check_count("num_envs", 0)
    Traceback (most recent call last):
    ...
    ValueError: num_envs must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{hint}, got {value!r}")
    return int(value)


def check_seed(name: str, value: object, limit: int = 2**32) -> int:
    """``value`` as an int, or a ValueError naming ``name`` unless it is an integer in ``[0, limit)`` (numpy's seeds
    end at 2**32; a smaller ``limit`` leaves room for offsets added to the seed). Bools are refused.

    >>> check_seed("--seed", -1)
    Traceback (most recent call last):
    ...
    ValueError: --seed must be an integer from 0 to 2**32 - 1, got -1
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < limit:
        bound = f"2**{limit.bit_length() - 1} - 1" if limit & (limit - 1) == 0 else str(limit - 1)
        raise ValueError(f"{name} must be an integer from 0 to {bound}, got {value!r}")
    return int(value)


def check_probability(name: str, value: object, hint: str = "", below_one: bool = False) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is a real number in [0, 1] ([0, 1) with
    ``below_one``). Bools (``True`` would read as 1) and NaN are refused.

    >>> check_probability("repeat_action_probability", 1.0, below_one=True)
    Traceback (most recent call last):
    ...
    ValueError: repeat_action_probability must be a probability in [0, 1), got 1.0
    """
    top = ")" if below_one else "]"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
    if not ok or (below_one and float(value) >= 1.0):  # NaN fails the comparisons
        raise ValueError(f"{name} must be a probability in [0, 1{top}{hint}, got {value!r}")
    return float(value)


def run_cli(main: Callable[[], int | None]) -> None:
    """``sys.exit(main())`` for a command's ``__main__`` (and the benchmark scripts'): bad input that ``main`` did
    not report itself (:func:`is_input_error`: a missing run folder, a checkpoint of another model) is one
    ``error: ...`` line with exit status 2, not a traceback; any other error keeps its traceback. A reader that
    closes the pipe early (``| head``) ends it quietly with exit status 141 (a shell's SIGPIPE) instead of a
    ``BrokenPipeError`` traceback."""
    try:
        code = main()
        sys.stdout.flush()  # a write that fails at exit would print the traceback after main returned
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout once more at exit
        code = 141
    except Exception as exc:  # re-raised unchanged unless it is bad input
        code = input_error_status(exc)
    sys.exit(code)


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """Destinations of the options written out in ``argv`` (``--flag value`` or ``--flag=value``; None: the command
    line, as ``parse_args`` reads it), to tell a flag a user gave from its default (build the parser with
    ``allow_abbrev=False``: an abbreviation is not seen here).

    >>> import argparse
    >>> p = argparse.ArgumentParser(allow_abbrev=False)
    >>> _ = p.add_argument("--seed", type=int, default=0)
    >>> _ = p.add_argument("--lr", type=float, default=1e-3)
    >>> sorted(given_flags(p, ["--seed=0"]))
    ['seed']
    """
    argv = sys.argv[1:] if argv is None else argv
    given = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                given.add(action.dest)
    return given


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """``"key: old -> new, ..."`` for the ``keys`` (default: all of either, sorted) whose values differ; a key one
    side lacks reads as None. For a refusal to say which settings differ from those a run was made with.

    >>> describe_changes({"env": "doom", "seed": 0}, {"env": "carracing", "seed": 0})
    "env: 'doom' -> 'carracing'"
    """
    keys = sorted(set(old) | set(new)) if keys is None else keys
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def is_installed(module: str) -> bool:
    """True if ``module`` can be imported (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
