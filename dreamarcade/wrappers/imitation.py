"""``YouTubeImitationReward``: reward an agent for reaching the checkpoints of one embedded demonstration video.

Aytar et al. 2018, section 5. Every step, the agent's last ``stack`` RGB frames are processed exactly like the
demonstration video's frames (black-border crop detected with the same function, resize to the embedding's
frame size, centre crop), embedded, centred with the demo's mean and L2-normalised. When the similarity to one
of the next ``skip + 1`` checkpoints exceeds ``threshold`` (0.5) the agent gets ``reward`` (0.5) once for it,
and the following checkpoints become the candidates. ``mode="add"`` adds this to the game reward,
``"replace"`` discards the game reward (the paper reports both).

``info`` keys: ``imitation_reward``, ``imitation_checkpoint`` (next checkpoint index),
``imitation_matched`` (checkpoint matched this step, or -1), ``imitation_similarity`` (best similarity among
the candidates), ``env_reward`` (the game's reward). ``observe_similarity=True`` makes the observation a Dict
``{"obs": ..., "similarity": (skip + 1,) float32}``: the paper's similarities to the next checkpoints that the
agent's network sees.

:class:`YouTubeImitationRewardVector` does the same around a Gymnasium vector env and embeds all envs' frames
in one batched forward pass.

Example:
    >>> import gymnasium as gym
    >>> import dreamarcade
    >>> env = gym.make("MontezumaImitation-v0")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs, r, term, trunc, info = env.step(0)  # doctest: +SKIP
    >>> info["imitation_checkpoint"]  # doctest: +SKIP
    0
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.reward_models.checkpoints import CheckpointTracker, CheckpointTrajectory, Embedder, FrameStackEmbedder
from dreamarcade.reward_models.video import CropBox, detect_borders, process_frame

__all__ = ["YouTubeImitationReward", "YouTubeImitationRewardVector", "load_imitation_model"]


def load_imitation_model(directory: str | os.PathLike[str]) -> tuple[FrameStackEmbedder, CheckpointTrajectory]:
    """Load ``directory/embedding`` (tdc_cmc) and ``directory/checkpoints`` (imitation_checkpoints)."""
    from pathlib import Path

    d = Path(directory)
    return FrameStackEmbedder.load(d / "embedding"), CheckpointTrajectory.load(d / "checkpoints")


def _rgb_frame(obs: Any, env: Any) -> np.ndarray:
    if isinstance(obs, np.ndarray) and obs.ndim == 3 and obs.shape[-1] == 3:
        return obs
    if isinstance(obs, dict) and "image" in obs:
        return obs["image"]
    frame = env.render()
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3):
        raise ValueError(
            "YouTubeImitationReward needs RGB frames: the observation is not an (H, W, 3) image, so the env must be "
            "made with render_mode='rgb_array'."
        )
    return frame


def _check_compatible(embedder: Embedder, checkpoints: CheckpointTrajectory) -> None:
    if checkpoints.embeddings.shape[1] != embedder.embed_dim:
        raise ValueError(
            f"the checkpoint trajectory has {checkpoints.embeddings.shape[1]}-d embeddings but the embedder outputs "
            f"{embedder.embed_dim}-d: build the checkpoints with the same embedding"
        )


def _resolve_crop(crop: str | CropBox | None) -> CropBox | None | str:
    if crop == "auto" or crop is None or isinstance(crop, CropBox):
        return crop
    if isinstance(crop, (list, tuple)) and len(crop) == 4:
        return CropBox(*map(int, crop))
    raise ValueError(f"crop must be 'auto', None, a CropBox or (top, bottom, left, right), got {crop!r}")


class _Stream:
    """One env's frame ring buffer + checkpoint tracker (shared by the single and vector wrappers)."""

    def __init__(self, embedder: Embedder, n: int, threshold: float, reward: float, skip: int) -> None:
        s = embedder.frame_size
        self.frames = np.zeros((embedder.stack, s, s, 3), np.uint8)
        self.tracker = CheckpointTracker(n, threshold, reward, skip)

    def reset(self, processed: np.ndarray) -> None:
        self.frames[:] = processed  # like the video side, a stack before the first frame repeats it
        self.tracker.reset()

    def push(self, processed: np.ndarray) -> None:
        self.frames[:-1] = self.frames[1:]
        self.frames[-1] = processed


