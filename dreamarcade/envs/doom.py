"""The real DoomTakeCover as the World Models paper played it, on current ViZDoom.

Paper setup (ppaquette/gym-doom on doom_py, 2018) and how it is reproduced here:

* scenario ``take_cover.wad`` / ``map01``, +1 living reward per tic, **no frame skip** (one step = one tic);
* an episode ends when the player dies or after **2100 steps** (the paper's cap), so the score is steps survived;
* **one continuous action** ``a`` in [-1, 1]: ``a < -1/3`` moves left, ``a > 1/3`` moves right, otherwise no-op;
* the HUD is rendered and cropped away: the paper cropped rows 0:400 of a 640x480 frame, here rows
  0:100 of a 160x120 frame (the same 5/6 of the height), then resized to **64x64 RGB**;
* difficulty: the paper's config names ``doom_skill 5`` in doom_py's numbering. On ViZDoom 1.3, skill 5 is
  Nightmare (a uniform random policy survives 53 +- 20 steps), while skill 4 gives 199 +- 96 steps, matching
  the paper's random-policy score of 210 +- 108. ``doom_skill=4`` is therefore the paper's difficulty here
  (measured with ``benchmarks/bench_dreams_throughput.py``; see the README's Dreams section).

The frame is not inverted (hardmaru's code inverts it, zacwellmer's does not; the VAE does not care).
"""

from __future__ import annotations

import os
import re
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count, require

__all__ = ["TakeCoverEnv", "crop_resize_frame", "action_to_buttons"]

# The paper's cap on an episode: 2100 tics (~60 s at 35 tics/s).
PAPER_MAX_STEPS = 2100
# Paper difficulty on ViZDoom 1.3 (see the module docstring for the measurement behind it).
PAPER_DOOM_SKILL = 4
FRAME_SIZE = 64


def crop_resize_frame(frame: np.ndarray, keep_fraction: float = 5 / 6, size: int = FRAME_SIZE) -> np.ndarray:
    """Crop the HUD (keep the top ``keep_fraction`` rows) and resize an HxWx3 uint8 frame to size x size."""
    h = frame.shape[0]
    top = frame[: int(round(h * keep_fraction))]
    return cv2.resize(top, (size, size), interpolation=cv2.INTER_AREA)


# 1/3 as float32 (0.33333334): the action space is float32, and its nearest value to 1/3 must stay a no-op
THIRD = float(np.float32(1.0 / 3.0))


def action_to_buttons(action: float) -> list[int]:
    """The paper's threshold: [MOVE_LEFT, MOVE_RIGHT] pressed for a < -1/3 / a > 1/3."""
    return [int(action < -THIRD), int(action > THIRD)]


class TakeCoverEnv(gym.Env):
    """ViZDoom TakeCover, paper-faithful: 64x64x3 frames, one continuous action, score = steps survived.

    The action's threshold rule (:func:`action_to_buttons`) reads any finite value: beyond [-1, 1] it presses the
    same button as -1 / 1. A non-finite one is refused.

    Example:
        >>> import gymnasium as gym, dreamarcade
        >>> env = gym.make("DoomTakeCover-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, env.action_space.shape
        ((64, 64, 3), (1,))
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> env.close()
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35}

    def __init__(
        self,
        render_mode: str | None = None,
        doom_skill: int = PAPER_DOOM_SKILL,
        max_steps: int | None = PAPER_MAX_STEPS,
        screen_resolution: str = "RES_160X120",
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")
        # 4.9 was truncated to skill 4 and a max_steps of 2.7 to 2, silently; None failed inside int()
        if check_count("doom_skill", doom_skill, hint=" (a ViZDoom skill level, 1..5)") > 5:
            raise ValueError(f"doom_skill must be in 1..5 (ViZDoom skill levels), got {doom_skill}.")
        self.render_mode = render_mode
        self.doom_skill = int(doom_skill)
        # None: no cap of its own (the registered id's is Gymnasium's TimeLimit, so max_episode_steps can lengthen it)
        self.max_steps = None if max_steps is None else check_count("max_steps", max_steps, hint=" (steps per episode)")
        self._resolution = screen_resolution
        self.observation_space = spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._game: Any = None
        self._last_screen: np.ndarray | None = None
        self._steps = 0

    def _init_game(self) -> None:
        vzd = require("vizdoom", "the real DoomTakeCover env", extra="doom")
        game = vzd.DoomGame()
        game.load_config(os.path.join(vzd.scenarios_path, "take_cover.cfg"))
        game.set_window_visible(False)  # headless: no X display needed
        game.set_doom_skill(self.doom_skill)
        game.set_render_hud(True)  # rendered, then cropped as the paper did
        try:
            game.set_screen_resolution(getattr(vzd.ScreenResolution, self._resolution))
        except AttributeError as exc:
            raise ValueError(f"Unknown ViZDoom screen_resolution {self._resolution!r}; e.g. 'RES_160X120'.") from exc
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_episode_start_time(14)  # as the paper's DOOM_SETTINGS
        game.set_episode_timeout(0)  # the 2100-step cap is counted here, in steps, not ViZDoom tics
        game.set_sound_enabled(False)
        game.set_mode(vzd.Mode.PLAYER)
        game.init()
        self._game = game

    def _observe(self) -> np.ndarray:
        state = self._game.get_state()
        if state is not None:
            self._last_screen = state.screen_buffer
        assert self._last_screen is not None
        return crop_resize_frame(self._last_screen)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._game is None:
            self._init_game()
        # ViZDoom has its own RNG: derive its seed from ours so a seeded reset replays the same episode.
        self._game.set_seed(int(self.np_random.integers(0, 2**31 - 1)))
        self._game.new_episode()
        self._steps = 0
        return self._observe(), {"steps": 0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._game is None:
            raise RuntimeError("Call reset() before step().")
        a = np.asarray(action, dtype=np.float32)
        if a.size != 1:
            raise ValueError(f"TakeCover takes one continuous action in [-1, 1] (shape (1,)), got shape {a.shape}.")
        if not np.isfinite(a).all():  # NaN compared false and played a no-op, as the dream env refuses it
            raise ValueError(f"TakeCover got a non-finite action {a.tolist()}: check the policy.")
        if self._game.is_episode_finished():  # stepped past the end: no more survival reward (call reset())
            return self._observe(), 0.0, True, False, {"steps": self._steps}
        reward = float(self._game.make_action(action_to_buttons(float(a.reshape(-1)[0]))))
        self._steps += 1
        terminated = bool(self._game.is_episode_finished())
        truncated = not terminated and self.max_steps is not None and self._steps >= self.max_steps
        return self._observe(), reward, terminated, truncated, {"steps": self._steps}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._last_screen is None:  # before the first reset: a black frame of the screen's size
            size = re.fullmatch(r"RES_(\d+)X(\d+)", self._resolution)
            w, h = (int(size[1]), int(size[2])) if size else (160, 120)
            return np.zeros((h, w, 3), np.uint8)
        return np.array(self._last_screen, copy=True)

    def close(self) -> None:
        if self._game is not None:
            self._game.close()
            self._game = None
