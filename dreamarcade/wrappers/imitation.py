"""``YouTubeImitationReward``: reward an agent for reaching the checkpoints of one embedded demonstration video.

Aytar et al. 2018, section 5. Every step, the agent's last ``stack`` RGB frames are embedded like the
demonstration video's frames: the same :func:`~dreamarcade.reward_models.video.process_frame` (crop, then
area-resize to the embedding's frame size), the same stacking (a stack before an episode's first frame repeats
it), the same centre crop inside the embedder, then centring with the demo's mean and L2 normalisation. The
black-border crop is *detected* differently: the video's is the median over windows sampled across the whole
video; with ``crop="auto"`` the agent's is detected (by the same
:func:`~dreamarcade.reward_models.video.detect_borders`) on the first agent frame that is not all black, and
then kept (frames before it are not cropped). Pass ``crop=`` a :class:`CropBox` to fix it. When the similarity to one
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

Speed. Each env's processed frames live in a ring buffer (one slot written per step, nothing shifted); a
:class:`~dreamarcade.reward_models.checkpoints.FrameStackEmbedder` embeds the ring directly with its fused
inference encoder (same embeddings as the trained encoder up to float32 rounding), and the checkpoint
bookkeeping is vectorised over envs. ``embed_every=k`` (default 1, the paper's reward) is an explicit
fidelity-for-speed trade: an env's frames are embedded only every ``k``-th step since its reset, so a
checkpoint can only be matched (and paid) on those steps; in between the reward is 0, the similarities
(``imitation_similarity`` and the observed ones) are the last embedded frames' similarities to the checkpoints that
are next now (after a match on the embedded step, to the new candidates), and ``info["imitation_embedded"]``
(present only when ``k > 1``) says which steps were embedded.

Example:
    >>> import gymnasium as gym
    >>> import dreamarcade
    >>> env = gym.make("MontezumaImitation-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs, r, term, trunc, info = env.step(0)
    >>> info["imitation_checkpoint"]  # the next checkpoint of the demo to reach
    0
    >>> env.close()
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dreamarcade.errors import CheckpointError, check_count
from dreamarcade.reward_models.checkpoints import (
    CheckpointTrajectory,
    Embedder,
    FrameStackEmbedder,
    candidate_similarities,
    check_threshold,
    distinct_thresholds,
    match_candidates,
)
from dreamarcade.reward_models.inference import ring_to_stacks
from dreamarcade.reward_models.video import BORDER_THRESHOLD, CropBox, detect_borders, process_frame

__all__ = ["YouTubeImitationReward", "YouTubeImitationRewardVector", "load_imitation_model"]


def _check_discrete(space: gym.Space, actions: np.ndarray) -> None:
    """Refuse actions outside a ``Discrete`` space (one per env in ``actions``): ALE indexes its action list with
    them, so -1 played the last action without a word and 18 was an IndexError. Other spaces are the env's to check."""
    if not isinstance(space, spaces.Discrete):
        return
    lo, n = int(space.start), int(space.n)
    ok = actions.dtype.kind in "iu" and bool(np.all((actions >= lo) & (actions < lo + n)))
    if not ok and not all(space.contains(a) for a in actions.tolist()):  # a float 2.0 the space takes still passes
        raise gym.error.InvalidAction(
            f"action {actions.tolist() if actions.size > 1 else actions.tolist()[0]!r} is not in the action space "
            f"{space}; pass an int in [{lo}, {lo + n})"
        )


def _check_discrete_one(space: gym.Space, action: Any) -> None:
    """:func:`_check_discrete` for one env's action, with a fast path for a Python or NumPy integer."""
    if (
        isinstance(action, (int, np.integer))
        and not isinstance(action, bool)
        and isinstance(space, spaces.Discrete)
        and int(space.start) <= action < int(space.start) + int(space.n)
    ):
        return
    _check_discrete(space, np.asarray(action)[None])


