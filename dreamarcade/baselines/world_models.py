"""World Models (Ha & Schmidhuber 2018): collect -> V -> M -> C, with C evolved by CMA-ES in the dream.

``python -m dreamarcade.baselines world_models <step> [options]`` where step is one of

* ``collect``       random-policy rollouts into compressed shards (worker processes; ``--backend ray``)
* ``train-vae``     V on the frames, then encode every shard to (mu, logvar) series; reconstructions PNG
* ``train-mdnrnn``  M on the series (episodes concatenated with a restart flag); writes the world model dir
* ``calibrate-done`` shift M's done logit so the dream's mean episode length under the data-collection policy
  matches the recorded episodes' (optional; the dream's death rate is otherwise set by the x10 positive weight)
* ``evolve``        C by CMA-ES (``cma``): population 64 x 16 rollouts, in the dream (one torch batch) or real env
  (worker processes; ``--backend ray``: one Ray actor per worker)
* ``evaluate``      N real episodes with V + M + C: mean +- std (worker processes; ``--backend ray``)
* ``video``         dream-vs-real side-by-side MP4 of the controller
* ``pipeline``      all of the above, skipping finished steps (resumable after a kill); ``--iterations N`` runs the
  paper's iterative procedure (collect with the current C, retrain M on all data, re-evolve C)
* ``bundle``        copy a run's world model (float16) and controller into dreamarcade/assets (maintainers)
* ``demo``          on the bundled weights: evolve C inside DreamDoom-v0 for a few minutes, run it in the real
  game, write the scores and a dream-vs-real video

Defaults are the paper's / hardmaru's code values (see ``WMConfig``); the budget this project could afford on
2 CPU cores is in the README's Dreams section and dreamarcade/assets/dream_doom/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from dreamarcade.baselines.common import (
    GracefulStop,
    RunDirBusyError,
    RunLogger,
    add_dataclass_args,
    check_choices,
    check_counts,
    check_ranges,
    claim_run_dir,
    drop_rows_after,
    help_field,
    new_figure,
    plot_learning_curve,
    releases_run_dirs,
    resolve_device,
    save_hyperparameters,
    seed_everything,
    write_video,
)
from dreamarcade.checkpoint import (
    atomic_write_text,
    checkpoint_exists,
    load_checkpoint,
    pack_state,
    read_json_object,
    refuse_diverged,
    save_checkpoint,
    strip_prefix,
    unpack_state,
    with_prefix,
)
from dreamarcade.errors import (
    CheckpointError,
    DreamArcadeError,
    check_seed,
    describe_changes,
    input_checks,
    input_error_status,
)
from dreamarcade.forking import wait_for_pool
from dreamarcade.precision import autocast, check_precision, flush_denormals
from dreamarcade.world_models.model import (  # the fingerprint helpers live with the model (collect checks too)
    ENV_DEFAULTS,
    WorldModel,
    check_controller_matches,
    check_world_model_dir,
    weights_sha256,
    world_model_fingerprint,
)

STEPS = ("collect", "train-vae", "train-mdnrnn", "calibrate-done", "evolve", "evaluate", "video", "pipeline", "demo",
         "bundle")  # fmt: skip
EVAL_SEED = 12345  # seed of the first evaluation episode unless --eval-seed says otherwise


_h = help_field  # a field with its --help text; short, for the table below


@dataclass
class WMConfig:
    """Hyperparameters; defaults are the paper's (or hardmaru's code's, where they differ and the code ran).

    Example:
        >>> from dreamarcade.baselines.world_models import WMConfig
        >>> cfg = WMConfig(env="doom")
        >>> cfg.popsize, cfg.rollouts  # CMA-ES population x rollouts per candidate, as in the paper
        (64, 16)
    """

    env: Literal["doom", "carracing"] = _h("which game: doom (TakeCover) or carracing", "doom")
    run_dir: str = _h("folder of the run's data, models and logs ('': runs/dreams/<env>)", "")
    seed: int = _h("base random seed", 0)
    device: str = _h("torch device for training and encoding V and M (cpu, cuda, auto); evolve runs on the CPU", "cpu")
    threads: int = _h("torch threads per process", 1)
    precision: Literal["fp32", "bf16"] = _h(
        "fp32, or bf16: mixed precision for training and encoding V and M (matmuls and convolutions in bfloat16, "
        "weights, optimizer, losses and the LSTM cell state in fp32; ~1.5x faster V steps, 3x faster encoding) "
        "and for evolve's batched dreams (M's matmuls in bfloat16, ~2x faster), on CPUs with AMX (Intel Sapphire "
        "Rapids and later) or CUDA GPUs; slower on CPUs without native bfloat16",
        "fp32",
    )
    # collect (paper: 64 workers x 200 trials ~ 12.8k episodes, 10k used)
    episodes: int = _h("collect: episodes to record", 10000)
    workers: int = _h("parallel worker processes for collect, real-env evolve and evaluate (0: one per CPU core)", 0)
    backend: Literal["process", "ray", "inline"] = _h(
        "collect, evolve --where real and evaluate: worker processes on this machine, a Ray cluster (or a local "
        "Ray instance), or inline in this process",
        "process",
    )
    max_steps: int = _h("episode cap (0: the env's own, 2100 Doom / 1000 CarRacing)", 0)
    # V
    vae_epochs: float = _h("train-vae: passes over all frames* shards", 10.0)  # hardmaru's code (the paper says 1)
    vae_batch: int = _h("train-vae: frames per batch", 100)
    vae_lr: float = _h("train-vae: Adam learning rate", 1e-4)
    kl_tolerance: float = _h("V's KL free bits per latent dimension", 0.5)
    # M
    # rnn_epochs: the Doom code's 400 (paper: 20; the CarRacing code: 4000 steps)
    rnn_epochs: float = _h("train-mdnrnn: passes over all series* episodes", 400.0)
    rnn_seq_len: int = _h("train-mdnrnn: steps per training sequence", 500)  # Doom: "worked better than 1000"
    rnn_batch: int = _h("train-mdnrnn: sequences per batch", 100)
    rnn_lr: float = _h("train-mdnrnn: initial Adam learning rate", 1e-3)
    rnn_lr_min: float = _h("train-mdnrnn: learning-rate floor", 1e-5)
    rnn_lr_decay: float = _h("train-mdnrnn: learning-rate decay per step", 0.99999)
    rnn_grad_clip: float = _h("train-mdnrnn: gradient-norm clip", 1.0)
    rnn_action_map: Literal["none", "takecover"] = _h(
        "train-mdnrnn: how a new M reads actions: 'none' as given (the paper), 'takecover' as TakeCover's "
        "left/no-op/right (-1/0/+1, the game's +-1/3 threshold)",
        "none",
    )
    done_pos_weight: float = _h("train-mdnrnn: weight of the positive (done) class in the done head's loss", 10.0)
    # C / CMA-ES (estool)
    where: Literal["dream", "real"] = _h("evolve: score candidates in the dream or in the real env", "dream")
    temperature: float = _h("dream temperature tau (0: the env's default, Doom 1.15)", 0.0)
    popsize: int = _h("evolve: CMA-ES population", 64)
    rollouts: int = _h("evolve: episodes per candidate", 16)
    generations: int = _h("evolve: CMA-ES generations", 200)  # README: ~200 generations are "enough" for Doom
    sigma_init: float = _h("evolve: CMA-ES initial step size", 0.1)
    eval_every: int = _h("evolve --where dream: generations between dream evaluations of the mean (0: never)", 25)
    eval_rollouts: int = _h("evolve --where dream: dreams per evaluation of the mean", 1024)
    controller: Literal["full", "v-only"] = _h("controller input: full ([z, h] / [z, c, h]) or v-only ([z])", "full")
    time_budget: float = _h("evolve: stop after this many seconds of this invocation (0: no limit)", 0.0)
    # evaluate
    eval_episodes: int = _h("evaluate: real episodes", 100)
    eval_seed: int = _h("evaluate and demo: seed of the first real episode (episode i gets eval_seed + i)", EVAL_SEED)
    eval_controller: str = _h("evaluate / video / bundle: controller directory ('': run_dir/controller)", "")
    # iterative procedure
    iterations: int = _h("pipeline: rounds of the paper's iterative procedure", 1)
    iter_episodes: int = _h("pipeline: episodes collected with the controller in each later round", 200)
    explore: float = _h("collect with a controller: per-step chance of a random held action instead", 0.0)
    collect_controller: str = _h(
        "collect: play with this controller (and the run's world model) instead of at random", ""
    )
    frames_dir: str = _h(
        "collect: the run subfolder to write, named frames* (V and M train on every frames*/series*)", "frames"
    )
    calibrate_target: float = _h(
        "calibrate-done: target mean dream length under the random collection policy "
        "(0: the mean length of the random episodes: series/, or the series* folder of --frames-dir)",
        0.0,
    )
    ensemble: str = _h(
        "evolve: comma-separated extra world-model folders; a candidate's fitness is its worst dream", ""
    )
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse counts no step can run with (ValueError naming the flag), before any step starts.

        >>> WMConfig(rollouts=0).validate()
        Traceback (most recent call last):
        ...
        ValueError: --rollouts must be an integer >= 1, got 0
        """
        counts = {"episodes": 1, "eval_episodes": 1, "iter_episodes": 1, "iterations": 1, "rollouts": 1,
                  "eval_rollouts": 1, "max_steps": 0, "workers": 0, "threads": 1, "vae_batch": 1, "rnn_batch": 1,
                  "rnn_seq_len": 1, "popsize": 3, "generations": 0, "eval_every": 0}  # fmt: skip
        hints = {"max_steps": " (0: the env's own cap)", "workers": " (0: one per CPU core)",
                 "popsize": " (pycma fails from the second generation with 2 candidates)",
                 "eval_every": " (0: never)"}  # fmt: skip
        check_choices(self)  # --controller, --env, --precision, --backend, --where, ...: argparse checks only the CLI's
        check_counts(self, counts, hints)
        positive, nonnegative = (0.0, None, False), (0.0, None, True)
        ranges = {"vae_epochs": positive, "vae_lr": positive, "kl_tolerance": nonnegative, "rnn_epochs": positive,
                  "rnn_lr": positive, "rnn_lr_min": nonnegative, "rnn_lr_decay": (0.0, 1.0, False),
                  "rnn_grad_clip": positive, "done_pos_weight": positive, "temperature": nonnegative,
                  "sigma_init": positive, "time_budget": nonnegative, "explore": (0.0, 1.0, True),
                  "calibrate_target": nonnegative}  # fmt: skip
        notes = {"temperature": " (0: the env's default)", "sigma_init": " (CMA-ES's initial step size)",
                 "time_budget": " (0: no limit)", "calibrate_target": " (0: from the random episodes)",
                 "explore": " (a probability)"}  # fmt: skip
        check_ranges(self, ranges, notes)
        for name in ("seed", "eval_seed"):  # numpy's range, less room for the offsets added to them
            check_seed("--" + name.replace("_", "-"), getattr(self, name), limit=2**31)

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/dreams/{self.env}")


class StageStopped(DreamArcadeError):
    """A training stage stopped on Ctrl-C / SIGTERM after saving its state: the same command continues it.

    Example:
        >>> from dreamarcade.baselines.world_models import StageStopped
        >>> str(StageStopped("train-vae stopped at step 120/400"))
        'train-vae stopped at step 120/400'
    """


_Step = typing.TypeVar("_Step", bound=Callable[..., Any])


