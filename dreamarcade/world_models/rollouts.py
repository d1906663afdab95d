"""Rollout storage: compressed ``.npz`` shards on disk, streamed into training.

A *frame shard* (``frames-*.npz``) holds several whole episodes concatenated along time:

==================  =====================  ==========================================
key                 shape / dtype          meaning
==================  =====================  ==========================================
``frames``          (N, 64, 64, 3) uint8   observation before each action
``actions``         (N, A) float32         action taken
``rewards``         (N,) float32           reward received
``dones``           (N,) bool              the episode *terminated* after this step
``episode_lengths`` (E,) int64             lengths of the E episodes (sum = N)
==================  =====================  ==========================================

A *series shard* (``series-*.npz``, written by :func:`encode_shards`) replaces ``frames`` by the VAE's
``mu`` and ``logvar`` (N, z) float16: that is all the MDN-RNN trains on, as in the original code.

Memory: :class:`FrameStream` keeps at most ``shards_in_memory`` shards decoded (a 64x64x3 frame is 12 KiB, so
a 2,000-frame shard is ~24 MiB), whatever the size of the data set. Shards are written atomically, so a killed
collection leaves only complete shards, and loading never unpickles (``allow_pickle=False``).

Example:
    >>> import tempfile, numpy as np
    >>> from dreamarcade.world_models.rollouts import ShardWriter, FrameStream
    >>> d = tempfile.mkdtemp()
    >>> w = ShardWriter(d, prefix="frames-w0", episodes_per_shard=2)
    >>> for _ in range(3):
    ...     w.add_episode(np.zeros((5, 64, 64, 3), np.uint8), np.zeros((5, 1), np.float32),
    ...                   np.ones(5, np.float32), np.eye(5, dtype=bool)[-1])
    >>> w.close()
    >>> sum(b.shape[0] for b in FrameStream(d, batch_size=4))
    15
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from dreamarcade.checkpoint import atomic_write_bytes

__all__ = [
    "ShardWriter",
    "FrameStream",
    "list_shards",
    "load_shard",
    "read_shard_arrays",
    "encode_shards",
    "load_series",
]

FRAME_KEYS = ("frames", "actions", "rewards", "dones", "episode_lengths")
SERIES_KEYS = ("mu", "logvar", "actions", "rewards", "dones", "episode_lengths")


def list_shards(directory: str | os.PathLike[str], kind: str = "frames") -> list[Path]:
    """Sorted shard files of ``kind`` ("frames" or "series") in ``directory``."""
    return sorted(Path(directory).glob(f"{kind}-*.npz"))


def read_shard_arrays(path: str | os.PathLike[str], keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (all when None) of one shard, without pickle; only those are read from the file.

    A truncated or bit-flipped file, or a missing array, is a ValueError naming the shard and the fix.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if keys is None else keys)}
    # a flipped bit surfaces as whatever the byte it hit breaks: zipfile's BadZipFile or NotImplementedError (a
    # "compressed patched data" flag), zlib.error, numpy's header parser (tokenize.TokenError, ValueError), ...
    except Exception as exc:
        raise ValueError(f"Corrupt rollout shard '{path}': {exc}. Delete it and collect again.") from exc


_REQUIRED = {"frames": FRAME_KEYS, "series": SERIES_KEYS}  # by the file name's prefix (list_shards' kinds)


def load_shard(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load one shard (no pickle), checking that it holds its kind's arrays and that they agree with each other."""
    data = read_shard_arrays(path)
    required = _REQUIRED.get(Path(path).name.split("-")[0], ("actions", "episode_lengths"))
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"Corrupt rollout shard '{path}': it lacks the arrays {missing}. Delete it and collect again.")
    n = len(data["actions"])
    if int(data["episode_lengths"].sum()) != n:
        raise ValueError(f"Corrupt rollout shard '{path}': episode_lengths do not add up to the number of steps.")
    short = [k for k in required if k != "episode_lengths" and len(data[k]) != n]
    if short:
        raise ValueError(
            f"Corrupt rollout shard '{path}': the arrays {short} do not have one entry per step ({n}). Delete it "
            "and collect again."
        )
    return data


