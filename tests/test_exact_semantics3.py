"""Exact semantics of the Atari frame wrappers, DQN's schedules, the dream envs, the controller, the imitation
checkpoints, cycle-consistency, RL^2 trials and the Sonic contest settings, each pinned where a plausible one-line
bug (found by mutation testing: a changed bound, index, constant or order) kept every other test passing. Inner envs
are hand-built where only an observation, reward, lives or task source is needed; the dreams, DQN, the controller and
the Sonic stack (on Airstriker, the ROM stable-retro ships) run for real."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import dreamarcade  # noqa: F401  (registers the ids)
from dreamarcade.baselines.dqn import DQNConfig, linear_schedule, load_q_network, train
from dreamarcade.wrappers.atari import EpisodicLife, FireReset, MaxAndSkip, NoopReset


class Frames(gym.Env):
    """Observation = the step count in every pixel; terminates at step ``end``."""

    observation_space, action_space = gym.spaces.Box(0, 255, (2, 2), np.uint8), gym.spaces.Discrete(2)

    def __init__(self, end: int = 100, rewards=None) -> None:
        self.end, self.rewards = end, rewards

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((2, 2), np.uint8), {}

    def step(self, action):
        self.t += 1
        r = 0.0 if self.rewards is None else self.rewards[self.t - 1]
        return np.full((2, 2), self.t, np.uint8), r, self.t >= self.end, False, {}


# --- Atari frame wrappers ---------------------------------------------------------------------------------------
def test_max_and_skip_early_end_returns_this_steps_frame_not_a_stale_one():
    env = MaxAndSkip(Frames(end=5, rewards=[1.0, 2.0, 3.0, 4.0, 5.0]), skip=4)  # the generic path (no ALE underneath)
    env.reset(seed=0)
    obs, reward, _, _, _ = env.step(0)
    assert obs.max() == 4 and reward == 10.0  # max of frames 3 and 4; the sum of the 4 frames' rewards
    obs, reward, terminated, _, _ = env.step(0)  # ends on its first frame (5)
    assert terminated and (obs == 5).all() and reward == 5.0


def test_noop_reset_resets_a_game_that_ends_during_the_noops():
    env = NoopReset(Frames(end=2), noop_max=30)  # every game ends after 2 steps
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        assert env.last_noops >= 2  # (these seeds draw enough no-ops to end a game)
        # a game that ended was reset and the no-ops went on in the new one
        assert env.unwrapped.t == int(obs.max()) == env.last_noops % 2


class FireEnds(Frames):
    """A game whose FIRE (action 1) on the first step ends it."""

    def get_action_meanings(self):
        return ["NOOP", "FIRE"]

    def step(self, action):
        obs, r, _, truncated, info = super().step(action)
        return obs, r, self.t == 1 and action == 1, truncated, info


def test_fire_reset_resets_when_the_fire_ends_the_game():
    env = FireReset(FireEnds())
    obs, _ = env.reset(seed=0)
    assert env.active and env.unwrapped.t == 0 and (obs == 0).all()  # a fresh game, not the ended one


class Lives(Frames):
    """A game whose lives() goes 3, 2, 1, 0 and that ends one step after reaching 0 (a last life played at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.ale = self  # EpisodicLife reads env.unwrapped.ale.lives()

    def lives(self) -> int:
        return max(0, 3 - self.t)

    def step(self, action):
        self.t += 1
        return np.zeros((2, 2), np.uint8), 0.0, self.t == 4, False, {}


def test_episodic_life_signals_only_losses_that_leave_lives_as_sb3():
    env = EpisodicLife(Lives())
    env.reset(seed=0)
    ends = []
    for _ in range(4):
        _, _, terminated, _, info = env.step(0)
        ends.append((terminated, info["game_over"]))
        if terminated and not info["game_over"]:
            env.reset()
    # SB3's EpisodicLifeEnv rule 0 < lives < previous: the drop to 0 lives is no life-loss end
    assert ends == [(True, False), (True, False), (False, False), (True, True)]


# --- DQN --------------------------------------------------------------------------------------------------------
def test_epsilon_reaches_end_exactly_at_duration():
    assert linear_schedule(1.0, 0.01, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.01, 100, 50) == pytest.approx(0.505)
    assert linear_schedule(1.0, 0.01, 100, 100) == pytest.approx(0.01)
    assert linear_schedule(1.0, 0.01, 100, 10_000) == 0.01


def _dqn_nets_equal(tmp_path, name, **kw) -> bool:
    cfg = DQNConfig(
        env_id="CartPole-v1",
        learning_starts=50,
        buffer_size=1000,
        train_frequency=1,
        batch_size=16,
        run_dir=str(tmp_path / name),
        progress=False,
        video_episodes=0,
        checkpoint_interval=100_000,
        tensorboard=False,
        torch_threads=1,
        seed=0,
        **kw,
    )
    train(cfg)
    online, _ = load_q_network(tmp_path / name / "checkpoint")
    target, _ = load_q_network(tmp_path / name / "checkpoint", network="target")
    return all(torch.equal(a, b) for a, b in zip(online.state_dict().values(), target.state_dict().values()))


@pytest.mark.parametrize(
    ("total", "freq", "num_envs", "equal"),
    [
        (200, 100, 1, True),  # the copy at step 200 is the run's last event
        (201, 100, 1, False),  # one step (one gradient step) later the nets differ
        (102, 101, 2, True),  # two envs step 2, 4, ...: the copy comes at the first step past 101, not at 202 only
    ],
)
def test_dqn_target_copied_every_target_network_frequency_steps(tmp_path, total, freq, num_envs, equal):
    assert (
        _dqn_nets_equal(tmp_path, "run", total_timesteps=total, target_network_frequency=freq, num_envs=num_envs)
        == equal
    )


class ActionLog(gym.Env):
    """A constant observation (so a greedy policy repeats one action); every action taken is logged."""

    observation_space, action_space = gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2)
    actions: list[int] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        ActionLog.actions.append(int(action))
        return np.zeros(4, np.float32), 0.0, False, False, {}


