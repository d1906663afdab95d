"""dreamarcade: a Gymnasium ecosystem for learning to play from pixels.

Importing the package registers every env id (``gym.make("DreamDoom-v0")`` etc.) and re-exports the
public wrappers.
"""

from __future__ import annotations

from dreamarcade import forking as _forking  # noqa: F401 - registers the one-torch-thread-after-fork hook
from dreamarcade.registry import register_all as _register_all

__version__ = "0.1.0"

_register_all()

from dreamarcade.wrappers import *  # noqa: E402,F403
from dreamarcade.wrappers import __all__ as _wrappers_all  # noqa: E402

__all__ = ["__version__", *_wrappers_all]