def _stage(fn: _Step) -> _Step:
    """A pipeline step: its settings are checked and its run directory claimed for this process until it returns,
    called from the command line or from Python (the benchmarks do). Only the command line did this before, so from
    Python a step took a misspelled ``controller`` or a negative ``generations`` silently, and wrote into a run
    directory that another process was training in."""

    @releases_run_dirs
    @functools.wraps(fn)
    def step(cfg: WMConfig, *args: Any, **kwargs: Any) -> Any:
        with input_checks():
            cfg.validate()
        claim_run_dir(cfg.resolved_run_dir())  # a claim this thread holds already (the pipeline's, the demo's) is kept
        return fn(cfg, *args, **kwargs)

    return typing.cast(_Step, step)


# ============================================================================================== collect
@_stage
def step_collect(cfg: WMConfig, out: Path | None = None, policy_dir: str | None = None, episodes: int | None = None,
                 seed_offset: int = 0) -> dict[str, int]:  # fmt: skip
    from dreamarcade.world_models.collect import collect

    run = cfg.resolved_run_dir()
    with input_checks(FileNotFoundError):  # the settings (collect() checks its own)
        if not cfg.frames_dir.startswith("frames") or "/" in cfg.frames_dir:
            raise ValueError(f"--frames-dir must be a run subdirectory named frames*, got {cfg.frames_dir!r}.")
        out = out or run / cfg.frames_dir
        controller_dir = cfg.collect_controller or None
        if controller_dir is not None and policy_dir is None:
            policy_dir = str(_world_model_dir(cfg))
    t0 = time.time()
    summary = collect(
        cfg.env, out, episodes or cfg.episodes, workers=cfg.workers or None, seed=cfg.seed + seed_offset,
        max_steps=cfg.max_steps or None, backend=cfg.backend, policy_dir=policy_dir, controller_dir=controller_dir,
        progress=True, explore=cfg.explore,
    )  # fmt: skip
    summary["seconds"] = round(time.time() - t0, 1)
    print(f"collected {summary} into {out}")
    return summary


# ============================================================================================== V
def _resume_train_state(
    ckpt: Path, kind: str, model: torch.nn.Module, opt: torch.optim.Optimizer, settings: dict[str, Any] | None = None
) -> tuple[int, float]:
    """Load a model + optimizer training checkpoint if there is one; return (step, seconds trained so far).

    ``settings``: the values of the flags that define the training (its loss, what a step is), saved with the state
    by :func:`_save_train_state`; a state saved with other values is refused (CheckpointError naming them), as
    continuing it would train half with one loss and half with another, and count steps of two batch sizes. A
    state that lacks a setting (saved before it was recorded) is not compared on it.
    """
    if not checkpoint_exists(ckpt):
        return 0, 0.0
    tensors, meta = load_checkpoint(ckpt, kind=kind)
    settings = settings or {}
    changed = describe_changes(meta, settings, [k for k in settings if k in meta])
    if changed:
        same = " ".join(f"--{k.replace('_', '-')} {meta[k]}" for k in settings if k in meta)
        raise CheckpointError(
            f"The training state in '{ckpt}' was saved with other settings than this run's ({changed}): resuming "
            f"it would mix two trainings. Resume with the flags it was trained with ({same}), or use a new "
            f"--run-dir (or move '{ckpt}' away) to train from scratch with these."
        )
    rates = [group["lr"] for group in opt.param_groups]  # this run's learning rate (--vae-lr) wins over the saved one
    try:
        model.load_state_dict(strip_prefix(tensors, "model"))
        opt.load_state_dict(unpack_state(meta["optimizer"], tensors))
        for group, lr in zip(opt.param_groups, rates):
            group["lr"] = lr
    except (RuntimeError, ValueError) as exc:  # size mismatches: another --env, z size or model settings
        first = str(exc).strip().splitlines()[0]
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), first)
        raise CheckpointError(
            f"The training state in '{ckpt}' does not fit this {kind} ({detail}): it was trained with another "
            f"--env or other model settings. Resume with the settings it was trained with, or move '{ckpt}' away "
            "to train from scratch."
        ) from exc
    return int(meta["step"]), float(meta.get("seconds", 0.0))


