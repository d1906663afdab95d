"""``MontezumaImitation-v0``: Montezuma's Revenge with the one-shot YouTube imitation reward and a bundled model.

The bundle in ``dreamarcade/assets/montezuma_imitation`` (safetensors + JSON) holds a TDC+CMC embedding trained
by this project on three domain-shifted demonstration videos and the checkpoint trajectory of a fourth
(see the README's Video imitation section for how they were made).

The env is ``ALE/MontezumaRevenge-v5`` with frameskip 4 (15 Hz, the rate the videos are embedded at) and, by
default, no sticky actions (``repeat_action_probability=0.0``; the game is deterministic, so then a reset's seed
changes nothing: the agent's random no-op starts, or ``repeat_action_probability=0.25``, vary it), wrapped in
:class:`~dreamarcade.wrappers.imitation.YouTubeImitationReward`. Observations are the RGB frames (210, 160, 3)
(or a Dict with the checkpoint similarities when ``observe_similarity=True``). ``info["episode"]`` (from
RecordEpisodeStatistics, below the reward wrapper) holds the game score; a recorder put around the env (SB3's
``Monitor``, which ``make_vec_env`` adds) replaces it with the return the agent was paid, imitation reward
included: the game score of a step is also in ``info["env_reward"]``. The registered 4500-step limit falls on
the same step as ALE's own cap (18,000 frames); to end episodes sooner, lower ``max_num_frames_per_episode``: a
``max_episode_steps`` given to ``gym.make`` truncates above the statistics, so those episodes carry no
``info["episode"]`` (``gym.make_vec`` applies its limit below them).

Example:
    >>> import gymnasium as gym
    >>> import dreamarcade
    >>> env = gym.make("MontezumaImitation-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (210, 160, 3)
    >>> venv = gym.make_vec("MontezumaImitation-v0", num_envs=2, vectorization_mode="vector_entry_point")
    >>> venv.reset(seed=0)[0].shape
    (2, 210, 160, 3)
    >>> env.close(); venv.close()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym

from dreamarcade.envs.atari import check_repeat_action_probability
from dreamarcade.errors import check_count, require

__all__ = ["ASSET_DIR", "make_montezuma_imitation", "make_montezuma_imitation_vector"]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "montezuma_imitation"


def _base_env(
    repeat_action_probability: float,
    frameskip: int,
    render_mode: str | None,
    max_frames: int,
    max_episode_steps: int | None = None,
) -> gym.Env:
    require("ale_py", "Montezuma's Revenge", extra="atari")
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(
        "ALE/MontezumaRevenge-v5",
        frameskip=frameskip,
        repeat_action_probability=float(repeat_action_probability),
        max_num_frames_per_episode=max_frames,
        render_mode=render_mode,
    )
    if max_episode_steps is not None:  # below the statistics, so a truncated episode still reports its score
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    return gym.wrappers.RecordEpisodeStatistics(env)


def _warn_if_off_rate(frameskip: Any, embedder: Any) -> None:
    """Warn when the agent's frame rate (the ALE runs at 60 frames/s) is not the rate the embedding's videos were
    read at: each frame stack then spans another stretch of time than the demonstration's stacks."""
    import warnings

    rate = 60.0 / frameskip if isinstance(frameskip, (int, float)) and frameskip > 0 else None
    if rate is not None and abs(rate - embedder.cfg.fps) > 1e-6:
        warnings.warn(
            f"frameskip={frameskip} steps the agent at {rate:g} frames/s, but the embedding read its videos at "
            f"{embedder.cfg.fps:g}: its frame stacks span another stretch of time than the demonstration's. "
            f"frameskip={60 / embedder.cfg.fps:g} matches it.",
            stacklevel=3,
        )


