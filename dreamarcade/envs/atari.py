"""The DQN-paper Atari env for any ALE game, as a single env or as ale-py's C++ vector env.

Both paths have the same semantics (tested against each other, and as vector envs under SAME_STEP
autoreset; under NEXT_STEP, a Gymnasium vector env of the single env spends the step after a life loss on a reset
step that plays no action, while the C++ env plays it): frameskip 4 with max-pooling of the
last two frames, 84x84 grayscale from ALE's palette luminance, 4-frame stack zero-padded at reset,
reward sign clipping, up to 30 no-ops at reset, fire reset, episodic life (a real reset only at game
over) and sticky actions given explicitly (``repeat_action_probability=0.0`` by default, the DQN
paper's setting, never an accidental 0.25 from ``ALE/*-v5``'s spec).

One difference comes from ale-py: the number of reset no-ops. The single env plays 1..``noop_max`` of them (after
its FIRE), as Gymnasium's ``AtariPreprocessing`` and SB3's ``NoopResetEnv`` do; ale-py's C++ env plays fewer.
Measured on Breakout with ``noop_max=3`` over 40 seeds: a reset has played 1-3 frames (2-4 with FIRE) in the
single env and 0-2 (1-2 with FIRE) in the C++ env.

A second one, also ale-py's: on the step that ends a game (game over, or truncation at
``max_num_frames_per_episode``), the C++ env's last observation (``obs`` under NEXT_STEP, ``info["final_obs"]`` under
SAME_STEP) repeats the previous step's newest frame in its newest plane, where the single env has the true final
frame (Gymnasium's ``AtariPreprocessing`` is stale on that step too). The other three planes, every other step and
the final observation of a lost life (mended by :class:`LifeLossFinalObs`) agree; the screen of that one frame is not
reachable from Python, so it is not mended. The C++ env also reports clipped rewards only and no ``info["episode"]``:
take whole-game raw scores from the single env (as the bundled DQN does).

A third, ale-py's too: the frame cap ``max_num_frames_per_episode`` counts every emulator frame of the game in the
single env, the reset's FIRE and no-ops included, and only the agent's steps (``frame_skip`` frames each) since the
reset in the C++ env, so a game cut by the cap ends up to ``(noop_max + 2) / frame_skip`` agent steps later there
(measured on Pong with a 1000-frame cap: step 244-245 against 250). ``0`` means no cap on both paths.
"""

from __future__ import annotations

import difflib
import numbers
import re
from typing import Any

import gymnasium as gym
import numpy as np

from dreamarcade.baselines.common import has_episode_statistics
from dreamarcade.errors import check_count, check_probability, require
from dreamarcade.wrappers.atari import EpisodicLife, FireReset, MaxAndSkip, NoopReset
from dreamarcade.wrappers.frames import ClipRewardSign, FrameStack, GrayscaleResize

__all__ = ["ale_game_id", "make_dqn_env", "make_dqn_vector_env", "wrap_dqn", "DQN_PAPER_GAMES", "LifeLossFinalObs"]

# The seven games of Mnih et al. (2013), registered as DQN<Game>-v0.
DQN_PAPER_GAMES = ("BeamRider", "Breakout", "Enduro", "Pong", "Qbert", "Seaquest", "SpaceInvaders")