class _ImitationCore:
    def _setup(
        self,
        embedder: Embedder,
        checkpoints: CheckpointTrajectory,
        threshold: float,
        reward: float,
        skip: int,
        mode: str,
        crop: Any,
        observe_similarity: bool,
    ) -> None:
        if mode not in ("add", "replace"):
            raise ValueError(
                f"mode must be 'add' (game + imitation reward) or 'replace' (imitation only), got {mode!r}"
            )
        _check_compatible(embedder, checkpoints)
        self.embedder, self.checkpoints = embedder, checkpoints
        self.threshold, self.imitation_reward, self.skip, self.mode = float(threshold), float(reward), int(skip), mode
        self.crop = _resolve_crop(crop)
        self.observe_similarity = bool(observe_similarity)
        self._ck = np.asarray(checkpoints.embeddings, np.float32)
        self._size = (embedder.frame_size, embedder.frame_size)

    def _process(self, frame: np.ndarray) -> np.ndarray:
        if self.crop == "auto":  # detected once, on the first frame, with the function the videos use
            self.crop = detect_borders(np.asarray(frame))
        return process_frame(np.asarray(frame), self.crop, self._size)

    def _similarities(self, stacks: np.ndarray) -> np.ndarray:
        e = self.checkpoints.centre(self.embedder(stacks))
        return e @ self._ck.T  # (B, n): centred cosine similarity to every checkpoint

    def _next_sims(self, sims: np.ndarray, tracker: CheckpointTracker) -> np.ndarray:
        out = np.full(self.skip + 1, -1.0, np.float32)  # -1 past the last checkpoint
        cand = np.arange(tracker.next, min(tracker.next + self.skip + 1, tracker.n))
        out[: len(cand)] = sims[cand]
        return out


class YouTubeImitationReward(gym.Wrapper, _ImitationCore):
    """Add (or substitute) the one-shot imitation reward of a demonstration's checkpoints.

    Args:
        env: any env with RGB frames (an (H, W, 3) observation, a Dict with "image", or render_mode="rgb_array").
        embedder: maps (B, stack, S, S, 3) uint8 stacks to embeddings (e.g. :class:`FrameStackEmbedder`).
        checkpoints: the demo's :class:`CheckpointTrajectory` (built with the same embedder).
        threshold: similarity above which a checkpoint is reached (paper: 0.5).
        reward: paid once per checkpoint (paper: 0.5).
        skip: how many checkpoints may be skipped (paper: 1, i.e. candidates n+1 and n+2).
        mode: "add" (game + imitation) or "replace" (imitation only).
        crop: "auto" (detect black borders on the first frame, as for videos), None, or a CropBox.
        observe_similarity: append the similarities to the next ``skip + 1`` checkpoints to the observation.

    Example:
        >>> import gymnasium as gym
        >>> from dreamarcade.wrappers.imitation import YouTubeImitationReward, load_imitation_model
        >>> embedder, ckpts = load_imitation_model("dreamarcade/assets/montezuma_imitation")  # doctest: +SKIP
        >>> env = YouTubeImitationReward(gym.make("ALE/MontezumaRevenge-v5"), embedder, ckpts)  # doctest: +SKIP
    """

    def __init__(
        self,
        env: gym.Env,
        embedder: Embedder,
        checkpoints: CheckpointTrajectory,
        threshold: float = 0.5,
        reward: float = 0.5,
        skip: int = 1,
        mode: str = "add",
        crop: str | CropBox | None = "auto",
        observe_similarity: bool = False,
    ) -> None:
        gym.Wrapper.__init__(self, env)
        self._setup(embedder, checkpoints, threshold, reward, skip, mode, crop, observe_similarity)
        self._stream = _Stream(embedder, len(checkpoints), threshold, reward, skip)
        if observe_similarity:
            self.observation_space = spaces.Dict(
                {
                    "obs": env.observation_space,
                    "similarity": spaces.Box(-1.0, 1.0, (self.skip + 1,), np.float32),
                }
            )

    def _observe(self, obs: Any, sims_next: np.ndarray) -> Any:
        if self.observe_similarity:
            return {"obs": obs, "similarity": np.clip(sims_next, -1.0, 1.0).astype(np.float32)}
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._stream.reset(self._process(_rgb_frame(obs, self.env)))
        sims = self._similarities(self._stream.frames[None])[0]
        nxt = self._next_sims(sims, self._stream.tracker)
        info.update(
            imitation_reward=0.0,
            imitation_checkpoint=0,
            imitation_matched=-1,
            imitation_similarity=float(nxt.max()),
        )
        return self._observe(obs, nxt), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        self._stream.push(self._process(_rgb_frame(obs, self.env)))
        sims = self._similarities(self._stream.frames[None])[0]
        tracker = self._stream.tracker
        best = float(self._next_sims(sims, tracker).max())
        r_imit, matched = tracker.update(sims)
        nxt = self._next_sims(sims, tracker)
        reward = r_imit + (float(env_reward) if self.mode == "add" else 0.0)
        info.update(
            imitation_reward=r_imit,
            imitation_checkpoint=tracker.next,
            imitation_matched=matched,
            imitation_similarity=best,
            env_reward=float(env_reward),
        )
        return self._observe(obs, nxt), reward, terminated, truncated, info


