"""Experience replay that stores every frame once.

A frame-stacked observation ``(k, 84, 84)`` shares ``k - 1`` frames with the previous one, so storing
``obs`` and ``next_obs`` stacks (SB3's default) keeps each frame ``2k = 8`` times. This buffer keeps one
stream of frames per env: an episode's first transition writes all ``k`` frames of its observation,
every later transition writes only the newest frame of ``next_obs``. A transition remembers the
position ``p`` of its observation's newest frame; the stacks are rebuilt at sampling time as frames
``p-k+1 .. p`` (obs) and ``p-k+2 .. p+1`` (next_obs). Because each episode starts its own run of ``k``
frames, a rebuilt stack never crosses an episode boundary, and it is exactly the stack the agent saw.

Memory (84x84 uint8, k = 4): 7,056 bytes of frame per transition, plus 17 bytes of pointer, action,
reward and flag, plus ``(k - 1) * 7,056`` bytes once per episode and a 1.6 % slack in the frame ring:
about 7.2 KB per transition, 7.2 GB for 1M (SB3: 56.4 GB, or 28.2 GB with
``optimize_memory_usage=True``). See benchmarks/RESULTS.md for the measured numbers.

With ``frame_stack=1`` it is an ordinary buffer for any Box observation (vectors included): each
observation is stored once, and ``next_obs`` is the next stored observation.

:meth:`ReplayBuffer.save` / :meth:`ReplayBuffer.load` write and restore the stored part (``.npy`` files and a
JSON file, never a pickle), so a resumed training run keeps its experience (``dqn --save-buffer``).

Example:
    >>> import numpy as np
    >>> from dreamarcade.baselines.replay_buffer import ReplayBuffer
    >>> buf = ReplayBuffer(1000, obs_shape=(4, 84, 84), frame_stack=4)
    >>> obs = np.zeros((1, 4, 84, 84), np.uint8)
    >>> nxt = np.concatenate([obs[:, 1:], np.ones((1, 1, 84, 84), np.uint8)], axis=1)
    >>> buf.add(obs, nxt, np.array([2]), np.array([1.0]), np.array([False]), np.array([False]))
    >>> batch = buf.sample(1)
    >>> batch.next_obs.shape, int(batch.next_obs[0, -1, 0, 0]), len(buf)
    (torch.Size([1, 4, 84, 84]), 1, 1)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamarcade.checkpoint import built_from_config, read_json_object
from dreamarcade.errors import CheckpointError

_SAVED_ARRAYS = ("frames", "ptr", "actions", "rewards", "terminated")
_SAVED_COUNTERS = ("frames_written", "trans_written", "first_valid")
_META_FILE = "buffer.json"


def _previous_copy(directory: Path) -> Path:
    """Where :meth:`ReplayBuffer.save` keeps the previous copy while it swaps the new one in."""
    return directory.with_name(f".{directory.name}.old")


def _complete_copy(directory: Path) -> Path | None:
    """The folder holding a complete saved copy: ``directory``, else the previous copy (a save cut off
    between its two renames leaves only that one), else None."""
    for candidate in (directory, _previous_copy(directory)):
        if (candidate / _META_FILE).is_file():
            return candidate
    return None


@dataclass
class Batch:
    """A sampled minibatch (torch tensors on the buffer's device).

    Example:
        >>> import numpy as np, torch
        >>> from dreamarcade.baselines.replay_buffer import ReplayBuffer
        >>> buf = ReplayBuffer(100, obs_shape=(2,), obs_dtype=np.float32, seed=0)
        >>> for t in range(3):
        ...     obs = np.full((1, 2), t, np.float32)
        ...     buf.add(obs, obs + 1, np.array([1]), np.array([0.5]), np.array([t == 2]), np.array([False]))
        >>> batch = buf.sample(8)
        >>> batch.obs.shape, batch.actions.dtype, batch.terminated.dtype
        (torch.Size([8, 2]), torch.int64, torch.float32)
        >>> bool(torch.equal(batch.next_obs, batch.obs + 1))
        True
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


def _sync(f: Any) -> None:
    """Flush an open file to disk."""
    f.flush()
    os.fsync(f.fileno())


def _sync_dir(directory: Path) -> None:
    """Flush a directory's entries (renames) to disk, where the OS allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ReplayBuffer:
    """A uniform replay buffer over ``num_envs`` parallel envs, storing each frame once.

    Args:
        capacity: transitions kept (over all envs); the oldest are overwritten first. Each episode also
            stores the frames of its first observation, and the frame ring has ~1.6% slack for them: with
            episodes of ``L`` steps about ``min(capacity, 1.016 * capacity * L / (L + frame_stack))``
            transitions stay sampleable (stacks of 4: all of them at L = 1000, ~73% at L = 10, ~20% at L = 1).
        obs_shape: shape of one env's observation, e.g. ``(4, 84, 84)``.
        frame_stack: ``k`` if observations are stacks of ``k`` frames on axis 0 (frames are then
            de-duplicated), 1 otherwise.
        num_envs: number of envs whose transitions are added together.
        obs_dtype: dtype of the stored observations (uint8 for pixels).
        device: where sampled tensors are placed.
        seed: seed of the sampling RNG.

    Example (vector observations, ``frame_stack=1``; saved and restored into a fresh buffer):
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from dreamarcade.baselines.replay_buffer import ReplayBuffer
        >>> buf = ReplayBuffer(100, obs_shape=(3,), obs_dtype=np.float32, seed=0)
        >>> for t in range(5):  # one 5-step episode
        ...     obs = np.full((1, 3), t, np.float32)
        ...     buf.add(obs, obs + 1, np.array([t % 2]), np.array([1.0]), np.array([t == 4]), np.array([False]))
        >>> len(buf), buf.sample(32).obs.shape
        (5, torch.Size([32, 3]))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = buf.save(Path(d) / "replay_buffer", global_step=5)
        ...     restored = ReplayBuffer(100, obs_shape=(3,), obs_dtype=np.float32)
        ...     meta = restored.load(Path(d) / "replay_buffer")
        >>> meta, len(restored), restored.transitions_added
        ({'global_step': 5}, 5, 5)
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        frame_stack: int = 1,
        num_envs: int = 1,
        obs_dtype: np.dtype | type = np.uint8,
        device: str | torch.device = "cpu",
        seed: int | None = None,
    ) -> None:
        if capacity < num_envs:
            raise ValueError(f"capacity ({capacity}) must be at least num_envs ({num_envs})")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        if frame_stack > 1 and (len(obs_shape) < 2 or obs_shape[0] != frame_stack):
            raise ValueError(
                f"frame_stack={frame_stack} needs observations stacked on axis 0, i.e. shape ({frame_stack}, ...); "
                f"got obs_shape {obs_shape}. Use frame_stack=1 for observations that are not frame stacks."
            )
        self.k = int(frame_stack)
        self.num_envs = int(num_envs)
        self.obs_shape = tuple(obs_shape)
        self.frame_shape = self.obs_shape[1:] if self.k > 1 else self.obs_shape
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.cap = int(capacity) // self.num_envs  # transitions per env
        # Frames per env: one per transition, plus room for the k-1 extra frames of each episode start.
        self.frame_cap = self.cap + max(self.k, self.cap // 64) + self.k
        E = self.num_envs
        self.frames = np.zeros((E, self.frame_cap, *self.frame_shape), dtype=obs_dtype)
        self.ptr = np.zeros((E, self.cap), dtype=np.int64)  # absolute frame index of obs's newest frame
        self.actions = np.zeros((E, self.cap), dtype=np.int32)
        self.rewards = np.zeros((E, self.cap), dtype=np.float32)
        self.terminated = np.zeros((E, self.cap), dtype=np.bool_)
        self.frames_written = np.zeros(E, dtype=np.int64)  # absolute counts
        self.trans_written = np.zeros(E, dtype=np.int64)
        self.first_valid = np.zeros(E, dtype=np.int64)  # oldest transition whose frames are all still stored
        self._chain_open = np.zeros(E, dtype=np.bool_)  # the last transition did not end an episode

    # -- writing -----------------------------------------------------------------------------------
    def _write_frame(self, e: int, frame: np.ndarray) -> int:
        idx = int(self.frames_written[e])
        self.frames[e, idx % self.frame_cap] = frame
        self.frames_written[e] += 1
        return idx

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        env_mask: np.ndarray | None = None,
    ) -> None:
        """Add one transition per env (arrays with a leading ``num_envs`` axis).

        ``next_obs`` must be the true next observation (the final one when the episode ended), not an
        auto-reset observation. ``env_mask`` (bool, per env) skips envs whose step was an auto-reset.
        Only ``terminated`` stops bootstrapping; a ``truncated`` transition keeps its next state's value.
        """
        obs, next_obs = np.asarray(obs), np.asarray(next_obs)
        if obs.shape != (self.num_envs, *self.obs_shape) or next_obs.shape != obs.shape:
            raise ValueError(
                f"add() expects obs and next_obs of shape {(self.num_envs, *self.obs_shape)}, got {obs.shape} and "
                f"{next_obs.shape}"
            )
        kept = [e for e in range(self.num_envs) if env_mask is None or env_mask[e]]
        # checked for every env before any is stored: env 0 stored and env 1 refused left the envs out of step
        if self.k > 1 and any(not np.array_equal(next_obs[e, :-1], obs[e, 1:]) for e in kept):
            raise ValueError(
                "next_obs is not obs shifted by one frame, so these observations are not frame stacks "
                "(or next_obs is an auto-reset observation). Pass the true final observation, or use frame_stack=1."
            )
        for e in kept:
            if not self._chain_open[e]:
                # Episode start: write the whole stack so it never borrows frames of another episode.
                for frame in obs[e] if self.k > 1 else (obs[e],):
                    self._write_frame(e, frame)
            p = int(self.frames_written[e]) - 1
            self._write_frame(e, next_obs[e, -1] if self.k > 1 else next_obs[e])
            t = int(self.trans_written[e]) % self.cap
            self.ptr[e, t] = p
            self.actions[e, t] = int(actions[e])
            self.rewards[e, t] = float(rewards[e])
            self.terminated[e, t] = bool(terminated[e])
            self.trans_written[e] += 1
            self._chain_open[e] = not (bool(terminated[e]) or bool(truncated[e]))
            self._advance_first_valid(e)

    def _advance_first_valid(self, e: int) -> None:
        oldest_frame = self.frames_written[e] - self.frame_cap
        lo = max(int(self.first_valid[e]), int(self.trans_written[e]) - self.cap)
        while lo < self.trans_written[e] and self.ptr[e, lo % self.cap] - (self.k - 1) < oldest_frame:
            lo += 1
        self.first_valid[e] = lo

    def end_episodes(self) -> None:
        """Mark every env's stream as ended (call after an env reset that add() did not see)."""
        self._chain_open[:] = False

    # -- reading -----------------------------------------------------------------------------------
    def sizes(self) -> np.ndarray:
        """Number of sampleable transitions per env."""
        lo = np.maximum(self.first_valid, self.trans_written - self.cap)
        return self.trans_written - lo

    def __len__(self) -> int:
        return int(self.sizes().sum())

    @property
    def transitions_added(self) -> int:
        """Transitions ever added (all envs, overwritten ones included; restored by :meth:`load`)."""
        return int(self.trans_written.sum())

    def sample(self, batch_size: int) -> Batch:
        """Sample ``batch_size`` transitions uniformly (with replacement)."""
        sizes = self.sizes()
        total = int(sizes.sum())
        if total == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        flat = self.rng.integers(0, total, size=batch_size)
        ends = np.cumsum(sizes)
        env = np.searchsorted(ends, flat, side="right")
        offset = flat - (ends - sizes)[env]
        lo = (self.trans_written - sizes)[env]
        t = (lo + offset) % self.cap
        p = self.ptr[env, t]
        if self.k > 1:
            # frames p-k+1 .. p+1: obs is the first k, next_obs the last k
            idx = (p[:, None] + np.arange(-self.k + 1, 2)[None, :]) % self.frame_cap
            stacks = self.frames[env[:, None], idx]
            obs_np, next_np = stacks[:, :-1], stacks[:, 1:]
        else:
            obs_np = self.frames[env, p % self.frame_cap]
            next_np = self.frames[env, (p + 1) % self.frame_cap]
        dev = self.device
        return Batch(
            obs=torch.from_numpy(np.ascontiguousarray(obs_np)).to(dev),
            actions=torch.from_numpy(self.actions[env, t].astype(np.int64)).to(dev),
            rewards=torch.from_numpy(self.rewards[env, t]).to(dev),
            next_obs=torch.from_numpy(np.ascontiguousarray(next_np)).to(dev),
            terminated=torch.from_numpy(self.terminated[env, t].astype(np.float32)).to(dev),
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays (allocated up front)."""
        return sum(a.nbytes for a in (self.frames, self.ptr, self.actions, self.rewards, self.terminated))

    # -- saving ------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], **meta: Any) -> Path:
        """Write the stored transitions to ``directory`` (``.npy`` files and ``buffer.json``).

        Only the filled part of the arrays is written (about 7.1 KB per 84x84 transition). The files go
        to a temporary directory next to ``directory``, which then replaces it, so an interrupted save
        leaves the previous copy in place. Extra keyword arguments (such as the global step) are stored
        in ``buffer.json`` and returned by :meth:`load`. Nothing is pickled.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        n_frames = int(min(self.frame_cap, self.frames_written.max(initial=0)))
        n_trans = int(min(self.cap, self.trans_written.max(initial=0)))
        for stale in directory.parent.glob(f".{directory.name}.*.tmp"):  # left by a save that was killed: GBs
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
        try:
            for name in _SAVED_ARRAYS:
                arr = getattr(self, name)
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, arr[:, : n_frames if name == "frames" else n_trans], allow_pickle=False)
                    _sync(f)  # on disk before the rename below: a power cut must not leave a renamed empty file
            info = {
                "capacity": self.cap * self.num_envs,
                "obs_shape": list(self.obs_shape),
                "frame_stack": self.k,
                "num_envs": self.num_envs,
                "dtype": str(self.frames.dtype),
                "stored_frames": n_frames,
                "stored_transitions": n_trans,
                "rng": self.rng.bit_generator.state,
                "meta": meta,
                **{name: getattr(self, name).tolist() for name in _SAVED_COUNTERS},
            }
            # buffer.json is written last: a copy is complete exactly when it is present.
            with open(tmp / _META_FILE, "w", encoding="utf-8") as f:
                f.write(json.dumps(info, indent=1))
                _sync(f)
            os.chmod(tmp, 0o755)
            old = _previous_copy(directory)
            if (directory / _META_FILE).is_file():  # the current copy becomes the previous one
                if old.exists():
                    shutil.rmtree(old)
                os.replace(directory, old)
            elif directory.exists():  # an incomplete folder; a save cut off between its renames left only `old`
                shutil.rmtree(directory)  # complete, and it is kept until the new copy is in place
            os.replace(tmp, directory)
            _sync_dir(directory.parent)  # the renames themselves
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @staticmethod
    def saved_copy_exists(directory: str | os.PathLike[str]) -> bool:
        """True if :meth:`load` would find a complete copy written by :meth:`save` at ``directory``."""
        return _complete_copy(Path(directory)) is not None

    def load(self, directory: str | os.PathLike[str]) -> dict[str, Any]:
        """Restore transitions written by :meth:`save` into this (empty, same-sized) buffer.

        Returns the keyword arguments given to :meth:`save`. Every env's episode is marked as ended,
        since the env that feeds the buffer after a restart begins a new one. Raises
        :class:`~dreamarcade.errors.CheckpointError` if the copy is incomplete or was written by a buffer
        of another capacity, observation shape, frame stack, env count or dtype.
        """
        found = _complete_copy(Path(directory))
        if found is None:
            raise CheckpointError(
                f"No complete replay buffer in '{directory}' ({_META_FILE} is missing). "
                "Point to the directory a run saved it to, or delete that directory to start with an empty buffer."
            )
        directory = found
        meta_path = directory / _META_FILE
        info = read_json_object(meta_path)  # a missing field is a CheckpointError naming the file too
        expected = {
            "capacity": self.cap * self.num_envs,
            "obs_shape": list(self.obs_shape),
            "frame_stack": self.k,
            "num_envs": self.num_envs,
            "dtype": str(self.frames.dtype),
        }
        wrong = {k: (info.get(k), v) for k, v in expected.items() if info.get(k) != v}
        if wrong:
            detail = ", ".join(f"{k} {saved} (this buffer: {mine})" for k, (saved, mine) in wrong.items())
            raise CheckpointError(
                f"The replay buffer in '{directory}' was saved with {detail}. "
                "Resume with the same --buffer-size, env and --num-envs, or delete that directory to refill the "
                "buffer from scratch."
            )
        n_frames, n_trans = int(info["stored_frames"]), int(info["stored_transitions"])
        for name in _SAVED_ARRAYS:
            dest = getattr(self, name)
            want = (self.num_envs, n_frames if name == "frames" else n_trans, *dest.shape[2:])
            try:
                arr = np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            except Exception as exc:  # numpy's header parser raises EOFError, TokenError, SyntaxError... on bad bytes
                raise CheckpointError(
                    f"Corrupt replay buffer file '{directory / name}.npy' ({type(exc).__name__}: {exc}). Delete "
                    f"'{directory}' to resume with an empty buffer (refilled first), or restore it from a copy."
                ) from exc
            if arr.shape != want or arr.dtype != dest.dtype:
                raise CheckpointError(
                    f"Replay buffer file '{directory / name}.npy' holds {arr.dtype}{list(arr.shape)}, "
                    f"expected {dest.dtype}{list(want)} (truncated or from another run)."
                )
            dest[:, : want[1]] = arr
        with built_from_config(directory / "buffer.json", "The replay buffer's record"):  # edited: one line
            for name in _SAVED_COUNTERS:
                counter = np.asarray(info[name], dtype=np.int64)
                if counter.shape != (self.num_envs,):  # numpy's broadcast error named no file
                    raise ValueError(f"{name} holds {counter.shape[0] if counter.ndim else 'no'} values, one per env")
                getattr(self, name)[:] = counter
            self.rng.bit_generator.state = info["rng"]
        self.end_episodes()
        return dict(info.get("meta", {}))
