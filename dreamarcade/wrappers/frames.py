"""Frame preprocessing from the DQN paper, for any env with image observations.

``GrayscaleResize`` (84x84 grayscale, cv2 ``INTER_AREA``; the 2013 crop as an option), ``FrameStack``
(channels first, a ring buffer, one copy per step) and ``ClipRewardSign`` (reward -> sign(reward)).
They accept ALE, stable-retro, ViZDoom, CarRacing or any env whose observation is a uint8 image
``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
"""

from __future__ import annotations

from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count

__all__ = ["GrayscaleResize", "FrameStack", "ClipRewardSign", "image_shape_or_raise"]


def image_shape_or_raise(space: gym.Space, wrapper: str) -> tuple[int, int, int]:
    """Return (height, width, channels) of an image ``Box`` space or raise a ``TypeError`` saying why not."""
    if not isinstance(space, spaces.Box):
        raise TypeError(
            f"{wrapper} needs an image observation (a Box of shape (H, W), (H, W, 1) or (H, W, 3)), "
            f"got {space}. Apply it to the env's pixel observation (e.g. obs_type='rgb' for ALE), "
            "or wrap the env so its observation is an image."
        )
    shape = space.shape
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[0], shape[1], shape[2]
    raise TypeError(
        f"{wrapper} needs an image observation of shape (H, W), (H, W, 1) or (H, W, 3) (channels last), "
        f"got shape {shape}. Vector observations cannot be resized; channels-first images must be transposed first."
    )