gym.register("ExactSemantics3ActionLog-v0", entry_point=ActionLog, max_episode_steps=50)


@pytest.mark.parametrize(("epsilon", "distinct"), [(1.0, 2), (0.0, 1)])  # all random / all greedy
def test_dqn_epsilon_is_the_chance_of_a_random_action(tmp_path, epsilon, distinct):
    ActionLog.actions = []
    cfg = DQNConfig(
        env_id="ExactSemantics3ActionLog-v0",
        total_timesteps=200,
        learning_starts=200,  # no learning: the greedy action stays the same
        start_e=epsilon,
        end_e=epsilon,
        buffer_size=1000,
        run_dir=str(tmp_path / "run"),
        progress=False,
        video_episodes=0,
        tensorboard=False,
        torch_threads=1,
        seed=0,
    )
    train(cfg)
    assert len(ActionLog.actions) == 200
    assert len(set(ActionLog.actions)) == distinct


# --- dream envs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("logit", "done"), [(0.25, True), (-0.25, False)])
def test_dream_ends_where_the_done_logit_is_above_0_that_is_p_above_half(logit, done):
    from dreamarcade.envs.dream import DreamEnv, DreamVectorEnv

    def pin_done_logit(model):
        with torch.no_grad():  # the done head's output is the constant logit: p = sigmoid(0.25) = 0.56 > 0.5
            model.rnn.head.weight[model.rnn.n_mdn].zero_()
            model.rnn.head.bias[model.rnn.n_mdn] = logit

    env, envs = DreamEnv("doom"), DreamVectorEnv(2, "doom")
    for e in (env, envs):
        pin_done_logit(e.model)
        e.temperature = 1.15  # repacks M's weights
        e.reset(seed=0)
    assert env.step(np.zeros(1, np.float32))[2] is done
    a = np.zeros((2, 1), np.float32)
    ends = [envs.step(a)[2].tolist() for _ in range(3)]
    # a dream that ended restarts on the next step (next-step autoreset), which ends nothing
    assert ends == ([[True, True], [False, False], [True, True]] if done else [[False, False]] * 3)


@pytest.mark.parametrize("logit", [0.25, -0.25])
def test_m_samples_done_where_the_logit_is_above_0(logit):
    from dreamarcade.world_models.mdnrnn import MDNRNN, sample_next

    m = MDNRNN(z_size=2, action_size=1, hidden_size=4, predict_done=True)
    out = torch.zeros(1, m.n_mdn + 1)
    out[0, m.n_mdn] = logit
    assert sample_next(m, out, 1.15, torch.Generator().manual_seed(0))["done"].tolist() == [logit > 0]


def test_doom_dream_samples_at_the_papers_best_temperature():
    assert gym.make("DreamDoom-v0").unwrapped.temperature == 1.15
    assert gym.make("DreamCarRacing-v0").unwrapped.temperature == 1.0


