"""Go-Explore demonstrations: the seeded start delay (skull phase) and the recorder skipping it."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ale_py")

from dreamarcade.envs.montezuma_search import (  # noqa: E402
    SKULL_X,
    draw_start_delay,
    go_explore,
    load_start_delays,
    make_montezuma,
    save_trajectories,
)


def test_start_delay_is_seeded_in_range_and_varies():
    delays = [draw_start_delay(s, 204) for s in range(40)]
    assert delays == [draw_start_delay(s, 204) for s in range(40)]
    assert min(delays) >= 0 and max(delays) < 204
    assert len(set(delays)) > 20
    assert draw_start_delay(3, 0) == 0
    with pytest.raises(ValueError, match="max_start_delay"):
        draw_start_delay(0, -1)


def test_search_starts_after_the_delay_so_the_skull_phase_differs(tmp_path):
    r = go_explore(seed=0, max_steps=80, explore_steps=10, start_delay=30, leave_room=True)
    assert r.start_delay == 30 and r.actions[:30] == [0] * 30 and r.steps >= 30
    path = save_trajectories(tmp_path / "t.json", [r])
    assert load_start_delays(path) == [30]
    data = json.loads(path.read_text())
    del data["trajectories"][0]["start_delay"]  # files written before the option read as delay 0
    path.write_text(json.dumps(data))
    assert load_start_delays(path) == [0]
    # the skull (ram[47]) is somewhere else when the player starts after 30 NOOPs than at power-on
    env = make_montezuma()
    env.reset(seed=0)
    x0 = int(env.unwrapped.ale.getRAM()[SKULL_X])
    for _ in range(30):
        env.step(0)
    assert int(env.unwrapped.ale.getRAM()[SKULL_X]) != x0
    env.close()
    with pytest.raises(ValueError, match="start_delay"):
        go_explore(seed=0, max_steps=10, start_delay=-1)


def test_recorder_starts_the_video_when_the_player_starts(tmp_path):
    pytest.importorskip("av")
    from dreamarcade.reward_models.demo_videos import UploaderStyle, record_demo
    from dreamarcade.reward_models.video import read_video

    style = UploaderStyle(width=160, height=120, fps=60.0, container="mkv", crf=10)
    actions = [0] * 12 + [3] * 6  # 12 NOOPs then RIGHT
    full = record_demo(actions, tmp_path / "full.mkv", style, with_audio=False)
    cut = record_demo(actions, tmp_path / "cut.mkv", style, with_audio=False, skip_steps=12)
    assert full["skipped_steps"] == 0 and cut["skipped_steps"] == 12
    a = read_video(tmp_path / "full.mkv", fps=60, size=(40, 40), audio=False).frames.astype(np.int16)
    b = read_video(tmp_path / "cut.mkv", fps=60, size=(40, 40), audio=False).frames.astype(np.int16)
    assert len(a) - len(b) == 12 * 4
    record_demo([0] * 61, tmp_path / "odd.mkv", style, with_audio=False)  # 245 frames: 245 / 60 * 60 < 245
    assert len(read_video(tmp_path / "odd.mkv", fps=60, size=(8, 8), audio=False).frames) == 245
    # the cut video's first frame is the full video's frame 48 (lossy codec: close, not equal)
    assert np.abs(b[0] - a[48]).mean() < np.abs(b[0] - a[0]).mean()
    with pytest.raises(ValueError, match="skip_steps"):
        record_demo(actions, tmp_path / "bad.mkv", style, skip_steps=19)


def test_gameplay_audio_starts_silent_not_with_a_full_scale_click():
    # the reset observation's sound is all zeros: read as 128-centred PCM, its 512 samples were -1.0
    from dreamarcade.reward_models.demo_videos import render_gameplay

    frames, audio, _ = render_gameplay([0] * 5)
    assert len(audio) == 512 * len(frames)
    assert np.abs(audio[:512]).max() == 0.0


def test_recorder_writes_the_sidecar_before_the_video(tmp_path, monkeypatch):
    # build_reward takes the gameplay start from the sidecar (0 if it is missing): a kill between the two writes
    # must never leave a video without it
    pytest.importorskip("av")
    import dreamarcade.reward_models.demo_videos as dv

    real_write_av, seen = dv.write_av, []

    def write_av(path, *args, **kwargs):
        seen.append(json.loads(path.with_suffix(".json").read_text())["gameplay_start_s"])
        return real_write_av(path, *args, **kwargs)

    monkeypatch.setattr(dv, "write_av", write_av)
    style = dv.UploaderStyle(width=160, height=120, fps=30.0, container="mkv", crf=10, start_offset_s=0.2)
    dv.record_demo([0] * 6, tmp_path / "demo.mkv", style, with_audio=False)
    assert seen == [0.2] and (tmp_path / "demo.mkv").is_file()


def test_recorder_with_the_same_seed_writes_the_same_video(tmp_path):
    pytest.importorskip("av")
    from dreamarcade.reward_models.demo_videos import UploaderStyle, record_demo
    from dreamarcade.reward_models.video import read_video

    # small, lossless audio (mkv: FLAC); the watermark and the intro card depend on the style seed
    style = UploaderStyle(width=160, height=120, fps=30.0, container="mkv", crf=10, overlay="both", start_offset_s=0.2)
    actions = [0] * 4 + [1] * 4 + [3] * 8  # NOOPs, a jump, RIGHT: 64 ALE frames

    def record(name, seed):
        meta = record_demo(actions, tmp_path / f"{name}.mkv", style, style_seed=seed)
        return meta, read_video(tmp_path / f"{name}.mkv", fps=30, size=None, audio_rate=7680)

    meta_a, a = record("a", 3)
    meta_b, b = record("b", 3)
    meta_c, c = record("c", 4)
    assert len(a.frames) == 6 + 32  # 0.2 s of intro card, then 64 / 60 s of gameplay at 30 fps
    assert np.abs(a.audio).max() > 0.01  # the game's sound is there, so equal audio means something
    assert meta_a == meta_b and (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert meta_c["style_seed"] == 4 and not np.array_equal(a.frames, c.frames)  # another uploader's watermark


def test_cli_saves_each_trajectory_and_resumes_without_redoing_them(tmp_path, capsys, monkeypatch):
    from dreamarcade.envs import montezuma_search
    from dreamarcade.envs.montezuma_search import load_results, main

    searched = []
    real_search = montezuma_search.go_explore

    def recording_search(**kwargs):  # the real search; only records which seeds the CLI ran
        searched.append(kwargs["seed"])
        return real_search(**kwargs)

    monkeypatch.setattr(montezuma_search, "go_explore", recording_search)
    out = tmp_path / "sub" / "t.json"
    base = ["--seed", "5", "--max-steps", "40", "--max-start-delay", "8", "--target-score", "0", "--out", str(out)]
    base.append("--no-leave-room")  # a target 40 steps can reach: the score alone
    assert main(["--n", "1", *base]) == 0
    first = load_results(out)
    assert [r.seed for r in first] == [5]
    # an existing file is never overwritten by a new search
    assert main(["--n", "2", *base]) == 2
    assert "--resume" in capsys.readouterr().err
    assert load_results(out) == first
    # resume keeps the saved search as it is and runs only the missing seed
    assert main(["--n", "2", "--resume", *base]) == 0
    assert searched == [5, 6]  # seed 5 was not searched again
    both = load_results(out)
    assert both[0] == first[0] and [r.seed for r in both] == [5, 6]
    assert both[0].start_delay == draw_start_delay(5, 8) and both[1].start_delay == draw_start_delay(6, 8)
    # another --seed than the file's searches is refused
    assert main(["--n", "3", "--resume", *[a if a != "5" else "7" for a in base]]) == 2
    assert "--seed 5" in capsys.readouterr().err
    # a search that falls short of the target is saved but fails the command (it exited 0 and "wrote" it), and a
    # resume searches it again (it was kept forever, then recorded as a demonstration)
    short = [
        "--n",
        "1",
        "--seed",
        "5",
        "--max-steps",
        "40",
        "--max-start-delay",
        "8",
        "--out",
        str(tmp_path / "s.json"),
    ]
    assert main(short) == 1
    assert "seeds [5] did not reach --target-score 400.0 and leave the first room" in capsys.readouterr().err
    searched.clear()
    assert main([*short, "--resume"]) == 1
    assert searched == [5] and "searching seed 5 again" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a traceback (IsADirectoryError) before
        main(["--resume", "--out", str(tmp_path)])
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # under a file: refused before the search, not when its result is written
        main(["--out", str(tmp_path / "s.json" / "t.json")])
    assert "s.json' is a file, not a folder" in capsys.readouterr().err
    assert searched == [5]


def test_cli_and_recorder_refuse_what_would_silently_do_the_wrong_thing(tmp_path, capsys):
    from dreamarcade.envs.montezuma_search import load_trajectories, main
    from dreamarcade.reward_models import demo_videos
    from dreamarcade.reward_models.demo_videos import UploaderStyle, record_demo

    with pytest.raises(SystemExit):  # it printed "wrote" for a file it never created
        main(["--n", "0", "--out", str(tmp_path / "n0.json")])
    assert "--n must be >= 1" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="is not a trajectory file"):
        load_trajectories(tmp_path / "list.json")
    (tmp_path / "t.json").write_text(json.dumps({"trajectories": [{"actions": [0] * 40, "start_delay": 0}]}))
    for argv, message in (
        (["--trajectories", str(tmp_path / "typo.json")], "no such file"),  # it started a 400k-step search
        (["--pairs", "0-5"], "TRAJ:STYLE_SEED pairs"),
        # the searches' settings with a trajectory file: they did nothing, without a word
        (["--trajectories", str(tmp_path / "t.json"), "--search-steps=10"], "--search-steps set the searches"),
        (["--trajectories", str(tmp_path / "t.json"), "--max-start-delay", "0"], "--max-start-delay set the"),
    ):
        with pytest.raises(SystemExit):
            demo_videos.main([*argv, "--out", str(tmp_path / "videos")])
        assert message in capsys.readouterr().err
    # a trajectory file that is no JSON, or holds a failed search, and settings the recorder would get wrong: one
    # usage line each (they were tracebacks, or --n 0 wrote an empty trajectories.json and exited 0)
    (tmp_path / "text.json").write_text("not json")
    (tmp_path / "failed.json").write_text(json.dumps({"trajectories": [{"actions": [0, 0, 0], "start_delay": 3}]}))
    for argv, message in (
        (["--trajectories", str(tmp_path / "text.json")], "is not a trajectory file"),
        (["--trajectories", str(tmp_path / "failed.json"), "--n", "1"], "trajectory 0 of"),
        # fewer trajectories than --n: it wrote fewer videos without a word, and the next steps name demo_0..3
        (["--trajectories", str(tmp_path / "failed.json")], "--n 4 asks for 4 videos, but"),
        (["--n", "0"], "--n must be >= 1"),
        (["--max-start-delay", "-1"], "--max-start-delay >= 0"),
    ):
        with pytest.raises(SystemExit):
            demo_videos.main([*argv, "--out", str(tmp_path / "videos")])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume", "--out", str(tmp_path / "text.json")])
    assert "is not a trajectory file" in capsys.readouterr().err
    for actions in ([99, 0], [-1, 0], [0.5], "0"):  # -1 played the last action; 99 failed inside ale-py
        (tmp_path / "bad_actions.json").write_text(json.dumps({"trajectories": [{"actions": actions}]}))
        with pytest.raises(ValueError, match="trajectory 0's actions must be a list of ALE action indices 0-17"):
            load_trajectories(tmp_path / "bad_actions.json")
    (tmp_path / "a_file").write_text("")
    for out, says in ((tmp_path / "a_file", "is a file"), (tmp_path / "a_file" / "videos", "lies under")):
        with pytest.raises(SystemExit):  # FileExistsError and NotADirectoryError tracebacks before
            demo_videos.main(["--out", str(out)])
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit):  # it searched, wrote its trajectories, then found no gameplay
        demo_videos.main(["--search-steps", "0", "--out", str(tmp_path / "none")])
    assert "--search-steps must be >= 1" in capsys.readouterr().err and not (tmp_path / "none").exists()
    for bad, match in (
        (dict(box="letterbox"), "box must be one of"),  # was silently no box
        (dict(container="avi"), "container must be one of"),  # failed after writing the sidecar
        (dict(overlay="logo"), "overlay must be one of"),
        (dict(box="letter", box_fraction=1.5), r"box_fraction must be in \[0, 1\)"),  # an OpenCV assertion
        (dict(width=0), "width must be an integer >= 1"),
        (dict(fps=0.0), "fps must be > 0"),
    ):
        with pytest.raises(ValueError, match=match):
            UploaderStyle(**bad)
    with pytest.raises(ValueError, match="would hold no gameplay"):  # a failed search: only its start delay
        record_demo([0, 0, 0], tmp_path / "d.mp4", UploaderStyle(fps=30, start_offset_s=0), skip_steps=3)
    assert not (tmp_path / "d.json").exists()


def test_search_and_recording_refuse_what_they_would_get_wrong_before_the_work(tmp_path, capsys):
    """Found by a review: each of these ran minutes of searching (or played the game) before failing, lost finished
    searches, counted a search that never left room 1 as done, or left files that belong to another run."""
    from dreamarcade.envs import montezuma_search
    from dreamarcade.envs.montezuma_search import SearchResult, draw_start_delay, save_trajectories
    from dreamarcade.reward_models import demo_videos
    from dreamarcade.reward_models.demo_videos import UploaderStyle, record_demo, write_av

    # a --pairs trajectory that --n searches cannot give: refused before the searches
    with pytest.raises(SystemExit):
        demo_videos.main(["--n", "1", "--pairs", "5:1", "--out", str(tmp_path / "v")])
    assert "--pairs names trajectory 5, but --n 1 searches 0 to 0" in capsys.readouterr().err
    # a rerun with another --seed into a used --out: demo_0 in another container beside the old one
    good = {"trajectories": [{"actions": [0] * 40, "start_delay": 0}]}
    (tmp_path / "t.json").write_text(json.dumps(good))
    out = tmp_path / "v"
    out.mkdir(exist_ok=True)
    other = "mp4" if UploaderStyle.sample(0).container != "mp4" else "mkv"
    (out / f"demo_0.{other}").write_bytes(b"an older run's video")
    with pytest.raises(SystemExit):
        demo_videos.main(["--trajectories", str(tmp_path / "t.json"), "--n", "1", "--out", str(out)])
    assert "holds videos of another run" in capsys.readouterr().err and not (out / "demo_0.json").exists()
    # style and writer settings that failed after the sidecar was written, or wrote another rate
    with pytest.raises(ValueError, match="UploaderStyle.crf must be an integer from 0 to 51"):
        UploaderStyle(crf=60)
    with pytest.raises(ValueError, match="no rate with a denominator up to 1001"):
        write_av(tmp_path / "slow.mp4", iter([np.zeros((8, 8, 3), np.uint8)] * 2), 0.0004)
    with pytest.raises(ValueError, match="give no video frame"):
        record_demo([0] * 3, tmp_path / "few.mp4", UploaderStyle(fps=0.3, start_offset_s=0.0))
    assert not (tmp_path / "few.json").exists()
    # a resume: a search that reached the score but never left the room is not done; start delays must be the
    # ones --max-start-delay gives; a hand-edited record is one line, not a traceback
    path = tmp_path / "s.json"
    stuck = SearchResult([0] * 5, 400.0, 1, 5, 0, False, draw_start_delay(0, 0))
    save_trajectories(path, [stuck])
    assert not montezuma_search.reached_target(stuck, 400) and montezuma_search.reached_target(
        SearchResult([0] * 5, 400.0, 1, 5, 0, True), 400
    )
    assert montezuma_search.main(["--resume", "--out", str(path), "--n", "1", "--max-start-delay", "100"]) == 2
    assert "which --max-start-delay 100 does not give" in capsys.readouterr().err
    data = json.loads(path.read_text())
    data["trajectories"][0]["best_score"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit):
        montezuma_search.main(["--resume", "--out", str(path), "--n", "1", "--max-start-delay", "0"])
    assert "fields of the wrong type or range (best_score)" in capsys.readouterr().err
