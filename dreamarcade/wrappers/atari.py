"""The standard Atari wrappers (no-op reset, max-and-skip, episodic life, fire reset).

They are written against the Gymnasium API, not against ALE, so they work on any env whose actions
and observations fit: stable-retro and ViZDoom frames can be max-and-skipped just like ALE's.
``MaxAndSkip`` has a fast path for ALE: when it sits directly on an ``AtariEnv`` with ``frameskip=1``
it calls the emulator itself and grabs only the two screens it pools, which gives the same
observations, rewards and flags as the generic path (tested) at a fraction of the cost.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import check_count

__all__ = ["NoopReset", "MaxAndSkip", "EpisodicLife", "FireReset", "action_meanings"]


def action_meanings(env: gym.Env) -> list[str] | None:
    """The env's action meanings (``["NOOP", "FIRE", ...]``) if it exposes them, else None."""
    getter = getattr(env.unwrapped, "get_action_meanings", None)
    if getter is None:
        return None
    try:
        return list(getter())
    except (TypeError, AttributeError):
        return None


def _require_discrete(env: gym.Env, wrapper: str) -> None:
    if not isinstance(env.action_space, spaces.Discrete):
        raise TypeError(f"{wrapper} needs a Discrete action space, got {env.action_space}")


class NoopReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """On reset, take a random number (1 to ``noop_max``) of no-op actions.

    The count is drawn from ``env.unwrapped.np_random``, so it is reproducible under ``reset(seed=...)``
    (the same convention as Gymnasium's ``AtariPreprocessing`` and SB3). If the episode ends during the
    no-ops, the env is reset again.

    Example:
        >>> import gymnasium as gym, ale_py
        >>> from dreamarcade.wrappers import NoopReset
        >>> env = NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_max=30)
        >>> _ = env.reset(seed=0)
        >>> 1 <= env.last_noops <= 30
        True
    """

    def __init__(self, env: gym.Env, noop_max: int = 30, noop_action: int = 0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, noop_max=noop_max, noop_action=noop_action)
        super().__init__(env)
        check_count("noop_max", noop_max, low=0)  # 2.5 was truncated to 2
        check_count("noop_action", noop_action, low=0)  # 0.5 became 0 without a word where no meanings are known
        _require_discrete(env, "NoopReset")
        meanings = action_meanings(env)
        if meanings is not None and noop_max > 0 and not 0 <= noop_action < len(meanings):
            raise ValueError(
                f"NoopReset: noop_action={noop_action} is not an action of this env (0..{len(meanings) - 1}: "
                f"{meanings}); pass the index of 'NOOP'."
            )
        if meanings is not None and noop_max > 0 and meanings[noop_action] != "NOOP":
            raise ValueError(
                f"NoopReset: action {noop_action} is '{meanings[noop_action]}', not 'NOOP'; pass the index of the "
                f"no-op action as noop_action (meanings: {meanings})."
            )
        self.noop_max, self.noop_action = int(noop_max), int(noop_action)
        self.last_noops = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, reset_info = self.env.reset(seed=seed, options=options)
        # a lost life's reset under an EpisodicLife inside this wrapper: the game goes on, not a new one (the no-ops
        # moved the game on while FrameStack kept its frames for the continued game: a stale stack)
        if self.noop_max == 0 or reset_info.get("life_loss_continue"):
            self.last_noops = 0
            return obs, reset_info
        self.last_noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1))
        info = reset_info
        for _ in range(self.last_noops):
            obs, _, terminated, truncated, step_info = self.env.step(self.noop_action)
            if terminated or truncated:
                obs, step_info = self.env.reset(options=options)
            # the reset's keys (ALE's "seeds") stay, updated by the no-ops' (lives, frame numbers), as Gymnasium's
            # AtariPreprocessing does
            info = {**info, **step_info}
        return obs, info


# Wrappers whose step() passes actions and results through unchanged; MaxAndSkip's ALE fast path may
# look through them to the AtariEnv underneath.
_STEP_TRANSPARENT = ("OrderEnforcing", "PassiveEnvChecker", "NoopReset", "FireReset")


