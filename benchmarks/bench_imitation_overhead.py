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
* cost breakdown (``--breakdown``): where a wrapped step's time goes, per frame: the bare ALE step, the frame
  processing (border crop + area resize, :func:`~dreamarcade.reward_models.video.process_frame`, and the same
  through cv2's uint8 area path, as before ``area_resize``), the fused embedding pass at batch 1 and at batch
  ``num_envs`` (default backend, and torch), the encoder's multiply-adds per frame and the rate it
  reaches against a large fp32 matrix product on the same core, and the ratio the wrapper would reach if only
  the frame processing and the embedding cost anything (its ceiling for this encoder on this CPU);
* count bonus (``--count-bonus BETA``): :class:`~dreamarcade.wrappers.exploration.CountBonus` alone around the
  single env, and (with ``--agent-stack``) the agent stack with ``count_bonus=BETA`` on top of the imitation reward.

Wrapped variants (each row is reported separately; the first of each kind is the default):
``fused`` (the default fused inference encoder on its default backend, ONNX Runtime when the ``onnx`` extra is
installed, 1 thread), ``fused, backend=torch`` (the same encoder run by torch), ``reference`` (the model's own eval-mode
forward: BatchNorm layers, NCHW; the encoder before this benchmark's speed work), ``threads=T`` (fused with T threads
for the embedding pass, vector only), ``embed_every=K`` (the documented fidelity-for-speed option: embed
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
from dreamarcade.checkpoint import atomic_write_text, json_text


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


def _interleaved_ms(parts: dict[str, tuple[Any, int]], rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of each part's wall-clock milliseconds per call; ``parts`` maps a name to (function,
    calls per round). The parts take turns within each round, so the machine's drift falls on all of them alike."""
    for fn, _ in parts.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(rounds):
        for name, (fn, calls) in parts.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t) / calls * 1e3)
    return {name: statistics.median(ms) for name, ms in times.items()}


def _encoder_macs(phi: torch.nn.Module) -> int:
    """Multiply-adds of one forward pass of the visual encoder phi for one frame stack (convs and linears)."""
    macs = 0

    def count(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs += output[0].numel() * k
        elif isinstance(module, torch.nn.Linear):
            macs += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in phi.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.inference_mode():
            phi(torch.zeros(1, phi.in_channels, phi.size, phi.size))
    finally:
        for h in hooks:
            h.remove()
    return macs


def _breakdown(
    make_env: Any, embedder: Any, torch_embedder: Any, num_envs: int, steps: int, rounds: int
) -> dict[str, float]:
    """Per-frame milliseconds of each part of a wrapped step, interleaved over ``rounds`` rounds in this process.

    The frames are real: ``steps`` random-action frames of ``make_env()``, processed like the wrapper does
    (borders detected on the first frame that is not all black); the embedding rings are built from them.
    """
    import cv2

    from dreamarcade.reward_models.video import BORDER_THRESHOLD, detect_borders, process_frame

    env = make_env()
    frame, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 18, size=steps)
    frames = [frame]

    def play() -> None:
        for a in actions:
            obs, _, term, trunc, _ = env.step(int(a))
            if len(frames) < steps:
                frames.append(obs)
            if term or trunc:
                env.reset()

    play()  # the frames, and the border crop detected on them as the wrapper does
    lit = [f for f in frames if f.max() >= BORDER_THRESHOLD]
    crop = detect_borders(lit[0], threshold=BORDER_THRESHOLD) if lit else None
    size = (embedder.frame_size, embedder.frame_size)
    processed = np.stack([process_frame(f, crop, size) for f in frames])

    def process_all() -> None:
        for f in frames:
            process_frame(f, crop, size)

    def process_uint8() -> None:  # the same result through cv2's uint8 area path (the wrapper's before area_resize)
        for f in frames:
            cv2.resize(crop.apply(f) if crop is not None else f, size, interpolation=cv2.INTER_AREA)

    k = embedder.stack
    if len(processed) < k:
        raise SystemExit(f"error: --breakdown needs --steps >= {k} (one frame stack), got {steps}")
    starts = np.linspace(0, len(processed) - k, num_envs).astype(int)
    # (num_envs, S, S, stack, 3) rings of consecutive frames, newest in the last slot
    ring = np.stack([processed[s : s + k].transpose(1, 2, 0, 3) for s in starts])
    m = torch.randn(512, 512)
    ms = _interleaved_ms(
        {
            "ale": (play, 1),
            "process": (process_all, 1),
            "process_uint8": (process_uint8, 1),
            "embed_1": (lambda: embedder.embed_ring(ring[:1], k - 1), 200),
            "embed_n": (lambda: embedder.embed_ring(ring, k - 1), 50),
            "embed_torch_1": (lambda: torch_embedder.embed_ring(ring[:1], k - 1), 200),
            "embed_torch_n": (lambda: torch_embedder.embed_ring(ring, k - 1), 50),
            "matmul": (lambda: torch.mm(m, m), 50),
        },
        rounds,
    )
    env.close()
    ale, process = ms["ale"] / steps, ms["process"] / len(frames)
    process_uint8 = ms["process_uint8"] / len(frames)
    embed_1, embed_n, mm = ms["embed_1"], ms["embed_n"] / num_envs, ms["matmul"]
    macs = _encoder_macs(embedder.model.phi)
    return {
        "ale_step_ms": ale,
        "process_frame_ms": process,
        "process_frame_cv2_uint8_ms": process_uint8,
        "embed_batch1_ms": embed_1,
        "embed_batchN_ms_per_frame": embed_n,
        "embed_torch_batch1_ms": ms["embed_torch_1"],
        "embed_torch_batchN_ms_per_frame": ms["embed_torch_n"] / num_envs,
        "encoder_macs_per_frame": float(macs),
        "encoder_gmacs_batchN": macs / embed_n / 1e6,
        "fp32_matmul_gmacs": 512**3 / mm / 1e6,
        "ceiling_single": ale / (ale + process + embed_1),
        "ceiling_vector": ale / (ale + process + embed_n),
    }


