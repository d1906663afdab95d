"""stable-retro wrappers from the Sonic benchmark (retro-contest ``local.py`` and retro-baselines ``sonic_util.py``).

* :class:`StochasticFrameSkip`: the contest's sticky frame skip (4 frames, the previous action kept on the first
  frame with probability 0.25).
* :class:`Discretizer` / :class:`SonicDiscretizer`: a ``Discrete`` action space over button combinations; the
  Sonic one has the baselines' 7 combos (there is no no-op).
* :class:`AllowBacktracking`: pay only new maxima of the cumulative reward, so going back to find another route
  costs nothing (retro-baselines, used by its Rainbow and JERK-style agents).
* :class:`RewardScaler`: multiply rewards (0.01 for the baselines' PPO).

They work on any stable-retro env (tested on Airstriker, the ROM stable-retro ships) and the reward ones on any env.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count, check_probability

__all__ = [
    "StochasticFrameSkip",
    "Discretizer",
    "SonicDiscretizer",
    "SONIC_ACTIONS",
    "AllowBacktracking",
    "RewardScaler",
]

# retro-baselines' SonicDiscretizer combos, in its order (index = discrete action).
SONIC_ACTIONS: tuple[tuple[str, ...], ...] = (
    ("LEFT",),
    ("RIGHT",),
    ("LEFT", "DOWN"),
    ("RIGHT", "DOWN"),
    ("DOWN",),
    ("DOWN", "B"),
    ("B",),
)


class StochasticFrameSkip(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeat each action for ``n`` frames with sticky actions, exactly as retro-contest's ``StochasticFrameSkip``.

    On the first frame of a step the previous action is kept with probability ``stickprob``; from the second frame
    the new action applies. The first step after a reset uses the new action. Rewards are summed; the step stops
    early when the episode ends. The stickiness is drawn from a generator seeded by ``reset(seed=...)``.

    Example:
        >>> import stable_retro
        >>> env = stable_retro.make("Airstriker-Genesis-v0", render_mode=None)
        >>> env = StochasticFrameSkip(env, n=4, stickprob=0.25)
        >>> _ = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> env.close()
    """

    def __init__(self, env: gym.Env, n: int = 4, stickprob: float = 0.25) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, n=n, stickprob=stickprob)
        super().__init__(env)
        check_count("n", n, hint=" (frames per step)")
        # a string failed inside the comparison; NaN never stuck
        self.n, self.stickprob = int(n), check_probability("stickprob", stickprob)
        self.current_action: Any = None
        # one step shows every n-th emulator frame: declare that rate (stable-retro only sets the old
        # "video.frames_per_second" key, so recorders and check_env would otherwise find no render_fps)
        base_fps = env.metadata.get("render_fps") or env.metadata.get("video.frames_per_second")
        if base_fps:
            fps = float(base_fps) / self.n  # the old key too: the two disagreed (60 and 15)
            self.metadata = {**env.metadata, "render_fps": fps, "video.frames_per_second": fps}
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.current_action = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        terminated = truncated = False
        obs, info = None, {}
        for i in range(self.n):
            if self.current_action is None:  # first step after reset: the new action
                self.current_action = action
            elif i == 0:  # first frame: keep the previous action with probability stickprob
                if self._rng.random() > self.stickprob:
                    self.current_action = action
            elif i == 1:  # from the second frame the new action definitely applies
                self.current_action = action
            obs, reward, terminated, truncated, info = self.env.step(self.current_action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class Discretizer(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """``Discrete(len(combos))`` actions, each pressing a combination of named buttons of a stable-retro env.

    Example:
        >>> import stable_retro
        >>> env = Discretizer(stable_retro.make("Airstriker-Genesis-v0", render_mode=None), [["LEFT"], ["RIGHT", "B"]])
        >>> env.action_space, env.action(1).astype(int).tolist()
        (Discrete(2), [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
        >>> env.close()
    """

    def __init__(self, env: gym.Env, combos: Sequence[Sequence[str]]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, combos=combos)
        super().__init__(env)
        buttons = getattr(env.unwrapped, "buttons", None)
        if buttons is None or not isinstance(env.action_space, spaces.MultiBinary):
            raise TypeError(
                f"Discretizer needs a stable-retro env with MultiBinary buttons (use_restricted_actions=FILTERED or "
                f"ALL), got action space {env.action_space}."
            )
        if not combos:
            raise ValueError("combos must name at least one button combination.")
        self.buttons = list(buttons)
        self._actions = []
        for combo in combos:
            arr = np.zeros(len(self.buttons), dtype=np.int8)
            for button in combo:
                if button not in self.buttons:
                    raise ValueError(f"unknown button {button!r}; this console has {[b for b in self.buttons if b]}.")
                arr[self.buttons.index(button)] = 1
            self._actions.append(arr)
        self.combos = [tuple(c) for c in combos]
        self.action_space = spaces.Discrete(len(self._actions))

    def action(self, action: Any) -> np.ndarray:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in [0, {self.action_space.n}), got {action!r}.")
        return self._actions[int(action)].copy()


class SonicDiscretizer(Discretizer):
    """The 7 Sonic actions of retro-baselines: LEFT, RIGHT, LEFT+DOWN, RIGHT+DOWN, DOWN, DOWN+B, B (no no-op).

    Example (on Airstriker, which has the same 12 Genesis buttons as Sonic):
        >>> import numpy as np, stable_retro
        >>> env = SonicDiscretizer(stable_retro.make("Airstriker-Genesis-v0", render_mode=None))
        >>> env.action_space, env.combos[5]
        (Discrete(7), ('DOWN', 'B'))
        >>> [env.buttons[i] for i in np.flatnonzero(env.action(5))]  # the buttons action 5 presses
        ['B', 'DOWN']
        >>> _ = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(6)
        >>> obs.shape
        (224, 320, 3)
        >>> env.close()
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)  # first (the first record is kept): it takes no combos
        super().__init__(env, SONIC_ACTIONS)


class AllowBacktracking(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Reward only new maxima of the cumulative reward: ``r'_t = max(0, R_t - max_{s<t} R_s)`` (retro-baselines).

    Moving back (negative contest reward) costs nothing, so the agent may backtrack to find another route. The
    episode's return becomes the best progress reached, not the final one.

    Example:
        >>> import gymnasium as gym
        >>> env = AllowBacktracking(gym.make("CartPole-v1"))
        >>> _ = env.reset(seed=0); env.step(0)[1]
        1.0
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self._cur = 0.0
        self._max = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._cur = self._max = 0.0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._cur += float(reward)
        new_reward = max(0.0, self._cur - self._max)
        self._max = max(self._max, self._cur)
        return obs, new_reward, terminated, truncated, info


class RewardScaler(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """Multiply every reward by ``scale`` (retro-baselines' PPO uses 0.01; it matters a lot for PPO on Sonic).

    Example:
        >>> import gymnasium as gym
        >>> env = RewardScaler(gym.make("CartPole-v1"), 0.01)
        >>> _ = env.reset(seed=0); env.step(0)[1]
        0.01
    """

    def __init__(self, env: gym.Env, scale: float = 0.01) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, scale=scale)
        super().__init__(env)
        # a string failed inside numpy's isfinite
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale == 0:
            raise ValueError(f"scale must be a finite non-zero number, got {scale!r}.")
        self.scale = float(scale)

    def reward(self, reward: SupportsFloat) -> float:
        return float(reward) * self.scale
