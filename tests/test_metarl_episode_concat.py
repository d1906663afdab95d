"""EpisodeConcat (RL^2 trials) semantics and the registered meta-RL task families."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dreamarcade  # noqa: F401  (registers the ids)
from dreamarcade.envs.bandit import BanditEnv
from dreamarcade.envs.maze import MazeTask, RandomMazeEnv, generate_maze
from dreamarcade.wrappers.metarl import EpisodeConcat

META_IDS = ["RandomMaze-v0", "RandomMazePixels-v0", "Bandit-v0", "MetaMaze-v0", "MetaMazePixels-v0", "MetaBandit-v0"]


@pytest.mark.parametrize("env_id", META_IDS)
def test_check_env_on_registered_ids(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped)
    check_env(env, skip_render_check=True)
    env.close()


def test_flat_observation_layout_and_first_step_zeros():
    env = EpisodeConcat(BanditEnv(), num_episodes=3)
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (1 + 2 + 2,)
    np.testing.assert_array_equal(obs, [0, 0, 0, 0, 0])  # obs, one-hot prev action, prev reward, prev done
    assert info["trial_episode"] == 0
    obs, reward, term, trunc, info = env.step(1)
    np.testing.assert_array_equal(obs[1:3], [0, 1])  # one-hot of action 1
    assert obs[3] == reward == info["inner_reward"]
    assert obs[4] == 1.0  # the pull ended an inner episode: the next obs starts a new one
    assert info["inner_done"] and info["inner_episode"] == 0 and info["trial_episode"] == 1
    assert not (term or trunc)


def test_image_observation_is_a_dict():
    env = EpisodeConcat(RandomMazeEnv(size=3, obs_type="pixels"), num_episodes=2)
    obs, _ = env.reset(seed=0)
    assert isinstance(env.observation_space, gym.spaces.Dict)
    assert obs["obs"].shape == (84, 84, 3) and obs["obs"].dtype == np.uint8
    assert obs["meta"].shape == (4 + 2,) and env.observation_space.contains(obs)


def _trial(env, policy, seed):
    """Play one trial; return (tasks seen at every step, outer-done steps, inner-done infos)."""
    obs, _ = env.reset(seed=seed)
    goals, inner = [], []
    t = 0
    while True:
        obs, r, term, trunc, info = env.step(policy(t))
        goals.append(env.unwrapped.get_task().goal)
        if info.get("inner_done"):
            inner.append(info)
        t += 1
        if term or trunc:
            return goals, inner, t


def test_task_fixed_within_trial_redrawn_across_trials_and_done_only_at_trial_end():
    env = EpisodeConcat(RandomMazeEnv(size=4, max_steps=12), num_episodes=3)
    rng = np.random.default_rng(0)
    goals_per_trial = []
    for trial in range(6):
        goals, inner, length = _trial(env, lambda t: int(rng.integers(4)), seed=trial)
        assert len(set(goals)) == 1, "the task changed inside a trial"
        assert [i["inner_episode"] for i in inner] == [0, 1, 2]  # three inner resets, reported in info
        assert length == sum(i["inner_length"] for i in inner)
        assert "inner_final_obs" in inner[0] and "inner_final_obs" not in inner[-1]
        goals_per_trial.append(goals[0])
    assert len(set(goals_per_trial)) > 1, "the task was never redrawn across trials"


def test_reset_seed_reproduces_the_task_and_options_fix_it():
    env = EpisodeConcat(RandomMazeEnv(size=4), num_episodes=2)
    env.reset(seed=5)
    a = env.task
    env.reset(seed=5)
    assert env.task.goal == a.goal and np.array_equal(env.task.walls, a.walls)
    task = MazeTask(generate_maze(4, np.random.default_rng(1)), (3, 3))
    env.reset(options={"task": task})
    assert env.unwrapped.get_task() is task
    # tasks compare and hash by content (the dataclass's own == compared arrays and raised; hash raised too)
    again = MazeTask(task.walls.copy(), (3, 3))
    assert again == task and hash(again) == hash(task) and len({task, again}) == 1
    assert MazeTask(task.walls, (2, 3)) != task and task != "a maze"
    # a refused task changes nothing: .task said the refused value while the old trial went on, and a seed passed
    # with it had reseeded the draws already
    with pytest.raises(ValueError, match="MazeTask"):
        env.reset(seed=9, options={"task": "nonsense"})
    assert env.task is task
    env.reset()
    seeded_9 = EpisodeConcat(RandomMazeEnv(size=4), num_episodes=2)
    seeded_9.reset(seed=9)
    assert env.task != seeded_9.task  # the refused call's seed 9 was not applied to the next draws


def test_a_seeded_trial_draws_its_payouts_independently_of_its_task():
    # the same seed for the task sampler and the bandit made arm 0 of a uniform bandit never pay on the first
    # pull of a seeded trial (its payout draw was its task draw)
    env = EpisodeConcat(BanditEnv(family="uniform"), num_episodes=2)
    pays, probs = [], []
    for seed in range(400):
        env.reset(seed=seed)
        probs.append(env.task[0])
        pays.append(env.step(0)[4]["inner_reward"])
    assert abs(np.mean(pays) - np.mean(probs)) < 0.08  # ~0.5 each (standard error 0.025), not 0
    with pytest.raises(ValueError, match="p_high"):
        BanditEnv(p_high=1.5)
    with pytest.raises(ValueError, match="task must be"):
        BanditEnv().set_task([np.nan, 0.5])


def test_a_new_task_waits_for_the_next_reset():
    # step() right after set_task() used to play the new maze from the old episode's position and step count
    for env, task in ((RandomMazeEnv(size=3), RandomMazeEnv(size=3).sample_task(np.random.default_rng(1))),
                      (BanditEnv(), [1.0, 0.0])):  # fmt: skip
        env.reset(seed=0)
        env.step(1)
        env.set_task(task)
        with pytest.raises(RuntimeError, match="call reset\\(\\) after set_task"):
            env.step(1)
        env.reset(seed=0)
        env.step(0)  # the new task's episode


def test_exploration_episodes_do_not_count():
    env = EpisodeConcat(BanditEnv(), num_episodes=4, exploration_episodes=2)
    env.reset(seed=0)
    env.unwrapped.set_task([1.0, 1.0])  # every pull pays 1
    env.reset(options={"task": [1.0, 1.0]})
    rewards, seen = [], []
    for _ in range(4):
        obs, r, term, trunc, info = env.step(0)
        rewards.append(r)
        seen.append(obs[3])
    assert rewards == [0.0, 0.0, 1.0, 1.0] and seen == [1.0] * 4 and term


def test_vector_autoreset_does_not_redraw_task_mid_trial():
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("MetaMaze-v0", max_steps=8)] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    envs.reset(seed=0)
    goals = [e.unwrapped.get_task().goal for e in envs.envs]
    outer_done = np.zeros(2, bool)
    for _ in range(8):  # at most 8 steps per inner episode: an inner reset happens, the trial goes on
        *_, term, trunc, info = envs.step(np.zeros(2, dtype=np.int64))  # always N: stays at the start, never wins
        outer_done |= term | trunc
        assert not outer_done.any()
        assert [e.unwrapped.get_task().goal for e in envs.envs] == goals
    assert info["inner_done"].all()
    envs.close()


def test_clear_errors():
    with pytest.raises(ValueError, match="num_episodes"):
        EpisodeConcat(BanditEnv(), num_episodes=0)
    with pytest.raises(ValueError, match="exploration_episodes"):
        EpisodeConcat(BanditEnv(), num_episodes=2, exploration_episodes=2)
    with pytest.raises(TypeError, match="set_task"):
        EpisodeConcat(gym.make("CartPole-v1"), num_episodes=2)
    with pytest.raises(ValueError, match="task must be"):
        RandomMazeEnv(size=3).set_task("maze")
    for bad in ({"max_steps": 0}, {"max_steps": -5}, {"pixel_size": 0}, {"max_steps": 2.5}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be an integer >= 1"):
            RandomMazeEnv(size=3, **bad)  # max_steps 0 truncated every first step; pixel_size 0 failed in OpenCV
    with pytest.raises(ValueError, match="pulls_per_episode must be an integer"):
        BanditEnv(pulls_per_episode=2.7)  # was silently 2
    maze = RandomMazeEnv(size=3)
    with pytest.raises(RuntimeError, match="reset"):
        maze.step(0)
    maze.reset(seed=0)
    with pytest.raises(ValueError, match="N, E, S, W"):
        maze.step(7)


def test_maze_is_connected_and_shortest_path_is_bfs():
    rng = np.random.default_rng(0)
    env = RandomMazeEnv(size=5)
    for _ in range(20):
        task = env.sample_task(rng)
        assert 1 <= task.shortest_path_length() <= 24


def test_maze_set_task_refuses_a_goal_outside_the_grid_at_the_start_or_walled_off():
    env = RandomMazeEnv(size=3)
    walls = np.zeros((3, 3, 4), dtype=bool)
    walls[0, :, 0] = walls[:, -1, 1] = walls[-1, :, 2] = walls[:, 0, 3] = True  # the outer walls only
    for goal in ((5, 5), (0, 0), (-1, 2), (1,), 3):  # a bare number is no cell either (it raised a TypeError)
        with pytest.raises(ValueError, match="goal must be a .row, column. cell of the 3x3 maze"):
            env.set_task(MazeTask(walls, goal))
    enclosed = walls.copy()
    enclosed[2, 2, 0] = enclosed[2, 2, 3] = enclosed[1, 2, 2] = enclosed[2, 1, 1] = True  # the corner cell shut in
    with pytest.raises(ValueError, match=r"goal \(2, 2\) cannot be reached from \(0, 0\)"):
        env.set_task(MazeTask(enclosed, (2, 2)))
    with pytest.raises(ValueError, match=r"walls have shape \(3, 3, 4\)"):
        env.set_task(MazeTask(walls[:2], (1, 1)))
    env.set_task(MazeTask(walls.tolist(), (1, 1)))  # nested lists of walls are read as an array
    assert isinstance(env.get_task().walls, np.ndarray)
    env.set_task(MazeTask(walls, [np.int64(2), 2]))  # a list of numpy ints is a cell too
    env.reset(seed=0)
    for action in (1, 1, 2):
        assert not env.step(action)[2]
    assert env.step(2)[2]  # E, E, S, S reaches (2, 2)
    # an open outer wall let the agent walk off the grid (to (-1, 0)), scrambling its position and observation
    with pytest.raises(ValueError, match="outer wall is open on the north, east, south, west sides"):
        env.set_task(MazeTask(np.zeros((3, 3, 4), bool), (2, 2)))
    leaky = walls.copy()
    leaky[2, 1, 2] = False
    with pytest.raises(ValueError, match="open on the south side"):
        env.set_task(MazeTask(leaky, (2, 2)))
    # a wall set on one side only was a one-way door (moves read the current cell's side) that the pixels drew
    # only on its east/south side
    one_way = walls.copy()
    one_way[0, 0, 1] = not walls[0, 0, 1]
    with pytest.raises(ValueError, match=r"set on one side only, e.g. walls\[0, 0, 1\]"):
        env.set_task(MazeTask(one_way, (2, 2)))


def test_sb3_runs_on_the_wrapped_envs():
    sb3 = pytest.importorskip("stable_baselines3")
    for env_id, policy in (("MetaMaze-v0", "MlpPolicy"), ("MetaMazePixels-v0", "MultiInputPolicy")):
        venv = sb3.common.env_util.make_vec_env(env_id, n_envs=2)
        model = sb3.PPO(policy, venv, n_steps=16, batch_size=16, n_epochs=1, device="cpu")
        model.learn(32)
        venv.close()
        assert model.num_timesteps == 32, env_id  # one rollout of 16 steps in each of the 2 envs


def test_outer_episode_statistics_record_the_trial_and_inner_ones_move_aside():
    """An inner RecordEpisodeStatistics's info["episode"] must not pass as the trial's (nor trip an outer one)."""
    inner = gym.wrappers.RecordEpisodeStatistics(BanditEnv())
    env = gym.wrappers.RecordEpisodeStatistics(EpisodeConcat(inner, num_episodes=5))
    env.reset(seed=3)
    total, inner_returns, inner_stats = 0.0, [], []
    for t in range(5):
        _, reward, term, trunc, info = env.step(t % 2)
        total += reward
        inner_returns.append(info["inner_return"])
        inner_stats.append(info["inner_episode_stats"])
        assert (term or trunc) == (t == 4) and ("episode" in info) == (t == 4)
    assert info["episode"]["r"] == total and info["episode"]["l"] == 5  # the trial's return and length
    assert [s["l"] for s in inner_stats] == [1] * 5 and [s["r"] for s in inner_stats] == inner_returns


def test_a_trial_ends_terminated_even_when_its_last_episode_is_truncated():
    # the trial is over by design: a truncation there would make SB3 bootstrap a value past the trial's end
    env = EpisodeConcat(gym.wrappers.TimeLimit(RandomMazeEnv(size=4), 3), num_episodes=2)
    env.reset(seed=0)
    flags = [env.step(0)[2:] for _ in range(6)]  # N from the top-left corner: a wall, so each episode runs out
    terminated, truncated, info = flags[-1]
    assert [f[:2] for f in flags[:-1]] == [(False, False)] * 5
    assert (terminated, truncated) == (True, False)
    assert info["inner_truncated"] and not info["inner_terminated"] and info["inner_episode"] == 1
