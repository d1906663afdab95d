"""Self-imitation learning (Oh et al. 2018, "Self-Imitation Learning") for the project's PPO.

A hard-exploration game gives a policy gradient method only a few lucky episodes: on Montezuma's Revenge some
seeds of the imitation agent take the key a few times early in training and never again (``benchmarks/RESULTS.md``).
Self-imitation keeps such episodes and trains on them again: for a stored step with observation ``s``, action
``a`` and discounted return-to-go ``R``, the loss is::

    L_sil = -log pi(a | s) * max(R - V(s), 0)  +  value_coef * 0.5 * max(R - V(s), 0) ** 2

so only the steps where the episode did better than the critic expects pull the policy towards the action taken
and the value up towards the return; once ``V(s)`` has caught up the step adds nothing. The advantage is a constant
for the policy term, and the loss is summed over the batch and divided by the number of steps with a positive
advantage (at least a quarter of the batch), so that a few good steps among many are not averaged away. The paper's
code divides the same way (by at least 64 of 512), and also clips the advantage to at most 1 and ``-log pi`` to at
most 5; neither clip is applied here: PPO's gradient-norm clip (``max_grad_norm``) bounds each update.

The paper keeps every episode in a prioritized replay of 10^5 steps. Here :class:`EpisodeBuffer` keeps the
``capacity`` episodes with the highest (undiscounted) training return, whole, and samples their steps uniformly: a
choice for memory (a Montezuma step is a 4 x 84 x 84 frame stack; 16 episodes of 1,000 steps are 450 MB, where
10^5 steps would be 2.8 GB) and for checkpoints, which then write an episode once, when it enters the buffer, not
the whole replay every time. Episodes end where PPO's GAE ends them (termination, truncation, and a lost life when
the env makes it a terminal), and returns are discounted with PPO's ``gamma``. The episodes being played are held
whole too, until they end: memory is about (``capacity`` + ``num_envs``) times the longest episode's observations.
The ranking and the returns are those of PPO's reward less any count-based exploration bonus the env reports
(``info["count_bonus"]``): that bonus shrinks as the counts grow, so with it the first episodes of a run, paid for
new places by the untrained policy, ranked first for good, and their steps kept returns above the critic's value and
were imitated for the whole run.

``train_ppo`` runs it when ``PPOConfig.sil_coef > 0``: ``sil_updates`` minibatches of the PPO minibatch size after
each PPO update, with the same optimizer and gradient clipping. The buffer is saved with every checkpoint in
``run_dir/self_imitation`` (one safetensors file per episode and an ``index.json``), so a resumed run goes on with
the episodes it had.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamarcade.checkpoint import atomic_write_bytes, atomic_write_text, read_json_object
from dreamarcade.errors import CheckpointError, check_count

__all__ = ["EpisodeBuffer", "self_imitation_loss"]

INDEX_FILE = "index.json"
INDEX_KIND = "dreamarcade-self-imitation"
_EPISODE_NAME = re.compile(r"episode_\d+_(\d+)\.safetensors")  # episode_<end step>_<number>.safetensors


@dataclass
class _Episode:
    obs: dict[str, np.ndarray]  # key "" for a plain array observation; a Dict space's keys otherwise
    actions: np.ndarray  # (L,) int64
    returns: np.ndarray  # (L,) float32: discounted return-to-go
    total: float  # undiscounted return: what ranks the episodes
    end_step: int  # the training step at which it ended
    file: str = ""  # its file in the save directory, once written

    def __len__(self) -> int:
        return len(self.actions)


def _file_seq(name: str) -> int:
    """The number at the end of an episode file name (``episode_<end step>_<number>.safetensors``); 0 if none."""
    m = _EPISODE_NAME.fullmatch(name)
    return int(m[1]) if m else 0


def _as_dict(obs: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in obs.items()} if isinstance(obs, dict) else {"": np.asarray(obs)}


def _from_dict(obs: dict[str, np.ndarray]) -> Any:
    return obs[""] if set(obs) == {""} else obs


class EpisodeBuffer:
    """The best whole episodes seen so far (by training return), for self-imitation.

    Args:
        capacity: how many episodes to keep. A finished episode enters a full buffer only if its return beats the
            lowest stored one (one that ties it is not kept: the buffer's episodes stay); the lowest goes, the
            oldest of them if several tie.
        gamma: the discount of the returns-to-go.
        num_envs: the number of parallel envs whose steps :meth:`add_step` receives.

    Example:
        >>> import numpy as np
        >>> buf = EpisodeBuffer(capacity=1, gamma=0.5, num_envs=1)
        >>> for reward, done in [(0.0, False), (2.0, True), (1.0, True)]:  # two episodes: return 2, then return 1
        ...     buf.add_step(np.zeros((1, 3), np.uint8), np.array([4]), np.array([reward]), np.array([done]), 10)
        >>> len(buf), buf.best_return  # the better episode stayed: two steps
        (2, 2.0)
        >>> obs, actions, returns = buf.sample(8, np.random.default_rng(0))
        >>> obs.shape, sorted(set(returns.tolist()))  # returns-to-go: 0 + 0.5 * 2, then 2
        ((8, 3), [1.0, 2.0])
    """

    def __init__(self, capacity: int, gamma: float, num_envs: int) -> None:
        check_count("capacity", capacity, 1)
        check_count("num_envs", num_envs, 1)
        if not (0.0 <= gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.capacity, self.gamma = int(capacity), float(gamma)
        self.episodes: list[_Episode] = []
        self._open: list[list[tuple[dict[str, np.ndarray], int, float]]] = [[] for _ in range(num_envs)]
        self._seq: int | None = None  # the last episode file number; read from the directory at the first save
        self._saved: _Saved | None = None  # the last save's (or load's) step and episodes

    def __len__(self) -> int:
        """The number of stored steps."""
        return sum(len(e) for e in self.episodes)

    @property
    def best_return(self) -> float:
        """The highest stored training return (NaN while empty)."""
        return max((e.total for e in self.episodes), default=float("nan"))

    def add_step(self, obs: Any, actions: Any, rewards: Any, dones: Any, global_step: int) -> None:
        """Record one vector step: ``obs`` the observations the ``actions`` were taken in (an array or a dict of
        arrays, one row per env), the ``rewards`` they got, and ``dones``, which close the envs' episodes."""
        obs = _as_dict(obs)
        actions, rewards, dones = np.asarray(actions), np.asarray(rewards, np.float64), np.asarray(dones, bool)
        for i, steps in enumerate(self._open):
            steps.append(({k: v[i].copy() for k, v in obs.items()}, int(actions[i]), float(rewards[i])))
            if dones[i]:
                self._close(i, global_step)

    def _close(self, i: int, global_step: int) -> None:
        steps, self._open[i] = self._open[i], []
        rewards = np.array([r for _, _, r in steps])
        total = float(rewards.sum())
        if len(self.episodes) >= self.capacity and total <= min(e.total for e in self.episodes):
            return  # no better than any stored episode: nothing to learn from it that the buffer lacks
        returns = np.zeros(len(rewards), np.float32)
        acc = 0.0
        for t in range(len(rewards) - 1, -1, -1):
            acc = rewards[t] + self.gamma * acc
            returns[t] = acc
        obs = {k: np.stack([o[k] for o, _, _ in steps]) for k in steps[0][0]}
        actions = np.array([a for _, a, _ in steps], np.int64)
        self.episodes = self._best([*self.episodes, _Episode(obs, actions, returns, total, int(global_step))])

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[Any, np.ndarray, np.ndarray]:
        """``batch_size`` stored steps drawn uniformly: (observations, actions, returns-to-go)."""
        if not self.episodes:
            raise ValueError("the buffer holds no episode yet: sample once len(buffer) > 0")
        lengths = np.array([len(e) for e in self.episodes])
        flat = rng.integers(0, int(lengths.sum()), size=batch_size)
        ends = np.cumsum(lengths)
        which = np.searchsorted(ends, flat, side="right")
        at = flat - (ends - lengths)[which]
        keys = self.episodes[0].obs.keys()
        obs = {k: np.stack([self.episodes[e].obs[k][t] for e, t in zip(which, at)]) for k in keys}
        actions = np.array([self.episodes[e].actions[t] for e, t in zip(which, at)])
        returns = np.array([self.episodes[e].returns[t] for e, t in zip(which, at)], np.float32)
        return _from_dict(obs), actions, returns

    # -- checkpoints ---------------------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], global_step: int) -> None:
        """Write the stored episodes to ``directory``: each new one as its own file, then the index (atomically),
        then remove the files that neither this save nor the one before lists.

        The index also lists the previous save's episodes, and their files stay: ``train_ppo`` saves the buffer just
        before the agent's checkpoint, and a run stopped between the two resumes from the previous checkpoint, with
        the buffer it had then (:meth:`load` picks it). A save cut off at any point leaves the previous index valid."""
        from safetensors.numpy import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._seq is None:  # file names stay unique across resumes: go on after the highest one on disk
            self._seq = max((_file_seq(p.name) for p in directory.glob("episode_*.safetensors")), default=0)
        for ep in self.episodes:
            if not ep.file:
                self._seq += 1
                name = f"episode_{ep.end_step}_{self._seq}.safetensors"
                arrays = {f"obs.{k}": v for k, v in ep.obs.items()}
                arrays.update(actions=ep.actions, returns=ep.returns)
                atomic_write_bytes(directory / name, save(arrays))
                ep.file = name  # only once written: a save that failed here writes the episode again next time
        index = {
            "kind": INDEX_KIND,
            "global_step": int(global_step),
            "gamma": self.gamma,
            "episodes": _entries(self.episodes),
        }
        keep = {e["file"] for e in index["episodes"]}
        if self._saved is not None:
            index["previous"] = asdict(self._saved)
            keep |= {e["file"] for e in self._saved.episodes}
        atomic_write_text(directory / INDEX_FILE, json.dumps(index, indent=1))
        self._saved = _Saved(index["global_step"], index["episodes"])
        for p in directory.glob("episode_*.safetensors"):
            if p.name not in keep:
                p.unlink()

    def load(
        self,
        directory: str | os.PathLike[str],
        global_step: int,
        obs_shapes: dict[str, tuple[int, ...]],
        obs_dtypes: dict[str, Any] | None = None,
        num_actions: int | None = None,
    ) -> None:
        """Restore the episodes saved in ``directory`` for a resume from ``global_step`` (the agent checkpoint's
        step): those of the last save, or of the one before when the run stopped between the last buffer save and
        its agent checkpoint, less any that ended after ``global_step`` (those steps are played again).
        ``obs_shapes``: one step's shape per observation key (``""`` for a plain array), checked against the files;
        ``obs_dtypes`` (the same keys) and ``num_actions`` (actions must lie in ``[0, num_actions)``), when given,
        are checked too. The returns must be finite. No directory: the buffer starts empty."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        directory = Path(directory)
        if not (directory / INDEX_FILE).is_file():
            return
        index = read_json_object(directory / INDEX_FILE)
        if index.get("kind") != INDEX_KIND:
            raise CheckpointError(
                f"'{directory / INDEX_FILE}' is not a self-imitation index (kind {index.get('kind')!r}): move it "
                "away, or resume the run that wrote it."
            )
        if float(index["gamma"]) != self.gamma:
            raise CheckpointError(
                f"the self-imitation episodes in '{directory}' were saved with gamma={index['gamma']}, not "
                f"{self.gamma}: their returns would be wrong. Resume with the run's gamma, or delete the directory."
            )
        entries, previous = _read_entries(index, directory), index.get("previous")
        if entries.global_step > global_step and previous is not None:
            previous = _read_entries(previous, directory)
            if previous.global_step <= global_step:
                entries = previous  # the agent checkpoint of the last buffer save was never written
        episodes = []
        for entry in entries.episodes:
            if entry["end_step"] > global_step:
                continue
            path = directory / entry["file"]
            try:
                arrays = load(path.read_bytes())
            except (OSError, SafetensorError) as exc:
                raise CheckpointError(
                    f"self-imitation episode '{path}' cannot be read ({exc}): delete '{directory}' to resume "
                    "without the stored episodes."
                ) from exc
            obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs.")}
            actions, returns = arrays.get("actions"), arrays.get("returns")
            n = None if actions is None else len(actions)
            fits = (
                actions is not None
                and returns is not None
                and actions.shape == returns.shape == (n,)
                and set(obs) == set(obs_shapes)
                and all(v.shape == (n, *obs_shapes[k]) for k, v in obs.items())
            )
            if not fits or not n:
                raise CheckpointError(
                    f"self-imitation episode '{path}' does not fit this run's observations "
                    f"{ {k: list(s) for k, s in obs_shapes.items()} }: it belongs to another run. Delete "
                    f"'{directory}' to resume without the stored episodes."
                )
            problem = _episode_problem(obs, actions, returns, obs_dtypes, num_actions)
            if problem:
                raise CheckpointError(
                    f"self-imitation episode '{path}' {problem}: it belongs to another run, or was edited. Delete "
                    f"'{directory}' to resume without the stored episodes."
                )
            episodes.append(_Episode(obs, actions.astype(np.int64), returns, entry["total"], entry["end_step"],
                                     entry["file"]))  # fmt: skip
        self.episodes = self._best(episodes)
        # what is on disk for this step: its files stay until the next save has been followed by an agent checkpoint
        self._saved = _Saved(int(global_step), _entries(episodes))

    def _best(self, episodes: list[_Episode]) -> list[_Episode]:
        """The ``capacity`` highest returns, in their order; among equals at the cut the newer (listed later) stays
        (:meth:`_close` only adds an episode that beats the lowest stored return)."""
        order = sorted(range(len(episodes)), key=lambda j: (-episodes[j].total, -j))[: self.capacity]
        return [episodes[j] for j in sorted(order)]


def _episode_problem(
    obs: dict[str, np.ndarray],
    actions: np.ndarray,
    returns: np.ndarray,
    obs_dtypes: dict[str, Any] | None,
    num_actions: int | None,
) -> str:
    """What makes a stored episode unusable by this run (its shapes already checked), or ``""``."""
    if obs_dtypes is not None:
        for k, v in obs.items():
            if v.dtype != np.dtype(obs_dtypes[k]):
                name = f"observation '{k}'" if k else "observations"
                return f"holds {name} of dtype {v.dtype}, this run's are {np.dtype(obs_dtypes[k])}"
    if not np.issubdtype(actions.dtype, np.integer):
        return f"holds actions of dtype {actions.dtype}, not integers"
    if num_actions is not None and (actions.min() < 0 or actions.max() >= num_actions):
        return f"holds actions {actions.min()}..{actions.max()}, outside this run's 0..{num_actions - 1}"
    if not np.issubdtype(returns.dtype, np.floating) or not np.isfinite(returns).all():
        return "holds returns that are not finite numbers"
    return ""


@dataclass
class _Saved:
    global_step: int
    episodes: list[dict[str, Any]]  # _entries' form: file, total, end_step


def _read_entries(saved: Any, directory: Path) -> _Saved:
    """A save listed in ``directory``'s index (the last one or its ``previous``), checked: its step, and for each
    episode a file of the directory's own (a plain ``episode_*.safetensors`` name), its return and its end step."""
    source = directory / INDEX_FILE
    try:
        step = int(saved["global_step"])
        episodes = [{"file": e["file"], "total": float(e["total"]), "end_step": int(e["end_step"])}
                    for e in saved["episodes"]]  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"'{source}' lists a save or an episode it cannot describe ({type(exc).__name__}: {exc}): it was edited "
            f"or cut short. Delete '{directory}' to resume without the stored episodes."
        ) from exc
    for e in episodes:
        if not isinstance(e["file"], str) or not _EPISODE_NAME.fullmatch(e["file"]):
            raise CheckpointError(
                f"'{source}' names the episode file {e['file']!r}, which is not one of the directory's own "
                f"(episode_<step>_<number>.safetensors): delete '{directory}' to resume without the stored episodes."
            )
    return _Saved(step, episodes)


