"""Rollout collection: random-policy (or controller) episodes from a real env, written as frame shards.

Work is split into jobs of whole episodes; each job runs in its own process (``multiprocessing``, default)
or Ray task (``backend="ray"``), opens its own env and writes its own shards, so nothing but a small summary
crosses process boundaries.

Example:
    >>> import tempfile
    >>> from dreamarcade.world_models.collect import collect
    >>> summary = collect("doom", tempfile.mkdtemp(), episodes=1, workers=1, min_length=0)
    >>> summary["episodes"]
    1
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamarcade.checkpoint import atomic_write_text
from dreamarcade.errors import DreamArcadeError, describe_changes, input_checks
from dreamarcade.forking import wait_for_pool
from dreamarcade.world_models.rollouts import ShardWriter, read_shard_arrays

__all__ = [
    "make_real_env",
    "RandomPolicy",
    "ExploringPolicy",
    "collect",
    "CollectJob",
    "run_job",
    "ray_session",
    "check_backend",
]

ENVS = ("doom", "carracing")


def make_real_env(env: str, render_mode: str | None = None, **kwargs: Any) -> Any:
    """The paper-faithful real env for ``env`` in {"doom", "carracing"}."""
    if env == "doom":
        from dreamarcade.envs.doom import TakeCoverEnv

        return TakeCoverEnv(render_mode=render_mode, **kwargs)
    if env == "carracing":
        from dreamarcade.envs.carracing import CarRacing64Env

        return CarRacing64Env(render_mode=render_mode, **kwargs)
    raise ValueError(f"Unknown env {env!r}; choose one of {ENVS}.")


class RandomPolicy:
    """The paper's data-collection policy: a uniform random action held for a random 1-10 steps.

    Doom: a ~ U[-1, 1]. CarRacing: steer ~ U[-1, 1], gas ~ U[0, 1], brake ~ U[0, 0.3] (mostly driving, so
    the car leaves the start line and the data show the track from many positions).

    Example:
        >>> import numpy as np
        >>> from dreamarcade.world_models.collect import RandomPolicy
        >>> policy = RandomPolicy("carracing", np.random.default_rng(0))
        >>> frame = np.zeros((64, 64, 3), np.uint8)  # the policy ignores the frame
        >>> actions = np.stack([policy(frame) for _ in range(30)])
        >>> actions.shape, actions.dtype
        ((30, 3), dtype('float32'))
        >>> len(np.unique(actions, axis=0))  # each action is held for 1-10 steps
        8
        >>> bool((actions[:, 1:] >= 0).all() and (actions[:, 2] <= 0.3).all())  # gas >= 0, light brake
        True
    """

    def __init__(self, env: str, rng: np.random.Generator, max_hold: int = 10) -> None:
        self.env, self.rng, self.max_hold = env, rng, max_hold
        self._hold, self._action = 0, None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self._hold <= 0:
            if self.env == "doom":
                self._action = self.rng.uniform(-1, 1, size=1).astype(np.float32)
            else:
                self._action = np.array(
                    [self.rng.uniform(-1, 1), self.rng.uniform(0, 1), self.rng.uniform(0, 0.3)], np.float32
                )
            self._hold = int(self.rng.integers(1, self.max_hold + 1))
        self._hold -= 1
        return self._action


class ExploringPolicy:
    """A controller agent with exploration: with probability ``explore`` per step, the random policy takes over
    for one of its held actions (1-10 steps); the agent is told the action actually taken, so its M state follows
    the real episode. The paper's iterative procedure collects new data with C plus such noise.

    Example:
        >>> import numpy as np
        >>> from dreamarcade.world_models.collect import ExploringPolicy, RandomPolicy
        >>> from dreamarcade.world_models.controller import Controller
        >>> from dreamarcade.world_models.features import WorldModelAgent
        >>> from dreamarcade.world_models.model import WorldModel
        >>> wm = WorldModel.bundled("doom")
        >>> agent = WorldModelAgent(wm, Controller.for_env("doom", wm.feature_size))  # zero weights: action 0
        >>> rng = np.random.default_rng(0)
        >>> policy = ExploringPolicy(agent.reset(seed=0), RandomPolicy("doom", rng), explore=0.1, rng=rng)
        >>> frame = np.zeros((64, 64, 3), np.uint8)
        >>> actions = [policy(frame) for _ in range(20)]
        >>> policy.steps, policy.random_steps
        (20, 12)
        >>> sum(float(a[0]) != 0.0 for a in actions)  # the random steps are the ones not taken by C
        12
    """

    def __init__(self, agent: Any, random_policy: RandomPolicy, explore: float, rng: np.random.Generator) -> None:
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be a probability in [0, 1], got {explore}.")
        self.agent, self.random_policy, self.explore, self.rng = agent, random_policy, explore, rng
        self.random_steps = self.steps = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        action = self.agent(obs)  # always called, so the agent's M state advances with every frame
        self.steps += 1
        rp = self.random_policy
        if rp._hold > 0 or self.rng.random() < self.explore:
            action = rp(obs)
            self.agent.override_action(action)
            self.random_steps += 1
        return action


@dataclass
class CollectJob:
    """One worker's share of a collection (whole episodes, its own env and shards), run by :func:`run_job`.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from dreamarcade.world_models.collect import CollectJob, run_job
        >>> threads = torch.get_num_threads()
        >>> with tempfile.TemporaryDirectory() as d:
        ...     job = CollectJob("doom", d, worker=0, episodes=2, seed=0, min_length=0, max_steps=20)
        ...     print(run_job(job))
        ...     print(run_job(job))  # resumable: both episodes are found on disk, none collected again
        {'episodes': 2, 'dropped': 0, 'steps': 40, 'resumed': 0}
        {'episodes': 2, 'dropped': 0, 'steps': 40, 'resumed': 2}
        >>> torch.get_num_threads() == threads  # a job runs on one torch thread, then gives the caller's back
        True
    """

    env: str
    out_dir: str
    worker: int
    episodes: int
    seed: int
    min_length: int = 100
    max_steps: int | None = None
    episodes_per_shard: int = 8
    policy_dir: str | None = None  # a world model directory: collect with V + M + C instead of the random policy
    controller_dir: str | None = None  # the controller checkpoint used with policy_dir
    env_kwargs: dict | None = None
    explore: float = 0.0  # with policy_dir: per-step chance of switching to a random action held 1-10 steps
    # the process that started this worker process: the job stops (its stored episodes kept) once that process is
    # gone, so killing a collection (SIGTERM) does not leave workers writing on; None: no such check (inline, Ray)
    parent_pid: int | None = None


# In a worker process of collect(): a shared counter of the episodes its jobs have kept, for the progress bar
_KEPT_COUNTER: Any = None


def _share_kept_counter(counter: Any) -> None:
    """Pool initializer: the counter the jobs of this worker process add their kept episodes to."""
    global _KEPT_COUNTER
    _KEPT_COUNTER = counter


def _stored(out_dir: str, prefix: str) -> tuple[int, int]:
    """(episodes, steps) already written to ``out_dir`` in shards named ``{prefix}-*.npz``."""
    episodes = steps = 0
    for path in sorted(Path(out_dir).glob(f"{prefix}-*.npz")):
        lengths = read_shard_arrays(path, ["episode_lengths"])["episode_lengths"]  # this small array only
        episodes += len(lengths)
        steps += int(lengths.sum())
    return episodes, steps


def _earlier_workers(out_dir: str | os.PathLike[str], seed: int) -> set[int]:
    """Worker indices of the shards a collection with ``seed`` already wrote to ``out_dir``."""
    found = set()
    for path in Path(out_dir).glob("frames-s*-w*-*.npz"):
        job_seed, _, rest = path.name[len("frames-s") :].partition("-w")
        worker = rest.split("-", 1)[0]
        if job_seed.isdigit() and worker.isdigit() and int(job_seed) == seed * 1000 + int(worker):
            found.add(int(worker))
    return found


def _episode_rng(job_seed: int, episode: int, attempt: int) -> np.random.Generator:
    """The random stream of one episode, from (job seed, episode index, attempt): a resumed job continues with the
    episodes it had not stored yet instead of replaying the first ones."""
    return np.random.default_rng(np.random.SeedSequence([job_seed, episode, attempt]))


def run_job(job: CollectJob) -> dict[str, int]:
    """Collect ``job.episodes`` kept episodes; returns counts. Runs in a worker process or Ray task.

    Resumable: episodes this job already stored in ``out_dir`` (shards ``frames-s{seed}-w{worker}-*``, written
    atomically, so a killed job leaves only complete ones) count toward ``job.episodes``; only the rest are
    collected. Episode ``k`` draws its env seed and actions from (``job.seed``, ``k``), so a resumed job gives the
    same episodes as an uninterrupted one. Returns episodes and steps stored in all (``resumed``: of them, those
    found on disk), and ``dropped``: episodes of this call too short to keep.
    """
    prefix = f"frames-s{job.seed}-w{job.worker}"
    resumed, resumed_steps = _stored(job.out_dir, prefix)
    if resumed >= job.episodes:
        return {"episodes": resumed, "dropped": 0, "steps": resumed_steps, "resumed": resumed}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per worker; restored for a caller that runs jobs in its own process
    try:
        return _collect_episodes(job, prefix, resumed, resumed_steps)
    finally:
        torch.set_num_threads(threads)


def _collect_episodes(job: CollectJob, prefix: str, resumed: int, resumed_steps: int) -> dict[str, int]:
    kwargs = dict(job.env_kwargs or {})
    if job.max_steps is not None:
        kwargs["max_steps"] = job.max_steps
    env = make_real_env(job.env, **kwargs)
    writer = ShardWriter(job.out_dir, prefix=prefix, episodes_per_shard=job.episodes_per_shard)
    agent = None
    if job.policy_dir is not None:
        from dreamarcade.world_models.features import WorldModelAgent

        agent = WorldModelAgent.from_dirs(job.policy_dir, job.controller_dir or "", job.env)
    kept, dropped, attempt = resumed, 0, 0
    while kept < job.episodes:
        if job.parent_pid is not None and os.getppid() != job.parent_pid:
            break  # orphaned: the collection was killed; keep what is stored (the writer flushes below) and stop
        rng = _episode_rng(job.seed, kept, attempt)
        env_seed, agent_seed = (int(x) for x in rng.integers(0, 2**31 - 1, size=2))
        obs, _ = env.reset(seed=env_seed)
        policy = RandomPolicy(job.env, rng) if agent is None else agent.reset(seed=agent_seed)
        if agent is not None and job.explore > 0:
            policy = ExploringPolicy(agent, RandomPolicy(job.env, rng), job.explore, rng)
        frames, actions, rewards, dones = [], [], [], []
        while True:
            action = policy(obs)
            frames.append(obs)
            actions.append(np.asarray(action, np.float32).reshape(-1))
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            dones.append(terminated)
            if terminated or truncated:
                break
        # The paper dropped Doom episodes of <= 100 frames: they hold little beyond the start.
        if len(frames) <= job.min_length:
            dropped += 1
            attempt += 1
            continue
        writer.add_episode(np.stack(frames), np.stack(actions), np.array(rewards), np.array(dones))
        kept, attempt = kept + 1, 0
        if _KEPT_COUNTER is not None:
            with _KEPT_COUNTER.get_lock():
                _KEPT_COUNTER.value += 1
    writer.close()
    env.close()
    return {"episodes": kept, "dropped": dropped, "steps": resumed_steps + writer.steps_written, "resumed": resumed}


BACKENDS = ("process", "ray", "inline")  # where collect's jobs and RealPool's episodes run


def check_backend(backend: str) -> None:
    """A ValueError naming the choices unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; choose 'process', 'ray' or 'inline'.")


