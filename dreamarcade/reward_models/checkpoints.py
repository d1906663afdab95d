"""The one-shot imitation reward's parts: an embedder for frame stacks, the demo's checkpoint trajectory, and
the tracker that pays for checkpoints in soft order (Aytar et al. 2018, section 5).

* :class:`FrameStackEmbedder` turns (B, stack, S, S, 3) uint8 stacks of processed frames into embeddings with
  a trained :class:`~dreamarcade.reward_models.embedding.TDCCMC` (centre crop, exactly like the video side).
* :class:`CheckpointTrajectory`: every ``every``-th (16) frame's embedding of one held-aside demonstration video,
  zero-centred with the demo's mean embedding and L2-normalised (the paper's phi-bar), saved as safetensors+JSON.
* :class:`CheckpointTracker`: after checkpoint ``n`` was matched, checkpoints ``n+1 .. n+1+skip`` are candidates;
  when the centred cosine similarity to one of them exceeds ``threshold`` the tracker pays ``reward`` once and
  moves past it, so no checkpoint pays twice.
* :func:`demo_confusion` / :func:`distinct_thresholds`: an optional threshold per checkpoint (not in the paper).
  A demonstration can pass the same place twice, e.g. up a ladder to the key and down it with the key. A
  checkpoint taken on the way down then also matches the way up (the embedding barely sees the key), so a single
  threshold pays the way up for it. ``demo_confusion`` measures, for each checkpoint, how similar the demo's own
  *earlier* frames (more than ``window`` frames before it) are to it. ``distinct_thresholds`` raises that
  checkpoint's threshold above this similarity by a margin, so that it is paid only for what sets this moment
  apart.

Example:
    >>> import numpy as np
    >>> from dreamarcade.reward_models.checkpoints import CheckpointTracker
    >>> t = CheckpointTracker(num_checkpoints=3, threshold=0.5, reward=0.5, skip=1)
    >>> t.update(np.array([0.9, 0.0, 0.0]))  # matches checkpoint 0
    (0.5, 0)
    >>> t.update(np.array([0.9, 0.0, 0.0]))  # checkpoint 0 never pays twice
    (0.0, -1)
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from dreamarcade.checkpoint import load_checkpoint, save_checkpoint
from dreamarcade.errors import CheckpointError, VideoError
from dreamarcade.forking import check_threads
from dreamarcade.reward_models.embedding import TDCCMC, load_embedding, visual_fingerprint

__all__ = [
    "Embedder",
    "FrameStackEmbedder",
    "CheckpointTrajectory",
    "CheckpointTracker",
    "build_checkpoints",
    "candidate_similarities",
    "check_threshold",
    "checkpoint_spacing",
    "demo_confusion",
    "distinct_thresholds",
    "match_candidates",
]

DISTINCT_CAP = 0.9
"""The highest threshold :func:`distinct_thresholds` sets: a checkpoint the demo's other moments match almost
perfectly (the player standing still) stays reachable by a state close to it."""


class Embedder(Protocol):
    """What the reward needs: ``frame_size`` (S), ``stack``, ``embed_dim`` and a batched call.

    ``__call__(stacks)`` maps (B, stack, S, S, 3) uint8 to (B, embed_dim) float32.

    Example (a toy embedder, each stack's mean colour, builds a demo's checkpoints; the red channel ramps up):
        >>> import numpy as np
        >>> from dreamarcade.reward_models.checkpoints import build_checkpoints
        >>> class MeanColour:
        ...     frame_size, stack, embed_dim = 8, 2, 3
        ...     def __call__(self, stacks):
        ...         return stacks.mean(axis=(1, 2, 3)).astype(np.float32)
        >>> frames = np.zeros((40, 8, 8, 3), np.uint8)
        >>> frames[..., 0] = np.arange(40)[:, None, None]
        >>> ckpts = build_checkpoints(MeanColour(), frames, every=16)
        >>> ckpts.frame_indices.tolist(), np.sign(ckpts.embeddings[:, 0]).tolist()  # darker, brighter than the mean
        ([16, 32], [-1.0, 1.0])
    """

    frame_size: int
    stack: int
    embed_dim: int

    def __call__(self, stacks: np.ndarray) -> np.ndarray: ...


class FrameStackEmbedder:
    """Embed frame stacks with a trained TDC/CMC visual encoder (inference only).

    By default (``fused=True``) frames go through :class:`~dreamarcade.reward_models.inference.FusedVisualEncoder`:
    BatchNorm folded into the convs, channels-last, uint8 input, ``torch.inference_mode``; it computes the same
    embeddings as the reference encoder in eval mode up to float32 rounding (~1e-7), several times faster.
    The fused copy is a snapshot of the model's weights taken here: build the embedder after training.
    ``fused=False`` runs the model's own eval-mode forward (:meth:`reference`).

    ``backend`` runs the fused encoder with "torch", or with "onnxruntime"
    (:class:`~dreamarcade.reward_models.inference.OnnxVisualEncoder`: the same embeddings up to float32 rounding,
    ~2.4x faster for one frame on a CPU, where PyTorch's per-operation cost dominates). "auto" (default) takes
    ONNX Runtime when it is installed (the ``onnx`` extra) and the encoder is the fp32 one on the CPU, else torch.
    ``backend`` says which one was taken.

    ``num_threads``: intra-op threads for each embedding pass (torch: set for the pass and restored after). None
    (default) uses whatever torch is set to (for ONNX Runtime: torch's setting when its session opens).
    ``precision="bf16"`` runs the fused encoder in bfloat16 with torch (faster on CPUs with AMX; embeddings
    within ~1e-2 of fp32: see :class:`FusedVisualEncoder`).

    Besides ``__call__`` on (B, stack, S, S, 3) stacks, :meth:`embed_ring` takes the ring buffer layout the
    imitation wrappers keep (no per-step shifting or transposing of frames).

    Example:
        >>> from dreamarcade.reward_models.embedding import TDCCMC, EmbeddingConfig
        >>> e = FrameStackEmbedder(TDCCMC(EmbeddingConfig()))
        >>> e(np.zeros((2, 4, 54, 54, 3), np.uint8)).shape
        (2, 128)
    """

    def __init__(
        self,
        model: TDCCMC,
        device: str = "cpu",
        fused: bool = True,
        num_threads: int | None = None,
        precision: str = "fp32",
        backend: str = "auto",
    ) -> None:
        from dreamarcade.reward_models.inference import FusedVisualEncoder, OnnxVisualEncoder

        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 (or None to keep torch's setting), got {num_threads}")
        if precision != "fp32" and not fused:
            raise ValueError(f"precision={precision!r} needs the fused encoder (fused=True); the reference is fp32.")
        self.model = model.eval().to(device)
        self.device = device
        cfg = model.cfg
        self.cfg = cfg
        self.frame_size, self.stack, self.embed_dim = cfg.frame_size, cfg.stack, cfg.embed_dim
        self.num_threads = None if num_threads is None else int(num_threads)
        self.fused = FusedVisualEncoder(model.phi, cfg.stack, cfg.frame_size, device, precision) if fused else None
        if backend not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnxruntime', got {backend!r}")
        onnx_ready = self.fused is not None and precision == "fp32" and torch.device(device).type == "cpu"
        if backend == "onnxruntime" and not onnx_ready:
            raise ValueError(
                "backend='onnxruntime' runs the fused fp32 encoder on the CPU: it needs fused=True, precision='fp32' "
                f"and device='cpu' (got fused={fused}, precision={precision!r}, device={device!r}); use "
                "backend='torch' or 'auto' for the others"
            )
        if backend == "auto":
            backend = "onnxruntime" if onnx_ready and _onnx_importable() else "torch"
        self.backend = backend
        self.runtime: OnnxVisualEncoder | None = None
        if backend == "onnxruntime":
            assert self.fused is not None
            self.runtime = OnnxVisualEncoder(self.fused, num_threads=self.num_threads)
        self.fingerprint = visual_fingerprint(model.phi)  # checked against the checkpoints' by the reward wrappers

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        device: str = "cpu",
        fused: bool = True,
        num_threads: int | None = None,
        precision: str = "fp32",
        backend: str = "auto",
    ) -> FrameStackEmbedder:
        model, _ = load_embedding(directory)
        return cls(model, device, fused=fused, num_threads=num_threads, precision=precision, backend=backend)

    def _check(self, stacks: np.ndarray) -> None:
        s = self.frame_size
        if stacks.ndim != 5 or stacks.shape[1:] != (self.stack, s, s, 3):
            raise ValueError(
                f"embedder expects (batch, {self.stack}, {s}, {s}, 3) uint8 frame stacks, got {stacks.shape}: "
                "process frames with this embedding's frame_size and stack"
            )
        if stacks.dtype != np.uint8:  # floats were divided by 255 again: frames in [0, 1] came out nearly black
            raise ValueError(
                f"embedder expects uint8 frame stacks (0-255, as videos and ALE give them), got {stacks.dtype}: "
                "convert them first, e.g. (frames * 255).round().astype(np.uint8) for floats in [0, 1]"
            )

    def _run(self, fn: Any, *args: Any) -> np.ndarray:
        if self.num_threads is None or self.num_threads == torch.get_num_threads():
            return fn(*args)
        check_threads(self.num_threads, "the embedder's num_threads (embed_threads)")  # a forked worker would hang
        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(previous)

    def __call__(self, stacks: np.ndarray) -> np.ndarray:
        """(B, stack, S, S, 3) uint8 stacks, oldest frame first -> (B, embed_dim) float32 embeddings."""
        stacks = np.asarray(stacks)
        self._check(stacks)
        if self.runtime is not None:
            return self.runtime.embed_stacks(stacks)
        if self.fused is None:
            return self._run(self.reference, stacks)
        return self._run(self.fused.embed_stacks, stacks)

    def embed_ring(self, ring: np.ndarray, newest: int) -> np.ndarray:
        """Embed a (B, S, S, stack, 3) uint8 frame ring whose newest frame is in slot ``newest``.

        Frame ``f`` of the stack (0 = oldest) is in slot ``(newest + 1 + f) % stack``
        (:func:`~dreamarcade.reward_models.inference.ring_order`).
        """
        if self.runtime is not None:
            return self.runtime.embed_ring(ring, newest)
        if self.fused is not None:
            return self._run(self.fused.embed_ring, ring, newest)
        from dreamarcade.reward_models.inference import ring_to_stacks

        return self(ring_to_stacks(ring, newest))

    @torch.no_grad()
    def reference(self, stacks: np.ndarray) -> np.ndarray:
        """The model's own eval-mode forward (BatchNorm layers, float input / 255): what training computes."""
        stacks = np.asarray(stacks)
        self._check(stacks)
        s = self.frame_size
        x = torch.from_numpy(np.ascontiguousarray(stacks)).to(self.device)
        b = x.shape[0]
        x = x.permute(0, 1, 4, 2, 3).reshape(b, 3 * self.stack, s, s)
        o = (s - self.cfg.crop_size) // 2
        x = x[:, :, o : o + self.cfg.crop_size, o : o + self.cfg.crop_size].float().div_(255.0)
        return self.model.phi(x).cpu().numpy()


def _onnx_importable() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` import: ``backend="auto"`` falls back to torch if either is missing or
    broken (a build for another NumPy), rather than failing every imitation env."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception:  # not installed (ImportError), or a failed import (a build for another NumPy)
        return False
    return True


def checkpoint_spacing(every: Any) -> int:
    """``every`` (the checkpoint spacing in frames) as an int, refused unless it is an integer >= 1."""
    if isinstance(every, bool) or int(every) != every or every < 1:
        raise ValueError(f"every (the checkpoint spacing in frames) must be an integer >= 1, got {every!r}")
    return int(every)


def _centre(e: np.ndarray, mean: np.ndarray) -> np.ndarray:
    c = e - mean
    return c / np.maximum(np.linalg.norm(c, axis=-1, keepdims=True), 1e-8)


@dataclass
class CheckpointTrajectory:
    """Centred, normalised checkpoint embeddings (n, D), the centring mean (D,) and where they came from.

    Example (agent embeddings are centred like the checkpoints, then compared by dot product):
        >>> import tempfile, numpy as np
        >>> from dreamarcade.reward_models.checkpoints import CheckpointTrajectory
        >>> ckpts = CheckpointTrajectory(
        ...     np.eye(3, dtype=np.float32), np.ones(3, np.float32), np.array([16, 32, 48]), every=16, source="demo.mp4"
        ... )
        >>> (ckpts.centre(np.array([[1.0, 3.0, 1.0]])) @ ckpts.embeddings.T).tolist()
        [[0.0, 1.0, 0.0]]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = ckpts.save(d)
        ...     loaded = CheckpointTrajectory.load(d)
        >>> len(loaded), loaded.every, loaded.frame_indices.tolist(), loaded.source
        (3, 16, [16, 32, 48], 'demo.mp4')
    """

    embeddings: np.ndarray
    mean: np.ndarray
    frame_indices: np.ndarray
    every: int
    source: str = ""
    meta: dict[str, Any] | None = None
    confusion: np.ndarray | None = None
    """(n,) each checkpoint's highest similarity to the demo's frames more than ``confusion_window`` frames earlier
    (:func:`demo_confusion`), or None for a trajectory built without it."""
    confusion_window: int | None = None
    embedding_fingerprint: str | None = None
    """:func:`~dreamarcade.reward_models.embedding.visual_fingerprint` of the encoder that embedded the demo (None:
    built before it was recorded, or by an embedder without one); the reward wrappers refuse another encoder."""

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, np.float32)
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings must be a (checkpoints, dim) array, got shape {self.embeddings.shape}")
        n, dim = self.embeddings.shape
        self.mean = np.asarray(self.mean, np.float32)
        if self.mean.shape != (dim,):
            raise ValueError(f"the centring mean must have the embeddings' size ({dim},), got {self.mean.shape}")
        for name, values in (("embeddings", self.embeddings), ("mean", self.mean)):
            if not np.isfinite(values).all():  # NaN would make every similarity NaN: nothing ever paid, silently
                raise ValueError(f"the checkpoint {name} hold NaN or inf: rebuild the checkpoint trajectory")
        self.frame_indices = np.asarray(self.frame_indices)
        if self.frame_indices.shape != (n,) or not np.issubdtype(self.frame_indices.dtype, np.integer):
            raise ValueError(
                f"frame_indices must hold one integer frame index per checkpoint, shape ({n},), "
                f"got {self.frame_indices.shape} {self.frame_indices.dtype}"
            )
        self.every = checkpoint_spacing(self.every)
        if self.confusion is not None:
            self.confusion = np.asarray(self.confusion, np.float32)
            if self.confusion.shape != (len(self.embeddings),):
                raise ValueError(
                    f"confusion must hold one value per checkpoint, shape ({len(self.embeddings)},), "
                    f"got {self.confusion.shape}"
                )
            if np.isnan(self.confusion).any():  # a NaN threshold would make its checkpoint unpayable, silently
                bad = np.flatnonzero(np.isnan(self.confusion)).tolist()
                raise ValueError(f"confusion holds NaN (checkpoints {bad}): rebuild the checkpoint trajectory")

    def __len__(self) -> int:
        return len(self.embeddings)

    def centre(self, e: np.ndarray) -> np.ndarray:
        """phi-bar: subtract the demo's mean embedding and L2-normalise (rows)."""
        return _centre(np.asarray(e, np.float32), self.mean)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        tensors = {
            "embeddings": torch.from_numpy(np.ascontiguousarray(self.embeddings, np.float32)),
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean, np.float32)),
            "frame_indices": torch.from_numpy(np.asarray(self.frame_indices, np.int64)),
        }
        if self.confusion is not None:
            tensors["confusion"] = torch.from_numpy(np.ascontiguousarray(self.confusion, np.float32))
        config = {
            "kind": "imitation_checkpoints",
            "every": self.every,
            "num_checkpoints": len(self),
            "embed_dim": int(self.embeddings.shape[1]),
            "source": self.source,
            "meta": self.meta or {},
            "confusion_window": self.confusion_window,
            "embedding_fingerprint": self.embedding_fingerprint,
        }
        return save_checkpoint(directory, tensors, config)

    @staticmethod
    def load(directory: str | os.PathLike[str]) -> CheckpointTrajectory:
        tensors, config = load_checkpoint(directory, kind="imitation_checkpoints")
        missing = [k for k in ("embeddings", "mean", "frame_indices") if k not in tensors]
        missing += [k for k in ("every", "num_checkpoints", "embed_dim") if k not in config]
        if missing:
            raise CheckpointError(
                f"checkpoint trajectory '{directory}' lacks {', '.join(missing)}: it was not written by "
                "CheckpointTrajectory.save; rebuild it with python -m dreamarcade.reward_models.build_reward"
            )

        def array(name: str) -> np.ndarray:
            t = tensors[name]
            return (t.float() if t.is_floating_point() else t).numpy()  # bfloat16 has no numpy type

        emb = array("embeddings")
        if emb.shape != (config["num_checkpoints"], config["embed_dim"]):
            raise CheckpointError(f"checkpoint trajectory '{directory}' has shape {emb.shape}, config disagrees")
        confusion = array("confusion") if "confusion" in tensors else None  # checked by __post_init__, below
        window = config.get("confusion_window")
        try:
            return CheckpointTrajectory(
                emb,
                array("mean"),
                array("frame_indices"),
                config["every"],
                config.get("source", ""),
                config.get("meta", {}),
                confusion,
                None if window is None else int(window),
                config.get("embedding_fingerprint"),
            )
        except ValueError as exc:
            raise CheckpointError(f"checkpoint trajectory '{directory}' is inconsistent: {exc}") from exc


def build_checkpoints(
    embedder: Embedder,
    frames: np.ndarray,
    every: int = 16,
    start: int = 0,
    end: int | None = None,
    centre: bool = True,
    source: str = "",
    confusion_window: int | None = None,
) -> CheckpointTrajectory:
    """Embed a processed demo video (T, S, S, 3) and keep every ``every``-th frame as a checkpoint.

    ``start``/``end`` trim the video to its gameplay (frames before ``start``, e.g. an intro card, are not
    checkpoints). Checkpoints are frames ``start + every, start + 2 * every, ...`` (the start frame itself
    is where the agent begins, so it is not paid for). The centring mean is the mean embedding over the
    trimmed demo (an assumption: the paper does not say what it centres with); ``centre=False`` disables it.
    The trajectory also keeps each checkpoint's :func:`demo_confusion` with the trimmed demo's frames more than
    ``confusion_window`` frames earlier (default ``2 * every``: the soft order's reach with ``skip=1``), for
    :func:`distinct_thresholds`.
    """
    every = checkpoint_spacing(every)  # before the demo is embedded
    frames = np.asarray(frames)
    end = len(frames) if end is None else min(end, len(frames))
    if not 0 <= start < end:
        raise ValueError(f"start must be in [0, end) = [0, {end}), got start={start}: the demo would be empty")
    if frames.ndim != 4 or frames.shape[1:] != (embedder.frame_size, embedder.frame_size, 3):
        raise ValueError(
            f"demo frames must be (T, {embedder.frame_size}, {embedder.frame_size}, 3) for this embedder, "
            f"got {frames.shape}"
        )
    n = end - start
    if n < 2 * every:
        raise VideoError(
            f"the demonstration has {n} frames after trimming, too short for checkpoints every {every} frames "
            f"(needs at least {2 * every}). Use a longer video, a smaller start offset, or a smaller spacing."
        )
    clip = frames[start:end]
    idx = np.arange(len(clip))
    offs = np.arange(-embedder.stack + 1, 1)
    emb = []
    for s in range(0, len(clip), 128):
        ii = np.clip(idx[s : s + 128, None] + offs[None], 0, len(clip) - 1)
        emb.append(embedder(clip[ii]))
    all_emb = np.concatenate(emb).astype(np.float32)
    mean = all_emb.mean(0) if centre else np.zeros(all_emb.shape[1], np.float32)
    ck = np.arange(every, len(clip), every)
    window = 2 * every if confusion_window is None else int(confusion_window)
    centred = _centre(all_emb, mean)
    return CheckpointTrajectory(
        centred[ck],
        mean.astype(np.float32),
        ck + start,
        every,
        source,
        confusion=demo_confusion(centred, ck, window),
        confusion_window=window,
        embedding_fingerprint=getattr(embedder, "fingerprint", None),
    )


def demo_confusion(embeddings: np.ndarray, checkpoint_frames: np.ndarray, window: int) -> np.ndarray:
    """Each checkpoint's highest similarity to the demo's earlier frames.

    ``embeddings`` (T, D): the demo's centred, normalised frame embeddings; ``checkpoint_frames`` (n,): the
    checkpoints' frame indices in it. Only frames more than ``window`` frames *before* a checkpoint count: the
    frames around it are its own moment, and an agent can only be paid for a checkpoint by a state that looks
    like an earlier moment (it has not done what the demo did in between), never by one that looks like a later
    moment (to get there it has done it). -1 where no frame is that early.

    Example (frames 3 and 4 look like frames 1 and 0, which came before them; frame 0 has no earlier frame):
        >>> import numpy as np
        >>> e = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])
        >>> demo_confusion(e, np.array([0, 3, 4]), window=1).round(2).tolist()
        [-1.0, 1.0, 1.0]
    """
    if int(window) < 0:
        raise ValueError(f"the confusion window must be >= 0 frames, got {window}")
    e = np.asarray(embeddings, np.float32)
    ck = np.asarray(checkpoint_frames, np.int64)
    sims = e[ck] @ e.T
    earlier = np.arange(len(e))[None] < ck[:, None] - int(window)
    return np.where(earlier, sims, -np.inf).max(axis=1, initial=-1.0).astype(np.float32)


def distinct_thresholds(
    confusion: np.ndarray, threshold: float = 0.5, margin: float = 0.1, cap: float = DISTINCT_CAP
) -> np.ndarray:
    """A threshold per checkpoint: ``threshold``, raised to ``confusion + margin`` (at most ``cap``) where the
    demo's other moments are that similar to the checkpoint (see :func:`demo_confusion`).

    Example:
        >>> import numpy as np
        >>> distinct_thresholds(np.array([0.1, 0.62, 0.97]), threshold=0.5, margin=0.1).round(2).tolist()
        [0.5, 0.72, 0.9]
    """
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"the distinct margin must be a finite number >= 0, got {margin}")
    c = np.asarray(confusion, np.float64)
    return np.maximum(float(threshold), np.minimum(c + float(margin), float(cap)))


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """``threshold`` as a float, or a ValueError naming ``name`` unless it is a similarity in [-1, 1).

    The similarities are centred cosines in [-1, 1]: a threshold of 1 or more can never be passed, and one below -1
    pays every checkpoint for standing still.

    >>> check_threshold(0.5)
    0.5
    >>> check_threshold(1.0, "--threshold")
    Traceback (most recent call last):
    ...
    ValueError: --threshold must be in [-1, 1) (a similarity; the paper's is 0.5): 1.0 can never be passed
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"{name} must be a finite number in [-1, 1), got {threshold!r}")  # NaN never pays
    if not -1.0 <= threshold < 1.0:
        raise ValueError(
            f"{name} must be in [-1, 1) (a similarity; the paper's is 0.5): {threshold} "
            f"{'pays every checkpoint for standing still' if threshold < -1 else 'can never be passed'}"
        )
    return float(threshold)


class CheckpointTracker:
    """Soft-ordered, pay-once checkpoint matching for one episode.

    ``update(similarities)`` takes the centred cosine similarity of the current agent embedding to *every*
    checkpoint and returns (reward, index of the checkpoint matched or -1). Candidates are the ``skip + 1``
    checkpoints after the last one matched; the most similar candidate above ``threshold`` is matched.

    Example (with ``skip=1`` the agent may pass one checkpoint unmatched, but never go back for it):
        >>> import numpy as np
        >>> from dreamarcade.reward_models.checkpoints import CheckpointTracker
        >>> t = CheckpointTracker(num_checkpoints=4, threshold=0.5, reward=0.5, skip=1)
        >>> t.candidates().tolist()
        [0, 1]
        >>> t.update(np.array([0.2, 0.8, 0.9, 0.0]))  # checkpoint 2 is not a candidate yet: 1 is matched
        (0.5, 1)
        >>> t.candidates().tolist()  # checkpoint 0 was skipped for good
        [2, 3]
        >>> t.reset()  # a new episode
        >>> t.candidates().tolist()
        [0, 1]
    """

    def __init__(self, num_checkpoints: int, threshold: float = 0.5, reward: float = 0.5, skip: int = 1) -> None:
        if num_checkpoints < 1:
            raise ValueError("a checkpoint trajectory needs at least one checkpoint")
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.n, self.reward, self.skip = num_checkpoints, float(reward), int(skip)
        self.threshold = check_threshold(threshold)  # 1 or more can never be passed
        self.next = 0  # index of the next checkpoint expected
        self.paid = np.zeros(num_checkpoints, bool)

    def reset(self) -> None:
        self.next = 0
        self.paid[:] = False

    def candidates(self) -> np.ndarray:
        return np.arange(self.next, min(self.next + self.skip + 1, self.n))

    def update(self, similarities: np.ndarray) -> tuple[float, int]:
        similarities = np.asarray(similarities)
        if similarities.shape != (self.n,):  # a shorter one left checkpoints unpayable, a longer one crashed later
            raise ValueError(f"update needs the similarity to each of the {self.n} checkpoints, got shape "
                             f"{similarities.shape}")  # fmt: skip
        idx, valid, sims = candidate_similarities(similarities[None], np.array([self.next]), self.skip)
        k = int(match_candidates(idx, valid, sims, self.threshold)[0])
        if k < 0:
            return 0.0, -1
        assert not self.paid[k]  # candidates are always after the last match
        self.paid[k] = True
        self.next = k + 1
        return self.reward, k


def candidate_similarities(
    similarities: np.ndarray, next_checkpoint: np.ndarray, skip: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The soft-order candidates ``next .. next + skip`` of N streams at once.

    ``similarities`` (N, n) to every checkpoint, ``next_checkpoint`` (N,) each stream's next checkpoint. Returns
    the candidates' indices (N, skip + 1), a mask of those that exist (index < n), and their similarities, -1
    past the last checkpoint.
    """
    n = similarities.shape[1]
    idx = np.asarray(next_checkpoint)[:, None] + np.arange(skip + 1)[None]
    valid = idx < n
    sims = np.take_along_axis(similarities, np.minimum(idx, n - 1), axis=1)
    return idx, valid, np.where(valid, sims, np.float32(-1.0))


def match_candidates(idx: np.ndarray, valid: np.ndarray, sims: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """The pay-once rule for N streams (from :func:`candidate_similarities`): each stream matches, among its
    existing candidates whose similarity is above their threshold, the most similar one (the first on ties); -1
    when none is. ``threshold`` is one float, or one per checkpoint (n,) (:func:`distinct_thresholds`)."""
    thr = np.asarray(threshold, np.float64)
    if thr.ndim:
        thr = thr[np.minimum(idx, len(thr) - 1)]
    ranked = np.where(valid & (sims > thr), sims, -np.inf)
    k = ranked.argmax(axis=1)
    rows = np.arange(len(k))
    return np.where(np.isfinite(ranked[rows, k]), idx[rows, k], -1).astype(np.int64)
