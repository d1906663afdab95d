"""Small video files with hand-timed audio packets, for the reader's alignment tests (imported as
``from av_helpers import write_timed_audio_mkv``)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_timed_audio_mkv(
    path: Path, frames: Iterable[np.ndarray], fps: int, rate: int, packets: Iterable[tuple[int, np.ndarray]]
) -> Path:
    """A Matroska file of ``frames`` (RGB uint8) as H.264 at ``fps``, and mono 16-bit PCM audio at ``rate`` made of
    ``packets``: (start sample, float samples in [-1, 1]) each, muxed with exactly that timestamp, so gaps and
    overlaps between packets are kept as written."""
    import av

    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=fps)
        first = None
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for frame in frames:
            if first is None:
                first = frame
                video.height, video.width = frame.shape[:2]
                video.pix_fmt = "yuv420p"
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, "rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        for start, samples in packets:
            chunk = av.AudioFrame.from_ndarray((samples[None] * 32767).astype(np.int16), "s16", "mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, start, Fraction(1, rate)
            for packet in audio.encode(chunk):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path
