"""Multi-armed Bernoulli bandits as a task family: the classic RL^2 sanity check (Duan et al. 2016, Wang et al. 2016).

An episode is one pull (``pulls_per_episode`` by default 1); the observation is a constant. A task is the
vector of arm probabilities. ``family="dependent"`` (default) gives the two-armed "dependent" bandit of Wang et
al.: one arm pays with probability ``p_high``, the other with ``1 - p_high``, which arm is drawn per task. A
memoryless agent cannot beat 0.5 per pull on average; an agent that remembers rewards across the pulls of a
trial (:class:`~dreamarcade.wrappers.metarl.EpisodeConcat`) can approach ``p_high``. ``family="uniform"`` draws
every arm's probability uniformly from [0, 1] (Duan et al.).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count


class BanditEnv(gym.Env):
    """Bernoulli bandit task family.

    Example:
        >>> env = BanditEnv(num_arms=2)
        >>> env.set_task(np.array([1.0, 0.0])); _ = env.reset(seed=0)
        >>> env.step(0)[1]
        1.0
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        num_arms: int = 2,
        family: str = "dependent",
        p_high: float = 0.9,
        pulls_per_episode: int = 1,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(num_arms, (int, np.integer)) or num_arms < 2:
            raise ValueError(f"num_arms must be an integer >= 2, got {num_arms!r}.")
        if family not in ("dependent", "uniform"):
            raise ValueError(f"family must be 'dependent' or 'uniform', got {family!r}.")
        if family == "dependent" and num_arms != 2:
            raise ValueError("family='dependent' is the two-armed bandit: use num_arms=2 or family='uniform'.")
        if not 0.0 <= p_high <= 1.0:
            raise ValueError(f"p_high is the good arm's payout probability: it must be in [0, 1], got {p_high!r}.")
        check_count("pulls_per_episode", pulls_per_episode)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.num_arms, self.family, self.p_high = int(num_arms), family, float(p_high)
        self.pulls_per_episode, self.render_mode = int(pulls_per_episode), render_mode
        self.action_space = spaces.Discrete(self.num_arms)
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self._probs: np.ndarray | None = None
        self._fixed = False
        self._task_pending = False
        self._pulls = 0
        self._last = -1

    def sample_task(self, rng: np.random.Generator) -> np.ndarray:
        if self.family == "dependent":
            return (
                np.array([self.p_high, 1 - self.p_high])
                if rng.random() < 0.5
                else np.array([1 - self.p_high, self.p_high])
            )
        return rng.random(self.num_arms)

    def set_task(self, task: Any) -> None:
        probs = np.asarray(task, dtype=np.float64)
        if probs.shape != (self.num_arms,) or not np.all((probs >= 0) & (probs <= 1)):  # NaN fails too
            raise ValueError(f"task must be {self.num_arms} arm probabilities in [0, 1], got {task!r}.")
        self._probs, self._fixed = probs, True
        self._task_pending = True  # the new task starts at the next reset, never mid-episode

    def get_task(self) -> np.ndarray:
        if self._probs is None:
            raise RuntimeError("no task yet: call reset() or set_task() first.")
        return self._probs.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if not self._fixed or self._probs is None:
            self._probs = self.sample_task(self.np_random)
        self._pulls, self._last = 0, -1
        self._task_pending = False
        return np.zeros(1, np.float32), {"best_arm": int(np.argmax(self._probs))}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._probs is None:
            raise RuntimeError("call reset() before step().")
        if self._task_pending:
            raise RuntimeError("call reset() after set_task(): the new task starts at the next reset.")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an arm index in [0, {self.num_arms}), got {action!r}.")
        self._last = int(action)
        reward = float(self.np_random.random() < self._probs[self._last])
        self._pulls += 1
        best = self._last == int(np.argmax(self._probs))
        return np.zeros(1, np.float32), reward, self._pulls >= self.pulls_per_episode, False, {"best_arm_pulled": best}

    def render(self) -> np.ndarray | None:
        """Bars of the arm probabilities; the last pulled arm in red."""
        if self.render_mode != "rgb_array" or self._probs is None:
            return None
        img = np.full((64, 16 * self.num_arms, 3), 255, np.uint8)
        for i, p in enumerate(self._probs):
            h = int(round(60 * p))
            img[64 - h :, 16 * i + 2 : 16 * i + 14] = (200, 0, 0) if i == self._last else (80, 80, 80)
        return img
