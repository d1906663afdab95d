"""Train the TDC + CMC embedding on a few videos: L = L_td + lambda * L_cm (Aytar et al. 2018, section 3).

Sampling (as the paper describes it): pick one of the training videos, pick a distance class uniformly, pick a
gap ``dt`` uniformly inside the class's interval, then a pair of positions ``dt`` apart. TDC pairs are two frame
stacks; CMC pairs are a frame stack and the audio under another position. Adam, lr 1e-4, batch 32, 200k steps in
the paper; this module's defaults are the paper's, the CLI lets a CPU run take fewer steps. Two CMC choices the
paper leaves open are parameters with measured defaults: the CLI's CMC is 2-way, aligned vs ``>= 5`` frames apart
(``--cmc-binary``, :data:`DEFAULT_CMC_FAR`; ``0`` = the 6 TDC intervals), 75% of CMC audio windows are
anchored on a sound event (``--cmc-event-fraction``; ``0`` = uniform), and lambda is 4 (``--cmc-weight``).

CLI::

    python -m dreamarcade.reward_models.train_embedding runs/imitation/videos/demo_{0,1,2}.[mw]* \\
        --out runs/imitation/embedding --steps 3000

(``.[mw]*``: the mp4, mkv or webm video, not the ``.json`` sidecar ``demo_videos`` writes next to it.)

Checkpoints (``--out``) are written every ``--save-every`` steps with the optimizer and RNG state, and
``--resume`` continues from the last one.

Example (TDC pairs from two videos of 300 and 900 frames; each pair's gap lies in its class's interval):
    >>> import numpy as np
    >>> from dreamarcade.reward_models.train_embedding import sample_pairs
    >>> intervals = ((0, 0), (1, 1), (2, 2), (3, 4), (5, 20), (21, 200))
    >>> vids, i, j, k = sample_pairs([300, 900], intervals, batch=64, rng=np.random.default_rng(0))
    >>> gaps = np.abs(i - j)
    >>> bool(all(lo <= g <= hi for g, (lo, hi) in zip(gaps, np.array(intervals)[k])))
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dreamarcade.baselines.common import (
    GracefulStop,
    RunLogger,
    check_folder_path,
    check_ranges,
    check_run_dir_free,
    claim_run_dir,
    drop_rows_after,
    releases_run_dirs,
)
from dreamarcade.checkpoint import checkpoint_exists, load_checkpoint, pack_state, save_checkpoint, unpack_state
from dreamarcade.errors import (
    CheckpointError,
    DivergedError,
    VideoError,
    describe_changes,
    given_flags,
    input_checks,
    input_error_status,
)
from dreamarcade.precision import flush_denormals
from dreamarcade.reward_models.embedding import TDCCMC, EmbeddingConfig, check_intervals, stack_frames
from dreamarcade.reward_models.video import VideoReader

__all__ = [
    "TrainConfig",
    "Clip",
    "load_clips",
    "sample_pairs",
    "sample_offsets",
    "evaluate_accuracy",
    "train_embedding",
    "main",
]


# CMC is 2-way by default: aligned ([0]) vs at least this many frames apart. The paper's 6 TDC intervals ask the
# audio to tell gaps 0, 1, 2 and 3-4 apart although the 4-frame audio window and the 4-frame stack overlap at those
# gaps; measured, that 6-way CMC stays at chance (README, "Defaults and assumptions"). 5 = stack + 1: no shared frame.
DEFAULT_CMC_FAR = 5
# lambda: not in any retrieved text of the paper (the reimplementations use 1). Chosen by cycle-consistency, as the
# paper selects hyperparameters: with the 2-way event-anchored CMC, lambda 4 beat lambda 1 (RESULTS.md).
DEFAULT_CMC_WEIGHT = 4.0


@dataclass
class TrainConfig:
    """Optimisation hyperparameters (paper values as defaults, except ``cmc_event_fraction``: see below).

    Example (a CPU-sized run: fewer steps, the paper's batch size and learning rate):
        >>> import json
        >>> from dreamarcade.reward_models.train_embedding import TrainConfig
        >>> tcfg = TrainConfig(steps=3000, threads=2)
        >>> tcfg.batch_size, tcfg.lr, tcfg.cmc_event_fraction
        (32, 0.0001, 0.75)
        >>> TrainConfig(**json.loads(json.dumps(vars(tcfg)))) == tcfg  # checkpoints store it as JSON
        True
    """

    steps: int = 200_000
    batch_size: int = 32
    lr: float = 1e-4
    seed: int = 0
    save_every: int = 500
    threads: int = 1
    # Fraction of CMC pairs whose audio window is anchored on a sound event (windows louder than
    # ``event_level``); 0 = the paper's uniform sampling. In Montezuma's first room the sounds are the jump
    # (its first 2 agent steps) and a few pick-up/door jingles; walking and climbing are silent, so most uniform
    # pairs compare silence with silence and carry no timing. Measured (README, RESULTS.md): with 0.75 the
    # binary CMC classifier generalises to held-out videos within 600 steps, with uniform pairs it barely moves.
    cmc_event_fraction: float = 0.75
    event_level: float = 0.05


@dataclass
class Clip:
    """One processed training video: frames (T, S, S, 3) uint8 and per-frame audio (T, spf) or None.

    Example (:func:`load_clips` reads a silent 20-frame video for a TDC-only embedding, then it is evaluated):
        >>> import os, tempfile, numpy as np
        >>> from dreamarcade.reward_models.demo_videos import write_av
        >>> from dreamarcade.reward_models.embedding import EmbeddingConfig, TDCCMC
        >>> from dreamarcade.reward_models.train_embedding import evaluate_accuracy, load_clips
        >>> cfg = EmbeddingConfig(cmc_weight=0)
        >>> frames = [np.full((64, 64, 3), 60 + 8 * t, np.uint8) for t in range(20)]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     clip = load_clips([str(write_av(os.path.join(d, "run.mp4"), frames, fps=15))], cfg, need_audio=False)[0]
        >>> clip.name, clip.frames.shape, clip.audio is None
        ('run.mp4', (20, 54, 54, 3), True)
        >>> sorted(evaluate_accuracy(TDCCMC(cfg), [clip], batches=1, batch=8))  # no CMC terms without audio
        ['loss', 'tdc', 'tdc_acc']
    """

    name: str
    frames: np.ndarray
    audio: np.ndarray | None


def load_clips(paths: list[str], cfg: EmbeddingConfig, need_audio: bool) -> list[Clip]:
    """Read videos with the embedding's frame rate, size and audio rate."""
    clips = []
    for p in paths:
        r = VideoReader(
            p, fps=cfg.fps, size=(cfg.frame_size, cfg.frame_size), audio_rate=cfg.audio_rate, require_audio=need_audio
        )
        c = r.read_all()
        clips.append(Clip(Path(p).name, c.frames, c.audio))
    return clips


def _gap(rng: np.random.Generator, interval: tuple[int, int], max_gap: int) -> int | None:
    lo, hi = interval
    hi = min(hi, max_gap)
    if lo > hi:
        return None
    return int(rng.integers(lo, hi + 1))


def sample_pairs(
    lengths: list[int], intervals: tuple[tuple[int, int], ...], batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``batch`` (video, i, j, class) with ``|i - j|`` inside ``intervals[class]``.

    Video uniform, class uniform (among those the video is long enough for), gap uniform within the class,
    then ``i`` uniform among valid positions and the order of the pair random.
    """
    if len(lengths) == 0 or max(lengths) < 1:
        raise ValueError(f"pair sampling needs at least one non-empty video, got lengths {list(lengths)}")
    check_intervals("intervals", intervals)  # lo > hi: no gap could ever be drawn, and the loop below never ended
    usable = [v for v, n in enumerate(lengths) if any(lo <= n - 1 for lo, _ in intervals)]
    if not usable:
        raise VideoError(
            f"no distance class of {[list(iv) for iv in intervals]} fits videos of {list(lengths)} frames: use "
            "longer videos or a class with smaller gaps"
        )
    vids, ii, jj, ks = [], [], [], []
    while len(ks) < batch:
        v = usable[int(rng.integers(len(usable)))]
        n = lengths[v]
        dt = None
        while dt is None:  # the class is drawn again, not the video: each video as likely as any other
            k = int(rng.integers(len(intervals)))
            dt = _gap(rng, intervals[k], n - 1)
        i = int(rng.integers(0, n - dt))
        j = i + dt
        if rng.random() < 0.5:
            i, j = j, i
        vids.append(v)
        ii.append(i)
        jj.append(j)
        ks.append(k)
    return np.array(vids), np.array(ii), np.array(jj), np.array(ks)


def sample_offsets(
    lengths: list[int], anchors: np.ndarray, intervals: tuple[tuple[int, int], ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor position, a partner position whose distance falls in a uniformly drawn class.

    Class uniform among those that fit the video around the anchor, gap uniform in the class, side random
    (forced to the side that fits).
    """
    check_intervals("intervals", intervals)
    js, ks = [], []
    for n, i in zip(lengths, anchors):
        if not 0 <= i < n:
            raise ValueError(f"anchor {i} is outside its video of {n} frames")
        if all(lo > max(i, n - 1 - i) for lo, _ in intervals):  # the draw below would never end
            raise VideoError(
                f"no distance class of {[list(iv) for iv in intervals]} fits anchor {i} of a video of {n} frames "
                f"(at most {max(i, n - 1 - i)} frames away): use longer videos or a class with smaller gaps"
            )
        while True:
            k = int(rng.integers(len(intervals)))
            lo, hi = intervals[k]
            hi_avail = max(i, n - 1 - i)
            if lo > hi_avail:
                continue
            dt = int(rng.integers(lo, min(hi, hi_avail) + 1))
            sides = [s for s in (-1, 1) if 0 <= i + s * dt < n]
            if not sides:
                continue
            js.append(int(i + sides[int(rng.integers(len(sides)))] * dt))
            ks.append(k)
            break
    return np.array(js), np.array(ks)


def _audio_windows(clip: Clip, idx: np.ndarray, cfg: EmbeddingConfig) -> torch.Tensor:
    """Audio of frames ``i - stack + 1 .. i`` (the frames a visual stack ending at ``i`` shows)."""
    if clip.audio is None:
        raise VideoError(
            f"'{clip.name}' has no audio, but this embedding's CMC loss needs sound: use videos with sound, or a "
            "TDC-only embedding (cmc_weight=0)"
        )
    offs = np.arange(-cfg.stack + 1, 1)
    all_idx = np.clip(idx[:, None] + offs[None], 0, len(clip.audio) - 1)
    return torch.from_numpy(clip.audio[all_idx].reshape(len(idx), -1))


def _batch_stacks(clips: list[Clip], vids: np.ndarray, idx: np.ndarray, cfg: EmbeddingConfig, rng: Any) -> torch.Tensor:
    out = torch.empty(len(idx), 3 * cfg.stack, cfg.crop_size, cfg.crop_size)
    for v in np.unique(vids):
        m = vids == v
        out[torch.from_numpy(m)] = stack_frames(clips[v].frames, idx[m], cfg, crop="random", rng=rng)
    return out


def _batch_audio(clips: list[Clip], vids: np.ndarray, idx: np.ndarray, cfg: EmbeddingConfig) -> torch.Tensor:
    out = torch.empty(len(idx), cfg.samples_per_frame * cfg.stack)
    for v in np.unique(vids):
        m = vids == v
        out[torch.from_numpy(m)] = _audio_windows(clips[v], idx[m], cfg)
    return out


def _event_windows(clips: list[Clip], cfg: EmbeddingConfig, level: float) -> list[np.ndarray]:
    """Per clip, the frame indices whose stacked audio window (the stack's frames) is louder than ``level``."""
    out = []
    for c in clips:
        if c.audio is None:
            out.append(np.zeros(0, np.int64))
            continue
        loud = np.abs(c.audio).mean(axis=1) > level
        # a stack ending at i hears frames i - stack + 1 .. i: eventful if any of them is loud
        k = np.convolve(loud.astype(float), np.ones(cfg.stack), mode="full")[: len(loud)] > 0
        out.append(np.flatnonzero(k))
    return out


def losses(
    model: TDCCMC,
    clips: list[Clip],
    batch: int,
    rng: np.random.Generator,
    event_fraction: float = 0.0,
    events: list[np.ndarray] | None = None,
) -> dict[str, torch.Tensor]:
    """One batch of TDC (and CMC when ``cmc_weight > 0``) cross-entropy losses and accuracies.

    With ``event_fraction > 0`` that fraction of CMC pairs anchors the audio window on a sound event
    (``events``: per clip, eventful frame indices) and draws the visual position at the class's gap from it.
    """
    cfg = model.cfg
    lengths = [len(c.frames) for c in clips]
    v, i, j, k = sample_pairs(lengths, cfg.tdc_intervals, batch, rng)
    out: dict[str, torch.Tensor] = {}
    total = torch.zeros(())
    if cfg.tdc_weight > 0:
        both = model.phi(torch.cat([_batch_stacks(clips, v, i, cfg, rng), _batch_stacks(clips, v, j, cfg, rng)]))
        ea = both[:batch]
        logits = model.tau_td(ea, both[batch:])
        target = torch.from_numpy(k)
        out["tdc"] = F.cross_entropy(logits, target)
        out["tdc_acc"] = (logits.argmax(1) == target).float().mean()
        total = total + cfg.tdc_weight * out["tdc"]
    else:
        ea = model.phi(_batch_stacks(clips, v, i, cfg, rng))
    if cfg.cmc_weight > 0:
        # CMC reuses the TDC batch's first stacks (saves a third of the visual compute on CPU) and draws
        # its own audio position at a gap from the CMC classes
        j, k = sample_offsets([lengths[x] for x in v], i, cfg.cmc_intervals, rng)
        ev = ea
        if event_fraction > 0 and events is not None:
            # replace the first part of the batch by event-anchored pairs: audio at an event, vision at a gap
            m = int(round(event_fraction * batch))
            if m == 1:  # BatchNorm (training mode) cannot normalise a batch of one stack
                m = 2 if batch >= 2 else 0
            ok = [x for x in range(len(clips)) if len(events[x])]
            if m and ok:
                vv = np.array([ok[int(rng.integers(len(ok)))] for _ in range(m)])
                jj = np.array([events[x][int(rng.integers(len(events[x])))] for x in vv])
                ii, kk = sample_offsets([lengths[x] for x in vv], jj, cfg.cmc_intervals, rng)
                v, i, j, k = (
                    np.concatenate([vv, v[m:]]),
                    np.concatenate([ii, i[m:]]),
                    np.concatenate([jj, j[m:]]),
                    np.concatenate([kk, k[m:]]),
                )
                ev = torch.cat([model.phi(_batch_stacks(clips, vv, ii, cfg, rng)), ea[m:]])
        logits = model.tau_cm(ev, model.psi(_batch_audio(clips, v, j, cfg)))
        target = torch.from_numpy(k)
        out["cmc"] = F.cross_entropy(logits, target)
        out["cmc_acc"] = (logits.argmax(1) == target).float().mean()
        total = total + cfg.cmc_weight * out["cmc"]
    out["loss"] = total
    return out


@torch.no_grad()
def evaluate_accuracy(
    model: TDCCMC, clips: list[Clip], batches: int = 20, batch: int = 64, seed: int = 0
) -> dict[str, float]:
    """Mean TDC / CMC loss and accuracy over ``batches`` fresh batches of ``clips``.

    Eval mode (BatchNorm running statistics), the training sampler's TDC pairs and random crops, but *uniform*
    CMC pairs, whereas training anchors ``cmc_event_fraction`` of them on sound events: the CMC (and total)
    numbers here compare with the training logs only for a run trained with ``cmc_event_fraction=0``.
    Use held-out videos to see whether a classifier generalises; the chance level is ``1 / len(intervals)``.
    """
    if not clips:
        raise VideoError("evaluate_accuracy needs at least one clip")
    was = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    sums: dict[str, float] = {}
    try:
        for _ in range(batches):
            for k, v in losses(model, clips, batch, rng).items():
                sums[k] = sums.get(k, 0.0) + float(v) / batches
    finally:  # also when a clip is refused: the model goes back to the mode it was in
        model.train(was)
    return sums


@releases_run_dirs  # the output directory's claim ends with the run, also when it raises
def train_embedding(
    video_paths: list[str],
    out_dir: str | os.PathLike[str],
    cfg: EmbeddingConfig | None = None,
    tcfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TDCCMC:
    """Train on ``video_paths`` and keep the latest checkpoint in ``out_dir`` (resumable)."""
    from tqdm import tqdm

    with input_checks():  # the settings, the videos and --out; not the training itself
        cfg = cfg or EmbeddingConfig()
        tcfg = tcfg or TrainConfig()
        if not video_paths:
            raise VideoError("no training videos given: pass the paths of (usually 3) gameplay videos")
        if tcfg.save_every < 1 or tcfg.steps < 1:
            raise ValueError(f"steps and save_every must be >= 1, got steps={tcfg.steps}, save_every={tcfg.save_every}")
        check_ranges(tcfg, {"lr": (0.0, None, False)})  # Adam takes inf, and the weights become NaN
        if tcfg.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm normalises over the batch), got {tcfg.batch_size}")
        if not 0.0 <= tcfg.cmc_event_fraction <= 1.0:
            raise ValueError(f"cmc_event_fraction must be in [0, 1], got {tcfg.cmc_event_fraction}")
        if tcfg.threads < 1 or tcfg.seed < 0:
            raise ValueError(f"--threads must be >= 1 and --seed >= 0, got --threads {tcfg.threads} --seed {tcfg.seed}")
        for name, weight in (("--tdc-weight", cfg.tdc_weight), ("--cmc-weight", cfg.cmc_weight)):
            if not (math.isfinite(weight) and weight >= 0):  # a negative weight was silently taken as 0
                raise ValueError(f"{name} must be a finite number >= 0 (0 leaves that loss out), got {weight}")
        for name, intervals in (("tdc_intervals", cfg.tdc_intervals), ("cmc_intervals", cfg.cmc_intervals)):
            check_intervals(name, intervals)
        if cfg.tdc_weight <= 0 and cfg.cmc_weight <= 0:
            raise ValueError(
                "tdc_weight and cmc_weight are both 0: nothing to learn; give one of them a positive weight"
            )
        flush_denormals()
        torch.set_num_threads(tcfg.threads)
        torch.manual_seed(tcfg.seed)
        rng = np.random.default_rng(tcfg.seed)
        check_folder_path(out_dir, "--out (out_dir)")  # before the videos are read; the later checks say --run-dir
        clips = load_clips(video_paths, cfg, need_audio=cfg.cmc_weight > 0)
        video_sha = _video_sha256(video_paths)
        longest = max(len(c.frames) for c in clips) - 1  # the largest frame gap any video offers
        used = [("TDC", cfg.tdc_intervals, cfg.tdc_weight), ("CMC", cfg.cmc_intervals, cfg.cmc_weight)]
        # CMC draws an anchor first, then a class that fits around it: every anchor needs one, and a middle frame
        # has the fewest gaps (half the video). TDC draws the gap first, then an anchor that fits it.
        shortest_reach = min(len(c.frames) // 2 for c in clips)
        if cfg.cmc_weight > 0 and all(lo > shortest_reach for lo, _ in cfg.cmc_intervals):
            raise VideoError(
                f"no CMC class of {[list(iv) for iv in cfg.cmc_intervals]} fits the middle frame of the shortest "
                f"training video (at most {shortest_reach} frames away): use longer videos or a class with smaller "
                "gaps"
            )
        for name, intervals, weight in used:
            short = [list(iv) for iv in intervals if weight > 0 and iv[0] > longest]
            if not short:
                continue
            message = (
                f"{name} classes {short} need frame gaps the training videos do not have (the longest gives at "
                f"most {longest}), so they are never sampled"
            )
            if len(intervals) - len(short) < 2:  # one class left: a classifier with nothing to tell apart
                raise VideoError(f"{message}: use longer videos or smaller gaps (--cmc-binary)")
            warnings.warn(f"{message}; the classifier learns the other {len(intervals) - len(short)}", stacklevel=2)
        model = TDCCMC(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
        step = 0
        out_dir = Path(out_dir)
        if not resume:  # a fresh run never overwrites another run's checkpoint or appends to its logs
            check_run_dir_free(out_dir, checkpoint_dir="", log_dir="logs")
        claim_run_dir(out_dir)  # before the resume below drops log rows: one process per run directory
        if resume and checkpoint_exists(out_dir):
            tensors, config = load_checkpoint(out_dir, kind="tdc_cmc")
            if "optimizer" not in config or "torch_rng" not in tensors:  # TDCCMC.save: the model alone (a bundle)
                raise CheckpointError(
                    f"--resume: {out_dir} holds an embedding without its training state (optimizer, RNG), such as a "
                    "bundled one: it cannot be resumed. Train into a new --out."
                )
            old_json, new_json = EmbeddingConfig.from_json(config["embedding"]).to_json(), cfg.to_json()
            if old_json != new_json:
                diff = describe_changes(old_json, new_json)
                raise ValueError(
                    f"--resume: the checkpoint in {out_dir} was trained with another embedding config ({diff}); "
                    "resume with its settings, or use a new --out"
                )
            # what the run samples from: another video list or sampler would make a resumed run another run
            changed = [] if config.get("videos") == _video_names(video_paths) else ["videos"]
            # the names alone pass another data set written with the same names (demo_videos' demo_<i>.<ext>);
            # checkpoints from before the contents were recorded are checked by name only
            old_sha = config.get("videos_sha256")
            if not changed and old_sha is not None and old_sha != video_sha:
                other = [n for n, a, b in zip(config["videos"], old_sha, video_sha) if a != b]
                changed.append(f"videos (same names, other contents: {', '.join(other)})")
            old_train = config.get("train", {})
            for name in ("batch_size", "cmc_event_fraction", "event_level"):  # the seed: the RNGs are restored
                if name in old_train and old_train[name] != getattr(tcfg, name):
                    changed.append(f"{name} ({old_train[name]} -> {getattr(tcfg, name)})")
            if changed:
                raise ValueError(
                    f"--resume: the checkpoint in {out_dir} was trained with other {', '.join(changed)} (it was "
                    f"trained on {config.get('videos')}); resume with the same videos and settings, or use a new --out"
                )
            model.load_state_dict({k: v for k, v in tensors.items() if k in model.state_dict()})
            opt.load_state_dict(unpack_state(config["optimizer"], tensors))
            for group in opt.param_groups:  # the learning rate given now wins (a resumed run may change it)
                group["lr"] = tcfg.lr
            rng.bit_generator.state = config["rng"]
            if "seed" in old_train:  # the seed the restored RNGs came from, not one given now that changes nothing
                tcfg = dataclasses.replace(tcfg, seed=old_train["seed"])
            torch.set_rng_state(tensors["torch_rng"])
            step = int(config["step"])
        if resume:  # rows of a crash after the checkpoint (all of them before the first one, step 0) are replayed
            drop_rows_after(out_dir / "logs" / "metrics.csv", step)
    start_step = step
    log = RunLogger(out_dir / "logs", tensorboard=False)
    off = {} if progress else {"disable": True}  # as in the DQN: TQDM_* environment variables still apply
    bar = tqdm(total=tcfg.steps, initial=step, desc="tdc+cmc", unit="step", **off)
    model.train()
    t0 = time.time()
    events = _event_windows(clips, cfg, tcfg.event_level) if cfg.cmc_weight > 0 else None
    saved = step if resume and step > 0 else None  # the step of the checkpoint on disk

    def diverged(what: str) -> DivergedError:
        kept = f"its checkpoint at step {saved} is intact" if saved is not None else "nothing was saved"
        fix = (
            "Resume from it with a lower --lr (--resume --lr ...)."
            if saved is not None
            else "Train again with a lower --lr."
        )
        return DivergedError(
            f"{what} at step {step} with --lr {tcfg.lr:g}: training diverged, and {kept} in '{out_dir}'. {fix}"
        )

    try:
        with GracefulStop() as stop:  # Ctrl-C / SIGTERM: save this step, then return (continue with --resume)
            while step < tcfg.steps and not stop.requested:
                out = losses(model, clips, tcfg.batch_size, rng, tcfg.cmc_event_fraction, events)
                step += 1
                if not torch.isfinite(out["loss"]):
                    raise diverged(f"the TDC+CMC loss became {out['loss'].item()}")
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                bar.update(1)
                if step % 20 == 0 or step == tcfg.steps or stop.requested:  # the last step too (< 20 logged none)
                    vals = {k: float(v.detach()) for k, v in out.items()}  # float() of a graph tensor warned
                    bar.set_postfix({k: f"{v:.3f}" for k, v in vals.items() if "acc" in k or k == "loss"})
                    log.log_metrics(step, **vals, steps_per_s=(step - start_step) / max(time.time() - t0, 1e-9))
                if step % tcfg.save_every == 0 or step == tcfg.steps or stop.requested:
                    if not all(torch.isfinite(p).all() for p in model.parameters()):  # never saved: resumable
                        raise diverged("the weights became NaN or inf")
                    _save(model, opt, rng, step, out_dir, video_paths, video_sha, tcfg)
                    saved = step
    finally:
        bar.close()
        log.close()
    model.eval()
    return model


def _video_names(videos: list[str]) -> list[str]:
    """The training videos as a checkpoint records them (file names: the folder may move between runs)."""
    return [Path(v).name for v in videos]


def _video_sha256(videos: list[str]) -> list[str]:
    """The training videos' contents as a checkpoint records them: each file's SHA-256 (~1 s per GB)."""
    digests = []
    for video in videos:
        h = hashlib.sha256()
        with open(video, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digests.append(h.hexdigest())
    return digests


def _save(
    model: TDCCMC,
    opt: Any,
    rng: np.random.Generator,
    step: int,
    out_dir: Path,
    videos: list[str],
    videos_sha256: list[str],
    tcfg: Any,
) -> None:
    tensors = dict(model.state_dict())
    opt_state = pack_state(opt.state_dict(), "opt", tensors)
    tensors["torch_rng"] = torch.get_rng_state()
    config = {
        "kind": "tdc_cmc",
        "embedding": model.cfg.to_json(),
        "optimizer": opt_state,
        "rng": rng.bit_generator.state,
        "step": step,
        "videos": _video_names(videos),
        "videos_sha256": videos_sha256,
        "train": vars(tcfg),
    }
    save_checkpoint(out_dir, tensors, json.loads(json.dumps(config)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dreamarcade.reward_models.train_embedding", description=__doc__, allow_abbrev=False
    )
    p.add_argument("videos", nargs="+", help="training videos (the paper uses 3)")
    p.add_argument("--out", default="runs/imitation/embedding")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--cmc-weight",
        type=float,
        default=DEFAULT_CMC_WEIGHT,
        help=f"lambda in L = L_td + lambda * L_cm (default {DEFAULT_CMC_WEIGHT}); 0 trains TDC only",
    )
    p.add_argument("--tdc-weight", type=float, default=1.0, help="0 trains CMC only (ablation)")
    p.add_argument(
        "--cmc-binary",
        type=int,
        default=DEFAULT_CMC_FAR,
        help="if > 0, CMC is 2-way: aligned (gap 0) vs at least L frames apart (gaps L to max(L, 10000)); 0 = the "
        f"6 TDC intervals (default {DEFAULT_CMC_FAR}: the audio window and the frame stack share no frame)",
    )
    p.add_argument("--paper-size", action="store_true", help="the paper's network sizes (slow on CPU)")
    p.add_argument(
        "--cmc-event-fraction",
        type=float,
        default=TrainConfig.cmc_event_fraction,
        help="fraction of CMC pairs whose audio window is anchored on a sound event (0 = the paper's uniform "
        f"sampling; default {TrainConfig.cmc_event_fraction})",
    )
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--eval-videos",
        nargs="*",
        default=[],
        help="after training, print TDC/CMC accuracy on these (held-out) videos; with --resume and --steps "
        "already reached this only evaluates",
    )
    a = p.parse_args(argv)
    given = given_flags(p, argv)
    cmc_only = sorted(given & {"cmc_binary", "cmc_event_fraction"})
    if a.cmc_weight == 0 and cmc_only:  # saved in the checkpoint as if used, and used by nothing
        flags = " and ".join(f"--{f.replace('_', '-')}" for f in cmc_only)
        them = "them" if cmc_only[1:] else "it"
        p.error(f"{flags} set CMC's sampling, which --cmc-weight 0 (TDC only) does not train: leave {them} out")
    if a.cmc_binary < 0:  # was taken as 0 (the 6-way classes) without a word
        p.error(f"--cmc-binary must be >= 0 (0: the 6 TDC intervals), got {a.cmc_binary}")
    cfg = EmbeddingConfig.paper() if a.paper_size else EmbeddingConfig()
    cfg.cmc_weight = a.cmc_weight
    cfg.tdc_weight = a.tdc_weight
    if a.cmc_binary > 0:
        cfg.cmc_intervals = ((0, 0), (a.cmc_binary, max(10_000, a.cmc_binary)))  # [L, "inf")
    tcfg = TrainConfig(a.steps, a.batch_size, a.lr, a.seed, a.save_every, a.threads, a.cmc_event_fraction)
    try:
        # the held-out videos are read first: one that cannot be used is found before training, not after it
        with input_checks():
            held_out = load_clips(a.eval_videos, cfg, need_audio=cfg.cmc_weight > 0) if a.eval_videos else None
        model = train_embedding(a.videos, a.out, cfg, tcfg, resume=a.resume)
    except Exception as exc:  # bad settings, videos or --out: a usage error
        return input_error_status(exc, parser=p)
    print(f"saved {a.out}")
    if held_out is not None:
        torch.manual_seed(tcfg.seed)
        acc = evaluate_accuracy(model, held_out)
        print("held-out " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
