"""Read gameplay videos (mp4, webm, mkv, ...) with PyAV into frames and frame-aligned audio, in chunks.

A video is decoded once, front to back, and never held in memory: :class:`VideoReader` yields
:class:`VideoChunk` s of ``chunk_frames`` processed frames. Processing, in order:

1. **Frame rate**: frames are resampled to ``fps`` (default 15 Hz = ALE's 60 Hz with frameskip 4, the agent's
   step rate). Target frame ``k`` shows the last decoded frame whose timestamp is ``<= k / fps``
   (drop/duplicate, no blending, so a 60, 30, 25 or 24 fps upload maps to the same game moments).
2. **Black borders**: letter-/pillar-boxing is detected on a sample of frames spread over the whole video
   (:func:`detect_borders`: rows and columns at the edges whose brightest pixel stays below ``threshold``) and
   cropped.
3. **Resize** to ``size`` (width, height), aspect ratio not kept (as in the public reimplementation:
   the videos' aspect ratios differ, the embedding must bridge that).
4. **Audio**: the first audio track is resampled to mono float32 at ``audio_rate`` Hz and cut into one window of
   ``audio_rate / fps`` samples per output frame, aligned on the same clock as the frames (window ``k`` covers
   ``[k / fps, (k + 1) / fps)``). A video without audio yields ``audio=None`` (fine for TDC); asking for audio
   (``require_audio=True``, as CMC does) raises :class:`~dreamarcade.errors.VideoError` saying so.

Example (write two seconds of 30 fps video with a tone, read it back at 15 fps in chunks of 16 frames):
    >>> import os, tempfile, numpy as np
    >>> from dreamarcade.reward_models.demo_videos import write_av
    >>> from dreamarcade.reward_models.video import VideoReader
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.mp4")
    >>> frames = [np.full((120, 160, 3), 4 * t, np.uint8) for t in range(60)]
    >>> tone = (0.3 * np.sin(np.arange(2 * 16000) / 10)).astype(np.float32)
    >>> _ = write_av(path, frames, fps=30, audio=tone, audio_rate=16000)
    >>> reader = VideoReader(path, fps=15, size=(72, 72), chunk_frames=16)
    >>> chunk = next(reader.chunks())
    >>> chunk.start, chunk.frames.shape, chunk.audio.shape  # 7680 Hz audio: 512 samples per frame
    (0, (16, 72, 72, 3), (16, 512))
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamarcade.errors import VideoError, check_count, require

__all__ = [
    "BORDER_THRESHOLD",
    "CropBox",
    "VideoChunk",
    "VideoProbe",
    "VideoReader",
    "area_resize",
    "detect_borders",
    "probe_video",
    "process_frame",
    "read_video",
]


BORDER_THRESHOLD = 24  # an edge row/column whose brightest pixel (0-255) stays below this is black border


@dataclass(frozen=True)
class CropBox:
    """Pixels to cut from each edge of a frame.

    Example (a video boxed by black bands: :func:`detect_borders` measures them, ``apply`` cuts them off):
        >>> import os, tempfile, numpy as np
        >>> from dreamarcade.reward_models.demo_videos import write_av
        >>> from dreamarcade.reward_models.video import detect_borders, read_video
        >>> frame = np.zeros((96, 160, 3), np.uint8)
        >>> frame[16:80, 32:128] = 200  # the game area
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = write_av(os.path.join(d, "boxed.mp4"), [frame] * 8, fps=15)
        ...     box, video = detect_borders(path), read_video(path, crop=None, size=None)
        >>> box
        CropBox(top=16, bottom=16, left=32, right=32)
        >>> video.frames.shape, box.apply(video.frames[0]).shape
        ((8, 96, 160, 3), (64, 96, 3))
    """

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def __post_init__(self) -> None:
        for name in ("top", "bottom", "left", "right"):  # a negative edge would index from the other side
            object.__setattr__(self, name, check_count(f"CropBox.{name}", getattr(self, name), low=0))

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Crop an (H, W, C) frame; a box that leaves nothing of it is a ValueError naming both."""
        h, w = frame.shape[:2]
        if self.top + self.bottom >= h or self.left + self.right >= w:
            raise ValueError(
                f"{self} leaves nothing of a {w}x{h} frame: give a crop smaller than the frame, or crop='auto'"
            )
        return frame[self.top : h - self.bottom, self.left : w - self.right]

    def as_list(self) -> list[int]:
        return [self.top, self.bottom, self.left, self.right]


