"""Record real ALE gameplay with its real sound into "uploaded" videos, each with its own domain shift.

This makes the video-imitation pillar self-contained: instead of downloading YouTube videos, replay
action sequences in the emulator (60 Hz, every frame's image and its 512 ``sound_obs`` samples, i.e.
30,720 Hz audio) and write them as mp4/webm/mkv files the way different uploaders would have:
an :class:`UploaderStyle` sets colour/palette shift, resolution and aspect ratio, letter- or pillar-boxing,
an overlay (a channel watermark and a running timer), frame rate, compression and a start offset
(an intro card before the gameplay starts). Styles are drawn reproducibly from a seed.

Trajectories from :mod:`dreamarcade.envs.montezuma_search` may begin with a seeded run of NOOPs (their
``start_delay``: the player started at a different moment, so the skull is at a different phase); by default
the recording starts when the player starts (``skip_steps``), like an uploader who hits record and plays.

Example:
    >>> import os, tempfile
    >>> from dreamarcade.reward_models.demo_videos import UploaderStyle, record_demo
    >>> from dreamarcade.reward_models.video import probe_video
    >>> style = UploaderStyle.sample(seed=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "demo." + style.container)
    >>> meta = record_demo([0] * 10 + [3] * 20, path, style)  # 30 agent steps: 2 s of play after the intro
    >>> probe_video(path).has_audio, meta["agent_steps"]
    (True, 30)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from dreamarcade.checkpoint import atomic_write_text
from dreamarcade.errors import check_count, given_flags, input_checks, input_error_status, require

__all__ = ["UploaderStyle", "apply_style", "record_demo", "render_gameplay", "write_av"]

ALE_FPS = 60
ALE_AUDIO_RATE = 512 * ALE_FPS  # ale-py's sound_obs: 512 samples per emulator frame
FRAMESKIP_ALE = 4  # emulator frames per agent step of the searched trajectories
CONTAINERS = {  # container -> (video codec, audio codec, audio rate the codec accepts)
    "mp4": ("libx264", "aac", 44100),
    "webm": ("libvpx-vp9", "libopus", 48000),
    "mkv": ("libx264", "flac", 44100),
}


@dataclass(frozen=True)
class UploaderStyle:
    """How one "uploader" recorded the game: every knob of the domain shift between videos and the ALE.

    Example (a 320x240 uploader whose letter-box bands take 20% of the height):
        >>> import numpy as np
        >>> from dreamarcade.reward_models.demo_videos import UploaderStyle, apply_style
        >>> style = UploaderStyle(width=320, height=240, box="letter", box_fraction=0.2)
        >>> shown = apply_style(np.full((210, 160, 3), 255, np.uint8), style)  # a white ALE frame
        >>> shown.shape, int(shown[:24].max()), int(shown[24:216].min()), int(shown[216:].max())
        ((240, 320, 3), 0, 255, 0)
        >>> UploaderStyle.sample(seed=3) == UploaderStyle.sample(seed=3)  # drawn reproducibly
        True
    """

    width: int = 640
    height: int = 480
    box: str = "none"  # "none" | "letter" (bands top/bottom) | "pillar" (bands left/right)
    box_fraction: float = 0.0  # fraction of the frame the bands take in total
    hue_shift: int = 0  # OpenCV hue units (0-179)
    saturation: float = 1.0
    brightness: float = 0.0  # added to V (0-255 scale)
    contrast: float = 1.0
    gamma: float = 1.0
    overlay: str = "none"  # "none" | "watermark" | "timer" | "both"
    fps: float = 30.0
    crf: int = 23  # compression (H.264/VP9 quality; higher = worse)
    start_offset_s: float = 0.0  # seconds of intro card before gameplay
    container: str = "mp4"

    def __post_init__(self) -> None:
        # an unknown box or overlay was silently none; an unknown container failed after the sidecar JSON was written
        choices = {"box": ("none", "letter", "pillar"), "overlay": ("none", "watermark", "timer", "both")}
        choices["container"] = tuple(CONTAINERS)
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"UploaderStyle.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0.0 <= self.box_fraction < 1.0:
            raise ValueError(f"UploaderStyle.box_fraction must be in [0, 1), got {self.box_fraction!r}")
        for name in ("width", "height"):
            check_count(f"UploaderStyle.{name}", getattr(self, name))
        boxed = {"letter": ("height", self.height), "pillar": ("width", self.width)}.get(self.box)
        if boxed is not None and round(boxed[1] * (1 - self.box_fraction)) < 2:
            raise ValueError(
                f"UploaderStyle.box_fraction={self.box_fraction!r} leaves fewer than 2 of the {boxed[1]} px of "
                f"{boxed[0]} for the game inside the {self.box}-box: use a smaller box_fraction"
            )
        if not (math.isfinite(self.fps) and self.fps > 0) or not (
            math.isfinite(self.start_offset_s) and self.start_offset_s >= 0
        ):
            raise ValueError(
                f"UploaderStyle.fps must be > 0 and start_offset_s >= 0, got {self.fps!r} and {self.start_offset_s!r}"
            )
        if isinstance(self.crf, bool) or not isinstance(self.crf, numbers.Integral) or not 0 <= self.crf <= 51:
            raise ValueError(f"UploaderStyle.crf must be an integer from 0 to 51 (H.264's scale), got {self.crf!r}")

    @staticmethod
    def sample(seed: int) -> UploaderStyle:
        """A random but reproducible style: same seed, same style (and the same pixels in the file)."""
        rng = np.random.default_rng(seed)
        aspect = [(640, 480), (854, 480), (480, 360), (320, 240), (400, 300), (720, 405)]
        w, h = aspect[int(rng.integers(len(aspect)))]
        box = str(rng.choice(["none", "letter", "pillar"]))
        return UploaderStyle(
            width=w,
            height=h,
            box=box,
            box_fraction=0.0 if box == "none" else float(rng.uniform(0.08, 0.25)),
            hue_shift=int(rng.integers(-12, 13)),
            saturation=float(rng.uniform(0.6, 1.3)),
            brightness=float(rng.uniform(-25, 25)),
            contrast=float(rng.uniform(0.8, 1.2)),
            gamma=float(rng.uniform(0.75, 1.35)),
            overlay=str(rng.choice(["none", "watermark", "timer", "both"])),
            fps=float(rng.choice([24.0, 25.0, 30.0, 60.0])),
            crf=int(rng.integers(20, 36)),
            start_offset_s=float(np.round(rng.uniform(0.0, 3.0), 2)),
            container=str(rng.choice(list(CONTAINERS))),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def render_gameplay(actions: list[int], frameskip: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Replay ``actions`` (agent steps of ``frameskip`` emulator frames) and return every emulator frame.

    Returns (frames (T, 210, 160, 3) uint8 at 60 Hz, mono audio float32 in [-1, 1] at 30,720 Hz, score).
    """
    from dreamarcade.envs.montezuma_search import make_montezuma

    env = make_montezuma(frameskip=1, sound=True)
    obs, _ = env.reset(seed=seed)
    # the reset observation's sound is all zeros, which is a full-scale -1 on the 128-centred PCM: silence instead
    first_sound = obs["sound"] if obs["sound"].any() else np.full_like(obs["sound"], 128)
    frames, sound = [obs["image"]], [first_sound]
    score = 0.0
    for a in actions:
        for _ in range(frameskip):  # frameskip=1 stepping repeated 4 times == the v5 env's frameskip 4
            obs, r, term, trunc, _ = env.step(int(a))
            score += float(r)
            frames.append(obs["image"])
            sound.append(obs["sound"])
            if term or trunc:
                break
        if term or trunc:
            break
    env.close()
    audio = (np.concatenate(sound).astype(np.float32) - 128.0) / 128.0  # uint8 PCM, silence = 128
    return np.stack(frames), audio, score