def load_imitation_model(
    directory: str | os.PathLike[str],
    fused: bool = True,
    num_threads: int | None = None,
    precision: str = "fp32",
    backend: str = "auto",
) -> tuple[FrameStackEmbedder, CheckpointTrajectory]:
    """Load ``directory/embedding`` (tdc_cmc) and ``directory/checkpoints`` (imitation_checkpoints).

    ``fused``, ``num_threads``, ``precision`` and ``backend`` are passed to :class:`FrameStackEmbedder` (fused
    inference encoder; threads per embedding pass, None keeping torch's setting; "bf16" for a faster, approximate
    embedding on CPUs with AMX; "torch" or "onnxruntime", "auto" taking ONNX Runtime when it is installed).
    """
    from pathlib import Path

    d = Path(directory)
    missing = [f"{n}/" for n in ("embedding", "checkpoints") if not (d / n).is_dir()]
    if missing:  # a wrong path: say what a bundle is, not only that its first file is missing
        raise CheckpointError(
            f"'{d}' is not a reward bundle (no {' or '.join(missing)}): a bundle is a folder with embedding/ and "
            "checkpoints/, as `python -m dreamarcade.reward_models.build_reward ... --out DIR` writes it. Pass such "
            "a folder (asset_dir / --asset-dir), or none for the bundled Montezuma one."
        )
    embedder = FrameStackEmbedder.load(
        d / "embedding", fused=fused, num_threads=num_threads, precision=precision, backend=backend
    )
    return embedder, CheckpointTrajectory.load(d / "checkpoints")


def _is_rgb(frame: Any) -> bool:
    return isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3


def _rgb_frame(obs: Any, env: Any) -> np.ndarray:
    """The env's RGB frame: the observation itself, its ``"image"``, or else ``env.render()``."""
    if _is_rgb(obs):
        return obs
    if isinstance(obs, dict) and _is_rgb(obs.get("image")):
        return obs["image"]
    need = (
        "YouTubeImitationReward needs RGB frames: the observation is not an (H, W, 3) image (nor a Dict with one "
        "under 'image'), so the env must be made with render_mode='rgb_array'"
    )
    try:
        frame = env.render()
    except Exception as exc:  # e.g. ALE without a render mode: say what the wrapper needs, not only why render failed
        raise ValueError(f"{need} (env.render() failed: {exc}).") from exc
    if not _is_rgb(frame):
        raise ValueError(f"{need}.")
    return frame


def _check_compatible(embedder: Embedder, checkpoints: CheckpointTrajectory) -> None:
    if checkpoints.embeddings.shape[1] != embedder.embed_dim:
        raise ValueError(
            f"the checkpoint trajectory has {checkpoints.embeddings.shape[1]}-d embeddings but the embedder outputs "
            f"{embedder.embed_dim}-d: build the checkpoints with the same embedding"
        )
    mine, theirs = getattr(embedder, "fingerprint", None), checkpoints.embedding_fingerprint
    if mine is not None and theirs is not None and mine != theirs:  # same size, other weights: meaningless rewards
        raise ValueError(
            f"the checkpoint trajectory was embedded by another encoder (fingerprint {theirs}) than this embedder's "
            f"({mine}): use the embedding it was built with, or rebuild the checkpoints with this one "
            "(python -m dreamarcade.reward_models.build_reward)"
        )


def _resolve_crop(crop: str | CropBox | None) -> CropBox | None | str:
    if (isinstance(crop, str) and crop == "auto") or crop is None or isinstance(crop, CropBox):
        return crop
    if isinstance(crop, (list, tuple, np.ndarray)) and np.shape(crop) == (4,):
        return CropBox(*(v.item() if isinstance(v, np.generic) else v for v in crop))
    raise ValueError(f"crop must be 'auto', None, a CropBox or (top, bottom, left, right), got {crop!r}")