def _entries(episodes: list[_Episode]) -> list[dict[str, Any]]:
    """The index entries of saved episodes."""
    return [{"file": e.file, "total": e.total, "end_step": e.end_step} for e in episodes]


def self_imitation_loss(
    log_prob: torch.Tensor, value: torch.Tensor, returns: torch.Tensor, value_coef: float
) -> tuple[torch.Tensor, float]:
    """The self-imitation loss of a batch, and the fraction of its steps with a positive advantage.

    ``log_prob``: log pi(a|s) of the stored actions; ``value``: V(s); ``returns``: the stored returns-to-go.

    Example:
        >>> import torch
        >>> loss, frac = self_imitation_loss(torch.log(torch.tensor([0.5, 0.5])), torch.tensor([0.0, 3.0]),
        ...                                  torch.tensor([1.0, 1.0]), value_coef=0.0)
        >>> round(loss.item(), 4), frac  # only the first step did better than V: -log(0.5) * 1
        (0.6931, 0.5)
    """
    advantage = (returns - value).clamp(min=0.0)
    valid = advantage > 0
    denom = max(int(valid.sum()), max(1, len(returns) // 4))
    policy = -(log_prob * advantage.detach()).sum() / denom
    value_loss = 0.5 * (advantage**2).sum() / denom
    return policy + value_coef * value_loss, float(valid.float().mean())