@dataclass(frozen=True)
class VideoProbe:
    """What a video file holds, read from its header.

    Example (half a second of 30 fps video with sound; the mp4's AAC track is written at 44.1 kHz):
        >>> import os, tempfile, numpy as np
        >>> from dreamarcade.reward_models.demo_videos import write_av
        >>> from dreamarcade.reward_models.video import probe_video
        >>> frames, sound = [np.full((120, 160, 3), 100, np.uint8)] * 15, np.zeros(8000, np.float32)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = write_av(os.path.join(d, "clip.mp4"), frames, fps=30, audio=sound, audio_rate=16000)
        ...     probe = probe_video(path)
        >>> probe.width, probe.height, probe.fps, round(probe.duration, 1), probe.has_audio, probe.audio_rate
        (160, 120, 30.0, 0.5, True, 44100)
    """

    path: str
    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool
    audio_rate: int | None


@dataclass
class VideoChunk:
    """``frames`` (T, H, W, 3) uint8; ``audio`` (T, samples_per_frame) float32 or None; ``start``: first index.

    Example (a silent 40-frame 30 fps video read at 15 fps in chunks of 8: its 20 frames come in 3 chunks):
        >>> import os, tempfile, numpy as np
        >>> from dreamarcade.reward_models.demo_videos import write_av
        >>> from dreamarcade.reward_models.video import VideoReader
        >>> frames = [np.full((120, 160, 3), 50 + 4 * t, np.uint8) for t in range(40)]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = write_av(os.path.join(d, "clip.mp4"), frames, fps=30)
        ...     chunks = list(VideoReader(path, fps=15, size=(32, 32), chunk_frames=8).chunks())
        >>> [(c.start, len(c.frames)) for c in chunks], chunks[0].frames.shape, chunks[0].audio is None
        ([(0, 8), (8, 8), (16, 4)], (8, 32, 32, 3), True)
    """

    start: int
    frames: np.ndarray
    audio: np.ndarray | None


def _open(path: str | os.PathLike[str]) -> Any:
    av = require("av", "reading video files", extra="video")
    p = Path(path)
    if p.is_dir():
        raise VideoError(f"'{p}' is a folder, not a video file. Pass the paths of the mp4/webm/mkv files in it.")
    if not p.is_file():
        raise VideoError(f"Video file '{p}' does not exist. Pass the path of an mp4/webm/mkv file.")
    if p.stat().st_size == 0:
        raise VideoError(f"Video file '{p}' is empty (0 bytes). Re-download or re-record it.")
    if p.suffix.lower() == ".json":  # a shell glob such as demo_0.* also picks the sidecar demo_videos writes
        raise VideoError(
            f"'{p}' is a JSON file, not a video (demo_videos writes one next to each video it records). Pass the "
            "mp4/webm/mkv files only, e.g. demo_0.[mw]* instead of demo_0.*."
        )
    try:
        container = av.open(str(p))
    except Exception as exc:  # PyAV raises several error types (InvalidDataError, FFmpegError, ...)
        raise VideoError(
            f"Cannot read '{p}' as a video ({type(exc).__name__}: {exc}). "
            "Pass a playable mp4/webm/mkv file (check it plays, or re-encode it)."
        ) from exc
    if _video_stream(container) is None:
        container.close()
        raise VideoError(
            f"'{p}' has no video stream (audio-only, at most with cover art, or not a video). Pass a gameplay video."
        )
    return container


