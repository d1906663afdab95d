"""The imitation agent: PPO on Montezuma's Revenge with the one-shot YouTube imitation reward (Aytar et al. 2018).

The paper trains IMPALA with 100 actors; this module uses the project's PPO (:mod:`dreamarcade.baselines.ppo`,
imported, not copied) with several parallel actors whose frames are embedded in one batched pass per step
(:class:`~dreamarcade.wrappers.imitation.YouTubeImitationRewardVector`). Pipeline per actor::

    ALE/MontezumaRevenge-v5 (skip 4, RGB, no sticky actions) [-> LifeLossTerminal, option] -> TimeLimit
      -> RecordEpisodeStatistics (game score)   [x num_envs in a SyncVectorEnv, same-step autoreset]
    -> YouTubeImitationRewardVector (bundled embedding + checkpoints)   [reward="imitation" only]
    -> PolicyFrames: 84x84 grayscale, 4-frame stack (+ the similarities to the next 2 checkpoints as "meta")

Reward: ``imitation`` = imitation reward + sign(game reward) (the paper's "imitation + env"); ``imitation_only``
= imitation reward alone; ``game`` = sign(game reward) alone (the baseline with the same budget). The clipped game
reward can be weighted (``game_reward_scale``, default 1: the paper's plain sum): where the embedding confuses the
checkpoints after the key with places reached without it, the way back is paid either way, and the key is worth only
its +1 next to 7.5 of checkpoint rewards (``benchmarks/RESULTS.md``). ``count_bonus`` (default 0, not in the paper)
adds a count-based exploration bonus on coarse frame cells (:mod:`dreamarcade.wrappers.exploration`), for seeds that
never find the key by chance. Self-imitation (:mod:`dreamarcade.baselines.self_imitation`, PPO's ``sil_coef``; not in
the paper) is on by default for this agent (``--sil-coef 1``; 0 turns it off): the best episodes, such as a rare early
one with the key, are trained on again. It took 6 of 8 seeds to the key in 600k steps, against 4 of the same 8
without it in 900k. Per-checkpoint thresholds (``distinct_margin``, default 0.1; not in the paper; ``none`` for the
paper's one threshold) make the checkpoints the demo passes again on its way back with the key pay only with it: with
both, 7 of the 8 seeds took the key in 600k steps, most of them also opening a door (``benchmarks/RESULTS.md``).
Episodes end after ``max_episode_steps`` (or at game over); a lost life does not end them by default: the player
starts again at the room's entrance with the checkpoints already paid, so each episode gives several tries at a hard
spot (the rolling skull) that a life-loss ending would give once. With the life-loss ending (``--life-loss-terminal``)
the agent stalled at the skull in 694k steps; without it, it collected the key (``benchmarks/RESULTS.md``).

CLI::

    python -m dreamarcade.baselines imitation train --reward imitation --total-timesteps 300000 \\
        --run-dir runs/imitation/agent_imitation
    python -m dreamarcade.baselines imitation eval runs/imitation/agent_imitation --episodes 20

Example:
    >>> from dreamarcade.baselines.imitation import ImitationConfig, make_envs
    >>> envs = make_envs(ImitationConfig(num_envs=2))
    >>> envs.num_envs, int(envs.single_action_space.n)
    (2, 18)
    >>> envs.close()
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from dreamarcade.baselines.common import check_run_dir_free, claim_run_dir, releases_run_dirs
from dreamarcade.baselines.ppo import PPOConfig, check_agent_fits, load_agent, obs_to_tensor, train_ppo
from dreamarcade.checkpoint import atomic_write_text, check_output_file, checkpoint_exists, json_text, read_json_object
from dreamarcade.errors import (
    CheckpointError,
    DreamArcadeError,
    check_count,
    given_flags,
    input_checks,
    input_error_status,
)
from dreamarcade.precision import flush_denormals
from dreamarcade.reward_models.checkpoints import check_threshold
from dreamarcade.wrappers.exploration import CellCounter

__all__ = [
    "ImitationConfig",
    "LifeLossTerminal",
    "RoomsVisited",
    "PolicyFrames",
    "make_envs",
    "train",
    "play_episodes",
    "PlayedEpisodes",
    "evaluate",
    "main",
]

REWARDS = ("imitation", "imitation_only", "game")


def _atari_ppo() -> PPOConfig:
    # CleanRL's Atari PPO settings (short rollouts, 4 epochs): better than the Sonic defaults for a small budget
    return PPOConfig(
        total_timesteps=300_000,
        learning_rate=2.5e-4,
        num_envs=8,
        num_steps=128,
        num_minibatches=4,
        update_epochs=4,
        clip_coef=0.1,
        ent_coef=0.01,
        vector_mode="sync",
        checkpoint_every_updates=5,
        # self-imitation (not in the paper): with it 6 of 8 seeds take the key at 600k steps, against 4 of the same
        # 8 without it at 900k (benchmarks/RESULTS.md, Agent); --sil-coef 0 turns it off
        sil_coef=1.0,
    )


@dataclass
class ImitationConfig:
    """Env and reward settings of the imitation agent (the PPO settings are in ``ppo``).

    Example (the game-reward baseline: no imitation reward, so no similarities in the observation):
        >>> from dreamarcade.baselines.imitation import ImitationConfig, make_envs
        >>> cfg = ImitationConfig(reward="game", num_envs=2)
        >>> cfg.threshold, cfg.ppo.num_steps, cfg.ppo.clip_coef  # the paper's threshold, CleanRL's Atari PPO
        (0.5, 128, 0.1)
        >>> cfg.ppo.sil_coef  # self-imitation, on by default for this agent (not in the paper)
        1.0
        >>> envs = make_envs(cfg)
        >>> envs.single_observation_space
        Box(0, 255, (4, 84, 84), uint8)
        >>> envs.close()
    """

    reward: str = "imitation"  # "imitation" (imitation + env), "imitation_only", "game"
    threshold: float = 0.5  # paper
    # m: per-checkpoint thresholds (wrapper doc; not in the paper, the default since the thirtieth session: with
    # self-imitation, 7 of 8 seeds took the key in most episodes with 0.1, 6 of 8 with one threshold); None: one
    # threshold for all (the paper)
    distinct_margin: float | None = 0.1
    checkpoint_reward: float = 0.5  # paper
    skip: int = 1  # paper: delta t = 1
    observe_similarity: bool = True  # paper: similarities to the next 2 checkpoints feed the network
    embed_every: int = 1  # embed the agent's frames every k-th step (k > 1 is faster but changes the reward)
    max_episode_steps: int = 1000
    life_loss_terminal: bool = False  # True: a lost life ends the episode (one try at the skull per episode)
    game_reward_scale: float = 1.0  # weight of sign(game reward) in the sum; 1 is the paper's plain sum
    count_bonus: float = 0.0  # beta of a count-based bonus beta/sqrt(n) on 11x8 frame cells; 0: none (the paper)
    num_envs: int = 8
    asset_dir: str | None = None
    ppo: PPOConfig = field(default_factory=_atari_ppo)


class LifeLossTerminal(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """End the episode when a life is lost (ALE ``info["lives"]`` decreases); the next reset is a real reset.

    Example:
        >>> import gymnasium as gym, ale_py
        >>> env = LifeLossTerminal(gym.make("ALE/MontezumaRevenge-v5"))
        >>> obs, info = env.reset(seed=0)
        >>> info["lives"]  # the first life lost ends the episode
        6
        >>> env.close()
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)  # so that env.spec can rebuild the stack (check_env)
        gym.Wrapper.__init__(self, env)
        self._lives = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._lives = int(info.get("lives", 0))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc, info = self.env.step(action)
        lives = int(info.get("lives", self._lives))
        if lives < self._lives:
            term = True
        self._lives = lives
        return obs, r, term, trunc, info


