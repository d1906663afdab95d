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
