"""How many checkpoints the bundled imitation reward pays to a few fixed action sequences.

A sanity check of a reward bundle: the demonstration's own trajectory should collect (nearly) all of its
checkpoints, another successful trajectory some, and random or idle play next to none. Each sequence is
replayed from ``reset(seed=0)`` in ``MontezumaImitation-v0`` (the bundled embedding and checkpoints) and the
steps with ``info["imitation_reward"] > 0`` are counted, stopping at the first episode end.

The trajectories are the Go-Explore searches' output (``python -m dreamarcade.envs.montezuma_search``, whose
JSON records each trajectory's actions and start delay); RESULTS.md lists the commands that made them.

    python benchmarks/bench_imitation_paid_checkpoints.py --trajectories runs/imitation2/trajectories.json \\
        --demo 3 --other 4 --thresholds 0.5 0.8 --distinct-margins none 0.1

``--distinct-margins`` adds rows with per-checkpoint thresholds (``distinct_margin`` of the wrapper; "none" is
the single threshold of the paper).
"""

from __future__ import annotations

import argparse
import math

import gymnasium as gym
import numpy as np
import torch

import dreamarcade  # noqa: F401  (registers MontezumaImitation-v0)
from dreamarcade.baselines.common import positive_int
from dreamarcade.envs.montezuma_search import load_start_delays, load_trajectories


def paid(
    actions: list[int], threshold: float, asset_dir: str | None = None, distinct_margin: float | None = None
) -> int:
    """Checkpoints paid while replaying ``actions`` from reset(seed=0), up to the first episode end."""
    env = gym.make("MontezumaImitation-v0", threshold=threshold, asset_dir=asset_dir, distinct_margin=distinct_margin)
    env.reset(seed=0)
    count = 0
    for a in actions:
        _, _, terminated, truncated, info = env.step(int(a))
        count += int(info["imitation_reward"] > 0)
        if terminated or truncated:
            break
    env.close()
    return count


def _margin(text: str) -> float | None:
    """argparse type of ``--distinct-margins``: 'none' or a finite number."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected 'none' or a finite number, got {text!r}")
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trajectories", required=True, help="the JSON written by montezuma_search")
    p.add_argument("--demo", type=int, required=True, help="index of the trajectory the bundle's demo video shows")
    p.add_argument("--other", type=int, required=True, help="index of another successful trajectory")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5])
    p.add_argument(
        "--distinct-margins",
        nargs="+",
        type=_margin,
        default=[None],
        help="distinct_margin values ('none': one threshold for every checkpoint, the paper)",
    )
    p.add_argument("--steps", type=positive_int, default=300, help="steps for the random and NOOP sequences")
    p.add_argument("--asset-dir", default=None, help="a reward bundle (build_reward's --out); default: the shipped one")
    a = p.parse_args()
    torch.set_num_threads(1)
    try:
        trajs = load_trajectories(a.trajectories)
        delays = load_start_delays(a.trajectories)
    except (OSError, ValueError) as exc:  # a missing or foreign file: one line, not a traceback
        p.error(f"--trajectories: {exc}")
    for flag, index in (("--demo", a.demo), ("--other", a.other)):
        if not 0 <= index < len(trajs):  # an IndexError before
            p.error(f"{flag} {index}: the file holds trajectories 0-{len(trajs) - 1}")
    rng = np.random.default_rng(0)
    sequences = {
        f"the demo's trajectory (its {delays[a.demo]} NOOPs, then its play)": trajs[a.demo],
        "the demo's play from power-on (other skull phase)": trajs[a.demo][delays[a.demo] :],
        f"another key+door trajectory (traj{a.other}: its {delays[a.other]} NOOPs, then its play)": trajs[a.other],
        f"traj{a.other}'s play from power-on (other skull phase)": trajs[a.other][delays[a.other] :],
        f"random actions, {a.steps} steps": [int(x) for x in rng.integers(0, 18, a.steps)],
        f"always NOOP, {a.steps} steps": [0] * a.steps,
    }
    print("| threshold | distinct margin | " + " | ".join(sequences) + " |")
    print("|---" * (len(sequences) + 2) + "|")
    for th in a.thresholds:
        for margin in a.distinct_margins:
            counts = [paid(acts, th, a.asset_dir, margin) for acts in sequences.values()]
            shown = "none" if margin is None else margin
            print(f"| {th} | {shown} | " + " | ".join(str(c) for c in counts) + " |", flush=True)


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