def apply_style(frame: np.ndarray, style: UploaderStyle, t: float = 0.0, rng_seed: int = 0) -> np.ndarray:
    """Turn one 210x160 ALE frame into what the uploader's video shows at time ``t``."""
    import cv2

    img = frame.astype(np.float32)
    # contrast/brightness/gamma in RGB, then hue/saturation in HSV: a palette shift like a capture card's
    img = np.clip((img - 128.0) * style.contrast + 128.0 + style.brightness, 0, 255)
    img = 255.0 * (img / 255.0) ** style.gamma
    hsv = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + style.hue_shift) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * style.saturation, 0, 255)
    img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    W, H = style.width, style.height
    gw, gh = W, H
    if style.box == "letter":
        gh = int(round(H * (1 - style.box_fraction)))
    elif style.box == "pillar":
        gw = int(round(W * (1 - style.box_fraction)))
    game = cv2.resize(img, (gw, gh), interpolation=cv2.INTER_NEAREST if gw >= 320 else cv2.INTER_AREA)
    out = np.zeros((H, W, 3), np.uint8)
    y0, x0 = (H - gh) // 2, (W - gw) // 2
    out[y0 : y0 + gh, x0 : x0 + gw] = game
    scale = max(0.35, W / 900)
    if style.overlay in ("watermark", "both"):
        # a semi-transparent channel logo in the game area, like a streamer's watermark
        overlay = out.copy()
        x1, y1 = x0 + int(gw * 0.62), y0 + int(gh * 0.04)
        cv2.rectangle(overlay, (x1, y1), (x1 + int(gw * 0.33), y1 + int(gh * 0.08)), (230, 230, 230), -1)
        cv2.putText(overlay, f"retro{rng_seed}", (x1 + 4, y1 + int(gh * 0.065)), 0, scale, (20, 20, 160), 1)
        out = cv2.addWeighted(overlay, 0.45, out, 0.55, 0)
    if style.overlay in ("timer", "both"):
        cv2.putText(out, f"{t:6.2f}", (x0 + 6, y0 + gh - 8), 0, scale, (255, 255, 0), 1)
    return out


