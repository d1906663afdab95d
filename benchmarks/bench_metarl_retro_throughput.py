"""Throughput of the contest stack on stable-retro: one env in this process vs N subprocess workers.

stable-retro allows one emulator per process, so parallel retro envs must be subprocesses (AsyncVectorEnv). This
measures agent steps per second (each step = 4 emulator frames, sticky) of the full PPO stack (contest env,
7-action discretizer, 84x84 grayscale, 4-frame stack) on Airstriker with random actions.

    OMP_NUM_THREADS=1 python benchmarks/bench_metarl_retro_throughput.py --steps 2000 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym
import numpy as np

from dreamarcade.baselines.common import positive_int


def make() -> gym.Env:
    from dreamarcade.envs.sonic import make_sonic_env

    return make_sonic_env("Airstriker-Genesis", "Level1", scenario="scenario")


def single(steps: int) -> float:
    env = make()
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        *_, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def vector(steps: int, workers: int) -> float:
    envs = gym.vector.AsyncVectorEnv([make] * workers, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    per_worker = max(1, steps // workers)
    t0 = time.perf_counter()
    for _ in range(per_worker):
        envs.step(rng.integers(0, 7, size=workers))
    dt = time.perf_counter() - t0
    envs.close()
    return per_worker * workers / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="agent steps per measurement")
    parser.add_argument("--workers", type=positive_int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    out = {"cpus": os.cpu_count(), "load_avg_before": os.getloadavg()[0], "steps": args.steps}
    out["single_env_in_process_sps"] = round(single(args.steps), 1)
    for w in args.workers:
        out[f"async_{w}_workers_sps"] = round(vector(args.steps, w), 1)
    out["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
