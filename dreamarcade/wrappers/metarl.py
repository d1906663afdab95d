"""RL^2 trials: concatenate K episodes of one task into one outer episode (Duan et al. 2016; Wang et al. 2016).

:class:`EpisodeConcat` turns any task-family env into a trial env. At the trial's start (the outer ``reset``) a
task is drawn through a task sampler and fixed for the next ``num_episodes`` inner episodes. The observation
carries the previous action, reward and done flag so a recurrent policy can infer the task. Inner episode ends
are reported in ``info`` only: the outer ``terminated``/``truncated`` fires once, at the trial's end, so

* a recurrent agent (sb3-contrib ``RecurrentPPO``, :mod:`dreamarcade.baselines.ppo` with ``recurrent=True``) keeps
  its memory across the trial's episodes, and
* an auto-resetting vector env does not redraw the task mid-trial.

Task-sampler interface: a task family env (``env.unwrapped``) implements ``sample_task(rng) -> task`` and
``set_task(task)`` (learn2learn's ``MetaEnv`` has the same shape); or pass ``task_sampler=callable(rng) -> task``.
``reset(options={"task": task})`` fixes the task of one trial (evaluation on a given task).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count

__all__ = ["EpisodeConcat", "action_feature_size"]


def action_feature_size(space: gym.Space) -> int:
    """Length of the previous-action feature: one-hot for Discrete, flattened otherwise."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, (spaces.Box, spaces.MultiBinary, spaces.MultiDiscrete)):
        return int(np.prod(space.shape))
    raise TypeError(
        f"EpisodeConcat cannot encode actions of {space}: use a Discrete, Box, MultiBinary or MultiDiscrete space."
    )


