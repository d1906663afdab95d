"""The contest stack (sticky skip, time limit, discretizer, reward wrappers, level-drawing env) on Airstriker,
the ROM stable-retro ships. stable-retro allows one emulator per process: every test closes its env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

stable_retro = pytest.importorskip("stable_retro")

import dreamarcade  # noqa: E402,F401
from dreamarcade.envs.sonic import RetroLevelsEnv, make_contest_env, make_sonic_env  # noqa: E402
from dreamarcade.wrappers.metarl import EpisodeConcat  # noqa: E402
from dreamarcade.wrappers.retro import (  # noqa: E402
    AllowBacktracking,
    Discretizer,
    RewardScaler,
    SonicDiscretizer,
    StochasticFrameSkip,
)

GAME, STATE, SCEN = "Airstriker-Genesis", "Level1", "scenario"


class ActionLog(gym.Wrapper):
    """Records the button arrays that reach the emulator (a spy on a real env, not a fake)."""

    def __init__(self, env):
        super().__init__(env)
        self.log = []

    def step(self, action):
        self.log.append(np.array(action).copy())
        return self.env.step(action)


def _raw():
    return stable_retro.make("Airstriker-Genesis-v0", render_mode=None)


def test_contest_env_defaults():
    env = make_contest_env(GAME, STATE, scenario=SCEN, max_episode_steps=7)
    try:
        assert env.unwrapped.render_mode is None  # never stable-retro's "human" default
        assert isinstance(env, gym.wrappers.TimeLimit)
        skip = env.env
        assert isinstance(skip, StochasticFrameSkip) and skip.n == 4 and skip.stickprob == 0.25
        assert env.metadata["render_fps"] == 15.0  # 60 Hz emulator, one step every 4 frames
        assert env.action_space == gym.spaces.MultiBinary(12)
        env.reset(seed=0)
        for _ in range(7):
            *_, terminated, truncated, _info = env.step(env.action_space.sample())
        assert truncated and not terminated
        assert env.unwrapped.statename.endswith("Level1.state")
    finally:
        env.close()
    assert make_contest_env.__defaults__[-1] == 4500  # the contest's episode limit


def test_sticky_frame_skip_semantics():
    log_env = ActionLog(_raw())
    env = StochasticFrameSkip(log_env, n=4, stickprob=1.0)  # always keep the previous action on frame 1
    try:
        a, b = np.zeros(12, np.int8), np.zeros(12, np.int8)
        a[7], b[6] = 1, 1
        env.reset(seed=0)
        env.step(a)  # first step after reset: the new action on all 4 frames
        env.step(b)  # frame 1 sticks to a, frames 2-4 use b
        assert [int(x[7]) for x in log_env.log] == [1, 1, 1, 1, 1, 0, 0, 0]
        env.stickprob = 0.0
        log_env.log.clear()
        env.step(a)
        assert [int(x[7]) for x in log_env.log] == [1, 1, 1, 1]
        # a new episode forgets the last action: its first step is the new action on all 4 frames, even at
        # stickprob 1 (the previous episode's last action stuck to the first frame of the next)
        env.stickprob = 1.0
        env.reset(seed=1)
        log_env.log.clear()
        env.step(b)
        assert [int(x[6]) for x in log_env.log] == [1, 1, 1, 1] and [int(x[7]) for x in log_env.log] == [0, 0, 0, 0]
        with pytest.raises(ValueError):
            StochasticFrameSkip(log_env, n=0)
        for bad in ("0.2", float("nan"), 1.5):  # a string failed inside a comparison, NaN never stuck
            with pytest.raises(ValueError, match=r"stickprob must be a probability in \[0, 1\]"):
                StochasticFrameSkip(log_env, stickprob=bad)
        assert env.metadata["render_fps"] == env.metadata["video.frames_per_second"]  # they said 15 and 60
    finally:
        env.close()


def test_discretizers():
    env = SonicDiscretizer(_raw())
    try:
        assert env.action_space == gym.spaces.Discrete(7)
        buttons = env.unwrapped.buttons
        pressed = [{buttons[i] for i in np.flatnonzero(env.action(k))} for k in range(7)]
        assert pressed == [{"LEFT"}, {"RIGHT"}, {"LEFT", "DOWN"}, {"RIGHT", "DOWN"}, {"DOWN"}, {"DOWN", "B"}, {"B"}]
        with pytest.raises(ValueError, match="unknown button"):
            Discretizer(env.env, [["TURBO"]])
        with pytest.raises(ValueError):
            env.action(7)
    finally:
        env.close()


def test_reward_wrappers():
    class Rewards(gym.Env):  # a scripted reward sequence to check the arithmetic exactly
        observation_space, action_space = gym.spaces.Box(0, 1, (1,)), gym.spaces.Discrete(1)

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return np.zeros(1, np.float32), {}

        def step(self, action):
            r = [5.0, -3.0, 2.0, 4.0][self.t]
            self.t += 1
            return np.zeros(1, np.float32), r, self.t == 4, False, {}

    env = AllowBacktracking(Rewards())
    env.reset()
    assert [env.step(0)[1] for _ in range(4)] == [5.0, 0.0, 0.0, 3.0]  # cumulative 5, 2, 4, 8: only new maxima
    env = RewardScaler(Rewards(), 0.01)
    env.reset()
    assert env.step(0)[1] == pytest.approx(0.05)
    for bad in (0.0, "0.1", float("inf")):  # a string failed inside numpy
        with pytest.raises(ValueError, match="scale must be a finite non-zero number"):
            RewardScaler(Rewards(), bad)


def test_sonic_stack_on_airstriker_records_unscaled_score():
    env = make_sonic_env(GAME, STATE, scenario=SCEN, reward_scale=0.01, max_episode_steps=600)
    try:
        obs, _ = env.reset(seed=0)
        env.action_space.seed(0)  # the emulator and the sticky draws are seeded too: the run is reproducible
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, info = env.step(env.action_space.sample())
            total += r
            done = term or trunc
        assert info["episode"]["l"] <= 600
        assert info["episode"]["r"] == pytest.approx(100 * total)  # the score, before the 0.01 scaling
        assert info["episode"]["r"] > 0
    finally:
        env.close()


def test_check_env_on_registered_airstriker_id():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("AirstrikerContest-v0")
    try:
        # stable-retro allows one emulator per process, so check_env's render/close checks (which make a second
        # env while this one is open) are done below, one env at a time.
        check_env(env, skip_render_check=True, skip_close_check=True)
    finally:
        env.close()
    env = gym.make("AirstrikerContest-v0", render_mode="rgb_array")
    try:
        env.reset(seed=0)
        assert env.render().shape == (224, 320, 3)
    finally:
        env.close()
        env.close()  # closing twice is allowed


def test_levels_env_and_rl2_trial_over_levels():
    env = EpisodeConcat(RetroLevelsEnv([(GAME, STATE)], scenario=SCEN, max_episode_steps=5), num_episodes=2)
    try:
        obs, info = env.reset(seed=0)
        assert set(obs) == {"obs", "meta"} and obs["obs"].shape == (4, 84, 84) and obs["meta"].shape == (9,)
        assert info["level"] == "Airstriker-Genesis:Level1"
        inner_ends = 0
        for t in range(10):
            obs, r, term, trunc, info = env.step(1)
            inner_ends += bool(info.get("inner_done"))
            if t < 9:
                assert not (term or trunc)
        assert term and not trunc and info["inner_truncated"] and inner_ends == 2  # the trial is over: terminated
        with pytest.raises(ValueError):
            env.unwrapped.set_task(("SonicTheHedgehog-Genesis", "GreenHillZone.Act1"))
    finally:
        env.close()


def test_levels_env_takes_game_state_strings():
    env = RetroLevelsEnv([f"{GAME}:{STATE}"], scenario=SCEN, max_episode_steps=5)  # was split into characters
    try:
        env.set_task(f"{GAME}:{STATE}")
        assert env.reset(seed=0)[1]["level"] == f"{GAME}:{STATE}"
        with pytest.raises(ValueError, match="set_task takes one level"):
            env.set_task("train")
    finally:
        env.close()


def test_cli_factories_keep_the_level_envs_own_episode_statistics():
    # SonicTrain-v0 / SonicTest-v0 are RetroLevelsEnv: each level's stack records the contest score itself. The ppo
    # and dqn CLIs add a RecordEpisodeStatistics unless one is there; looking only at the wrapper chain, they added
    # a second one, which asserted at the end of the first episode. Same entry point here, on Airstriker.
    from dreamarcade.baselines.common import has_episode_statistics
    from dreamarcade.baselines.ppo import _make_gym_env

    gym.register(
        "AirstrikerLevels-test-v0",
        entry_point="dreamarcade.envs.sonic:RetroLevelsEnv",
        kwargs={"levels": [(GAME, STATE)], "scenario": SCEN, "max_episode_steps": 5, "reward_scale": 0.01},
    )
    try:
        env = _make_gym_env("AirstrikerLevels-test-v0", 0)()
        try:
            assert has_episode_statistics(env)
            env.reset(seed=0)
            total = 0.0
            for _ in range(5):
                obs, r, term, trunc, info = env.step(1)
                total += r
            assert trunc and info["episode"]["l"] == 5
            assert info["episode"]["r"] == pytest.approx(100 * total)  # the contest score, before the 0.01 scaling
        finally:
            env.close()
    finally:
        del gym.registry["AirstrikerLevels-test-v0"]


def test_sonic_env_refuses_a_negative_frame_stack():
    with pytest.raises(ValueError, match=r"frame_stack must be an integer >= 0 \(0: no stack\), got -3"):
        make_sonic_env(GAME, STATE, scenario=SCEN, frame_stack=-3)  # was a silent "no stack"
    with pytest.raises(ValueError, match="frame_size must be an integer >= 1"):
        make_sonic_env(GAME, STATE, scenario=SCEN, frame_size=0)


def test_sonic_env_stacks_raw_frames_only_when_asked():
    """frame_size=None keeps raw RGB frames; a frame_stack given with it was dropped without a word."""
    for kwargs, shape in (({}, (224, 320, 3)), ({"frame_stack": 2}, (2, 224, 320, 3))):
        env = make_sonic_env(GAME, STATE, scenario=SCEN, frame_size=None, **kwargs)
        try:
            obs, _ = env.reset(seed=0)
            assert env.observation_space.shape == obs.shape == shape
            assert env.observation_space.contains(env.step(0)[0])
        finally:
            env.close()


def test_levels_env_stays_reproducible_across_a_level_switch():
    from dreamarcade.envs.sonic import Level

    def draws_after_a_switch() -> list[float]:
        env = RetroLevelsEnv([(GAME, STATE)], scenario=SCEN, max_episode_steps=5)
        try:
            env.reset(seed=0)
            env.level = Level("Another", "Level")  # as if the last episode was on another level: rebuild on reset
            env.reset()  # an autoreset: no seed; the new inner env must draw from the seeded stream
            inner = env._env
            while not isinstance(inner, StochasticFrameSkip):
                inner = inner.env
            return inner._rng.random(3).tolist()
        finally:
            env.close()

    assert draws_after_a_switch() == draws_after_a_switch()


def test_subprocess_vector_env_and_sb3():
    """Two emulators need two processes; SB3 trains on the registered stack for a few steps."""
    env = gym.vector.AsyncVectorEnv([lambda: gym.make("AirstrikerContest-v0", max_episode_steps=20)] * 2)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84)
        obs, *_ = env.step(np.array([1, 6]))
    finally:
        env.close()
    sb3 = pytest.importorskip("stable_baselines3")
    venv = sb3.common.env_util.make_vec_env("AirstrikerContest-v0", n_envs=1)
    try:
        model = sb3.PPO("CnnPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, device="cpu")
        model.learn(32)
    finally:
        venv.close()


def test_two_retro_envs_in_one_process_are_refused_by_name_and_leave_no_emulator() -> None:
    # --vector-mode sync with 2 retro envs ended in stable-retro's "Cannot create multiple emulator instances per
    # process" traceback, and the first emulator stayed in the process
    from dreamarcade.baselines.ppo import make_vector_env

    fns = [lambda: make_contest_env("Airstriker-Genesis", "Level1", scenario="scenario")] * 2
    with pytest.raises(ValueError, match=r"2 retro envs in one process .*--vector-mode async"):
        make_vector_env(fns, "sync")
    venv = make_vector_env(fns[:1], "sync")  # the first one was closed: this process can start another
    venv.reset(seed=0)
    venv.close()
