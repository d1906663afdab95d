"""Throughput: DreamDoom-v0 (single and batched) vs the real ViZDoom TakeCover, one run, same process.

    OMP_NUM_THREADS=1 python benchmarks/bench_dreams_throughput.py --num-envs 1024 --seconds 20
    python benchmarks/bench_dreams_throughput.py --skills   # random-policy survival per ViZDoom doom_skill

Prints a Markdown table. Every env gets the same wall-clock budget and random actions.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import dreamarcade  # noqa: F401


def steps_per_second(env: gym.Env, seconds: float, vector: bool = False) -> float:
    env.reset(seed=0)
    env.action_space.seed(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if vector:
            n += env.num_envs
        else:
            n += 1
            if term or trunc:
                env.reset()
    return n / (time.perf_counter() - t0)


def random_survival(skill: int, episodes: int) -> tuple[float, float]:
    env = gym.make("DoomTakeCover-v0", doom_skill=skill)
    env.action_space.seed(0)
    lens = []
    for i in range(episodes):
        env.reset(seed=i)
        t, done = 0, False
        while not done:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            t, done = t + 1, term or trunc
        lens.append(t)
    env.close()
    return float(np.mean(lens)), float(np.std(lens))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skills", action="store_true", help="measure random-policy survival per doom_skill instead")
    p.add_argument("--episodes", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.skills:
        print("| doom_skill | random policy, steps survived (mean +- std) |\n|---|---|")
        for s in (3, 4, 5):
            m, sd = random_survival(s, args.episodes)
            print(f"| {s} | {m:.0f} +- {sd:.0f} ({args.episodes} episodes) |")
        return
    rows = []
    real = steps_per_second(gym.make("DoomTakeCover-v0"), args.seconds)
    rows.append(("DoomTakeCover-v0 (real ViZDoom, 64x64 frames)", real))
    rows.append(("DoomTakeCoverFeatures-v0 (real + V + M, obs [z,c,h])",
                 steps_per_second(gym.make("DoomTakeCoverFeatures-v0"), args.seconds)))  # fmt: skip
    rows.append(("DreamDoom-v0, 1 env", steps_per_second(gym.make("DreamDoom-v0"), args.seconds)))
    vec = gym.make_vec("DreamDoom-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point")
    rows.append((f"DreamDoom-v0 batched, {args.num_envs} envs", steps_per_second(vec, args.seconds, vector=True)))
    print(f"torch threads: {args.threads}; {args.seconds:.0f} s per row\n")
    print("| env | steps/s | vs real ViZDoom |\n|---|---|---|")
    for name, sps in rows:
        print(f"| {name} | {sps:,.0f} | {sps / real:.2f}x |")


if __name__ == "__main__":
    main()
