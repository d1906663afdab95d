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