def _with_masks(info: dict[str, Any], values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """A copy of ``info`` plus ``values``, each with the ``_key`` mask of Gymnasium's vector info convention."""
    out = dict(info)
    for key, value in values.items():
        out[key] = value
        out[f"_{key}"] = mask.copy()
    return out


class _ImitationCore:
    """State and logic shared by the single and vector wrappers, for ``num_envs`` streams at once.

    * ``_ring`` (N, S, S, stack, 3) uint8: each env's last ``stack`` processed frames; the newest is in slot
      ``_newest`` (the same slot for every env: every env writes one frame per step, a reset fills all slots);
    * ``_next`` (N,): index of each env's next checkpoint (the soft-order, pay-once rule of
      :class:`~dreamarcade.reward_models.checkpoints.CheckpointTracker`, through the same
      :func:`~dreamarcade.reward_models.checkpoints.match_candidates` for all envs at once);
    * ``_sims`` (N, n): each env's similarities to every checkpoint at its last embedded step;
    * ``_since`` (N,): steps since each env was last embedded (``embed_every``).
    """

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
        embed_every: int,
        num_envs: int,
        distinct_margin: float | None = None,
    ) -> None:
        if mode not in ("add", "replace"):
            raise ValueError(
                f"mode must be 'add' (game + imitation reward) or 'replace' (imitation only), got {mode!r}"
            )
        check_count("skip", skip, low=0, hint=" (0: only the next checkpoint; the paper's 1 also the one after)")
        check_threshold(threshold)
        # NaN pays NaN; None or a string failed inside float()
        if isinstance(reward, bool) or not isinstance(reward, numbers.Real) or not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward!r}")
        check_count("embed_every", embed_every, hint=" (1 = embed every step)")  # NaN, inf, None: named too
        if len(checkpoints) < 1:
            raise ValueError("a checkpoint trajectory needs at least one checkpoint")
        if skip > len(checkpoints):  # candidates past the end are never paid: skip=10**10 allocated 75 GiB
            raise ValueError(
                f"skip={skip} is more than the trajectory's {len(checkpoints)} checkpoints: use at most "
                f"{len(checkpoints)} (the paper: 1)"
            )
        _check_compatible(embedder, checkpoints)
        self.embedder, self.checkpoints = embedder, checkpoints
        self.threshold, self.imitation_reward, self.skip, self.mode = float(threshold), float(reward), int(skip), mode
        self.distinct_margin = None if distinct_margin is None else float(distinct_margin)
        if self.distinct_margin is None:
            thresholds = np.full(len(checkpoints), self.threshold)
        elif checkpoints.confusion is None:
            raise ValueError(
                "distinct_margin needs the demo's confusion of each checkpoint, which this checkpoint trajectory "
                "lacks (built before it existed): rebuild it with python -m dreamarcade.reward_models.build_reward, "
                "or pass distinct_margin=None (the imitation agent: --distinct-margin none)"
            )
        else:
            thresholds = distinct_thresholds(checkpoints.confusion, self.threshold, self.distinct_margin)
        self.thresholds = thresholds  # (n,) what each checkpoint's similarity must exceed
        self.crop = _resolve_crop(crop)
        self.observe_similarity = bool(observe_similarity)
        self.embed_every = int(embed_every)
        self._ck_t = np.ascontiguousarray(np.asarray(checkpoints.embeddings, np.float32).T)
        s, k = embedder.frame_size, embedder.stack
        self._size = (s, s)
        self._n = len(checkpoints)
        self._ring = np.zeros((num_envs, s, s, k, 3), np.uint8)
        self._newest = k - 1
        self._next = np.zeros(num_envs, np.int64)
        self._sims = np.full((num_envs, self._n), -1.0, np.float32)
        self._since = np.zeros(num_envs, np.int64)
        self._embed_ring = getattr(embedder, "embed_ring", None)

    # frames -------------------------------------------------------------------------------------------
    def _process(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(
                f"the imitation reward needs uint8 RGB frames (0-255, as videos are decoded), got {frame.dtype}: "
                "wrap the env before any wrapper that rescales observations to floats"
            )
        if self.crop == "auto":
            # detected once, with the function the videos use, on the first frame that is not all black: an
            # all-black frame shows no border (and stays black whatever the crop), so it is not cropped and the
            # detection waits for a later frame, of this episode or the next
            if frame.max() < BORDER_THRESHOLD:
                return process_frame(frame, None, self._size)
            self.crop = detect_borders(frame, threshold=BORDER_THRESHOLD)
        return process_frame(frame, self.crop, self._size)

    def _advance(self) -> None:
        """Move the write slot: called once per step, before the envs' new frames are written."""
        self._newest = (self._newest + 1) % self._ring.shape[3]

    def _write(self, i: int, frame: np.ndarray, fresh: bool) -> None:
        p = self._process(frame)
        if fresh:  # like the video side, a stack before the first frame repeats it
            self._ring[i] = p[:, :, None]
        else:
            self._ring[i, :, :, self._newest] = p

    # embedding ----------------------------------------------------------------------------------------
    def _embed(self, rows: np.ndarray) -> None:
        """Embed the rings of envs ``rows`` (one batched pass) and store their similarities to every checkpoint."""
        if len(rows) == 0:
            return
        ring = self._ring if len(rows) == len(self._ring) else self._ring[rows]
        if self._embed_ring is not None:
            e = self._embed_ring(ring, self._newest)
        else:  # any Embedder: (B, stack, S, S, 3) stacks, oldest frame first
            e = self.embedder(ring_to_stacks(ring, self._newest))
        self._sims[rows] = self.checkpoints.centre(e) @ self._ck_t  # centred cosine similarity
        self._since[rows] = 0

    def _due(self, fresh: np.ndarray) -> np.ndarray:
        """Envs to embed this step: fresh episodes, and every ``embed_every``-th step of the others."""
        self._since += 1
        return np.flatnonzero(fresh | (self._since >= self.embed_every))

    # checkpoints --------------------------------------------------------------------------------------
    def _candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices (N, skip+1), valid mask, similarities with -1 past the last checkpoint) of the candidates."""
        return candidate_similarities(self._sims, self._next, self.skip)

    def _update(self, pay: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pay the envs in mask ``pay`` whose best candidate beats its threshold; returns (reward, matched, best)."""
        idx, valid, nxt = self._candidates()
        best_sim = nxt.max(axis=1).astype(np.float64)
        matched = np.where(pay, match_candidates(idx, valid, nxt, self.thresholds), -1)
        hit = matched >= 0
        self._next = np.where(hit, matched + 1, self._next)
        return np.where(hit, self.imitation_reward, 0.0), matched, best_sim

    def _update_one(self, pay: bool) -> tuple[float, int, float]:
        """:meth:`_update` for a single env, on Python scalars (a handful of microseconds instead of ~50 for the
        NumPy calls on arrays of one): the same candidates, thresholds, ties (the first wins) and result."""
        nxt, sims, n = int(self._next[0]), self._sims[0], self._n
        best, matched, top = -math.inf, -1, -math.inf
        for i in range(nxt, nxt + self.skip + 1):
            sim = float(sims[i]) if i < n else -1.0  # a candidate past the last checkpoint counts as -1
            if sim != sim or (best == best and sim > best):  # a NaN stays the best, as in NumPy's max
                best = sim
            if pay and i < n and sim > self.thresholds[i] and sim > top:
                matched, top = i, sim
        if matched < 0 or top == math.inf:  # an infinite similarity pays nothing, as in match_candidates
            return 0.0, -1, best
        self._next[0] = matched + 1
        return self.imitation_reward, matched, best

    def _next_similarities(self) -> np.ndarray:
        return np.clip(self._candidates()[2], -1.0, 1.0).astype(np.float32)


