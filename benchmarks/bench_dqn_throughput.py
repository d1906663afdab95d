"""DQN training throughput (env steps/s, learning included): dreamarcade vs SB3 DQN, same hyperparameters.

Both train on DQNPong-v0 (the same env object type, so only the agents differ) with buffer 100k, batch 32,
one gradient step every 4 env steps, target copy every 1000 steps, Adam 1e-4, Huber loss, grad clip 10,
the same number of torch threads, and learning from step ``--learning-starts``. Each agent is timed over
the same span: from building its env and networks to the end of ``learn`` / ``train`` (for dreamarcade this
includes its final checkpoint and learning-curve PNG). Every repeat runs both, in a random order, and the
medians are reported; an untimed warm-up run of each comes first (``--warmup-steps``). One difference stays:
before ``learning_starts`` SB3 acts at random without a forward pass, while dreamarcade's epsilon-greedy schedule
(CleanRL's) runs the network once epsilon has decayed.

    python benchmarks/bench_dqn_throughput.py --steps 10000 --learning-starts 2000 --repeats 2
    python benchmarks/bench_dqn_throughput.py --precisions fp32 bf16   # also the mixed-precision updates
    OMP_NUM_THREADS=1 python benchmarks/bench_dqn_throughput.py --steps 30000 --learning-starts 1000 --repeats 2 \
        --denormals

dreamarcade's trainer flushes denormal floats to zero (``--flush-denormal``, on by default); SB3 leaves the CPU's
IEEE default. The flag is per thread, so every contender starts from the IEEE default (reset before each run)
and ``--denormals`` adds the two crossed rows: dreamarcade with ``--no-flush-denormal`` and SB3 with
``torch.set_flush_denormal(True)``. Denormals only appear after some hundreds of updates (Adam's first moment of
a dead unit decays by 0.9 per update), so they need runs of tens of thousands of steps, and ``--threads 1``
(worker threads created before a run keep their mode).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import torch

import dreamarcade  # noqa: F401
from dreamarcade.baselines.common import positive_int
from dreamarcade.baselines.dqn import DQNConfig, train


def run_ours(steps: int, learning_starts: int, precision: str = "fp32", flush: bool = True) -> float:
    with tempfile.TemporaryDirectory(prefix="bench_dqn_") as run_dir:  # removed after the run (checkpoint, PNG)
        return _time_ours(run_dir, steps, learning_starts, precision, flush)


def _time_ours(run_dir: str, steps: int, learning_starts: int, precision: str, flush: bool) -> float:
    cfg = DQNConfig(
        precision=precision,
        flush_denormal=flush,
        env_id="DQNPong-v0",
        total_timesteps=steps,
        learning_starts=learning_starts,
        buffer_size=100_000,
        batch_size=32,
        train_frequency=4,
        target_network_frequency=1000,
        learning_rate=1e-4,
        exploration_fraction=0.1,
        end_e=0.01,
        max_grad_norm=10.0,
        video_episodes=0,
        progress=False,
        tensorboard=False,
        checkpoint_interval=10**9,
        run_dir=run_dir,
    )
    t0 = time.perf_counter()
    train(cfg)
    return steps / (time.perf_counter() - t0)


def run_sb3(steps: int, learning_starts: int, flush: bool = False) -> float:
    from stable_baselines3 import DQN

    torch.set_flush_denormal(flush)
    t0 = time.perf_counter()  # the same span as run_ours: env and networks built inside the timer
    env = gym.make("DQNPong-v0")
    model = DQN(
        "CnnPolicy",
        env,
        learning_rate=1e-4,
        buffer_size=100_000,
        learning_starts=learning_starts,
        batch_size=32,
        tau=1.0,
        gamma=0.99,
        train_freq=4,
        gradient_steps=1,
        target_update_interval=1000,
        exploration_fraction=0.1,
        exploration_final_eps=0.01,
        max_grad_norm=10.0,
        verbose=0,
        seed=1,
        device="cpu",
    )
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--learning-starts", type=int, default=2_000)
    p.add_argument("--repeats", type=positive_int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both agents")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=500,
        help="an untimed run of each contender first, this long (imports, lazy initialisation; 0: none)",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16"],
        help="dreamarcade's --precision values to time (bf16: mixed-precision updates; SB3 always runs fp32)",
    )
    p.add_argument(
        "--denormals",
        action="store_true",
        help="also time dreamarcade with --no-flush-denormal and SB3 with denormals flushed",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sb3 = "SB3 DQN (CnnPolicy, fp32)"
    if a.warmup_steps < 0:
        p.error(f"--warmup-steps must be >= 0 (0: no warm-up), got {a.warmup_steps}")

    def make(steps: int, learning_starts: int) -> dict[str, Callable[[], float]]:
        runs = {f"dreamarcade DQN, --precision {x}": partial(run_ours, steps, learning_starts, x) for x in a.precisions}
        runs[sb3] = partial(run_sb3, steps, learning_starts)
        if a.denormals:
            runs["dreamarcade DQN, --precision fp32 --no-flush-denormal"] = partial(
                run_ours, steps, learning_starts, "fp32", False
            )
            runs["SB3 DQN, denormals flushed"] = partial(run_sb3, steps, learning_starts, True)
        return runs

    contenders = make(a.steps, a.learning_starts)
    if a.warmup_steps:  # the first run in a process pays ~1 s of one-time costs; no contender should carry them
        for warm in make(a.warmup_steps, min(a.learning_starts, a.warmup_steps // 2)).values():
            torch.set_flush_denormal(False)
            warm()
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    order_rng = random.Random(0)
    for r in range(a.repeats):
        order = list(runs)
        order_rng.shuffle(order)  # every repeat runs each contender once, in a random order
        for name in order:
            torch.set_flush_denormal(False)  # the CPU's default; a contender that flushes sets it itself
            runs[name].append(contenders[name]())
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} steps/s" for k, v in runs.items()), flush=True)
    print(
        f"| agent ({a.steps:,} steps, learning from {a.learning_starts:,}, {a.threads} torch thread(s))"
        f" | env steps/s (median) | per-repeat values | vs SB3 (median of the per-repeat ratios) |"
    )
    print("|---|---|---|---|")
    for name, values in runs.items():
        m = statistics.median(values)
        # each repeat ran every contender under the same load: the ratio is taken within a repeat
        ratio = statistics.median(v / s for v, s in zip(values, runs[sb3]))
        print(f"| {name} | {m:,.0f} | {', '.join(f'{v:.0f}' for v in values)} | {ratio:.2f}x |")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