def _save_train_state(
    ckpt: Path, kind: str, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, seconds: float,
    extra: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Write the model + optimizer training checkpoint that :func:`_resume_train_state` reads."""
    tensors = with_prefix(model.state_dict(), "model")
    skeleton = pack_state(opt.state_dict(), "opt", tensors)
    meta = {"kind": kind, "step": step, "optimizer": skeleton, "seconds": seconds}
    save_checkpoint(ckpt, tensors, {**(extra or {}), **meta})


@_stage
def step_train_vae(cfg: WMConfig) -> Path:
    from tqdm import tqdm

    from dreamarcade.world_models.rollouts import FrameStream, encode_shards, list_shards, read_shard_arrays
    from dreamarcade.world_models.vae import ConvVAE, frames_to_tensor, vae_loss

    run = cfg.resolved_run_dir()
    with input_checks(FileNotFoundError):  # settings, frames, saved state; not the training
        dev = resolve_device(cfg.device)
        z_size = ENV_DEFAULTS[cfg.env]["z_size"]
        frame_dirs = sorted(p for p in run.glob("frames*") if p.is_dir())
        # a frames folder without shards (a collect stopped before its first one) is left out: encoding it made an
        # empty series folder, and train-mdnrnn then asked for a train-vae that could not fill it
        skipped = [d.name for d in frame_dirs if not list_shards(d)]
        frame_dirs = [d for d in frame_dirs if d.name not in skipped]
        if skipped:
            print(f"skipping {', '.join(skipped)} under {run}: no frame shards in it (a collect stopped early?)")
        paths = [p for d in frame_dirs for p in list_shards(d)]
        if not paths:
            raise FileNotFoundError(f"No frame shards under {run}/frames*. Run `world_models collect --env {cfg.env}`.")
        n_frames = sum(int(read_shard_arrays(p, ["episode_lengths"])["episode_lengths"].sum()) for p in paths)
        total_steps = max(1, int(math.ceil(cfg.vae_epochs * n_frames / cfg.vae_batch)))
        check_precision(cfg.precision, dev)
        torch.manual_seed(cfg.seed)  # V's initial weights and sampling noise (--seed changed only the batch order)
        vae = ConvVAE(z_size, cfg.kl_tolerance).to(dev)
        opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
        ckpt = run / "vae_train"
        # what V's loss and a step are: a resume with others is refused (--vae-lr and --vae-epochs may change)
        settings = {"kl_tolerance": cfg.kl_tolerance, "vae_batch": cfg.vae_batch}
        step, prior_s = _resume_train_state(ckpt, "vae_train", vae, opt, settings)
        if step:  # the noise after a resume, like the batch order, is drawn from the seed and the step
            torch.manual_seed(cfg.seed + step)
        drop_rows_after(run / "logs_vae" / "metrics.csv", step)  # rows logged after the checkpoint are replayed
    if step:
        print(f"resuming V training at step {step}/{total_steps}")
    if step < total_steps:  # V is about to change: latents encoded by an earlier V would feed M stale data
        stale = [p for d in frame_dirs for p in list_shards(run / d.name.replace("frames", "series", 1), "series")]
        if stale:
            print(f"V will train on: removing {len(stale)} series shards encoded by the earlier V (re-encoded after)")
            for p in stale:
                p.unlink()

    def save_train_state() -> None:
        refuse_diverged(vae, ckpt, step, f"--vae-lr {cfg.vae_lr:g}")  # NaN weights never replace the last good ones
        extra = {**vae.config(), **settings}
        _save_train_state(ckpt, "vae_train", vae, opt, step, prior_s + time.time() - t0, extra=extra)

    logger = RunLogger(run / "logs_vae", resumed_at=step)  # TensorBoard too drops the replayed steps
    stream = FrameStream(paths, batch_size=cfg.vae_batch, seed=cfg.seed + step)
    bar = tqdm(total=total_steps, initial=step, desc="train V", unit="batch")
    t0 = time.time()
    vae.train()
    with GracefulStop() as stop:  # Ctrl-C / SIGTERM: save this step's state, then stop (up to 199 steps were lost)
        while step < total_steps and not stop.requested:
            for batch in stream:
                x = frames_to_tensor(batch, dev)
                with autocast(cfg.precision, dev):
                    recon, mu, logvar = vae(x)
                loss, r_loss, kl = vae_loss(x, recon.float(), mu.float(), logvar.float(), cfg.kl_tolerance)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                bar.update(1)
                if step % 20 == 0 or step >= total_steps or stop.requested:  # the last one too: < 20 steps drew none
                    refuse_diverged(vae, ckpt, step, f"--vae-lr {cfg.vae_lr:g}", loss.item())
                    bar.set_postfix(loss=f"{loss.item():.1f}", recon=f"{r_loss.item():.1f}", kl=f"{kl.item():.1f}")
                    logger.log_metrics(step, loss=loss.item(), recon_loss=r_loss.item(), kl_loss=kl.item())
                if step % 200 == 0:
                    save_train_state()
                if step >= total_steps or stop.requested:
                    break
    bar.close()
    save_train_state()
    logger.close()
    if step < total_steps:  # stopped
        raise StageStopped(f"train-vae stopped at step {step}/{total_steps} with its state saved in {ckpt}")
    vae.eval()
    train_s = prior_s + time.time() - t0
    record = {"train_steps": step, "train_frames": n_frames, "train_seconds": round(train_s), **settings}
    vae.save(run / "vae", extra=record)
    _plot_metrics(run / "logs_vae" / "metrics.csv", ["recon_loss", "kl_loss"], run / "vae_loss.png", "V training")
    _save_reconstructions(vae, paths[0], run / "vae_reconstructions.png")
    # Encode every frame once into (mu, logvar): M trains on these, sampling a fresh z per batch.
    torch.set_grad_enabled(False)
    for d in frame_dirs:
        encode_shards(d, run / d.name.replace("frames", "series", 1), encoder(vae, cfg.precision, dev))
    torch.set_grad_enabled(True)
    print(f"V saved to {run / 'vae'}; series written; reconstructions in {run / 'vae_reconstructions.png'}")
    return run / "vae"


def encoder(vae: Any, precision: str, device: torch.device) -> Any:
    """V's ``encode_frames`` (uint8 frames -> float32 mu, logvar), run under ``precision``'s autocast."""

    def encode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with autocast(precision, device):
            return vae.encode_frames(frames)

    return encode


def _save_reconstructions(vae: Any, shard: Path, png: Path, n: int = 8) -> None:
    import cv2

    from dreamarcade.world_models.rollouts import read_shard_arrays

    frames = read_shard_arrays(shard, ["frames"])["frames"]
    idx = np.linspace(0, len(frames) - 1, n).astype(int)
    mu, _ = vae.encode_frames(frames[idx])
    recon = vae.decode_to_frames(torch.as_tensor(mu, device=next(vae.parameters()).device))
    grid = np.concatenate([np.concatenate(list(frames[idx]), 1), np.concatenate(list(recon), 1)], 0)
    grid = cv2.resize(grid, (grid.shape[1] * 2, grid.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png), grid[:, :, ::-1])


def _plot_metrics(csv_path: Path, keys: list[str], png: Path, title: str) -> None:
    import csv

    if not csv_path.exists():
        return
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    curves = {}
    for k in keys:
        pts = [(float(r["step"]), float(r[k])) for r in rows if r.get(k) not in (None, "")]
        if pts:
            curves[k] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    plot_learning_curve(curves, png, title, window=5, xlabel="gradient steps", ylabel="loss")


# ============================================================================================== M
def _check_windows(steps: int, episodes: int, seq_len: int) -> None:
    if steps < seq_len + 1:
        raise ValueError(
            f"M trains on windows of --rnn-seq-len + 1 = {seq_len + 1} steps, but the series hold only {steps} steps "
            f"({episodes} episodes): no window fits. Collect more episodes (`world_models collect --episodes N`) "
            "or lower --rnn-seq-len."
        )


def _stream_batches(
    series: dict[str, np.ndarray], seq_len: int, batch: int, rng: np.random.Generator
) -> Iterator[dict[str, np.ndarray]]:
    """Cut the concatenated stream into (seq_len + 1)-step windows at a random offset; yield shuffled batches.

    Every pass yields at least one batch: the offset is drawn so that at least one window fits.
    """
    n = len(series["actions"])
    _check_windows(n, len(series["episode_lengths"]), seq_len)
    starts = np.zeros(n, np.float32)
    starts[np.concatenate([[0], np.cumsum(series["episode_lengths"])[:-1]])] = 1.0
    offset = int(rng.integers(0, min(seq_len, n - seq_len)))
    idx = np.arange(offset, n - seq_len, seq_len)  # the last window [i, i + seq_len] ends at step n - 1 at most
    rng.shuffle(idx)
    for b in range(0, len(idx), batch):
        w = idx[b : b + batch, None] + np.arange(seq_len + 1)[None]
        yield {
            "mu": series["mu"][w].astype(np.float32), "logvar": series["logvar"][w].astype(np.float32),
            "actions": series["actions"][w[:, :-1]], "rewards": series["rewards"][w[:, :-1]],
            "dones": series["dones"][w[:, :-1]], "restart": starts[w],
        }  # fmt: skip


def _calibrated_from(rnn: torch.nn.Module, wm_rnn_dir: Path) -> bool:
    """Whether ``wm_rnn_dir`` holds this M after calibrate-done: a recorded shift, and only the done bias differs."""
    if not checkpoint_exists(wm_rnn_dir):
        return False
    saved, meta = load_checkpoint(wm_rnn_dir, kind="mdnrnn")  # once: the tensors are M's state dict as saved
    mine = rnn.state_dict()
    if not meta.get("done_bias_shift") or saved.keys() != mine.keys():
        return False
    if any(saved[k].shape != mine[k].shape for k in mine):
        return False
    # read as M.load would: into this M's dtypes
    return sum(not torch.equal(saved[k].to(mine[k].dtype), mine[k].cpu()) for k in mine) == 1  # the shifted bias


@_stage
def step_train_mdnrnn(cfg: WMConfig, tag: str = "", warm_start: Path | None = None) -> Path:
    from tqdm import tqdm

    from dreamarcade.world_models.mdnrnn import MDNRNN, mdn_loss
    from dreamarcade.world_models.rollouts import list_shards, load_series
    from dreamarcade.world_models.vae import ConvVAE

    run = cfg.resolved_run_dir()
    with input_checks(FileNotFoundError):  # settings, series, saved state; not the training
        dev = resolve_device(cfg.device)
        d = ENV_DEFAULTS[cfg.env]
        series_dirs = sorted(p for p in run.glob("series*") if p.is_dir())
        empty = [p for p in series_dirs if not list_shards(p, "series")]
        if empty:  # told to run train-vae, which cannot fill a series folder whose frames folder holds no shards
            frames = [run / p.name.replace("series", "frames", 1) for p in empty]
            unfilled = [p for p, f in zip(empty, frames) if not (f.is_dir() and list_shards(f))]
            if unfilled:
                names = ", ".join(f"'{p}'" for p in unfilled)
                raise FileNotFoundError(
                    f"No series shards in {names}, and no frame shards in its frames* folder to encode into it: an "
                    "earlier train-vae made it from a collect stopped before its first shard, and train-vae cannot "
                    f"fill it. Delete {names} and run train-mdnrnn again."
                )
            raise FileNotFoundError(
                f"No series shards in {', '.join(str(p) for p in empty)} yet (a train-vae stopped before encoding): "
                f"run `world_models train-vae --env {cfg.env}` to encode {', '.join(f.name for f in frames)}, then "
                "train-mdnrnn again."
            )
        # a frames* folder whose shards are not all encoded (train-vae stopped while encoding, or frames collected
        # after V was trained): M trained on part of the data without a word
        # (no series* at all: train-vae never ran, which the check below says)
        for frames_dir in sorted(p for p in run.glob("frames*") if p.is_dir() and series_dirs):
            shards = list_shards(frames_dir)
            series_dir = run / frames_dir.name.replace("frames", "series", 1)
            unencoded = [p for p in shards if not (series_dir / p.name.replace("frames-", "series-", 1)).is_file()]
            if unencoded:
                raise FileNotFoundError(
                    f"{len(unencoded)} of the {len(shards)} frame shards in '{frames_dir}' have no series shard in "
                    f"'{series_dir}' (a train-vae stopped while encoding, or frames collected after V was trained): M "
                    f"would train on part of the data: run `world_models train-vae --env {cfg.env}` to finish "
                    "encoding, then train-mdnrnn again."
                )
        parts = [load_series(p) for p in series_dirs]
        if not parts:
            raise FileNotFoundError(
                f"No series under {run}/series*. Run `world_models train-vae --env {cfg.env}` first."
            )
        series = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        for key, width in (("mu", d["z_size"]), ("logvar", d["z_size"]), ("actions", d["action_size"])):
            got = series[key].shape[1] if series[key].ndim == 2 else None
            if got != width:
                raise ValueError(
                    f"The series under {run}/series* have {key} of shape {list(series[key].shape[1:])} per step, but "
                    f"--env {cfg.env} needs {width}: they were encoded for another env or VAE. Encode this env's "
                    "rollouts again (`world_models train-vae`), or pass the --env they were collected for."
                )
        n = len(series["actions"])
        _check_windows(n, len(series["episode_lengths"]), cfg.rnn_seq_len)
        steps_per_epoch = max(1, n // (cfg.rnn_seq_len * cfg.rnn_batch))
        total_steps = max(1, int(math.ceil(cfg.rnn_epochs * max(1, n // cfg.rnn_seq_len) / cfg.rnn_batch)))
        action_map = cfg.rnn_action_map
        if warm_start is not None:  # iterative procedure: continue from the previous M on all data
            previous = MDNRNN.load(warm_start)
            action_map = previous.action_map  # the continued M keeps reading actions the way it learned to
        torch.manual_seed(cfg.seed)  # M's initial weights and z samples (--seed changed only the batch order)
        rnn = MDNRNN(d["z_size"], d["action_size"], d["hidden_size"], 5, True, d["predict_done"], d["predict_reward"],
                     action_map)  # fmt: skip
        if warm_start is not None:
            rnn.load_state_dict(previous.state_dict())
        rnn.to(dev)
        check_precision(cfg.precision, dev)
        opt = torch.optim.Adam(rnn.parameters(), lr=cfg.rnn_lr)
        ckpt = run / f"mdnrnn_train{tag}"
        # one log per training state: a tagged M (the iterations) never trims another's
        logs = run / f"logs_mdnrnn{tag}"
        if not checkpoint_exists(run / "vae"):  # checked before training: M is assembled with V at the end
            raise FileNotFoundError(
                f"No complete checkpoint in '{run / 'vae'}': M is trained on V's latents and saved with V. Run "
                f"`world_models train-vae --env {cfg.env}` on this run directory first."
            )
        vae_sha = weights_sha256(run / "vae")  # M learns V's latents: its training state belongs to this V only
        stale = False
        if checkpoint_exists(ckpt):
            saved = load_checkpoint(ckpt, kind="mdnrnn_train")[1]
            saved_map = saved.get("action_map", "none")
            # "" was recorded when V was missing (before the check above): unknown, not another V
            stale = (saved.get("vae_sha256") or vae_sha) != vae_sha
            if stale:  # V trained again since (train-vae re-encoded the series): continuing would mix two latent spaces
                print(f"V changed since '{ckpt}' was saved: M trains again from step 0 on the new latents")
            elif saved_map != action_map:
                raise ValueError(
                    f"'{ckpt}' is an M trained with action map {saved_map!r}, but this run asks for {action_map!r}. "
                    f"Pass --rnn-action-map {saved_map} to continue it, or use a new --run-dir."
                )
        # what M's loss and a step are: a resume with others is refused (the learning rates and --rnn-epochs may change)
        settings = {"done_pos_weight": cfg.done_pos_weight, "rnn_seq_len": cfg.rnn_seq_len, "rnn_batch": cfg.rnn_batch}
        step, prior_s = (0, 0.0) if stale else _resume_train_state(ckpt, "mdnrnn_train", rnn, opt, settings)
        if step:  # the z samples after a resume, like the batch order, are drawn from the seed and the step
            torch.manual_seed(cfg.seed + step)
        # rows logged after the checkpoint (all of them: stale) are replayed
        drop_rows_after(logs / "metrics.csv", step)
    if step >= total_steps and _calibrated_from(rnn, run / "world_model" / "mdnrnn"):
        # nothing left to train: rewriting the world model from this M would drop its calibrate-done shift silently
        print(f"M is already trained ({step}/{total_steps} steps); the calibrated world model in {run} is kept")
        return run / "world_model"
    if step:
        print(f"resuming M training at step {step}/{total_steps}")

    def save_train_state() -> None:
        refuse_diverged(rnn, ckpt, step, f"--rnn-lr {cfg.rnn_lr:g}")  # NaN weights never replace the last good ones
        meta = {"action_map": action_map, "vae_sha256": vae_sha, **settings}
        _save_train_state(ckpt, "mdnrnn_train", rnn, opt, step, prior_s + time.time() - t0, meta)

    logger = RunLogger(logs, resumed_at=step)
    rng = np.random.default_rng(cfg.seed + step)
    bar = tqdm(total=total_steps, initial=step, desc="train M", unit="batch")
    t0 = time.time()
    rnn.train()
    with GracefulStop() as stop:  # Ctrl-C / SIGTERM: save this step's state, then stop (up to 49 steps were lost)
        while step < total_steps and not stop.requested:
            epoch_start = step
            for b in _stream_batches(series, cfg.rnn_seq_len, cfg.rnn_batch, rng):
                mu, logvar = torch.as_tensor(b["mu"], device=dev), torch.as_tensor(b["logvar"], device=dev)
                z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # a fresh sample of z every batch
                restart = torch.as_tensor(b["restart"], device=dev)
                with autocast(cfg.precision, dev):
                    out = rnn(z[:, :-1], torch.as_tensor(b["actions"], device=dev), restart[:, :-1]).float()
                z_mask = restart[:, 1:] < 0.5  # the next frame starts a new episode: nothing to predict
                losses = mdn_loss(
                    rnn, out, z[:, 1:], z_mask, done=torch.as_tensor(b["dones"], device=dev),
                    reward=torch.as_tensor(b["rewards"], device=dev), done_pos_weight=cfg.done_pos_weight,
                )  # fmt: skip
                lr = max(cfg.rnn_lr_min, cfg.rnn_lr * cfg.rnn_lr_decay**step)
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad()
                losses["total"].backward()
                torch.nn.utils.clip_grad_norm_(rnn.parameters(), cfg.rnn_grad_clip)
                opt.step()
                step += 1
                bar.update(1)
                refuse_diverged(rnn, ckpt, step, f"--rnn-lr {cfg.rnn_lr:g}", losses["total"].item())
                logger.log_metrics(step, **{f"{k}_loss": v.item() for k, v in losses.items()}, lr=lr)
                bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
                if step % 50 == 0:
                    save_train_state()
                if step >= total_steps or stop.requested:
                    break
            if step == epoch_start:  # cannot happen after _check_windows; never spin forever on an empty epoch
                raise RuntimeError(f"An epoch over {n} steps gave no batch of {cfg.rnn_seq_len + 1}-step windows.")
    bar.close()
    save_train_state()
    logger.close()
    if step < total_steps:  # stopped
        raise StageStopped(f"train-mdnrnn{tag} stopped at step {step}/{total_steps} with its state saved in {ckpt}")
    rnn.eval()
    record = {"train_steps": step, "train_frames": n, "steps_per_epoch": steps_per_epoch,
              "train_seconds": round(prior_s + time.time() - t0), **settings}  # fmt: skip
    rnn.save(run / "mdnrnn", extra=record)
    rnn.checkpoint_meta = dict(record)  # the world model's copy of M (saved below) records the same
    vae = ConvVAE.load(run / "vae")
    mu0, lv0 = WorldModel.initial_from_series(series["mu"], series["logvar"], series["episode_lengths"])
    wm = WorldModel(cfg.env, vae, rnn, mu0, lv0, d["temperature"], d["max_steps"], d["features"], d["reward"])
    wm.save(run / "world_model")
    keys = ["gmm_loss", "done_loss"] if d["predict_done"] else ["gmm_loss", "reward_loss"]
    _plot_metrics(logs / "metrics.csv", keys, run / f"mdnrnn_loss{tag}.png", f"M training{tag}")
    print(f"M saved; world model in {run / 'world_model'}")
    return run / "world_model"


# ============================================================================================== calibrate done
@torch.no_grad()
def dream_lengths_random(
    wm: WorldModel, episodes: int, temperature: float, seed: int, max_hold: int = 10
) -> np.ndarray:
    """Dream episode lengths under the data-collection policy (a ~ U[-1, 1] held 1-``max_hold`` steps), batched."""
    from dreamarcade.envs.dream import DreamBatch

    if wm.action_size != 1:
        raise ValueError("dream_lengths_random covers the Doom world model (one action).")
    dream = DreamBatch(wm, episodes, temperature, seed=seed)
    dream.reset_all()
    gen = torch.Generator().manual_seed(seed)
    action = torch.zeros(episodes, 1)
    hold = torch.zeros(episodes, dtype=torch.long)
    length = torch.zeros(episodes, dtype=torch.long)
    alive = torch.ones(episodes, dtype=torch.bool)
    for _ in range(wm.max_steps):
        new = hold <= 0
        action[new] = torch.rand(int(new.sum()), 1, generator=gen) * 2 - 1
        hold[new] = torch.randint(1, max_hold + 1, (int(new.sum()),), generator=gen)
        hold -= 1
        _, _, term, trunc = dream.step(action)
        length += alive.long()
        alive &= ~(term | trunc)
        if not bool(alive.any()):
            break
    return length.numpy()


def calibrate_done_shift(wm: WorldModel, target: float, temperature: float, episodes: int = 128, seed: int = 0,
                         iters: int = 8, bounds: tuple[float, float] = (-4.0, 8.0),
                         min_length: int = 0) -> tuple[float, float]:  # fmt: skip
    """Bisect the shift added to M's done-logit bias so the mean dream length under the collection policy is
    ``target``; the shift is left applied to ``wm.rnn``. Returns (shift, mean dream length at that shift).

    ``min_length``: the mean is over the dream episodes longer than this, as a target taken from recorded episodes
    is over those collect kept (it drops Doom episodes of at most 100 steps); 0 when none were dropped.

    A larger shift makes the dream end earlier (done when logit + shift > 0). The same dream seed is used for every
    candidate, so the length is (nearly) monotone in the shift.
    """
    with input_checks():  # the caller's target and model: bad input (the CLI prints it as one line), checked first
        if target <= 0:
            raise ValueError(f"target mean episode length must be positive, got {target}.")
        if not wm.rnn.predict_done:
            raise ValueError("calibrate-done needs a world model whose M predicts done (Doom).")
    bias = wm.rnn.head.bias
    i_done = wm.rnn.n_mdn
    base = float(bias.detach()[i_done])
    lo, hi = bounds

    def mean_len(shift: float) -> float:
        with torch.no_grad():
            bias[i_done] = base + shift
        lengths = dream_lengths_random(wm, episodes, temperature, seed)
        kept = lengths[lengths > min_length]
        return float(kept.mean()) if len(kept) else float("nan")  # every dream died before the cut: no mean

    def closer(m: float, than: float) -> bool:  # NaN (no dream kept) is never closer than a mean
        return bool(np.isfinite(m) and (not np.isfinite(than) or abs(m - target) < abs(than - target)))

    best = (0.0, mean_len(0.0))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        m = mean_len(mid)
        if closer(m, best[1]):
            best = (mid, m)
        if m > target:  # NaN: far too deadly, as below the target
            lo = mid
        else:
            hi = mid
    with torch.no_grad():
        bias[i_done] = base + best[0]
    if not np.isfinite(best[1]):
        raise DreamArcadeError(
            f"calibrate-done: at every done-head shift tried ({bounds[0]:+g} to {bounds[1]:+g}) all {episodes} "
            f"dreams end within {min_length} steps, so none is kept to compare with the recorded mean. M's done "
            "head is far too eager: train M longer (train-mdnrnn) before calibrating."
        )
    return best


def _collection_records(frames: Path) -> list[dict[str, Any]]:
    """What each collect call recorded in a frames folder (its ``collect-s*.json``: seed, cut, cap, policy ...)."""
    return [read_json_object(m) for m in sorted(frames.glob("collect-s*.json"))]


def calibration_target(cfg: WMConfig) -> tuple[float, int]:
    """``--calibrate-target``, or else the mean length of the random collection's episodes (``--frames-dir``'s series),
    and the length those episodes had to exceed to be kept (0 for an explicit target: a mean over all episodes).

    The dream is played with random actions, so only episodes collected at random are comparable (an iteration's
    controller-collected series_iter* are left out). The cut is the one collect recorded in ``--frames-dir``'s
    ``collect-s*.json`` (its default, :data:`~dreamarcade.world_models.collect.MIN_LENGTH`, where none is recorded).
    """
    from dreamarcade.world_models.collect import MIN_LENGTH
    from dreamarcade.world_models.rollouts import load_series

    if cfg.calibrate_target:
        return float(cfg.calibrate_target), 0
    run = cfg.resolved_run_dir()
    frames, series = run / cfg.frames_dir, run / cfg.frames_dir.replace("frames", "series", 1)
    if not series.is_dir():
        raise FileNotFoundError(
            f"calibrate-done takes its target from the random episodes in '{series}' (the series of --frames-dir "
            f"{cfg.frames_dir}), which does not exist. Pass the --frames-dir the random collection used, run "
            "`train-vae` to encode it, or give the target with --calibrate-target."
        )
    cuts = {int(r.get("min_length", MIN_LENGTH[cfg.env])) for r in _collection_records(frames)}
    if len(cuts) > 1:
        raise ValueError(
            f"the collections in '{frames}' kept episodes past different lengths "
            f"{sorted(cuts)}: their mean length is no single target. Give one with --calibrate-target."
        )
    return float(load_series(series)["episode_lengths"].mean()), cuts.pop() if cuts else MIN_LENGTH[cfg.env]


def calibration_cap(cfg: WMConfig) -> int:
    """The episode cap of the random episodes the target comes from (0: the env's own, the model's ``max_steps``).

    It is the ``max_steps`` that collect recorded in ``--frames-dir``'s ``collect-s*.json``: a collection cut at N
    steps has a mean length of at most N, so the dreams are cut at N too. ``--max-steps`` where nothing is
    recorded, or with ``--calibrate-target``; a ``--max-steps`` other than the recorded cap is refused.
    """
    if cfg.calibrate_target:
        return cfg.max_steps
    frames = cfg.resolved_run_dir() / cfg.frames_dir
    caps = {r.get("max_steps") or 0 for r in _collection_records(frames)}  # None: the env's own cap
    if len(caps) > 1:
        raise ValueError(
            f"the collections in '{frames}' capped their episodes at different lengths "
            f"{[c or 'the env own' for c in sorted(caps)]}: their mean length is no single target. Give one with "
            "--calibrate-target."
        )
    if not caps:
        return cfg.max_steps
    cap = caps.pop()
    if cfg.max_steps and cfg.max_steps != cap:
        raise ValueError(
            f"--max-steps {cfg.max_steps}, but the random episodes in '{frames}' were collected with "
            f"{cap or 'the env own cap'}: the dreams are capped like the data. Drop --max-steps, or give the target "
            "with --calibrate-target."
        )
    return int(cap)


@_stage
def step_calibrate_done(cfg: WMConfig) -> dict[str, float]:
    """Calibrate the run's world model in place (run/world_model); the uncalibrated M stays in run/mdnrnn."""
    run = cfg.resolved_run_dir()
    wm_dir = run / "world_model"
    with input_checks(FileNotFoundError):  # the run's model and the target
        wm = WorldModel.load(wm_dir, env=cfg.env)
        target, min_length = calibration_target(cfg)  # the dream's mean is taken past the same cut as the data's
        cap = calibration_cap(cfg)  # and its episodes end at the same cap
        if cap:
            wm.max_steps = cap
            if target >= cap and not cfg.calibrate_target:  # the data shows no death: a dream that never ends
                warnings.warn(
                    f"every collected episode reached the collection's --max-steps {cap}, so the data holds no death "
                    "to calibrate to: the dream will (almost) never end and every controller scores the cap. "
                    "Collect with a higher --max-steps (or none).",
                    stacklevel=2,
                )
        tau = cfg.temperature or wm.temperature
        _, meta = load_checkpoint(wm_dir / "mdnrnn", kind="mdnrnn")
    prior = float(meta.get("done_bias_shift", 0.0))
    t0 = time.time()
    shift, length = calibrate_done_shift(wm, target, tau, seed=cfg.seed, min_length=min_length)
    res = {"target": target, "min_length": min_length, "max_steps": wm.max_steps, "shift": shift,
           "total_shift": prior + shift,
           "dream_mean_length": length, "temperature": tau, "seconds": round(time.time() - t0, 1)}  # fmt: skip
    wm.rnn.checkpoint_meta["done_bias_shift"] = prior + shift  # the rest of what M's checkpoint recorded is kept
    wm.rnn.save(wm_dir / "mdnrnn", extra=wm.rnn.checkpoint_meta)
    atomic_write_text(run / "calibrate_done.json", json.dumps(res, indent=2))
    print(f"done head shifted by {shift:+.3f} (total {prior + shift:+.3f}): dream mean length {length:.0f} "
          f"under the collection policy at tau {tau} (target {target:.0f})")  # fmt: skip
    return res


