"""Test helpers shared by the resume tests (imported as ``from crash_helpers import CrashAtStep``)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import gymnasium as gym


class CrashAtStep(gym.Wrapper):
    """A real env whose process "dies" (an exception) at the ``at``-th step it is ever given.

    It stands for a kill between two checkpoints: steps ``1 .. at - 1`` run normally, step ``at`` raises
    ``error`` (a ValueError stands for a bug in the middle of a run, which a CLI must not print as bad input).
    """

    def __init__(self, env: gym.Env, at: int, error: type[Exception] = RuntimeError) -> None:
        super().__init__(env)
        self.at, self.steps_ever, self.error = at, 0, error

    def step(self, action: Any) -> Any:
        self.steps_ever += 1
        if self.steps_ever == self.at:
            raise self.error("killed")
        return self.env.step(action)


def sigterm_at_call(fn: Callable[..., Any], at: int) -> Callable[..., Any]:
    """``fn`` (a real function: a loss, a step), which sends SIGTERM to this process at its ``at``-th call, as a
    user or a scheduler stopping a run mid-training would."""
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return fn(*args, **kwargs)

    return wrapped
