"""Faster ways to run the imitation reward's encoder, and what each does to the reward.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_encoder_alternatives.py --steps 300 --num-envs 8 --rounds 5

The wrapper's embedding pass is most of its overhead (``bench_imitation_overhead.py --breakdown``). This measures,
on real agent frames, each way this project has (or tried) to run the bundled visual encoder phi:

* ``fused fp32, onnxruntime`` (the default when the ``onnx`` extra is installed): the same folded network as one
  ONNX Runtime graph on the frame ring (:class:`~dreamarcade.reward_models.inference.OnnxVisualEncoder`);
* ``fused fp32, torch`` (``backend="torch"``): BatchNorm folded, channels-last, the wrapper's frame ring as input;
* ``reference fp32``: the model's own eval-mode forward on stacked frames (the same numbers, slower);
* ``fused bf16`` (``precision="bf16"``, an option): weights and activations in bfloat16;
* ``int8 static``: PyTorch's FX post-training static quantization (x86 backend: int8 weights per channel, uint8
  activations), calibrated on the first half of the frames and judged on the second half. Not in the library.
* with ``--smaller``, fused encoders of smaller, *untrained* networks (fewer channels, no residual block, a stack
  of 2 frames): speed only, to see what retraining a smaller embedding (and the agents on its reward) could buy.
  Their similarity columns are empty: an untrained network's reward means nothing.

For each: milliseconds per frame at batch 1 (the single-env wrapper) and at batch ``--num-envs`` (the vector
wrapper), medians over ``--rounds`` interleaved rounds, torch on 1 thread; and, against the fp32 embeddings of the
held-out frames, the largest and mean change of the centred cosine similarity to the demo's checkpoints, and how many
(frame, checkpoint) pay decisions (similarity above the checkpoint's threshold, 0.5) come out the other way.

The frames come from ``--steps`` random-action steps of ``--num-envs`` Montezuma's Revenge envs inside the vector
wrapper (its own frame rings: the wrapper's processing exactly), every third step kept.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from dreamarcade.baselines.common import positive_int
from dreamarcade.checkpoint import atomic_write_text, json_text


def _agent_rings(embedder: Any, checkpoints: Any, num_envs: int, steps: int) -> tuple[np.ndarray, list[int]]:
    """(K, S, S, stack, 3) frame rings the vector wrapper built while playing at random, and each one's newest slot."""
    import ale_py

    from dreamarcade.wrappers.imitation import YouTubeImitationRewardVector

    gym.register_envs(ale_py)

    def base() -> gym.Env:
        return gym.make("ALE/MontezumaRevenge-v5", frameskip=4, repeat_action_probability=0.0)

    venv = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([base] * num_envs), embedder, checkpoints)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    rings, newest = [], []
    for t in range(steps):
        venv.step(rng.integers(0, 18, size=num_envs))
        if t % 3 == 0:
            rings.append(venv._ring.copy())
            newest += [venv._newest] * num_envs
    venv.close()
    return np.concatenate(rings), newest


class _Trunk(nn.Module):
    """phi without its final L2 normalisation (quantized ops end before it; it is applied in fp32)."""

    def __init__(self, phi: nn.Module) -> None:
        super().__init__()
        self.conv, self.mlp = phi.conv, phi.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.conv(x).flatten(1))


def _phi_input(stacks: np.ndarray, crop: int) -> torch.Tensor:
    """(B, stack, S, S, 3) uint8 stacks -> phi's (B, 3 * stack, crop, crop) float input in [0, 1] (centre crop)."""
    b, k, s = stacks.shape[0], stacks.shape[1], stacks.shape[2]
    x = torch.from_numpy(stacks).float().div_(255).permute(0, 1, 4, 2, 3).reshape(b, 3 * k, s, s)
    o = (s - crop) // 2
    return x[:, :, o : o + crop, o : o + crop].contiguous(memory_format=torch.channels_last)


