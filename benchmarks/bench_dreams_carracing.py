"""CarRacing: V-only and V+M controllers evolved with CMA-ES in the *real* env, then scored over N episodes.

    OMP_NUM_THREADS=1 python benchmarks/bench_dreams_carracing.py \
        --popsize 8 --rollouts 1 --generations 3 --max-steps 300 --eval-episodes 5

``--model-dir`` defaults to the bundled DreamCarRacing-v0 world model.

The paper's budget (pop 64 x 16 rollouts x 1800 generations of 1000-step episodes) took ~47 days on 64 cores;
pass the budget this machine can afford and report it next to the scores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dreamarcade.baselines.common import positive_int
from dreamarcade.baselines.world_models import WMConfig, copy_world_model, evaluate_real, step_evolve
from dreamarcade.checkpoint import CheckpointError, load_checkpoint
from dreamarcade.world_models.controller import Controller
from dreamarcade.world_models.model import bundled_dir

VARIANTS = {"v-only": "V only [z]", "full": "V+M [z, h]"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=str(bundled_dir("carracing")), help="world model (default: the bundled one)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="which to evolve")
    p.add_argument("--popsize", type=int, default=8)
    p.add_argument("--rollouts", type=int, default=1)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=300, help="episode cap during evolution (paper: 1000)")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds of evolution per variant (0: no limit)")
    p.add_argument("--eval-episodes", type=positive_int, default=5)
    p.add_argument("--random-episodes", type=int, default=0, help="random-policy episodes (0: --eval-episodes)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/dreams/carracing_bench")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for variant in args.variants:  # every copy is made (or an earlier one checked) before the first evolution
        try:
            copy_world_model(args.model_dir, Path(args.out) / variant / "world_model")
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
    for variant in args.variants:
        run = Path(args.out) / variant
        run.mkdir(parents=True, exist_ok=True)
        cfg = WMConfig(env="carracing", run_dir=str(run), where="real", controller=variant, popsize=args.popsize,
                       rollouts=args.rollouts, generations=args.generations, max_steps=args.max_steps,
                       workers=args.workers, eval_every=0, time_budget=args.time_budget)  # fmt: skip
        t0 = time.time()
        reused = (run / "controller" / "config.json").exists()  # an earlier run's controller: its own budget
        if not reused:
            step_evolve(cfg)
        evolve_s = time.time() - t0
        ctrl = Controller.load(run / "controller")
        meta = load_checkpoint(run / "controller", kind="controller")[1]
        t1 = time.time()
        rets = evaluate_real("carracing", run / "world_model", ctrl.params, ctrl, args.eval_episodes, args.workers)
        row = {"controller": VARIANTS[variant], "params": ctrl.num_params,
               "mean": float(rets.mean()), "std": float(rets.std()), "episodes": len(rets),
               "evolve_s": round(meta.get("seconds", evolve_s)), "eval_s": round(time.time() - t1),
               "reused": reused, "generations": meta.get("generations"), "popsize": meta.get("popsize"),
               "rollouts": meta.get("rollouts"), "max_steps": meta.get("max_steps", "?")}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    rand = evaluate_real("carracing", args.model_dir, None, None, args.random_episodes or args.eval_episodes, 1)
    print("\nbudget per variant (read from each controller, so a reused --out reports what it was evolved with):")
    for r in rows:
        print(
            f"  {r['controller']}: CMA-ES pop {r['popsize']} x {r['rollouts']} rollouts x {r['generations']} "
            f"generations of episodes capped at {r['max_steps']} steps (0: none), {r['evolve_s']} s"
            + (" (reused from an earlier run)" if r["reused"] else "")
        )
    print("  scored on full 1000-step episodes")
    print("| controller | params | real score | episodes |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['controller']} | {r['params']} | {r['mean']:.0f} +- {r['std']:.0f} | {r['episodes']} |")
    print(f"| random policy | - | {rand.mean():.0f} +- {rand.std():.0f} | {len(rand)} |")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
