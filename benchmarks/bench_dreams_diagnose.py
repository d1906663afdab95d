"""Where does a Doom world model fail? Cheap diagnostics of V, M's done head and the dream's death rates.

    OMP_NUM_THREADS=1 python benchmarks/bench_dreams_diagnose.py --model-dir runs/dreams/doom/world_model \
        --heldout random=runs/dreams/doom_v2/heldout_random wallhug=runs/dreams/doom_iter/frames_iter1 \
        --dream-episodes 64 --real-episodes 20

Two measurements, each printed as a Markdown table:

1. **Done head on held-out real episodes** (episodes M never trained on). M is run teacher-forced over each
   episode (z = V's mean of each real frame, the real actions); for every episode: does the done head fire
   (logit > 0, the dream's cut-off) on the last step, or within the last 5 steps (recall), how often does it fire
   earlier (false alarms per 1000 steps), and when does it first fire (the step a dream that followed the real
   latents exactly would have ended). Also V's reconstruction error on those frames, overall and on frames with
   fireballs (bright yellow-orange pixels).
2. **Death rate by policy, dream vs. real**: mean episode length of fixed policies (uniform random every step,
   always left, always right, no-op) in the dream (tau given) and in the real game. A faithful dream ranks
   the policies as the real game does; an exploitable one rates some policy as far safer than it is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from dreamarcade.baselines.common import name_and_path
from dreamarcade.envs.dream import DreamBatch
from dreamarcade.world_models.collect import make_real_env
from dreamarcade.world_models.model import WorldModel
from dreamarcade.world_models.rollouts import list_shards, load_shard

POLICIES = ("random", "left", "right", "noop")


def fireball_mask(frames: np.ndarray) -> np.ndarray:
    """Per frame: True where some pixels are fireball-coloured (bright, red+green high, blue low)."""
    f = frames.astype(np.int16)
    hot = (f[..., 0] > 200) & (f[..., 1] > 150) & (f[..., 2] < 120)
    return hot.reshape(len(frames), -1).sum(1) >= 3


@torch.no_grad()
def done_head_stats(wm: WorldModel, frame_dir: Path, max_episodes: int = 200) -> dict[str, float]:
    """Teacher-forced done-head statistics and V reconstruction error over the episodes in ``frame_dir``."""
    last = last5 = terminated = 0
    false_alarms = steps = 0
    first_fire_ratio: list[float] = []
    lengths: list[int] = []
    mse_all: list[float] = []
    mse_fire: list[float] = []
    n_ep = 0
    for shard in list_shards(frame_dir):
        d = load_shard(shard)
        starts = np.concatenate([[0], np.cumsum(d["episode_lengths"])[:-1]])
        for s, n in zip(starts, d["episode_lengths"]):
            if n_ep >= max_episodes:
                break
            frames = d["frames"][s : s + n]
            mu, _ = wm.vae.encode_frames(frames)
            recon = wm.vae.decode_to_frames(torch.as_tensor(mu)).astype(np.float32) / 255.0
            err = ((recon - frames.astype(np.float32) / 255.0) ** 2).reshape(n, -1).sum(1)
            mse_all.extend(err.tolist())
            mse_fire.extend(err[fireball_mask(frames)].tolist())
            z = torch.as_tensor(mu)[None]
            a = torch.as_tensor(d["actions"][s : s + n], dtype=torch.float32)[None]
            restart = torch.zeros(1, n)
            restart[0, 0] = 1.0
            logit = wm.rnn.split(wm.rnn(z, a, restart))["done_logit"][0].numpy()
            fire = logit > 0
            died = bool(d["dones"][s + n - 1])
            lengths.append(int(n))
            if died:
                terminated += 1
                last += int(fire[-1])
                last5 += int(fire[-5:].any())
            false_alarms += int(fire[: max(0, n - 5)].sum())
            steps += max(0, n - 5)
            first = int(np.argmax(fire)) + 1 if fire.any() else n
            first_fire_ratio.append(first / n)
            n_ep += 1
    return {
        "episodes": n_ep,
        "mean_length": float(np.mean(lengths)),
        "terminated": terminated,
        # of the episodes that ended in a death; where none did (all reached the step cap) it is undefined: NaN
        "recall_last": last / terminated if terminated else float("nan"),
        "recall_last5": last5 / terminated if terminated else float("nan"),
        "false_alarms_per_1000": 1000.0 * false_alarms / max(1, steps),
        "first_fire_over_length": float(np.mean(first_fire_ratio)),
        "vae_sse": float(np.mean(mse_all)),
        "vae_sse_fireball_frames": float(np.mean(mse_fire)) if mse_fire else np.nan,
        "fireball_frames": len(mse_fire) / max(1, len(mse_all)),
    }


def _share(x: float) -> str:
    """A fraction for the table; "-" where it is undefined (no episode ended in a death)."""
    return "-" if np.isnan(x) else f"{x:.2f}"


def policy_action(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Actions (n, 1) of a fixed policy."""
    if name == "random":
        return rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    value = {"left": -1.0, "right": 1.0, "noop": 0.0}[name]
    return np.full((n, 1), value, np.float32)