def _intro_card(style: UploaderStyle, seed: int) -> np.ndarray:
    import cv2

    card = np.full((style.height, style.width, 3), (40 + seed * 37 % 120, 30, 90), np.uint8)
    cv2.putText(card, "MONTEZUMA RUN", (20, style.height // 2), 0, max(0.5, style.width / 700), (255, 255, 255), 2)
    return card


def _seconds(packet: Any) -> float:
    """An encoded packet's presentation time in seconds (0 if it has none)."""
    return float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else 0.0


def write_av(
    path: str | os.PathLike[str],
    frames: Any,
    fps: float,
    audio: np.ndarray | None = None,
    audio_rate: int = ALE_AUDIO_RATE,
    container: str | None = None,
    crf: int = 23,
    size: tuple[int, int] | None = None,
) -> Path:
    """Encode RGB frames (an iterable of (H, W, 3) uint8) and optional mono audio into a video file.

    The container comes from ``container`` or the file suffix (mp4: H.264 + AAC, webm: VP9 + Opus,
    mkv: H.264 + FLAC). Written to a temporary name and renamed, so a crash never leaves half a video.
    ``size`` (width, height) sets the picture size (default: the first frame's); smaller frames are padded with
    black at the bottom and right, as is an odd width or height (H.264 in yuv420p needs even ones). Frames are
    never scaled: one larger than the picture is an error. ``crf`` is the compression on H.264's 0-51 scale (higher:
    smaller and worse); webm's VP9 gets ``crf + 10``, about the same quality on its 0-63 scale.
    """
    av = require("av", "writing demonstration videos", extra="video")
    path = Path(path)
    kind = container or path.suffix.lstrip(".")
    if kind not in CONTAINERS:
        raise ValueError(f"unsupported container '{kind}': use one of {sorted(CONTAINERS)}")
    vcodec, acodec, arate = CONTAINERS[kind]
    if not (math.isfinite(fps) and fps > 0):  # PyAV wrote 0 as its default 24 fps, and failed on a negative rate
        raise ValueError(f"write_av: fps must be a finite number > 0, got {fps!r}")
    if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= crf <= 51:
        raise ValueError(f"write_av: crf must be an integer from 0 (lossless) to 51 (H.264's scale), got {crf!r}")
    if audio is not None:
        audio = np.asarray(audio)
        if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.number):
            raise ValueError(f"write_av: audio must be one mono channel (T,) of samples, got {audio.shape}")
        if not np.isfinite(audio).all():  # the encoder failed with "avcodec_send_frame() returned 22"
            raise ValueError("write_av: the audio has NaN or infinite samples; pass samples in [-1, 1]")
        check_count("audio_rate", audio_rate, hint=" (samples per second)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.{kind}")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0 or abs(rate - Fraction(fps)) > Fraction(fps) / 1000:  # PyAV took 0 as its default 24 fps
        raise ValueError(f"write_av: fps {fps!r} has no rate with a denominator up to 1001 within 0.1%")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("write_av got no frames")
    h, w = first.shape[:2] if size is None else (size[1], size[0])
    try:
        with av.open(str(tmp), mode="w", format={"mkv": "matroska"}.get(kind, kind)) as out:
            vs = out.add_stream(vcodec, rate=rate)
            vs.width, vs.height, vs.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
            vs.options = (
                {"crf": str(crf)} if vcodec == "libx264" else {"crf": str(crf + 10), "b": "0", "deadline": "realtime"}
            )
            astream = None
            if audio is not None:
                astream = out.add_stream(acodec, rate=arate)
                astream.layout = "mono"

            def put(img: np.ndarray) -> None:
                img = np.asarray(img)
                if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:  # a cast wrapped or zeroed them
                    raise ValueError(
                        f"write_av: frames must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}; convert floats "
                        "in [0, 1] with (frame * 255).round().astype(np.uint8)"
                    )
                img = np.ascontiguousarray(img)
                if img.shape[0] > vs.height or img.shape[1] > vs.width:
                    raise ValueError(
                        f"write_av: a {img.shape[1]}x{img.shape[0]} frame does not fit the {vs.width}x{vs.height} "
                        "video (frames are padded, never scaled). Pass a larger size=(width, height) or resize them."
                    )
                if img.shape[:2] != (vs.height, vs.width):
                    img = np.pad(img, ((0, vs.height - img.shape[0]), (0, vs.width - img.shape[1]), (0, 0)))
                for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    mux_audio_until(_seconds(pkt))
                    out.mux(pkt)

            def audio_packets() -> Iterator[Any]:
                if astream is None:
                    return
                resampler = av.AudioResampler(format=astream.codec_context.format.name, layout="mono", rate=arate)
                pcm = np.clip(audio, -1, 1).astype(np.float32)
                block = 4096
                pts = 0
                for i in range(0, len(pcm), block):
                    frame = av.AudioFrame.from_ndarray(pcm[None, i : i + block], format="flt", layout="mono")
                    frame.sample_rate = audio_rate
                    frame.pts = pts
                    pts += frame.samples
                    for rf in resampler.resample(frame):
                        yield from astream.encode(rf)
                for rf in resampler.resample(None):
                    yield from astream.encode(rf)
                yield from astream.encode(None)

            # the audio is muxed between the video packets, up to each one's time: an mkv or webm written with all
            # the video first made a player (or a stream) load most of the file before any sound
            pending = audio_packets()
            waiting = [next(pending, None)]

            def mux_audio_until(t: float) -> None:
                while waiting[0] is not None and _seconds(waiting[0]) <= t:
                    out.mux(waiting[0])
                    waiting[0] = next(pending, None)

            put(first)
            for img in it:
                put(img)
            for pkt in vs.encode():
                mux_audio_until(_seconds(pkt))
                out.mux(pkt)
            mux_audio_until(math.inf)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind
        raise
    os.replace(tmp, path)
    return path


def record_demo(
    actions: list[int],
    path: str | os.PathLike[str],
    style: UploaderStyle,
    style_seed: int = 0,
    with_audio: bool = True,
    skip_steps: int = 0,
) -> dict[str, Any]:
    """Replay ``actions`` in Montezuma's Revenge and write the uploader's video (with the game's sound).

    The first ``skip_steps`` agent steps are played but not recorded (the trajectory's start delay: the
    recording starts when the player starts). Returns a JSON-able description (style, frames, score, source
    frame offset) written next to the video.
    """
    if not 0 <= skip_steps < len(actions):
        raise ValueError(
            f"skip_steps must be in [0, {len(actions)}) (the trajectory's length), got {skip_steps}: the video would "
            "hold no gameplay (a search that found nothing returns only its start delay)"
        )
    frames60, audio60, score = render_gameplay(actions)
    # frame 4 * skip_steps is the screen after the last skipped step; its sound follows it
    frames60 = frames60[FRAMESKIP_ALE * skip_steps :]
    audio60 = audio60[FRAMESKIP_ALE * skip_steps * (ALE_AUDIO_RATE // ALE_FPS) :]
    fps = style.fps
    n_intro = int(round(style.start_offset_s * fps))
    # in exact fractions: len * fps / 60 in floats is 244.999... for 245 frames at 60 fps, and floor lost the last
    n_game = math.floor(Fraction(len(frames60)) * Fraction(fps) / ALE_FPS)
    if n_game + n_intro == 0:  # checked before the sidecar is written: a sidecar without its video
        raise ValueError(
            f"at {fps:g} fps the {len(frames60)} recorded frames ({len(frames60) / ALE_FPS:.2f} s) give no video "
            "frame: use a higher fps or a longer trajectory"
        )
    card = _intro_card(style, style_seed)

    def gen() -> Any:
        for _ in range(n_intro):
            yield card
        for k in range(n_game):
            src = min(int(k * ALE_FPS / fps), len(frames60) - 1)
            yield apply_style(frames60[src], style, t=k / fps, rng_seed=style_seed)

    audio = None
    if with_audio:
        lead = np.zeros(int(round(n_intro / fps * ALE_AUDIO_RATE)), np.float32)
        audio = np.concatenate([lead, audio60[: math.floor(n_game * ALE_AUDIO_RATE / Fraction(fps))]])
    path = Path(path)
    meta = {
        "style": style.to_json(),
        "style_seed": style_seed,
        "score": score,
        "agent_steps": len(actions),
        "skipped_steps": skip_steps,
        "intro_frames": n_intro,
        "gameplay_start_s": n_intro / fps,
        "with_audio": with_audio,
    }
    # the sidecar first (build_reward reads its gameplay start): a video never exists without it, even after a kill
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    write_av(path, gen(), fps, audio=audio, container=style.container, crf=style.crf)
    return meta


def _refuse_other_containers(
    p: argparse.ArgumentParser, out: Path, pairs: list[tuple[int, int]], n: int, seed: int
) -> None:
    """A rerun into a used --out with another --seed writes demo_<i> in another container, next to the old one,
    and replaces the sidecar they share: the README's ``demo_<i>.[mw]*`` then picks both. Refuse it."""
    if pairs:
        return
    stale = sorted(
        str(old)
        for i in range(n)
        for old in out.glob(f"demo_{i}.*")
        if old.suffix in (".mp4", ".webm", ".mkv") and old.suffix[1:] != UploaderStyle.sample(seed * 1000 + i).container
    )
    if stale:
        p.error(
            f"{out} holds videos of another run ({', '.join(stale)}) that this one would not replace but pair with "
            "its own sidecars: use another --out, or delete them"
        )


def main(argv: list[str] | None = None) -> int:
    """CLI: find Montezuma trajectories (or load them) and record one styled video per trajectory."""
    from dreamarcade.baselines.common import check_folder_path
    from dreamarcade.envs.montezuma_search import (
        DEFAULT_MAX_START_DELAY,
        draw_start_delay,
        go_explore,
        load_start_delays,
        load_trajectories,
        reached_target,
        replay,
        save_trajectories,
    )

    p = argparse.ArgumentParser(
        prog="python -m dreamarcade.reward_models.demo_videos",
        description="Record Montezuma's Revenge demonstration videos with per-uploader domain shifts.",
        allow_abbrev=False,
    )
    p.add_argument("--out", default="runs/imitation/videos", help="output folder")
    p.add_argument("--n", type=int, default=4, help="number of videos (3 train the embedding, 1 defines the reward)")
    p.add_argument("--trajectories", default=None, help="JSON from montezuma_search; searched for if absent")
    p.add_argument("--search-steps", type=int, default=400_000)
    p.add_argument("--seed", type=int, default=0, help="seed of the searches and of the styles")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument(
        "--max-start-delay",
        type=int,
        default=DEFAULT_MAX_START_DELAY,
        help="when searching: seeded NOOP start delay in [0, this) per trajectory (see montezuma_search)",
    )
    p.add_argument(
        "--record-start-delay",
        action="store_true",
        help="also record the trajectory's leading NOOPs (default: the video starts when the player starts)",
    )
    p.add_argument(
        "--pairs",
        nargs="*",
        default=None,
        help="TRAJ:STYLE_SEED pairs, e.g. 0:10 1:11 3:13 3:14; writes traj{T}_style{S}.<container> (default: "
        "trajectory i with style seed*1000+i as demo_{i})",
    )
    args = p.parse_args(argv)
    if args.trajectories and not Path(args.trajectories).is_file():  # a typo must not start a 400k-step search
        p.error(f"--trajectories {args.trajectories}: no such file (omit the option to search for new trajectories)")
    searching = sorted(given_flags(p, argv) & {"search_steps", "max_start_delay"})
    if args.trajectories and searching:  # they set the searches, which a trajectory file replaces
        flags = " and ".join(f"--{f.replace('_', '-')}" for f in searching)
        p.error(
            f"{flags} set the searches, which --trajectories replaces: leave {'them' if searching[1:] else 'it'} out"
        )
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    if args.n < 1 or args.max_start_delay < 0:
        p.error(
            f"--n must be >= 1 and --max-start-delay >= 0, got --n {args.n} --max-start-delay {args.max_start_delay}"
        )
    if args.search_steps < 1 and not args.trajectories:  # a search of no steps finds no gameplay, after the writes
        p.error(f"--search-steps must be >= 1 (agent steps per search), got {args.search_steps}")
    pairs = []
    for spec in args.pairs or []:
        parts = spec.split(":")
        if len(parts) != 2 or not all(x.isdigit() for x in parts):
            p.error(f"--pairs takes TRAJ:STYLE_SEED pairs of non-negative integers (e.g. 0:10), got {spec!r}")
        pairs.append((int(parts[0]), int(parts[1])))
    out = Path(args.out)
    try:  # a file, or under one: mkdir's traceback before
        check_folder_path(out, "--out")
    except NotADirectoryError as exc:
        p.error(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    _refuse_other_containers(p, out, pairs, args.n, args.seed)  # before any search or recording
    if args.trajectories:
        try:
            with input_checks():  # not JSON, or not a trajectory file: one line naming the file
                trajs = load_trajectories(args.trajectories)
                delays = load_start_delays(args.trajectories)
        except Exception as exc:
            return input_error_status(exc, parser=p)
    else:
        if any(ti >= args.n for ti, _ in pairs):  # before the searches: --n of them will be found
            p.error(
                f"--pairs names trajectory {max(ti for ti, _ in pairs)}, but --n {args.n} searches 0 to {args.n - 1}"
            )
        results = []
        for i in range(args.n):
            results.append(
                go_explore(
                    seed=args.seed + i,
                    max_steps=args.search_steps,
                    progress=True,
                    start_delay=draw_start_delay(args.seed + i, args.max_start_delay),
                )
            )
            save_trajectories(out / "trajectories.json", results)  # after each search: a kill loses one at most
        short = [r.seed for r in results if not reached_target(r, 400.0)]  # go_explore's default target
        if short:  # recorded anyway (the file is kept), but they are no key + door + room exit demonstrations
            print(
                f"warning: the searches of seeds {short} did not reach a score of 400 and leave the first room in "
                f"--search-steps {args.search_steps}; search them longer with python -m "
                "dreamarcade.envs.montezuma_search --resume",
                file=sys.stderr,
            )
        trajs = [r.actions for r in results]
        delays = [r.start_delay for r in results]
    if args.record_start_delay:
        delays = [0] * len(trajs)
    if any(ti >= len(trajs) for ti, _ in pairs):
        worst = max(ti for ti, _ in pairs)
        p.error(f"--pairs names trajectory {worst}, but there are {len(trajs)} (0 to {len(trajs) - 1})")
    if not pairs and args.n > len(trajs):  # the pipeline's next steps name demo_0 .. demo_<n-1>
        p.error(
            f"--n {args.n} asks for {args.n} videos, but {args.trajectories} holds {len(trajs)} trajectories: pass "
            f"--n {len(trajs)} or a file with more trajectories"
        )
    for ti in sorted({ti for ti, _ in pairs}) if pairs else range(args.n):
        if len(trajs[ti]) <= delays[ti]:  # a failed search keeps only its start delay's NOOPs
            where = args.trajectories or out / "trajectories.json"
            p.error(
                f"trajectory {ti} of {where} has no gameplay after its {delays[ti]}-step start delay (its search "
                "found nothing): search again with more --search-steps, or leave it out with --pairs"
            )
    if pairs:
        for ti, si in pairs:
            style = UploaderStyle.sample(si)
            path = out / f"traj{ti}_style{si}.{style.container}"
            meta = record_demo(
                trajs[ti], path, style, style_seed=si, with_audio=not args.no_audio, skip_steps=delays[ti]
            )
            print(f"{path}: score {meta['score']} steps {meta['agent_steps']} skipped {delays[ti]} style {style}")
        return 0
    for i, actions in enumerate(trajs[: args.n]):
        style_seed = args.seed * 1000 + i  # recorded in the sidecar: UploaderStyle.sample(style_seed) is this style
        style = UploaderStyle.sample(style_seed)
        path = out / f"demo_{i}.{style.container}"
        meta = record_demo(
            actions, path, style, style_seed=style_seed, with_audio=not args.no_audio, skip_steps=delays[i]
        )
        print(f"{path}: score {meta['score']} steps {meta['agent_steps']} {replay(actions)} style {style}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