# --- controller -------------------------------------------------------------------------------------------------
def test_carracing_controller_layout_and_action_map():
    from dreamarcade.world_models.controller import Controller

    c = Controller.for_env("carracing", feature_size=2)
    w = np.array([[-2.0, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32)  # (action, feature), row-major
    b = np.array([0.0, -1.0, 0.0], np.float32)
    c.set_flat(np.concatenate([w.reshape(-1), b]))
    f = np.array([0.5, 1.5], np.float32)
    raw = np.tanh(w @ f + b)
    expected = [raw[0], (raw[1] + 1) / 2, np.clip(raw[2], 0, 1)]
    assert raw[0] < 0  # steer keeps its sign: left is negative
    np.testing.assert_allclose(c.act(f), expected, rtol=1e-6)


# --- imitation checkpoints and cycle-consistency ----------------------------------------------------------------
def test_checkpoints_every_16th_frame_by_default(monkeypatch):
    import inspect

    from dreamarcade.reward_models import build_reward
    from dreamarcade.reward_models.checkpoints import build_checkpoints

    assert inspect.signature(build_checkpoints).parameters["every"].default == 16
    got = []

    class Built(list):
        every, source = 16, "demo.mp4"

    monkeypatch.setattr(build_reward, "build_bundle", lambda *args: got.append(args) or Built())
    assert build_reward.main(["embedding", "demo.mp4", "--out", "bundle"]) == 0
    assert got[0][3] == 16  # the CLI's --every default


@pytest.mark.parametrize(("ties", "tolerance", "score"), [("first", 1, 100.0), ("any", 1, 100.0), ("first", 0, 50.0)])
def test_two_cycle_tolerance_is_inclusive(ties, tolerance, score):
    from dreamarcade.reward_models.cycle import cycle_consistency

    v = np.array([[0.0], [1.0], [2.0], [3.0]])
    w = np.array([[0.0], [3.0]])  # v1 -> w0 -> v0 and v2 -> w1 -> v3 come back one frame off
    assert cycle_consistency(v, w, tolerance=tolerance, ties=ties) == score
    if ties == "first" and tolerance == 1:
        assert cycle_consistency(v, w) == score  # the paper's |i - k| <= 1 is the default


# --- RL^2 trials ------------------------------------------------------------------------------------------------
class ScaledActions(gym.Env):
    """A task family: reward = task * action, actions 1..3 (Discrete with start=1), 2-step episodes."""

    observation_space, action_space = gym.spaces.Box(-1, 1, (1,), np.float32), gym.spaces.Discrete(3, start=1)

    def sample_task(self, rng):
        return 10.0

    def set_task(self, task):
        self.task = task

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), self.task * action, self.t == 2, False, {}


def test_episode_concat_meta_inputs_carry_the_raw_previous_step():
    from dreamarcade.wrappers.metarl import EpisodeConcat

    env = EpisodeConcat(ScaledActions(), num_episodes=2, exploration_episodes=1)
    obs, _ = env.reset(seed=0)
    assert obs[1:].tolist() == [0, 0, 0, 0, 0]  # [one-hot prev action (3), prev reward, prev done]
    got = []
    for action in (2, 3, 1, 1):
        obs, reward, terminated, _, _ = env.step(action)
        got.append((obs[1:].tolist(), reward, terminated))
    assert got == [
        ([0, 1, 0, 20, 0], 0.0, False),  # exploration: paid 0, but the agent sees the reward
        ([0, 0, 1, 30, 1], 0.0, False),  # first obs of the next episode: the last action and reward, done 1
        ([1, 0, 0, 10, 0], 10.0, False),
        ([1, 0, 0, 10, 1], 10.0, True),
    ]


# --- Sonic ------------------------------------------------------------------------------------------------------
def test_reward_scaler_default_is_the_baselines_0_01():
    from dreamarcade.wrappers.retro import RewardScaler

    env = RewardScaler(Frames(rewards=[250.0, -40.0]))
    env.reset(seed=0)
    assert [env.step(0)[1] for _ in range(2)] == [pytest.approx(2.5), pytest.approx(-0.4)]


def test_sonic_env_passes_its_stickprob_to_the_sticky_skip():
    from dreamarcade.envs.sonic import make_sonic_env
    from dreamarcade.wrappers.retro import StochasticFrameSkip

    env = make_sonic_env("Airstriker-Genesis", "Level1", scenario="scenario", stickprob=0.0)
    try:
        skip = env
        while not isinstance(skip, StochasticFrameSkip):
            skip = skip.env
        assert skip.stickprob == 0.0 and skip.n == 4
    finally:
        env.close()


def test_sonic_test_split_is_the_contest_validation_csv_and_ids_use_their_split():
    from dreamarcade.envs.sonic import SONIC_TEST, SONIC_TRAIN, parse_levels

    validation = [  # sonic-validation.csv, in file order
        ("SonicTheHedgehog-Genesis", "SpringYardZone.Act1"),
        ("SonicTheHedgehog-Genesis", "GreenHillZone.Act2"),
        ("SonicTheHedgehog-Genesis", "StarLightZone.Act3"),
        ("SonicTheHedgehog-Genesis", "ScrapBrainZone.Act1"),
        ("SonicTheHedgehog2-Genesis", "MetropolisZone.Act3"),
        ("SonicTheHedgehog2-Genesis", "HillTopZone.Act2"),
        ("SonicTheHedgehog2-Genesis", "CasinoNightZone.Act2"),
        ("SonicAndKnuckles3-Genesis", "LavaReefZone.Act1"),
        ("SonicAndKnuckles3-Genesis", "FlyingBatteryZone.Act2"),
        ("SonicAndKnuckles3-Genesis", "HydrocityZone.Act1"),
        ("SonicAndKnuckles3-Genesis", "AngelIslandZone.Act2"),
    ]
    assert [tuple(lv) for lv in SONIC_TEST] == validation
    assert parse_levels("train") == list(SONIC_TRAIN) and parse_levels("test") == list(SONIC_TEST)
    assert gym.spec("SonicTrain-v0").kwargs["split"] == "train" and gym.spec("SonicTest-v0").kwargs["split"] == "test"