_ARGS_DOC = """
        threshold: similarity above which a checkpoint is reached (paper: 0.5).
        reward: paid once per checkpoint (paper: 0.5).
        skip: how many checkpoints may be skipped (paper: 1, i.e. candidates n+1 and n+2).
        mode: "add" (game + imitation) or "replace" (imitation only).
        crop: "auto" (detect black borders on the first frame that is not all black, then keep them; see the
            module docstring), None, or a CropBox. One frame decides "auto": for an env whose first frames are not
            its play (CarRacing-v3 zooms in from a map with black around it), pass None or the CropBox of its play.
            The vector wrapper detects one crop for all its sub-envs, on the first of their frames not all black.
        observe_similarity: append the similarities to the next ``skip + 1`` checkpoints to the observation.
        embed_every: embed the frames every k-th step only (default 1: every step, the paper's reward). k > 1
            trades fidelity for speed: checkpoints can only be matched on embedded steps (module docstring).
        distinct_margin: None (default, the paper: every checkpoint uses ``threshold``), or a margin m: each
            checkpoint's threshold becomes max(``threshold``, min(c + m, 0.9)), where c is the checkpoint's
            similarity to the demo's own earlier frames (its ``confusion``, see
            :func:`~dreamarcade.reward_models.checkpoints.demo_confusion`). A checkpoint that looks like an earlier
            moment of the demo (the same ladder, climbed down with the key) is then paid only for what sets it
            apart. ``thresholds`` holds the result.

    Around :class:`~dreamarcade.wrappers.atari.EpisodicLife` (which ends an episode at a lost life and goes on
    with the same game at the reset it marks ``info["life_loss_continue"]``), a lost life restarts the frames as a
    reset does, but the game's paid checkpoints stay paid: each is still paid once per game."""