def make_montezuma_imitation(
    mode: str = "add",
    threshold: float = 0.5,
    reward: float = 0.5,
    skip: int = 1,
    observe_similarity: bool = False,
    repeat_action_probability: float = 0.0,
    frameskip: int = 4,
    max_num_frames_per_episode: int = 18_000,
    render_mode: str | None = "rgb_array",
    asset_dir: str | os.PathLike[str] | None = None,
    embed_every: int = 1,
    embed_threads: int | None = None,
    embed_precision: str = "fp32",
    distinct_margin: float | None = None,
    embed_backend: str = "auto",
) -> gym.Env:
    """One Montezuma env with the bundled imitation reward (see module docstring).

    ``embed_every`` (default 1 = every step, the paper's reward), ``embed_threads`` (threads per embedding
    pass; None keeps torch's setting), ``embed_precision`` ("fp32", or "bf16": a faster, approximate embedding
    on CPUs with AMX) and ``embed_backend`` ("auto": ONNX Runtime when installed, else torch; see
    :class:`~dreamarcade.reward_models.checkpoints.FrameStackEmbedder`) are passed to the wrapper / embedder.
    """
    from dreamarcade.wrappers.imitation import YouTubeImitationReward, load_imitation_model

    check_repeat_action_probability(repeat_action_probability)  # before the model loads
    embedder, checkpoints = load_imitation_model(
        asset_dir or ASSET_DIR, num_threads=embed_threads, precision=embed_precision, backend=embed_backend
    )
    _warn_if_off_rate(frameskip, embedder)
    env = _base_env(repeat_action_probability, frameskip, render_mode, max_num_frames_per_episode)
    return YouTubeImitationReward(
        env,
        embedder,
        checkpoints,
        threshold=threshold,
        reward=reward,
        skip=skip,
        mode=mode,
        observe_similarity=observe_similarity,
        embed_every=embed_every,
        distinct_margin=distinct_margin,
    )


def make_montezuma_imitation_vector(
    num_envs: int = 1,
    mode: str = "add",
    threshold: float = 0.5,
    reward: float = 0.5,
    skip: int = 1,
    observe_similarity: bool = False,
    repeat_action_probability: float = 0.0,
    frameskip: int = 4,
    max_num_frames_per_episode: int = 18_000,
    render_mode: str | None = "rgb_array",
    asset_dir: str | os.PathLike[str] | None = None,
    autoreset_mode: Any = None,
    max_episode_steps: int | None = None,
    embed_every: int = 1,
    embed_threads: int | None = None,
    embed_precision: str = "fp32",
    distinct_margin: float | None = None,
    embed_backend: str = "auto",
) -> gym.vector.VectorEnv:
    """``num_envs`` envs in a SyncVectorEnv; all frames embedded in one batched pass per step.

    ``embed_threads``: threads for the batched embedding pass (None keeps torch's setting);
    ``embed_precision``: "fp32", or "bf16"; ``embed_backend``: "auto", "torch" or "onnxruntime" (see
    :func:`make_montezuma_imitation`);
    ``embed_every``: see :class:`~dreamarcade.wrappers.imitation.YouTubeImitationRewardVector` (default 1).
    """
    from dreamarcade.wrappers.imitation import YouTubeImitationRewardVector, load_imitation_model

    check_count("num_envs", num_envs, 1)  # before the model loads: 0 failed inside SyncVectorEnv with an IndexError
    check_repeat_action_probability(repeat_action_probability)  # before the model loads
    embedder, checkpoints = load_imitation_model(
        asset_dir or ASSET_DIR, num_threads=embed_threads, precision=embed_precision, backend=embed_backend
    )
    _warn_if_off_rate(frameskip, embedder)

    def thunk() -> gym.Env:
        return _base_env(
            repeat_action_probability, frameskip, render_mode, max_num_frames_per_episode, max_episode_steps
        )

    venv = gym.vector.SyncVectorEnv(
        [thunk] * num_envs, autoreset_mode=autoreset_mode or gym.vector.AutoresetMode.NEXT_STEP
    )
    return YouTubeImitationRewardVector(
        venv,
        embedder,
        checkpoints,
        threshold=threshold,
        reward=reward,
        skip=skip,
        mode=mode,
        observe_similarity=observe_similarity,
        embed_every=embed_every,
        distinct_margin=distinct_margin,
    )
