"""Per-checkpoint thresholds (``distinct_margin``): the demo's confusion of each checkpoint with its own earlier
frames, how it raises that checkpoint's threshold, and the wrapper, env and agent options that use it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dreamarcade.reward_models.checkpoints import (
    CheckpointTrajectory,
    build_checkpoints,
    candidate_similarities,
    demo_confusion,
    distinct_thresholds,
    match_candidates,
)
from dreamarcade.wrappers.imitation import YouTubeImitationReward, YouTubeImitationRewardVector
from tests.test_imitation_wrapper import ColourEmbedder, CorridorEnv, S


def _one_hot(places: list[int]) -> np.ndarray:
    return np.eye(8, dtype=np.float32)[places]


def test_demo_confusion_counts_only_frames_more_than_the_window_earlier():
    e = _one_hot([0, 1, 2, 1, 0, 3])  # the demo goes 0 1 2, comes back 1 0, then goes on to 3
    got = demo_confusion(e, np.array([0, 1, 3, 4, 5]), window=1)
    # frame 3 (place 1 again) and 4 (place 0 again) look like frames 1 and 0, more than one frame earlier;
    # frame 1 has only frame 0 (a neighbour) before it; frame 5 (place 3) looks like nothing earlier
    np.testing.assert_array_equal(got, [-1.0, -1.0, 1.0, 1.0, 0.0])
    # a wider window hides frame 1 from frame 3; a later revisit never confuses an earlier checkpoint
    np.testing.assert_array_equal(demo_confusion(e, np.array([1, 3]), window=2), [-1.0, 0.0])
    with pytest.raises(ValueError, match="window must be >= 0"):
        demo_confusion(e, np.array([1]), window=-1)


def test_distinct_thresholds_raise_only_confusable_checkpoints_and_cap():
    thr = distinct_thresholds(np.array([-1.0, 0.3, 0.62, 0.99]), threshold=0.5, margin=0.1)
    np.testing.assert_allclose(thr, [0.5, 0.5, 0.72, 0.9])
    np.testing.assert_allclose(distinct_thresholds(np.array([0.3]), threshold=0.95, margin=0.1), [0.95])
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
            distinct_thresholds(np.array([0.3]), margin=bad)


def test_build_checkpoints_keeps_the_confusion_and_it_round_trips(tmp_path):
    # a demo of coloured places, 16 frames each: 0 1 2 3, then back to 2 and 1
    places = [0, 1, 2, 3, 2, 1]
    frames = np.zeros((16 * len(places), S, S, 3), np.uint8)
    for i, p in enumerate(places):
        frames[16 * i : 16 * (i + 1)] = 32 * p + 5
    ck = build_checkpoints(ColourEmbedder(), frames, every=16, centre=False, confusion_window=16)
    assert ck.frame_indices.tolist() == [16, 32, 48, 64, 80] and ck.confusion_window == 16
    # the way back (places 2 and 1 at frames 64 and 80) looks exactly like the way there; the way there does not
    np.testing.assert_allclose(ck.confusion, [-1.0, 0.0, 0.0, 1.0, 1.0])
    assert build_checkpoints(ColourEmbedder(), frames, every=16, centre=False).confusion_window == 32  # 2 * every
    loaded = CheckpointTrajectory.load(ck.save(tmp_path / "ck"))
    np.testing.assert_array_equal(loaded.confusion, ck.confusion)
    assert loaded.confusion_window == 16
    with pytest.raises(ValueError, match=r"one value per checkpoint, shape \(5,\), got \(2,\)"):
        CheckpointTrajectory(ck.embeddings, ck.mean, ck.frame_indices, 16, confusion=np.zeros(2))
    with pytest.raises(ValueError, match=r"confusion holds NaN \(checkpoints \[1\]\)"):  # it could never be paid
        CheckpointTrajectory(ck.embeddings, ck.mean, ck.frame_indices, 16, confusion=[0.0, np.nan, 0.0, 0.0, 0.0])
    bad = ck.embeddings.copy()
    bad[2, 0] = np.nan
    for embeddings, mean, name in ((bad, ck.mean, "embeddings"), (ck.embeddings, ck.mean + np.inf, "mean")):
        with pytest.raises(ValueError, match=f"checkpoint {name} hold NaN or inf"):  # every similarity was NaN
            CheckpointTrajectory(embeddings, mean, ck.frame_indices, 16)


def test_build_reward_reads_the_recorder_sidecar_and_names_a_broken_one(tmp_path):
    from dreamarcade.errors import VideoError
    from dreamarcade.reward_models.build_reward import sidecar_start

    side = tmp_path / "demo.json"
    assert sidecar_start(side) == 0.0  # no sidecar: the video starts with gameplay
    side.write_text('{"gameplay_start_s": 2.5}')
    assert sidecar_start(side) == 2.5
    for text in ('{"gameplay_start_s": null}', "[1]", '{"gameplay_start_s": -1}', "not json"):
        side.write_text(text)
        with pytest.raises(VideoError, match="demo.json.*--start-s"):
            sidecar_start(side)


def test_build_reward_names_the_video_and_the_start_that_leaves_too_few_frames(tmp_path, capsys):
    pytest.importorskip("av")
    from pathlib import Path

    import dreamarcade
    from dreamarcade.errors import VideoError
    from dreamarcade.reward_models.build_reward import build_bundle, main
    from dreamarcade.reward_models.demo_videos import write_av

    emb = Path(dreamarcade.__file__).parent / "assets" / "montezuma_imitation" / "embedding"
    frames = np.random.default_rng(0).integers(0, 255, (45, 64, 64, 3), dtype=np.uint8)
    video = write_av(tmp_path / "demo.mp4", iter(frames), 15)  # 3 s at the embedding's 15 fps
    with pytest.raises(VideoError, match=r"demo.mp4' is 3.0 s long \(45 frames.*10 s, from --start-s"):
        build_bundle(emb, video, tmp_path / "out", start_s=10.0)
    (tmp_path / "demo.json").write_text('{"gameplay_start_s": 1.0}')  # leaves 30 frames: 32 are needed
    with pytest.raises(VideoError, match=r"start 1 s, from the sidecar '.*demo.json', leaves 30 frames"):
        build_bundle(emb, video, tmp_path / "out")
    with pytest.raises(SystemExit) as exc:
        main([str(emb), str(video), "--out", str(tmp_path / "out"), "--every", "0"])  # before any decoding
    assert exc.value.code == 2 and "every (the checkpoint spacing in frames) must be" in capsys.readouterr().err
    for start in ("nan", "inf", "-1"):  # tracebacks before (NaN to int, overflow, a start in frames)
        with pytest.raises(SystemExit) as exc:
            main([str(emb), str(video), "--out", str(tmp_path / "out"), "--start-s", start])
        assert exc.value.code == 2 and "--start-s (start_s) must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # --out under a file: it failed with NotADirectoryError only after the demo was decoded and embedded
    (tmp_path / "a_file").write_text("")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "bundle"):
        with pytest.raises(SystemExit) as exc:
            main([str(emb), str(tmp_path / "no_such_video.mp4"), "--out", str(out)])  # refused before the video
        assert exc.value.code == 2 and "--out (out_dir)" in capsys.readouterr().err
    # a diverged embedding (NaN weights): its checkpoints failed later with advice to rebuild them
    import shutil

    from dreamarcade.checkpoint import load_checkpoint, save_checkpoint
    from dreamarcade.errors import CheckpointError

    tensors, config = load_checkpoint(emb, kind="tdc_cmc")
    tensors = {k: v.clone() for k, v in tensors.items()}
    next(v for v in tensors.values() if v.is_floating_point()).fill_(float("nan"))
    save_checkpoint(tmp_path / "diverged", tensors, config)
    with pytest.raises(CheckpointError, match="holds NaN or inf weights: its training diverged"):
        build_bundle(tmp_path / "diverged", video, tmp_path / "out")
    shutil.rmtree(tmp_path / "diverged")
    assert not (tmp_path / "out").exists()


def test_match_candidates_checks_each_candidate_against_its_own_threshold():
    sims = np.array([[0.8, 0.6, 0.0], [0.8, 0.6, 0.0]], np.float32)
    idx, valid, nxt = candidate_similarities(sims, np.array([0, 1]), skip=1)
    # one threshold: the most similar candidate wins
    assert match_candidates(idx, valid, nxt, 0.5).tolist() == [0, 1]
    # checkpoint 0 must exceed 0.9: stream 0 is paid checkpoint 1 (0.6 > 0.5) instead; stream 1 is unchanged
    assert match_candidates(idx, valid, nxt, np.array([0.9, 0.5, 0.5])).tolist() == [1, 1]
    assert match_candidates(idx, valid, nxt, np.array([0.9, 0.7, 0.5])).tolist() == [-1, -1]


def _way_back_checkpoints(confusion: np.ndarray | None) -> CheckpointTrajectory:
    """Places 1, 2, 3, then "place 2 with the key": the embedder sees place 2 without the key at 0.86."""
    emb = _one_hot([1, 2, 3, 2])
    emb[3, 7] = 0.6
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return CheckpointTrajectory(emb, np.zeros(8, np.float32), np.arange(1, 5) * 16, 16, "hand-built", None, confusion)


def test_wrapper_distinct_margin_stops_paying_the_way_back_without_the_key():
    actions = [1, 1, 1, 2]  # places 1, 2, 3, then back to 2 (never "with the key")
    confusion = np.array([-1.0, -1.0, -1.0, 0.86])  # what demo_confusion gives: the way there looks like it
    paid = {}
    for margin in (None, 0.1):
        env = YouTubeImitationReward(
            CorridorEnv(), ColourEmbedder(), _way_back_checkpoints(confusion), mode="replace", distinct_margin=margin
        )
        env.reset(seed=0)
        paid[margin] = [env.step(a)[4]["imitation_matched"] for a in actions]
        if margin is not None:
            np.testing.assert_allclose(env.thresholds, [0.5, 0.5, 0.5, 0.9])
    assert paid[None] == [0, 1, 2, 3]  # one threshold (0.5): the way back is paid at 0.86
    assert paid[0.1] == [0, 1, 2, -1]  # per checkpoint: it needs > 0.9, the rest is paid as before


def test_wrapper_distinct_margin_needs_a_trajectory_with_confusion():
    with pytest.raises(ValueError, match="rebuild it with python -m dreamarcade.reward_models.build_reward"):
        YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), _way_back_checkpoints(None), distinct_margin=0.1)


def test_vector_wrapper_uses_the_same_per_checkpoint_thresholds():
    ck = _way_back_checkpoints(np.array([-1.0, -1.0, -1.0, 0.86]))
    venv = YouTubeImitationRewardVector(
        gym.vector.SyncVectorEnv([CorridorEnv] * 2), ColourEmbedder(), ck, distinct_margin=0.1
    )
    venv.reset(seed=0)
    np.testing.assert_allclose(venv.thresholds, [0.5, 0.5, 0.5, 0.9])
    matched = [venv.step(np.array(a))[4]["imitation_matched"].tolist() for a in ([1, 1], [1, 0], [1, 1], [2, 1])]
    assert matched == [[0, 0], [1, -1], [2, 1], [-1, 2]]  # env 0 walks back to place 2: not paid checkpoint 3


@pytest.mark.parametrize("bad", ["nan", "-0.1", "inf"])
def test_agent_cli_refuses_a_margin_that_is_not_a_finite_number_at_least_0(bad, capsys):
    from dreamarcade.baselines.imitation import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--distinct-margin", bad])
    assert "must be a finite number >= 0" in capsys.readouterr().err
    assert build_parser().parse_args(["train", "--distinct-margin", "0.1"]).distinct_margin == 0.1
    # the agent's default since the thirtieth session; "none" is the paper's one threshold for all checkpoints
    assert build_parser().parse_args(["train"]).distinct_margin == 0.1
    assert build_parser().parse_args(["train", "--distinct-margin", "none"]).distinct_margin is None