class YouTubeImitationReward(gym.Wrapper, _ImitationCore):
    __doc__ = (
        """Add (or substitute) the one-shot imitation reward of a demonstration's checkpoints.

    Args:
        env: any env with RGB frames (an (H, W, 3) observation, a Dict with "image", or render_mode="rgb_array").
        embedder: maps (B, stack, S, S, 3) uint8 stacks to embeddings (e.g. :class:`FrameStackEmbedder`, whose
            fused ``embed_ring`` path is used when present).
        checkpoints: the demo's :class:`CheckpointTrajectory` (built with the same embedder)."""
        + _ARGS_DOC
        + """

    Gymnasium's ``check_env`` on one built by hand needs ``skip_render_check=True, skip_close_check=True``: those
    checks rebuild the env from ``env.spec``, which cannot rebuild and compare a wrapper holding a model.

    Example:
        >>> import gymnasium as gym, ale_py
        >>> from dreamarcade.wrappers.imitation import YouTubeImitationReward, load_imitation_model
        >>> from dreamarcade.envs.montezuma_imitation import ASSET_DIR
        >>> embedder, ckpts = load_imitation_model(ASSET_DIR)
        >>> env = YouTubeImitationReward(gym.make("ALE/MontezumaRevenge-v5"), embedder, ckpts)
        >>> _ = env.reset(seed=0)
        >>> reward = env.step(0)[1]  # the game's reward plus any checkpoint reached
        >>> env.close()
    """
    )

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
        embed_every: int = 1,
        distinct_margin: float | None = None,
    ) -> None:
        gym.Wrapper.__init__(self, env)
        self._setup(
            embedder,
            checkpoints,
            threshold,
            reward,
            skip,
            mode,
            crop,
            observe_similarity,
            embed_every,
            1,
            distinct_margin,
        )
        self._rows = np.zeros(1, np.int64)
        self._has_reset = False
        if observe_similarity:
            self.observation_space = spaces.Dict(
                {
                    "obs": env.observation_space,
                    "similarity": spaces.Box(-1.0, 1.0, (self.skip + 1,), np.float32),
                }
            )

    @property
    def similarities(self) -> np.ndarray:
        """(n,) the similarity to every checkpoint at the last embedded step (a copy)."""
        return self._sims[0].copy()

    def _observe(self, obs: Any) -> Any:
        if self.observe_similarity:
            return {"obs": obs, "similarity": self._next_similarities()[0]}
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._newest = 0  # every slot is filled: a fixed slot keeps resets bit-for-bit reproducible
        self._write(0, _rgb_frame(obs, self.env), fresh=True)
        if not (info.get("life_loss_continue") and self._has_reset):  # EpisodicLife goes on with the same game
            self._next[:] = 0  # after a lost life: its paid checkpoints stay paid (they were paid again)
        self._has_reset = True
        self._embed(np.zeros(1, np.int64))
        info = {k: v for k, v in info.items() if k != "env_reward"}  # a reset has no game reward (see step)
        info.update(
            imitation_reward=0.0,
            imitation_checkpoint=int(self._next[0]),
            imitation_matched=-1,
            imitation_similarity=float(self._candidates()[2].max()),
        )
        if self.embed_every > 1:
            info["imitation_embedded"] = True
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        _check_discrete_one(self.env.action_space, action)
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        self._advance()
        self._write(0, _rgb_frame(obs, self.env), fresh=False)
        self._since += 1
        embedded = bool(self._since[0] >= self.embed_every)
        if embedded:
            self._embed(self._rows)
        r, matched, best = self._update_one(embedded)
        reward = r + (float(env_reward) if self.mode == "add" else 0.0)
        info = dict(info)  # not the inner env's own dict: EpisodicLife hands it back as the reset info of a lost life
        info.update(
            imitation_reward=r,
            imitation_checkpoint=int(self._next[0]),
            imitation_matched=matched,
            imitation_similarity=best,
            env_reward=float(env_reward),
        )
        if self.embed_every > 1:
            info["imitation_embedded"] = embedded
        return self._observe(obs), reward, terminated, truncated, info


