"""Run bookkeeping of the Sonic protocol and JERK: one run per directory, stops and resumes that never double-count.

Hermetic: CartPole stands in for a level (the protocol's emulator factory is swapped out) and a tiny button env for
the raw contest env, so these run without stable-retro or ROMs.
"""

from __future__ import annotations

import csv
import json
import os
import signal

import gymnasium as gym
import numpy as np
import pytest

from dreamarcade.baselines import ppo_sonic
from dreamarcade.baselines.jerk import JERKConfig, run_jerk
from dreamarcade.baselines.ppo import PPOConfig

LEVELS = [("GameA", "Level1"), ("GameB", "Level2")]
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


def _use_cartpole_levels(monkeypatch, sigterm_at=None):
    pid = os.getpid()  # the env runs in a worker process; the signal goes to the training process

    def level_env_fn(game, state, scenario="contest", reward_scale=0.01, max_episode_steps=4500):
        def thunk():
            env = gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))
            return env if sigterm_at is None else _SigtermAtStep(env, pid, sigterm_at)

        return thunk

    monkeypatch.setattr(ppo_sonic, "_check_levels", lambda levels: None)
    monkeypatch.setattr(ppo_sonic, "level_env_fn", level_env_fn)


def _protocol(run_dir, **kwargs):
    kwargs = {"timesteps": 128, "label": "PPO (from scratch)", "progress": False, **kwargs}
    return ppo_sonic.sonic_protocol(LEVELS, CFG, run_dir, **kwargs)


def test_a_stopped_protocol_scores_nothing_partial_and_resumes(tmp_path, monkeypatch):
    _use_cartpole_levels(monkeypatch, sigterm_at=40)
    before = signal.getsignal(signal.SIGTERM)
    stopped = _protocol(tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before
    assert stopped["stopped_early"] and stopped["scores"] == {}  # the first level stopped after 64 of 128 steps
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == {}
    assert not (tmp_path / "GameB_Level2").exists()  # and the next level was not started

    _use_cartpole_levels(monkeypatch)
    done = _protocol(tmp_path)
    assert "stopped_early" not in done and set(done["scores"]) == {"GameA:Level1", "GameB:Level2"}
    with open(tmp_path / "GameA_Level1" / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [32, 64, 96, 128]  # continued from step 64
    assert done["mean_score"] == pytest.approx(np.mean([v["score"] for v in done["scores"].values()]))


def test_a_protocol_dir_refuses_another_label_checkpoint_or_budget(tmp_path, monkeypatch):
    _use_cartpole_levels(monkeypatch, sigterm_at=40)
    _protocol(tmp_path)  # stopped during the first level: scores.json already records this run's settings
    with pytest.raises(ValueError, match=r"label='PPO \(from scratch\)'.*label='Joint PPO \+ fine-tune'.*--run-dir"):
        _protocol(tmp_path, label="Joint PPO + fine-tune")
    with pytest.raises(ValueError, match="init_checkpoint=''"):
        _protocol(tmp_path, init_checkpoint=tmp_path / "joint" / "checkpoint")
    with pytest.raises(ValueError, match="timesteps_per_level=128"):
        _protocol(tmp_path, timesteps=256)
    assert json.loads((tmp_path / "scores.json").read_text())["label"] == "PPO (from scratch)"
    with pytest.raises(ValueError, match="no finished level yet"):
        ppo_sonic.report_table([tmp_path])


class _Buttons(gym.Env):
    """A raw-contest-like env: 12 Genesis buttons, +1 per step holding RIGHT, episodes of 30 steps."""

    buttons = ["B", "A", "MODE", "START", "UP", "DOWN", "LEFT", "RIGHT", "C", "Y", "X", "Z"]
    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.MultiBinary(12)

    def __init__(self, crash_at=None):
        self.crash_at, self.steps_ever, self.t = crash_at, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.steps_ever += 1
        if self.steps_ever == self.crash_at:
            raise RuntimeError("killed")
        self.t += 1
        return np.zeros(1, np.float32), float(action[7]), False, self.t >= 30, {}


def test_jerk_resume_drops_episodes_after_its_saved_state_and_a_fresh_run_refuses_an_old_dir(tmp_path):
    cfg = JERKConfig(total_timesteps=400, save_every_episodes=3, seed=0)
    with pytest.raises(RuntimeError, match="killed"):  # state saved after episodes 3 and 6; killed in episode 8
        run_jerk(_Buttons(crash_at=230), cfg, tmp_path, progress=False)
    with np.load(tmp_path / "jerk_state.npz") as z:
        saved_step = int(z["steps"])
    with open(tmp_path / "episodes.csv", newline="") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f)]
    assert saved_step == 180 and logged == [30, 60, 90, 120, 150, 180, 210]
    with pytest.raises(FileExistsError, match="--resume"):
        run_jerk(_Buttons(), cfg, tmp_path, progress=False)
    result = run_jerk(_Buttons(), cfg, tmp_path, resume=True, progress=False)
    with open(tmp_path / "episodes.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # episode 7 (step 210) is not counted twice
    assert result["episodes"] == len(steps) and result["steps"] >= 400
