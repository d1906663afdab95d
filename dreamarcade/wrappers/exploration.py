"""A count-based exploration bonus on downscaled frames.

Each frame is reduced to a coarse *cell*: the grayscale image shrunk to ``width`` x ``height`` pixels (area
average) and quantized to ``levels`` intensity levels, Go-Explore's "downscaled cell" (Ecoffet et al. 2021: 11x8
pixels, 8 levels, for Montezuma's Revenge). The bonus for a frame is ``beta / sqrt(n)``, ``n`` the number of times
its cell has been seen, this one included (the count-based bonus of Strehl & Littman 2008, with hashed states as in
Tang et al. 2017). Counts are lifelong: they persist across episodes and are shared by every env that uses one
:class:`CellCounter`, so a place the agent reaches rarely keeps paying while the places it visits every episode stop
paying. At 11x8 a cell of Montezuma's Revenge changes with the player's position (along the demonstration's path to
the key, about every 8-16 pixels), but also with its walking animation and the rolling skull's position.

The counts are shared only within one process: envs in an ``AsyncVectorEnv`` (or ``train_ppo``'s default for a
list of env factories) each get a copy of the counter, so use ``SyncVectorEnv`` (``vector_mode="sync"``) to share
them; :class:`CountBonus` warns when its counter was made in another process.

:class:`CountBonus` adds the bonus to any env with image observations; the imitation agent uses a
:class:`CellCounter` directly on the grayscale frames it already computes (``imitation train --count-bonus``), and
its PPO checkpoints keep the counts, so a resumed run goes on with them.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamarcade.errors import CheckpointError, check_count

__all__ = ["CellCounter", "CountBonus"]


class CellCounter:
    """Lifelong visit counts of downscaled frame cells, and the bonus ``beta / sqrt(count)``.

    Args:
        beta: bonus for a cell's first visit (> 0).
        width, height: the cell image size (Go-Explore's 11 x 8).
        levels: intensity levels of the cell image (2-256; Go-Explore's 8).

    Example:
        >>> import numpy as np
        >>> counter = CellCounter(beta=0.1)
        >>> frames = np.zeros((2, 84, 84), np.uint8)  # two identical black frames
        >>> counter.bonus(frames).round(4).tolist()  # the first visit pays beta, the second beta / sqrt(2)
        [0.1, 0.0707]
        >>> frames[1, 40:60, 30:50] = 255  # something bright in the middle: another cell
        >>> counter.bonus(frames).round(4).tolist(), counter.num_cells
        ([0.0577, 0.1], 2)
    """

    def __init__(self, beta: float, width: int = 11, height: int = 8, levels: int = 8) -> None:
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0 (the bonus of a first visit), got {beta!r}")
        for name, value, low in (("width", width, 1), ("height", height, 1), ("levels", levels, 2)):
            check_count(name, value, low)
        if levels > 256:
            raise ValueError(f"levels must be at most 256 (8-bit frames), got {levels}")
        self.beta, self.width, self.height, self.levels = float(beta), int(width), int(height), int(levels)
        self.counts: dict[bytes, int] = {}
        self.pid = os.getpid()  # the process whose counts these are (a copy in a subprocess counts on its own)

    @property
    def num_cells(self) -> int:
        """How many distinct cells have been seen."""
        return len(self.counts)

    def cell(self, frame: np.ndarray) -> bytes:
        """The cell of one uint8 frame, grayscale (H, W) or RGB (H, W, 3)."""
        import cv2

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[-1] != 3):
            raise ValueError(
                f"CellCounter needs uint8 frames, grayscale (H, W) or RGB (H, W, 3); got {frame.dtype} {frame.shape}"
            )
        if frame.ndim == 3:
            frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return (small.astype(np.uint16) * self.levels // 256).astype(np.uint8).tobytes()

    def bonus(self, frames: np.ndarray, count: np.ndarray | None = None) -> np.ndarray:
        """Count the cells of ``frames`` (N, H, W[, 3]) in order and return each one's bonus (N,), float64.

        ``count`` (N,) bool: only these frames are counted and paid; the others get 0.
        """
        out = np.zeros(len(frames), np.float64)
        for i, frame in enumerate(frames):
            if count is not None and not count[i]:
                continue
            key = self.cell(frame)
            n = self.counts.get(key, 0) + 1
            self.counts[key] = n
            out[i] = self.beta / math.sqrt(n)
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The counts as tensors (for a safetensors checkpoint): ``cells`` (M, width*height) uint8, ``counts`` (M,),
        and ``cell_shape`` (width, height, levels): what the cells mean."""
        size = self.width * self.height
        keys = list(self.counts)
        cells = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), size)
        counts = np.fromiter(self.counts.values(), np.int64, len(keys))
        shape = torch.tensor([self.width, self.height, self.levels], dtype=torch.int64)
        return {"cells": torch.from_numpy(cells.copy()), "counts": torch.from_numpy(counts), "cell_shape": shape}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
        """Replace the counts with those of :meth:`state_tensors` (a resumed run goes on with its counts)."""
        cells, counts, shape = tensors.get("cells"), tensors.get("counts"), tensors.get("cell_shape")
        size = self.width * self.height
        mine = [self.width, self.height, self.levels]
        if (
            # an 8x11 cell image has an 11x8 one's size, and other levels the same bytes: both loaded as these cells
            (shape is not None and shape.tolist() != mine)  # None: a checkpoint from before it was saved
            or cells is None
            or counts is None
            or cells.dtype != torch.uint8
            or cells.ndim != 2
            or cells.shape[1] != size
            or counts.shape != (cells.shape[0],)
            or bool((counts < 1).any())
        ):
            raise CheckpointError(
                f"{source} holds no cell counts for {self.width}x{self.height} cells of {self.levels} levels: "
                "resume it with the cell "
                "settings it was trained with, or train into a new run directory."
            )
        rows = cells.numpy()
        self.counts = {rows[i].tobytes(): int(c) for i, c in enumerate(counts.tolist())}


