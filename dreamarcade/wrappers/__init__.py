"""Gymnasium wrappers, one concept per module.

``frames``: grayscale/resize, frame stack, reward sign clip. ``atari``: no-op reset, max-and-skip,
episodic life, fire reset, and the DQN-paper env builder. ``retro``: stable-retro discretizers and
contest wrappers. ``metarl``: RL^2 episode concatenation. ``imitation``: the YouTube imitation reward.
``exploration``: a count-based exploration bonus on downscaled frame cells.
"""

from __future__ import annotations

import importlib

__all__: list[str] = []

for _name in ("frames", "atari", "retro", "metarl", "imitation", "exploration"):
    try:
        _module = importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # a pillar not present in this checkout
        if _exc.name == f"{__name__}.{_name}":
            continue
        raise
    for _sym in _module.__all__:
        globals()[_sym] = getattr(_module, _sym)
        __all__.append(_sym)
