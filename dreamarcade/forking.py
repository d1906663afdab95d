"""Torch in forked processes: one thread in every child forked after torch was imported.

A child forked after its parent ran torch on several threads inherits OpenMP's state but not its threads, and its
first multi-threaded op waits forever. ``gym.make_vec(id, vectorization_mode="async")`` forks its workers on
Linux, after building one env in the parent to read the spaces, so every worker that loads a world model or an
embedding (``DreamDoom-v0``, the ``*Features-v0`` ids, ``MontezumaImitation-v0``) hung. Importing dreamarcade
registers :func:`one_torch_thread_after_fork`, which limits such a child to one torch thread, as PyTorch's own
DataLoader workers do: one thread never enters OpenMP's pool. Workers that want more threads must not be forked:
start them with ``vector_kwargs={"context": "spawn"}``; :func:`check_threads` refuses more in a forked child.

Example:
    >>> from dreamarcade import forking
    >>> forking.check_threads(4, "embed_threads")  # this process was not forked from a torch parent: fine
    >>> forking.forked_with_torch()
    False
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["check_threads", "forked_with_torch", "one_torch_thread_after_fork", "wait_for_pool"]

_forked_with_torch = False


def one_torch_thread_after_fork() -> None:
    """The ``os.register_at_fork(after_in_child=...)`` hook: one torch thread if the parent had imported torch."""
    global _forked_with_torch
    torch = sys.modules.get("torch")
    if torch is not None:  # a parent that never imported torch has no OpenMP state to hand down
        _forked_with_torch = True
        torch.set_num_threads(1)


def forked_with_torch() -> bool:
    """Whether this process was forked from a parent that had imported torch (so it must stay on one thread)."""
    return _forked_with_torch


def check_threads(threads: int, setting: str) -> None:
    """Refuse more than one torch thread in a process forked from a torch parent: it would hang, not fail."""
    if threads > 1 and _forked_with_torch:
        raise ValueError(
            f"{setting} is {threads} in a forked process: torch's threads hang after a fork from a parent that used "
            f"them. Start the workers with spawn (gym.make_vec(..., vector_kwargs={{'context': 'spawn'}})), or set "
            "it to 1."
        )


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=one_torch_thread_after_fork)


def wait_for_pool(
    pool: Any, result: Any, what: str, tick: Callable[[], None] | None = None, interval: float = 0.5
) -> Any:
    """``result.get()`` of a ``multiprocessing`` pool's ``map_async``, or a
    :class:`~dreamarcade.errors.WorkerDiedError` as soon as one of the pool's worker processes dies before it is
    ready: the pool replaces a dead worker but loses its task, so ``get()`` would wait forever. ``tick`` is called
    every ``interval`` seconds (a progress bar). ``what`` names the work in the message.

    >>> import multiprocessing as mp
    >>> from dreamarcade.forking import wait_for_pool
    >>> with mp.get_context("spawn").Pool(1) as pool:
    ...     wait_for_pool(pool, pool.map_async(abs, [-1, -2]), "abs")
    [1, 2]
    """
    from dreamarcade.errors import WorkerDiedError

    workers = list(pool._pool)  # the pool's worker processes, as multiprocessing keeps them
    while not result.ready():
        result.wait(interval)
        if tick is not None:
            tick()
        if not result.ready() and any(w.exitcode is not None for w in workers):
            codes = [w.exitcode for w in workers if w.exitcode is not None]
            raise WorkerDiedError(
                f"a worker process of {what} died (exit code {codes[0]}: killed, out of memory or a crashed "
                "emulator) and took its task with it. What was saved is kept: run the same command again to go on."
            )
    return result.get()
