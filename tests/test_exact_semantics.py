"""Exact values of small algorithms, losses and samplers, each pinned where a plausible one-line bug (found by
mutation testing: a changed sign, bound, index or key) kept every other test passing. The envs here are hand-built
for the rule under test; ALE runs for real where a game's behaviour is the point."""

from __future__ import annotations

import csv
import json
import random

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import dreamarcade  # noqa: F401  (registers MetaBandit-v0)
from dreamarcade.baselines.jerk import JERKConfig, TrackedEnv, _load_state, move, run_jerk
from dreamarcade.baselines.ppo import PPOConfig, train_ppo
from dreamarcade.baselines.self_imitation import EpisodeBuffer, self_imitation_loss
from dreamarcade.reward_models.embedding import PAPER_INTERVALS
from dreamarcade.reward_models.train_embedding import sample_offsets, sample_pairs
from dreamarcade.world_models.vae import vae_loss
from dreamarcade.wrappers.exploration import CellCounter
from dreamarcade.wrappers.retro import AllowBacktracking


# --- count bonus, VAE, self-imitation, backtracking, TDC/CMC sampling ---------------------------------------
def test_cell_levels():
    assert CellCounter(1.0).cell(np.full((8, 11), 32, np.uint8)) == bytes([1] * 88)


def test_cell_area():
    f = np.zeros((16, 22), np.uint8)
    f[::2] = 255
    assert CellCounter(1.0).cell(f) == bytes([4] * 88)  # 127.5 -> 128 -> level 4


def test_cell_orientation():
    f = np.tile((np.arange(11) * 23).astype(np.uint8), (8, 1))
    assert CellCounter(1.0).cell(f) == (f.astype(np.uint16) * 8 // 256).astype(np.uint8).tobytes()


def test_vae_loss_values():
    x = torch.zeros(2, 3, 64, 64)
    recon = torch.full_like(x, 0.5)
    mu = torch.zeros(2, 64)
    mu[1] = 2.0
    logvar = torch.zeros(2, 64)
    total, r, kl = vae_loss(x, recon, mu, logvar, kl_tolerance=0.25)
    assert r.item() == pytest.approx(3 * 64 * 64 * 0.25)
    assert kl.item() == pytest.approx((16 + 128) / 2)  # sample 0 floored at 0.25*64, sample 1: 0.5*4*64


def test_sil_denominator_quarter():
    loss, frac = self_imitation_loss(torch.log(torch.full((4,), 0.5)), torch.tensor([0.0, 3, 3, 3]), torch.ones(4), 0.0)
    assert loss.item() == pytest.approx(np.log(2)) and frac == 0.25


def test_buffer_tie_at_cut_drops_oldest():
    buf = EpisodeBuffer(2, 1.0, 1)
    for step, r in enumerate([1.0, 1.0, 2.0]):
        buf.add_step(np.zeros((1, 1)), np.array([0]), np.array([r]), np.array([True]), step)
    assert [(e.total, e.end_step) for e in buf.episodes] == [(1.0, 1), (2.0, 2)]


class Rewards(gym.Env):
    observation_space, action_space = gym.spaces.Box(0, 1, (1,)), gym.spaces.Discrete(1)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        r = [5.0, -3.0, 2.0, -4.0][self.t]
        self.t += 1
        return np.zeros(1, np.float32), r, self.t == 4, False, {}


def test_backtracking_resets():
    env = AllowBacktracking(Rewards())
    for _ in range(2):
        env.reset()
        assert [env.step(0)[1] for _ in range(4)] == [5.0, 0.0, 0.0, 0.0]  # cumulative 5, 2, 4, 0


def test_pairs_reach_class_cap_and_both_orders():
    rng = np.random.default_rng(0)
    v, i, j, k = sample_pairs([300, 3], PAPER_INTERVALS, 4000, rng)
    assert set(np.abs(i - j)[v == 1].tolist()) == {0, 1, 2}
    far = np.abs(i - j) > 0
    assert 0.45 < (i[far] > j[far]).mean() < 0.55


def test_one_frame_video():
    v, i, j, k = sample_pairs([1], ((0, 0),), 4, np.random.default_rng(0))
    assert (i == 0).all() and (j == 0).all()


def test_offsets_balanced_among_fitting_classes():
    rng = np.random.default_rng(0)
    j, k = sample_offsets([10] * 3000, np.full(3000, 5), PAPER_INTERVALS, rng)
    frac = np.bincount(k, minlength=6) / 3000
    assert frac[5] == 0 and np.all(np.abs(frac[:5] - 0.2) < 0.04)


# --- the imitation agent's episode ends and self-imitation's stored observations -----------------------------
def test_life_loss_terminal_ends_on_the_lost_life_only():
    import ale_py

    from dreamarcade.baselines.imitation import LifeLossTerminal

    gym.register_envs(ale_py)
    env = LifeLossTerminal(gym.make("ALE/MontezumaRevenge-v5", repeat_action_probability=0.0))
    env.reset(seed=0)
    lives, term = [], False
    for _ in range(60):
        _, _, term, trunc, info = env.step(4)  # LEFT off the start platform
        lives.append(info["lives"])
        if term or trunc:
            break
    env.close()
    assert term and len(lives) > 1 and lives[-1] < lives[0] and len(set(lives[:-1])) == 1


class StepCounter(gym.Env):
    observation_space, action_space = gym.spaces.Box(0, 100, (1,), np.float32), gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, a):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, self.t == 4, False, {}


