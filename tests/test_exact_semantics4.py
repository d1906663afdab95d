"""Exact semantics of video reading (border thresholds and bands, audio overlaps), the demo styles, the Go-Explore
search, the count bonus, the frame-deduplicating replay buffer, ``summary``, the step logs, world-model collection
and calibrate-done, each pinned where a plausible one-line bug (found by mutation testing: a changed bound, index,
constant or order) kept every other test passing. Videos are written with PyAV in the test; ALE runs for real."""

from __future__ import annotations

import numpy as np

from dreamarcade.baselines.summary import summarize
from dreamarcade.reward_models.video import BORDER_THRESHOLD, CropBox, VideoReader, detect_borders


# --- video: borders -----------------------------------------------------------------------------------------------
def test_a_border_row_at_the_threshold_is_not_black():
    # "rows and columns whose brightest pixel stays below threshold": a row that reaches it is picture
    frames = np.zeros((4, 40, 50, 3), np.uint8)
    frames[:, 10:30, 10:40] = 120
    frames[:, 5:10, 10:40] = BORDER_THRESHOLD  # dim picture rows at exactly the threshold
    frames[:, 30:33, 10:40] = BORDER_THRESHOLD - 1  # rows just below it are border
    assert detect_borders(frames) == CropBox(top=5, bottom=10, left=10, right=10)


def test_each_edge_band_is_measured_from_its_own_edge():
    frames = np.zeros((4, 60, 80, 3), np.uint8)
    frames[:, 4:50, 6:72] = 90  # top 4, bottom 10, left 6, right 8
    assert detect_borders(frames) == CropBox(top=4, bottom=10, left=6, right=8)


def test_no_more_than_max_fraction_of_a_side_is_cut():
    # a frame dark but for its last rows and columns: at most 45% of each dimension goes from one side
    frames = np.zeros((4, 100, 60, 3), np.uint8)
    frames[:, 95:, 57:] = 200
    box = detect_borders(frames, max_fraction=0.45)
    assert (box.top, box.bottom, box.left, box.right) == (45, 0, 27, 0)


def test_a_short_video_is_measured_on_the_maximum_over_windows_of_samples(tmp_path):
    # every other frame is dark in the upper game area: over windows of 2 samples the game starts at row 8 in
    # each, so the dark moments are not taken for a border (per sample, half would say row 20, the upper median)
    from dreamarcade.reward_models.demo_videos import write_av

    frames = []
    for i in range(6):
        f = np.zeros((48, 64, 3), np.uint8)
        f[8:40, 4:60] = 150
        if i % 2 == 0:
            f[8:20] = 0
        frames.append(f)
    path = write_av(tmp_path / "flicker.mp4", frames, 15, crf=10)
    assert detect_borders(path, stride=1, window=2).top == 8


def test_border_probes_of_a_long_video_reach_its_end(tmp_path):
    # 4 s at 10 fps, 4 probe windows of 2 frames spread from the start to the end: the last window holds the
    # last 0.2 s. Letter-boxed: frames 12-14 and 35-39; the windows at 1.27 s and 3.8 s see the box
    from dreamarcade.reward_models.demo_videos import write_av

    frames = []
    for i in range(40):
        f = np.full((48, 64, 3), 150, np.uint8)
        if 12 <= i <= 14 or i >= 35:
            f[:8] = 0
        frames.append(f)
    path = write_av(tmp_path / "late_box.mp4", frames, 10, crf=10)
    assert detect_borders(path, probe_frames=8, stride=1, window=2).top == 8


# --- video: audio -------------------------------------------------------------------------------------------------
def test_audio_packets_that_overlap_the_previous_ones_are_trimmed_not_appended(tmp_path):
    # every 800-sample audio packet starts 640 samples after the previous one (10 ms of overlap, far beyond the
    # 2 ms slack): the overlap is dropped, so a burst at 1.4 s stays on frame 21 instead of drifting later
    from av_helpers import write_timed_audio_mkv

    fps, rate = 30, 16000
    pcm = np.zeros(3 * rate, np.float32)
    pcm[int(1.4 * rate) : int(1.4 * rate) + 400] = 0.8 * np.sin(np.arange(400) * 0.9)
    frames = [np.full((48, 64, 3), 250 if i == 42 else 60, np.uint8) for i in range(60)]
    packets = [(i, pcm[i : i + 800]) for i in range(0, 2 * rate, 640)]
    path = write_timed_audio_mkv(tmp_path / "overlap.mkv", frames, fps, rate, packets)
    clip = VideoReader(path, fps=15, size=None, crop=None, audio_rate=7680).read_all()
    bright = np.flatnonzero(clip.frames.mean(axis=(1, 2, 3)) > 150).tolist()
    loud = np.flatnonzero(np.abs(clip.audio).max(axis=1) > 0.2).tolist()
    assert bright == loud == [21]