# ============================================================================================== C
def _controller_for(cfg: WMConfig, wm: WorldModel) -> Any:
    from dreamarcade.world_models.controller import Controller

    size = wm.z_size if cfg.controller == "v-only" else wm.feature_size
    return Controller.for_env(cfg.env, size)


def _select(features: torch.Tensor, ctrl: Any) -> torch.Tensor:
    """V-only controllers read z alone (the first z_size features)."""
    return features[..., : ctrl.feature_size]


def dream_fitness(wm: WorldModel, ctrl: Any, params: np.ndarray, rollouts: int, temperature: float, seed: int,
                  max_steps: int | None = None, precision: str = "fp32") -> np.ndarray:  # fmt: skip
    """Mean dream return of each candidate (P, n) over ``rollouts`` dreams: (P,)."""
    return dream_returns(wm, ctrl, params, rollouts, temperature, seed, max_steps, precision).mean(1)


@torch.no_grad()
def dream_returns(wm: WorldModel, ctrl: Any, params: np.ndarray, rollouts: int, temperature: float, seed: int,
                  max_steps: int | None = None, precision: str = "fp32") -> np.ndarray:  # fmt: skip
    """Dream return of each candidate (P, n) in each of ``rollouts`` dreams, all P x R in one torch batch: (P, R).

    Dreams that have ended are dropped from the batch (compaction), so a generation costs what its survivors cost.
    ``precision="bf16"`` steps M's matmuls in bfloat16 (see :class:`PackedMDNRNN`).
    """
    from dreamarcade.envs.dream import DreamBatch

    p = params.shape[0]
    n = p * rollouts
    dream = DreamBatch(wm, n, temperature, seed=seed, precision=precision)
    dream.reset_all()
    theta = torch.as_tensor(np.asarray(params, np.float32))
    owner = torch.arange(n) // rollouts  # candidate of each dream
    total = torch.zeros(n)
    alive = torch.arange(n)
    cap = max_steps or wm.max_steps
    dream.max_steps = cap  # also longer than the model's own cap
    for _ in range(cap):
        feats = _select(dream.features(), ctrl)
        raw = torch.einsum("nad,nd->na", ctrl.unflatten(theta)[0][owner[alive]], feats)
        if ctrl.bias:
            raw = raw + ctrl.unflatten(theta)[1][owner[alive]]
        from dreamarcade.world_models.controller import map_actions

        actions = map_actions(torch.tanh(raw), ctrl.action_mode)
        _, reward, term, trunc = dream.step(actions)
        total[alive] += reward
        keep = ~(term | trunc)
        if dream.t[0] >= cap:
            break
        if not bool(keep.all()):
            if not bool(keep.any()):
                break
            alive = alive[keep]
            dream.keep(keep)
    return total.view(p, rollouts).numpy()