class YouTubeImitationRewardVector(gym.vector.VectorWrapper, _ImitationCore):
    """The imitation reward around a vector env: one batched embedding pass for all sub-envs per step.

    Same arguments and semantics as :class:`YouTubeImitationReward`; the vector env's observation must be a
    batch of RGB frames (N, H, W, 3) (e.g. ``gym.vector.SyncVectorEnv`` of ALE envs). Works with the
    ``NEXT_STEP`` (Gymnasium's default) and ``SAME_STEP`` autoreset modes; a sub-env's tracker restarts
    with its new episode. ``info`` values are arrays with one entry per sub-env.

    Example:
        >>> import gymnasium as gym
        >>> venv = gym.make_vec(  # doctest: +SKIP
        ...     "MontezumaImitation-v0", num_envs=4, vectorization_mode="vector_entry_point")
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        embedder: Embedder,
        checkpoints: CheckpointTrajectory,
        threshold: float = 0.5,
        reward: float = 0.5,
        skip: int = 1,
        mode: str = "add",
        crop: str | CropBox | None = "auto",
        observe_similarity: bool = False,
    ) -> None:
        gym.vector.VectorWrapper.__init__(self, env)
        self._setup(embedder, checkpoints, threshold, reward, skip, mode, crop, observe_similarity)
        space = env.single_observation_space
        if not (isinstance(space, spaces.Box) and len(space.shape) == 3 and space.shape[-1] == 3):
            raise ValueError(
                f"YouTubeImitationRewardVector needs RGB observations (H, W, 3) from each sub-env, got {space}"
            )
        mode_ = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode_ not in (gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset mode {mode_} is not supported: use NEXT_STEP or SAME_STEP")
        self._autoreset = mode_
        self._streams = [_Stream(embedder, len(checkpoints), threshold, reward, skip) for _ in range(self.num_envs)]
        self._needs_reset = np.zeros(self.num_envs, bool)
        if observe_similarity:
            self.single_observation_space = spaces.Dict(
                {"obs": space, "similarity": spaces.Box(-1.0, 1.0, (self.skip + 1,), np.float32)}
            )
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def _observe(self, obs: np.ndarray, nxt: np.ndarray) -> Any:
        if self.observe_similarity:
            return {"obs": obs, "similarity": np.clip(nxt, -1.0, 1.0).astype(np.float32)}
        return obs

    def _stacks(self) -> np.ndarray:
        return np.stack([s.frames for s in self._streams])

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        for i, s in enumerate(self._streams):
            s.reset(self._process(obs[i]))
        self._needs_reset[:] = False
        sims = self._similarities(self._stacks())
        nxt = np.stack([self._next_sims(sims[i], s.tracker) for i, s in enumerate(self._streams)])
        info = dict(info)
        info.update(
            imitation_reward=np.zeros(self.num_envs),
            imitation_checkpoint=np.zeros(self.num_envs, np.int64),
            imitation_matched=np.full(self.num_envs, -1, np.int64),
            imitation_similarity=nxt.max(1).astype(np.float64),
        )
        return self._observe(obs, nxt), info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, env_reward, terminated, truncated, info = self.env.step(actions)
        n = self.num_envs
        fresh = np.zeros(n, bool)  # sub-envs whose obs this step starts a new episode
        if self._autoreset == gym.vector.AutoresetMode.NEXT_STEP:
            fresh = self._needs_reset.copy()
        else:
            fresh = np.logical_or(terminated, truncated)
        for i, s in enumerate(self._streams):
            p = self._process(obs[i])
            if fresh[i]:
                s.reset(p)
            else:
                s.push(p)
        sims = self._similarities(self._stacks())
        r_imit = np.zeros(n)
        matched = np.full(n, -1, np.int64)
        best = np.zeros(n)
        nxt = np.zeros((n, self.skip + 1), np.float32)
        for i, s in enumerate(self._streams):
            best[i] = self._next_sims(sims[i], s.tracker).max()
            if not fresh[i]:  # the reset step of NEXT_STEP autoreset pays nothing, like a reset
                r_imit[i], matched[i] = s.tracker.update(sims[i])
            nxt[i] = self._next_sims(sims[i], s.tracker)
        self._needs_reset = np.logical_or(terminated, truncated)
        env_reward = np.asarray(env_reward, np.float64)
        reward = r_imit + (env_reward if self.mode == "add" else 0.0)
        info = dict(info)
        info.update(
            imitation_reward=r_imit,
            imitation_checkpoint=np.array([s.tracker.next for s in self._streams], np.int64),
            imitation_matched=matched,
            imitation_similarity=best,
            env_reward=env_reward,
        )
        return self._observe(obs, nxt), reward, terminated, truncated, info