def npz_bytes(arrays: dict[str, np.ndarray], level: int = 1) -> io.BytesIO:
    """``arrays`` as an ``.npz`` (a zip of ``.npy`` files, read by ``np.load(..., allow_pickle=False)``).

    Like ``np.savez_compressed`` but at zlib level 1 instead of 6: a 2,600-frame Doom shard compresses in 0.32 s
    instead of 1.2 s for 5% more bytes, and compression was 60% of a collect worker's time at level 6.
    """
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return bio


class ShardWriter:
    """Buffers whole episodes and writes one compressed shard every ``episodes_per_shard`` episodes.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from dreamarcade.world_models.rollouts import ShardWriter, list_shards, load_shard
        >>> with tempfile.TemporaryDirectory() as d:
        ...     w = ShardWriter(d, prefix="frames-w0", episodes_per_shard=2)
        ...     for n in (3, 4, 5):  # three episodes of 3, 4 and 5 steps
        ...         frames = np.zeros((n, 64, 64, 3), np.uint8)
        ...         w.add_episode(frames, np.zeros((n, 1)), np.ones(n), np.arange(n) == n - 1)
        ...     w.close()  # writes the last, partial shard
        ...     print([p.name for p in list_shards(d)], w.episodes_written, w.steps_written)
        ...     print(load_shard(list_shards(d)[0])["episode_lengths"])
        ['frames-w0-00000.npz', 'frames-w0-00001.npz'] 3 12
        [3 4]
    """

    def __init__(
        self, directory: str | os.PathLike[str], prefix: str = "frames-w0", episodes_per_shard: int = 8
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.episodes_per_shard = int(episodes_per_shard)
        self._buffer: list[dict[str, np.ndarray]] = []
        # continue numbering after the highest shard already on disk, so a resumed collection appends (counting
        # the files instead would reuse a later shard's number, and overwrite it, once an earlier one is deleted)
        pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.npz")
        taken = [int(m.group(1)) for p in self.directory.iterdir() if (m := pattern.fullmatch(p.name))]
        self._index = max(taken, default=-1) + 1
        self.episodes_written = 0
        self.steps_written = 0

    def add_episode(
        self, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray, **extra: np.ndarray
    ) -> None:
        n = len(actions)
        if not (len(frames) == len(rewards) == len(dones) == n):
            raise ValueError("frames, actions, rewards and dones of an episode must have the same length")
        ep = {
            "frames": np.asarray(frames),
            "actions": np.asarray(actions, np.float32).reshape(n, -1),
            "rewards": np.asarray(rewards, np.float32),
            "dones": np.asarray(dones, bool),
        }
        ep.update({k: np.asarray(v) for k, v in extra.items()})
        self._buffer.append(ep)
        if len(self._buffer) >= self.episodes_per_shard:
            self.flush()

    def flush(self) -> Path | None:
        if not self._buffer:
            return None
        keys = self._buffer[0].keys()
        out = {k: np.concatenate([ep[k] for ep in self._buffer]) for k in keys}
        out["episode_lengths"] = np.array([len(ep["actions"]) for ep in self._buffer], np.int64)
        bio = npz_bytes(out)
        path = self.directory / f"{self.prefix}-{self._index:05d}.npz"
        atomic_write_bytes(path, bio.getvalue())
        self._index += 1
        self.episodes_written += len(self._buffer)
        self.steps_written += int(out["episode_lengths"].sum())
        self._buffer = []
        return path

    def close(self) -> None:
        self.flush()


class FrameStream:
    """Iterates shuffled batches of frames (uint8, N x 64 x 64 x 3) over shards, a few shards at a time.

    Each pass visits the shards in a new random order, decodes ``shards_in_memory`` of them, shuffles their
    frames together and yields batches; so memory stays bounded and batches still mix episodes.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from dreamarcade.world_models.rollouts import FrameStream, ShardWriter
        >>> with tempfile.TemporaryDirectory() as d:
        ...     w = ShardWriter(d, episodes_per_shard=1)
        ...     for value in (0, 1):  # two one-episode shards of 6 frames: all 0s, then all 1s
        ...         frames = np.full((6, 64, 64, 3), value, np.uint8)
        ...         w.add_episode(frames, np.zeros((6, 1)), np.zeros(6), np.zeros(6, bool))
        ...     w.close()
        ...     batches = list(FrameStream(d, batch_size=4, shards_in_memory=2, seed=0))
        >>> [b.shape for b in batches]  # one pass over all 12 frames
        [(4, 64, 64, 3), (4, 64, 64, 3), (4, 64, 64, 3)]
        >>> sum(int(b[:, 0, 0, 0].sum()) for b in batches)  # each of the six 1-frames once
        6
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | list[Path],
        batch_size: int = 100,
        shards_in_memory: int = 4,
        seed: int = 0,
        max_frames: int | None = None,
    ) -> None:
        self.paths = list(directory) if isinstance(directory, list) else list_shards(directory, "frames")
        if not self.paths:
            raise FileNotFoundError(f"No frame shards (frames-*.npz) in '{directory}'. Run the `collect` step first.")
        self.batch_size = batch_size
        self.shards_in_memory = shards_in_memory
        self.rng = np.random.default_rng(seed)
        self.max_frames = max_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.rng.permutation(len(self.paths))
        seen = 0
        for start in range(0, len(order), self.shards_in_memory):
            group = [load_shard(self.paths[i])["frames"] for i in order[start : start + self.shards_in_memory]]
            frames = np.concatenate(group)
            frames = frames[self.rng.permutation(len(frames))]
            for b in range(0, len(frames), self.batch_size):
                batch = frames[b : b + self.batch_size]
                if self.max_frames is not None and seen >= self.max_frames:
                    return
                seen += len(batch)
                yield batch


def encode_shards(
    frame_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], encode: object, batch_size: int = 500
) -> list[Path]:
    """Encode every frame shard with ``encode(frames uint8) -> (mu, logvar)`` into series shards (skips done ones).

    A ``frame_dir`` without frame shards (a collect stopped before its first shard) writes nothing and creates no
    ``out_dir``: an empty series folder made M's training ask for this encoding again, which could not fill it.
    """
    out_dir = Path(out_dir)
    frame_shards = list_shards(frame_dir, "frames")
    if frame_shards:
        out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in frame_shards:
        target = out_dir / path.name.replace("frames-", "series-", 1)
        if target.exists():
            written.append(target)
            continue
        data = load_shard(path)
        mus, logvars = [], []
        for b in range(0, len(data["frames"]), batch_size):
            mu, logvar = encode(data["frames"][b : b + batch_size])  # type: ignore[operator]
            mus.append(mu)
            logvars.append(logvar)
        out = {k: data[k] for k in ("actions", "rewards", "dones", "episode_lengths")}
        out["mu"] = np.concatenate(mus).astype(np.float16)
        out["logvar"] = np.concatenate(logvars).astype(np.float16)
        bio = npz_bytes(out)
        atomic_write_bytes(target, bio.getvalue())
        written.append(target)
    return written


def load_series(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Concatenate every series shard of ``directory`` (they are small: 2 x z float16 per step)."""
    paths = list_shards(directory, "series")
    if not paths:
        raise FileNotFoundError(
            f"No series shards (series-*.npz) in '{directory}'. Run `train-vae` (it encodes the frame shards of the "
            f"frames* folder of the same name); if that folder has no frame shards, delete '{directory}'."
        )
    parts = [load_shard(p) for p in paths]
    return {k: np.concatenate([p[k] for p in parts]) for k in SERIES_KEYS}
