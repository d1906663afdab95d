"""RL^2 on random mazes with a hidden goal: does a recurrent agent use episode 1 to find the goal faster in episode 2?

Trains two agents with the same budget on ``MetaMaze-v0`` trials (2 episodes of one random maze + hidden goal):
recurrent (LSTM) PPO, i.e. RL^2, and memoryless (MLP) PPO, which sees the same observation (with previous
action, reward and done) but keeps no state. Both are then evaluated on unseen mazes (tasks drawn from a seed
stream the training never used) and we report the mean number of steps to the goal in each episode of a trial
(an episode that times out counts its full length). Target: RL^2's episode-2 steps <= 0.5x its episode-1 steps.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_metarl_rl2_maze.py \\
        --size 5 --extra-openings 0.5 --total-timesteps 1200000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import dreamarcade  # noqa: F401  (registers MetaMaze-v0)
from dreamarcade.baselines.common import positive_int
from dreamarcade.baselines.ppo import ActorCritic, PPOConfig, load_agent, obs_to_tensor, train_ppo
from dreamarcade.checkpoint import atomic_write_text, json_text


def evaluate_trials(agent: ActorCritic, maze: dict, trials: int, seed: int) -> dict[str, float]:
    """Run ``trials`` trials on fresh mazes; return mean steps per inner episode, success rates and the oracle.

    ``seed`` fixes the mazes and the agent's sampled actions (torch's generator), so a rerun gives the same numbers.
    """
    torch.manual_seed(seed)
    env = gym.make("MetaMaze-v0", **maze)
    steps: list[list[int]] = [[], []]
    reached: list[list[bool]] = [[], []]
    shortest: list[int] = []
    for trial in range(trials):
        obs, info = env.reset(seed=seed + trial)
        shortest.append(int(info["shortest_path"]))
        state, done = agent.initial_state(1), torch.zeros(1)
        while True:
            with torch.no_grad():
                action, _, _, _, state = agent.get_action_and_value(obs_to_tensor(obs[None], "cpu"), state, done)
            obs, _, terminated, truncated, info = env.step(int(action[0]))
            if info.get("inner_done"):
                steps[info["inner_episode"]].append(int(info["inner_length"]))
                reached[info["inner_episode"]].append(bool(info["inner_terminated"]))
            if terminated or truncated:
                break
    env.close()
    ep1, ep2 = float(np.mean(steps[0])), float(np.mean(steps[1]))
    return {
        "episode1_steps": ep1,
        "episode2_steps": ep2,
        "ratio_ep2_over_ep1": ep2 / ep1,
        "episode1_success": float(np.mean(reached[0])),
        "episode2_success": float(np.mean(reached[1])),
        "oracle_shortest_path": float(np.mean(shortest)),
        "trials": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=5, help="maze side in cells")
    parser.add_argument("--extra-openings", type=float, default=0.5, help="fraction of DFS-maze walls knocked out")
    parser.add_argument("--total-timesteps", type=int, default=1_200_000, help="training budget of EACH agent")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--eval-trials", type=positive_int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--run-dir", default="runs/metarl/rl2_maze")
    parser.add_argument("--ent-coef", type=float, default=0.01, help="entropy bonus at step 0")
    parser.add_argument(
        "--ent-coef-final", type=float, default=None, help="if set, the entropy bonus falls linearly to this"
    )
    parser.add_argument("--skip-train", action="store_true", help="evaluate the checkpoints already in --run-dir")
    args = parser.parse_args()
    if args.num_envs < 4 or args.num_envs % 4:  # RL^2's recurrent minibatches split the envs 4 ways
        parser.error(f"--num-envs must be a multiple of 4 (the 4 minibatches split the envs), got {args.num_envs}")
    torch.set_num_threads(1)

    base = dict(
        total_timesteps=args.total_timesteps,
        num_envs=args.num_envs,
        num_steps=128,
        num_minibatches=4,
        update_epochs=4,
        learning_rate=1e-3,
        anneal_lr=True,
        clip_coef=0.2,
        ent_coef=args.ent_coef,
        ent_coef_final=args.ent_coef_final,
        gamma=0.99,
        gae_lambda=0.95,
        lstm_size=128,
        mlp_hidden=64,
        vector_mode="sync",  # the maze is pure Python and tiny: subprocesses would cost more than they save
        seed=args.seed,
        checkpoint_every_updates=5,
    )
    maze = {"size": args.size, "extra_openings": args.extra_openings}
    results: dict = {"maze": maze}
    if not args.skip_train:  # with --skip-train these flags did not train the agents: steps_trained says what did
        results.update(budget_steps_each=args.total_timesteps, ent_coef=[args.ent_coef, args.ent_coef_final])
    # The memoryless baseline first (it is ~5x faster), so RL^2's latest checkpoint can be evaluated any time.
    for name, recurrent in (("memoryless_mlp", False), ("rl2_lstm", True)):
        run_dir = Path(args.run_dir) / name
        if not args.skip_train:
            cfg = PPOConfig(recurrent=recurrent, **base)
            fns = [lambda: gym.make("MetaMaze-v0", **maze)] * args.num_envs
            t0 = time.time()
            res = train_ppo(fns, cfg, run_dir, resume=True, progress=True)
            results[f"{name}_train_seconds"] = round(time.time() - t0, 1)
            results[f"{name}_train_sps"] = round(res.steps_per_second, 1)
        agent, ck, _ = load_agent(run_dir / "checkpoint")
        results[f"{name}_steps_trained"] = ck["global_step"]
        results[name] = evaluate_trials(agent, maze, args.eval_trials, seed=1_000_000 + args.seed)
        print(name, json.dumps(results[name]), flush=True)
    # an evaluation-only rerun (other seeds) must not overwrite the training run's times and speeds
    out = Path(args.run_dir) / ("results.json" if not args.skip_train else f"results_eval_seed{args.seed}.json")
    text = json_text(results, indent=2)
    atomic_write_text(out, text + "\n")
    print(text)


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
