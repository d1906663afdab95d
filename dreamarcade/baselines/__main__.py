"""``python -m dreamarcade.baselines <agent> [args]``: run a bundled baseline agent."""

from __future__ import annotations

import importlib
import sys

# agent name -> module under dreamarcade.baselines that defines ``main(argv: list[str] | None) -> int``
AGENTS: dict[str, tuple[str, str]] = {
    "dqn": ("dqn", "DQN (Mnih et al. 2013/2015) on any Discrete-action env; defaults: Atari Pong"),
    "ppo": ("ppo", "PPO (CNN/MLP/LSTM): joint training, fine-tuning, RL^2 trials, Sonic protocol"),
    "world_models": ("world_models", "World Models pipeline: collect, train-vae, train-mdnrnn, evolve, evaluate"),
    "imitation": ("imitation", "Actor-critic trained with the YouTube imitation reward"),
    "jerk": ("jerk", "JERK, the Sonic report's no-network baseline"),
    "summary": ("summary", "Summarize runs (any agent's RUN_DIR): block table of returns, learning-curve PNG"),
}


def _usage() -> str:
    lines = ["usage: python -m dreamarcade.baselines <agent> [--help | agent arguments]", "", "agents:"]
    for name, (_, desc) in AGENTS.items():
        lines.append(f"  {name:<14}{desc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:  # no agent named: a usage error, as in each agent's own CLI
            print(_usage(), file=sys.stderr)
            return 2
        print(_usage())
        return 0
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name not in AGENTS:
        print(f"error: unknown agent '{argv[0]}'. Choose one of: {', '.join(AGENTS)}.", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"dreamarcade.baselines.{AGENTS[name][0]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"dreamarcade.baselines.{AGENTS[name][0]}":
            print(f"error: agent '{name}' is not part of this installation.", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)