_RW: Any = None  # in a RealPool worker: (env, world model, controller), or the exception that building them raised


def _real_worker_init(
    env: str, model_dir: str, ctrl_cfg: dict, worker_process: bool = True, stopping: Any = None
) -> None:
    global _RW  # one env + world model per worker process (or, inline, in the caller's), built once
    torch.set_num_threads(1)
    if not worker_process:  # the inline backend: the caller's own signal handling stays as it is
        return _build_real_worker(env, model_dir, ctrl_cfg)
    # a Ctrl-C at the terminal, or a SIGTERM to the process group (timeout, SLURM), is the parent's to handle (it stops
    # after the generation); the pool's workers used to die with it in the middle of their episodes, and the parent
    # then waited forever for their lost tasks. The ViZDoom engine started below inherits both.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _build_real_worker(env, model_dir, ctrl_cfg)
    if stopping is not None:  # the parent's own Pool.terminate() (stopping set first) ends the worker, see RealPool
        signal.signal(signal.SIGTERM, functools.partial(_exit_if_stopping, stopping))


def _exit_if_stopping(stopping: Any, signum: int, frame: Any) -> None:
    if stopping.is_set():
        raise SystemExit(128 + signum)  # unwinds: a task-queue lock it holds is released, the env is closed


def _build_real_worker(env: str, model_dir: str, ctrl_cfg: dict) -> None:
    global _RW
    from dreamarcade.world_models.collect import make_real_env
    from dreamarcade.world_models.controller import Controller

    try:
        wm = WorldModel.load(model_dir, env=env)
        ctrl = Controller(ctrl_cfg["feature_size"], ctrl_cfg["action_size"], ctrl_cfg["bias"], ctrl_cfg["action_mode"])
        _RW = (make_real_env(env), wm, ctrl)
    except Exception as exc:  # raised here, the pool would replace the worker forever: report it from the task
        _RW = exc


def _real_episode(args: tuple[np.ndarray, int, int]) -> tuple[float, int]:
    """One real episode with V + M + C(params); returns (return, length)."""
    if isinstance(_RW, Exception):
        raise _RW
    return _play_real_episode(*args)


def _play_real_episode(params: np.ndarray, seed: int, max_steps: int) -> tuple[float, int]:
    from dreamarcade.world_models.features import FeatureTracker

    env, wm, ctrl = _RW
    env.max_steps = int(max_steps) if max_steps else wm.max_steps  # the cap may be longer than the env's default
    ctrl.set_flat(params)
    tracker = FeatureTracker(wm, seed=seed)
    frame, _ = env.reset(seed=seed)
    feats = tracker.reset(frame)
    ret, t = 0.0, 0
    while True:
        a = ctrl.act(feats[: ctrl.feature_size])
        frame, r, term, trunc, _ = env.step(a)
        ret += r
        t += 1
        if term or trunc or (max_steps and t >= max_steps):
            return ret, t
        feats = tracker.step(a, frame)


class _RealWorker:
    """A Ray actor holding one real env + V + M + C (Ray runs each actor in a process of its own)."""

    def __init__(self, env: str, model_dir: str, ctrl_cfg: dict) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver's Ctrl-C is the driver's; Ray stops its actors
        _real_worker_init(env, model_dir, ctrl_cfg, worker_process=False)

    def episode(self, args: tuple[np.ndarray, int, int]) -> tuple[float, int]:
        return _real_episode(args)


class RealPool:
    """Workers that each hold a real env + V + M, evaluating controllers episode by episode.

    ``backend``: "process" (worker processes on this machine), "ray" (one Ray actor per worker, on a running
    cluster or a local instance, :func:`~dreamarcade.world_models.collect.ray_session`; the cluster's nodes must see
    ``model_dir`` at the same path) or "inline" (this process, one episode after another; for debugging). Every
    backend plays the same episodes for the same parameters and seeds.

    Example (one real TakeCover episode of a zero controller on the bundled world model; takes a few seconds):
        >>> import numpy as np
        >>> from dreamarcade.baselines.world_models import RealPool
        >>> from dreamarcade.world_models.controller import Controller
        >>> from dreamarcade.world_models.model import WorldModel, bundled_dir
        >>> ctrl = Controller.for_env("doom", feature_size=WorldModel.bundled("doom").feature_size)
        >>> pool = RealPool("doom", str(bundled_dir("doom")), ctrl, workers=1)
        >>> [(score, steps)] = pool.episodes([np.zeros(ctrl.num_params)], seeds=[0], max_steps=50)
        >>> steps <= 50
        True
        >>> pool.close()
    """

    def __init__(self, env: str, model_dir: str, ctrl: Any, workers: int, backend: str = "process") -> None:
        import multiprocessing as mp

        from dreamarcade.world_models.collect import check_backend, ray_session

        check_backend(backend)
        cfg = {k: getattr(ctrl, k) for k in ("feature_size", "action_size", "bias", "action_mode")}
        self.backend, self.pool, self._actors, self._busy = backend, None, [], False
        self._ray_session = contextlib.ExitStack()  # holds the Ray connection of the "ray" backend until close()
        if backend == "process":
            ctx = mp.get_context("spawn")
            self._stopping = ctx.Event()
            self.pool = ctx.Pool(workers, _real_worker_init, (env, model_dir, cfg, True, self._stopping))
        elif backend == "inline":
            threads = torch.get_num_threads()
            _real_worker_init(env, model_dir, cfg, worker_process=False)
            torch.set_num_threads(threads)  # the worker's one thread is for worker processes, not the caller's
        else:
            from ray.util import ActorPool

            ray = self._ray_session.enter_context(ray_session(workers, "evaluating controllers in the real env"))
            try:
                # an actor takes a CPU for its life: more actors than the cluster has CPUs would never be placed,
                # and the tasks handed to them would wait forever
                n = max(1, min(workers, int(ray.cluster_resources().get("CPU", workers))))
                actor = ray.remote(num_cpus=1)(_RealWorker)
                model_dir = str(Path(model_dir).resolve())  # actors run in the cluster's working directory
                self._actors = [actor.remote(env, model_dir, cfg) for _ in range(n)]
                self._actor_pool = ActorPool(self._actors)
            except BaseException:
                self.close()
                raise

    def episodes(self, params: list[np.ndarray], seeds: list[int], max_steps: int = 0) -> list[tuple[float, int]]:
        """(return, length) of one episode per (params, seed), in their order."""
        tasks = [(p, s, max_steps) for p, s in zip(params, seeds)]
        if self.backend == "process":
            self._busy = True  # until the map returns: a close() before that terminates the workers
            result = wait_for_pool(self.pool, self.pool.map_async(_real_episode, tasks, chunksize=1), "RealPool")
            self._busy = False
            return result
        if self.backend == "inline":
            return [_real_episode(t) for t in tasks]
        return list(self._actor_pool.map(lambda actor, task: actor.episode.remote(task), tasks))

    def close(self) -> None:
        global _RW
        if self.pool is not None:
            if self._busy:  # left mid-map (a second Ctrl-C, a dead worker): join() would wait for lost tasks
                # terminate() ends the workers with SIGTERM, which they ignore unless stopping is set: without it,
                # a worker locked out of the task queue by terminate() was waited for forever
                self._stopping.set()
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
        if self.backend == "inline":  # the env and models held in this process
            if isinstance(_RW, tuple):
                _RW[0].close()
            _RW = None
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
            self._actors = []
        self._ray_session.close()  # a Ray instance the pool started is shut down; a user's own stays


def _world_model_dir(cfg: WMConfig) -> Path:
    run_wm = cfg.resolved_run_dir() / "world_model"
    if (run_wm / "world_model.json").is_file():
        return run_wm
    from dreamarcade.world_models.model import bundled_dir

    print(f"no trained world model in {run_wm}; using the bundled weights")
    return bundled_dir(cfg.env)


def tell_returns(es: Any, xs: list[np.ndarray], returns: np.ndarray) -> None:
    """Give pycma a generation's scores: it minimises, so the returns (to be maximised) go in negated.

    Example (real CMA-ES climbing -|x - 3|^2 from 0):
        >>> import cma, numpy as np
        >>> es = cma.CMAEvolutionStrategy([0.0, 0.0], 1.0, {"popsize": 8, "seed": 1, "verbose": -9})
        >>> for _ in range(40):
        ...     xs = es.ask()
        ...     tell_returns(es, xs, -((np.array(xs) - 3.0) ** 2).sum(1))
        >>> np.round(es.mean, 1).tolist()
        [3.0, 3.0]
    """
    es.tell(xs, (-np.asarray(returns, np.float64)).tolist())


def _check_ensemble(cfg: WMConfig) -> None:
    """Refuse ``--ensemble`` with ``--where real``: it was checked, then ignored (and recorded as no ensemble)."""
    if cfg.ensemble.strip() and cfg.where == "real":
        raise ValueError(
            f"--ensemble {cfg.ensemble} scores candidates in other world models' dreams, but --where real scores them "
            "in the real env: drop --ensemble, or evolve with --where dream."
        )


