"""Where a trained imitation agent is paid each checkpoint of Montezuma's Revenge: a diagnosis of the reward.

Plays one episode per env with the run's policy (the evaluation's settings: the run's own env stack, seed 1000 for
the envs and the action sampling) and prints, for every step that paid a checkpoint, the checkpoint paid, the
one it skipped (the soft order pays checkpoint n+1 or n+2 after n, one per step, so n+1 is then never paid), the
player's RAM position, room and inventory (0 until the key is taken), the agent step and the best similarity, and
per episode how many checkpoints were paid. Compare the positions with the demonstration's (``RESULTS.md``: where
the demonstration took them).

    python benchmarks/imitation_where_paid.py runs/imitation10/agent_s6 --episodes 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from dreamarcade.baselines.common import positive_int
from dreamarcade.baselines.imitation import _load_config, make_envs
from dreamarcade.baselines.ppo import load_agent, obs_to_tensor
from dreamarcade.checkpoint import atomic_write_text, json_text
from dreamarcade.envs.montezuma_search import INVENTORY, ROOM, X, Y


def where_paid(run_dir: Path, episodes: int, seed: int = 1000) -> list[list[dict[str, float]]]:
    """Per episode, one row per step that paid a checkpoint: ``paid`` (its index), ``skipped`` (the indices passed
    over without pay), ``to`` (the next checkpoint's index after it). A pay on the episode's last step has no
    position or similarity (None): the env has already reset."""
    cfg = _load_config(run_dir)
    if cfg.reward == "game":
        raise SystemExit(f"{run_dir} was trained with the game reward only: no checkpoints are paid")
    cfg.num_envs = episodes
    torch.manual_seed(seed)
    envs = make_envs(cfg)
    agent, _, _ = load_agent(run_dir / "checkpoint")
    agent.eval()
    sync = envs
    while not hasattr(sync, "envs"):  # down the vector wrappers to the SyncVectorEnv and its ALE envs
        sync = sync.env
    ales = [e.unwrapped.ale for e in sync.envs]
    obs, _ = envs.reset(seed=seed)
    done, before = np.zeros(episodes, bool), np.zeros(episodes, np.int64)
    rows: list[list[dict[str, float]]] = [[] for _ in range(episodes)]
    step = 0
    while not done.all():
        with torch.no_grad():
            actions = agent.get_action_and_value(obs_to_tensor(obs, "cpu"))[0].numpy()
        obs, _, term, trunc, info = envs.step(actions)
        step += 1
        nxt = np.asarray(info["imitation_checkpoint"])
        matched = np.asarray(info["imitation_matched"])
        for i in np.flatnonzero(~done):
            if term[i] or trunc[i]:  # SAME_STEP autoreset: the env and its checkpoint are already the next episode's,
                done[i] = True  # but imitation_matched is still the ending frame's: a last-step pay is counted
                if matched[i] >= 0:  # its position is gone with the reset: not read
                    final = info["final_info"]["imitation_checkpoint"][i]
                    rows[i].append(
                        {
                            "paid": int(matched[i]),
                            "skipped": list(range(int(before[i]), int(matched[i]))),
                            "to": int(final),
                            "x": None,
                            "y": None,
                            "room": None,
                            "inventory": None,
                            "step": step,
                            "similarity": None,
                        }  # fmt: skip
                    )
                continue
            if matched[i] >= 0:
                ram = ales[i].getRAM()
                rows[i].append(
                    {
                        "paid": int(matched[i]),
                        "skipped": list(range(int(before[i]), int(matched[i]))),
                        "to": int(nxt[i]),
                        "x": int(ram[X]),
                        "y": int(ram[Y]),
                        "room": int(ram[ROOM]),
                        "inventory": int(ram[INVENTORY]),
                        "step": step,
                        "similarity": round(float(np.max(info["imitation_similarity"][i])), 3),
                    }
                )
            before[i] = nxt[i]
    envs.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=positive_int, default=4)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = where_paid(a.run_dir, a.episodes)
    for i, episode in enumerate(rows):
        print(f"episode {i}: {len(episode)} checkpoints paid, next checkpoint {episode[-1]['to'] if episode else 0}")
        for r in episode:
            skipped = f" (skipped {r['skipped'][0]})" if r["skipped"] else ""
            if r["x"] is None:
                print(f"  paid {r['paid']:2d}{skipped:14s} on the episode's last step {r['step']:4d} (no position)")
                continue
            print(
                f"  paid {r['paid']:2d}{skipped:14s} at ({r['x']:3d}, {r['y']:3d}) room {r['room']} "
                f"inventory {r['inventory']}  step {r['step']:4d}  similarity {r['similarity']:.2f}"
            )
    if a.json is not None:
        atomic_write_text(a.json, json_text(rows, indent=1) + "\n")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
