"""Factories for the meta-RL task families and their RL^2 trial versions (the registered ids' entry points).

Example:
    >>> import gymnasium as gym, dreamarcade
    >>> env = gym.make("MetaMaze-v0")  # 5x5 random maze, hidden goal, trials of 2 episodes
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape  # 25 position + 4 walls + 4 one-hot previous action + reward + done
    (35,)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from dreamarcade.envs.bandit import BanditEnv
from dreamarcade.envs.maze import RandomMazeEnv
from dreamarcade.wrappers.metarl import EpisodeConcat


def make_maze_trial(
    num_episodes: int = 2,
    exploration_episodes: int = 0,
    obs_type: str = "vector",
    render_mode: str | None = None,
    **maze_kwargs: Any,
) -> gym.Env:
    """A :class:`RandomMazeEnv` in RL^2 trials of ``num_episodes`` episodes (one maze and goal per trial).

    ``obs_type="pixels"`` gives ``Dict({"obs": (1, 84, 84) uint8 grayscale, "meta": prev action/reward/done})``,
    ready for :mod:`dreamarcade.baselines.ppo`'s CNN.
    """
    env: gym.Env = RandomMazeEnv(obs_type=obs_type, render_mode=render_mode, **maze_kwargs)
    if obs_type == "pixels":
        from dreamarcade.wrappers.frames import FrameStack, GrayscaleResize

        env = FrameStack(GrayscaleResize(env, 84), 1)
    return EpisodeConcat(env, num_episodes=num_episodes, exploration_episodes=exploration_episodes)


def make_bandit_trial(
    num_episodes: int = 10, exploration_episodes: int = 0, render_mode: str | None = None, **bandit_kwargs: Any
) -> gym.Env:
    """A :class:`BanditEnv` in RL^2 trials: ``num_episodes`` one-pull episodes of the same arm probabilities."""
    env = BanditEnv(render_mode=render_mode, **bandit_kwargs)
    return EpisodeConcat(env, num_episodes=num_episodes, exploration_episodes=exploration_episodes)