@_stage
def step_evolve(cfg: WMConfig, out_name: str = "controller") -> Path:
    """CMA-ES (pycma) over the controller's flat parameters; fitness = mean return over ``rollouts`` episodes
    (with ``--ensemble``: the smallest such mean over the run's dream and the extra world models' dreams)."""
    from tqdm import tqdm

    from dreamarcade.errors import require

    with input_checks(FileNotFoundError):  # models, settings, saved state; not the evolution
        cma = require("cma", "evolving controllers with CMA-ES")  # a core dependency: the error says to reinstall
        check_precision(cfg.precision, torch.device("cpu"))
        _check_ensemble(cfg)
        run = cfg.resolved_run_dir()
        wm_dir = _world_model_dir(cfg)
        wm = WorldModel.load(wm_dir, env=cfg.env)
        tau = cfg.temperature or wm.temperature
        ctrl = _controller_for(cfg, wm)
        # a pessimistic ensemble: a candidate scores its worst mean return over these dreams (exploits of one M's quirks
        # do not pay); every model must give the same features as the main one
        others = [WorldModel.load(d, env=cfg.env) for d in cfg.ensemble.split(",") if d.strip()]
        for o in others:
            if o.feature_size != wm.feature_size:
                raise ValueError(f"--ensemble models must give {wm.feature_size} features like {wm_dir}; one gives "
                                 f"{o.feature_size}.")  # fmt: skip
        out = run / out_name
        state_dir = run / f"{out_name}_cma"
        gen0, x0, sigma0, best, prior_s = 0, np.zeros(ctrl.num_params), cfg.sigma_init, (-np.inf, None), 0.0
        fingerprint = world_model_fingerprint(wm_dir)  # the state and the controller belong to the model evolved in
        saved = load_checkpoint(state_dir, kind="cma_state") if checkpoint_exists(state_dir) else None
        if saved is not None and saved[1].get("world_model_sha256", fingerprint) != fingerprint:
            print(f"the world model changed since '{state_dir}' was saved: CMA-ES starts again from generation 0")
            saved = None
        if saved is not None and saved[0]["mean"].numel() != ctrl.num_params:
            print(f"'{state_dir}' holds a CMA-ES state for {saved[0]['mean'].numel()} controller parameters, this "
                  f"--controller has {ctrl.num_params}: CMA-ES starts again from generation 0")  # fmt: skip
            saved = None
        # what a fitness means: a best found under another objective is not comparable with this run's fitnesses
        objective = {"where": cfg.where, "rollouts": cfg.rollouts, "max_steps": cfg.max_steps,
                     # the dream's temperature and ensemble do not touch a real-env fitness
                     "temperature": tau if cfg.where == "dream" else None,
                     "ensemble": cfg.ensemble if cfg.where == "dream" else ""}  # fmt: skip
        if saved is not None:  # resume: mean, step size and best so far (the covariance restarts)
            tensors, meta = saved
            gen0, sigma0, prior_s = int(meta["generation"]), float(meta["sigma"]), float(meta.get("seconds", 0.0))
            x0 = tensors["mean"].double().numpy()
            best = (float(meta["best_fitness"]), tensors["best"].numpy())
            if meta.get("objective", objective) != objective:  # e.g. a temperature curriculum: go on, but score anew
                print(f"'{state_dir}' was evolved with {meta['objective']}, this run scores with {objective}: CMA-ES "
                      f"goes on from its mean, and the best so far ({best[0]:.1f}) is forgotten")  # fmt: skip
                best = (-np.inf, None)
            print(f"resuming CMA-ES at generation {gen0}")
        # generations logged but not saved are replayed (all of them when CMA-ES starts over: gen0 is 0)
        drop_rows_after(run / f"logs_{out_name}" / "metrics.csv", gen0)
        es = cma.CMAEvolutionStrategy(x0, sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1 + gen0, "verbose": -9})
        pool = None
        if cfg.where == "real":
            pool = RealPool(cfg.env, str(wm_dir), ctrl, cfg.workers or os.cpu_count() or 1, cfg.backend)
        elif cfg.where != "dream":
            raise ValueError(f"--where must be 'dream' or 'real', got {cfg.where!r}.")
    logger = RunLogger(run / f"logs_{out_name}", resumed_at=gen0)
    save_hyperparameters(run / f"logs_{out_name}", cfg)
    t0 = time.time()
    where = f"the dream (tau={tau})" if cfg.where == "dream" else "the real env"
    bar = tqdm(total=cfg.generations, initial=gen0, desc=f"CMA-ES in {where}", unit="gen")
    gen = gen0
    stopped = False
    try:
        with GracefulStop() as stop:  # Ctrl-C / SIGTERM: end this generation, save it, then stop
            while gen < cfg.generations:
                xs = es.ask()
                if pool is None:
                    fit = np.min([dream_fitness(m, ctrl, np.array(xs), cfg.rollouts, tau, seed=cfg.seed * 100003 + gen,
                                                max_steps=cfg.max_steps or None, precision=cfg.precision)
                                  for m in [wm, *others]], 0)  # fmt: skip
                else:
                    seeds = [cfg.seed * 100003 + gen * 1000 + r for r in range(cfg.rollouts)]
                    res = pool.episodes([x for x in xs for _ in seeds], seeds * len(xs), cfg.max_steps)
                    fit = np.array([r[0] for r in res]).reshape(len(xs), cfg.rollouts).mean(1)
                tell_returns(es, xs, fit)
                gen += 1
                i = int(np.argmax(fit))
                if fit[i] > best[0]:
                    best = (float(fit[i]), np.array(xs[i], np.float32))
                mean_params = np.asarray(es.mean, np.float32)
                # the mean's own score (what the paper deploys), on the fitness's step cap, in its generation's row
                # (NaN in the other generations' rows)
                ev = {"dream_eval_of_mean": float("nan")} if cfg.eval_every and pool is None else {}
                if ev and gen % cfg.eval_every == 0:
                    ev["dream_eval_of_mean"] = float(dream_fitness(
                        wm, ctrl, mean_params[None], cfg.eval_rollouts, tau, seed=10**6 + gen,
                        max_steps=cfg.max_steps or None, precision=cfg.precision,
                    )[0])  # fmt: skip
                logger.log_metrics(gen, fitness_mean=fit.mean(), fitness_best=fit.max(), fitness_worst=fit.min(),
                                   sigma=es.sigma, seconds=prior_s + time.time() - t0, **ev)  # fmt: skip
                bar.update(1)
                bar.set_postfix(mean=f"{fit.mean():.0f}", best=f"{fit.max():.0f}", sigma=f"{es.sigma:.3f}")
                save_checkpoint(
                    state_dir, {"mean": torch.as_tensor(mean_params), "best": torch.as_tensor(best[1])},
                    {"kind": "cma_state", "generation": gen, "sigma": float(es.sigma), "best_fitness": best[0],
                     "seconds": prior_s + time.time() - t0, "world_model_sha256": fingerprint, "objective": objective},
                )  # fmt: skip
                if stop.requested:  # the generation the signal came in is finished and saved (it was lost)
                    stopped = True
                    break
                if cfg.time_budget and time.time() - t0 > cfg.time_budget:
                    print(f"time budget of {cfg.time_budget:.0f}s reached after generation {gen}")
                    break
    finally:
        bar.close()
        logger.close()
        if pool is not None:
            pool.close()
    # The paper deploys the CMA-ES mean (estool's "best" is its running mean); keep both.
    ctrl.set_flat(np.asarray(es.mean, np.float32))
    extra = {"generations": gen, "popsize": cfg.popsize, "rollouts": cfg.rollouts, "where": cfg.where,
             "max_steps": cfg.max_steps,
             "temperature": tau, "controller": cfg.controller, "seconds": prior_s + time.time() - t0,
             "world_model": str(wm_dir), "world_model_sha256": fingerprint}  # fmt: skip
    ctrl.save(out, extra=extra)
    if best[1] is not None:
        ctrl.set_flat(best[1])
        ctrl.save(run / f"{out_name}_best", extra={**extra, "fitness": best[0]})
    _plot_cma(run / f"logs_{out_name}" / "metrics.csv", run / f"{out_name}_cma_curve.png", cfg.where)
    print(f"controller saved to {out}; CMA-ES curve in {run / f'{out_name}_cma_curve.png'}")
    if stopped:  # the mean so far is saved to evaluate, but the step is not done: a pipeline must not skip it
        raise StageStopped(f"evolve stopped after generation {gen}/{cfg.generations} with its state saved in "
                           f"{state_dir}")  # fmt: skip
    return out


def _plot_cma(csv_path: Path, png: Path, where: str) -> None:
    import csv

    if not csv_path.exists():  # --generations 0 on a fresh run: no generation was logged
        return
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("fitness_mean")]
    if not rows:
        return
    g = [float(r["step"]) for r in rows]
    fig, ax = new_figure((7, 4))
    for key, label in (("fitness_best", "best"), ("fitness_mean", "population mean"), ("fitness_worst", "worst")):
        ax.plot(g, [float(r[key]) for r in rows], label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel(f"mean return over rollouts ({where})")
    ax.set_title("CMA-ES")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)


# ============================================================================================== evaluate
def evaluate_real(env: str, model_dir: str | Path, params: np.ndarray | None, ctrl: Any, episodes: int, workers: int,
                  seed: int = EVAL_SEED, max_steps: int = 0, backend: str = "process") -> np.ndarray:  # fmt: skip
    """Returns of ``episodes`` real episodes with V + M + C(params); ``params=None`` is the uniform random policy.

    ``max_steps``: cut each episode after this many steps (0: the env's own cap, 2100 Doom / 1000 CarRacing).
    ``backend``: where the controller's episodes run (:class:`RealPool`); the random policy runs in this process.
    """
    if params is None:
        return _random_returns(env, episodes, seed, max_steps)
    pool = RealPool(env, str(model_dir), ctrl, max(1, workers), backend)
    try:
        res = pool.episodes([params] * episodes, [seed + i for i in range(episodes)], max_steps)
    finally:
        pool.close()
    return np.array([r[0] for r in res])


def _random_returns(env: str, episodes: int, seed: int, max_steps: int = 0) -> np.ndarray:
    """A uniform random action every step (the paper's random-policy baseline); ``max_steps`` as in evaluate_real."""
    from dreamarcade.world_models.collect import make_real_env

    e = make_real_env(env, **({"max_steps": max_steps} if max_steps else {}))  # a longer cap than the default too
    e.action_space.seed(seed)
    rets = []
    for i in range(episodes):
        e.reset(seed=seed + i)
        ret, done, t = 0.0, False, 0
        while not done:
            _, r, term, trunc, _ = e.step(e.action_space.sample())
            ret, t = ret + r, t + 1
            done = term or trunc or bool(max_steps and t >= max_steps)
        rets.append(ret)
    e.close()
    return np.array(rets)


