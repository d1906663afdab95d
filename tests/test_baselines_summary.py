"""Run logs: ``RunLogger``'s CSVs, and ``python -m dreamarcade.baselines summary`` over them (tables, PNG, JSON)."""

from __future__ import annotations

import json

import pytest

from dreamarcade.baselines.__main__ import main as baselines_main
from dreamarcade.baselines.common import RunLogger
from dreamarcade.baselines.summary import summarize


def _run(run_dir, returns: list[float], every: int = 10_000) -> None:
    with RunLogger(run_dir, tensorboard=False) as log:
        for i, r in enumerate(returns):
            log.log_episode(step=every * (i + 1), episodic_return=r, episodic_length=every)


def test_summary_of_two_runs_tables_target_png_and_json(tmp_path, capsys) -> None:
    _run(tmp_path / "a", [-21.0] * 5 + [-10.0, 0.0, 10.0, 19.0, 21.0])  # steps 10k..100k
    _run(tmp_path / "b", [-21.0, -20.0])
    png, out_json = tmp_path / "curves.png", tmp_path / "s.json"
    argv = ["summary", str(tmp_path / "a"), str(tmp_path / "b"), "--window", "2", "--block", "50000"]
    rc = baselines_main([*argv, "--target", "18", "--png", str(png), "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| 0-50k | 4 | -21.0 | -21 | 10000 |" in text and "| 50k-100k | 5 | -0.4 | 19 | 10000 |" in text
    assert "| 100k-150k | 1 | 21.0 | 21 | 10000 |" in text
    assert "- mean of the last 2 episodes: 20.00" in text
    assert "first at step 100,000" in text  # (19 + 21) / 2 = 20 >= 18 first with the episode ending at 100k
    assert "- mean of 2 episodes >= 18: not reached" in text  # run b
    assert png.stat().st_size > 1000
    data = json.loads(out_json.read_text())
    assert [d["episodes"] for d in data] == [10, 2] and data[0]["best_mean_step"] == 100_000
    assert data[1]["blocks"] == [
        {"start": 0, "size": 50_000, "episodes": 2, "mean_return": -20.5, "best_return": -20.0, "mean_length": 1e4}
    ]


def test_summary_of_another_column_such_as_the_imitation_agents_train_return(tmp_path, capsys) -> None:
    with RunLogger(tmp_path / "imitation", tensorboard=False) as log:  # game score 0, shaped return rising
        for i in range(4):
            log.log_episode(step=10_000 * (i + 1), episodic_return=0.0, episodic_length=100, train_return=1.0 + i)
    s = summarize(tmp_path / "imitation", window=2, block=50_000, column="train_return")
    assert (s.column, s.mean_last, s.best_episode, s.blocks[0].mean_return) == ("train_return", 3.5, 4.0, 2.5)
    assert summarize(tmp_path / "imitation", window=2).mean_last == 0.0  # the game's return by default
    png = tmp_path / "train.png"
    argv = ["summary", str(tmp_path / "imitation"), "--column", "train_return", "--window", "2", "--png", str(png)]
    assert baselines_main(argv) == 0
    assert "(train_return)" in capsys.readouterr().out and png.stat().st_size > 1000
    _run(tmp_path / "dqn", [1.0, 2.0])  # an agent that does not log it: one line saying so
    assert baselines_main(["summary", str(tmp_path / "dqn"), "--column", "train_return"]) == 2
    assert "no column train_return" in capsys.readouterr().err


def test_summary_of_a_run_still_in_progress_and_of_a_short_one(tmp_path) -> None:
    _run(tmp_path, [1.0, 2.0, 3.0])
    s = summarize(tmp_path, window=20, block=10_000, target=2.0)
    assert s.mean_last == 2.0 and s.best_mean is None and s.target_step is None  # fewer than 20 episodes
    assert [b.start for b in s.blocks] == [10_000, 20_000, 30_000]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "episodes.csv").write_text("step,episodic_return,episodic_length\n")
    assert summarize(tmp_path / "empty").episodes == 0
    (tmp_path / "jerk").mkdir()  # a log without lengths still gives its table
    (tmp_path / "jerk" / "episodes.csv").write_text("step,episodic_return\n300,5.0\n")
    assert summarize(tmp_path / "jerk").blocks[0].mean_length is None
    (tmp_path / "started").mkdir()  # a run before its first finished episode: no episodes.csv yet
    (tmp_path / "started" / "metrics.csv").write_text("step,loss\n1024,0.5\n")
    assert summarize(tmp_path / "started").episodes == 0
    (tmp_path / "killed").mkdir()  # a last line cut short by a kill or a full disk is not an episode
    (tmp_path / "killed" / "episodes.csv").write_text("step,episodic_return,episodic_length\n8000,1.0,1000\n16000\n")
    assert summarize(tmp_path / "killed").episodes == 1


def test_summary_says_what_to_pass_for_a_wrong_directory_or_file(tmp_path, capsys) -> None:
    assert baselines_main(["summary", str(tmp_path / "nowhere")]) == 2
    assert "No episodes.csv in" in capsys.readouterr().err
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert baselines_main(["summary", str(tmp_path / "other.csv")]) == 2
    assert "is not an episodes log" in capsys.readouterr().err
    (tmp_path / "header_only.csv").write_text("foo,bar\n")  # read as "no finished episode logged yet", exit 0
    assert baselines_main(["summary", str(tmp_path / "header_only.csv")]) == 2
    assert "no column step or episodic_return in its header ['foo', 'bar']" in capsys.readouterr().err
    _run(tmp_path / "run", [1.0])
    with pytest.raises(SystemExit) as exc:  # the figure is always PNG data: another suffix would mislabel it
        baselines_main(["summary", str(tmp_path / "run"), "--png", str(tmp_path / "curves.svg")])
    assert exc.value.code == 2 and "ending in .png" in capsys.readouterr().err
    # outputs that cannot be written are refused before any work, and a non-finite step is not a log: one line each
    assert baselines_main(["summary", str(tmp_path / "run"), "--json", str(tmp_path)]) == 2
    assert "--json" in capsys.readouterr().err and not list(tmp_path.glob(".*.tmp"))
    assert baselines_main(["summary", str(tmp_path / "run"), "--png", str(tmp_path / "other.csv" / "c.png")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    for step in ("inf", "1e30"):
        (tmp_path / "huge.csv").write_text(f"step,episodic_return\n{step},1\n")
        assert baselines_main(["summary", str(tmp_path / "huge.csv")]) == 2
        assert "is not an episodes log" in capsys.readouterr().err


def test_run_logger_widens_the_csv_for_a_new_column_instead_of_dropping_it(tmp_path) -> None:
    import csv

    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log_metrics(1, loss=0.5)
        log.log_metrics(2, loss=0.25, eval_return=7.0)  # a column that appears only now
    with RunLogger(tmp_path, tensorboard=False) as log:  # a resumed run appends under the widened header
        log.log_metrics(3, loss=0.125, eval_return=float("nan"))
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"], r["eval_return"]) for r in rows] == [
        ("1", "0.5", ""),
        ("2", "0.25", "7.0"),
        ("3", "0.125", "nan"),
    ]


def test_run_logger_drops_a_cut_last_line_before_appending_and_tensorboard_purges_replayed_steps(tmp_path) -> None:
    from dreamarcade.baselines.common import drop_rows_after, read_episodes

    _run(tmp_path, [1.0, 2.0, 3.0], every=100)
    path = tmp_path / "episodes.csv"
    path.write_bytes(path.read_bytes()[:-5])  # killed mid-line: "300,3.0,1" without its newline
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log_episode(step=350, episodic_return=4.0, episodic_length=50)
    steps, returns = read_episodes(path)
    assert steps.tolist() == [100, 200, 350] and returns.tolist() == [1.0, 2.0, 4.0]  # was 200 -> "2.0350"
    # only the final "\n" lost: the row is whole and is kept (it was dropped as a cut one)
    path.write_bytes(path.read_bytes()[:-1])
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log_episode(step=400, episodic_return=5.0, episodic_length=50)
    assert read_episodes(path)[0].tolist() == [100, 200, 350, 400]
    # a resume from step 360 with the row of step 1500 cut to "15": drop_rows_after used to keep it as step 15 (and
    # add its newline, so no later check saw the cut), and every read of the log then failed on the short row
    path.write_bytes(path.read_bytes() + b"1500,6.0,50\r\n15")
    assert drop_rows_after(path, 360) == 3
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log_episode(step=380, episodic_return=7.0, episodic_length=50)
    assert read_episodes(path)[0].tolist() == [100, 200, 350, 380]
    # a row edited by hand: float()'s "could not convert string to float: ''" named neither file nor row
    path.write_text(path.read_text().replace("350,", ",", 1))
    with pytest.raises(ValueError, match=r"episodes.csv, line 4: step '' is not a number .*fix or delete that row"):
        drop_rows_after(path, 360)
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb_run"
    with RunLogger(tb) as log:
        for step in (100, 200, 300):
            log.log_metrics(step, loss=float(step))
    with RunLogger(tb, resumed_at=100) as log:  # resumed from the checkpoint at step 100: 200 and 300 replayed
        for step in (200, 300):
            log.log_metrics(step, loss=step + 0.5)
    events = EventAccumulator(str(tb / "tb")).Reload().Scalars("loss")
    assert [(e.step, e.value) for e in events] == [(100, 100.0), (200, 200.5), (300, 300.5)]


def test_summary_json_is_strict_and_a_cli_piped_into_a_closed_reader_ends_quietly(tmp_path) -> None:
    """A diverged run's NaN return was written as a bare NaN (most JSON readers outside Python refuse it); and
    `python -m dreamarcade list | true` ended with a BrokenPipeError traceback."""
    import subprocess
    import sys

    _run(tmp_path / "nan", [1.0, float("nan")])
    assert baselines_main(["summary", str(tmp_path / "nan"), "--json", str(tmp_path / "s.json")]) == 0
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and json.loads(text)[0]["mean_last"] is None
    for command in (["dreamarcade", "list"], ["dreamarcade.baselines", "--help"]):
        proc = subprocess.Popen([sys.executable, "-m", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # the reader is gone before the command writes
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) in (0, 141) and "Traceback" not in err, err