# episodes of at most this many steps are dropped by default: the paper's 100 for Doom (they hold little beyond the
# start); every CarRacing episode is kept
MIN_LENGTH = {"doom": 100, "carracing": 0}


@contextlib.contextmanager
def ray_session(num_cpus: int, purpose: str) -> Iterator[Any]:
    """The ``ray`` module, connected for the ``with`` block: to Ray as it is if already initialised, else to a
    running cluster (``ray.init(address="auto")``, which reads ``RAY_ADDRESS``), else to a new local instance of
    ``num_cpus`` CPUs that is shut down when the block ends (its idle workers hold RAM).

    An unreachable ``RAY_ADDRESS`` is a :class:`DreamArcadeError` naming it (a local instance would read it too
    and fail later with an unrelated error). ``purpose`` completes "needs ray for ...".
    """
    from dreamarcade.errors import require

    ray = require("ray", f"{purpose} on a Ray cluster", extra="distributed")
    started = False
    if not ray.is_initialized():
        configured = os.environ.get("RAY_ADDRESS", "")
        try:
            ray.init(address="auto", ignore_reinit_error=True, log_to_driver=False)
        except ConnectionError as exc:
            if configured:
                raise DreamArcadeError(
                    f"RAY_ADDRESS={configured} names a Ray cluster that cannot be reached ({exc}). Start that "
                    "cluster, unset RAY_ADDRESS to run on a Ray instance of this machine, or use --backend process."
                ) from exc
            # no cluster running: one of this machine's own, whatever a stale cluster file says
            ray.init(
                address="local",
                num_cpus=num_cpus,
                ignore_reinit_error=True,
                log_to_driver=False,
                include_dashboard=False,
            )
            started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def collect(
    env: str,
    out_dir: str | os.PathLike[str],
    episodes: int,
    workers: int | None = None,
    seed: int = 0,
    min_length: int | None = None,
    max_steps: int | None = None,
    backend: str = "process",
    policy_dir: str | None = None,
    controller_dir: str | None = None,
    progress: bool = False,
    env_kwargs: dict | None = None,
    explore: float = 0.0,
) -> dict[str, int]:
    """Collect ``episodes`` episodes into ``out_dir`` with ``workers`` processes (or Ray tasks).

    Resumable: run again with the same ``seed`` and ``workers`` after a kill and each job collects only the
    episodes it has not stored yet (:func:`run_job`); the summary counts every stored episode and step
    (``resumed``: those found on disk). A different ``workers`` splits the work into other jobs, which do not
    see the first run's shards: keep it fixed (its default is the CPU count) when resuming.

    ``min_length`` defaults to the paper's 100 for Doom and 0 for CarRacing. ``backend`` is "process",
    "ray" (connects to a running cluster via ``ray.init(address="auto")`` if there is one, else starts a local
    instance) or "inline" (this process; for debugging). ``explore`` (with ``policy_dir``): the per-step chance
    that the random policy takes over for one held action (:class:`ExploringPolicy`).
    """
    with input_checks():  # the request and, on a resume, the folder's earlier split
        if env not in ENVS:
            raise ValueError(f"Unknown env {env!r}; choose one of {ENVS}.")
        check_backend(backend)  # before the folder and its manifest are written
        if episodes <= 0:
            raise ValueError(f"episodes must be positive, got {episodes}.")
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be a probability in [0, 1], got {explore}.")
        if explore > 0 and policy_dir is None:  # it was recorded in the manifest and had no effect
            raise ValueError(
                f"explore={explore} (--explore) is the chance of a random action instead of the controller's, but no "
                "controller plays: pass one with --collect-controller DIR (policy_dir=..., controller_dir=...), or "
                "drop --explore (the random policy collects without it)."
            )
        if controller_dir is not None and policy_dir is None:  # it collected with the random policy, silently
            raise ValueError(
                "controller_dir is given without policy_dir, the world model whose features the controller reads: "
                "pass both (the CLI's --collect-controller does), or neither for the random policy."
            )
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed (--seed) must be an integer >= 0, got {seed!r}.")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps (--max-steps) must be >= 1, or None for the env's own cap, got {max_steps}.")
        if policy_dir is not None:  # a controller that does not fit the world model: refused here, not in every job
            from dreamarcade.world_models.features import WorldModelAgent

            WorldModelAgent.from_dirs(policy_dir, controller_dir or "", env)
            if controller_dir is not None:  # as evaluate and video: a controller evolved in another M plays blind
                from dreamarcade.world_models.model import check_controller_matches

                check_controller_matches(controller_dir, policy_dir, flag="--collect-controller")
        out_dir = Path(out_dir).resolve()  # absolute: Ray tasks run in the cluster's working directory, not this one
        workers = max(1, min(workers or (os.cpu_count() or 1), episodes))
        if min_length is None:
            min_length = MIN_LENGTH[env]
        if max_steps is not None and min_length >= max_steps:
            # episodes capped below the drop threshold would all be dropped and collection would never end
            min_length = 0
        if workers > 1000:  # job i's seed is seed * 1000 + i: seeds s and s + 1 would share episodes
            raise ValueError(
                f"collect runs at most 1000 jobs per seed, got {workers} workers: pass --workers 1000 or fewer "
                "(each job collects several episodes), or collect in parts with seeds 1000 * k apart."
            )
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        per = [episodes // workers + (1 if i < episodes % workers else 0) for i in range(workers)]
        n_jobs = sum(n > 0 for n in per)
        earlier = _earlier_workers(out_dir, seed)
        manifest = Path(out_dir) / f"collect-s{seed}.json"  # the split of this seed's collection, for a resume
        policy = [None if d is None else str(Path(d).resolve()) for d in (policy_dir, controller_dir)]
        record = {"seed": seed, "workers": n_jobs, "episodes": episodes, "min_length": min_length, "env": env,
                  "max_steps": max_steps, "explore": explore, "policy_dir": policy[0],
                  "controller_dir": policy[1]}  # fmt: skip
        if manifest.is_file():
            old = json.loads(manifest.read_text())
            if old.get("policy_dir") is None and "explore" in old:  # explore without a policy was recorded, unused
                old["explore"] = 0.0
            earlier_jobs = int(old["workers"])
            split_differs = earlier_jobs != n_jobs
            # another env, step cap or policy: the stored episodes would count as this collection's (a Doom folder
            # "resumed" as CarRacing and V then trained on Doom frames). Keys a manifest lacks are not compared.
            recorded = [k for k in ("env", "max_steps", "min_length", "explore", "policy_dir", "controller_dir")
                        if k in old]  # fmt: skip
            changed = describe_changes(old, record, recorded)
            if earlier and changed:
                raise ValueError(
                    f"'{out_dir}' holds episodes collected with seed {seed} and other settings ({changed}):"
                    " a resume would mix two kinds of episodes. Resume with the settings it was collected with, or "
                    "collect into another folder (--frames-dir) or with another --seed."
                )
        else:  # a collection from before the manifest: its highest worker index is all there is to go on
            earlier_jobs = max(earlier, default=-1) + 1
            split_differs = earlier_jobs > n_jobs
        if earlier and split_differs:
            raise ValueError(
                f"'{out_dir}' holds episodes collected with seed {seed} by {earlier_jobs} workers; resuming with "
                f"{n_jobs} would split the work differently and collect duplicates or extra episodes. Pass --workers "
                f"{earlier_jobs} (workers=...) to resume it, or another --seed or folder for new data."
            )
    atomic_write_text(manifest, json.dumps(record) + "\n")
    jobs = [
        CollectJob(
            env,
            str(out_dir),
            i,
            n,
            seed * 1000 + i,
            min_length,
            max_steps,
            policy_dir=policy[0],  # absolute, as out_dir: a Ray task runs in the cluster's working directory
            controller_dir=policy[1],
            env_kwargs=env_kwargs,
            explore=explore,
        )
        for i, n in enumerate(per)
        if n > 0
    ]
    if backend == "inline":
        results = [run_job(j) for j in jobs]
    elif backend == "process":
        import multiprocessing as mp

        jobs = [dataclasses.replace(j, parent_pid=os.getpid()) for j in jobs]
        ctx = mp.get_context("spawn")  # ViZDoom and torch are not fork-safe
        kept = ctx.Value("q", 0)  # episodes kept by this call's jobs, counted as each one is stored
        what = f"collect {env}"
        with ctx.Pool(len(jobs), initializer=_share_kept_counter, initargs=(kept,)) as pool:
            pending = pool.map_async(run_job, jobs)
            if progress:  # in episodes, not jobs: each job collects many, so a bar of jobs sat at 0 for hours
                from tqdm import tqdm

                stored = sum(min(_stored(j.out_dir, f"frames-s{j.seed}-w{j.worker}")[0], j.episodes) for j in jobs)
                desc = f"collect {env} ({len(jobs)} workers)"
                with tqdm(total=episodes, initial=stored, unit="episode", desc=desc) as bar:
                    results = wait_for_pool(pool, pending, what, tick=lambda: bar.update(stored + kept.value - bar.n))
            else:  # a worker that dies (killed, out of memory) loses its job: get() alone waited forever
                results = wait_for_pool(pool, pending, what)
    else:  # "ray" (the backend was checked above)
        with ray_session(len(jobs), "collecting rollouts") as ray:
            remote = ray.remote(num_cpus=1)(run_job)
            results = ray.get([remote.remote(j) for j in jobs])
        missing = [j.worker for j in jobs if not list(out_dir.glob(f"frames-s{j.seed}-w{j.worker}-*.npz"))]
        if missing:
            raise RuntimeError(
                f"Ray workers {missing} reported episodes, but their shards are not in '{out_dir}' on this machine: "
                "the cluster's nodes need a shared filesystem mounted at the same path (or use --backend process)."
            )
    return {k: sum(r[k] for r in results) for k in ("episodes", "dropped", "steps", "resumed")}