def _int8_model(phi: nn.Module, calibration: torch.Tensor) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    trunk = _Trunk(copy.deepcopy(phi)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_fx(trunk, get_default_qconfig_mapping("x86"), example_inputs=(calibration[:8],))
        with torch.inference_mode():
            for i in range(0, len(calibration), 64):
                prepared(calibration[i : i + 64])
        return convert_fx(prepared)


# smaller networks timed by --smaller: EmbeddingConfig overrides (the default is (16, 32, 32), 1 block, stack 4)
SMALLER = {
    "(8, 16, 16), 1 res block": {"channels": (8, 16, 16)},
    "(8, 16, 16), no res block": {"channels": (8, 16, 16), "res_blocks": 0},
    "(4, 8, 16), no res block": {"channels": (4, 8, 16), "res_blocks": 0},
    "(8, 16, 16), no res block, stack 2": {"channels": (8, 16, 16), "res_blocks": 0, "stack": 2},
}


class _Compiled:
    """The fused encoder's network (``FusedVisualEncoder.forward_input``) under ``torch.compile``, one graph per ring
    slot and batch size (compiled on first use, before the timing rounds: each row is called once before it is
    timed). The uint8 ring's conversion stays eager, as in the fused rows."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.graph = torch.compile(encoder.forward_input, dynamic=False)

    def embed_ring(self, ring: np.ndarray, newest: int) -> np.ndarray:
        with torch.no_grad():
            return self.graph(self.encoder._input(ring), int(newest)).numpy()


def encoder_macs(cfg: Any) -> int:
    """Multiply-adds of one frame stack through phi of an ``EmbeddingConfig`` (convs, residual blocks, MLP)."""
    side, c_in, macs = cfg.crop_size, 3 * cfg.stack, 0
    for c in cfg.channels:
        macs += c_in * c * 9 * side * side
        side, c_in = side // 2, c
    macs += cfg.res_blocks * 2 * c_in * c_in * 9 * side * side
    return macs + c_in * side * side * cfg.hidden + cfg.hidden * cfg.embed_dim


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=300, help="random-action vector steps to collect frames")
    p.add_argument("--num-envs", type=positive_int, default=8, help="envs (and the batch size of the batched rows)")
    p.add_argument("--rounds", type=positive_int, default=5, help="interleaved timing rounds (median reported)")
    p.add_argument("--smaller", action="store_true", help="also time untrained smaller networks (speed only)")
    p.add_argument(
        "--compiled", action="store_true", help="also time the fused fp32 encoder under torch.compile (inductor)"
    )
    p.add_argument("--asset-dir", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.reward_models.checkpoints import FrameStackEmbedder
    from dreamarcade.reward_models.inference import ring_to_stacks
    from dreamarcade.wrappers.imitation import load_imitation_model

    asset = a.asset_dir or ASSET_DIR
    fused, ck = load_imitation_model(asset)  # the default backend: ONNX Runtime when installed
    torch_fused = fused if fused.backend == "torch" else load_imitation_model(asset, backend="torch")[0]
    bf16 = load_imitation_model(asset, precision="bf16")[0]
    rings, newest = _agent_rings(fused, ck, a.num_envs, a.steps)
    if len(rings) < 4 * a.num_envs:
        raise SystemExit(f"error: --steps {a.steps} keeps only {len(rings)} frame rings: pass --steps >= 10")
    stacks = np.concatenate([ring_to_stacks(rings[i : i + 1], newest[i]) for i in range(len(rings))])
    phi = fused.model.phi.eval()
    x = _phi_input(stacks, phi.size)
    half = len(x) // 2
    int8 = _int8_model(phi, x[:half])
    held = slice(half, len(x))
    n = a.num_envs

    def embed_int8(inp: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return nn.functional.normalize(int8(inp), dim=1).numpy()

    def embed_reference(inp: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return phi(inp).numpy()

    Row = tuple[Any, Any, Any]  # (embed all held-out frames or None: speed only, batch-1 call, batch-n call)

    def ring_row(embedder: Any) -> Row:
        """A fused encoder's row: it reads the wrapper's frame rings."""
        return (
            lambda: np.concatenate([embedder.embed_ring(rings[i : i + 1], newest[i]) for i in range(half, len(x))]),
            lambda: embedder.embed_ring(rings[:1], newest[0]),
            lambda: embedder.embed_ring(rings[:n], newest[0]),  # one step's rings: the same newest slot
        )

    def stack_row(embed: Any) -> Row:
        """A row of a model that reads phi's stacked float input. It is timed from the same uint8 frame rings as
        the fused rows, the ring-to-stack reorder and the float conversion included (the fused rows pay for their
        own conversion inside ``embed_ring``; timing these on a ready float input favoured them by ~0.1 ms)."""
        crop = phi.size
        return (
            lambda: embed(x[held]),
            lambda: embed(_phi_input(ring_to_stacks(rings[:1], newest[0]), crop)),
            lambda: embed(_phi_input(ring_to_stacks(rings[:n], newest[0]), crop)),
        )

    default = f"fused fp32, {fused.backend} (default)"
    rows: dict[str, Row] = {default: ring_row(fused)}
    if fused.backend != "torch":
        rows["fused fp32, torch (backend='torch')"] = ring_row(torch_fused)
    rows |= {
        # the library's reference path (FrameStackEmbedder(fused=False)), NCHW as training runs it: a channels-last
        # input (stack_row's) made it ~1.2x faster than what the library runs
        "reference fp32 (model's own forward)": ring_row(FrameStackEmbedder(fused.model, fused=False)),
        'fused bf16 (precision="bf16", option)': ring_row(bf16),
        "int8 static (FX, x86; not in the library)": stack_row(embed_int8),
    }
    if a.compiled:
        rows["fused fp32 under torch.compile (inductor; not in the library)"] = ring_row(_Compiled(torch_fused.fused))
    macs = {label: encoder_macs(fused.cfg) for label in rows}
    if a.smaller:
        from dreamarcade.reward_models.embedding import TDCCMC
        from dreamarcade.reward_models.inference import FusedVisualEncoder

        for name, overrides in SMALLER.items():
            cfg = dataclasses.replace(fused.cfg, **overrides)
            small = FusedVisualEncoder(TDCCMC(cfg).eval().phi, stack=cfg.stack, frame_size=cfg.frame_size)
            k = cfg.stack  # the newest k frames of each ring: a ring of k slots (timing only)
            small_rings = np.ascontiguousarray(rings[: max(n, 1), :, :, :k])
            label = f"untrained {name} (speed only)"
            rows[label] = (
                None,
                lambda e=small, r=small_rings: e.embed_ring(r[:1], 0),
                lambda e=small, r=small_rings: e.embed_ring(r[:n], 0),
            )
            macs[label] = encoder_macs(cfg)
    ck_t = np.asarray(ck.embeddings, np.float32).T
    thresholds = np.full(len(ck), 0.5)
    exact = ck.centre(embed_reference(x[held])) @ ck_t
    pays = exact > thresholds
    quality: dict[str, dict[str, float]] = {}
    for label, (embed_all, _, _) in rows.items():
        if embed_all is None:
            continue
        sims = ck.centre(embed_all()) @ ck_t
        diff = np.abs(sims - exact)
        quality[label] = {
            "max_abs_similarity_change": float(diff.max()),
            "mean_abs_similarity_change": float(diff.mean()),
            "pay_decisions_flipped": int(((sims > thresholds) != pays).sum()),
        }
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in rows}
    for r in range(a.rounds):
        for label, (_, one, batch) in rows.items():
            ms = []
            for fn, calls, frames in ((one, 100, 1), (batch, 30, n)):
                fn()
                t = time.perf_counter()
                for _ in range(calls):
                    fn()
                ms.append((time.perf_counter() - t) / calls / frames * 1e3)
            times[label].append((ms[0], ms[1]))
        print(f"round {r + 1}/{a.rounds} done", flush=True)

    base1 = statistics.median(t[0] for t in times[default])
    basen = statistics.median(t[1] for t in times[default])
    decisions, positives = pays.size, int(pays.sum())
    print(f"\nheld-out frames: {len(x) - half}, checkpoints: {len(ck)}, pay decisions: {decisions} ({positives} pay)")
    print(
        f"| encoder | M multiply-adds per frame | ms per frame, batch 1 | vs default | ms per frame, batch {n} | "
        "vs default | max / mean similarity change | pay decisions flipped |"
    )
    print("|---|---|---|---|---|---|---|---|")
    out: dict[str, Any] = {"args": vars(a), "decisions": decisions, "positives": positives, "rows": []}
    for label in rows:
        t1 = statistics.median(t[0] for t in times[label])
        tn = statistics.median(t[1] for t in times[label])
        q = quality.get(label)
        judged = (
            f"{q['max_abs_similarity_change']:.4f} / {q['mean_abs_similarity_change']:.4f} | "
            f"{q['pay_decisions_flipped']} of {decisions}"
            if q
            else "untrained | untrained"
        )
        print(
            f"| {label} | {macs[label] / 1e6:.2f} | {t1:.3f} | {base1 / t1:.2f}x | {tn:.3f} | {basen / tn:.2f}x | "
            f"{judged} |"
        )
        row = {"encoder": label, "macs": macs[label], "ms_batch1": t1, "ms_batchN": tn, **(q or {})}
        out["rows"].append({**row, "rounds": times[label]})
    if a.json:  # atomic, strict JSON: an interrupted run leaves the old file, not half of a new one
        atomic_write_text(a.json, json_text(out, indent=2) + "\n")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