@_stage
def step_evaluate(cfg: WMConfig, ctrl_dir: Path | None = None) -> dict[str, float]:
    from dreamarcade.world_models.controller import Controller

    run = cfg.resolved_run_dir()
    with input_checks(FileNotFoundError):  # the model and the controller
        wm_dir = _world_model_dir(cfg)
        ctrl_dir = Path(ctrl_dir or cfg.eval_controller or run / "controller")
        check_controller_matches(ctrl_dir, wm_dir)  # a controller of another (e.g. pre-iteration) M scores wrongly
        ctrl = Controller.load(ctrl_dir)
    t0 = time.time()
    workers, seed = cfg.workers or os.cpu_count() or 1, cfg.eval_seed
    cap = cfg.max_steps
    rets = evaluate_real(
        cfg.env, wm_dir, ctrl.params, ctrl, cfg.eval_episodes, workers, seed=seed, max_steps=cap, backend=cfg.backend
    )
    seconds = round(time.time() - t0, 1)
    rand = evaluate_real(cfg.env, wm_dir, None, ctrl, cfg.eval_episodes, workers, seed=seed, max_steps=cap)
    res = {"episodes": len(rets), "mean": float(rets.mean()), "std": float(rets.std()), "min": float(rets.min()),
           "max": float(rets.max()), "seconds": seconds, "controller": str(ctrl_dir), "seed": seed,
           "max_steps": cap, "random_mean": float(rand.mean()), "random_std": float(rand.std())}  # fmt: skip
    name = f"evaluate_{ctrl_dir.name}" + ("" if seed == EVAL_SEED else f"_seed{seed}")
    atomic_write_text(run / f"{name}.json", json.dumps({**res, "returns": rets.tolist()}))
    print(f"{cfg.env}: {res['mean']:.1f} +- {res['std']:.1f} over {len(rets)} real episodes ({seconds}s); "
          f"random policy on the same seeds {res['random_mean']:.1f} +- {res['random_std']:.1f}")  # fmt: skip
    return res


# ============================================================================================== video
@torch.no_grad()
def dream_vs_real_video(wm: WorldModel, ctrl: Any, out_mp4: Path, seed: int = 0, temperature: float | None = None,
                        max_frames: int = 700, scale: int = 3,
                        max_steps: int | None = None) -> dict[str, int]:  # fmt: skip
    """Side by side: the real game (left) and a dream started from the same first frame (right), same controller.

    ``max_steps``: the episode cap of both (None: the real env's own and the world model's), longer than those too.
    """
    import cv2

    from dreamarcade.envs.dream import DreamBatch
    from dreamarcade.world_models.collect import make_real_env
    from dreamarcade.world_models.controller import map_actions
    from dreamarcade.world_models.features import FeatureTracker

    # as evolve and evaluate (_play_real_episode), --max-steps is both episodes' cap, also past the default ones: the
    # real env kept its 2100 and the dream the model's cap
    env = make_real_env(wm.env, **({"max_steps": int(max_steps)} if max_steps else {}))
    tracker = FeatureTracker(wm, seed=seed)
    frame, _ = env.reset(seed=seed)
    feats = tracker.reset(frame)
    real = [frame]
    dream = DreamBatch(wm, 1, temperature or wm.temperature, seed=seed)
    if max_steps:
        dream.max_steps = int(max_steps)
    dream.reset_all()
    dream.z = tracker.z.clone()  # the dream starts from the real first frame's latent
    dreamed = [dream.decode()[0]]
    real_done = dream_done = False
    real_len = dream_len = 0
    while max(len(real), len(dreamed)) < max_frames and not (real_done and dream_done):
        if not real_done:
            a = ctrl.act(feats[: ctrl.feature_size])
            frame, _, term, trunc, _ = env.step(a)
            real_len += 1
            real_done = term or trunc
            real.append(frame)
            if not real_done:
                feats = tracker.step(a, frame)
        if not dream_done:
            f = dream.features()[..., : ctrl.feature_size]
            a = ctrl.act_batch(torch.as_tensor(ctrl.params)[None], f[None])[0]
            _, _, term, trunc = dream.step(map_actions(a, "doom") if ctrl.action_mode == "doom" else a)
            dream_len += 1
            dream_done = bool(term[0] or trunc[0])
            dreamed.append(dream.decode()[0])
    env.close()
    n = max(len(real), len(dreamed))
    frames = []
    for i in range(n):
        panels = []
        for seq, label, length in ((real, "real", real_len), (dreamed, f"dream tau={dream.temperature:g}", dream_len)):
            img = cv2.resize(seq[min(i, len(seq) - 1)], (64 * scale, 64 * scale), interpolation=cv2.INTER_NEAREST)
            img = np.ascontiguousarray(img)
            if i >= len(seq):
                img = (img * 0.4).astype(np.uint8)
            text = f"{label} t={min(i, length)}" + (" END" if i >= len(seq) - 1 else "")
            cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
            panels.append(img)
        frames.append(np.concatenate(panels, 1))
    write_video(frames, out_mp4, fps=35 if wm.env == "doom" else 50)
    return {"real_steps": real_len, "dream_steps": dream_len}


@_stage
def step_video(cfg: WMConfig, ctrl_dir: Path | None = None) -> Path:
    from dreamarcade.world_models.controller import Controller

    run = cfg.resolved_run_dir()
    with input_checks(FileNotFoundError):  # the model and the controller
        wm_dir = _world_model_dir(cfg)
        wm = WorldModel.load(wm_dir, env=cfg.env)
        ctrl_dir = Path(ctrl_dir or cfg.eval_controller or run / "controller")
        check_controller_matches(ctrl_dir, wm_dir)
        ctrl = Controller.load(ctrl_dir)
    out = run / "dream_vs_real.mp4"
    frames = cfg.max_steps + 1 if cfg.max_steps else 700  # the first frame and one per step
    info = dream_vs_real_video(wm, ctrl, out, seed=cfg.seed, temperature=cfg.temperature or None, max_frames=frames,
                               max_steps=cfg.max_steps or None)  # fmt: skip
    print(f"video written to {out} ({info})")
    return out


# ============================================================================================== pipeline
def _done_marker(run: Path, name: str) -> Path:
    return run / "pipeline" / f"{name}.done.json"


# the settings each pipeline step's result depends on, through the steps before it; how a step runs (device,
# threads, workers, backend, time budget) and how many iterations follow it are not among them
_STEP_SETTINGS: dict[str, tuple[str, ...]] = {
    "collect": ("env", "seed", "episodes", "max_steps", "frames_dir", "collect_controller", "explore"),
    "train-vae": ("precision", "vae_epochs", "vae_batch", "vae_lr", "kl_tolerance"),
    "train-mdnrnn": ("rnn_epochs", "rnn_seq_len", "rnn_batch", "rnn_lr", "rnn_lr_min", "rnn_lr_decay",
                     "rnn_grad_clip", "rnn_action_map", "done_pos_weight"),
    "evolve": ("where", "temperature", "popsize", "rollouts", "generations", "sigma_init", "eval_every",
               "eval_rollouts", "controller", "ensemble"),
    "evaluate": ("eval_episodes", "eval_seed", "eval_controller"),
}  # fmt: skip


def _step_settings(cfg: WMConfig, name: str) -> dict[str, Any]:
    """The settings pipeline step ``name``'s done marker records: its own and those of every step before it (the
    iterations' steps come after all five first ones, and depend on ``iter_episodes`` too)."""
    order = list(_STEP_SETTINGS)
    first = name in order
    keys = [k for step in order[: order.index(name) + 1 if first else len(order)] for k in _STEP_SETTINGS[step]]
    keys += [] if first else ["iter_episodes"]
    return json.loads(json.dumps({k: getattr(cfg, k) for k in keys}))


def _run_once(run: Path, name: str, fn: Any, cfg: WMConfig) -> Any:
    """Run ``fn`` unless a marker says it finished (so a killed pipeline resumes where it stopped). A marker written
    with other settings is refused: skipping the step would keep results that are not this run's."""
    marker = _done_marker(run, name)
    settings = _step_settings(cfg, name)
    if marker.exists():
        res = read_json_object(marker)
        done_with = res.pop("_settings", None)  # None: a marker from before settings were recorded
        if done_with is not None and done_with != settings:
            diff = describe_changes(done_with, settings)
            raise CheckpointError(  # one line from the CLI, like the other refusals of a run directory
                f"pipeline step {name} in {run} was done with other settings ({diff}), so its results are not this "
                f"run's. Use a new --run-dir, or delete {marker} and the markers of the steps after it to redo them."
            )
        print(f"[pipeline] {name}: done already, skipping")
        return res
    print(f"[pipeline] {name}")
    res = fn()
    res = res if isinstance(res, dict) else {"path": str(res)}
    atomic_write_text(marker, json.dumps({**res, "_settings": settings}, default=str))
    return res


@_stage
def step_pipeline(cfg: WMConfig) -> dict[str, Any]:
    """collect -> V -> M -> C -> evaluate, then (``--iterations N``) N - 1 rounds of the paper's iterative procedure."""
    from dreamarcade.world_models.collect import collect
    from dreamarcade.world_models.rollouts import encode_shards
    from dreamarcade.world_models.vae import ConvVAE

    run = cfg.resolved_run_dir()
    with input_checks():  # settings only evolve reads: refused before hours of collecting and training
        _check_ensemble(cfg)
    results: dict[str, Any] = {}
    # --explore is for the iterations' collects with a controller; the first one is random unless a controller is given
    first = cfg if cfg.collect_controller else dataclasses.replace(cfg, explore=0.0)
    results["collect"] = _run_once(run, "collect", lambda: step_collect(first), cfg)
    results["train-vae"] = _run_once(run, "train-vae", lambda: step_train_vae(cfg), cfg)
    results["train-mdnrnn"] = _run_once(run, "train-mdnrnn", lambda: step_train_mdnrnn(cfg), cfg)
    results["evolve"] = _run_once(run, "evolve", lambda: step_evolve(cfg), cfg)
    results["evaluate"] = _run_once(run, "evaluate", lambda: step_evaluate(cfg), cfg)
    for it in range(1, cfg.iterations):
        tag = f"_iter{it}"
        prev_ctrl = run / ("controller" if it == 1 else f"controller_iter{it - 1}")

        def new_data(tag: str = tag, prev_ctrl: Path = prev_ctrl, it: int = it) -> dict:
            s = collect(cfg.env, run / f"frames{tag}", cfg.iter_episodes, workers=cfg.workers or None,
                        seed=cfg.seed + 7919 * it, backend=cfg.backend, policy_dir=str(run / "world_model"),
                        max_steps=cfg.max_steps or None,
                        controller_dir=str(prev_ctrl), progress=True, explore=cfg.explore)  # fmt: skip
            vae = ConvVAE.load(run / "vae")
            dev = resolve_device(cfg.device)
            encode_shards(run / f"frames{tag}", run / f"series{tag}", encoder(vae.to(dev), cfg.precision, dev))
            return s

        results[f"collect{tag}"] = _run_once(run, f"collect{tag}", new_data, cfg)
        results[f"train-mdnrnn{tag}"] = _run_once(
            run, f"train-mdnrnn{tag}", lambda tag=tag: step_train_mdnrnn(cfg, tag, warm_start=run / "mdnrnn"), cfg
        )
        results[f"evolve{tag}"] = _run_once(
            run, f"evolve{tag}", lambda tag=tag: step_evolve(cfg, f"controller{tag}"), cfg
        )
        results[f"evaluate{tag}"] = _run_once(
            run, f"evaluate{tag}", lambda tag=tag: step_evaluate(cfg, run / f"controller{tag}"), cfg
        )
    return results