class MaxAndSkip(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Repeat each action ``skip`` times, sum the rewards, return the max of the last two frames.

    The max over the last two frames removes the flicker of Atari sprites drawn every other frame. If
    the episode ends before the last frame of the skip, the loop stops there and the observation is the
    max over the frames of this step at positions ``skip - 2`` and later that were reached (the final
    frame alone when the episode ended earlier).

    Example:
        >>> import gymnasium as gym, ale_py
        >>> from dreamarcade.wrappers import MaxAndSkip
        >>> env = MaxAndSkip(gym.make("ALE/Pong-v5", frameskip=1), skip=4)
        >>> _ = env.reset(seed=0)
        >>> env.step(0)[4]["episode_frame_number"]
        4
    """

    def __init__(self, env: gym.Env, skip: int = 4) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, skip=skip)
        super().__init__(env)
        check_count("skip", skip)  # True was taken for 1
        base_skip = getattr(env.unwrapped, "_frameskip", 1)
        if base_skip != 1:
            raise ValueError(
                f"MaxAndSkip(skip={skip}) on an env that already skips frames (frameskip={base_skip}) would "
                f"repeat each action {skip}x{base_skip} times. Make the env with frameskip=1, e.g. "
                "gym.make('ALE/Pong-v5', frameskip=1)."
            )
        self.skip = int(skip)
        space = env.observation_space
        self._pool = isinstance(space, spaces.Box) and space.shape is not None
        self._ale_env = self._find_ale_env()
        if self._pool:
            self._frames = np.zeros((2, *space.shape), dtype=space.dtype)
        self._reset_done = False

    def _find_ale_env(self) -> Any:
        """The AtariEnv under this wrapper if only step-transparent wrappers separate them, else None."""
        unwrapped = self.env.unwrapped
        if type(unwrapped).__name__ != "AtariEnv" or type(unwrapped).__module__ != "ale_py.env":
            return None
        if unwrapped.continuous or unwrapped.sound_obs or unwrapped._obs_type not in ("rgb", "grayscale"):
            return None
        env = self.env
        while isinstance(env, gym.Wrapper):
            if type(env).__name__ not in _STEP_TRANSPARENT:
                return None
            env = env.env
        return unwrapped

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._reset_done = True
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        if self._ale_env is not None:
            return self._step_ale(action)
        total = 0.0
        terminated = truncated = False
        last_two = 0
        obs: Any = None
        info: dict = {}
        for i in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if self._pool and (i >= self.skip - 2 or terminated or truncated):
                self._frames[last_two] = obs
                last_two += 1
            if terminated or truncated:
                break
        if self._pool:
            obs = self._frames[0].copy() if last_two == 1 else np.maximum(self._frames[0], self._frames[1])
        return obs, total, terminated, truncated, info

    def _step_ale(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        env = self._ale_env
        if not self._reset_done:
            raise gym.error.ResetNeeded("Cannot call env.step() before calling env.reset()")
        if not env.action_space.contains(action):
            raise gym.error.InvalidAction(
                f"action {action!r} is not in the action space {env.action_space}; "
                f"pass an int in [0, {env.action_space.n})"
            )
        ale = env.ale
        action_idx = env._action_set[int(action)]
        grab = ale.getScreenGrayscale if env._obs_type == "grayscale" else ale.getScreenRGB
        total = 0.0
        terminated = truncated = False
        last_two = 0
        for i in range(self.skip):
            total += ale.act(action_idx, 1.0)
            terminated = ale.game_over(with_truncation=False)
            truncated = ale.game_truncated()
            if i >= self.skip - 2 or terminated or truncated:
                grab(self._frames[last_two])  # only the frames that are pooled are copied out of the emulator
                last_two += 1
            if terminated or truncated:
                break
        obs = self._frames[0].copy() if last_two == 1 else np.maximum(self._frames[0], self._frames[1])
        return obs, total, terminated, truncated, env._get_info()


class EpisodicLife(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Signal ``terminated`` when a life is lost, but reset the game only when it is really over.

    This is the DQN papers' semantics (SB3's ``EpisodicLifeEnv``, ale-py's ``life_loss_info``), not
    Gymnasium's ``terminal_on_life_loss``, which resets the whole game at every life loss. After a life
    loss, ``reset()`` does not touch the emulator: it returns the current observation with
    ``info["life_loss_continue"] = True`` and play continues from there, exactly like ale-py's C++ vector
    env (``FrameStack`` keeps its frames across such a reset). Any other reset (after a game over, a
    truncation by an outer ``TimeLimit``, or a reset called mid-life) starts a new game. ``info["game_over"]``
    tells the two kinds of episode end apart, so evaluation code can count whole games.

    An outer ``TimeLimit`` whose last step also loses a life is invisible from here, so that reset continues the
    game (SB3's ``EpisodicLifeEnv`` does the same); ``reset(options={"new_game": True})`` (or a seed) forces a new
    game. Truncations from inside (ALE's ``max_num_frames_per_episode``, as ``make_dqn_env`` uses) are seen.

    Example:
        >>> import gymnasium as gym, ale_py
        >>> from dreamarcade.wrappers import EpisodicLife, MaxAndSkip
        >>> env = EpisodicLife(MaxAndSkip(gym.make("ALE/Breakout-v5", frameskip=1)))
        >>> _ = env.reset(seed=0)
        >>> env.lives
        5
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        if not hasattr(env.unwrapped, "ale"):
            raise TypeError(
                "EpisodicLife needs an env that reports lives through an ALE interface (env.unwrapped.ale); "
                f"{type(env.unwrapped).__name__} does not."
            )
        self.lives = 0
        self.game_over = True
        self._life_lost = False  # the last step ended an episode by a life loss, and the game goes on
        self._last_obs: Any = None
        self._last_info: dict = {}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self._life_lost = bool(terminated) and not self.game_over
        self.lives = lives
        info["game_over"] = self.game_over
        self._last_obs, self._last_info = obs, info
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        life_lost, self._life_lost = self._life_lost, False
        new_game = bool((options or {}).get("new_game", False))
        if not life_lost or seed is not None or new_game:
            # game over, a truncation from outside (TimeLimit) or a reset mid-life: a new game
            if options and "new_game" in options:
                options = {k: v for k, v in options.items() if k != "new_game"} or None
            obs, info = self.env.reset(seed=seed, options=options)
            self.game_over = False
            self.lives = self.env.unwrapped.ale.lives()
            return obs, info
        # A life was lost: the game goes on from the current frame.
        info = {k: v for k, v in self._last_info.items() if k != "episode"}
        info["life_loss_continue"] = True
        return self._last_obs, info


class FireReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Press FIRE once after each reset, for games that wait for it before play starts (Breakout, ...).

    This is ale-py's C++ vector env rule (``use_fire_reset``): one FIRE frame right after the reset, before
    any no-ops, so it belongs directly on the frameskip-1 env. Only real resets press FIRE: after a life
    loss under ``EpisodicLife`` the agent must press it itself. Games without FIRE as action 1 are passed
    through unchanged, and the reset's ``info`` is kept.

    Example:
        >>> import gymnasium as gym, ale_py
        >>> from dreamarcade.wrappers import FireReset
        >>> env = FireReset(gym.make("ALE/Breakout-v5", frameskip=1))
        >>> env.active
        True
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        meanings = action_meanings(env)
        self.active = bool(meanings and len(meanings) >= 2 and meanings[1] == "FIRE")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        # only real resets, also with an EpisodicLife inside this wrapper (SB3's order): the FIRE after a lost life
        # moved the game on while FrameStack kept its frames for the continued game (a stale stack)
        if not self.active or info.get("life_loss_continue"):
            return obs, info
        obs, _, terminated, truncated, step_info = self.env.step(1)
        if terminated or truncated:
            return self.env.reset(options=options)
        return obs, {**info, **step_info}
