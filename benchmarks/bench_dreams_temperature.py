"""The paper's temperature table at this project's scale: for each tau, evolve C inside DreamDoom, then score it
in the dream and in the real game; the random policy is measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_dreams_temperature.py --model-dir runs/dreams/doom/world_model \
        --taus 0.1 0.5 1.0 1.15 1.3 --generations 15 --popsize 64 --rollouts 4 --real-episodes 30

Writes runs/dreams/tau/tau<tau>/ (e.g. tau1.15: controllers, CMA-ES curves) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dreamarcade.baselines.common import positive_int
from dreamarcade.baselines.world_models import (
    WMConfig,
    copy_world_model,
    dream_returns,
    evaluate_real,
    step_evolve,
)
from dreamarcade.checkpoint import CheckpointError, atomic_write_text, json_text
from dreamarcade.world_models.controller import Controller
from dreamarcade.world_models.model import WorldModel, bundled_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=str(bundled_dir("doom")))
    p.add_argument("--taus", type=float, nargs="+", default=[0.1, 0.5, 1.0, 1.15, 1.3])
    p.add_argument("--generations", type=int, default=15)
    p.add_argument("--popsize", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=4)
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds of CMA-ES per tau (0: no limit)")
    p.add_argument("--dream-episodes", type=positive_int, default=256)
    p.add_argument("--real-episodes", type=positive_int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/dreams/tau")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not all(t > 0 for t in args.taus):  # tau 0 evolved at the model's default, then failed in the evaluation
        p.error(f"--taus must all be > 0, got {args.taus}")
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = []
    WorldModel.load(args.model_dir, env="doom")  # a bad --model-dir fails here, before any copy
    for tau in args.taus:  # every copy is made (or an earlier one checked) before the first evolution
        try:
            copy_world_model(args.model_dir, out / f"tau{tau:g}" / "world_model")
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
    for tau in args.taus:
        run = out / f"tau{tau:g}"
        run.mkdir(parents=True, exist_ok=True)
        cfg = WMConfig(
            env="doom", run_dir=str(run), temperature=tau, popsize=args.popsize, rollouts=args.rollouts,
            generations=args.generations, eval_every=0, seed=args.seed, time_budget=args.time_budget,
        )  # fmt: skip
        t0 = time.time()
        ctrl_dir = run / "controller"
        reused = (ctrl_dir / "config.json").exists()
        if reused:  # evolved by an earlier run, with its own budget and its copy of the world model
            print(f"reusing the controller in {ctrl_dir} (its own budget: see its config.json)", flush=True)
        else:
            step_evolve(cfg)
        ctrl = Controller.load(ctrl_dir)
        gens = json.loads((ctrl_dir / "config.json").read_text())["generations"]
        run_wm = WorldModel.load(run / "world_model", env="doom")  # the model the controller was evolved in
        dream = dream_returns(run_wm, ctrl, ctrl.params[None], args.dream_episodes, tau, seed=777)[0]
        real = evaluate_real("doom", run / "world_model", ctrl.params, ctrl, args.real_episodes, args.workers)
        rows.append(
            {
                "tau": tau,
                "dream_mean": float(dream.mean()),
                "dream_std": float(dream.std()),
                "real_mean": float(real.mean()),
                "real_std": float(real.std()),
                "generations": gens,
                "reused_controller": reused,
                "seconds": round(time.time() - t0),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        atomic_write_text(run / "result.json", json_text(rows[-1]) + "\n")
    rand = evaluate_real("doom", args.model_dir, None, None, args.real_episodes, 1, seed=12345)
    print(
        f"\nbudget per tau: CMA-ES pop {args.popsize} x {args.rollouts} dream rollouts, at most {args.generations} "
        f"generations{f' / {args.time_budget:.0f} s' if args.time_budget else ' (no time limit)'} "
        "(generations reached per tau in the JSON lines above)"
    )
    print(f"| tau | dream ({args.dream_episodes} dreams) | real ({args.real_episodes} episodes) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['tau']:g} | {r['dream_mean']:.0f} +- {r['dream_std']:.0f} | "
              f"{r['real_mean']:.0f} +- {r['real_std']:.0f} |")  # fmt: skip
    print(f"| random policy | n/a | {rand.mean():.0f} +- {rand.std():.0f} |")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
