"""Envs that hold torch models work in forked vector workers (gym.make_vec(..., vectorization_mode="async"))."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("ale_py")

# the parent runs torch on two threads first, so the forked workers inherit OpenMP's state (the case that hung)
SCRIPT = textwrap.dedent(
    """
    import gymnasium as gym, importlib.util, torch
    import dreamarcade

    torch.set_num_threads(2)
    torch.randn(512, 512) @ torch.randn(512, 512)
    fork = {"context": "fork"}
    for env_id in ("DreamDoom-v0", "MontezumaImitation-v0"):
        envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="async", vector_kwargs=fork)
        envs.reset(seed=0)
        for _ in range(3):
            envs.step(envs.action_space.sample())
        envs.close()
        print("ok", env_id, flush=True)
    if importlib.util.find_spec("onnxruntime"):  # ONNX Runtime opens its sessions in the worker: threads work
        envs = gym.make_vec(
            "MontezumaImitation-v0", num_envs=2, vectorization_mode="async", vector_kwargs=fork, embed_threads=2,
            embed_backend="onnxruntime",
        )
        envs.reset(seed=0)
        envs.step(envs.action_space.sample())
        envs.close()
        print("ok onnxruntime embed_threads=2", flush=True)
    envs = gym.make_vec(
        "MontezumaImitation-v0", num_envs=2, vectorization_mode="async", vector_kwargs=fork, embed_threads=2,
        embed_backend="torch",
    )
    try:
        envs.reset(seed=0)
    except ValueError as exc:
        print("refused:", exc, flush=True)
    finally:
        envs.close(terminate=True)
    """
)


def test_forked_async_workers_build_and_step_model_envs_and_refuse_more_threads() -> None:
    # run in a child process with a timeout: before the fix, each worker waited forever inside its model load
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok DreamDoom-v0" in out.stdout and "ok MontezumaImitation-v0" in out.stdout
    assert "refused: the embedder's num_threads (embed_threads) is 2 in a forked process" in out.stdout  # torch
    if importlib.util.find_spec("onnxruntime"):
        assert "ok onnxruntime embed_threads=2" in out.stdout
    assert "'context': 'spawn'" in out.stdout


def test_a_process_not_forked_from_torch_may_use_more_threads() -> None:
    from dreamarcade import forking

    assert not forking.forked_with_torch()
    forking.check_threads(8, "threads")  # no error


def test_wait_for_pool_raises_when_a_worker_dies_with_its_task() -> None:
    """A pool replaces a dead worker but loses its task: collect and the real-env evolve waited forever."""
    import multiprocessing as mp
    import os

    import pytest

    from dreamarcade.errors import WorkerDiedError
    from dreamarcade.forking import wait_for_pool

    with mp.get_context("spawn").Pool(1) as pool:
        assert wait_for_pool(pool, pool.map_async(abs, [-3]), "abs") == [3]
        with pytest.raises(WorkerDiedError, match=r"a worker process of a test died \(exit code 7"):
            wait_for_pool(pool, pool.map_async(os._exit, [7]), "a test", interval=0.1)