def ale_game_id(game: str) -> str:
    """Normalise a game name to ale-py's ROM id.

    ``"Pong"``, ``"pong"``, ``"ALE/Pong-v5"`` and ``"PongNoFrameskip-v4"`` all give ``"pong"``.
    """
    roms = require("ale_py.roms", "Atari games", extra="atari")
    if not isinstance(game, str):  # make_dqn_env(5) failed with "'int' object has no attribute 'split'"
        raise TypeError(f"game must be a game's name such as 'Pong' or 'ALE/Pong-v5', got {game!r}")
    name = game.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower() if not name.islower() else name
    ids = roms.get_all_rom_ids()
    # matched on the letters alone (no two ROM ids differ only in underscores), so names the CamelCase rule cannot
    # split find their id too: "UpNDown" -> up_n_down, "TicTacToe3D" -> tic_tac_toe_3d
    by_letters = {rid.replace("_", ""): rid for rid in ids}
    letters = name.lower().replace("_", "")
    if letters in by_letters:
        return by_letters[letters]
    close = difflib.get_close_matches(snake, ids, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown Atari game '{game}'.{hint} `ale_py.roms.get_all_rom_ids()` lists all {len(ids)} games.")


def _gym_name(rom_id: str) -> str:
    return "".join(part.capitalize() for part in rom_id.split("_"))


def make_dqn_env(
    game: str = "Pong",
    *,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    crop2013: bool = False,
    frame_stack: int = 4,
    clip_rewards: bool = True,
    episodic_life: bool = True,
    fire_reset: bool = True,
    repeat_action_probability: float = 0.0,
    max_num_frames_per_episode: int = 108_000,
    full_action_space: bool = False,
    render_mode: str | None = None,
) -> gym.Env:
    """Build the DQN-paper preprocessing stack around ALE's ``AtariEnv`` (``frameskip=1``) for ``game``.

    Wrapper order (inner to outer): FireReset -> NoopReset -> MaxAndSkip -> RecordEpisodeStatistics (raw
    game score, whole games, in ``info["episode"]``) -> EpisodicLife -> GrayscaleResize -> ClipRewardSign
    -> FrameStack. Observation: ``(frame_stack, 84, 84)`` uint8.

    Example:
        >>> from dreamarcade.envs.atari import make_dqn_env
        >>> env = make_dqn_env("Pong")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype.name
        ((4, 84, 84), 'uint8')
    """
    require("ale_py", "Atari games", extra="atari")
    from ale_py.env import AtariEnv

    _check_counts(frame_skip, frame_stack, noop_max, repeat_action_probability, max_num_frames_per_episode)

    rom = ale_game_id(game)
    # AtariEnv directly rather than gym.make("ALE/...-v5"): gym.make wraps the id's whole stack in the
    # checker once; a second checker around every emulator frame would only cost time.
    env: gym.Env = AtariEnv(
        game=rom,
        frameskip=1,
        repeat_action_probability=float(repeat_action_probability),
        obs_type="grayscale",
        max_num_frames_per_episode=max_num_frames_per_episode,
        full_action_space=full_action_space,
        render_mode=render_mode,
    )
    return wrap_dqn(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=screen_size,
        crop2013=crop2013,
        frame_stack=frame_stack,
        clip_rewards=clip_rewards,
        episodic_life=episodic_life,
        fire_reset=fire_reset,
    )


def wrap_dqn(
    env: gym.Env,
    *,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    crop2013: bool = False,
    frame_stack: int = 4,
    clip_rewards: bool = True,
    episodic_life: bool = True,
    fire_reset: bool = True,
) -> gym.Env:
    """The DQN-paper preprocessing stack of :func:`make_dqn_env` around an ALE env you built (``frameskip=1``).

    This is the route for Stable-Baselines3: as its ``wrapper_class``, the stack goes on top of the ``Monitor``
    that ``make_vec_env`` puts around the base env, so SB3's episode statistics (``ep_rew_mean``,
    ``evaluate_policy``, ``EvalCallback``) are raw scores of whole games, as with SB3's own ``make_atari_env``.
    Around a registered ``DQN*`` id, SB3's ``Monitor`` sits outside the whole stack instead: it then counts each
    lost life as an episode and sums the sign-clipped rewards. A recorder already in ``env`` (SB3's ``Monitor``
    or Gymnasium's ``RecordEpisodeStatistics``) is used as is; otherwise one is added below ``EpisodicLife``.

    Example (``make_vec_env("ALE/Breakout-v5", n_envs=8, env_kwargs=kwargs, wrapper_class=wrap_dqn)`` in SB3):
        >>> import gymnasium as gym, ale_py
        >>> from dreamarcade.envs.atari import wrap_dqn
        >>> gym.register_envs(ale_py)
        >>> env = wrap_dqn(gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0))
        >>> env.reset(seed=0)[0].shape
        (4, 84, 84)
    """
    _check_counts(frame_skip, frame_stack, noop_max, 0.0, 0)  # the env given has its own stickiness and cap
    if fire_reset:
        env = FireReset(env)
    if noop_max > 0:
        env = NoopReset(env, noop_max=noop_max)
    if frame_skip > 1:
        env = MaxAndSkip(env, skip=frame_skip)
    if not has_episode_statistics(env):
        env = gym.wrappers.RecordEpisodeStatistics(env)  # raw game score of whole games, in info["episode"]
    if episodic_life:
        env = EpisodicLife(env)
    env = GrayscaleResize(env, size=screen_size, mode="crop2013" if crop2013 else "resize")
    if clip_rewards:
        env = ClipRewardSign(env)
    env = FrameStack(env, frame_stack, padding="zero")  # also for 1: (1, 84, 84), the C++ path's shape
    return env


def check_repeat_action_probability(value: object) -> float:
    """ALE's sticky-action probability as a float in [0, 1), or a ValueError: ale-py takes any value, and at 1 (or
    ``True``) the env repeats its first action forever, ignoring the agent's.

    >>> check_repeat_action_probability(0.25)
    0.25
    """
    hint = " (sticky actions; 0: none, 0.25: ALE v5; at 1 every action is ignored)"
    return check_probability("repeat_action_probability", value, hint, below_one=True)


def _check_counts(
    frame_skip: int, frame_stack: int, noop_max: int, repeat_action_probability: float, max_frames: int
) -> None:
    check_repeat_action_probability(repeat_action_probability)
    check_count("frame_skip", frame_skip, hint=" (1: no skip)")
    check_count("frame_stack", frame_stack, hint=" (1: one frame)")
    check_count("noop_max", noop_max, low=0, hint=" (0: no random no-ops at reset)")
    # ALE takes 0 (and below) as no cap, the C++ vector env truncated every step; a float failed inside pybind
    check_count("max_num_frames_per_episode", max_frames, low=0, hint=" (emulator frames; 0: no cap)")


def make_dqn_vector_env(
    num_envs: int,
    game: str = "Pong",
    *,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    frame_stack: int = 4,
    clip_rewards: bool = True,
    episodic_life: bool = True,
    fire_reset: bool = True,
    repeat_action_probability: float = 0.0,
    max_num_frames_per_episode: int = 108_000,
    full_action_space: bool = False,
    num_threads: int = 0,
    autoreset_mode: gym.vector.AutoresetMode | str = gym.vector.AutoresetMode.NEXT_STEP,
    batch_size: int = 0,
    thread_affinity_offset: int = -1,
    **unsupported: Any,
) -> gym.vector.VectorEnv:
    """The same env as :func:`make_dqn_env`, ``num_envs`` at once, stepped in C++ by ale-py's ``AtariVectorEnv``.

    ale-py's ``life_loss_info`` is the DQN papers' episodic life (terminated on a life loss, the game
    continues); its own ``episodic_life`` would reset the whole game, so it is never used here.
    ``autoreset_mode``, ``batch_size`` and ``thread_affinity_offset`` go to ``AtariVectorEnv`` as they are.

    Example:
        >>> from dreamarcade.envs.atari import make_dqn_vector_env
        >>> envs = make_dqn_vector_env(2, "Pong")
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape
        (2, 4, 84, 84)
    """
    if unsupported:
        raise TypeError(
            f"make_dqn_vector_env got options the C++ vector env does not support: {sorted(unsupported)}. "
            "Use make_dqn_env with gym.vector.SyncVectorEnv for those."
        )
    require("ale_py", "Atari games", extra="atari")
    from ale_py.vector_env import AtariVectorEnv

    # frame_stack=0: the C++ reset hung
    _check_counts(frame_skip, frame_stack, noop_max, repeat_action_probability, max_num_frames_per_episode)
    check_count("num_envs", num_envs)  # 0 crashed the C++ env (SIGSEGV)
    check_count("batch_size", batch_size, low=0, hint=" (envs per step() call; 0: all of them)")
    if batch_size > num_envs:  # reset() waited forever for more envs than there are
        raise ValueError(f"batch_size={batch_size} is more than num_envs={num_envs}: use at most {num_envs} (0: all)")
    hint = (
        " (one integer: the C++ vector path makes square frames; for other shapes use make_dqn_env with SyncVectorEnv)"
    )
    check_count("screen_size", screen_size, hint=hint)
    envs = AtariVectorEnv(
        ale_game_id(game),
        int(num_envs),
        num_threads=num_threads,
        autoreset_mode=autoreset_mode,
        batch_size=batch_size,
        thread_affinity_offset=thread_affinity_offset,
        max_num_frames_per_episode=max_num_frames_per_episode or 2**31 - 1,  # its 0 truncates every step
        repeat_action_probability=float(repeat_action_probability),
        full_action_space=full_action_space,
        img_height=screen_size,
        img_width=screen_size,
        grayscale=True,
        stack_num=frame_stack,
        frameskip=frame_skip,
        maxpool=frame_skip > 1,
        noop_max=noop_max,
        episodic_life=False,
        life_loss_info=episodic_life,
        reward_clipping=clip_rewards,
        use_fire_reset=fire_reset,
    )
    if episodic_life and envs.metadata.get("autoreset_mode") == gym.vector.AutoresetMode.SAME_STEP:
        return LifeLossFinalObs(envs)
    return AtariVectorAPI(envs)


class AtariVectorAPI(gym.vector.VectorWrapper):
    """ale-py's ``AtariVectorEnv`` with Gymnasium's vector API, as the ``sync`` and ``async`` modes of the same id
    give it.

    * ``reset(seed=...)``: an int gives env i the seed ``seed + i`` (also with ``options={"reset_mask": mask}``,
      where ale-py numbered only the envs being reset); a list of ``num_envs`` seeds (``None``: that env unseeded)
      or NumPy integers work too. ale-py takes seeds below 2**31; negative, non-integer and larger ones are refused
      with a ValueError (ale-py took -1 as "unseeded" and failed on large ones with a bare TypeError).
    * ``step`` / ``send``: actions as any integer array-like; one outside the action space is a ValueError (the C++
      env hung on it), and non-integer ones are refused, not truncated.
    * Rewards are float64 (ale-py's are int32). ``send`` and ``recv`` (asynchronous half-steps, with
      ``batch_size``) are passed on, and ale-py's own attributes (``batch_size``, ``ale``, ...) are read through.

    Example:
        >>> from dreamarcade.envs.atari import make_dqn_vector_env
        >>> envs = make_dqn_vector_env(2, "Pong")
        >>> obs, info = envs.reset(seed=[3, None])
        >>> _, rewards, *_ = envs.step([0, 1])
        >>> type(envs).__name__, rewards.dtype, envs.batch_size
        ('AtariVectorAPI', dtype('float64'), 2)
    """

    def __getattr__(self, name: str) -> Any:  # ale-py's attributes, as on the env this wrapper used to be
        if name.startswith("_") or name == "env":  # "env" itself: not set yet (a copy being built), no recursion
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        rows = np.arange(self.num_envs)
        if options is not None and "reset_mask" in options:
            rows = np.flatnonzero(np.asarray(options["reset_mask"]))  # ale-py checks the mask itself
        if seed is not None:
            if isinstance(seed, (numbers.Integral, np.integer)) and not isinstance(seed, bool):
                seeds: list[Any] = [int(seed) + int(i) for i in range(self.num_envs)]
            else:
                seeds = list(np.asarray(seed, dtype=object).reshape(-1))
                if len(seeds) != self.num_envs:
                    raise ValueError(
                        f"seed must be an int or {self.num_envs} seeds (one per env, None: unseeded), got {len(seeds)}"
                    )
            for s in seeds:
                if s is not None and (
                    isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer)) or not 0 <= s < 2**31
                ):
                    raise ValueError(f"seeds must be integers in [0, 2**31) or None (ale-py's range), got {s!r}")
            seed = np.array([-1 if seeds[i] is None else int(seeds[i]) for i in rows], np.int64)  # -1: unseeded
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        self.send(actions)
        return self.recv()

    def send(self, actions: Any) -> None:
        """ale-py's asynchronous half-step (with ``batch_size``): passed on."""
        a = np.asarray(actions)
        n = self.single_action_space.n
        if a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() >= n)):
            raise ValueError(f"actions must be integers in [0, {n}) (Discrete({n})), got {a.tolist()}")
        self.env.send(a if a.dtype == np.int64 else a.astype(np.int64))  # ale-py asserts an int32/int64 array

    def recv(self) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """ale-py's asynchronous half-step, rewards as float64."""
        obs, reward, terminated, truncated, info = self.env.recv()
        return obs, np.asarray(reward, np.float64), terminated, truncated, info