class GrayscaleResize(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Convert image observations to grayscale and resize them (84x84 by default), as in the DQN paper.

    RGB frames become grayscale with ``cv2.cvtColor(RGB2GRAY)`` (observations that are already gray,
    e.g. ALE's ``obs_type="grayscale"`` palette luminance, are only resized), then are resized with
    ``cv2.INTER_AREA``. The output is ``(height, width)`` uint8, or ``(height, width, 3)`` with
    ``grayscale=False``. ``keep_dim=True`` keeps a channel axis on gray frames, ``(height, width, 1)``, the image
    layout Stable-Baselines3 (``VecFrameStack``, ``CnnPolicy``) and Gymnasium's ``GrayscaleObservation(keep_dim=True)``
    use; without it, SB3's ``VecFrameStack`` lays the frames side by side along the width.

    ``mode="crop2013"`` reproduces Mnih et al. (2013): resize to ``(110, width)`` and keep the
    ``height`` rows starting at ``crop_top`` (18 keeps the playing area of most Atari games).

    Example:
        >>> import gymnasium as gym
        >>> from dreamarcade.wrappers import GrayscaleResize
        >>> env = GrayscaleResize(gym.make("CarRacing-v3"))
        >>> env.observation_space.shape
        (84, 84)
    """

    def __init__(
        self,
        env: gym.Env,
        size: int | tuple[int, int] = 84,
        grayscale: bool = True,
        mode: Literal["resize", "crop2013"] = "resize",
        crop_top: int = 18,
        keep_dim: bool = False,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, size=size, grayscale=grayscale, mode=mode, crop_top=crop_top, keep_dim=keep_dim
        )
        super().__init__(env)
        import cv2  # noqa: F401  (an error here, not at the first frame, if OpenCV is missing)

        h_in, w_in, c_in = image_shape_or_raise(env.observation_space, "GrayscaleResize")
        if env.observation_space.dtype != np.uint8:
            raise TypeError(
                f"GrayscaleResize needs uint8 pixels, got dtype {env.observation_space.dtype}. "
                "Apply it before any wrapper that scales observations to floats."
            )
        sides = (size, size) if np.ndim(size) == 0 else tuple(size)
        if len(sides) != 2:
            raise ValueError(f"size must be an int or a (height, width) pair, got {size!r}")
        # 2.5 was truncated to 2 and True read as 1, silently
        height, width = (check_count("size", side, hint=" (pixels)") for side in sides)
        if mode not in ("resize", "crop2013"):
            raise ValueError(f"mode must be 'resize' or 'crop2013', got {mode!r}")
        if mode == "crop2013" and height > 110:
            raise ValueError(
                f"mode='crop2013' crops {height} rows out of the 110-row resized screen, which has too few: use a "
                "size of at most 110 rows (at most 92 with the DQN paper's crop_top=18), or mode='resize'"
            )
        if mode == "crop2013":  # a float failed as a slice index at the first frame, and True was read as 1
            crop_top = check_count("crop_top", crop_top, low=0, hint=" (rows)")
        if mode == "crop2013" and not 0 <= crop_top <= 110 - height:
            raise ValueError(
                f"crop_top must be in [0, {110 - height}] for a {height}-row crop of 110 rows, got {crop_top}"
            )
        if not grayscale and c_in != 3:
            raise TypeError("grayscale=False keeps colour, so it needs RGB (H, W, 3) observations")
        self.height, self.width, self.grayscale, self.mode, self.crop_top = height, width, grayscale, mode, crop_top
        self._in_channels = c_in
        # cv2 takes (width, height); the 2013 variant resizes to 110 rows first, then crops.
        self._dsize = (width, 110) if mode == "crop2013" else (width, height)
        self.keep_dim = bool(keep_dim) and grayscale
        out_shape = (height, width, 1) if self.keep_dim else (height, width) if grayscale else (height, width, 3)
        self.observation_space = spaces.Box(0, 255, shape=out_shape, dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        import cv2  # not kept on the wrapper: a module cannot be pickled or deepcopied, and the env could not

        frame = observation
        if self._in_channels == 3 and self.grayscale:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        elif self._in_channels == 1 and frame.ndim == 3:
            frame = frame[:, :, 0]
        frame = cv2.resize(frame, self._dsize, interpolation=cv2.INTER_AREA)
        if self.mode == "crop2013":
            frame = frame[self.crop_top : self.crop_top + self.height]
        return frame[:, :, None] if self.keep_dim else frame


class FrameStack(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Stack the last ``num_stack`` observations on a new leading axis: ``(84, 84)`` -> ``(4, 84, 84)``.

    Frames live in a ring buffer written twice (at ``i`` and ``i + num_stack``) so the newest stack is
    always one contiguous slice; each step costs one frame write and one copy of the stack (the copy
    the agent keeps), instead of Gymnasium's concatenate-then-deepcopy.

    After a reset that ``EpisodicLife`` marks with ``info["life_loss_continue"]`` (the same game goes on),
    the frames are kept, as in ale-py's C++ vector env.

    ``padding="zero"`` (default) fills the stack with zeros at reset (0 clipped into the space's bounds where it is
    outside them), like ale-py's ``AtariVectorEnv``, SB3's ``VecFrameStack`` and DeepMind's DQN;
    ``padding="reset"`` repeats the first observation, like Gymnasium's ``FrameStackObservation`` default.

    Example:
        >>> import gymnasium as gym
        >>> from dreamarcade.wrappers import FrameStack, GrayscaleResize
        >>> env = FrameStack(GrayscaleResize(gym.make("CarRacing-v3")), 4)
        >>> obs, _ = env.reset(seed=0)
        >>> obs.shape, bool((obs[:3] == 0).all())
        ((4, 84, 84), True)
    """

    def __init__(self, env: gym.Env, num_stack: int = 4, padding: Literal["zero", "reset"] = "zero") -> None:
        gym.utils.RecordConstructorArgs.__init__(self, num_stack=num_stack, padding=padding)
        super().__init__(env)
        check_count("num_stack", num_stack)  # True was taken for 1
        if padding not in ("zero", "reset"):
            raise ValueError(f"padding must be 'zero' or 'reset', got {padding!r}")
        space = env.observation_space
        if not isinstance(space, spaces.Box):
            raise TypeError(f"FrameStack needs a Box observation space, got {space}")
        self.num_stack, self.padding = int(num_stack), padding
        low = np.broadcast_to(space.low, space.shape)
        high = np.broadcast_to(space.high, space.shape)
        self.observation_space = spaces.Box(
            np.stack([low] * self.num_stack), np.stack([high] * self.num_stack), dtype=space.dtype
        )
        self._buffer = np.zeros((2 * self.num_stack, *space.shape), dtype=space.dtype)
        # the "zero" padding, clipped into the space where 0 is outside it (as Gymnasium's FrameStackObservation)
        self._zero = np.clip(0, low, high).astype(space.dtype)
        self._pos: int | None = None

    def _push(self, frame: np.ndarray) -> np.ndarray:
        k = self.num_stack
        self._pos = (self._pos + 1) % k  # type: ignore[operator]
        self._buffer[self._pos] = frame
        self._buffer[self._pos + k] = frame
        return self._stack()

    def _stack(self) -> np.ndarray:
        return self._buffer[self._pos + 1 : self._pos + 1 + self.num_stack].copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        if info.get("life_loss_continue") and self._pos is not None:
            # EpisodicLife continues the same game after a life loss: keep the frames, as ale-py does.
            return self._stack(), info
        if self.padding == "zero":
            self._buffer[:] = self._zero
        else:
            self._buffer[:] = obs
        self._pos = self.num_stack - 1
        return self._push(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        if self._pos is None:
            raise gym.error.ResetNeeded("FrameStack: call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._push(obs), reward, terminated, truncated, info


class ClipRewardSign(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """Replace the reward by its sign, -1, 0 or +1 (Mnih et al. 2013).

    Unlike ``np.clip(r, -1, 1)`` this maps fractional rewards (0.3) to 1 too, which is the paper's rule.

    Example:
        >>> import gymnasium as gym
        >>> from dreamarcade.wrappers import ClipRewardSign
        >>> env = ClipRewardSign(gym.make("CartPole-v1"))
        >>> _ = env.reset(seed=0)
        >>> env.step(0)[1]
        1.0
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)

    def reward(self, reward: SupportsFloat) -> float:
        return float(np.sign(float(reward)))