@torch.no_grad()
def dream_lengths(wm: WorldModel, policy: str, episodes: int, tau: float, seed: int) -> np.ndarray:
    """Episode lengths of a fixed policy in ``episodes`` dreams run as one batch."""
    dream = DreamBatch(wm, episodes, tau, seed=seed)
    dream.reset_all()
    rng = np.random.default_rng(seed)
    length = np.zeros(episodes, np.int64)
    alive = np.ones(episodes, bool)
    for _ in range(wm.max_steps):
        a = torch.as_tensor(policy_action(policy, rng, episodes))
        _, _, term, trunc = dream.step(a)
        length[alive] += 1
        alive &= ~(term | trunc).numpy()
        if not alive.any():
            break
    return length


def real_lengths(policy: str, episodes: int, seed: int) -> np.ndarray:
    """Episode lengths of a fixed policy in the real game (seeds seed .. seed + episodes - 1)."""
    env = make_real_env("doom")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        env.reset(seed=seed + i)
        t, done = 0, False
        while not done:
            _, _, term, trunc, _ = env.step(policy_action(policy, rng, 1)[0])
            t += 1
            done = term or trunc
        out.append(t)
    env.close()
    return np.array(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument(
        "--heldout", nargs="*", type=name_and_path, default=[], help="name=frames_dir pairs of held-out real episodes"
    )
    p.add_argument("--tau", type=float, default=1.15)
    p.add_argument("--dream-episodes", type=int, default=64)
    p.add_argument("--real-episodes", type=int, default=20, help="0: skip the real game")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args()
    torch.set_num_threads(1)
    wm = WorldModel.load(args.model_dir, env="doom")
    t0 = time.time()
    for name, path in args.heldout or []:  # checked before the table's header (a row of NaNs before)
        if not list_shards(Path(path)):
            raise SystemExit(f"error: --heldout {name}={path}: no rollout shards there; pass a folder of them")
    if args.heldout:
        print(
            "| held-out data | episodes (deaths) | mean length | done fires on last step | within last 5 | "
            "false alarms / 1000 steps | first alarm / length | V SSE (all) | V SSE (fireball frames) | "
            "fireball frames |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, path in args.heldout:
            s = done_head_stats(wm, Path(path))
            print(
                f"| {name} | {s['episodes']} ({s['terminated']}) | {s['mean_length']:.0f} | "
                f"{_share(s['recall_last'])} | {_share(s['recall_last5'])} | {s['false_alarms_per_1000']:.1f} | "
                f"{s['first_fire_over_length']:.2f} | "
                f"{s['vae_sse']:.1f} | {s['vae_sse_fireball_frames']:.1f} | {s['fireball_frames']:.2f} |"
            )
        print(f"({time.time() - t0:.0f}s)\n")
    print(f"| policy | dream tau={args.tau} ({args.dream_episodes}) | real ({args.real_episodes}) |")
    print("|---|---|---|")
    for pol in args.policies:
        d = dream_lengths(wm, pol, args.dream_episodes, args.tau, args.seed)
        real = "-"
        if args.real_episodes:
            r = real_lengths(pol, args.real_episodes, args.seed)
            real = f"{r.mean():.0f} +- {r.std():.0f}"
        print(f"| {pol} | {d.mean():.0f} +- {d.std():.0f} | {real} |", flush=True)
    print(f"({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