class EpisodeConcat(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A trial of ``num_episodes`` episodes of one task, with (prev action, prev reward, prev done) in the obs.

    Observation: for a 1-D ``Box`` env, a flat ``Box`` ``[obs, prev_action, prev_reward, prev_done]`` (float32);
    for any other ``Box`` (images), ``Dict({"obs": obs, "meta": [prev_action, prev_reward, prev_done]})``.
    ``prev_action`` is one-hot for ``Discrete`` actions; all three are zero at a trial's first step.
    ``prev_done`` is 1 on the first observation of every inner episode after the first (the RL^2 input d_{t-1}).

    ``info`` on every step: ``trial_episode`` (index of the inner episode the *next* observation belongs to),
    ``inner_reward`` (the env's reward, also during exploration episodes). On a step that ends an inner
    episode: ``inner_done=True``, ``inner_terminated``, ``inner_truncated``, ``inner_return``, ``inner_length``,
    ``inner_episode`` (its index) and, unless it was the last, ``inner_final_obs`` (the episode's last obs).
    The trial's end is reported as ``terminated`` even when its last episode was truncated (``inner_truncated``
    says so): the trial is over by design, so there is no value beyond it to bootstrap.

    ``info["episode"]`` is kept for the trial: statistics that a ``RecordEpisodeStatistics`` *inside* this wrapper
    records for an inner episode are moved to ``info["inner_episode_stats"]``, so they are never read as the trial's
    return, and a ``RecordEpisodeStatistics`` around this wrapper records the trial (return = the rewards this
    wrapper returns, length = the trial's steps).

    The first ``exploration_episodes`` episodes are free exploration: their reward is returned as 0 (the agent
    still sees it in ``prev_reward``), so the trial return counts only the later episodes (anyrl's ``warmup_eps``).

    Example:
        >>> import gymnasium as gym, dreamarcade
        >>> from dreamarcade.wrappers.metarl import EpisodeConcat
        >>> env = EpisodeConcat(gym.make("RandomMaze-v0"), num_episodes=2)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape == env.observation_space.shape, info["trial_episode"]
        (True, 0)
    """

    def __init__(
        self,
        env: gym.Env,
        num_episodes: int = 2,
        task_sampler: Callable[[np.random.Generator], Any] | None = None,
        exploration_episodes: int = 0,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, num_episodes=num_episodes, task_sampler=task_sampler, exploration_episodes=exploration_episodes
        )
        super().__init__(env)
        check_count("num_episodes (K)", num_episodes)
        if check_count("exploration_episodes", exploration_episodes, low=0) >= num_episodes:
            raise ValueError(
                f"exploration_episodes must be an integer in [0, num_episodes={num_episodes}), got "
                f"{exploration_episodes!r}: at least one episode of a trial must count."
            )
        base = env.unwrapped
        if not hasattr(base, "set_task"):
            raise TypeError(
                f"{type(base).__name__} has no set_task(task): EpisodeConcat needs a task-family env "
                "(implementing sample_task(rng) and set_task(task)), e.g. RandomMaze-v0, Bandit-v0 or SonicTrain-v0."
            )
        if task_sampler is None and not hasattr(base, "sample_task"):
            raise TypeError(f"{type(base).__name__} has no sample_task(rng): pass task_sampler=callable(rng) -> task.")
        self.num_episodes = int(num_episodes)
        self.exploration_episodes = int(exploration_episodes)
        self.task_sampler = task_sampler if task_sampler is not None else base.sample_task

        inner = env.observation_space
        if not isinstance(inner, spaces.Box):
            raise TypeError(f"EpisodeConcat needs a Box observation space, got {inner}.")
        self._action_dim = action_feature_size(env.action_space)
        meta_dim = self._action_dim + 2
        # bounds of [prev_action, prev_reward, prev_done]: one-hot in [0, 1], reward unbounded, done in {0, 1}
        discrete = isinstance(env.action_space, spaces.Discrete)
        meta_low = np.array([0.0 if discrete else -np.inf] * self._action_dim + [-np.inf, 0.0], np.float32)
        meta_high = np.array([1.0 if discrete else np.inf] * self._action_dim + [np.inf, 1.0], np.float32)
        self._flat = len(inner.shape) == 1
        if self._flat:
            low = np.concatenate([inner.low.astype(np.float32), meta_low])
            high = np.concatenate([inner.high.astype(np.float32), meta_high])
            self.observation_space = spaces.Box(low, high, dtype=np.float32)
        else:
            meta = spaces.Box(meta_low, meta_high, (meta_dim,), np.float32)
            self.observation_space = spaces.Dict({"obs": inner, "meta": meta})
        self.task: Any = None
        self._task_rng = np.random.default_rng()
        self._episode = 0
        self._ep_return = 0.0
        self._ep_length = 0

    # -- observation -------------------------------------------------------------------------------------------------
    def _encode_action(self, action: Any) -> np.ndarray:
        out = np.zeros(self._action_dim, np.float32)
        if isinstance(self.env.action_space, spaces.Discrete):
            out[int(action) - int(self.env.action_space.start)] = 1.0
        else:
            out[:] = np.asarray(action, np.float32).reshape(-1)
        return out

    def _augment(self, obs: Any, prev_action: np.ndarray, reward: float, done: float) -> Any:
        meta = np.concatenate([prev_action, np.array([reward, done], np.float32)])
        if self._flat:
            return np.concatenate([np.asarray(obs, np.float32), meta])
        return {"obs": obs, "meta": meta}

    # -- gym API -----------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        inner_seed = None
        task_rng = self._task_rng
        if seed is not None:  # the trial's task draws are reproducible from the reset seed
            task_rng = np.random.default_rng(seed)
            # the inner env gets its own stream: with the same seed, its draws (a bandit's payouts) would replay
            # the task draws (arm 0 of a uniform bandit could never pay on a trial's first pull)
            inner_seed = int(np.random.SeedSequence(seed).spawn(1)[0].generate_state(1)[0])
        options = dict(options or {})
        task = options.pop("task") if "task" in options else self.task_sampler(task_rng)
        self.env.unwrapped.set_task(task)  # it checks the task: a refused one changes nothing here
        self.task, self._task_rng = task, task_rng
        obs, info = self.env.reset(seed=inner_seed, options=options or None)
        self._episode, self._ep_return, self._ep_length = 0, 0.0, 0
        info = dict(info, trial_episode=0)
        return self._augment(obs, np.zeros(self._action_dim, np.float32), 0.0, 0.0), info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward)
        self._ep_return += reward
        self._ep_length += 1
        info = dict(info, inner_reward=reward)
        if "episode" in info:  # an inner episode's statistics, not the trial's
            info["inner_episode_stats"] = info.pop("episode")
        counted = reward if self._episode >= self.exploration_episodes else 0.0
        prev_action = self._encode_action(action)
        if not (terminated or truncated):
            info["trial_episode"] = self._episode
            return self._augment(obs, prev_action, reward, 0.0), counted, False, False, info

        info.update(
            inner_done=True,
            inner_terminated=bool(terminated),
            inner_truncated=bool(truncated),
            inner_return=self._ep_return,
            inner_length=self._ep_length,
            inner_episode=self._episode,
        )
        self._episode += 1
        if self._episode >= self.num_episodes:  # the trial is over: this is the only outer done
            info["trial_episode"] = self._episode - 1
            # the trial ends here by design, however its last episode ended: nothing follows on this task, so it is
            # a termination (a truncation would let SB3 and others bootstrap a value past the trial's end)
            return self._augment(obs, prev_action, reward, 1.0), counted, True, False, info
        # Inner episode over: start the next one on the same task and hide the done from the agent's loop.
        info["inner_final_obs"] = obs
        obs, reset_info = self.env.reset()
        info.update({k: v for k, v in reset_info.items() if k not in info})
        info["trial_episode"] = self._episode
        self._ep_return, self._ep_length = 0.0, 0
        return self._augment(obs, prev_action, reward, 1.0), counted, False, False, info
