"""Replay memory per stored 84x84 transition: dreamarcade's frame-dedup buffer vs SB3's ReplayBuffer.

Each buffer runs in its own subprocess and is filled with the same transitions: real DQNPong-v0 stacks
(recorded once, replayed in a loop with their episode boundaries). Reported: resident memory added by
the filled buffer (VmRSS delta) and the buffer's own array bytes, per transition. Both processes import
the same modules before the baseline reading. The array bytes are what a full buffer holds; the RSS of
dreamarcade's can sit a little below them, since its frame ring's ~1.6% spare slots are untouched until
it wraps.

    python benchmarks/bench_replay_memory.py --transitions 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from dreamarcade.baselines.common import positive_int


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def record_episode_data(steps: int, seed: int = 0) -> list[tuple]:
    import gymnasium as gym

    import dreamarcade  # noqa: F401

    env = gym.make("DQNPong-v0")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    data = []
    for _ in range(steps):
        a = int(rng.integers(6))
        nxt, r, term, trunc, _ = env.step(a)
        data.append((obs, a, r, nxt, term, trunc))
        obs = nxt
        if term or trunc:
            obs, _ = env.reset()
    # end the recording on an episode boundary so the loop never glues two episodes together
    obs, a, r, nxt, term, trunc = data[-1]
    data[-1] = (obs, a, r, nxt, term, True)
    return data


def run_one(kind: str, n: int, record_steps: int) -> dict:
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer

    from dreamarcade.baselines.replay_buffer import ReplayBuffer

    data = record_episode_data(record_steps)
    base = rss_bytes()  # after every import, so only the buffer and its filling count
    if kind == "dreamarcade":
        buf = ReplayBuffer(n, (4, 84, 84), frame_stack=4)
        for i in range(n):
            o, a, r, nx, te, tr = data[i % len(data)]
            buf.add(o[None], nx[None], np.array([a]), np.array([r]), np.array([te]), np.array([tr]))
        nbytes = buf.nbytes
        stored = len(buf)
    else:
        optimize = kind == "sb3-optimize"
        buf = SB3Buffer(
            n,
            gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
            gym.spaces.Discrete(6),
            device="cpu",
            optimize_memory_usage=optimize,
            handle_timeout_termination=not optimize,
        )
        for i in range(n):
            o, a, r, nx, te, tr = data[i % len(data)]
            buf.add(
                o[None], nx[None], np.array([a]), np.array([r]), np.array([te or tr]), [{"TimeLimit.truncated": tr}]
            )
        nbytes = buf.observations.nbytes + (0 if optimize else buf.next_observations.nbytes)
        nbytes += buf.actions.nbytes + buf.rewards.nbytes + buf.dones.nbytes
        nbytes += getattr(buf, "timeouts", np.zeros(0)).nbytes  # handle_timeout_termination keeps one per transition
        stored = n
    return {"rss_per_transition": (rss_bytes() - base) / n, "array_bytes_per_transition": nbytes / n, "stored": stored}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transitions", type=positive_int, default=100_000)
    p.add_argument(
        "--record-steps", type=positive_int, default=3000, help="real env steps recorded and replayed in a loop"
    )
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.transitions, a.record_steps)))
        return
    rows = {}
    for kind in ("dreamarcade", "sb3", "sb3-optimize"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                kind,
                "--transitions",
                str(a.transitions),
                "--record-steps",
                str(a.record_steps),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    names = {
        "dreamarcade": "dreamarcade ReplayBuffer (one frame per step)",
        "sb3": "SB3 ReplayBuffer (optimize_memory_usage=False)",
        "sb3-optimize": "SB3 ReplayBuffer (optimize_memory_usage=True)",
    }
    print(
        f"| buffer ({a.transitions:,} transitions of DQNPong-v0)"
        f" | RSS bytes / transition | array bytes / transition | array bytes / transition x 1M |"
    )
    print("|---|---|---|---|")
    if a.transitions < 100_000:  # the buffers' fixed spare slots are spread over fewer transitions
        print(f"(note: with --transitions {a.transitions:,} the last column overstates a 1M buffer; use >= 100,000)")
    for kind, r in rows.items():
        gb = r["array_bytes_per_transition"] * 1e6 / 1e9
        print(
            f"| {names[kind]} | {r['rss_per_transition']:,.0f} | {r['array_bytes_per_transition']:,.0f} | {gb:.1f} GB |"
        )


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