class RoomsVisited(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Count the rooms of Montezuma's Revenge an episode has been in: ``info["rooms_visited"]`` on every step.

    The room is RAM byte 3 (:data:`dreamarcade.envs.montezuma_search.ROOM`); 2 or more means the player left the
    first room, which a game score cannot tell (400 = key + door opened, not yet walked through).

    Example:
        >>> import gymnasium as gym, ale_py
        >>> env = RoomsVisited(gym.make("ALE/MontezumaRevenge-v5"))
        >>> obs, info = env.reset(seed=0)
        >>> info["rooms_visited"]
        1
        >>> env.close()
    """

    def __init__(self, env: gym.Env) -> None:
        from dreamarcade.envs.montezuma_search import ROOM

        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._ale, self._room_byte = env.unwrapped.ale, ROOM  # looked up once, not on every step
        self._rooms: set[int] = set()

    def _visit(self, info: dict[str, Any]) -> dict[str, Any]:
        self._rooms.add(int(self._ale.getRAM()[self._room_byte]))
        info["rooms_visited"] = len(self._rooms)
        return info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._rooms = set()
        return obs, self._visit(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc, info = self.env.step(action)
        return obs, r, term, trunc, self._visit(info)


class PolicyFrames(gym.vector.VectorWrapper):
    """RGB (N, H, W, 3) -> 84x84 grayscale 4-stack (N, 4, 84, 84) for the policy, plus the reward mix.

    With ``similarity=True`` the observation is ``{"obs": stack, "meta": similarities}`` (the imitation wrapper's
    ``observe_similarity`` output). ``reward``: see the module docstring; game rewards are sign-clipped, then
    multiplied by ``game_scale`` (1: the paper's sum). ``count_bonus`` > 0 adds the count-based exploration bonus
    ``count_bonus / sqrt(n)`` of each new frame's 11x8 cell (:class:`~dreamarcade.wrappers.exploration.CellCounter`,
    lifelong counts shared by all envs, kept in the PPO checkpoint) to every reward kind, and reports it in
    ``info["count_bonus"]``; the step that ends an episode pays none (its frame is the next episode's first).
    Needs a SAME_STEP-autoreset vector env (the obs of a finished episode is already the next episode's first).

    Example:
        >>> import gymnasium as gym, ale_py, numpy as np
        >>> from dreamarcade.baselines.imitation import PolicyFrames
        >>> gym.register_envs(ale_py)
        >>> venv = gym.vector.SyncVectorEnv(
        ...     [lambda: gym.make("ALE/MontezumaRevenge-v5")] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        ... )
        >>> env = PolicyFrames(venv, reward="game", similarity=False)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype, bool((obs[:, 0] == obs[:, 3]).all())  # the first frame fills the stack
        ((2, 4, 84, 84), dtype('uint8'), True)
        >>> obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.int64))
        >>> reward.tolist()
        [0.0, 0.0]
        >>> env.close()
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        reward: str,
        similarity: bool,
        size: int = 84,
        stack: int = 4,
        game_scale: float = 1.0,
        count_bonus: float = 0.0,
    ) -> None:
        super().__init__(env)
        if env.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            # under NEXT_STEP a finished env's stack would be filled with its last frame, then mixed into the next
            # episode's first steps
            raise ValueError(
                "PolicyFrames needs a SAME_STEP-autoreset vector env (autoreset_mode=gym.vector.AutoresetMode."
                f"SAME_STEP), got {env.metadata.get('autoreset_mode')}"
            )
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if not (math.isfinite(game_scale) and game_scale >= 0):
            raise ValueError(f"game_scale must be a finite number >= 0 (1 is the paper's sum), got {game_scale!r}")
        self.game_scale = float(game_scale)
        if not (math.isfinite(count_bonus) and count_bonus >= 0):
            raise ValueError(f"count_bonus must be a finite number >= 0 (0: no bonus), got {count_bonus!r}")
        self.counter = CellCounter(count_bonus) if count_bonus > 0 else None
        self.reward_kind, self.similarity, self.size, self.stack = reward, similarity, size, stack
        self.frames = np.zeros((self.num_envs, stack, size, size), np.uint8)
        img = gym.spaces.Box(0, 255, (stack, size, size), np.uint8)
        if similarity:
            meta = env.single_observation_space["similarity"]
            self.single_observation_space = gym.spaces.Dict({"obs": img, "meta": meta})
        else:
            self.single_observation_space = img
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def _gray(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (self.size, self.size), interpolation=cv2.INTER_AREA)

    def _split(self, obs: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(obs, dict):
            return obs["obs"], obs["similarity"]
        return obs, None

    def _out(self, sims: np.ndarray | None) -> Any:
        stack = self.frames.copy()
        return {"obs": stack, "meta": sims.astype(np.float32)} if self.similarity else stack

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        options = kwargs.get("options") or {}
        mask = options.get("reset_mask")  # read first: the inner reset may consume the options
        reset = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        obs, info = self.env.reset(**kwargs)
        rgb, sims = self._split(obs)
        for i in np.flatnonzero(reset):  # only the reset envs start a new stack; the others keep their history
            self.frames[i] = self._gray(rgb[i])[None]
        if self.counter is not None:  # a start is a visit; it pays nothing
            self.counter.bonus(self.frames[:, -1], count=reset)
        return self._out(sims), info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, term, trunc, info = self.env.step(actions)
        rgb, sims = self._split(obs)
        done = np.logical_or(term, trunc)
        if done.any() and "final_obs" in info:  # each finished episode's last observation, as the policy sees it
            info = {**info, "final_obs": self._final_observations(info["final_obs"], done)}
        for i in range(self.num_envs):
            g = self._gray(rgb[i])
            if done[i]:
                self.frames[i] = g[None]  # SAME_STEP autoreset: this frame starts the next episode
            else:
                self.frames[i, :-1] = self.frames[i, 1:]
                self.frames[i, -1] = g
        env_r = self.game_scale * np.sign(np.asarray(info.get("env_reward", reward), np.float64))
        imit = np.asarray(info.get("imitation_reward", np.zeros(self.num_envs)), np.float64)
        if self.reward_kind == "imitation":
            reward = imit + env_r
        elif self.reward_kind == "imitation_only":
            reward = imit
        else:
            reward = env_r
        if self.counter is not None:
            bonus = self.counter.bonus(self.frames[:, -1])
            bonus[done] = 0.0  # the frame of a done env is the next episode's start: counted, not paid
            reward = reward + bonus
            info = {**info, "count_bonus": bonus}
        return self._out(sims), reward, term, trunc, info

    def _final_observations(self, final_obs: Any, done: np.ndarray) -> np.ndarray:
        """``info["final_obs"]`` in this wrapper's observation space: each finished env's stack with its last frame
        (and the similarities at that frame), taken before the stack restarts."""
        out = np.empty(self.num_envs, dtype=object)
        for i in range(self.num_envs):
            out[i] = final_obs[i]
        for i in np.flatnonzero(done):
            rgb, sims = self._split(final_obs[i])
            stack = np.concatenate([self.frames[i, 1:], self._gray(rgb)[None]])
            out[i] = {"obs": stack, "meta": np.asarray(sims, np.float32)} if self.similarity else stack
        return out

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """The exploration counts (empty without ``count_bonus``); :func:`train_ppo` saves them with its checkpoint."""
        return {} if self.counter is None else self.counter.state_tensors()

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Restore :meth:`checkpoint_tensors` on a resume."""
        if self.counter is not None:
            self.counter.load_state_tensors(tensors, source)


def make_envs(cfg: ImitationConfig) -> gym.vector.VectorEnv:
    """The SAME_STEP-autoreset vector env the agent trains on (see the module docstring)."""
    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.wrappers.imitation import YouTubeImitationRewardVector, load_imitation_model

    check_count("num_envs", cfg.num_envs, 1)  # 0 failed inside SyncVectorEnv with an IndexError
    # ALE's own cut (4500 agent steps) below the time limit: a longer --max-episode-steps was capped at it
    max_frames = max(18_000, 4 * check_count("--max-episode-steps", cfg.max_episode_steps, 1))

    def thunk() -> gym.Env:
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(
            "ALE/MontezumaRevenge-v5", frameskip=4, repeat_action_probability=0.0, max_num_frames_per_episode=max_frames
        )
        env = RoomsVisited(env)
        if cfg.life_loss_terminal:
            env = LifeLossTerminal(env)
        env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
        # above both ends of an episode (life loss, time limit), so every episode's game score is recorded
        return gym.wrappers.RecordEpisodeStatistics(env)

    venv = gym.vector.SyncVectorEnv([thunk] * cfg.num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    use_imitation = cfg.reward != "game"
    if use_imitation:
        embedder, checkpoints = load_imitation_model(cfg.asset_dir or ASSET_DIR)
        venv = YouTubeImitationRewardVector(
            venv,
            embedder,
            checkpoints,
            threshold=cfg.threshold,
            distinct_margin=cfg.distinct_margin,
            reward=cfg.checkpoint_reward,
            skip=cfg.skip,
            mode="add",
            observe_similarity=cfg.observe_similarity,
            embed_every=cfg.embed_every,
        )
    similarity = use_imitation and cfg.observe_similarity
    return PolicyFrames(
        venv, cfg.reward, similarity=similarity, game_scale=cfg.game_reward_scale, count_bonus=cfg.count_bonus
    )


class PlayedEpisodes(NamedTuple):
    """What :func:`play_episodes` saw of each ended episode, in the order they ended.

    Example (the game-reward env has no imitation reward: no checkpoint to reach or pay):
        >>> import numpy as np
        >>> from dreamarcade.baselines.imitation import ImitationConfig, make_envs, play_episodes
        >>> envs = make_envs(ImitationConfig(reward="game", num_envs=1, max_episode_steps=5))
        >>> played = play_episodes(envs, lambda obs: np.zeros(1, np.int64), episodes=2, seed=0)
        >>> envs.close()
        >>> played.scores, played.next_checkpoints, played.checkpoints_paid, played.rooms
        ([0.0, 0.0], [0, 0], [0, 0], [1, 1])
    """

    scores: list[float]  # the raw game score
    next_checkpoints: list[int]  # the index of the next checkpoint the episode had to reach (0 without imitation)
    checkpoints_paid: list[int]  # how many checkpoints paid (the soft order can skip one: paid <= next)
    rooms: list[int]  # RoomsVisited's count (0 for an env without it)


def play_episodes(
    envs: gym.vector.VectorEnv,
    act: Callable[[Any], np.ndarray],
    episodes: int,
    seed: int | None = None,
    noop_max: int = 0,
) -> PlayedEpisodes:
    """Step a :func:`make_envs` env with ``act(obs) -> actions`` until ``episodes`` episodes have ended.

    Returns each ended episode's game score and imitation progress (:class:`PlayedEpisodes`). The score is the raw
    game score that ``RecordEpisodeStatistics`` records (it sits below the imitation reward and the policy's sign
    clipping, so it is the same in every reward mode); under SAME_STEP autoreset it is in ``info["final_info"]``.
    The progress is the index of the next checkpoint the episode had to reach and the number of checkpoints paid
    (steps with ``info["imitation_reward"] > 0``; both 0 without the imitation reward); the rooms are
    :class:`RoomsVisited`'s count (0 for an env without it).
    Each env plays a fixed share of the episodes (env i: ``episodes // n``, one more for the first
    ``episodes % n``): taking whichever episodes end first would favour short ones.
    ``noop_max`` > 0: no-op starts (Mnih et al. 2015): each episode first takes a random number of NOOP steps
    (action 0), from 0 to ``noop_max``, drawn from ``seed``. The game is deterministic (no sticky actions, and ALE
    ignores the reset seed), so without them a deterministic policy plays the same episode every time.
    """
    check_count("noop_max", noop_max, 0, " (0: no no-op starts)")
    n = envs.num_envs
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    taken = np.zeros(n, np.int64)
    paid_now = np.zeros(n, np.int64)  # checkpoints paid so far in each env's running episode
    rng = np.random.default_rng(seed)
    noops = rng.integers(0, noop_max + 1, n)  # each running episode's NOOP steps
    t = np.zeros(n, np.int64)  # steps into each env's running episode
    obs, _ = envs.reset(seed=seed)
    out = PlayedEpisodes([], [], [], [])
    while len(out.scores) < episodes:
        actions = np.array(act(obs))
        actions[t < noops] = 0  # NOOP
        obs, _, term, trunc, info = envs.step(actions)
        t += 1
        # the step that ends an episode pays for that episode (its observation is already the next one's start)
        paid_now += np.asarray(info.get("imitation_reward", np.zeros(n)), np.float64) > 0
        ended = np.flatnonzero(np.logical_or(term, trunc))
        if len(ended) == 0:
            continue
        final = info.get("final_info", {})
        if "episode" not in final:
            raise DreamArcadeError(
                "play_episodes needs the env of make_envs (SAME_STEP autoreset with RecordEpisodeStatistics): "
                "an episode ended without final_info['episode']"
            )
        progress = final.get("imitation_checkpoint", np.zeros(envs.num_envs, np.int64))
        visited = final.get("rooms_visited", np.zeros(envs.num_envs, np.int64))
        for i in ended:
            if taken[i] < quota[i]:
                taken[i] += 1
                out.scores.append(float(final["episode"]["r"][i]))
                out.next_checkpoints.append(int(progress[i]))
                out.checkpoints_paid.append(int(paid_now[i]))
                out.rooms.append(int(visited[i]))
            paid_now[i] = 0
            t[i] = 0
            noops[i] = rng.integers(0, noop_max + 1)
    return out


def evaluate(
    run_dir: str | Path,
    episodes: int = 20,
    deterministic: bool = False,
    seed: int = 1000,
    noop_max: int | None = None,
    max_episode_steps: int | None = None,
    whole_games: bool = False,
) -> dict[str, Any]:
    """Play ``episodes`` episodes with the trained policy: game scores, the rate of episodes that collected the key
    (score >= 100), opened a door (>= 400) and left the first room (visited 2 or more rooms). ``seed`` seeds the
    envs, the no-op starts and the action sampling, so a rerun plays the same episodes. Per episode: ``scores``,
    ``checkpoints_reached`` (the index of the next checkpoint, as :func:`play_episodes` gives it),
    ``checkpoints_paid`` and ``rooms_visited``.
    ``noop_max``: each episode starts with 0 to ``noop_max`` NOOP steps (:func:`play_episodes`). Default: 30 for a
    ``deterministic`` policy, whose episodes would otherwise all be the same one (the game is deterministic), and 0
    for the sampled policy, whose sampling already varies them.
    The episodes are those of training (``imitation_config.json``) unless ``max_episode_steps`` (the cut-off) or
    ``whole_games`` (play on after a lost life, for a ``life_loss_terminal`` run) say otherwise; the result records
    both."""
    with input_checks():  # the request and the run directory; not the episodes
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}.")
        if noop_max is None:
            noop_max = 30 if deterministic else 0
        check_count("noop_max", noop_max, 0, " (0: no no-op starts)")  # before the model loads
        if max_episode_steps is not None:
            check_count("--max-episode-steps", max_episode_steps, 1, " (agent steps per evaluation episode)")
        run_dir = Path(run_dir)
        cfg = _load_config(run_dir)
        cfg.num_envs = min(check_count("num_envs", cfg.num_envs, 1), episodes)
        if max_episode_steps is not None:
            cfg.max_episode_steps = max_episode_steps
        if whole_games:
            cfg.life_loss_terminal = False
        torch.manual_seed(seed)  # the policy's action sampling: the same seed plays the same episodes
        envs = make_envs(cfg)
        try:  # the policy must read the env imitation_config.json rebuilds (a hand-edited reward kind did not)
            agent, _, _ = load_agent(run_dir / "checkpoint")
            hint = (
                f"The envs are rebuilt from '{run_dir / 'imitation_config.json'}': it must hold the settings the run "
                "was trained with (reward, observe_similarity, ...)."
            )
            spaces = (envs.single_observation_space, envs.single_action_space)
            check_agent_fits(agent, *spaces, str(run_dir / "checkpoint"), hint=hint)
        except BaseException:
            envs.close()
            raise
    agent.eval()

    def act(obs: Any) -> np.ndarray:
        with torch.no_grad():
            a, _, _, _, _ = agent.get_action_and_value(obs_to_tensor(obs, "cpu"), deterministic=deterministic)
        return a.numpy()

    try:
        played = play_episodes(envs, act, episodes, seed, noop_max)
    finally:
        envs.close()
    s = np.array(played.scores)
    return {
        "episodes": episodes,
        "deterministic": deterministic,
        "noop_max": noop_max,
        "max_episode_steps": cfg.max_episode_steps,
        "life_loss_terminal": cfg.life_loss_terminal,
        "mean_score": float(s.mean()),
        "max_score": float(s.max()),
        **episode_rates(played.scores, played.rooms),
        "scores": played.scores,
        "checkpoints_reached": played.next_checkpoints,
        "checkpoints_paid": played.checkpoints_paid,
        "rooms_visited": played.rooms,
    }


def episode_rates(scores: list[float], rooms: list[int]) -> dict[str, float]:
    """The share of episodes that got the key (score >= 100), opened a door too (>= 400: the key's 100 and a door's
    300) and left the first room (visited at least 2 rooms).

    >>> episode_rates([0, 100, 300, 400], [1, 1, 2, 3])
    {'key_rate': 0.75, 'door_rate': 0.25, 'left_room_rate': 0.5}
    """
    s, r = np.asarray(scores, np.float64), np.asarray(rooms)
    return {
        "key_rate": float((s >= 100).mean()),
        "door_rate": float((s >= 400).mean()),
        "left_room_rate": float((r >= 2).mean()),
    }


def _save_config(run_dir: Path, cfg: ImitationConfig) -> None:
    d = dataclasses.asdict(cfg)
    atomic_write_text(run_dir / "imitation_config.json", json.dumps(d, indent=2))


def _load_config(run_dir: Path) -> ImitationConfig:
    p = run_dir / "imitation_config.json"
    if not p.is_file():
        raise DreamArcadeError(f"'{run_dir}' has no imitation_config.json: pass a run directory written by `train`.")
    d = read_json_object(p)
    try:
        ppo = PPOConfig(**d["ppo"])
        return ImitationConfig(**{k: v for k, v in d.items() if k != "ppo"}, ppo=ppo)
    except TypeError as exc:  # a field of another version, or one edited by hand
        raise CheckpointError(f"'{p}' does not describe an imitation run ({exc}): pass a run of `train`.") from exc


@releases_run_dirs  # the run directory's claim ends with the run, also when it raises
def train(cfg: ImitationConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Any:
    """Train PPO with the chosen reward; logs, checkpoints and a learning curve go to ``run_dir``."""
    with input_checks():  # the settings, the run directory and the envs; not the training itself
        run_dir = Path(run_dir)
        # saved absolute: `eval` and `--resume` run from another directory must find the same bundle
        cfg = dataclasses.replace(cfg, asset_dir=_absolute(cfg.asset_dir))
        if not resume:
            check_run_dir_free(run_dir)  # before imitation_config.json is written: never replace another run's
        elif checkpoint_exists(run_dir / "checkpoint") and not (run_dir / "imitation_config.json").is_file():
            raise CheckpointError(
                f"--resume: '{run_dir}' holds a checkpoint but no imitation_config.json, so the settings it was "
                "trained with cannot be checked. Restore the file, or train into a new run directory."
            )
        elif (run_dir / "imitation_config.json").is_file():
            saved = _load_config(run_dir)  # evaluate() rebuilds the envs from it: the reward must stay what was trained
            saved.asset_dir = _absolute(saved.asset_dir)  # a run saved before paths were made absolute
            changed = {
                f.name: (getattr(saved, f.name), getattr(cfg, f.name))
                for f in dataclasses.fields(ImitationConfig)
                if f.name not in ("ppo", "num_envs", "asset_dir") and getattr(saved, f.name) != getattr(cfg, f.name)
            }
            if _bundle(saved.asset_dir) != _bundle(cfg.asset_dir):  # None is the bundled one, named or not
                changed["asset_dir"] = (saved.asset_dir, cfg.asset_dir)
            if saved.ppo.seed != cfg.ppo.seed:  # a resumed run goes on with its checkpoint's random streams
                changed["seed"] = (saved.ppo.seed, cfg.ppo.seed)
            if changed:
                diff = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                raise DreamArcadeError(
                    f"--resume of '{run_dir}' with other env, reward or seed settings than it was trained with "
                    f"({diff}). Resume with the run's settings (see its imitation_config.json), or train into a new "
                    "run directory."
                )
        check_threshold(cfg.threshold, "--threshold")
        check_count("--num-envs", cfg.num_envs, 1)
        check_count("--num-steps", cfg.ppo.num_steps, 1)
        batch = cfg.num_envs * cfg.ppo.num_steps
        if batch < cfg.ppo.num_minibatches:  # PPOConfig's message names a flag this CLI does not have
            raise ValueError(
                f"--num-envs x --num-steps = {batch} steps per update, fewer than the {cfg.ppo.num_minibatches} "
                "minibatches each update is split into: use more envs or steps"
            )
        ppo = dataclasses.replace(cfg.ppo, num_envs=cfg.num_envs)
        ppo.validate()  # before anything is written: --num-envs 0 left a config behind and crashed in the vector env
        envs = make_envs(cfg)  # refuses bad env settings (--max-episode-steps 0) before the run directory is touched
        try:
            claim_run_dir(run_dir)  # before the config is written: a refused second process must not replace it
            _save_config(run_dir, cfg)
        except BaseException:
            envs.close()
            raise
    return train_ppo(envs, ppo, run_dir, resume=resume, progress=progress)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def _bundle(path: str | None) -> str:
    """The reward bundle a run uses, as an absolute path (None: the bundled Montezuma one)."""
    from dreamarcade.envs.montezuma_imitation import ASSET_DIR

    return str(Path(path or ASSET_DIR).resolve())


def _finite(text: str, at_least: float | None = None) -> float:
    """argparse type of ``--threshold``: a finite number (NaN pays nothing and can never be resumed); with
    ``at_least``, also no smaller than it."""
    value = float(text)
    if not math.isfinite(value) or (at_least is not None and value < at_least):
        bound = "" if at_least is None else f" >= {at_least:g}"
        raise argparse.ArgumentTypeError(f"must be a finite number{bound}, got {text}")
    return value


# train flag -> (ImitationConfig field, PPOConfig field): what a flag sets; on --resume, the flags not given keep the
# run's saved values instead of the defaults
_TRAIN_FLAGS = {
    "reward": ("reward", None),
    "total_timesteps": (None, "total_timesteps"),
    "num_envs": ("num_envs", "num_envs"),
    "num_steps": (None, "num_steps"),
    "learning_rate": (None, "learning_rate"),
    "ent_coef": (None, "ent_coef"),
    "threshold": ("threshold", None),
    "distinct_margin": ("distinct_margin", None),
    "embed_every": ("embed_every", None),
    "max_episode_steps": ("max_episode_steps", None),
    "life_loss_terminal": ("life_loss_terminal", None),
    "game_reward_scale": ("game_reward_scale", None),
    "count_bonus": ("count_bonus", None),
    "sil_coef": (None, "sil_coef"),
    "sil_episodes": (None, "sil_episodes"),
    "asset_dir": ("asset_dir", None),
    "seed": (None, "seed"),
    "device": (None, "device"),
}


# flags of settings a reward kind does not use: "game" pays no imitation reward, "imitation_only" no game reward
_UNUSED = {
    "game": ("threshold", "distinct_margin", "embed_every", "no_observe_similarity", "asset_dir"),
    "imitation_only": ("game_reward_scale",),
}


def _resumed_config(saved: ImitationConfig, args: argparse.Namespace, given: set[str]) -> ImitationConfig:
    """The saved run's config with only the flags written out on this command line applied."""
    top: dict[str, Any] = {}
    ppo: dict[str, Any] = {}
    for flag, (field_, ppo_field) in _TRAIN_FLAGS.items():
        if flag in given:
            if field_ is not None:
                top[field_] = getattr(args, flag)
            if ppo_field is not None:
                ppo[ppo_field] = getattr(args, flag)
    if "no_observe_similarity" in given:
        top["observe_similarity"] = False
    return dataclasses.replace(saved, **top, ppo=dataclasses.replace(saved.ppo, **ppo))


def _non_negative(text: str) -> float:
    """argparse type of ``--distinct-margin``, ``--game-reward-scale`` and ``--count-bonus``: a finite number >= 0."""
    return _finite(text, at_least=0.0)


def _margin(text: str) -> float | None:
    """argparse type of ``--distinct-margin``: a finite number >= 0, or ``none`` for one threshold (the paper's)."""
    return None if text.strip().lower() == "none" else _non_negative(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dreamarcade.baselines imitation",
        description="PPO on Montezuma's Revenge with the YouTube imitation reward (or the game reward only).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    # no abbreviated flags: --resume keeps the run's value of every flag not written out in full (given_flags)
    t = sub.add_parser("train", help="train an agent", allow_abbrev=False)
    d = ImitationConfig()
    t.add_argument("--reward", choices=REWARDS, default=d.reward)
    t.add_argument("--run-dir", default=None, help="default runs/imitation/agent_<reward>")
    t.add_argument("--total-timesteps", type=int, default=d.ppo.total_timesteps)
    t.add_argument("--num-envs", type=int, default=d.num_envs)
    t.add_argument("--num-steps", type=int, default=d.ppo.num_steps)
    t.add_argument("--learning-rate", type=float, default=d.ppo.learning_rate)
    t.add_argument("--ent-coef", type=float, default=d.ppo.ent_coef)
    t.add_argument("--threshold", type=_finite, default=d.threshold)
    t.add_argument(
        "--distinct-margin",
        type=_margin,
        default=d.distinct_margin,
        help="per-checkpoint thresholds: raise a checkpoint's threshold to its similarity to the demo's earlier "
        f"frames plus this margin (default {d.distinct_margin}, not in the paper; 'none': one threshold for all, "
        "as in the paper)",
    )
    t.add_argument(
        "--embed-every",
        type=int,
        default=d.embed_every,
        help="embed the agent's frames every k-th step: faster, but a checkpoint can then be missed (default 1)",
    )
    t.add_argument("--max-episode-steps", type=int, default=d.max_episode_steps)
    t.add_argument("--no-observe-similarity", action="store_true")
    t.add_argument(
        "--life-loss-terminal",
        action=argparse.BooleanOptionalAction,
        default=d.life_loss_terminal,
        help="end the episode when a life is lost (default: no, the episode goes on with the next life)",
    )
    t.add_argument(
        "--game-reward-scale",
        type=_non_negative,
        default=d.game_reward_scale,
        help="weight of the sign-clipped game reward (default 1: imitation + env as in the paper)",
    )
    t.add_argument(
        "--count-bonus",
        type=_non_negative,
        default=d.count_bonus,
        help="add a count-based exploration bonus beta/sqrt(n) for the frame's 11x8 cell seen n times, with this "
        "beta (e.g. 0.1; default 0: none, as in the paper)",
    )
    t.add_argument(
        "--sil-coef",
        type=_non_negative,
        default=d.ppo.sil_coef,
        help="self-imitation (Oh et al. 2018): also train on the best episodes' steps that beat the critic, with "
        f"this weight (default {d.ppo.sil_coef:g}; 0: none, as in the paper)",
    )
    t.add_argument(
        "--sil-episodes",
        type=int,
        default=d.ppo.sil_episodes,
        help=f"how many of the best episodes self-imitation keeps (default {d.ppo.sil_episodes})",
    )
    t.add_argument("--asset-dir", default=None, help="a reward bundle (default: the bundled Montezuma one)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--device", default="cpu")
    t.add_argument("--resume", action="store_true")
    p.train_parser = t  # type: ignore[attr-defined]  (main reads which train flags were given)
    e = sub.add_parser("eval", help="evaluate a trained agent (game score, key and door rates)")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=20)
    e.add_argument("--deterministic", action="store_true", help="take the most likely action instead of sampling")
    e.add_argument(
        "--noop-max",
        type=int,
        default=None,
        help="start each episode with a random 0 to N NOOP steps (default: 30 with --deterministic, as the game "
        "is deterministic and every episode would be the same; 0 otherwise)",
    )
    e.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help="cut each episode after N agent steps (default: the run's training limit, in the JSON)",
    )
    e.add_argument(
        "--whole-games",
        action="store_true",
        help="play on after a lost life (for a run trained with --life-loss-terminal, whose episodes are one life)",
    )
    e.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    flush_denormals()
    torch.set_num_threads(1)
    try:
        if args.command == "train":
            with input_checks():  # the flags and, on --resume, the run's saved settings
                ppo = dataclasses.replace(
                    _atari_ppo(),
                    total_timesteps=args.total_timesteps,
                    num_steps=args.num_steps,
                    learning_rate=args.learning_rate,
                    ent_coef=args.ent_coef,
                    sil_coef=args.sil_coef,
                    sil_episodes=args.sil_episodes,
                    seed=args.seed,
                    device=args.device,
                    num_envs=args.num_envs,
                )
                cfg = ImitationConfig(
                    reward=args.reward,
                    threshold=args.threshold,
                    distinct_margin=args.distinct_margin,
                    embed_every=args.embed_every,
                    observe_similarity=not args.no_observe_similarity,
                    max_episode_steps=args.max_episode_steps,
                    life_loss_terminal=args.life_loss_terminal,
                    game_reward_scale=args.game_reward_scale,
                    count_bonus=args.count_bonus,
                    num_envs=args.num_envs,
                    asset_dir=args.asset_dir,
                    ppo=ppo,
                )
                run_dir = args.run_dir or f"runs/imitation/agent_{args.reward}"
                given = given_flags(parser.train_parser, argv)
                if args.resume and (Path(run_dir) / "imitation_config.json").is_file():
                    # the flags not written out keep the run's own settings (not the defaults): a resume that does
                    # not repeat --seed or --learning-rate continues the run it resumes
                    cfg = _resumed_config(_load_config(Path(run_dir)), args, given)
                unused = [f"--{f.replace('_', '-')}" for f in _UNUSED.get(cfg.reward, ()) if f in given]
                if unused:  # they were saved in imitation_config.json and did nothing
                    raise ValueError(
                        f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect with --reward "
                        f"{cfg.reward}: leave {'it' if len(unused) == 1 else 'them'} out"
                    )
            r = train(cfg, run_dir, resume=args.resume)
            result = {"run_dir": str(run_dir), "global_step": r.global_step, "sps": r.steps_per_second}
            print(json.dumps({**result, "stopped_early": r.stopped_early}))  # stopped: resume it with --resume
        else:
            if args.json:  # before the episodes are played: a path that cannot be written would lose them
                with input_checks():
                    check_output_file(args.json, "--json")
            out = evaluate(
                args.run_dir,
                args.episodes,
                args.deterministic,
                noop_max=args.noop_max,
                max_episode_steps=args.max_episode_steps,
                whole_games=args.whole_games,
            )
            print(json_text(out))
            if args.json:
                atomic_write_text(args.json, json_text(out, indent=2))
        return 0
    except Exception as exc:
        return input_error_status(exc)


if __name__ == "__main__":
    raise SystemExit(main())