def _video_stream(container: Any) -> Any:
    """The container's first video stream that is moving pictures: not the cover art of an audio file (an
    ``attached_pic`` stream, as ``yt-dlp --embed-thumbnail`` writes into an m4a or mp3); None if there is none."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _duration_s(container: Any, stream: Any) -> float:
    """The video stream's duration in seconds (the container's if the stream has none; NaN if neither).

    A Matroska/WebM container's length can be where its last frame ends rather than how long it lasts (FFmpeg's
    muxer writes the end time, which includes a start offset), and where its longest stream ends (an audio track
    longer than the video): with a start offset or other streams, the last frame's end is found with one seek near
    the end, in a container of its own.
    """
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is None:  # a live recording (MediaRecorder, a streamed Matroska) stores no length
        return _demuxed_duration_s(container.name)
    first = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if first <= 0 and len(container.streams) == 1:
        return container.duration / 1e6
    # with other streams the container's length is where the longest ends (audio running on past the last frame)
    rate = float(stream.average_rate or stream.guessed_rate or 0.0)
    end = None
    probe = _open(container.name)
    try:
        with _decode_errors(container.name):
            probe.seek(int(container.duration), backward=True, any_frame=False)  # microseconds, no stream
            for frame in probe.decode(_video_stream(probe)):
                if frame.time is not None:
                    step = float(frame.duration * frame.time_base) if frame.duration else (1 / rate if rate else 0.0)
                    end = max(end or 0.0, frame.time + step)
    finally:
        probe.close()
    return (end if end is not None else container.duration / 1e6) - first


def _demuxed_duration_s(path: str) -> float:
    """The video stream's length from its packets' timestamps, read without decoding (NaN if it has none).

    For files whose header has no length: a pass over the packets reads the file from disk but decodes nothing.
    """
    container = _open(path)
    try:
        with _decode_errors(path):
            stream = _video_stream(container)
            if stream.time_base is None:
                return float("nan")
            start = end = None
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue  # the flushing packet at the end, or a packet without a timestamp
                start = packet.pts if start is None else min(start, packet.pts)
                end = max(end if end is not None else packet.pts, packet.pts + (packet.duration or 0))
    finally:
        container.close()
    if start is None or end is None:
        return float("nan")
    first = stream.start_time if stream.start_time is not None else start
    return float((end - first) * stream.time_base)


def probe_video(path: str | os.PathLike[str]) -> VideoProbe:
    """Header information of a video (size, frame rate, duration, audio)."""
    container = _open(path)
    try:
        v = _video_stream(container)
        # the nominal rate where the average is within 1% of it: a remux of millisecond timestamps into mp4 (OBS's
        # Remux Recordings, ffmpeg -c copy, yt-dlp) averages 30.03 for a 30 fps video, off its frame grid
        average = float(v.average_rate or 0.0)
        nominal = float(v.base_rate or v.guessed_rate or 0.0)
        fps = nominal if average and nominal and abs(nominal / average - 1.0) < 0.01 else (average or nominal)
        duration = _duration_s(container, v)
        a = container.streams.audio[0] if container.streams.audio else None
        width, height = v.codec_context.width, v.codec_context.height
        if _rotation(container, v, path) in (90, 270):  # shown turned a quarter: the frames the reader gives
            width, height = height, width
        return VideoProbe(
            str(path),
            width,
            height,
            fps,
            duration,
            a is not None,
            a.rate if a else None,
        )
    finally:
        container.close()


def _quarter_turns(frame: Any) -> int:
    """A decoded frame's display rotation in counter-clockwise quarter turns (0-3), as ``np.rot90`` counts them."""
    return round(float(getattr(frame, "rotation", 0) or 0) / 90.0) % 4


