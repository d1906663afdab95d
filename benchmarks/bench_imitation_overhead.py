"""Wrapper overhead: env steps/s of Montezuma's Revenge with and without YouTubeImitationReward.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_imitation_overhead.py --steps 1000 --num-envs 8

Single env: ``ALE/MontezumaRevenge-v5`` (skip 4, RGB) alone vs. wrapped. Vector: a SyncVectorEnv of ``num_envs`` of
them alone vs. wrapped by :class:`YouTubeImitationRewardVector` (one batched embedding pass per step). Random
actions; one torch thread. Reports steps/s (env steps, i.e. agent steps, summed over sub-envs) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch


def _rate(env, steps: int, vector: bool) -> float:
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n = env.num_envs if vector else 1
    t = time.perf_counter()
    for _ in range(steps):
        a = rng.integers(0, 18, size=n) if vector else int(rng.integers(0, 18))
        _, _, term, trunc, _ = env.step(a)
        if not vector and (term or trunc):
            env.reset()
    return steps * n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--asset-dir", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    import ale_py

    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.wrappers.imitation import (
        YouTubeImitationReward,
        YouTubeImitationRewardVector,
        load_imitation_model,
    )

    gym.register_envs(ale_py)

    def base() -> gym.Env:
        return gym.make("ALE/MontezumaRevenge-v5", frameskip=4, repeat_action_probability=0.0)

    embedder, ck = load_imitation_model(a.asset_dir or ASSET_DIR)
    out = {}
    out["single_plain"] = _rate(base(), a.steps, False)
    out["single_wrapped"] = _rate(YouTubeImitationReward(base(), embedder, ck), a.steps, False)
    vsteps = max(1, a.steps // a.num_envs)
    out["vector_plain"] = _rate(gym.vector.SyncVectorEnv([base] * a.num_envs), vsteps, True)
    wrapped = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([base] * a.num_envs), embedder, ck)
    out["vector_wrapped"] = _rate(wrapped, vsteps, True)
    print("| setting | plain steps/s | with imitation reward | ratio |\n|---|---|---|---|")
    for kind, label in (("single", "single env"), ("vector", f"vector, {a.num_envs} envs")):
        plain, wr = out[f"{kind}_plain"], out[f"{kind}_wrapped"]
        print(f"| {label} | {plain:.0f} | {wr:.0f} | {wr / plain:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
