"""Wrapper overhead: env steps/s of Montezuma's Revenge with and without YouTubeImitationReward.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_imitation_overhead.py --steps 1000 --num-envs 8 --rounds 3

Like with like: every "plain" env is exactly the env stack the wrapped one wraps, built the same way.

* single env: ``ALE/MontezumaRevenge-v5`` (frameskip 4, RGB, no sticky actions) alone vs. wrapped by
  :class:`YouTubeImitationReward` (the registered ``MontezumaImitation-v0`` minus its episode statistics);
* vector: a ``SyncVectorEnv`` of ``num_envs`` of them alone vs. wrapped by :class:`YouTubeImitationRewardVector`
  (one batched embedding pass per step);
* agent stack (``--agent-stack``): the PPO imitation baseline's own ``make_envs`` (time
  limit, episode statistics, SAME_STEP autoreset, 84x84 grayscale policy frames) with ``reward="game"``
  (no imitation reward) vs. ``reward="imitation"``;
* count bonus (``--count-bonus BETA``): :class:`~dreamarcade.wrappers.exploration.CountBonus` alone around the
  single env, and (with ``--agent-stack``) the agent stack with ``count_bonus=BETA`` on top of the imitation reward.

Wrapped variants (each row is reported separately; the first of each kind is the default):
``fused`` (the default fused inference encoder, 1 torch thread), ``reference`` (the model's own eval-mode
forward: BatchNorm layers, NCHW; the encoder before this benchmark's speed work), ``threads=T`` (fused with T torch
threads for the embedding pass, vector only), ``embed_every=K`` (the documented fidelity-for-speed option: embed
every K-th step; NOT the default), ``before`` (``--before REV``: the wrapper as of git revision REV with the
reference encoder, i.e. the code before the speed work, measured in the same run).

Plain and wrapped runs are interleaved for ``--rounds`` rounds in this one process (the machine is shared, so
only ratios measured side by side mean anything); the table reports the median wall-clock steps/s of each and
the median of the per-round ratios, in wall-clock time and in CPU time of this process (all its threads; less
sensitive to other users' load than wall-clock time). Random actions (the same sequence for every env); torch
uses 1 thread unless a row says otherwise. steps/s counts env steps (agent steps), summed over sub-envs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamarcade.baselines.common import positive_int


def _rate(env: Any, steps: int, vector: bool) -> tuple[float, float]:
    """(steps per wall-clock second, steps per CPU second of this process, all its threads)."""
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n = env.num_envs if vector else 1
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        a = rng.integers(0, 18, size=n) if vector else int(rng.integers(0, 18))
        _, _, term, trunc, _ = env.step(a)
        if not vector and (term or trunc):
            env.reset()
    return steps * n / (time.perf_counter() - t), steps * n / max(time.process_time() - c, 1e-9)


def _module_at(rev: str, path: str) -> types.ModuleType:
    """Import ``path`` as it was at git revision ``rev`` (read with ``git show``), under a private module name.

    The old wrapper imports the current ``FrameStackEmbedder``; with ``fused=False`` that is the encoder the
    old code ran (the model's own eval-mode forward), so old wrapper + reference encoder = the code at ``rev``.
    """
    root = Path(__file__).resolve().parent.parent
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:  # a bare CalledProcessError hid git's message
        raise SystemExit(f"error: --before {rev}: git show failed: {shown.stderr.strip()}")
    src = shown.stdout
    module = types.ModuleType(f"_imitation_at_{rev}")
    module.__file__ = f"{rev}:{path}"
    sys.modules[module.__name__] = module  # dataclasses / typing look the module up by name
    exec(compile(src, module.__file__, "exec"), module.__dict__)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--steps", type=positive_int, default=1000, help="env steps per measurement (vector: divided by num_envs)"
    )
    p.add_argument("--num-envs", type=positive_int, default=8)
    p.add_argument("--rounds", type=positive_int, default=3, help="interleaved plain/wrapped rounds (median reported)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the vector 'threads=T' row (0: no row)")
    p.add_argument("--embed-every", type=int, default=2, help="K of the 'embed_every=K' rows (0 or 1: no row)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-encoder rows")
    p.add_argument("--agent-stack", action="store_true", help="also measure the PPO baseline's make_envs stack")
    p.add_argument(
        "--before",
        default=None,
        metavar="REV",
        help="also measure the wrapper as of git revision REV (e.g. c3cf0fe, before the speed work) with the "
        "reference encoder: a before/after comparison in the same run",
    )
    p.add_argument("--bf16", action="store_true", help="also measure the bfloat16 encoder (precision='bf16')")
    p.add_argument(
        "--count-bonus",
        type=float,
        default=0.0,
        help="also measure the count-based exploration bonus with this beta: CountBonus around the single env, "
        "and the agent stack with --count-bonus (needs --agent-stack for that row)",
    )
    p.add_argument("--asset-dir", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    import ale_py

    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.wrappers.imitation import (
        YouTubeImitationReward,
        YouTubeImitationRewardVector,
        load_imitation_model,
    )

    gym.register_envs(ale_py)
    asset = a.asset_dir or ASSET_DIR

    def base() -> gym.Env:
        return gym.make("ALE/MontezumaRevenge-v5", frameskip=4, repeat_action_probability=0.0)

    def vbase() -> gym.vector.VectorEnv:
        return gym.vector.SyncVectorEnv([base] * a.num_envs)

    fused, ck = load_imitation_model(asset)
    variants: list[tuple[str, dict[str, Any], int | None]] = [("fused (default)", {}, None)]
    if not a.no_reference:
        variants.append(("reference encoder", {"fused": False}, None))
    if a.embed_every > 1:
        variants.append((f"embed_every={a.embed_every} (option)", {"embed_every": a.embed_every}, None))
    if a.bf16:
        variants.append(("fused, precision=bf16 (option)", {"precision": "bf16"}, None))

    before = _module_at(a.before, "dreamarcade/wrappers/imitation.py") if a.before else None
    if before is not None:
        variants.append((f"before ({a.before}: wrapper + reference encoder)", {"fused": False, "before": True}, None))

    def embedder(opts: dict[str, Any], threads: int | None) -> Any:
        if opts.get("fused", True) and threads is None and "precision" not in opts:
            return fused
        kw = {"fused": opts.get("fused", True), "num_threads": threads, "precision": opts.get("precision", "fp32")}
        return load_imitation_model(asset, **kw)[0]

    # (kind, label, plain-or-wrapped env, vector?)
    cases: list[tuple[str, str, Any, bool]] = [("single", "plain", base(), False)]
    if a.count_bonus > 0:
        from dreamarcade.wrappers.exploration import CountBonus

        cases.append(
            (
                "single",
                f"CountBonus(beta={a.count_bonus}) only, no imitation reward",
                CountBonus(base(), a.count_bonus),
                False,
            )
        )
    for label, opts, threads in variants:
        if opts.get("before"):
            env = before.YouTubeImitationReward(base(), embedder(opts, threads), ck)
        else:
            env = YouTubeImitationReward(base(), embedder(opts, threads), ck, embed_every=opts.get("embed_every", 1))
        cases.append(("single", label, env, False))
    vec_variants = list(variants)
    if a.threads > 1:
        vec_variants.insert(1, (f"fused, threads={a.threads}", {}, a.threads))
    cases.append(("vector", "plain", vbase(), True))
    for label, opts, threads in vec_variants:
        if opts.get("before"):
            env = before.YouTubeImitationRewardVector(vbase(), embedder(opts, threads), ck)
        else:
            ee = opts.get("embed_every", 1)
            env = YouTubeImitationRewardVector(vbase(), embedder(opts, threads), ck, embed_every=ee)
        cases.append(("vector", label, env, True))
    if a.agent_stack:
        from dreamarcade.baselines.imitation import ImitationConfig, make_envs

        agent_cfg = ImitationConfig(num_envs=a.num_envs, asset_dir=a.asset_dir)  # the same bundle as the other rows
        cases.append(("agent", "plain", make_envs(dataclasses.replace(agent_cfg, reward="game")), True))
        cases.append(("agent", "fused (default)", make_envs(agent_cfg), True))
        if a.count_bonus > 0:
            bonus_cfg = dataclasses.replace(agent_cfg, count_bonus=a.count_bonus)
            cases.append(("agent", f"fused + count bonus {a.count_bonus} (option)", make_envs(bonus_cfg), True))

    rates: dict[tuple[str, str], list[tuple[float, float]]] = {(k, lab): [] for k, lab, _, _ in cases}
    vsteps = max(1, a.steps // a.num_envs)
    for env_ in [c[2] for c in cases]:  # warm-up: first calls allocate, load kernels, detect borders
        _rate(env_, 5, hasattr(env_, "num_envs"))
    for r in range(a.rounds):
        for kind, label, env, vector in cases:
            rates[(kind, label)].append(_rate(env, vsteps if vector else a.steps, vector))
        print(f"round {r + 1}/{a.rounds} done", flush=True)

    names = {
        "single": "single env",
        "vector": f"SyncVectorEnv, {a.num_envs} envs",
        "agent": f"agent stack (make_envs), {a.num_envs} envs",
    }
    out: dict[str, Any] = {"args": vars(a), "torch_threads_default": 1, "rows": []}
    print("\n| setting | wrapped variant | plain steps/s | with imitation reward | ratio (wall) | ratio (CPU time) |")
    print("|---|---|---|---|---|---|")
    for kind in ("single", "vector", "agent"):
        if (kind, "plain") not in rates:
            continue
        plain = rates[(kind, "plain")]
        for (k, label), wr in rates.items():
            if k != kind or label == "plain":
                continue
            wall = statistics.median(w[0] / q[0] for w, q in zip(wr, plain))
            cpu = statistics.median(w[1] / q[1] for w, q in zip(wr, plain))
            pm, wm = statistics.median(q[0] for q in plain), statistics.median(w[0] for w in wr)
            print(f"| {names[kind]} | {label} | {pm:.0f} | {wm:.0f} | {wall:.2f} | {cpu:.2f} |")
            out["rows"].append(
                {
                    "setting": kind,
                    "variant": label,
                    "plain_wall_cpu": plain,
                    "wrapped_wall_cpu": wr,
                    "ratio_wall_median": wall,
                    "ratio_cpu_median": cpu,
                }
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
