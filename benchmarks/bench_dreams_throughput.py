"""Throughput: DreamDoom-v0 (single and batched) vs the real ViZDoom TakeCover, one run, same process.

    OMP_NUM_THREADS=1 python benchmarks/bench_dreams_throughput.py --num-envs 1024 --seconds 15 --threads 1 2
    python benchmarks/bench_dreams_throughput.py --device cuda --num-envs 16384   # batched rows on a GPU
    python benchmarks/bench_dreams_throughput.py --skills   # random-policy survival per ViZDoom doom_skill

Prints a Markdown table. Every row gets the same wall-clock budget and random actions. The rows are measured
in interleaved rounds (each row ``seconds / rounds`` per round), so load from other processes on a shared
machine falls on all rows alike. Besides wall-clock steps/s, each row reports steps per CPU-second (this
process's threads plus child processes: ViZDoom runs its engine in one), which time-slicing on a loaded
machine does not distort. ``reference`` rows step the dream the way DreamDoom-v0 did before the fast path
(``MDNRNN.step`` + ``sample_next`` + ``ConvVAE.decode_to_frames``): the same model, same obs, for a before/after
ratio from the same run.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import dreamarcade  # noqa: F401
from dreamarcade.baselines.common import positive_int
from dreamarcade.world_models.mdnrnn import sample_next
from dreamarcade.world_models.model import WorldModel


class _ReferenceDream:
    """The dream step before the fast path: LSTMCell, full head, sample_next; obs built as DreamEnv did."""

    def __init__(self, num: int, obs_type: str, seed: int = 0, device: str = "cpu") -> None:
        self.wm = WorldModel.bundled("doom", device=device)
        self.num, self.obs_type, self.device = num, obs_type, device
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.reset_all()

    @torch.no_grad()
    def reset_all(self) -> None:
        wm, n = self.wm, self.num
        idx = torch.randint(0, wm.initial_mu.shape[0], (n,), generator=self.gen, device=self.device)
        eps = torch.randn(n, wm.z_size, generator=self.gen, device=self.device)
        self.z = wm.initial_mu[idx] + torch.exp(0.5 * wm.initial_logvar[idx]) * eps
        self.h, self.c = wm.rnn.initial_state(n, self.device)
        self.first, self.t = torch.ones(n, device=self.device), 0

    @torch.no_grad()
    def step(self) -> bool:
        rnn = self.wm.rnn
        a = torch.as_tensor(self.rng.uniform(-1, 1, (self.num, 1)).astype(np.float32), device=self.device)
        out, (self.h, self.c) = rnn.step(self.z, a, (self.h, self.c), restart=self.first)
        nxt = sample_next(rnn, out, self.wm.temperature, self.gen)
        self.z, self.first, self.t = nxt["z"], torch.zeros(self.num, device=self.device), self.t + 1
        if self.obs_type == "pixels":
            self.wm.vae.decode_to_frames(self.z)
        else:
            self.wm.make_features(self.z, self.h, self.c).cpu().numpy().astype(np.float32)
        done = bool(nxt["done"].any()) if self.num == 1 else False
        if done or self.t >= self.wm.max_steps:
            self.reset_all()
        return True


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children_cpu_seconds() -> float:
    """CPU time of this process's live children (ViZDoom runs its engine in a child process), from /proc."""
    total = 0.0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                for pid in f.read().split():
                    with open(f"/proc/{pid}/stat") as g:
                        fields = g.read().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except OSError:
        pass
    return total


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its children: robust to a loaded machine."""
    return time.process_time() + _children_cpu_seconds()


class _Row:
    """One benchmark row: a stepping callable, the env steps each call makes, and its torch thread count."""

    def __init__(self, name: str, make: Callable[[], Callable[[], None]], per_call: int, threads: int) -> None:
        self.name, self.make, self.per_call, self.threads = name, make, per_call, threads
        self.steps, self.seconds, self.cpu, self._step = 0, 0.0, 0.0, None

    def run(self, seconds: float) -> None:
        torch.set_num_threads(self.threads)
        if self._step is None:
            self._step = self.make()
            self._step()  # warm-up outside the clock
        n, c0, t0 = 0, _cpu_seconds(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self._step()
            n += self.per_call
        self.seconds += time.perf_counter() - t0
        self.cpu += _cpu_seconds() - c0
        self.steps += n

    @property
    def rate(self) -> float:
        return self.steps / max(self.seconds, 1e-9)

    @property
    def cpu_rate(self) -> float:
        """Steps per CPU-second (all threads and child processes)."""
        return self.steps / max(self.cpu, 1e-9)


def _env_stepper(make_env: Callable[[], gym.Env]) -> Callable[[], Callable[[], None]]:
    def make() -> Callable[[], None]:
        env = make_env()
        env.reset(seed=0)
        env.action_space.seed(0)

        def step() -> None:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()

        return step

    return make


def _vec_stepper(
    num: int, obs_type: str, device: str = "cpu", precision: str = "fp32"
) -> Callable[[], Callable[[], None]]:
    def make() -> Callable[[], None]:
        env = gym.make_vec(
            "DreamDoom-v0",
            num_envs=num,
            vectorization_mode="vector_entry_point",
            obs_type=obs_type,
            device=device,
            precision=precision,
        )
        env.reset(seed=0)
        env.action_space.seed(0)
        return lambda: env.step(env.action_space.sample())

    return make


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
    p.add_argument("--num-envs", type=positive_int, default=1024)
    p.add_argument("--pixel-envs", type=int, default=64, help="batch of the batched pixels row (0: skip)")
    p.add_argument("--seconds", type=float, default=20.0, help="wall-clock budget per row (all rounds)")
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds the budget is split into")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads for the batched rows")
    p.add_argument("--no-reference", action="store_true", help="skip the pre-fast-path reference rows")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16"],
        help="DreamVectorEnv precision of the batched rows (bf16: M's matmuls in bfloat16)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the batched dream rows (e.g. cuda)")
    p.add_argument(
        "--skills",
        type=int,
        nargs="*",
        default=None,
        help="measure random-policy survival for these doom_skill values instead (default 2 3 4 5)",
    )
    p.add_argument("--episodes", type=positive_int, default=100)
    args = p.parse_args()
    if not args.seconds > 0:  # 0 built every env, then divided by the real env's 0 steps
        p.error(f"--seconds must be > 0 (the wall-clock budget of each row), got {args.seconds}")
    torch.set_num_threads(1)
    if args.skills is not None:
        print("| doom_skill | random policy, steps survived (mean +- std) |\n|---|---|")
        for s in args.skills or (2, 3, 4, 5):
            m, sd = random_survival(s, args.episodes)
            print(f"| {s} | {m:.0f} +- {sd:.0f} ({args.episodes} episodes) |")
        return
    n, npx = args.num_envs, args.pixel_envs
    dev = f", {args.device}" if args.device != "cpu" else ""
    rows = [
        _Row("DoomTakeCover-v0 (real ViZDoom, obs 64x64x3 frame)", _env_stepper(lambda: gym.make("DoomTakeCover-v0")),
             1, 1),
        _Row("DoomTakeCoverFeatures-v0 (real + V + M, obs [z,c,h])",
             _env_stepper(lambda: gym.make("DoomTakeCoverFeatures-v0")), 1, 1),
        _Row("DreamDoom-v0, 1 env, obs features [z,c,h]", _env_stepper(lambda: gym.make("DreamDoom-v0")), 1, 1),
        _Row("DreamDoom-v0, 1 env, obs pixels (V decodes z)",
             _env_stepper(lambda: gym.make("DreamDoom-v0", obs_type="pixels")), 1, 1),
    ]  # fmt: skip
    for precision in args.precisions:
        for th in args.threads:
            name = f"DreamDoom-v0 batched, {n} envs, features, {precision}, {th} thread(s){dev}"
            rows.append(_Row(name, _vec_stepper(n, "features", args.device, precision), n, th))
    if npx:
        rows.append(_Row(f"DreamDoom-v0 batched, {npx} envs, pixels, 1 thread{dev}",
                         _vec_stepper(npx, "pixels", args.device), npx, 1))  # fmt: skip
    if not args.no_reference:
        rows += [
            _Row("reference (pre-fast-path) dream, 1 env, features", lambda: _ReferenceDream(1, "features").step, 1, 1),
            _Row("reference (pre-fast-path) dream, 1 env, pixels", lambda: _ReferenceDream(1, "pixels").step, 1, 1),
            _Row(f"reference (pre-fast-path) dream, {n} envs, features, 1 thread{dev}",
                 lambda: _ReferenceDream(n, "features", device=args.device).step, n, 1),
        ]  # fmt: skip
    for _ in range(args.rounds):
        for row in rows:
            row.run(args.seconds / args.rounds)
    real, real_cpu = rows[0].rate, rows[0].cpu_rate
    print(f"{args.seconds:.0f} s per row in {args.rounds} interleaved rounds; torch threads 1 unless stated; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")  # fmt: skip
    print("| env | steps/s (wall) | vs real ViZDoom | steps per CPU-second | vs real (CPU) |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.name} | {row.rate:,.0f} | {row.rate / real:.2f}x | {row.cpu_rate:,.0f} | "
              f"{row.cpu_rate / real_cpu:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
