"""Run bookkeeping of the Sonic protocol and JERK: one run per directory, stops and resumes that never double-count.

On Airstriker (stable-retro's shipped ROM, ``scenario="scenario"``), the only stable-retro game that needs no ROM
import; a stop (SIGTERM) or a crash is simulated by a thin wrapper around the real env, which is still the one
stepped.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_retro")

from crash_helpers import CrashAtStep  # noqa: E402

from dreamarcade.baselines import ppo_sonic  # noqa: E402
from dreamarcade.baselines.jerk import JERKConfig, run_jerk  # noqa: E402
from dreamarcade.baselines.ppo import PPOConfig  # noqa: E402
from dreamarcade.envs.sonic import make_contest_env  # noqa: E402
from dreamarcade.errors import CheckpointError  # noqa: E402

AIR = ("Airstriker-Genesis", "Level1")  # Airstriker has a single save state, so the protocol runs one level
LEVELS = [AIR]
CFG = PPOConfig(num_steps=32, num_minibatches=2, update_epochs=1, checkpoint_every_updates=100)


class _SigtermAtStep(gym.Wrapper):
    """Sends SIGTERM to the training process at its ``at``-th step (a user stopping the run)."""

    def __init__(self, env, pid, at):
        super().__init__(env)
        self.pid, self.at, self.steps = pid, at, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.at:
            os.kill(self.pid, signal.SIGTERM)
        return self.env.step(action)


def _sigterm_during_the_level(monkeypatch, at):
    """The protocol's real level env (Airstriker in a worker process), with a SIGTERM sent at its ``at``-th step."""
    pid = os.getpid()  # the env runs in a worker process; the signal goes to the training process
    real_level_env_fn = ppo_sonic.level_env_fn

    def level_env_fn(*args, **kwargs):
        real = real_level_env_fn(*args, **kwargs)
        return lambda: _SigtermAtStep(real(), pid, at)

    monkeypatch.setattr(ppo_sonic, "level_env_fn", level_env_fn)


def _protocol(run_dir, **kwargs):
    kwargs = {
        "timesteps": 128,
        "label": "PPO (from scratch)",
        "scenario": "scenario",
        "max_episode_steps": 25,
        "progress": False,
        **kwargs,
    }
    return ppo_sonic.sonic_protocol(LEVELS, CFG, run_dir, **kwargs)