def _print_breakdown(b: dict[str, float], num_envs: int) -> None:
    ale = b["ale_step_ms"]
    print("\n| part of a wrapped step | ms per frame | relative to the bare ALE step |")
    print("|---|---|---|")
    for label, key in (
        ("bare ALE step (the plain env)", "ale_step_ms"),
        ("frame processing (border crop + area resize)", "process_frame_ms"),
        ("the same through cv2's uint8 area path (before area_resize)", "process_frame_cv2_uint8_ms"),
        ("embedding pass, batch 1 (single env)", "embed_batch1_ms"),
        (f"embedding pass, batch {num_envs} (vector), per frame", "embed_batchN_ms_per_frame"),
        ("embedding pass, batch 1, torch backend", "embed_torch_batch1_ms"),
        (f"embedding pass, batch {num_envs}, torch backend, per frame", "embed_torch_batchN_ms_per_frame"),
    ):
        print(f"| {label} | {b[key]:.3f} | {b[key] / ale:.2f}x |")
    print(
        f"\nencoder: {b['encoder_macs_per_frame'] / 1e6:.2f} M multiply-adds per frame; "
        f"{b['encoder_gmacs_batchN']:.1f} GMAC/s at batch {num_envs}, against {b['fp32_matmul_gmacs']:.1f} GMAC/s "
        "for a 512x512 fp32 matrix product on the same core"
    )
    print(
        f"ceiling (only frame processing and embedding cost anything): single env {b['ceiling_single']:.2f}x, "
        f"vector {b['ceiling_vector']:.2f}x"
    )


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
    p.add_argument("--threads", type=int, default=2, help="embedding threads of the vector 'threads=T' row (0: no row)")
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
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure where a wrapped step's time goes (ALE step, frame processing, embedding) and the "
        "ratio's ceiling for this encoder on this CPU",
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
    if a.breakdown and a.steps < fused.stack:  # checked before the rounds, not after them (and their results)
        p.error(f"--breakdown needs --steps >= {fused.stack} (one frame stack), got {a.steps}")
    variants: list[tuple[str, dict[str, Any], int | None]] = [(f"fused (default: {fused.backend})", {}, None)]
    if fused.backend != "torch":
        variants.append(("fused, backend=torch", {"backend": "torch"}, None))
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
        if opts.get("fused", True) and threads is None and "precision" not in opts and "backend" not in opts:
            return fused
        kw = {"fused": opts.get("fused", True), "num_threads": threads, "precision": opts.get("precision", "fp32")}
        kw["backend"] = opts.get("backend", "auto")
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
    print("\n| setting | wrapped variant | plain steps/s | wrapped steps/s | ratio (wall) | ratio (CPU time) |")
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
    if a.breakdown:
        torch_fused = fused if fused.backend == "torch" else load_imitation_model(asset, backend="torch")[0]
        out["breakdown"] = _breakdown(base, fused, torch_fused, a.num_envs, a.steps, a.rounds)
        _print_breakdown(out["breakdown"], a.num_envs)
    if a.json:
        atomic_write_text(a.json, json_text(out, indent=2) + "\n")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
