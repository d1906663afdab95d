"""Turn a trained embedding and one held-aside demonstration video into a reward bundle.

A bundle is a folder with ``embedding/`` (the TDC/CMC weights, no optimizer state) and ``checkpoints/``
(the demo's checkpoint trajectory), both safetensors + JSON; :func:`dreamarcade.wrappers.imitation.load_imitation_model`
reads it. The package ships one for Montezuma's Revenge in ``dreamarcade/assets/montezuma_imitation``.

CLI::

    python -m dreamarcade.reward_models.build_reward runs/imitation/emb_tdc_cmc \\
        runs/imitation/videos/traj3_style13.mp4 --out dreamarcade/assets/montezuma_imitation

The intro of the demo (before the gameplay starts) is trimmed with ``--start-s``; when it is not given and the
video has a sidecar JSON written by the demo recorder, its ``gameplay_start_s`` is used (with a real upload you
would read it off the video, as the public reimplementation trimmed its videos by hand).

Example (the bundled Montezuma reward was built this way; its metadata names the demo it came from):
    >>> from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    >>> from dreamarcade.wrappers.imitation import load_imitation_model
    >>> embedder, checkpoints = load_imitation_model(ASSET_DIR)
    >>> len(checkpoints.meta["demo_video"]) > 0, checkpoints.meta["start_frame"] > 0
    (True, True)
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from dreamarcade.baselines.common import check_folder_path
from dreamarcade.errors import CheckpointError, VideoError, input_checks, input_error_status
from dreamarcade.reward_models.checkpoints import (
    CheckpointTrajectory,
    FrameStackEmbedder,
    build_checkpoints,
    checkpoint_spacing,
)
from dreamarcade.reward_models.embedding import load_embedding
from dreamarcade.reward_models.video import VideoReader

__all__ = ["build_bundle", "first_frame_at", "main", "sidecar_start"]


def first_frame_at(start_s: float, fps: float) -> int:
    """Index of the first frame at or after ``start_s`` seconds in a video read at ``fps``.

    The recorder writes ``gameplay_start_s = intro_frames / recorder_fps``, so ``start_s * fps`` is often a whole
    number up to float error (62 / 30 * 15 = 31.000000000000004): it is rounded to 1e-6 before the ceiling.

    Example:
        >>> first_frame_at(62 / 30, 15), first_frame_at(2.1, 15), first_frame_at(0.0, 15)
        (31, 32, 0)
    """
    frames = round(start_s * fps, 6)
    if not math.isfinite(frames):  # 1e308 s passes a finiteness check, and its frame count overflows
        raise VideoError(f"a gameplay start of {start_s} s is beyond any video: give the start in seconds")
    return int(math.ceil(frames))


def sidecar_start(side: str | os.PathLike[str]) -> float:
    """The gameplay start (seconds) that the demo recorder's sidecar JSON gives; 0 without a sidecar."""
    side = Path(side)
    if not side.is_file():
        return 0.0
    try:
        value = json.loads(side.read_text()).get("gameplay_start_s", 0.0)
        start = float(value)
    except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, not a number
        raise VideoError(
            f"the sidecar '{side}' does not give a gameplay start in seconds ({exc}): fix it, or pass --start-s"
        ) from None
    if not math.isfinite(start) or start < 0:
        raise VideoError(f"the sidecar '{side}' gives gameplay_start_s={value!r}: fix it, or pass --start-s")
    return start


def build_bundle(
    embedding_dir: str | os.PathLike[str],
    demo_video: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    every: int = 16,
    start_s: float | None = None,
) -> CheckpointTrajectory:
    """Embed ``demo_video``, keep every ``every``-th frame as a checkpoint, write ``out_dir``.

    ``start_s`` (None: the recorder's sidecar JSON beside the video, or 0) is where the gameplay starts. A start
    that leaves too few frames for two spacings is a :class:`VideoError` naming the video, its length and where
    the start came from.
    """
    with input_checks():  # refused before the video is decoded
        every = checkpoint_spacing(every)
        if start_s is not None and not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"--start-s (start_s) must be a finite number of seconds >= 0, got {start_s!r}")
        for part in ("embedding", "checkpoints"):  # written at the end: a file in the way lost the work
            check_folder_path(Path(out_dir) / part, "--out (out_dir)")
    model, config = load_embedding(embedding_dir)
    if not all(torch.isfinite(t).all() for t in model.state_dict().values()):
        raise CheckpointError(
            f"the embedding in '{embedding_dir}' holds NaN or inf weights: its training diverged. Retrain it (with a "
            "lower --lr), or pass an earlier checkpoint."
        )
    cfg = model.cfg
    demo_video = Path(demo_video)
    side = demo_video.with_suffix(".json")
    origin = "--start-s (start_s)"
    if start_s is None:
        start_s = sidecar_start(side)
        origin = f"the sidecar '{side}'" if side.is_file() else "the default 0"
    reader = VideoReader(demo_video, fps=cfg.fps, size=(cfg.frame_size, cfg.frame_size), audio=False)
    clip = reader.read_all()
    start = first_frame_at(start_s, cfg.fps)
    left = len(clip.frames) - start
    if left < 2 * every:
        raise VideoError(
            f"'{demo_video}' is {len(clip.frames) / cfg.fps:.1f} s long ({len(clip.frames)} frames at {cfg.fps:g} "
            f"fps). The gameplay start {start_s:g} s, from {origin}, leaves {max(left, 0)} frames, and checkpoints "
            f"every {every} frames need at least {2 * every}. Fix the start, or use a longer video or a smaller "
            "--every."
        )
    embedder = FrameStackEmbedder(model)
    traj = build_checkpoints(embedder, clip.frames, every=every, start=start, source=demo_video.name)
    traj.meta = {
        "demo_video": demo_video.name,
        "start_frame": start,
        "video_frames": len(clip.frames),
        "crop": reader.crop.as_list() if reader.crop is not None else None,
        "embedding_videos": config.get("videos", []),
        "embedding_steps": config.get("step"),
    }
    out = Path(out_dir)
    model.save(out / "embedding", extra={"videos": config.get("videos", []), "step": config.get("step")})
    traj.save(out / "checkpoints")
    return traj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dreamarcade.reward_models.build_reward", description=__doc__)
    p.add_argument("embedding", help="a tdc_cmc checkpoint directory")
    p.add_argument("demo", help="the held-aside demonstration video")
    p.add_argument("--out", required=True)
    p.add_argument("--every", type=int, default=16, help="checkpoint spacing in frames (paper: 16)")
    p.add_argument("--start-s", type=float, default=None, help="seconds of intro to skip")
    a = p.parse_args(argv)
    try:
        t = build_bundle(a.embedding, a.demo, a.out, a.every, a.start_s)
    except Exception as exc:  # a missing embedding, an unreadable video, a start past its end: one line
        return input_error_status(exc, parser=p)
    print(f"wrote {a.out}: {len(t)} checkpoints every {t.every} frames from {t.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
