"""Does a Montezuma reward bundle tell the places the demo passed with the key from the same places without it?

The imitation agents that miss the key are paid the checkpoints the demonstration took *after* its key by
states without the key (RESULTS.md, Agent). This measures that confusion on real play: every successful
trajectory found by the Go-Explore search is replayed from ``reset(seed=0)`` in ``MontezumaImitation-v0`` with the
given bundle, and for each checkpoint the demonstration reached with the key it reports the highest similarity
any state *before* that trajectory's key gets to it (``before``), next to the highest similarity states *with* the
key get (``with key``). A checkpoint whose ``before`` passes the threshold can be paid without the key.

    python benchmarks/bench_imitation_key_confusion.py --trajectories runs/imitation9/trajectories.json --demo 3 \\
        --bundle shipped=dreamarcade/assets/montezuma_imitation new=runs/imitation9/bundle8

The demo's own trajectory tells which checkpoints come after the key: those it is paid once its score is >= 100.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import dreamarcade  # noqa: F401  (registers MontezumaImitation-v0)
from dreamarcade.baselines.common import name_and_path
from dreamarcade.checkpoint import atomic_write_text, json_text
from dreamarcade.envs.montezuma_search import load_trajectories


def replay(actions: list[int], asset_dir: str | None, threshold: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per step: the similarities to every checkpoint, whether the key is held, and the checkpoint paid (-1)."""
    env = gym.make("MontezumaImitation-v0", asset_dir=asset_dir, threshold=threshold)
    env.reset(seed=0)
    score, sims, keyed, matched = 0.0, [], [], []
    for a in actions:
        _, _, terminated, truncated, info = env.step(int(a))
        score += float(info["env_reward"])
        sims.append(np.array(env.get_wrapper_attr("similarities"), np.float32))
        keyed.append(score >= 100)
        matched.append(int(info["imitation_matched"]))
        if terminated or truncated:
            break
    env.close()
    return np.array(sims), np.array(keyed), matched


def key_confusion(
    trajectories: list[list[int]], demo: int, asset_dir: str | None, threshold: float = 0.5
) -> dict[str, object]:
    """The post-key checkpoints of the demo (those its replay is paid at ``threshold`` with the key), and per
    trajectory the best similarity to them before and with the key."""
    # the demo's among them: each is replayed once
    replays = [replay(acts, asset_dir, threshold) for acts in trajectories]
    _, keyed, matched = replays[demo]
    after_key = sorted({m for m, k in zip(matched, keyed) if m >= 0 and k})
    before, with_key = [], []
    for sims, k, _ in replays:
        before.append(sims[~k][:, after_key].max(axis=0).tolist() if (~k).any() else None)
        with_key.append(sims[k][:, after_key].max(axis=0).tolist() if k.any() else None)
    return {"after_key": after_key, "before": before, "with_key": with_key}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trajectories", required=True, help="the JSON written by montezuma_search")
    p.add_argument("--demo", type=int, required=True, help="index of the trajectory the bundle's demo video shows")
    p.add_argument(
        "--bundle",
        nargs="+",
        type=name_and_path,
        required=True,
        help="name=reward bundle directory (build_reward's --out)",
    )
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", default=None, help="also write the per-trajectory numbers here")
    a = p.parse_args()
    torch.set_num_threads(1)
    try:
        trajs = load_trajectories(a.trajectories)
    except (OSError, ValueError) as exc:  # a missing or foreign file: one line, not a traceback
        p.error(f"--trajectories: {exc}")
    if not 0 <= a.demo < len(trajs):
        p.error(f"--demo {a.demo}: the file holds trajectories 0-{len(trajs) - 1}")
    names = [name for name, _ in a.bundle]
    if len(set(names)) < len(names):  # the JSON keys results by name: one would replace another
        p.error(f"--bundle names repeat ({names}): give each bundle its own name")
    out = {}
    print(
        "| bundle | checkpoints after the key | highest similarity before the key (max over trajectories) | "
        f"trajectories passing {a.threshold} there before the key | any of them | "
        "highest similarity with the key (min over trajectories) |"
    )
    print("|---|---|---|---|---|---|")
    for name, path in a.bundle:
        res = key_confusion(trajs, a.demo, path, a.threshold)
        out[name] = res
        before = np.array([b for b in res["before"] if b is not None])
        with_key = np.array([w for w in res["with_key"] if w is not None])
        if not res["after_key"] or len(before) == 0 or len(with_key) == 0:
            p.error(
                f"bundle {name}: the demo's replay is paid no checkpoint with the key ({res['after_key']}), or no "
                "trajectory has steps both before and with the key: pass trajectories that collect the key"
            )
        passing = before > a.threshold  # (trajectories, post-key checkpoints), compared before any rounding
        print(
            f"| {name} | {res['after_key']} | {before.max(axis=0).round(2).tolist()} | "
            f"{passing.sum(axis=0).tolist()} of {len(before)} | {int(passing.any(axis=1).sum())} of {len(before)} | "
            f"{with_key.min(axis=0).round(2).tolist()} |",
            flush=True,
        )
    if a.json:
        atomic_write_text(a.json, json_text(out, indent=1) + "\n")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