class CountBonus(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Add the count-based bonus ``beta / sqrt(n)`` of the observation's cell to the reward, for any image env.

    The observation must be a uint8 image, (H, W), (H, W, 1) or RGB (H, W, 3), e.g. an ALE env's RGB frames
    before any frame stacking. ``info["count_bonus"]`` holds the bonus paid. Give several envs one
    ``counter`` to share their counts (its own ``beta`` then sets the bonus, and ``beta`` here is not used); the
    counts live as long as the counter (lifelong, not per episode). So a reset with the same seed does not
    replay the same rewards: the second visit of a cell pays less. That is the point of the bonus, and it is why
    Gymnasium's ``check_env`` (which replays a seeded step twice) fails its determinism check around this wrapper;
    check the env inside it instead.

    Example:
        >>> import gymnasium as gym, ale_py
        >>> gym.register_envs(ale_py)
        >>> env = CountBonus(gym.make("ALE/MontezumaRevenge-v5"), beta=0.1)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(0)
        >>> info["count_bonus"] == reward  # the game pays nothing here; the start's cell was seen at reset
        True
        >>> env.close()
    """

    def __init__(self, env: gym.Env, beta: float = 0.1, counter: CellCounter | None = None) -> None:
        self.counter = counter if counter is not None else CellCounter(beta)
        # the beta that pays (a shared counter's own); a rebuild from env.spec gets a counter of its own
        gym.utils.RecordConstructorArgs.__init__(self, beta=self.counter.beta)
        gym.Wrapper.__init__(self, env)
        if self.counter.pid != os.getpid():
            warnings.warn(
                "CountBonus got a CellCounter made in another process (e.g. an AsyncVectorEnv worker): its counts "
                "are a copy and are not shared with the other envs. Use SyncVectorEnv to share them.",
                stacklevel=2,
            )
        space = env.observation_space
        if not (
            isinstance(space, gym.spaces.Box)
            and space.dtype == np.uint8
            and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[-1] in (1, 3)))
        ):
            raise ValueError(
                f"CountBonus needs uint8 image observations, (H, W), (H, W, 1) or (H, W, 3); got {space}. "
                "Wrap the env before frame stacking or channel-first transposes."
            )

    def _count(self, obs: np.ndarray) -> float:
        frame = obs[..., 0] if obs.ndim == 3 and obs.shape[-1] == 1 else obs
        return float(self.counter.bonus(frame[None])[0])

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._count(obs)  # the start is a visit too; a reset pays no reward
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        bonus = self._count(obs)
        info["count_bonus"] = bonus
        return obs, float(reward) + bonus, terminated, truncated, info
