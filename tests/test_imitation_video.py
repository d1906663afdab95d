"""Video reading (PyAV round trips in several containers), border cropping, demo styles, bad-input errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from dreamarcade.errors import VideoError  # noqa: E402
from dreamarcade.reward_models.demo_videos import UploaderStyle, apply_style, write_av  # noqa: E402
from dreamarcade.reward_models.video import CropBox, VideoReader, detect_borders, probe_video  # noqa: E402

FPS = 30


def _synthetic(n: int = 45, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose brightness encodes the index, with black letterbox bands; a tone burst every 15 frames."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, 16 : h - 16, :, :] = 40 + 4 * i  # bands of 16 black rows at top and bottom
        frames[i, 16 : h - 16, : 8 * (1 + i % 8), 0] = 250
    rate = 7680
    t = np.arange(int(n / FPS * rate)) / rate
    audio = np.zeros_like(t, dtype=np.float32)
    for k in range(0, n, 15):  # a 1/FPS-long burst starting exactly at frame k
        s = int(k / FPS * rate)
        audio[s : s + rate // FPS] = 0.6 * np.sin(2 * np.pi * 440 * t[s : s + rate // FPS])
    return frames, audio


@pytest.mark.parametrize("container", ["mp4", "webm", "mkv"])
def test_round_trip_frames_and_audio(tmp_path, container):
    frames, audio = _synthetic()
    path = write_av(tmp_path / f"v.{container}", iter(frames), FPS, audio=audio, audio_rate=7680, crf=10)
    info = probe_video(path)
    assert info.has_audio and (info.width, info.height) == (128, 96)
    reader = VideoReader(path, fps=15, size=None, audio_rate=7680, chunk_frames=8)
    assert reader.crop == CropBox(16, 16, 0, 0)
    chunks = list(reader.chunks())
    assert all(len(c.frames) <= 8 for c in chunks)
    got = np.concatenate([c.frames for c in chunks])
    aud = np.concatenate([c.audio for c in chunks])
    assert len(got) == (len(frames) + 1) // 2  # 30 -> 15 fps: every second frame, 1.5 s -> 23 frames
    assert got.shape[1:] == (64, 128, 3)
    # brightness encodes the source index: output frame k shows source frame 2k (lossy codec: +-6 levels)
    lum = got[:, 20:40, 100:, 1].mean(axis=(1, 2))
    np.testing.assert_allclose(lum, 40 + 4 * np.arange(0, len(frames), 2)[: len(got)], atol=6)
    # the tone bursts land in the windows of frames 0, 7.5 -> 7 or 8, 15 (15 Hz clock)
    energy = np.abs(aud).mean(axis=1)
    loud = set(np.flatnonzero(energy > 0.1).tolist())
    assert 0 in loud and (7 in loud or 8 in loud) and 15 in loud
    assert energy[3] < 0.05 and energy[12] < 0.05


@pytest.mark.parametrize("container", ["mp4", "webm", "mkv"])
@pytest.mark.parametrize("source_fps", [30, 60])
def test_resampling_shows_evenly_spaced_source_frames(tmp_path, container, source_fps):
    # webm and mkv store timestamps in whole milliseconds (30 fps: frame 2 at 67 ms, after 66.7 ms): the
    # resampler must not take that rounding for a late frame
    n = 2 * source_fps  # 2 s
    frames = np.full((n, 64, 128, 3), 40, np.uint8)
    for i in range(n):
        frames[i, :, i % 120 : i % 120 + 4] = 250  # the frame index, as a bar position (robust to the codec)
    path = write_av(tmp_path / f"v.{container}", iter(frames), source_fps, crf=10)
    got = VideoReader(path, fps=15, size=None, crop=None, audio=False).read_all().frames
    shown = [int(np.argmax(f[:, :, 0].mean(0) > 150)) for f in got]
    assert shown == [k * source_fps // 15 for k in range(30)]  # 30 frames: 2 s at 15 fps, none duplicated


@pytest.mark.parametrize("container", ["mp4", "webm", "mkv"])
@pytest.mark.parametrize("source_fps", [Fraction(30000, 1001), Fraction(60000, 1001), Fraction(24000, 1001)])
def test_ntsc_rates_show_the_last_source_frame_at_or_before_each_target_time(tmp_path, container, source_fps):
    """29.97 / 59.94 / 23.976 fps in whole-millisecond timestamps (webm, mkv): frame 2 of 29.97 fps is at 66.73 ms,
    just after the 15 fps target at 66.67 ms, and stored as 67 ms. A tolerance of a whole tick showed it there."""
    n = int(3 * source_fps)  # 3 s
    frames = np.full((n, 64, 128, 3), 40, np.uint8)
    for i in range(n):
        frames[i, :, i % 120 : i % 120 + 4] = 250
    path = write_av(tmp_path / f"v.{container}", iter(frames), float(source_fps), crf=10)
    got = VideoReader(path, fps=15, size=None, crop=None, audio=False).read_all().frames
    shown = [int(np.argmax(f[:, :, 0].mean(0) > 150)) for f in got]
    expected = [min(int(Fraction(k, 15) * source_fps), n - 1) % 120 for k in range(len(got))]
    assert len(got) >= 44 and shown == expected


@pytest.mark.parametrize("source_fps", [30, 60, Fraction(30000, 1001)])
def test_a_millisecond_video_remuxed_into_mp4_reads_as_the_original(tmp_path, source_fps):
    """OBS's Remux Recordings, ffmpeg -c copy and yt-dlp put an mkv's whole-millisecond timestamps into mp4's finer
    time base (67 ms as 1072 / 16000): a third of the target frames showed the frame before, and 30 fps probed as
    30.03."""
    import av

    n = int(2 * source_fps)
    frames = np.full((n, 64, 128, 3), 40, np.uint8)
    for i in range(n):
        frames[i, :, i % 120 : i % 120 + 4] = 250
    mkv = write_av(tmp_path / "v.mkv", iter(frames), float(source_fps), crf=10)
    mp4 = tmp_path / "remux.mp4"
    with av.open(str(mkv)) as src, av.open(str(mp4), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = stream
                dst.mux(packet)
    assert probe_video(mp4).fps == pytest.approx(float(source_fps), rel=1e-6)
    for fps in (15, float(source_fps)):
        read = [VideoReader(p, fps=fps, size=None, crop=None, audio=False).read_all().frames for p in (mkv, mp4)]
        shown = [[int(np.argmax(f[:, :, 0].mean(0) > 150)) for f in got] for got in read]
        assert shown[1] == shown[0]


def _bright_frames_and_loud_windows(path) -> tuple:
    """Read at 15 fps: the clip, its frames with a bright flash and the audio windows holding a tone burst."""
    clip = VideoReader(path, fps=15, size=None, crop=None, audio_rate=7680).read_all()
    bright = np.flatnonzero(clip.frames.mean(axis=(1, 2, 3)) > 150).tolist()
    loud = np.flatnonzero(np.abs(clip.audio).max(axis=1) > 0.2).tolist()
    return clip, bright, loud


def _bar_frames(n: int) -> np.ndarray:
    frames = np.full((n, 64, 128, 3), 40, np.uint8)
    for i in range(n):
        frames[i, :, 4 * (i % 30) : 4 * (i % 30) + 4] = 250  # the frame index, as a bar position
    return frames


def _shown(frames: np.ndarray) -> list[int]:
    return [int(np.argmax(f[:, :, 0].mean(0) > 150)) // 4 for f in frames]


@pytest.mark.parametrize("source_fps", [15, 30, 24, 25])
def test_avi_whose_timestamps_count_whole_frames_is_resampled_without_shift(tmp_path, source_fps):
    # avi stores a frame's time as its index (time base 1 / fps): a full tick of tolerance took each frame for
    # the one before, dropping frame 0 and shifting every output frame by one source frame; half a frame of
    # tolerance showed a 24 or 25 fps video's next frame up to half a frame early
    import av

    path = tmp_path / "v.avi"
    with av.open(str(path), "w", format="avi") as out:
        vs = out.add_stream("mpeg4", rate=source_fps)
        vs.width, vs.height, vs.pix_fmt, vs.options = 128, 64, "yuv420p", {"qscale": "1"}
        for frame in _bar_frames(30):
            for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    with av.open(str(path)) as c:
        assert c.streams.video[0].time_base == Fraction(1, source_fps)
    got = VideoReader(path, fps=15, size=None, crop=None, audio=False).read_all().frames
    # output frame k (at k / 15 s) shows the last source frame at or before it
    assert _shown(got) == [k * source_fps // 15 for k in range(len(got))]
    assert len(got) == -(-30 * 15 // source_fps)  # the 30 source frames last 30 / fps s


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video_is_read_upright(tmp_path, rotation):
    # phones store portrait video sideways and say how to turn it in the header (the display matrix)
    import av

    picture = np.full((48, 64, 3), 60, np.uint8)
    picture[:8] = 250  # a bright band along the stored picture's top edge
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.set_display_rotation(rotation)  # counter-clockwise degrees, as ffmpeg's display matrix
        for _ in range(10):
            for packet in vs.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    info = probe_video(path)
    frame = VideoReader(path, fps=15, size=None, crop=None, audio=False).read_all().frames[0]
    assert frame.shape[:2] == (info.height, info.width) == ((48, 64) if rotation == 180 else (64, 48))
    edges = {"top": frame[:6], "bottom": frame[-6:], "left": frame[:, :6], "right": frame[:, -6:]}
    bright = {name for name, edge in edges.items() if edge.mean() > 200}
    # turned counter-clockwise by 90 the top edge is on the left; clockwise, on the right; 180: at the bottom
    assert bright == {{90: "left", -90: "right", 180: "bottom"}[rotation]}


def test_audio_after_a_dropout_stays_aligned_with_its_frames(tmp_path):
    # a recording whose audio has no packets from 0.5 s to 1.0 s: the sound after the gap must not move earlier
    from av_helpers import write_timed_audio_mkv

    fps, rate = 30, 16000
    pcm = np.zeros(2 * rate, np.float32)
    pcm[int(1.4 * rate) : int(1.4 * rate) + 400] = 0.8 * np.sin(np.arange(400) * 0.9)
    frames = [np.full((48, 64, 3), 250 if i == 42 else 60, np.uint8) for i in range(60)]
    # the dropout: no samples, and the timestamps go on
    packets = [(i, pcm[i : i + 800]) for i in range(0, len(pcm), 800) if not 0.5 * rate <= i < 1.0 * rate]
    path = write_timed_audio_mkv(tmp_path / "dropout.mkv", frames, fps, rate, packets)
    clip, bright, loud = _bright_frames_and_loud_windows(path)
    assert bright == loud == [21]  # 1.4 s at 15 fps
    assert np.abs(clip.audio[8:14]).max() == 0.0  # the dropout (0.53-0.93 s) is silence


def test_damaged_audio_track_raises_a_video_error_naming_the_file(tmp_path):
    import av

    path = tmp_path / "bad_audio.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("mp3", rate=44100)
        audio.layout = "mono"
        for _ in range(30):
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), "rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        rng = np.random.default_rng(0)
        for i in range(40):  # packets of random bytes where mp3 frames should be
            packet = av.Packet(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = audio, i * 1152, i * 1152, Fraction(1, 44100)
            out.mux(packet)
    with pytest.raises(VideoError, match="bad_audio.mkv.*damaged"):
        VideoReader(path, fps=15, size=None, crop=None).read_all()
    assert len(VideoReader(path, fps=15, size=None, crop=None, audio=False).read_all().frames) == 15  # TDC can


def test_audio_that_starts_before_the_video_stays_aligned(tmp_path):
    import av

    # the video starts 0.5 s into the file, the audio at 0; a bright frame and a tone burst both at 1.1 s
    fps, rate, path = 30, 44100, tmp_path / "late_video.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 250 if i == 18 else 60, np.uint8), "rgb24")
            frame.pts, frame.time_base = 15 + i, Fraction(1, fps)  # 15 / 30 = 0.5 s
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        pcm = np.zeros(int(2.5 * rate), np.float32)
        pcm[int(1.1 * rate) : int(1.1 * rate) + rate // fps] = 0.6 * np.sin(np.arange(rate // fps) / 3)
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        for i in range(0, len(pcm), 1024):
            chunk = av.AudioFrame.from_ndarray(pcm[None, i : i + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, i, Fraction(1, rate)
            for resampled in resampler.resample(chunk):
                for packet in audio.encode(resampled):
                    out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    _, bright, loud = _bright_frames_and_loud_windows(path)
    assert bright == loud == [9]  # (1.1 s - 0.5 s) * 15 fps: the sound lands on its frame


def test_video_without_audio_works_for_tdc_but_cmc_says_it_needs_audio(tmp_path):
    frames, _ = _synthetic(20)
    path = write_av(tmp_path / "silent.mp4", iter(frames), FPS)
    clip = VideoReader(path, fps=15, size=(32, 32)).read_all()
    assert clip.audio is None and clip.frames.shape == (10, 32, 32, 3)
    with pytest.raises(VideoError, match="no audio track"):
        VideoReader(path, require_audio=True)


def test_unreadable_and_empty_videos_raise_clear_errors(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        VideoReader(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="is a folder, not a video file"):  # it said "does not exist"
        VideoReader(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        VideoReader(tmp_path / "empty.mp4")
    (tmp_path / "demo_0.json").write_text('{"style": 3}')  # the sidecar a demo_0.* glob also picks
    with pytest.raises(VideoError, match=r"is a JSON file, not a video .*demo_0\.\[mw\]\*"):
        VideoReader(tmp_path / "demo_0.json")
    (tmp_path / "junk.webm").write_bytes(b"this is not a video" * 50)
    with pytest.raises(VideoError, match="Cannot read"):
        VideoReader(tmp_path / "junk.webm")


def test_max_frames_is_exact_and_a_bad_one_is_refused(tmp_path):
    frames, _ = _synthetic(20)
    path = write_av(tmp_path / "v.mp4", iter(frames), FPS)
    assert len(VideoReader(path, fps=FPS, size=(32, 32), max_frames=3).read_all().frames) == 3
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        VideoReader(path, max_frames=0)


def test_write_av_pads_smaller_frames_and_refuses_larger_ones_leaving_no_file(tmp_path):
    small = np.full((3, 40, 50, 3), 200, np.uint8)
    path = write_av(tmp_path / "padded.mp4", iter(small), FPS, size=(64, 48))
    assert (probe_video(path).width, probe_video(path).height) == (64, 48)
    big = np.zeros((2, 60, 80, 3), np.uint8)
    with pytest.raises(ValueError, match="does not fit the 64x48 video"):
        write_av(tmp_path / "big.mp4", iter(big), FPS, size=(64, 48))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["padded.mp4"]  # nothing half-written remains


def test_detect_borders_ignores_intro_card_and_dark_frames():
    frames = np.zeros((40, 60, 80, 3), np.uint8)
    frames[:, 5:55, 10:70] = 120  # pillar+letterbox around the game
    frames[:8] = 200  # an intro card filling the frame
    frames[20:22] = 0  # a fade to black
    assert detect_borders(frames) == CropBox(5, 5, 10, 10)
    # an even number of windows, half of them with the intro: a band that was measured, not the mean of 0 and 5
    assert detect_borders(frames[4:12]) == CropBox(5, 5, 10, 10)


def test_detect_borders_samples_the_whole_video_past_a_long_intro(tmp_path):
    # 12 s of a bright full-frame intro card, then 18 s of letterboxed play (30 fps, 900 frames): the intro
    # fills 360 of the first probe_frames * stride = 600 decoded frames, but only 40% of the video
    def frames():
        for i in range(900):
            f = np.zeros((48, 64, 3), np.uint8)
            if i < 360:
                f[:] = 200
            else:
                f[8:40] = 60 + 3 * (i % 50)  # 8 black rows at the top and bottom
            yield f

    path = write_av(tmp_path / "intro.mp4", frames(), FPS, crf=10)
    assert detect_borders(path) == CropBox(8, 8, 0, 0)
    assert VideoReader(path, size=None, audio=False, max_frames=2).read_all().frames.shape == (2, 32, 64, 3)

    # a live recording (a browser's MediaRecorder, a streamed WebM) stores no length: it is found from the packets,
    # so the sample still spans the whole video (it used to be the first 600 frames: the intro, so no crop)
    live = tmp_path / "live.webm"
    with av.open(str(live), "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libvpx-vp9", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"deadline": "realtime", "crf": "30", "b": "0"}
        for i, f in enumerate(frames()):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with av.open(str(live)) as c:
        assert c.duration is None and c.streams.video[0].duration is None  # the case under test
    assert abs(probe_video(live).duration - 900 / FPS) < 0.1
    assert detect_borders(live) == CropBox(8, 8, 0, 0)


def test_styles_are_reproducible_by_seed_and_differ_across_seeds():
    assert UploaderStyle.sample(7) == UploaderStyle.sample(7)
    styles = {UploaderStyle.sample(s) for s in range(8)}
    assert len(styles) == 8
    frame = np.random.default_rng(0).integers(0, 255, (210, 160, 3), dtype=np.uint8)
    s = UploaderStyle.sample(3)
    a, b = apply_style(frame, s, t=1.0), apply_style(frame, s, t=1.0)
    assert a.shape == (s.height, s.width, 3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="box_fraction=0.999 leaves fewer than 2 of the 240 px of height"):
        UploaderStyle(width=320, height=240, box="letter", box_fraction=0.999)  # it was a cv2 assertion in resize


def test_frames_stay_on_time_when_the_first_timestamp_is_not_on_a_whole_millisecond(tmp_path):
    # t - t0 subtracts two millisecond-rounded times, so it can be off by a whole tick: a half-tick tolerance showed
    # every third output frame one source frame early
    import av

    for container in ("mkv", "webm"):
        path = tmp_path / f"offset.{container}"
        codec = "libx264" if container == "mkv" else "libvpx-vp9"
        with av.open(str(path), "w", format={"mkv": "matroska"}.get(container, container)) as out:
            vs = out.add_stream(codec, rate=30)
            vs.width, vs.height, vs.pix_fmt = 128, 64, "yuv420p"
            vs.codec_context.time_base = Fraction(1, 90_000)
            for i, frame in enumerate(_bar_frames(30)):
                f = av.VideoFrame.from_ndarray(frame, format="rgb24")
                f.pts, f.time_base = 44 + 3000 * i, Fraction(1, 90_000)  # the first frame at 0.49 ms
                for packet in vs.encode(f):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
        got = VideoReader(path, fps=15, size=None, crop=None, audio=False).read_all().frames
        assert _shown(got) == list(range(0, 30, 2)), container


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": float("inf")}, "fps .* finite number > 0"),  # used to repeat the first frame until memory ran out
        ({"fps": float("nan")}, "fps .* finite number > 0"),
        ({"fps": 0}, "fps .* finite number > 0"),
        ({"audio_rate": 0}, "audio_rate .* integer >= 1"),
        ({"chunk_frames": 0}, "chunk_frames must be an integer >= 1"),
        ({"size": (0, 17)}, r"size must be \(width, height\), both >= 1"),
    ],
)
def test_video_reader_refuses_settings_it_cannot_read_with(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):  # checked before the file is opened
        VideoReader("never_opened.mp4", **kwargs)


def test_an_mkv_whose_timestamps_start_late_has_its_own_duration_and_borders(tmp_path) -> None:
    import fractions

    import av

    # 40 s at 15 fps: a 3 s full-frame intro card, then gameplay letterboxed by 8 black rows at top and bottom.
    # FFmpeg's Matroska muxer records where the last frame ends (300 s + 40 s) as the container's length.
    def write(path, offset_s: int) -> None:
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=15)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            s.codec_context.time_base = fractions.Fraction(1, 15)
            for i in range(600):
                img = np.full((48, 64, 3), 180, np.uint8)
                if i >= 45:
                    img[:8] = img[-8:] = 0
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts, f.time_base = offset_s * 15 + i, fractions.Fraction(1, 15)
                for pkt in s.encode(f):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)

    write(tmp_path / "start0.mkv", 0)
    write(tmp_path / "start300.mkv", 300)
    for name in ("start0.mkv", "start300.mkv"):
        assert probe_video(tmp_path / name).duration == pytest.approx(40.0, abs=0.01)  # was 340 s for the late one
        # the border probes spread over the whole video, not its first 12%: the intro card does not decide the crop
        assert detect_borders(tmp_path / name) == CropBox(8, 8, 0, 0)


def test_an_mkv_whose_audio_outlasts_its_video_has_the_video_duration_and_borders(tmp_path) -> None:
    # Matroska has no stream duration: the container's (where its longest stream, here the audio, ends) was taken,
    # so the border probes spread over 4x the video and the intro card decided the crop
    frames = [np.full((64, 64, 3), 150, np.uint8)] * 90 + [
        np.pad(np.full((32, 64, 3), 150, np.uint8), ((16, 16), (0, 0), (0, 0)))
    ] * 210
    for name, seconds in (("short.mkv", 10), ("long.mkv", 40)):
        write_av(tmp_path / name, frames, 30, audio=np.full(seconds * 8000, 0.01, np.float32), audio_rate=8000, crf=35)
        assert probe_video(tmp_path / name).duration == pytest.approx(10.0, abs=0.05)
        assert detect_borders(tmp_path / name) == CropBox(16, 16, 0, 0)


def test_the_reader_finds_a_video_duration_once(tmp_path, monkeypatch) -> None:
    # the header probe and the border probes each opened the file to find its length (for an mkv with a longer
    # audio track, a seek to its end): the reader now hands the probe's duration to the border detection
    from dreamarcade.reward_models import video

    frames = [np.full((64, 64, 3), 150, np.uint8)] * 90 + [
        np.pad(np.full((32, 64, 3), 150, np.uint8), ((16, 16), (0, 0), (0, 0)))
    ] * 210
    path = write_av(tmp_path / "long.mkv", frames, 30, audio=np.full(40 * 8000, 0.01, np.float32), audio_rate=8000)
    calls = []
    real = video._duration_s
    monkeypatch.setattr(video, "_duration_s", lambda c, s: calls.append(1) or real(c, s))
    reader = VideoReader(path, size=None, max_frames=2)
    assert reader.crop == CropBox(16, 16, 0, 0)  # the probes spread over the 10 s of video, not the 40 s of audio
    assert len(calls) == 1


def test_a_video_whose_picture_size_changes_midway_is_read_at_its_first_size(tmp_path) -> None:
    # VP9 may change its size at a keyframe (a resized browser recording): np.stack of the border probes and of a
    # chunk's frames failed with "all input arrays must have the same shape"
    import fractions

    import av

    path = tmp_path / "resized.webm"

    def packets(w: int, h: int, n: int, start: int) -> list:
        codec = av.CodecContext.create("libvpx-vp9", "w")
        codec.width, codec.height, codec.pix_fmt = w, h, "yuv420p"
        codec.time_base, codec.framerate = fractions.Fraction(1, 30), fractions.Fraction(30)
        codec.options = {"deadline": "realtime", "crf": "20", "b": "0"}
        out = []
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[h // 6 : h - h // 6] = 60 + 3 * (start + i)  # black bands of 1/6 of the height at both sizes
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = start + i, fractions.Fraction(1, 30)
            out += codec.encode(f)
        return out + codec.encode(None)

    with av.open(str(path), "w", format="webm") as c:
        s = c.add_stream("libvpx-vp9", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = fractions.Fraction(1, 30)
        for pkt in packets(64, 48, 30, 0) + packets(96, 72, 30, 30):
            pkt.stream, pkt.time_base = s, fractions.Fraction(1, 30)
            c.mux(pkt)
    reader = VideoReader(path, fps=15, size=None, audio=False)
    assert reader.crop == CropBox(8, 8, 0, 0)
    frames = reader.read_all().frames
    assert frames.shape == (30, 32, 64, 3)
    # output frame k shows source frame 2k, at either size (lossy codec: a few levels)
    np.testing.assert_allclose(frames[:, 8:24, 16:48, 1].mean(axis=(1, 2)), 60 + 6 * np.arange(30), atol=4)


def test_write_av_refuses_what_it_would_write_wrong(tmp_path) -> None:
    # fps=0 wrote a 24 fps file, float frames in [0, 1] an all-black video, int frames of 300 wrapped to 44, crf 54
    # failed in the VP9 encoder naming 64, and NaN audio failed with "avcodec_send_frame() returned 22"
    frame = np.zeros((16, 16, 3), np.uint8)
    cases = [
        ({"fps": 0}, "fps must be a finite number > 0"),
        ({"fps": float("nan")}, "fps must be a finite number > 0"),
        ({"crf": 54}, "crf must be an integer from 0"),
        ({"audio": np.array([0.0, np.nan], np.float32)}, "NaN or infinite"),
        ({"audio": np.zeros((2, 100), np.float32)}, r"one mono channel \(T,\)"),
        ({"frames": [frame.astype(np.float32) / 255]}, r"\(H, W, 3\) uint8 RGB, got \(16, 16, 3\) float32"),
        ({"frames": [frame.astype(np.int64) + 300]}, "uint8 RGB, got .* int64"),
        ({"frames": [frame[:, :, 0]]}, r"uint8 RGB, got \(16, 16\) uint8"),
    ]
    for i, (kwargs, message) in enumerate(cases):
        args = {"frames": [frame] * 3, "fps": 10, **kwargs}
        with pytest.raises(ValueError, match=message):
            write_av(tmp_path / f"bad{i}.webm", args.pop("frames"), args.pop("fps"), **args)
        assert not list(tmp_path.iterdir())  # nothing left behind, not even the temporary file


@pytest.mark.parametrize("container", ["mkv", "webm"])
def test_write_av_interleaves_audio_with_the_video(tmp_path, container) -> None:
    # all the video was muxed before the audio: in a 20 s file the first audio packet came after ~10 s of video
    import av

    frames = [np.full((48, 64, 3), 90, np.uint8)] * 300  # 20 s at 15 fps
    path = write_av(tmp_path / f"v.{container}", frames, 15, audio=np.zeros(20 * 8000, np.float32), audio_rate=8000)
    with av.open(str(path)) as c:
        kinds = [pkt.stream.type for pkt in c.demux() if pkt.size]
    assert kinds.count("video") == 300 and kinds.index("audio") < 10
    first_half = kinds[: len(kinds) // 2]  # the audio keeps coming between the frames, not after them
    assert abs(first_half.count("audio") / len(first_half) - kinds.count("audio") / len(kinds)) < 0.1


def test_an_audio_file_with_cover_art_is_not_a_video(tmp_path) -> None:
    # an m4a with an embedded thumbnail (yt-dlp --embed-thumbnail) has an attached_pic "video" stream: it was read
    # as a one-frame video, or blamed as damaged
    import av

    path = tmp_path / "song.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "mono"
        cover = out.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        art = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 120, np.uint8), format="rgb24").reformat(
            format="yuvj420p"
        )
        art.pts = 0
        for packet in [*cover.encode(art), *cover.encode()]:
            out.mux(packet)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 44100), np.float32), format="flt", layout="mono")
        sound.sample_rate, sound.pts = 44100, 0
        resampler = av.AudioResampler(format=audio.codec_context.format.name, layout="mono", rate=44100)
        for chunk in [*resampler.resample(sound), *resampler.resample(None)]:
            for packet in audio.encode(chunk):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    for read in (probe_video, lambda p: VideoReader(p, fps=15, size=(32, 32), crop=None).read_all()):
        with pytest.raises(VideoError, match="has no video stream .*cover art"):
            read(path)
