"""TDC/CMC networks, pair sampling, training checkpoints/resume, cycle-consistency on constructed cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import dreamarcade
from dreamarcade.checkpoint import checkpoint_exists
from dreamarcade.errors import CheckpointError, DivergedError, VideoError
from dreamarcade.reward_models.cycle import cycle_consistency, three_cycle_consistency
from dreamarcade.reward_models.embedding import PAPER_INTERVALS, TDCCMC, EmbeddingConfig, load_embedding, stack_frames
from dreamarcade.reward_models.train_embedding import Clip, losses, sample_offsets, sample_pairs

TINY = EmbeddingConfig(
    frame_size=20,
    crop_size=16,
    channels=(4, 8, 8),
    res_blocks=1,
    hidden=16,
    embed_dim=8,
    classifier_hidden=16,
    audio_channels=(4, 4, 4, 4),
)


def test_paper_intervals_are_the_six_tdc_classes_of_the_paper():
    # Aytar et al. 2018 (TDC): K = 6 classes of frame gap dt: [0], [1], [2], [3-4], [5-20], [21-200]
    assert PAPER_INTERVALS == ((0, 0), (1, 1), (2, 2), (3, 4), (5, 20), (21, 200))
    assert EmbeddingConfig().tdc_intervals == PAPER_INTERVALS  # the default TDC task is the paper's


def test_tdc_pairs_land_in_their_class_and_classes_are_balanced():
    rng = np.random.default_rng(0)
    lengths = [300, 450, 260]
    v, i, j, k = sample_pairs(lengths, PAPER_INTERVALS, 6000, rng)
    gaps = np.abs(i - j)
    for cls, (lo, hi) in enumerate(PAPER_INTERVALS):
        assert ((gaps[k == cls] >= lo) & (gaps[k == cls] <= hi)).all()
    counts = np.bincount(k, minlength=6) / len(k)
    assert np.all(np.abs(counts - 1 / 6) < 0.03)
    assert ((i >= 0) & (j >= 0) & (i < np.array(lengths)[v]) & (j < np.array(lengths)[v])).all()
    # a 30-frame video cannot hold a [21, 200] gap above 29: the gap is capped, never out of range
    v, i, j, k = sample_pairs([30], PAPER_INTERVALS, 500, rng)
    assert np.abs(i - j).max() <= 29
    # each video as likely as another, even one too short for most classes (it was 2:1 for the long one)
    v, i, j, k = sample_pairs([300, 3], PAPER_INTERVALS, 4000, rng)
    assert abs((v == 1).mean() - 0.5) < 0.03 and (np.abs(i - j)[v == 1] <= 2).all()
    with pytest.raises(VideoError, match="no distance class"):
        sample_pairs([3], ((5, 10),), 10, rng)


def test_cmc_offsets_land_in_their_class_including_a_binary_option():
    rng = np.random.default_rng(1)
    binary = ((0, 0), (5, 10_000))
    anchors = rng.integers(0, 200, 3000)
    j, k = sample_offsets([200] * 3000, anchors, binary, rng)
    gaps = np.abs(anchors - j)
    assert (gaps[k == 0] == 0).all() and (gaps[k == 1] >= 5).all()
    assert ((j >= 0) & (j < 200)).all()
    j, k = sample_offsets([200] * 3000, anchors, PAPER_INTERVALS, rng)
    gaps = np.abs(anchors - j)
    for cls, (lo, hi) in enumerate(PAPER_INTERVALS):
        assert ((gaps[k == cls] >= lo) & (gaps[k == cls] <= hi)).all()
    # no class fits a middle anchor (each only an end's): a clear error, where the draw looped forever
    assert sample_offsets([20], np.array([3]), ((11, 12), (13, 19)), rng)[1].tolist() in ([0], [1])
    with pytest.raises(VideoError, match=r"no distance class .* fits anchor 10 of a video of 20 frames"):
        sample_offsets([20], np.array([10]), ((11, 12), (13, 19)), rng)


def test_networks_shapes_normalisation_and_bad_input():
    model = TDCCMC(TINY).eval()
    e = model.embed(torch.rand(3, 12, 16, 16))
    assert e.shape == (3, 8)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    a = model.psi(torch.randn(2, TINY.samples_per_frame * TINY.stack))
    assert a.shape == (2, 8)
    with pytest.raises(ValueError, match="expects"):
        model.embed(torch.rand(3, 12, 20, 20))
    with pytest.raises(ValueError, match="processed frames"):
        stack_frames(np.zeros((5, 30, 30, 3), np.uint8), np.arange(5), TINY)
    paper = EmbeddingConfig.paper()
    assert (paper.crop_size, paper.embed_dim, paper.channels) == (128, 1024, (32, 64, 64))
    model.train()  # refused frames leave a model in training in training
    with pytest.raises(ValueError, match="processed frames"):
        model.embed_frames(np.zeros((3, 10, 10, 3), np.uint8))
    assert model.training


def test_distance_classes_are_checked_wherever_they_come_from():
    from dreamarcade.reward_models.build_reward import first_frame_at

    bad = ((0, 0), (3, 1))  # lo > hi: sample_pairs drew gaps for it forever
    for sample in (lambda: sample_pairs([10], bad, 2, np.random.default_rng(0)),
                   lambda: sample_offsets([10], np.array([5]), bad, np.random.default_rng(0))):  # fmt: skip
        with pytest.raises(ValueError, match="0 <= lo <= hi"):
            sample()
    with pytest.raises(ValueError, match="cmc_intervals"):  # as a checkpoint's config.json gives them
        EmbeddingConfig.from_json({**TINY.to_json(), "cmc_intervals": [[0, 0], [5, -1]]})
    with pytest.raises(TypeError, match="JSON object"):  # "embedding": null
        EmbeddingConfig.from_json(None)
    assert EmbeddingConfig.from_json(TINY.to_json()) == TINY
    # overlapping classes: a gap of 3-5 frames got label 0 or 1 at random
    for bad in (((0, 5), (3, 10)), ((5, 20), (0, 0)), ((1, 1), (1, 1))):
        with pytest.raises(ValueError, match="disjoint classes in increasing order"):
            sample_pairs([30], bad, 2, np.random.default_rng(0))
    with pytest.raises(VideoError, match="beyond any video"):  # an OverflowError traceback before
        first_frame_at(1e308, 15)


def test_stack_frames_clamps_before_the_first_frame():
    frames = np.stack([np.full((20, 20, 3), i, np.uint8) for i in range(6)])
    x = stack_frames(frames, np.array([0, 5]), TINY) * 255
    # channels are 4 frames x RGB: stack ending at 0 repeats frame 0; stack ending at 5 is frames 2..5
    assert x[0].reshape(4, 3, 16, 16)[:, 0, 0, 0].round().tolist() == [0, 0, 0, 0]
    assert x[1].reshape(4, 3, 16, 16)[:, 0, 0, 0].round().tolist() == [2, 3, 4, 5]
    # a crop typo silently turned the random crop off, and indices past the video were clamped to its ends
    with pytest.raises(ValueError, match="crop must be 'random' or 'center'"):
        stack_frames(frames, np.array([0]), TINY, crop="rand")
    for idx in ([6], [-1]):
        with pytest.raises(ValueError, match=r"frame indices must be in \[0, 6\)"):
            stack_frames(frames, np.array(idx), TINY)


def test_training_step_checkpoint_round_trip_and_corruption(tmp_path):
    from dreamarcade.reward_models.train_embedding import TrainConfig, _save

    rng = np.random.default_rng(0)
    clip = Clip(
        "c",
        rng.integers(0, 255, (60, 20, 20, 3), dtype=np.uint8),
        rng.normal(size=(60, TINY.samples_per_frame)).astype(np.float32),
    )
    torch.manual_seed(0)
    model = TDCCMC(TINY)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    out = losses(model, [clip], 8, rng)
    assert {"tdc", "cmc", "loss", "tdc_acc", "cmc_acc"} <= set(out)
    out["loss"].backward()
    opt.step()
    _save(model, opt, rng, 1, tmp_path / "ck", ["a.mp4"], ["0" * 64], TrainConfig(steps=1))
    loaded, cfg = load_embedding(tmp_path / "ck")
    model.eval()
    x = torch.rand(2, 12, 16, 16)
    torch.testing.assert_close(loaded.embed(x), model.embed(x))
    assert cfg["step"] == 1
    (tmp_path / "ck" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_embedding(tmp_path / "ck")


def test_train_embedding_resumes_exactly_and_refuses_another_config(tmp_path):
    pytest.importorskip("av")
    import dataclasses

    from dreamarcade.reward_models.demo_videos import write_av
    from dreamarcade.reward_models.train_embedding import TrainConfig, train_embedding

    # a 2 s video (30 frames at the embedding's 15 fps) with a tone burst every 1/3 s, so CMC has sound events
    rng = np.random.default_rng(0)
    rate, n = TINY.audio_rate, 60
    audio = np.zeros(n * rate // 30, np.float32)
    for k in range(0, n, 10):
        s = k * rate // 30
        audio[s : s + rate // 30] = 0.6 * np.sin(2 * np.pi * 440 * np.arange(rate // 30) / rate)
    frames = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    video = str(write_av(tmp_path / "v.mp4", iter(frames), 30, audio=audio, audio_rate=rate))

    def train(out, steps, seed=0, resume=False):
        tcfg = TrainConfig(steps=steps, batch_size=8, seed=seed)
        return train_embedding([video], tmp_path / out, TINY, tcfg, resume=resume, progress=False)

    straight = train("straight", 4)
    train("resumed", 2)
    assert load_embedding(tmp_path / "resumed")[1]["step"] == 2
    (tmp_path / "resumed" / "logs").mkdir(exist_ok=True)
    (tmp_path / "resumed" / "logs" / "metrics.csv").write_text("step,loss\n3,1.0\n")  # logged after the save
    # Another seed on resume: a run restarted from scratch would differ; a resumed one restores the checkpoint's
    # weights, optimiser moments and both RNGs, so its 2 + 2 steps are exactly the 4-step run.
    resumed = train("resumed", 4, seed=1, resume=True)
    assert load_embedding(tmp_path / "resumed")[1]["step"] == 4
    assert load_embedding(tmp_path / "resumed")[1]["train"]["seed"] == 0  # the run's seed (1 was recorded)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    logged = (tmp_path / "resumed" / "logs" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in logged[1:]] == ["4"]  # step 3 replayed: dropped; the last step is logged
    with pytest.raises(ValueError, match="save_every must be >= 1"):
        train_embedding([video], tmp_path / "other", TINY, TrainConfig(steps=2, save_every=0), progress=False)
    with pytest.raises(ValueError, match=r"another embedding config \(embed_dim: 8 -> 16\)"):
        train_embedding(
            [video], tmp_path / "resumed", dataclasses.replace(TINY, embed_dim=16), TrainConfig(steps=6), resume=True
        )
    assert load_embedding(tmp_path / "resumed")[1]["step"] == 4  # the refused run left the checkpoint alone
    # another video list or sampler: the resumed run would be another run under the old record (it was accepted, and
    # the next save replaced the record's video names)
    other = str(write_av(tmp_path / "w.mp4", iter(frames), 30, audio=audio, audio_rate=rate))
    with pytest.raises(ValueError, match=r"other videos .*trained on \['v.mp4'\]"):
        train_embedding([other], tmp_path / "resumed", TINY, TrainConfig(steps=6, batch_size=8), resume=True)
    # another data set written with the same names (demo_videos writes demo_<i>.<ext>): the contents differ
    (tmp_path / "set2").mkdir()
    same_name = write_av(tmp_path / "set2" / "v.mp4", iter(frames[::-1].copy()), 30, audio=audio, audio_rate=rate)
    with pytest.raises(ValueError, match=r"other videos \(same names, other contents: v.mp4\)"):
        train_embedding([str(same_name)], tmp_path / "resumed", TINY, TrainConfig(steps=6, batch_size=8), resume=True)
    moved = tmp_path / "set3"  # the same file in another folder: the same run
    moved.mkdir()
    (moved / "v.mp4").write_bytes(Path(video).read_bytes())
    train_embedding([str(moved / "v.mp4")], tmp_path / "moved", TINY, TrainConfig(steps=1, batch_size=8))
    train_embedding([video], tmp_path / "moved", TINY, TrainConfig(steps=2, batch_size=8), resume=True)
    assert load_embedding(tmp_path / "moved")[1]["step"] == 2
    with pytest.raises(ValueError, match=r"other batch_size \(8 -> 16\), cmc_event_fraction \(0.75 -> 0.0\)"):
        tcfg = TrainConfig(steps=6, batch_size=16, cmc_event_fraction=0.0)
        train_embedding([video], tmp_path / "resumed", TINY, tcfg, resume=True)
    assert load_embedding(tmp_path / "resumed")[1]["videos"] == ["v.mp4"]
    # SIGTERM (a scheduler's kill) at the third step: it killed the run, losing every step since the last save
    from crash_helpers import sigterm_at_call

    from dreamarcade.reward_models import train_embedding as te

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(te, "losses", sigterm_at_call(te.losses, 3))
        train("stopped", 4)
    assert load_embedding(tmp_path / "stopped")[1]["step"] == 3  # saved where it stopped, not at the last save
    stopped = train("stopped", 4, resume=True)
    for name, tensor in straight.state_dict().items():
        assert torch.equal(stopped.state_dict()[name], tensor), name
    # a learning rate that blows the loss up: refused at the first NaN, before the step writes NaN weights
    with pytest.raises(DivergedError, match=r"became nan at step 2 with --lr 1e\+30: .*nothing was saved") as exc:
        tcfg = TrainConfig(steps=4, lr=1e30, batch_size=8)
        train_embedding([video], tmp_path / "nan", TINY, tcfg, progress=False)
    assert str(exc.value).endswith("'. Train again with a lower --lr.")
    assert not checkpoint_exists(tmp_path / "nan")
    with pytest.raises(DivergedError, match="its checkpoint at step 4 is intact .* Resume from it with a lower"):
        tcfg = TrainConfig(steps=8, lr=1e30, batch_size=8)
        train_embedding([video], tmp_path / "stopped", TINY, tcfg, resume=True, progress=False)
    kept = load_embedding(tmp_path / "stopped")[0]
    assert all(torch.isfinite(t).all() for t in kept.state_dict().values())
    (tmp_path / "a_file").write_text("")  # the error named --run-dir, which this command does not have
    with pytest.raises(NotADirectoryError, match=r"--out \(out_dir\) '.*a_file' is a file"):
        train_embedding([video], tmp_path / "a_file", TINY, TrainConfig(steps=2, batch_size=8), progress=False)
    # settings that trained something else than asked: refused before anything is written
    bad_settings = [
        (dataclasses.replace(TINY, cmc_weight=-1.0), TrainConfig(steps=2, batch_size=8), "--cmc-weight must be"),
        (TINY, TrainConfig(steps=2, batch_size=8, threads=0), "--threads must be >= 1"),
        (
            dataclasses.replace(TINY, cmc_intervals=((0, 0), (40, 10_000))),
            TrainConfig(steps=2, batch_size=8),
            "CMC classes \\[\\[40, 10000\\]\\]",
        ),
        (
            dataclasses.replace(TINY, cmc_intervals=((0, 0), (20, 10))),
            TrainConfig(steps=2, batch_size=8),
            "0 <= lo <= hi",
        ),
        (  # both fit the 30-frame video's ends but not its middle frame: the pair sampler looped forever
            dataclasses.replace(TINY, cmc_intervals=((16, 20), (21, 29))),
            TrainConfig(steps=2, batch_size=8),
            r"no CMC class of \[\[16, 20\], \[21, 29\]\] fits the middle frame .*at most 15 frames away",
        ),
    ]
    # TDC draws the gap first, then an anchor that fits it: classes no middle frame can use still train
    far = dataclasses.replace(TINY, tdc_intervals=((16, 20), (21, 29)))
    train_embedding([video], tmp_path / "far_tdc", far, TrainConfig(steps=1, batch_size=8), progress=False)
    three = dataclasses.replace(TINY, cmc_intervals=((0, 0), (5, 10), (40, 10_000)))
    with pytest.warns(UserWarning, match=r"CMC classes \[\[40, 10000\]\] need frame gaps .* the other 2"):
        train_embedding([video], tmp_path / "two_of_three", three, TrainConfig(steps=1, batch_size=8), progress=False)
    for cfg, tcfg, match in bad_settings:
        with pytest.raises(ValueError, match=match):
            train_embedding([video], tmp_path / "bad", cfg, tcfg, progress=False)
        assert not (tmp_path / "bad").exists()
    from dreamarcade.baselines.common import RunDirInUseError

    with pytest.raises(RunDirInUseError, match="already holds a run"):  # a fresh run would overwrite it
        train("resumed", 2)
    # killed before its first checkpoint: the resumed run starts at step 0 and its logged rows are not doubled
    (tmp_path / "early" / "logs").mkdir(parents=True)
    (tmp_path / "early" / "logs" / "metrics.csv").write_text("step,loss\n20,1.0\n")
    train("early", 2, resume=True)
    logged = (tmp_path / "early" / "logs" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in logged[1:]] == ["2"]  # step 20 dropped; the run's last step logged
    for bad, match in (
        (dict(batch_size=1), "batch_size must be >= 2"),
        (dict(cmc_event_fraction=1.5), r"cmc_event_fraction must be in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=match):
            train_embedding([video], tmp_path / "bad", TINY, TrainConfig(steps=2, **bad), progress=False)
    with pytest.raises(ValueError, match="both 0: nothing to learn"):
        silent = dataclasses.replace(TINY, tdc_weight=0.0, cmc_weight=0.0)
        train_embedding([video], tmp_path / "bad", silent, TrainConfig(steps=2), progress=False)
    # a finished embedding (the model alone, as bundled) has no training state to resume: refused, left whole
    shutil.copytree(Path(dreamarcade.__file__).parent / "assets" / "montezuma_imitation" / "embedding", tmp_path / "b")
    with pytest.raises(CheckpointError, match="without its training state .* cannot be resumed"):
        train_embedding([video], tmp_path / "b", TINY, TrainConfig(steps=2), resume=True, progress=False)
    assert load_embedding(tmp_path / "b")[1]["step"] == 4000


def test_train_embedding_cli_checks_the_held_out_videos_before_training(tmp_path, monkeypatch, capsys):
    from dreamarcade.reward_models import train_embedding as te

    missing = str(tmp_path / "missing.mp4")
    with pytest.raises(SystemExit) as exc:  # it used to train for --steps, save, and only then fail on this path
        te.main([missing, "--out", str(tmp_path / "out"), "--eval-videos", str(tmp_path / "held_out.mp4")])
    assert exc.value.code == 2 and "held_out.mp4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:  # a bad setting: a usage error
        te.main([missing, "--out", str(tmp_path / "out"), "--batch-size", "1"])
    assert exc.value.code == 2 and "batch_size must be >= 2" in capsys.readouterr().err
    # inf trained to NaN weights without a word; a negative --cmc-binary was taken as 0 (the 6-way classes)
    bads = [(["--lr", "inf"], "--lr"), (["--cmc-binary", "-1"], "--cmc-binary must be >= 0")]
    # CMC's sampling flags with CMC off: saved in the checkpoint as if used (and a resume was checked against them)
    bads += [(["--cmc-weight", "0", "--cmc-binary", "4"], "--cmc-binary set CMC's sampling, which --cmc-weight 0")]
    bads += [(["--cmc-weight=0", "--cmc-event-fraction=0.9"], "--cmc-event-fraction set CMC's sampling")]
    for bad, says in bads:
        with pytest.raises(SystemExit) as exc:
            te.main([missing, "--out", str(tmp_path / "out"), *bad])
        assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    def crash(*args, **kwargs):  # a bug in the middle of training is not bad input: its traceback is kept
        raise ValueError("a bug in the middle of a run")

    monkeypatch.setattr(te, "train_embedding", crash)
    with pytest.raises(ValueError, match="a bug in the middle of a run"):
        te.main([missing, "--out", str(tmp_path / "out")])


def test_three_cycle_consistency_needs_both_directions_around_the_cycle():
    """Frame 0 of V cycles back along V -> W -> U -> V (8 -> 7 -> 3 -> 8) but not along V -> U -> W -> V
    (8 -> 12 -> 11 -> 13): it is not consistent (either direction alone counted it, and no test noticed)."""
    v, w, u = np.array([[8.0], [16.0], [13.0]]), np.array([[19.0], [7.0], [11.0]]), np.array([[12.0], [17.0], [3.0]])
    assert three_cycle_consistency(v, w, u, tolerance=0) == pytest.approx(200 / 3)
    assert three_cycle_consistency(v, w, u, tolerance=1) == pytest.approx(200 / 3)
    assert three_cycle_consistency(v, w, u, tolerance=2) == 100.0  # 13 is frame 2: two frames from frame 0


def test_cycle_consistency_identical_is_100_and_unrelated_is_near_chance():
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(200, 16)), axis=0)  # a smooth trajectory through embedding space
    assert cycle_consistency(walk, walk) == 100.0
    assert cycle_consistency(walk, walk + rng.normal(scale=0.01, size=walk.shape)) == 100.0
    assert three_cycle_consistency(walk, walk, walk) == 100.0
    # the metric only asks for one-to-one alignment, so W's order does not matter: a shuffled copy aligns
    assert cycle_consistency(walk, rng.permutation(walk)) == 100.0
    # shuffled *content* (each V frame's embedding paired with an unrelated one) gives the chance level: a
    # v_i comes back only through a mutual nearest neighbour by accident (~30% for 16-d Gaussians, 2-cycle)
    chance2 = np.mean([cycle_consistency(rng.normal(size=(200, 16)), rng.normal(size=(200, 16))) for _ in range(5)])
    chance3 = np.mean([three_cycle_consistency(*(rng.normal(size=(200, 16)) for _ in range(3))) for _ in range(5)])
    assert 10.0 < chance2 < 45.0
    assert chance3 < chance2
    # V against a shuffled, noisy copy of itself (content still matches frame by frame): far above chance
    noisy = rng.permutation(walk + rng.normal(scale=0.3, size=walk.shape))
    assert cycle_consistency(walk, noisy) > 90.0
    with pytest.raises(ValueError):
        cycle_consistency(walk, np.zeros((0, 16)))
    with pytest.raises(ValueError, match="three non-empty"):
        three_cycle_consistency(walk, walk, np.zeros((0, 16)))
    # plain lists work (a TypeError before), and a diverged (NaN) embedding is refused instead of scored (40%)
    assert cycle_consistency(walk.tolist(), walk.tolist()) == three_cycle_consistency(*[walk.tolist()] * 3) == 100.0
    with pytest.raises(ValueError, match="NaN or inf"):
        cycle_consistency(np.full((5, 16), np.nan), walk[:5])
    # ties (a still scene: identical embeddings): the first index wins by default, so a run of them loses all but
    # its first frames; ties="any" counts any tied neighbour within the tolerance
    still = rng.normal(size=(50, 8))
    still[10:20] = still[10]
    assert cycle_consistency(still, still) == 84.0 and cycle_consistency(still, still, ties="any") == 100.0
    assert three_cycle_consistency(still, still, still, ties="any") == 100.0
    assert three_cycle_consistency(still, still, still) == 84.0
    assert cycle_consistency(walk, noisy, ties="any") >= cycle_consistency(walk, noisy)
    with pytest.raises(ValueError, match="ties must be"):
        cycle_consistency(walk, walk, ties="all")


def test_frame_stack_embedder_rejects_mismatched_input_size():
    from dreamarcade.reward_models.checkpoints import FrameStackEmbedder

    e = FrameStackEmbedder(TDCCMC(TINY))
    assert e(np.zeros((2, 4, 20, 20, 3), np.uint8)).shape == (2, 8)
    with pytest.raises(ValueError, match=r"expects \(batch, 4, 20, 20, 3\)"):
        e(np.zeros((2, 4, 54, 54, 3), np.uint8))
    # float frames went to the reference path, which divided them by 255 again: [0, 1] frames came out black
    with pytest.raises(ValueError, match="expects uint8 frame stacks .* got float32"):
        e(np.ones((2, 4, 20, 20, 3), np.float32))


def test_checkpoint_tracker_needs_one_similarity_per_checkpoint():
    from dreamarcade.reward_models.checkpoints import CheckpointTracker

    for sims in ([0.9], [0.0, 0.9, 0.95]):  # a short one left checkpoint 1 unpayable; a long one crashed later
        with pytest.raises(ValueError, match=r"each of the 2 checkpoints, got shape"):
            CheckpointTracker(2).update(np.array(sims))


def test_event_windows_and_held_out_accuracy_evaluation():
    from dreamarcade.reward_models.train_embedding import _event_windows, evaluate_accuracy

    rng = np.random.default_rng(0)
    audio = np.zeros((60, TINY.samples_per_frame), np.float32)
    audio[[10, 40]] = 0.5  # two sound events
    clip = Clip("c", rng.integers(0, 255, (60, 20, 20, 3), dtype=np.uint8), audio)
    (ev,) = _event_windows([clip], TINY, level=0.05)
    # a stack ending at i hears frames i-3..i: eventful iff it contains frame 10 or 40
    np.testing.assert_array_equal(ev, [10, 11, 12, 13, 40, 41, 42, 43])
    cfg = EmbeddingConfig(**{**TINY.to_json(), "cmc_intervals": ((0, 0), (5, 10_000))})
    cfg = EmbeddingConfig.from_json(cfg.to_json())
    model = TDCCMC(cfg).train()
    out = losses(model, [clip], 16, rng, event_fraction=1.0, events=[ev])
    assert out["cmc"].requires_grad and 0.0 <= float(out["cmc_acc"]) <= 1.0
    acc = evaluate_accuracy(model, [clip], batches=2, batch=8)
    assert {"tdc", "tdc_acc", "cmc", "cmc_acc", "loss"} <= set(acc)
    assert all(0.0 <= acc[k] <= 1.0 for k in ("tdc_acc", "cmc_acc"))
    # a fraction that rounds to one event pair: BatchNorm cannot train on one stack, so two are drawn
    assert losses(model, [clip], 32, rng, event_fraction=0.03, events=[ev])["cmc"].requires_grad
    with pytest.raises(VideoError, match="'silent' has no audio"):
        evaluate_accuracy(model, [Clip("silent", clip.frames, None)], batches=1, batch=8)
    with pytest.raises(ValueError, match="at least one non-empty video"):
        sample_pairs([0], TINY.tdc_intervals, 4, rng)
    assert len(sample_pairs(np.array([300, 900]), TINY.tdc_intervals, 4, rng)[0]) == 4  # lengths as an array
    assert model.training  # evaluation restores the training mode
    with pytest.raises(Exception, match="at least one clip"):
        evaluate_accuracy(model, [])