class LifeLossFinalObs(AtariVectorAPI):
    """Mends ale-py's ``info["final_obs"]`` at a life loss under SAME_STEP autoreset with ``life_loss_info``.

    There the C++ env ends the episode (terminated) but goes on with the game, and returns the frames reached; its
    ``final_obs`` for that env holds zeros or frames of an earlier step instead. The episode's last observation
    is the one returned, as the single env (:func:`make_dqn_env` in a ``SyncVectorEnv``) gives it, so it is put in
    ``final_obs``. A life loss that continues the game is told from a game over by the lives: fewer, but not zero
    (a game over starts a new game, with all lives back).

    Example:
        >>> from dreamarcade.envs.atari import make_dqn_vector_env
        >>> envs = make_dqn_vector_env(2, "Breakout", autoreset_mode="SameStep")
        >>> type(envs).__name__, envs.reset(seed=0)[0].shape
        ('LifeLossFinalObs', (2, 4, 84, 84))
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self._lives = np.zeros(self.num_envs, np.int64)  # by env id: with a batch_size, rows are the envs that finished

    def _ids(self, info: dict[str, Any], rows: int) -> np.ndarray:
        return np.asarray(info["env_id"], np.int64) if "env_id" in info else np.arange(rows)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        self._lives[self._ids(info, len(obs))] = np.asarray(info["lives"], np.int64)
        return obs, info

    def recv(self) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """ale-py's asynchronous half-step, with ``final_obs`` mended (``step`` is ``send`` then ``recv``)."""
        return self._mend(*super().recv())

    def _mend(
        self, obs: Any, reward: Any, terminated: Any, truncated: Any, info: dict[str, Any]
    ) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        ids = self._ids(info, len(obs))
        lives = np.asarray(info["lives"], np.int64)
        continued = np.asarray(terminated, bool) & (lives > 0) & (lives < self._lives[ids])
        if continued.any() and "final_obs" in info:
            final = np.array(info["final_obs"], copy=True)
            final[continued] = obs[continued]
            info = {**info, "final_obs": final}
        self._lives[ids] = lives
        return obs, reward, terminated, truncated, info