def _rgb(frame: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded video frame as it is displayed: RGB, turned by its display rotation (phones store portrait
    video sideways with a rotation in the header; players, and this reader, turn it upright).

    ``size`` (width, height): a frame of another size is scaled to it (area interpolation). A stream may change its
    picture size midway (a screen or browser recording whose window was resized); the reader keeps every frame of
    a video at the size of its first.
    """
    arr = frame.to_ndarray(format="rgb24")
    quarters = _quarter_turns(frame)
    if quarters:
        arr = np.ascontiguousarray(np.rot90(arr, k=quarters))
    if size is not None and (arr.shape[1], arr.shape[0]) != tuple(size):
        arr = area_resize(arr, size)
    return arr


def _rotation(container: Any, stream: Any, path: str | os.PathLike[str]) -> int:
    """The display rotation in degrees of the stream's first frame (0 if it has none or no frame decodes)."""
    with _decode_errors(path):
        for frame in container.decode(stream):
            return _quarter_turns(frame) * 90
    return 0


@contextmanager
def _decode_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn PyAV's decoding errors inside the block into a VideoError that names the file."""
    try:
        yield
    except Exception as exc:
        if type(exc).__module__.startswith("av"):
            raise VideoError(f"Decoding '{path}' failed ({exc}). The file is damaged; re-encode it.") from exc
        raise


def _decoded_frames(
    path: str | os.PathLike[str], stride: int = 1, limit: int | None = None
) -> Iterator[tuple[float, Any]]:
    """(time in seconds, av.VideoFrame) for every ``stride``-th decoded frame."""
    container = _open(path)
    try:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        n = 0
        fallback_rate = float(stream.average_rate or 30.0)
        with _decode_errors(path):
            for i, frame in enumerate(container.decode(stream)):
                if i % stride:
                    continue
                t = frame.time if frame.time is not None else i / fallback_rate
                yield float(t), frame
                n += 1
                if limit is not None and n >= limit:
                    return
    finally:
        container.close()


def _bands(gray: np.ndarray, threshold: int, max_fraction: float) -> tuple[int, int, int, int]:
    """Black bands (top, bottom, left, right) of one brightness image (H, W)."""
    h, w = gray.shape
    rows = gray.max(axis=1) >= threshold
    cols = gray.max(axis=0) >= threshold
    if not rows.any() or not cols.any():
        return (-1, -1, -1, -1)  # an all-black frame says nothing about borders

    def band(mask: np.ndarray, limit: int) -> tuple[int, int]:
        return min(int(np.argmax(mask)), limit), min(int(np.argmax(mask[::-1])), limit)

    top, bottom = band(rows, int(h * max_fraction))
    left, right = band(cols, int(w * max_fraction))
    return top, bottom, left, right


def _probe_groups(
    path: str | os.PathLike[str], probe_frames: int, stride: int, window: int, duration: float | None = None
) -> list[list[np.ndarray]]:
    """Brightness images (max over RGB) of ``probe_frames`` decoded frames, in groups of ``window`` samples
    ``stride`` decoded frames apart, the groups spread evenly from the start to the end of the video by seeking.
    Each group is returned as its running maximum (a list of one image), all :func:`detect_borders` reads of it.

    A video with at most ``probe_frames * stride`` frames (or no known duration) is read front to back
    instead (every ``stride``-th frame): the sample then covers all of it. Memory: one image per group (all
    ``probe_frames`` were kept: ~0.5 GB for a 4K video).
    ``duration`` (seconds, :func:`probe_video`'s) saves finding it again; None finds it from the file.
    """
    container = _open(path)
    try:
        stream = _video_stream(container)
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        if duration is None:
            duration = _duration_s(container, stream)
        groups_n = -(-probe_frames // window)
        span = window * stride / rate if rate > 0 else float("nan")  # seconds one group covers
        seekable = np.isfinite(duration) and rate > 0 and groups_n > 1 and duration * rate > probe_frames * stride
    finally:
        container.close()
    first: tuple[int, int] | None = None  # (width, height) of the first frame probed: every probe is scaled to it

    def gray(frame: Any) -> np.ndarray:
        nonlocal first
        rgb = _rgb(frame, first)
        first = first or (rgb.shape[1], rgb.shape[0])
        return rgb.max(axis=2)

    if not seekable:
        peaks: list[list[np.ndarray]] = []
        for i, (_, frame) in enumerate(_decoded_frames(path, stride=stride, limit=probe_frames)):
            if i % window == 0:
                peaks.append([gray(frame)])
            else:
                np.maximum(peaks[-1][0], gray(frame), out=peaks[-1][0])
        return peaks
    container = _open(path)
    groups: list[list[np.ndarray]] = []
    try:
        with _decode_errors(path):
            stream = _video_stream(container)
            t_base = float(stream.time_base)
            t_start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            for g in range(groups_n):
                target = t_start + g * (duration - span) / (groups_n - 1)
                container.seek(int(target / t_base), stream=stream, backward=True, any_frame=False)
                peak: np.ndarray | None = None
                n = taken = 0
                for frame in container.decode(stream):
                    if frame.time is not None and frame.time < target - 0.5 / rate:
                        continue  # decoding from the keyframe before the target
                    if n % stride == 0:
                        peak = gray(frame) if peak is None else np.maximum(peak, gray(frame), out=peak)
                        taken += 1
                        if taken == window:
                            break
                    n += 1
                if peak is not None:
                    groups.append([peak])
    finally:
        container.close()
    return groups


def detect_borders(
    source: str | os.PathLike[str] | np.ndarray,
    threshold: int = BORDER_THRESHOLD,
    probe_frames: int = 60,
    stride: int = 10,
    max_fraction: float = 0.45,
    window: int = 4,
    duration: float | None = None,
) -> CropBox:
    """Find black letter-/pillar-box bands: edge rows/columns whose brightest pixel stays below ``threshold``.

    ``source`` is a video path or an array of frames (T, H, W, 3). From a video, ``probe_frames`` frames are
    sampled in windows of ``window`` samples ``stride`` decoded frames apart, the windows spread evenly over the
    whole video (a short video is sampled front to back). Bands are measured on the maximum over each window (so
    one dark moment of the game is not taken for a border) and the median over the windows is kept (so an intro
    card, an outro or a fade in at most half of the windows does not cancel the crop; of an even number, the upper
    middle one). An array is cut into windows of ``window`` consecutive frames. All-black windows are ignored (no
    crop if all are black). At most ``max_fraction`` of a dimension is cut from one side. ``duration`` is the video's
    length in seconds where it is already known (:func:`probe_video`'s), so it is not found again; None finds it.
    """
    if isinstance(source, np.ndarray):
        frames = source if source.ndim == 4 else source[None]
        grays = [f.max(axis=2) for f in frames]
        groups = [grays[i : i + window] for i in range(0, len(grays), window)]
    else:
        groups = _probe_groups(source, probe_frames, stride, window, duration)
        if not groups:
            raise VideoError(f"'{source}' has no decodable video frames; it is empty or damaged.")
    found = []
    for group in groups:
        peak = np.max(np.stack(group), axis=0)
        b = _bands(peak, threshold, max_fraction)
        if b[0] >= 0:
            found.append(b)
    if not found:
        return CropBox()
    # a band that was measured: with an even count the upper of the two middle ones (the mean of 0 and the border's
    # width would crop half of it), so a tie between windows with an intro card and those without keeps the crop
    med = np.percentile(np.array(found), 50, axis=0, method="higher")
    return CropBox(*map(int, med))


def area_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(frame, size, interpolation=cv2.INTER_AREA)`` of a uint8 frame, bit for bit, faster.

    For a reduction by a non-integer factor in either direction, OpenCV's general area kernel accumulates in
    float32 whether the frame is uint8 or float32, and rounds half to even at the end for uint8. On a float32
    frame the same kernel runs faster, so that path is taken there (copy included, ~1.3x faster for cropped
    210x160 Atari frames to 54x54: ~0.095 ms instead of ~0.12 ms) and its result rounded the same way. Integer
    factors (OpenCV's separate fast path, whose uint8 rounding differs) and enlargements go to ``cv2.resize`` on
    the uint8 frame as they are. A test compares both paths bit for bit on random frames of many sizes.

    >>> import numpy as np, cv2
    >>> frame = np.random.default_rng(0).integers(0, 256, (192, 160, 3), dtype=np.uint8)
    >>> bool(np.array_equal(area_resize(frame, (54, 54)), cv2.resize(frame, (54, 54), interpolation=cv2.INTER_AREA)))
    True
    """
    import cv2

    w, h = int(size[0]), int(size[1])
    src_h, src_w = frame.shape[:2]
    if frame.dtype == np.uint8 and 0 < w <= src_w and 0 < h <= src_h and (src_w % w or src_h % h):
        return cv2.convertScaleAbs(cv2.resize(frame.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA))
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def process_frame(frame: np.ndarray, crop: CropBox | None, size: tuple[int, int] | None) -> np.ndarray:
    """Crop then resize one RGB frame exactly as the reader does (agents' frames go through this too)."""
    if crop is not None:
        frame = crop.apply(frame)
    if size is not None and (frame.shape[1], frame.shape[0]) != tuple(size):
        frame = area_resize(frame, size)
    return np.ascontiguousarray(frame, dtype=np.uint8)


class _AudioTrack:
    """Pulls resampled mono audio from a container and hands out windows by absolute sample index."""

    def __init__(self, path: str | os.PathLike[str], rate: int, t0: float) -> None:
        av = require("av", "reading audio tracks", extra="video")
        self.path = path
        self.container = _open(path)
        self.stream = self.container.streams.audio[0]
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self.rate = rate
        self._frames = self.container.decode(self.stream)
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0  # absolute sample index (0 = time t0 of the first video frame) of buffer[0]
        self.t0 = t0
        self.started = False
        self.done = False
        # timestamps within this many samples of where the previous audio ended continue it (a millisecond tick
        # and resampling round them); beyond it they mark a gap (silence) or an overlap (dropped)
        self.slack = max(1, round(0.002 * rate))

    def _pull(self) -> None:
        with _decode_errors(self.path):  # a damaged audio track is a VideoError naming the file, as for video
            try:
                frame = next(self._frames)
                out = self.resampler.resample(frame)
            except StopIteration:
                out = self.resampler.resample(None)
                self.done = True
        for f in out:
            samples = f.to_ndarray().reshape(-1).astype(np.float32)
            at = None if f.time is None else round((f.time - self.t0) * self.rate)  # on the video clock
            if not self.started:
                self.started = True
                # place the first sample on the video clock: its absolute index is negative for audio that starts
                # before the first video frame (window() never returns those samples) and positive for audio
                # that starts later (window() pads the gap with silence)
                self.buffer_start = 0 if at is None else at
            elif at is not None:
                # every later frame is placed by its timestamp too: a dropout in the recording is silence, so
                # the sound after it stays aligned with its frames instead of moving earlier by the gap
                gap = at - (self.buffer_start + len(self.buffer))
                if gap > self.slack:
                    samples = np.concatenate([np.zeros(gap, np.float32), samples])
                elif gap < -self.slack:
                    samples = samples[-gap:]
            self.buffer = np.concatenate([self.buffer, samples])

    def window(self, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)`` (zero-padded after the end of the track)."""
        while not self.done and self.buffer_start + len(self.buffer) < start + length:
            self._pull()
        lo = start - self.buffer_start  # negative: the window starts before the first sample (silence there)
        out = np.zeros(length, np.float32)
        seg = self.buffer[max(lo, 0) : max(lo + length, 0)]
        out[max(-lo, 0) : max(-lo, 0) + len(seg)] = seg
        drop = max(0, lo)  # everything before this window is never needed again
        self.buffer = self.buffer[drop:]
        self.buffer_start += drop
        return out

    def close(self) -> None:
        self.container.close()


class VideoReader:
    """Stream a video as fixed-rate, border-cropped, resized frames with aligned mono audio.

    Args:
        path: the video file.
        fps: output frame rate (frames are dropped/duplicated to reach it).
        size: output (width, height), or None to keep the cropped size.
        crop: ``"auto"`` (detect black borders), None (no crop), or a :class:`CropBox`.
        audio_rate: output audio sample rate; each frame gets ``round(audio_rate / fps)`` samples.
        chunk_frames: frames per yielded chunk (memory bound: chunk_frames * H * W * 3 bytes).
        audio: read the audio track when there is one.
        require_audio: raise :class:`VideoError` if the video has no audio track (CMC needs it).
        max_frames: stop after this many output frames.

    A video whose picture size changes midway (a screen or browser recording whose window was resized) is read at
    the size of its first frame: later frames of another size are scaled to it before the crop.

    Example (a silent webm with a black pillar-box: the borders are found and cropped away):
        >>> import os, tempfile, numpy as np
        >>> from dreamarcade.reward_models.demo_videos import write_av
        >>> frame = np.zeros((96, 160, 3), np.uint8)
        >>> frame[:, 32:128] = 200
        >>> path = os.path.join(tempfile.mkdtemp(), "demo.webm")
        >>> _ = write_av(path, [frame] * 20, fps=10)
        >>> reader = VideoReader(path, fps=10, size=None)
        >>> reader.crop  # pixels cut from each edge
        CropBox(top=0, bottom=0, left=32, right=32)
        >>> reader.read_all().frames.shape
        (20, 96, 96, 3)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = 15.0,
        size: tuple[int, int] | None = (72, 72),
        crop: str | CropBox | None = "auto",
        audio_rate: int = 7680,
        chunk_frames: int = 256,
        audio: bool = True,
        require_audio: bool = False,
        max_frames: int | None = None,
        border_threshold: int = BORDER_THRESHOLD,
    ) -> None:
        if not math.isfinite(fps) or fps <= 0:  # inf would repeat the first frame forever
            raise ValueError(f"fps (the output frame rate) must be a finite number > 0, got {fps}")
        if int(audio_rate) != audio_rate or audio_rate < 1:
            raise ValueError(f"audio_rate (samples per second) must be an integer >= 1, got {audio_rate}")
        if int(chunk_frames) != chunk_frames or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be an integer >= 1, got {chunk_frames}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (width, height), both >= 1, or None for the cropped size, got {size}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 (or None for the whole video), got {max_frames}")
        self.path = Path(path)
        self.info = probe_video(path)  # raises VideoError for a missing, empty or unreadable file
        if require_audio and not self.info.has_audio:
            raise VideoError(
                f"'{self.path}' has no audio track, but audio was required (cross-modal CMC training needs the "
                "game's sound). Use a video with sound, or train with TDC only (cmc_weight=0)."
            )
        self.fps = float(fps)
        self.size = tuple(size) if size is not None else None
        if crop == "auto":
            self.crop: CropBox | None = detect_borders(path, threshold=border_threshold, duration=self.info.duration)
        elif crop is None or isinstance(crop, CropBox):
            self.crop = crop
        else:
            raise ValueError(f"crop must be 'auto', None or a CropBox, got {crop!r}")
        self.audio_rate = int(audio_rate)
        self.samples_per_frame = round(self.audio_rate / self.fps)
        self.chunk_frames = int(chunk_frames)
        self.with_audio = bool(audio and self.info.has_audio)
        self.max_frames = max_frames

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Yield (frame, audio window) one output frame at a time."""
        track: _AudioTrack | None = None
        k = 0
        current: np.ndarray | None = None
        picture: tuple[int, int] | None = None  # (width, height) of the first decoded frame
        t0: float | None = None
        # stored timestamps are true times rounded to the stream's time-base tick: webm/mkv store whole
        # milliseconds (the 30 fps frame at 66.67 ms is stored as 67 ms), avi counts whole frames (tick = 1 / fps)
        tol = 1e-6
        grid = snap = off_grid = 0.0  # the source frame rate, when rounded timestamps are put back on its grid
        try:
            for t, frame in _decoded_frames(self.path):
                if t0 is None:
                    t0 = t
                    if frame.time_base is not None:  # the stream's, the same for every frame
                        # rel = t - t0 subtracts two rounded times, so it can be off by a whole tick: allow one tick.
                        # A tick of half a source frame or more counts whole frames (avi): those times are exact,
                        # and a tolerance that large would show the next frame up to half a frame early
                        tick = float(frame.time_base)
                        exact = self.info.fps > 0 and tick >= 0.5 / self.info.fps
                        tol = (0.0 if exact else tick if self.info.fps > 0 else 0.5 * tick) + 1e-6
                        # a timestamp within a tick of the source's frame grid is that grid point, rounded: put it
                        # back, so an NTSC frame (29.97 fps: 33.367 ms apart, stored as 33 or 34 ms) is compared at
                        # its true time. A tick's tolerance would show a frame stored 0.1 ms after a target time
                        # at that target. Timestamps off the grid (variable frame rate) keep the tolerance.
                        grid = self.info.fps if self.info.fps > 0 and not exact else 0.0
                        # at least half a millisecond: timestamps rounded to whole milliseconds and then stored in
                        # a finer time base (an mkv remuxed into mp4: 67 ms as 1072/16000) are off by up to that;
                        # at most a quarter of a source frame, so no timestamp is put on a neighbouring grid point
                        snap = min(max(tol, 0.0005 + 1e-6), 0.25 / grid) if grid else tol
                        off_grid = tol
                    if self.with_audio:
                        track = _AudioTrack(self.path, self.audio_rate, t0)
                rel = t - t0
                if grid:
                    n = round(rel * grid)
                    on_grid = abs(rel - n / grid) <= snap
                    rel, tol = (n / grid, 1e-6) if on_grid else (rel, off_grid)
                # emit every target frame whose time falls before this decoded frame: they show `current`
                while current is not None and k / self.fps < rel - tol:
                    yield current, self._audio(track, k)
                    k += 1
                    if self.max_frames is not None and k >= self.max_frames:
                        return
                rgb = _rgb(frame, picture)
                picture = picture or (rgb.shape[1], rgb.shape[0])  # later frames of another size are scaled to it
                current = process_frame(rgb, self.crop, self.size)
            if current is None:
                raise VideoError(f"'{self.path}' contains no decodable video frames (empty or damaged video).")
            # the last decoded frame is shown for one source-frame period (one output frame if the rate is unknown)
            period = 1.0 / self.info.fps if self.info.fps > 0 else 1.0 / self.fps
            end = (rel if t0 is not None else 0.0) + period
            while k / self.fps < end - tol:
                yield current, self._audio(track, k)
                k += 1
                if self.max_frames is not None and k >= self.max_frames:
                    return
        finally:
            if track is not None:
                track.close()

    def _audio(self, track: _AudioTrack | None, k: int) -> np.ndarray | None:
        if track is None:
            return None
        return track.window(round(k * self.audio_rate / self.fps), self.samples_per_frame)

    def chunks(self) -> Iterator[VideoChunk]:
        """Yield :class:`VideoChunk` s of at most ``chunk_frames`` frames."""
        frames: list[np.ndarray] = []
        audio: list[np.ndarray] = []
        start = 0
        for f, a in self.frames():
            frames.append(f)
            if a is not None:
                audio.append(a)
            if len(frames) == self.chunk_frames:
                yield VideoChunk(start, np.stack(frames), np.stack(audio) if audio else None)
                start += len(frames)
                frames, audio = [], []
        if frames:
            yield VideoChunk(start, np.stack(frames), np.stack(audio) if audio else None)

    def read_all(self) -> VideoChunk:
        """The whole processed video as one chunk (small processed frames; use :meth:`chunks` for long videos)."""
        parts = list(self.chunks())
        if not parts:
            raise VideoError(f"'{self.path}' yielded no frames.")
        audio = None if parts[0].audio is None else np.concatenate([p.audio for p in parts])
        return VideoChunk(0, np.concatenate([p.frames for p in parts]), audio)


def read_video(path: str | os.PathLike[str], **kwargs: Any) -> VideoChunk:
    """Shortcut for ``VideoReader(path, **kwargs).read_all()``."""
    return VideoReader(path, **kwargs).read_all()