def test_a_stopped_protocol_scores_nothing_partial_and_resumes(tmp_path, monkeypatch):
    _sigterm_during_the_level(monkeypatch, at=40)
    before = signal.getsignal(signal.SIGTERM)
    stopped = _protocol(tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before
    assert stopped["stopped_early"] and stopped["scores"] == {}  # the level stopped after 64 of 128 steps
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == {}
    level_dir = tmp_path / "Airstriker-Genesis_Level1"
    with open(level_dir / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [32, 64]

    monkeypatch.undo()  # the real level env, unwrapped
    done = _protocol(tmp_path)
    assert "stopped_early" not in done and set(done["scores"]) == {"Airstriker-Genesis:Level1"}
    with open(level_dir / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [32, 64, 96, 128]  # continued from step 64
    with open(level_dir / "episodes.csv", newline="") as f:
        returns = [float(r["episodic_return"]) for r in csv.DictReader(f)]
    score = done["scores"]["Airstriker-Genesis:Level1"]
    assert score["episodes"] == len(returns) >= 4  # 25-step episodes over 128 steps, none counted twice
    assert score["score"] == pytest.approx(np.mean(returns)) and done["mean_score"] == score["score"]


def test_a_stop_in_a_levels_last_update_scores_it_and_begins_no_other(tmp_path, monkeypatch):
    # train_ppo finishes a level whose last update the stop lands in (stopped_early False): the protocol then went
    # on to train the next level in full. Two stand-in level names both play Airstriker's only save state.
    pid, real_level_env_fn = os.getpid(), ppo_sonic.level_env_fn

    def level_env_fn(game, state, *args, **kwargs):
        real = real_level_env_fn(*AIR, *args, **kwargs)
        return (lambda: _SigtermAtStep(real(), pid, 100)) if state == "First" else real  # update 4 of 4

    monkeypatch.setattr(ppo_sonic, "level_env_fn", level_env_fn)
    monkeypatch.setattr(ppo_sonic, "_check_levels", lambda levels: None)
    monkeypatch.setattr(ppo_sonic, "check_level_settings", lambda *args: None)
    levels = [(AIR[0], "First"), (AIR[0], "Second")]
    out = ppo_sonic.sonic_protocol(
        levels, CFG, tmp_path, timesteps=128, scenario="scenario", max_episode_steps=25, progress=False
    )
    assert out["stopped_early"] and set(out["scores"]) == {f"{AIR[0]}:First"}
    assert not (tmp_path / f"{AIR[0]}_Second").exists()


def test_a_protocol_dir_refuses_another_label_checkpoint_or_budget(tmp_path, monkeypatch):
    _sigterm_during_the_level(monkeypatch, at=40)
    _protocol(tmp_path)  # stopped during the first level: scores.json already records this run's settings
    with pytest.raises(ValueError, match=r"label='PPO \(from scratch\)'.*label='Joint PPO \+ fine-tune'.*--run-dir"):
        _protocol(tmp_path, label="Joint PPO + fine-tune")
    with pytest.raises(ValueError, match="init_checkpoint=''"):
        _protocol(tmp_path, init_checkpoint=tmp_path / "joint" / "checkpoint")
    with pytest.raises(ValueError, match="timesteps_per_level=128"):
        _protocol(tmp_path, timesteps=256)
    with pytest.raises(ValueError, match="reward_scale=0.01"):  # scaled returns would mix with raw ones
        _protocol(tmp_path, reward_scale=None)
    with pytest.raises(ValueError, match="max_episode_steps=25"):
        _protocol(tmp_path, max_episode_steps=4500)
    stored = json.loads((tmp_path / "scores.json").read_text())
    assert (stored["scenario"], stored["reward_scale"], stored["max_episode_steps"]) == ("scenario", 0.01, 25)
    assert json.loads((tmp_path / "scores.json").read_text())["label"] == "PPO (from scratch)"
    with pytest.raises(ValueError, match="no finished level yet"):
        ppo_sonic.report_table([tmp_path])


def test_a_refused_protocol_call_records_nothing_and_the_corrected_one_runs(tmp_path, capsys):
    """Bad settings are refused before scores.json ties the run directory to them (it used to keep them, so the
    corrected command was then refused as another run)."""
    from dreamarcade.baselines.ppo import main

    with pytest.raises(ValueError, match="--timesteps-per-level must be an integer >= 1"):
        _protocol(tmp_path, timesteps=0)
    with pytest.raises(ValueError, match="num_minibatches"):
        ppo_sonic.sonic_protocol(LEVELS, PPOConfig(num_steps=4, num_minibatches=8), tmp_path, timesteps=8)
    with pytest.raises(CheckpointError, match="No complete checkpoint"):
        _protocol(tmp_path, init_checkpoint=tmp_path / "chekpoint_typo")
    # the scenario (Airstriker has no 'contest', the default), reward scale and limit were only checked at the
    # first level, after scores.json had recorded them
    for kwargs, message in (
        (dict(scenario="contest"), "has no 'contest' scenario"),
        (dict(reward_scale=0.0), "--reward-scale must be a finite non-zero number"),
        (dict(max_episode_steps=0), "--max-episode-steps must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            _protocol(tmp_path, **kwargs)
    assert not (tmp_path / "scores.json").exists()
    # through the CLI the refused checkpoint is one line, and no actor process is left to print a traceback
    argv = ["protocol", "--levels", "Airstriker-Genesis:Level1", "--scenario", "scenario", "--max-episode-steps", "25"]
    argv += ["--run-dir", str(tmp_path), "--timesteps-per-level", "64", "--num-steps", "32"]
    assert main([*argv, "--init-from", str(tmp_path / "chekpoint_typo")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No complete checkpoint in") and "Traceback" not in err
    assert not (tmp_path / "scores.json").exists()
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "scores.json").read_text())["scores"]) == {"Airstriker-Genesis:Level1"}


def test_an_init_checkpoint_that_cannot_fine_tune_these_levels_is_refused_before_scores_json(tmp_path, capsys):
    """A checkpoint of another env, or of another network than the config builds, was refused only when the first
    level's training began, after scores.json had tied the run directory to it."""
    from dreamarcade.baselines.ppo import main, train_ppo

    cartpole = tmp_path / "cartpole"
    train_ppo([lambda: gym.make("CartPole-v1")], PPOConfig(total_timesteps=32, num_steps=32, num_minibatches=2,
              update_epochs=1), cartpole, progress=False, tensorboard=False)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"trained on observations .* but this env has observations"):
        _protocol(tmp_path / "a", init_checkpoint=cartpole / "checkpoint")
    assert not (tmp_path / "a" / "scores.json").exists()
    _protocol(tmp_path / "air", timesteps=32)  # an Airstriker checkpoint, of CFG's feed-forward network
    air = tmp_path / "air" / "Airstriker-Genesis_Level1" / "checkpoint"
    recurrent = dataclasses.replace(CFG, recurrent=True, num_minibatches=1)
    with pytest.raises(CheckpointError, match=r"has recurrent=False .* Set --recurrent/--no-recurrent"):
        ppo_sonic.sonic_protocol(LEVELS, recurrent, tmp_path / "b", timesteps=32, init_checkpoint=air,
                                 scenario="scenario", max_episode_steps=25, progress=False)  # fmt: skip
    assert not (tmp_path / "b" / "scores.json").exists()
    # joint PPO's --workers 0 was refused deep inside the trainer, without naming the flag
    argv = ["joint", "--train-levels", "Airstriker-Genesis:Level1", "--eval-levels", "", "--workers", "0"]
    assert main([*argv, "--run-dir", str(tmp_path / "joint")]) == 2
    assert capsys.readouterr().err.startswith("error: --workers must be an integer >= 1")
    assert not (tmp_path / "joint").exists()


def test_protocol_and_table_clis_print_a_refused_run_dir_as_one_line(tmp_path, monkeypatch, capsys):
    from dreamarcade.baselines.ppo import main

    _sigterm_during_the_level(monkeypatch, at=40)
    _protocol(tmp_path)  # stopped during the first level: scores.json records this run's settings
    capsys.readouterr()
    argv = ["protocol", "--levels", "Airstriker-Genesis:Level1", "--scenario", "scenario", "--max-episode-steps", "25"]
    assert main([*argv, "--run-dir", str(tmp_path), "--timesteps-per-level", "256"]) == 2  # another budget
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'scores.json'} was written by a protocol run")
    # another learning rate: the remaining levels were scored under the same label (one mean from two methods)
    faster = dataclasses.replace(CFG, learning_rate=CFG.learning_rate * 2)
    with pytest.raises(ValueError, match=rf"other PPO settings \(learning_rate: {CFG.learning_rate} -> "):
        ppo_sonic.sonic_protocol(LEVELS, faster, tmp_path, timesteps=128, label="PPO (from scratch)",
                                 scenario="scenario", max_episode_steps=25, progress=False)  # fmt: skip
    assert main(["table", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} has no finished level yet")
    assert main(["table", str(tmp_path / "no_such_run")]) == 2  # the file it reads is missing: one line too
    assert capsys.readouterr().err.startswith(
        f"error: No scores.json in '{tmp_path / 'no_such_run'}': pass the --run-dir"
    )
    # an --out it cannot write: one line before the table is built (tracebacks, IsADirectoryError / FileExistsError)
    assert main(["table", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "is a directory" in err
    assert main(["table", str(tmp_path), "--out", str(tmp_path / "scores.json" / "table.md")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # a NaN reward scale is refused as such, not as another run's setting (NaN != NaN)
    fresh = tmp_path / "fresh"
    assert main([*argv, "--run-dir", str(fresh), "--timesteps-per-level", "64", "--reward-scale", "nan"]) == 2
    err = capsys.readouterr().err
    assert "reward" in err and "was written by a protocol run" not in err and not (fresh / "scores.json").exists()
    # where and how it runs is not the method: another device, thread count or checkpoint interval continues it
    same = dataclasses.replace(CFG, torch_threads=2, checkpoint_every_updates=7)
    monkeypatch.undo()  # the level env without its SIGTERM
    ppo_sonic.sonic_protocol(LEVELS, same, tmp_path, timesteps=128, label="PPO (from scratch)",
                             scenario="scenario", max_episode_steps=25, progress=False)  # fmt: skip
    assert json.loads((tmp_path / "scores.json").read_text())["scores"]["Airstriker-Genesis:Level1"]["episodes"] > 0


def test_jerk_resume_drops_episodes_after_its_saved_state_and_a_fresh_run_refuses_an_old_dir(tmp_path):
    # Raw contest env (12 buttons); 30-step episodes: Airstriker's ship does not die within 30 steps.
    env = make_contest_env(*AIR, scenario="scenario", max_episode_steps=30)
    try:
        cfg = JERKConfig(total_timesteps=400, save_every_episodes=3, seed=0)
        with pytest.raises(RuntimeError, match="killed"):  # state saved after episodes 3 and 6; killed in episode 8
            run_jerk(CrashAtStep(env, at=230), cfg, tmp_path, progress=False)
        with np.load(tmp_path / "jerk_state.npz") as z:
            saved_step = int(z["steps"])
        with open(tmp_path / "episodes.csv", newline="") as f:
            logged = [int(r["step"]) for r in csv.DictReader(f)]
        assert saved_step == 180 and logged == [30, 60, 90, 120, 150, 180, 210]
        with pytest.raises(FileExistsError, match="--resume"):
            run_jerk(env, cfg, tmp_path, progress=False)
        only_state = tmp_path / "only_state"  # the saved state alone is a run too
        only_state.mkdir()
        shutil.copy(tmp_path / "jerk_state.npz", only_state)
        with pytest.raises(FileExistsError, match=r"already holds a run \(jerk_state.npz\)"):
            run_jerk(env, cfg, only_state, progress=False)
        result = run_jerk(env, cfg, tmp_path, resume=True, progress=False)
    finally:
        env.close()
    with open(tmp_path / "episodes.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    # Episode 7 (step 210) is dropped and played again, not counted twice; every episode is a full 30 steps. The
    # budget stops the run at step 400, inside episode 14, which is not scored (it used to be played to its end)
    assert steps == list(range(30, 391, 30))
    assert result["episodes"] == len(steps) == 13 and result["steps"] == 400


def test_jerk_cli_resume_refuses_another_level_setting(tmp_path, capsys):
    """A resume with another episode limit (or level) mixed two setups' episodes in one score and replayed the
    best sequences found under the first in the second; the CLI records game, state, scenario and limit."""
    from dreamarcade.baselines.jerk import main

    argv = ["--game", "Airstriker-Genesis", "--state", "Level1", "--scenario", "scenario", "--run-dir", str(tmp_path)]
    assert main([*argv, "--max-episode-steps", "30", "--total-timesteps", "60"]) == 0
    capsys.readouterr()
    state = (tmp_path / "jerk_state.npz").read_bytes()
    assert main([*argv, "--max-episode-steps", "20", "--total-timesteps", "90", "--resume"]) == 2
    assert "error: --resume: the JERK state" in capsys.readouterr().err
    assert (tmp_path / "jerk_state.npz").read_bytes() == state
    # another exploit bias or seed: one score from two settings (it went on without a word)
    resume = [*argv, "--max-episode-steps", "30", "--total-timesteps", "90", "--resume"]
    assert main([*resume, "--exploit-bias", "0.5"]) == 2
    assert "exploit_bias" in capsys.readouterr().err and (tmp_path / "jerk_state.npz").read_bytes() == state
    assert main([*argv, "--max-episode-steps", "30", "--total-timesteps", "90", "--resume"]) == 0


def test_jerk_resume_refuses_a_cut_off_state_before_it_changes_the_run(tmp_path):
    env = make_contest_env(*AIR, scenario="scenario", max_episode_steps=30)
    try:
        run_jerk(env, JERKConfig(total_timesteps=90, save_every_episodes=1, seed=0), tmp_path, progress=False)
        state = tmp_path / "jerk_state.npz"
        good = state.read_bytes()
        from dreamarcade.baselines.jerk import _load_state

        for i in range(len(good)):  # any flipped byte loads or is refused (a bad zip version was NotImplementedError)
            bad = bytearray(good)
            bad[i] ^= 0xFF
            state.write_bytes(bytes(bad))
            with contextlib.suppress(CheckpointError):
                _load_state(tmp_path)
        with np.load(state, allow_pickle=False) as z:  # valid JSON, not an object: a TypeError traceback before
            arrays = {k: z[k] for k in z.files}
        np.savez(state, **{**arrays, "run_info": np.array("[1, 2]")})
        with pytest.raises(CheckpointError, match="Corrupt JERK state .*run_info is list, not an object"):
            _load_state(tmp_path)
        state.write_bytes(good[:200])  # cut off (a copy interrupted, a full disk)
        before = {n: (tmp_path / n).read_bytes() for n in ("hyperparameters.json", "episodes.csv")}
        with pytest.raises(CheckpointError, match=r"Corrupt JERK state '.*jerk_state.npz'"):
            run_jerk(env, JERKConfig(total_timesteps=120, seed=0), tmp_path, resume=True, progress=False)
    finally:
        env.close()
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # the refused resume changed nothing


def test_protocol_scores_only_the_budget_and_a_level_without_a_finished_episode(tmp_path):
    # 40 steps in rollouts of 32: training runs 64 steps; 10-step episodes end at 10..60, only 10..40 count
    summary = _protocol(tmp_path / "budget", timesteps=40, max_episode_steps=10)
    level = summary["scores"]["Airstriker-Genesis:Level1"]
    with open(tmp_path / "budget" / "Airstriker-Genesis_Level1" / "episodes.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert max(steps) > 40 and level["episodes"] == sum(s <= 40 for s in steps) == 4
    # no episode ends within the budget: the level scores NaN instead of crashing (and a rerun keeps that)
    summary = _protocol(tmp_path / "none", timesteps=32, max_episode_steps=4500)
    assert summary["scores"]["Airstriker-Genesis:Level1"]["episodes"] == 0
    assert np.isnan(_protocol(tmp_path / "none", timesteps=32, max_episode_steps=4500)["mean_score"])
    text = (tmp_path / "none" / "scores.json").read_text()  # strict JSON: a bare NaN failed outside Python
    assert "NaN" not in text and json.loads(text)["scores"]["Airstriker-Genesis:Level1"]["score"] is None
    # and the table shows it (formatting the null score failed: "unsupported format string passed to NoneType")
    assert "| 1 | 32 | - (a level ended no episode) |" in ppo_sonic.report_table([tmp_path / "none"])
