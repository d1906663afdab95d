"""Errors that name what went wrong and what to do about it.

Every heavy dependency (vizdoom, stable-retro, box2d, av, ray, ale-py) is imported lazily through
:func:`require`, so a missing one raises :class:`MissingExtraError` naming the pip extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
}


class DreamArcadeError(Exception):
    """Base class of every error raised on purpose by dreamarcade."""


class MissingExtraError(DreamArcadeError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""

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
    """A checkpoint is missing, corrupt, or does not match the model or env it is loaded into."""


class MissingROMError(DreamArcadeError, FileNotFoundError):
    """A game ROM has not been imported; the message names the game, its SHA-1 and the import command."""


class VideoError(DreamArcadeError, ValueError):
    """A video file cannot be read or is unsuitable (empty, too short, no audio when audio is needed)."""


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
        raise MissingExtraError(module, extra or extra_for(module), purpose) from exc


def is_installed(module: str) -> bool:
    """True if ``module`` can be imported (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
