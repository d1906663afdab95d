"""Rollout collection on a local Ray instance (the same code path that scales out to a cluster)."""

from __future__ import annotations

import pytest

from dreamarcade.world_models.collect import collect
from dreamarcade.world_models.rollouts import list_shards, load_shard


def test_collect_with_ray_backend(tmp_path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        summary = collect("doom", tmp_path, episodes=2, workers=2, seed=3, min_length=0, max_steps=40, backend="ray")
    finally:
        ray.shutdown()
    assert summary["episodes"] == 2
    shards = list_shards(tmp_path)
    assert len(shards) == 2  # one per Ray task
    assert sum(int(load_shard(p)["episode_lengths"].sum()) for p in shards) == summary["steps"]


def test_collect_starts_and_stops_its_own_ray_instance_and_writes_where_the_caller_looks(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    monkeypatch.chdir(tmp_path)  # a relative folder is resolved here, in the caller, not in the Ray workers
    summary = collect("doom", "rel/out", episodes=1, workers=1, seed=0, min_length=0, max_steps=20, backend="ray")
    assert not ray.is_initialized()  # the instance it started is shut down: its idle workers held ~300 MB each
    assert summary["episodes"] == 1 and len(list_shards(tmp_path / "rel" / "out")) == 1
    with pytest.raises(ValueError, match=r"seed \(--seed\) must be an integer >= 0"):
        collect("doom", tmp_path / "bad", episodes=1, seed=-1, backend="inline")
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_collect_names_an_unreachable_ray_address_instead_of_falling_back(tmp_path) -> None:
    """RAY_ADDRESS set, its cluster down: the local fallback read RAY_ADDRESS too and failed with an unrelated
    ValueError after minutes. Run in a fresh process, so Ray reads the short connect timeouts set here."""
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    for knob in ("gcs_server_port_wait_time_s", "py_gcs_connect_timeout_s", "gcs_rpc_server_connect_timeout_s"):
        env[f"RAY_{knob}"] = "1"  # Ray's own settings: give up after ~4 s instead of ~40 s or more
    code = (
        "from dreamarcade.world_models.collect import collect\n"
        "from dreamarcade.errors import DreamArcadeError\n"
        "try:\n"
        f"    collect('doom', {str(tmp_path)!r}, episodes=1, workers=1, min_length=0, max_steps=5, backend='ray')\n"
        "except DreamArcadeError as e:\n"
        "    print('REFUSED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert f"REFUSED RAY_ADDRESS=127.0.0.1:{port} names a Ray cluster that cannot be reached" in out.stdout, out.stderr
    assert "unset RAY_ADDRESS" in out.stdout and not list(tmp_path.glob("*.npz"))


def test_real_env_episodes_on_ray_actors_match_the_worker_processes() -> None:
    """evolve --where real and evaluate scale out through Ray actors (DESIGN: population evaluation goes through Ray);
    every backend plays the same episodes for the same parameters and seeds."""
    ray = pytest.importorskip("ray")
    import numpy as np

    from dreamarcade.baselines.world_models import RealPool
    from dreamarcade.world_models.controller import Controller
    from dreamarcade.world_models.model import WorldModel, bundled_dir

    ctrl = Controller.for_env("doom", feature_size=WorldModel.bundled("doom").feature_size)
    rng = np.random.default_rng(0)
    params = [rng.normal(0, 0.5, ctrl.num_params) for _ in range(3)]
    seeds = [11, 12, 13]
    got = {}
    import torch

    threads = torch.get_num_threads()
    # the user's own Ray with one CPU: an actor per worker (2) would leave one never placed and its tasks waiting
    # forever, so the pool makes as many actors as the cluster has CPUs, and leaves the user's Ray running
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for backend in ("inline", "process", "ray"):
            pool = RealPool("doom", str(bundled_dir("doom")), ctrl, workers=2, backend=backend)
            try:
                if backend == "ray":  # the episodes run on a Ray actor, not quietly in this process
                    assert len(pool._actors) == 1
                got[backend] = pool.episodes(params, seeds, max_steps=300)
            finally:
                pool.close()
            assert torch.get_num_threads() == threads  # inline: the worker's one thread is not the caller's
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert got["ray"] == got["process"] == got["inline"] and len(got["ray"]) == 3
    assert len({steps for _, steps in got["ray"]}) == 3  # three different episodes (not all cut at the cap)
    with pytest.raises(ValueError, match="Unknown backend 'rey'"):
        RealPool("doom", str(bundled_dir("doom")), ctrl, workers=1, backend="rey")