def test_audio_that_starts_after_the_first_frame_is_silence_before_it_within_a_window(tmp_path):
    # the audio track starts at 0.5 s, half-way through output window 7 ([0.467, 0.533) s at 15 fps): the window's
    # first half is silence and the track's first samples land in its second half
    from av_helpers import write_timed_audio_mkv

    fps, rate = 30, 16000
    pcm = np.zeros(rate, np.float32)
    pcm[:400] = 0.8 * np.sin(np.arange(400) * 0.9)  # a burst at the track's start (0.5-0.525 s)
    frames = [np.full((48, 64, 3), 60, np.uint8)] * 45
    packets = [(rate // 2 + i, pcm[i : i + 800]) for i in range(0, len(pcm), 800)]
    path = write_timed_audio_mkv(tmp_path / "late_audio.mkv", frames, fps, rate, packets)
    clip = VideoReader(path, fps=15, size=None, crop=None, audio_rate=7680).read_all()
    assert np.abs(clip.audio[:7]).max() == 0.0
    assert np.abs(clip.audio[7, :250]).max() == 0.0 and np.abs(clip.audio[7, 260:]).max() > 0.2


# --- summary --------------------------------------------------------------------------------------------------------
def test_summary_gives_a_best_mean_once_there_are_window_episodes(tmp_path):
    from dreamarcade.baselines.common import RunLogger

    with RunLogger(tmp_path, tensorboard=False) as log:
        for i, r in enumerate([1.0, 2.0, 3.0, 6.0]):
            log.log_episode(step=10 * (i + 1), episodic_return=r, episodic_length=1)
    s = summarize(tmp_path, window=4, target=3.0)
    assert (s.best_mean, s.best_mean_step, s.target_step) == (3.0, 40, 40)


def test_summary_of_a_column_logged_only_later_skips_the_rows_without_it(tmp_path):
    # RunLogger widens the header when train_return first appears and leaves it empty in the earlier rows
    from dreamarcade.baselines.common import RunLogger

    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log_episode(step=10, episodic_return=0.0, episodic_length=1)
        log.log_episode(step=20, episodic_return=0.0, episodic_length=1, train_return=5.0)
        log.log_episode(step=30, episodic_return=1.0, episodic_length=1, train_return=7.0)
    s = summarize(tmp_path, window=20, column="train_return")
    assert (s.episodes, s.mean_last, s.last_step) == (2, 6.0, 30)


def test_summary_target_step_is_the_first_time_the_running_mean_reached_it(tmp_path):
    from dreamarcade.baselines.common import RunLogger

    with RunLogger(tmp_path, tensorboard=False) as log:
        for i, r in enumerate([0, 10, 10, 0, 0, 10, 10, 10]):  # running mean of 2 reaches 10 at episodes 3 and 7-8
            log.log_episode(step=100 * (i + 1), episodic_return=r, episodic_length=1)
    s = summarize(tmp_path, window=2, block=1000, target=10.0)
    assert s.target_step == 300


# --- step logs ----------------------------------------------------------------------------------------------------
def test_drop_rows_after_keeps_the_rows_of_the_checkpoint_step_itself(tmp_path):
    from dreamarcade.baselines.common import drop_rows_after, read_episodes

    path = tmp_path / "episodes.csv"
    path.write_text("step,episodic_return,episodic_length\n100,1.0,5\n200,2.0,5\n300,3.0,5\n")
    assert drop_rows_after(path, 200) == 1
    assert read_episodes(path)[0].tolist() == [100, 200]


def test_drop_rows_after_never_keeps_a_cut_last_row_even_when_its_fields_are_all_there(tmp_path):
    # "0.7,1500" cut to "0.7,15": every field is present, but the step is not the one logged
    from dreamarcade.baselines.common import drop_rows_after, last_logged_step

    path = tmp_path / "metrics.csv"
    path.write_text("loss,step\n0.5,100\n0.7,15")
    assert last_logged_step(path) == 100
    assert drop_rows_after(path, 1000) == 1
    assert path.read_text().splitlines() == ["loss,step", "0.5,100"]


# --- Go-Explore search --------------------------------------------------------------------------------------------
def test_cell_key_score_level_counts_hundreds():
    from dreamarcade.envs.montezuma_search import INVENTORY, ROOM, X, Y, cell_key

    ram = np.zeros(128, np.uint8)
    ram[ROOM], ram[X], ram[Y], ram[INVENTORY] = 1, 77, 235, 0
    assert cell_key(ram, 0.0, 8, 8) == (1, 9, 29, 0, 0)
    ram[INVENTORY] = 14
    assert cell_key(ram, 100.0, 8, 8)[3:] == (1, 1)  # the key: +100, one level
    assert cell_key(ram, 399.0, 8, 8)[4] == 3 and cell_key(ram, 400.0, 8, 8)[4] == 4
    assert cell_key(ram, 0.0, 16, 4)[1:3] == (77 // 16, 235 // 4)


def test_go_explore_selects_by_the_documented_weights_and_archives_the_best_shortest_lifelong_cells(monkeypatch):
    # A spy RNG checks every cell selection against the docstring's weight, read from the archive at that moment;
    # a spy cell_key records every cell reached (its best score and, at that score, its shortest action list) and
    # marks half the cells as holding the key, so the weight's has_key factor is exercised in a short search.
    import inspect
    import math

    import dreamarcade.envs.montezuma_search as ms

    real_rng, real_key = np.random.default_rng, ms.cell_key
    seen = {"selections": 0, "revisits": 0}
    reached: dict = {}

    class SpyRNG:
        def __init__(self, seed):
            self.g = real_rng(seed)

        def __getattr__(self, name):
            return getattr(self.g, name)

        def choice(self, a, *args, p=None, **kwargs):
            if p is not None:
                loc = inspect.currentframe().f_back.f_locals
                archive, keys, bias = loc["archive"], loc["keys"], loc["score_bias"]
                weights = np.array(
                    [
                        (1 / math.sqrt(1 + archive[k].chosen) + 0.5 / math.sqrt(1 + archive[k].seen))
                        * bias ** (k[4] + k[3])
                        for k in keys
                    ]
                )
                np.testing.assert_allclose(p, weights / weights.sum())
                seen["selections"] += 1
                seen["archive"] = archive
            return self.g.choice(a, *args, p=p, **kwargs)

    def spy_key(ram, score, cell_x, cell_y):
        k = real_key(ram, score, cell_x, cell_y)
        k = (*k[:3], int(k[3] or k[1] % 2), k[4])
        loc = inspect.currentframe().f_back.f_locals
        n = len(loc["actions"]) if "actions" in loc else 0  # the start cell: no actions (no start delay)
        if "actions" in loc and k in loc["archive"]:
            seen["revisits"] += 1
        best = reached.get(k)
        if best is None or score > best[0]:
            reached[k] = (score, n)
        elif score == best[0]:
            reached[k] = (score, min(n, best[1]))
        return k

    monkeypatch.setattr(np.random, "default_rng", SpyRNG)
    monkeypatch.setattr(ms, "cell_key", spy_key)
    ms.go_explore(seed=1, max_steps=1500)
    archive = seen["archive"]
    assert any(k[3] for k in archive) and seen["selections"] > 10
    assert sum(c.chosen for c in archive.values()) == seen["selections"]  # counts survive a cell's replacement
    assert sum(c.seen for c in archive.values()) == seen["revisits"]
    assert {k: (c.score, len(c.actions)) for k, c in archive.items()} == reached
    env = ms.make_montezuma()
    env.reset(seed=0)
    ale = env.unwrapped.ale
    lives = int(ale.getRAM()[ms.LIVES])
    for cell in archive.values():  # a cell reached by losing a life is never archived
        ale.restoreState(cell.state)
        assert int(ale.getRAM()[ms.LIVES]) == lives
    env.close()


def test_go_explore_success_needs_the_room_left_only_when_asked():
    from dreamarcade.envs.montezuma_search import go_explore

    # target 0: any step scores it; without leave_room the first step is a success, with it nothing is
    assert go_explore(seed=0, max_steps=200, target_score=0.0, leave_room=False).steps == 1
    stay = go_explore(seed=0, max_steps=200, target_score=0.0, leave_room=True)
    assert stay.steps >= 200 and not stay.left_room


def test_start_delays_are_drawn_below_their_max():
    from dreamarcade.envs.montezuma_search import draw_start_delay

    assert {draw_start_delay(s, 2) for s in range(64)} == {0, 1}
    assert {draw_start_delay(s, 1) for s in range(16)} == {0}


# --- calibrate-done -----------------------------------------------------------------------------------------------
def _doom_model():
    from dreamarcade.world_models.model import WorldModel

    return WorldModel.bundled("doom")


def test_dream_lengths_count_the_step_that_ends_the_dream():
    import torch

    from dreamarcade.baselines.world_models import dream_lengths_random

    wm = _doom_model()
    wm.max_steps = 6
    with torch.no_grad():
        wm.rnn.head.bias[wm.rnn.n_mdn] = -50.0  # never done: every dream is cut at the cap, after 6 steps
    assert dream_lengths_random(wm, 4, 1.0, seed=0).tolist() == [6] * 4
    with torch.no_grad():
        wm.rnn.head.bias[wm.rnn.n_mdn] = 50.0  # done at once: one step each
    assert dream_lengths_random(wm, 4, 1.0, seed=0).tolist() == [1] * 4


def test_calibrate_done_keeps_no_shift_when_the_dream_already_has_the_target_length():
    from dreamarcade.baselines.world_models import calibrate_done_shift, dream_lengths_random

    wm = _doom_model()
    wm.max_steps = 40
    base = float(wm.rnn.head.bias.detach()[wm.rnn.n_mdn])
    target = float(dream_lengths_random(wm, 16, 1.15, seed=0).mean())
    assert calibrate_done_shift(wm, target, 1.15, episodes=16, seed=0, iters=4) == (0.0, target)
    assert float(wm.rnn.head.bias.detach()[wm.rnn.n_mdn]) == base


def test_calibrate_done_twice_records_the_total_shift_in_the_model(tmp_path, monkeypatch):
    # the bisection itself is pinned above; here a stand-in that shifts the done bias by 1.5 each time
    import json
    import shutil

    import torch

    import dreamarcade.baselines.world_models as bw
    from dreamarcade.checkpoint import load_checkpoint
    from dreamarcade.world_models.model import bundled_dir

    def shift_by_1_5(wm, target, temperature, seed=0, min_length=0):
        with torch.no_grad():
            wm.rnn.head.bias[wm.rnn.n_mdn] += 1.5
        return 1.5, target

    monkeypatch.setattr(bw, "calibrate_done_shift", shift_by_1_5)
    shutil.copytree(bundled_dir("doom"), tmp_path / "world_model")
    cfg = bw.WMConfig(env="doom", run_dir=str(tmp_path), calibrate_target=50.0)
    assert bw.step_calibrate_done(cfg)["total_shift"] == 1.5
    assert bw.step_calibrate_done(cfg)["total_shift"] == 3.0
    _, meta = load_checkpoint(tmp_path / "world_model" / "mdnrnn", kind="mdnrnn")
    assert meta["done_bias_shift"] == 3.0
    assert json.loads((tmp_path / "calibrate_done.json").read_text())["total_shift"] == 3.0


# --- world-model collection ---------------------------------------------------------------------------------------
def test_collected_dones_mark_termination_not_the_step_cap(tmp_path):
    from dreamarcade.world_models.collect import CollectJob, run_job
    from dreamarcade.world_models.rollouts import list_shards, load_shard

    run_job(CollectJob("doom", str(tmp_path), worker=0, episodes=1, seed=0, min_length=0, max_steps=15))
    data = load_shard(list_shards(tmp_path)[0])
    assert data["episode_lengths"].tolist() == [15]  # cut by the cap, alive
    assert not data["dones"].any()


# --- count bonus --------------------------------------------------------------------------------------------------
def test_cell_levels_quantize_into_exactly_levels_values():
    from dreamarcade.wrappers.exploration import CellCounter

    counter = CellCounter(beta=0.1, levels=8)
    assert set(counter.cell(np.full((80, 110), 255, np.uint8))) == {7}  # white is the top level, not a ninth
    assert set(counter.cell(np.full((80, 110), 31, np.uint8))) == {0} and set(
        counter.cell(np.full((8, 11), 32, np.uint8))
    ) == {1}


def test_loading_counts_replaces_the_counters_own():
    from dreamarcade.wrappers.exploration import CellCounter

    saved = CellCounter(beta=0.1)
    saved.bonus(np.zeros((1, 84, 84), np.uint8))
    resumed = CellCounter(beta=0.1)
    resumed.bonus(np.full((2, 84, 84), 200, np.uint8))
    resumed.load_state_tensors(saved.state_tensors())
    assert resumed.counts == saved.counts
