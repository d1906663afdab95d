"""The Sonic joint-training / fine-tune pipeline run end to end on stable-retro, with Airstriker (the shipped ROM)
standing in for the Sonic levels. It runs the exact CLI commands a Sonic user runs, with Airstriker levels,
``--scenario scenario`` (Airstriker has no contest scenario) and small budgets:

1. ``ppo joint``: joint PPO over 4 "training levels" (4 subprocess workers; Airstriker has one save state, so all
   four are Level1), the "test level" scored every ``--eval-every`` steps;
2. ``ppo protocol``: PPO from scratch on the test level for N steps (score = mean episode reward over the run);
3. ``ppo protocol --init-from``: the joint checkpoint fine-tuned on the test level for N steps;
4. ``ppo table``.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_metarl_airstriker_pipeline.py
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from dreamarcade.baselines.ppo import main as ppo_main
from dreamarcade.checkpoint import atomic_write_text, json_text

A = "Airstriker-Genesis:Level1"


def run(cmd: str, log: list[dict], log_path: Path) -> None:
    """Run one stage; ``log_path`` is rewritten after it, so it holds every stage that ran, a failed one included."""
    print(f"\n$ python -m dreamarcade.baselines ppo {cmd}", flush=True)
    t0 = time.time()
    rc = None  # stays null in the log if the stage raised or was interrupted
    try:
        rc = ppo_main(shlex.split(cmd))
    except SystemExit as stop:  # a usage error
        rc = stop.code if isinstance(stop.code, int) else 1
    finally:
        entry = {"command": f"python -m dreamarcade.baselines ppo {cmd}", "rc": rc, "seconds": round(time.time() - t0)}
        log.append(entry)
        atomic_write_text(log_path, json_text(log, indent=2) + "\n")
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {cmd}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joint-steps", type=int, default=24_576)
    parser.add_argument("--test-steps", type=int, default=12_288)
    parser.add_argument("--eval-every", type=int, default=6_144)
    parser.add_argument("--num-steps", type=int, default=512, help="rollout length (Sonic default 4096)")
    parser.add_argument("--run-dir", default="runs/metarl/airstriker")
    args = parser.parse_args()
    d = Path(args.run_dir)
    if d.exists() and any(d.iterdir()):
        raise SystemExit(f"{d} holds an earlier run (the PPO commands refuse a used run dir): pass a new --run-dir.")
    common = f"--scenario scenario --num-steps {args.num_steps}"
    log: list[dict] = []
    log_path = d / "pipeline_log.json"
    run(
        f"joint --train-levels {A},{A},{A},{A} --eval-levels {A} --total-timesteps {args.joint_steps} "
        f"--eval-every-steps {args.eval_every} {common} --run-dir {d / 'joint'}",
        log,
        log_path,
    )
    run(
        f"protocol --levels {A} --timesteps-per-level {args.test_steps} {common} "
        f"--label 'PPO (from scratch)' --run-dir {d / 'protocol_scratch'}",
        log,
        log_path,
    )
    run(
        f"protocol --levels {A} --timesteps-per-level {args.test_steps} {common} "
        f"--init-from {d / 'joint' / 'checkpoint'} --label 'Joint PPO + fine-tune' --run-dir {d / 'protocol_finetune'}",
        log,
        log_path,
    )
    run(f"table {d / 'protocol_scratch'} {d / 'protocol_finetune'} --out {d / 'table.md'}", log, log_path)
    print(json_text(log, indent=2))


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