# ============================================================================================== demo
@releases_run_dirs
def step_demo(cfg: WMConfig) -> dict[str, Any]:
    """Bundled DreamDoom-v0 weights: evolve C in the dream for a few minutes, run it in the real game, film both."""
    from dreamarcade.world_models.model import bundled_dir

    cfg = dataclasses.replace(cfg, env="doom", run_dir=cfg.run_dir or "runs/dreams/demo")
    run = cfg.resolved_run_dir()
    claim_run_dir(run)  # before its old evolution is cleared below
    # the demo evolves in the bundled dream and clears its run dir's evolution: never in a trained run
    with input_checks():
        trained = [n for n in ("world_model", "vae", "mdnrnn") if (run / n).exists()]
        trained += [p.name for p in run.glob("frames*")]
        if trained:
            raise ValueError(
                f"'{run}' holds a pipeline run ({', '.join(sorted(trained))}); the demo would evolve in the bundled "
                "dream, not in that run's world model, and replace its controller. Use another --run-dir (default "
                "runs/dreams/demo), or `world_models evolve --run-dir` to evolve in this run's dream."
            )
    for stale in ("controller_cma", "logs_controller", "pipeline"):  # a demo always starts a fresh evolution
        p = run / stale
        if p.exists():
            import shutil

            shutil.rmtree(p)
    wm_dir = bundled_dir("doom")
    print(f"World model: {wm_dir} (bundled DreamDoom-v0 weights)")
    t0 = time.time()
    demo_cfg = dataclasses.replace(cfg, run_dir=str(run), eval_every=0)
    # evolve inside the bundled dream (step_evolve falls back to the bundled weights when run has no world model)
    ctrl_dir = step_evolve(demo_cfg)
    evolve_s = time.time() - t0
    from dreamarcade.world_models.controller import Controller

    ctrl = Controller.load(ctrl_dir)
    wm = WorldModel.load(wm_dir, env="doom")
    tau = cfg.temperature or wm.temperature
    dream_scores = dream_returns(wm, ctrl, ctrl.params[None], 64, tau, seed=4242, max_steps=cfg.max_steps or None)[0]
    t1 = time.time()
    workers = cfg.workers or os.cpu_count() or 1
    real = evaluate_real("doom", wm_dir, ctrl.params, ctrl, cfg.eval_episodes, workers, seed=cfg.eval_seed,
                         max_steps=cfg.max_steps, backend=cfg.backend)  # fmt: skip
    rand = evaluate_real("doom", wm_dir, None, ctrl, cfg.eval_episodes, workers, seed=cfg.eval_seed,
                         max_steps=cfg.max_steps)  # fmt: skip
    eval_s = time.time() - t1
    frames = cfg.max_steps + 1 if cfg.max_steps else 700  # the first frame and one per step
    video = dream_vs_real_video(wm, ctrl, run / "dream_vs_real.mp4", seed=cfg.seed, temperature=tau, max_frames=frames,
                                max_steps=cfg.max_steps or None)  # fmt: skip
    scores = {
        "temperature": tau,
        "generations": int(load_checkpoint(ctrl_dir)[1]["generations"]),
        "popsize": cfg.popsize, "rollouts_per_candidate": cfg.rollouts, "evolve_seconds": round(evolve_s, 1),
        "dream_mean": float(dream_scores.mean()), "dream_std": float(dream_scores.std()), "dream_episodes": 64,
        "real_mean": float(real.mean()), "real_std": float(real.std()), "real_episodes": len(real),
        "eval_seed": cfg.eval_seed, "random_mean": float(rand.mean()), "random_std": float(rand.std()),
        "eval_seconds": round(eval_s, 1), "video": str(run / "dream_vs_real.mp4"), **video,
    }  # fmt: skip
    atomic_write_text(run / "scores.json", json.dumps(scores, indent=2))
    print(
        f"\nDream demo ({time.time() - t0:.0f}s): controller evolved {scores['generations']} generations inside "
        f"DreamDoom-v0 (tau={tau}).\n"
        f"  dream:       {dream_scores.mean():.0f} +- {dream_scores.std():.0f} steps over 64 dreams\n"
        f"  real game:   {real.mean():.0f} +- {real.std():.0f} steps over {len(real)} episodes\n"
        f"  random:      {rand.mean():.0f} +- {rand.std():.0f} steps over {len(rand)} episodes\n"
        f"  video:       {run / 'dream_vs_real.mp4'}\n  CMA-ES curve: {run / 'controller_cma_curve.png'}\n"
        f"  scores:      {run / 'scores.json'}"
    )
    return scores


# ============================================================================================== bundle
def _model_identity(model_dir: Path) -> tuple[Any, ...]:
    """What makes two world model folders the same model: V and M (:func:`world_model_fingerprint`), the dream's
    start states (initial_z) and world_model.json (temperature, step cap), which the fingerprint leaves out."""
    try:
        meta = model_dir / "world_model.json"
        return (
            world_model_fingerprint(model_dir),
            weights_sha256(model_dir / "initial_z"),
            read_json_object(meta) if meta.is_file() else None,
        )
    except CheckpointError as err:  # a copy cut off mid-write (from before copies were staged): matches nothing
        return ("unreadable", str(err))


def copy_world_model(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> bool:
    """Copy the world model folder ``src`` to ``dest``, for a run that evolves and scores in a copy of its own.

    A ``dest`` an earlier call made from the same model is kept (a rerun continues in it); one that holds another
    model is refused (CheckpointError), as the run would evolve in it and not in ``src``. The copy is made in a
    staging folder and renamed, so a cut-off copy is never taken for a finished one. Returns whether it copied.
    """
    src, dest = check_world_model_dir(src), Path(dest)  # a mistyped src was a bare FileNotFoundError of the copy
    if dest.exists():
        if _model_identity(dest) != _model_identity(src):
            raise CheckpointError(
                f"{dest} (copied by an earlier run, which evolves and scores in it) holds another world model than "
                f"{src}: use another output folder, or delete {dest} to start over from {src}."
            )
        return False
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    staging.rename(dest)
    return True


def _claim_bundle_dest(dest: Path) -> None:
    """Make this process the only one bundling into ``dest`` (two would share its staging folder).

    The claim (:func:`~dreamarcade.baselines.common.claim_run_dir`) is taken on a folder of the temp directory named
    after ``dest``'s absolute path, not in ``dest`` or beside it: a lock file there would ship with the package.
    """
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:16]
    user = os.getuid() if hasattr(os, "getuid") else "user"  # one folder per user: another's would not be writable
    lock_dir = Path(tempfile.gettempdir()) / f"dreamarcade-bundles-{user}" / key
    try:
        claim_run_dir(lock_dir)
    except RunDirBusyError as busy:
        raise RunDirBusyError(
            f"another bundle into {dest} is running (pid {busy.holder}): wait for it to end, then run `world_models "
            "bundle` again (the command always bundles into the package's assets; step_bundle(cfg, dest=...) in "
            "Python bundles into another folder)."
        ) from None


@_stage  # releases the destination's claim with the run directory's when the bundle is done
def step_bundle(cfg: WMConfig, dest: str | os.PathLike[str] | None = None) -> Path:
    """Copy the run's world model (float16, to keep the package small) and its controller (``--eval-controller``,
    default ``run/controller``, which must have been evolved in that world model) into dreamarcade/assets (or
    ``dest``). The new bundle is written beside the old one and swapped in at the end, so a failed or killed
    bundle leaves the shipped weights whole; files of the old bundle that it does not write (the model card) stay.
    One process at a time may bundle into a destination (a second gets RunDirBusyError)."""
    import shutil

    from dreamarcade.world_models.controller import Controller
    from dreamarcade.world_models.model import bundled_dir

    run = cfg.resolved_run_dir()
    with input_checks(FileNotFoundError):  # before anything in the package is replaced
        wm = WorldModel.load(run / "world_model", env=cfg.env)
        ctrl_dir = Path(cfg.eval_controller or run / "controller")
        if cfg.eval_controller and not checkpoint_exists(ctrl_dir):  # a typo would ship no controller at all
            raise CheckpointError(
                f"--eval-controller '{ctrl_dir}' holds no complete controller checkpoint: pass the folder `evolve` "
                "wrote (e.g. run/controller or run/controller_best), or leave it out to bundle run/controller."
            )
        if checkpoint_exists(ctrl_dir):
            check_controller_matches(ctrl_dir, run / "world_model")  # before anything in the package is replaced
    dest = Path(dest) if dest is not None else bundled_dir(cfg.env)
    _claim_bundle_dest(dest)  # before the staging folder of a stopped bundle is cleared
    staging, old = dest.parent / f".{dest.name}.bundling", dest.parent / f".{dest.name}.old"
    if old.exists() and not dest.exists():  # stopped between the two renames below: the old bundle goes back first
        os.replace(old, dest)
    for leftover in (staging, old):  # from a bundle that was stopped
        if leftover.exists():
            shutil.rmtree(leftover)
    replaced = ("vae", "mdnrnn", "initial_z", "controller")
    if dest.exists():
        shutil.copytree(dest, staging, ignore=lambda d, names: [n for n in names if Path(d) == dest and n in replaced])
    wm.save(staging, half=True)
    if checkpoint_exists(ctrl_dir):
        Controller.load(ctrl_dir).save(staging / "controller", extra={"source": str(ctrl_dir)})
    if dest.exists():
        os.replace(dest, old)
    os.replace(staging, dest)
    if old.exists():
        shutil.rmtree(old)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"bundled {run / 'world_model'} into {dest} ({size / 2**20:.1f} MiB)")
    return dest


# ============================================================================================== CLI
_DEMO_DEFAULTS = {"popsize": 32, "rollouts": 4, "generations": 1000, "time_budget": 150.0, "eval_episodes": 6}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dreamarcade.baselines world_models",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "demo runs with its own presets where a flag is not given: "
            + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in _DEMO_DEFAULTS.items())
            + "; it always uses --env doom and no evaluation during evolution (--eval-every 0), and its run "
            "directory defaults to runs/dreams/demo. Example: python -m dreamarcade.baselines world_models demo"
        ),
    )
    parser.add_argument("step", choices=STEPS, help="pipeline step to run")
    # a flag not given is None: main() lays the flags given over the step's presets (demo) and the defaults
    add_dataclass_args(parser, WMConfig, exclude=("extra",), given_only=True)
    parser.add_argument("--resume", action="store_true", help="continue from the run's checkpoints (always on)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("step", "resume") and v is not None}
    if args.step == "demo":
        overrides = {**_DEMO_DEFAULTS, **overrides}
    steps = {
        "collect": step_collect, "train-vae": step_train_vae, "train-mdnrnn": step_train_mdnrnn,
        "evolve": step_evolve, "evaluate": step_evaluate, "video": step_video, "pipeline": step_pipeline,
        "demo": step_demo, "bundle": step_bundle, "calibrate-done": step_calibrate_done,
    }  # fmt: skip
    try:
        with input_checks():  # counts no step can run with are refused before anything is set up
            if args.step == "demo" and overrides.get("env", "doom") != "doom":
                raise ValueError(
                    f"demo runs the bundled DreamDoom-v0 model only, got --env {overrides['env']}: drop --env, or "
                    "run the pipeline steps for another env"
                )
            cfg = WMConfig(**overrides)
            cfg.validate()
        flush_denormals()
        torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        steps[args.step](cfg)  # each step claims its run directory (_stage); the demo claims its own
    except StageStopped as exc:  # not an error: the state is saved
        print(f"{exc}; run the same command again to continue.", file=sys.stderr)
        return 130
    except Exception as exc:
        return input_error_status(exc)  # bad input: the message, not a traceback
    return 0


if __name__ == "__main__":
    sys.exit(main())