class YouTubeImitationRewardVector(gym.vector.VectorWrapper, _ImitationCore):
    __doc__ = (
        """The imitation reward around a vector env: one batched embedding pass for all sub-envs per step.

    Same arguments and semantics as :class:`YouTubeImitationReward`; the vector env's observation must be a
    batch of RGB frames (N, H, W, 3) (e.g. ``gym.vector.SyncVectorEnv`` of ALE envs). Works with the
    ``NEXT_STEP`` (Gymnasium's default) and ``SAME_STEP`` autoreset modes; a sub-env's checkpoints restart
    with its new episode. With ``SAME_STEP``, a finished sub-env's last frame (``info["final_obs"]``) is
    embedded and paid exactly as the single wrapper's last step (one extra batched pass then embeds the new
    episode's first frame): that step's ``imitation_reward`` / ``imitation_matched`` / ``imitation_similarity``
    describe the last frame, ``imitation_checkpoint`` and the observed similarities the new episode, and
    ``info["final_info"]["imitation_checkpoint"]`` the ended episode's progress. ``reset(options={"reset_mask":
    m})`` resets the frames and checkpoint progress of the masked sub-envs only.
    ``info`` values are arrays with one entry per sub-env. Per step, the only loop over
    sub-envs is the frame resize (one cv2 call each); embedding (all due envs in one batch), similarities and
    checkpoint bookkeeping are batched. To use more threads for the batched pass, give the embedder
    ``num_threads`` (``load_imitation_model(..., num_threads=2)``).

    Args:
        env: a vector env with (N, H, W, 3) RGB observations.
        embedder: as for :class:`YouTubeImitationReward`.
        checkpoints: the demo's :class:`CheckpointTrajectory` (built with the same embedder)."""
        + _ARGS_DOC
        + """

    Example:
        >>> import gymnasium as gym
        >>> import dreamarcade
        >>> venv = gym.make_vec("MontezumaImitation-v0", num_envs=2, vectorization_mode="vector_entry_point")
        >>> obs, info = venv.reset(seed=0)
        >>> obs, rewards, term, trunc, info = venv.step(venv.action_space.sample())
        >>> info["imitation_checkpoint"].tolist()
        [0, 0]
        >>> venv.close()
    """
    )

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
        embed_every: int = 1,
        distinct_margin: float | None = None,
    ) -> None:
        gym.vector.VectorWrapper.__init__(self, env)
        space = env.single_observation_space
        if not (
            isinstance(space, spaces.Box) and len(space.shape) == 3 and space.shape[-1] == 3 and space.dtype == np.uint8
        ):
            raise ValueError(
                f"YouTubeImitationRewardVector needs uint8 RGB observations (H, W, 3) from each sub-env, got {space}"
            )
        mode_ = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode_ not in (gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset mode {mode_} is not supported: use NEXT_STEP or SAME_STEP")
        self._setup(
            embedder,
            checkpoints,
            threshold,
            reward,
            skip,
            mode,
            crop,
            observe_similarity,
            embed_every,
            self.num_envs,
            distinct_margin,
        )
        self._autoreset = mode_
        self._needs_reset = np.zeros(self.num_envs, bool)
        self._has_reset = np.zeros(self.num_envs, bool)  # a lost life only goes on from a game reset before
        if observe_similarity:
            self.single_observation_space = spaces.Dict(
                {"obs": space, "similarity": spaces.Box(-1.0, 1.0, (self.skip + 1,), np.float32)}
            )
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    @property
    def similarities(self) -> np.ndarray:
        """(num_envs, n) each env's similarity to every checkpoint at its last embedded step (a copy)."""
        return self._sims.copy()

    def _observe(self, obs: np.ndarray) -> Any:
        if self.observe_similarity:
            return {"obs": obs, "similarity": self._next_similarities()}
        return obs

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        mask = None if options is None else options.get("reset_mask")  # read first: the inner reset pops it
        obs, info = self.env.reset(seed=seed, options=options)
        if mask is None:
            rows = np.arange(self.num_envs)
            self._newest = 0  # every slot is filled: a fixed slot keeps resets bit-for-bit reproducible
        else:  # the other sub-envs go on with their episodes: their rings and progress stay
            rows = np.flatnonzero(np.asarray(mask, bool))
        for i in rows:
            self._write(i, obs[i], fresh=True)
        self._needs_reset[rows] = False
        # as the single wrapper and step(): a sub-env whose EpisodicLife goes on with the same game after a lost life
        # (a partial reset, or a reset without a seed) keeps its paid checkpoints; they were paid again
        go_on = self._life_loss_continues(info)
        restart = rows[~(go_on[rows] & self._has_reset[rows])]
        self._next[restart] = 0
        self._has_reset[rows] = True
        self._embed(rows)
        values = dict(
            imitation_reward=np.zeros(self.num_envs),
            imitation_checkpoint=self._next.copy(),
            imitation_matched=np.full(self.num_envs, -1, np.int64),
            imitation_similarity=self._candidates()[2].max(axis=1).astype(np.float64),
        )
        if self.embed_every > 1:
            embedded = np.zeros(self.num_envs, bool)
            embedded[rows] = True
            values["imitation_embedded"] = embedded
        reset = np.zeros(self.num_envs, bool)
        reset[rows] = True
        return self._observe(obs), _with_masks(info, values, reset)

    def _life_loss_continues(self, info: dict[str, Any]) -> np.ndarray:
        """(num_envs,) bool: the sub-envs whose EpisodicLife goes on with the same game after a lost life."""
        zeros = np.zeros(self.num_envs)
        return np.asarray(info.get("life_loss_continue", zeros), bool) & np.asarray(
            info.get("_life_loss_continue", zeros), bool
        )

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        _check_discrete(self.env.single_action_space, np.asarray(actions))
        obs, env_reward, terminated, truncated, info = self.env.step(actions)
        done = np.logical_or(terminated, truncated)
        frames = obs
        if self._autoreset == gym.vector.AutoresetMode.NEXT_STEP:
            fresh = self._needs_reset  # sub-envs whose obs this step starts a new episode
            ended = np.zeros(self.num_envs, bool)
        else:  # SAME_STEP: a finished sub-env's obs starts its next episode; its last frame is in final_obs
            fresh = np.zeros(self.num_envs, bool)
            ended = done
            if ended.any():
                if "final_obs" not in info:
                    raise ValueError(
                        "a SAME_STEP vector env must give a finished sub-env's last observation in "
                        "info['final_obs'] (as Gymnasium's SyncVectorEnv and AsyncVectorEnv do)"
                    )
                frames = [info["final_obs"][i] if ended[i] else obs[i] for i in range(self.num_envs)]
        go_on = self._life_loss_continues(info)  # their checkpoints stay paid
        self._advance()
        for i in range(self.num_envs):
            self._write(i, frames[i], bool(fresh[i]))
        self._next[fresh & ~go_on] = 0
        due = self._due(fresh)
        self._embed(due)
        # the reset step of NEXT_STEP autoreset pays nothing, like a reset
        r_imit, matched, best = self._update((self._since == 0) & ~fresh)
        embedded = self._since == 0
        self._needs_reset = done
        info = dict(info)
        if ended.any():
            rows = np.flatnonzero(ended)
            if self.observe_similarity:  # the finished episodes' last observations, in the observation space too
                info["final_obs"] = self._final_observations(info["final_obs"], rows)
            final_info = dict(info.get("final_info", {}))
            progress = np.zeros(self.num_envs, np.int64)
            progress[rows] = self._next[rows]
            final_info.update(imitation_checkpoint=progress, _imitation_checkpoint=ended.copy())
            info["final_info"] = final_info
            # the next episode starts like a reset: its first frame fills the ring, its checkpoints restart
            for i in rows:
                self._write(i, obs[i], fresh=True)
            self._next[rows[~go_on[rows]]] = 0
            self._embed(rows)
        env_reward = np.asarray(env_reward, np.float64)
        reward = r_imit + (env_reward if self.mode == "add" else 0.0)
        values = dict(
            imitation_reward=r_imit,
            imitation_checkpoint=self._next.copy(),
            imitation_matched=matched,
            imitation_similarity=best,
            env_reward=env_reward,
        )
        if self.embed_every > 1:
            values["imitation_embedded"] = embedded
        info = _with_masks(info, values, np.ones(self.num_envs, bool))
        info["_env_reward"] = ~fresh  # a NEXT_STEP reset step has no env reward, as a single wrapper's reset info
        return self._observe(obs), reward, terminated, truncated, info

    def _final_observations(self, final_obs: Any, rows: np.ndarray) -> np.ndarray:
        """SAME_STEP ``info["final_obs"]`` with each finished env's frame paired with its similarities to the next
        checkpoints at that frame (taken before its progress restarts), as a vector of single wrappers gives it."""
        sims = self._next_similarities()
        out = np.empty(self.num_envs, dtype=object)
        for i in range(self.num_envs):
            out[i] = final_obs[i]
        for i in rows:
            out[i] = {"obs": final_obs[i], "similarity": sims[i]}
        return out
