"""CarRacing as the World Models paper played it: 64x64 RGB frames, 1000-step episodes.

The paper cropped the 96x96 frame to rows 0:84 (dropping the indicator bar at the bottom) and resized it
to 64x64. Gymnasium's ``CarRacing-v3`` (Box2D) is the current version of the paper's ``CarRacing-v0``;
its dynamics and reward (+1000/N per tile visited, -0.1 per frame) are unchanged. The frame is not
inverted (hardmaru's code inverts it; the VAE does not care).
"""

from __future__ import annotations

from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count, require

__all__ = ["CarRacing64Env", "crop_car_frame"]

PAPER_MAX_STEPS = 1000


def crop_car_frame(frame: np.ndarray, size: int = 64) -> np.ndarray:
    """Rows 0:84 of a 96x96x3 CarRacing frame (no indicator bar), resized to size x size."""
    return cv2.resize(frame[:84], (size, size), interpolation=cv2.INTER_AREA)


class CarRacing64Env(gym.Env):
    """CarRacing with the paper's 64x64 frames. Actions are CarRacing's: [steer, gas, brake].

    Values outside the action box are taken as Gymnasium's CarRacing takes them (gas is clipped to [0, 1], the
    steering joint saturates, brake above 0.9 locks the wheels); a non-finite one is refused.

    Example:
        >>> import gymnasium as gym, dreamarcade
        >>> env = gym.make("CarRacing64-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (64, 64, 3)
        >>> env.close()
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, render_mode: str | None = None, max_steps: int | None = PAPER_MAX_STEPS) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")
        require("Box2D", "the CarRacing env", extra="box2d")
        from gymnasium.envs.box2d.car_racing import CarRacing

        self.render_mode = render_mode
        # 0 or 2.7 passed; None: no cap of its own (the registered id's is Gymnasium's TimeLimit, which
        # gym.make(..., max_episode_steps=N) can lengthen)
        self.max_steps = None if max_steps is None else check_count("max_steps", max_steps, hint=" (steps per episode)")
        self._env = CarRacing(render_mode="rgb_array" if render_mode else None, continuous=True)
        self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = self._env.action_space
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=int(self.np_random.integers(0, 2**31 - 1)))
        self._steps = 0
        return crop_car_frame(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (3,):
            raise ValueError(f"CarRacing takes an action of shape (3,) [steer, gas, brake], got shape {a.shape}.")
        if not np.isfinite(a).all():  # NaN steered nowhere without a word
            raise ValueError(f"CarRacing got a non-finite action {a.tolist()}: check the policy.")
        obs, reward, terminated, truncated, info = self._env.step(a)
        self._steps += 1
        truncated = truncated or (not terminated and self.max_steps is not None and self._steps >= self.max_steps)
        return crop_car_frame(obs), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._env.render()

    def close(self) -> None:
        self._env.close()