def test_sil_stores_the_observation_each_action_was_taken_in(tmp_path):
    cfg = PPOConfig(
        total_timesteps=16,
        num_envs=1,
        num_steps=8,
        num_minibatches=1,
        update_epochs=1,
        sil_coef=1.0,
        sil_episodes=1,
        vector_mode="sync",
        mlp_hidden=8,
    )
    train_ppo([StepCounter], cfg, tmp_path, progress=False, tensorboard=False)
    index = json.loads((tmp_path / "self_imitation" / "index.json").read_text())
    obs = load_file(tmp_path / "self_imitation" / index["episodes"][0]["file"])["obs."]
    assert obs[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


# --- PPO -------------------------------------------------------------------------------------------------
def test_recurrent_first_minibatch_reproduces_rollout_logprobs(tmp_path):
    cfg = PPOConfig(
        total_timesteps=128,
        num_envs=4,
        num_steps=16,
        num_minibatches=1,
        update_epochs=1,
        recurrent=True,
        lstm_size=8,
        mlp_hidden=8,
        vector_mode="sync",
        seed=0,
    )
    train_ppo([lambda: gym.make("MetaBandit-v0")] * 4, cfg, tmp_path, progress=False, tensorboard=False)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kl = [abs(float(r["losses/approx_kl"])) for r in rows]
    cf = [float(r["losses/clipfrac"]) for r in rows]
    assert max(kl) < 1e-10 and max(cf) == 0.0, (kl, cf)


class Flat(gym.Env):
    observation_space, action_space = gym.spaces.Box(0, 1, (2,), np.float32), gym.spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.ones(2, np.float32), {}

    def step(self, a):
        self.t += 1
        return np.ones(2, np.float32), 0.0, self.t == 8, False, {}


def test_entropy_bonus_keeps_a_rewardless_policy_uniform(tmp_path):
    cfg = PPOConfig(
        total_timesteps=2048,
        num_envs=2,
        num_steps=64,
        num_minibatches=2,
        update_epochs=4,
        learning_rate=1e-2,
        ent_coef=0.5,
        mlp_hidden=8,
        vector_mode="sync",
        seed=0,
    )
    train_ppo([Flat] * 2, cfg, tmp_path, progress=False, tensorboard=False)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["losses/entropy"]) > 0.95 * np.log(4)


# --- JERK ------------------------------------------------------------------------------------------------
BUTTONS = ["B", "A", "MODE", "START", "UP", "DOWN", "LEFT", "RIGHT", "C", "Y", "X", "Z"]


class FakeRetro(gym.Env):
    observation_space, action_space = gym.spaces.Box(0, 1, (1,)), gym.spaces.MultiBinary(12)
    buttons = BUTTONS

    def __init__(self, rewards=None, length=10, pay_b=False):
        self.rewards, self.length, self.pay_b, self.log = rewards or {}, length, pay_b, []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, a):
        self.log.append(np.array(a))
        self.t += 1
        r = float(a[0]) if self.pay_b else self.rewards.get(self.t, 0.0)
        return np.zeros(1, np.float32), r, self.t >= self.length, False, {}


class Stub(random.Random):
    def __init__(self, draws):
        super().__init__(0)
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0) if self.draws else 0.99


def test_jump_is_held_for_jump_repeat_steps():
    env = TrackedEnv(FakeRetro(length=100))
    env.reset()
    move(env, JERKConfig(jump_repeat=4), 8, left=False, rng=Stub([0.0]))
    assert [int(a[0]) for a in env.action_history] == [1, 1, 1, 1, 0, 0, 0, 0]


def test_a_stretch_that_earned_nothing_backtracks_left(tmp_path):
    env = FakeRetro(length=100)
    run_jerk(
        env, JERKConfig(total_timesteps=8, explore_steps=5, backtrack_steps=3, jump_prob=0.0), tmp_path, progress=False
    )
    assert [int(a[7]) for a in env.log] == [1] * 5 + [0] * 3 and [int(a[6]) for a in env.log] == [0] * 5 + [1] * 3


def test_a_solution_is_scored_by_its_peak(tmp_path):
    env = FakeRetro({1: 5.0, 2: -3.0}, length=10)
    run_jerk(env, JERKConfig(total_timesteps=10, explore_steps=10, jump_prob=0.0), tmp_path, progress=False)
    solutions, _, _ = _load_state(tmp_path)
    assert solutions[0][0] == [5.0] and len(solutions[0][1]) == 1


def _rows(d):
    with open(d / "episodes.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_exploit_probability_grows_with_the_steps(tmp_path):
    run_jerk(
        FakeRetro({1: 1.0}, length=10), JERKConfig(total_timesteps=2000, exploit_bias=0.0), tmp_path, progress=False
    )
    late = [int(r["exploit"]) for r in _rows(tmp_path)][-50:]
    assert np.mean(late) > 0.6


def test_exploit_replays_the_best_sequence(tmp_path):
    run_jerk(
        FakeRetro(length=20, pay_b=True),
        JERKConfig(total_timesteps=4000, exploit_bias=0.5, explore_steps=20),
        tmp_path,
        progress=False,
    )
    rows = _rows(tmp_path)
    exp = [float(r["episodic_return"]) for r in rows if r["exploit"] == "1"]
    expl = [float(r["episodic_return"]) for r in rows if r["exploit"] == "0"]
    assert np.mean(exp) > np.mean(expl) + 1
