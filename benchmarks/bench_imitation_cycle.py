"""Cycle-consistency of pixels / TDC / CMC / TDC+CMC embeddings on held-out domain-shifted videos, and a t-SNE plot.

Usage::

    python benchmarks/bench_imitation_cycle.py --videos runs/imitation/videos/traj3_style13.mp4 ... \\
        --emb tdc=runs/imitation/emb_tdc cmc=runs/imitation/emb_cmc tdc+cmc=runs/imitation/emb_tdc_cmc \\
        --tsne runs/imitation/tsne.png

Every ordered pair of videos gives a 2-cycle score (|i - k| <= 1) and every ordered triple a 3-cycle score; the
table reports their means. Intro cards are trimmed with each video's sidecar JSON (``gameplay_start_s``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np
import torch

from dreamarcade.baselines.common import name_and_path
from dreamarcade.checkpoint import atomic_write_text, check_output_file, json_text
from dreamarcade.errors import input_checks, input_error_status
from dreamarcade.reward_models.build_reward import first_frame_at, sidecar_start
from dreamarcade.reward_models.cycle import cycle_consistency, pixel_features, three_cycle_consistency
from dreamarcade.reward_models.embedding import load_embedding
from dreamarcade.reward_models.video import read_video


def _trimmed(path: Path, fps: float, size: int) -> np.ndarray:
    start = sidecar_start(path.with_suffix(".json"))  # the recorder's gameplay start, 0 without a sidecar
    clip = read_video(path, fps=fps, size=(size, size), audio=False)
    frames = clip.frames[first_frame_at(start, fps) :]  # as build_reward trims the demonstration
    if len(frames) < 2:
        raise SystemExit(f"error: '{path}' has {len(frames)} frames after its gameplay start ({start} s): too short")
    return frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--videos", nargs="+", required=True)
    p.add_argument("--emb", nargs="+", type=name_and_path, default=[], help="name=checkpoint_dir")
    p.add_argument("--tsne", default=None, help="PNG for the t-SNE plot of the last embedding's trajectories")
    p.add_argument("--json", default=None)
    p.add_argument("--per-pair", action="store_true", help="also print every ordered pair's 2-cycle score")
    ties_help = "nearest-neighbour ties (identical frames): the first index (default) or any of them"
    p.add_argument("--ties", choices=("first", "any"), default="first", help=ties_help)
    a = p.parse_args()
    if len(a.videos) < 2:
        p.error("--videos: cycle-consistency needs at least 2 videos")
    if a.tsne and not a.emb:
        p.error("--tsne plots an embedding's trajectories: give one with --emb name=checkpoint_dir")
    names = [name for name, _ in a.emb]
    clash = sorted({n for n in names if names.count(n) > 1 or n in ("pixels", "pixels 16x16")})
    if clash:  # the table keys rows by name: one would replace another (a "pixels" embedding replaced the baseline)
        p.error(f"--emb names {clash} repeat or clash with the pixel rows ('pixels', 'pixels 16x16'): rename them")
    try:  # before the work: an output that cannot be written, a missing embedding
        with input_checks():
            for path, flag in ((a.json, "--json"), (a.tsne, "--tsne")):
                if path:
                    check_output_file(path, flag)
        torch.set_num_threads(1)
        models = {}
        for name, d in a.emb:
            models[name], _ = load_embedding(d)
    except Exception as exc:
        raise SystemExit(input_error_status(exc, parser=p)) from None
    size = next(iter(models.values())).cfg.frame_size if models else 54
    fps = next(iter(models.values())).cfg.fps if models else 15.0
    # the frames are read once, for every embedding: each must see the frame rate and size it was trained on
    reads = {n: (m.cfg.fps, m.cfg.frame_size) for n, m in models.items()}
    other = {n: r for n, r in reads.items() if r != (fps, size)}
    if other:
        p.error(
            f"--emb: the embeddings read videos differently (fps, frame size): {other} against ({fps}, {size}) for "
            "the first; compare embeddings of one frame rate and size per run"
        )
    t0 = time.time()
    videos = [Path(v) for v in a.videos]
    if len({v.name for v in videos}) < len(videos):  # the table keys videos by file name: one would replace another
        p.error(f"two videos share a file name ({[v.name for v in videos]}): rename or copy one")
    try:
        frames = {v.name: _trimmed(v, fps, size) for v in videos}
    except Exception as exc:  # a missing, empty or unreadable video: one line naming it
        raise SystemExit(input_error_status(exc, parser=p)) from None
    # pixels: the processed frames the embeddings see (frame_size^2 RGB), and a 16x16 thumbnail variant
    feats: dict[str, dict[str, np.ndarray]] = {
        "pixels": {k: pixel_features(f) for k, f in frames.items()},
        "pixels 16x16": {k: pixel_features(f, 16) for k, f in frames.items()},
    }
    for name, m in models.items():
        feats[name] = {k: m.embed_frames(f) for k, f in frames.items()}
    names = list(frames)
    rows = {}
    pairs: dict[str, dict[str, float]] = {}
    for method, fs in feats.items():
        two = [cycle_consistency(fs[x], fs[y], ties=a.ties) for x, y in itertools.permutations(names, 2)]
        pairs[method] = {f"{x} -> {y}": t for (x, y), t in zip(itertools.permutations(names, 2), two)}
        three = [
            three_cycle_consistency(fs[x], fs[y], fs[z], ties=a.ties) for x, y, z in itertools.permutations(names, 3)
        ]
        rows[method] = {"2-cycle": float(np.mean(two)), "3-cycle": float(np.mean(three)) if three else float("nan")}
    print(f"videos: {', '.join(f'{k} ({len(v)} frames)' for k, v in frames.items())}")
    print("| features | 2-cycle % | 3-cycle % |\n|---|---|---|")
    for method, r in rows.items():
        three_cell = "-" if np.isnan(r["3-cycle"]) else f"{r['3-cycle']:.1f}"  # 2 videos make no triple
        print(f"| {method} | {r['2-cycle']:.1f} | {three_cell} |")
    if a.per_pair:
        print("\n| pair (2-cycle %) | " + " | ".join(feats) + " |\n|---|" + "---|" * len(feats))
        for key in pairs["pixels"]:
            print(f"| {key} | " + " | ".join(f"{pairs[m][key]:.1f}" for m in feats) + " |")
    print(f"({time.time() - t0:.0f} s)")
    if a.json:  # the 3-cycle of 2 videos is NaN, written as null (bare NaN is not JSON)
        out = {"videos": names, "rows": rows, "pairs_2cycle": pairs}
        atomic_write_text(a.json, json_text(out, indent=2))
    if a.tsne and models:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.manifold import TSNE

        method = list(models)[-1]
        allf = np.concatenate([feats[method][k] for k in names])
        perplexity = min(30.0, len(allf) - 1.0)  # t-SNE needs fewer neighbours than points (short videos)
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(allf)
        fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
        o = 0
        for i, k in enumerate(names):
            n = len(feats[method][k])
            pts = xy[o : o + n]
            ax.plot(pts[:, 0], pts[:, 1], "-", color=f"C{i}", alpha=0.35, linewidth=0.8)
            ax.scatter(pts[:, 0], pts[:, 1], c=np.linspace(0, 1, n), cmap="viridis", s=6)
            ax.plot(pts[0, 0], pts[0, 1], "o", color=f"C{i}", label=k)
            o += n
        ax.set_title(
            f"t-SNE of {method} embeddings\npoint colour = time in the video (dark = start), line = video", fontsize=9
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        tmp = Path(a.tsne).with_name(f".{Path(a.tsne).stem}.tmp.png")
        fig.savefig(tmp)
        os.replace(tmp, a.tsne)
        print(f"wrote {a.tsne}")


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
