"""The count-based exploration bonus (dreamarcade.wrappers.exploration) and its use by the imitation agent."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from dreamarcade.wrappers.exploration import CellCounter, CountBonus


def test_cell_counter_pays_beta_over_sqrt_count_per_cell():
    counter = CellCounter(beta=0.2)
    black = np.zeros((84, 84), np.uint8)
    paid = [float(counter.bonus(black[None])[0]) for _ in range(4)]
    np.testing.assert_allclose(paid, [0.2 / np.sqrt(n) for n in (1, 2, 3, 4)])
    bright = black.copy()
    bright[:40, :40] = 255  # a quarter of the image changes: another cell, first visit
    assert counter.bonus(np.stack([bright, black])).tolist() == pytest.approx([0.2, 0.2 / np.sqrt(5)])
    assert counter.num_cells == 2
    # a change far below the cell resolution (one pixel) is the same cell
    speck = black.copy()
    speck[10, 10] = 255
    assert counter.cell(speck) == counter.cell(black)
    # only the frames asked for are counted and paid
    before = dict(counter.counts)
    assert counter.bonus(np.stack([black, bright]), count=np.array([False, True]))[0] == 0.0
    assert counter.counts[counter.cell(black)] == before[counter.cell(black)]
    assert counter.counts[counter.cell(bright)] == before[counter.cell(bright)] + 1


def test_cell_of_an_rgb_frame_is_the_cell_of_its_grayscale():
    import cv2

    rgb = np.random.default_rng(0).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    counter = CellCounter(beta=1.0, width=11, height=8, levels=8)
    assert counter.cell(rgb) == counter.cell(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    cell = np.frombuffer(counter.cell(rgb), np.uint8)
    assert cell.shape == (88,) and cell.max() < 8  # 11 x 8 pixels, 8 levels


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"beta": 0.1, "width": 0}, "width"),
        ({"beta": 0.1, "height": 2.5}, "height"),
        ({"beta": 0.1, "levels": 1}, "levels"),
        ({"beta": 0.1, "levels": 300}, "levels"),
    ],
)
def test_cell_counter_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CellCounter(**kwargs)


def test_cell_counter_refuses_frames_that_are_not_uint8_images():
    counter = CellCounter(beta=0.1)
    with pytest.raises(ValueError, match="uint8 frames"):
        counter.cell(np.zeros((84, 84), np.float32))
    with pytest.raises(ValueError, match="uint8 frames"):
        counter.cell(np.zeros((4, 84, 84), np.uint8))  # a channel-first stack


def test_cell_counts_round_trip_through_tensors_and_refuse_other_cell_sizes():
    from dreamarcade.errors import CheckpointError

    counter = CellCounter(beta=0.1)
    frames = np.random.default_rng(1).integers(0, 256, (20, 84, 84), dtype=np.uint8)
    counter.bonus(frames)
    counter.bonus(frames[:5])
    again = CellCounter(beta=0.1)
    again.load_state_tensors(counter.state_tensors())
    assert again.counts == counter.counts and sum(again.counts.values()) == 25
    empty = CellCounter(beta=0.1)
    empty.load_state_tensors(CellCounter(beta=0.1).state_tensors())  # no cells yet is a valid state
    assert empty.counts == {}
    with pytest.raises(CheckpointError, match="16x12"):
        CellCounter(beta=0.1, width=16, height=12).load_state_tensors(counter.state_tensors(), "here")
    with pytest.raises(CheckpointError, match="no cell counts"):
        CellCounter(beta=0.1).load_state_tensors({}, "here")
    # the same number of bytes per cell, other cells: an 8x11 image, or other intensity levels (they loaded)
    for other in (dict(width=8, height=11), dict(levels=4)):
        with pytest.raises(CheckpointError, match="no cell counts for"):
            CellCounter(beta=0.1, **other).load_state_tensors(counter.state_tensors(), "here")
    older = {k: v for k, v in counter.state_tensors().items() if k != "cell_shape"}  # saved before it was recorded
    again.load_state_tensors(older)
    assert again.counts == counter.counts
    bad = counter.state_tensors()
    bad["counts"] = torch.zeros_like(bad["counts"])
    with pytest.raises(CheckpointError):
        CellCounter(beta=0.1).load_state_tensors(bad, "here")


def test_count_bonus_wrapper_adds_the_bonus_to_the_game_reward_on_montezuma():
    import ale_py

    gym.register_envs(ale_py)
    counter = CellCounter(beta=0.1)
    envs = [CountBonus(gym.make("ALE/MontezumaRevenge-v5", repeat_action_probability=0.0), counter=counter)]
    envs.append(CountBonus(gym.make("ALE/MontezumaRevenge-v5", repeat_action_probability=0.0), counter=counter))
    try:
        for env in envs:
            env.reset(seed=0)
        assert sum(counter.counts.values()) == 2  # both starts counted, in the one shared table
        rng = np.random.default_rng(0)
        bonuses = []
        for _ in range(100):
            for env in envs:
                obs, reward, term, trunc, info = env.step(int(rng.integers(18)))
                assert reward == pytest.approx(info["count_bonus"])  # the game pays nothing in 100 random steps
                bonuses.append(info["count_bonus"])
        assert sum(counter.counts.values()) == 202
        # a cell seen n times pays beta / sqrt(n); repeated cells pay less than a first visit
        assert max(bonuses) <= 0.1 and min(bonuses) < 0.1 / np.sqrt(10)
    finally:
        for env in envs:
            env.close()


def test_count_bonus_wrapper_adds_the_bonus_to_a_nonzero_game_reward():
    import ale_py

    gym.register_envs(ale_py)
    env = CountBonus(gym.make("ALE/Pong-v5", repeat_action_probability=0.0), beta=0.1)
    try:
        env.reset(seed=0)
        lost = 0
        for _ in range(150):  # standing still, the player loses a point (-1) within 150 steps
            _, reward, _, _, info = env.step(0)
            game = round(reward - info["count_bonus"], 9)
            assert game in (0.0, -1.0)
            lost += game == -1.0
    finally:
        env.close()
    assert lost >= 1  # the game's -1 came through, with the bonus added to it


def test_count_bonus_wrapper_refuses_observations_that_are_not_images():
    with pytest.raises(ValueError, match="uint8 image"):
        CountBonus(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="frame stacking"):
        CountBonus(gym.wrappers.FrameStackObservation(gym.make("ALE/Pong-v5", obs_type="grayscale"), 4))


def test_policy_frames_add_the_bonus_to_every_reward_kind_and_pay_none_at_an_episode_end():
    import ale_py

    from dreamarcade.baselines.imitation import PolicyFrames

    gym.register_envs(ale_py)

    def venv() -> gym.vector.VectorEnv:
        make = lambda: gym.wrappers.TimeLimit(gym.make("ALE/MontezumaRevenge-v5", repeat_action_probability=0.0), 30)  # noqa: E731
        return gym.vector.SyncVectorEnv([make, make], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    env = PolicyFrames(venv(), reward="game", similarity=False, count_bonus=0.1)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(40):
            _, reward, term, trunc, info = env.step(rng.integers(0, 18, 2))
            np.testing.assert_allclose(reward, info["count_bonus"])  # no game reward here: the bonus alone
            done = np.logical_or(term, trunc)
            ends += int(done.sum())
            assert (info["count_bonus"][done] == 0).all() and (info["count_bonus"][~done] > 0).all()
        assert ends == 2  # both 30-step episodes ended (and their next starts were counted, not paid)
        state = env.checkpoint_tensors()
        assert int(state["counts"].sum()) == 2 + 2 * 40  # the two starts, then one frame per env per step
    finally:
        env.close()
    plain = PolicyFrames(venv(), reward="game", similarity=False)
    assert plain.checkpoint_tensors() == {}
    plain.close()
    with pytest.raises(ValueError, match="count_bonus"):
        PolicyFrames(venv(), reward="game", similarity=False, count_bonus=-0.1)


def test_agent_resume_goes_on_with_the_counts_of_its_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from dreamarcade.baselines.imitation import main

    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--reward", "game", "--num-envs", "2", "--num-steps", "16"]
    argv += ["--count-bonus", "0.05", "--max-episode-steps", "100", "--total-timesteps", "32"]
    assert main(argv) == 0
    assert json.loads((run / "imitation_config.json").read_text())["count_bonus"] == 0.05

    def visits() -> int:
        return int(load_file(str(run / "checkpoint" / "weights.safetensors"))["env.counts"].sum())

    assert visits() == 2 + 32  # the two starts, then 16 steps of 2 envs
    assert main([*argv[:-1], "64", "--resume"]) == 0
    assert visits() == 34 + 2 + 32  # restored, then the new starts and steps; without the restore it would be 34
    assert main([*argv[:-1], "96", "--resume", "--count-bonus", "0.1"]) == 2  # the reward must stay what was trained
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(tmp_path / "neg"), "--count-bonus", "-1"])


def _count_bonus_warnings_in_child(counter: CellCounter) -> list[str]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CountBonus(gym.make("ALE/Pong-v5"), counter=counter).close()
    return [str(w.message) for w in caught if "another process" in str(w.message)]


def test_count_bonus_records_the_paying_beta_and_warns_about_a_counter_copied_to_another_process():
    import multiprocessing

    import ale_py

    gym.register_envs(ale_py)
    counter = CellCounter(beta=0.5)
    env = CountBonus(gym.make("ALE/Pong-v5"), counter=counter)  # the default beta=0.1 is not the one that pays
    assert env.spec.additional_wrappers[-1].kwargs == {"beta": 0.5}
    env.close()
    rebuilt = gym.make(env.spec)  # the rebuilt env pays what the original paid (with counts of its own)
    assert rebuilt.get_wrapper_attr("counter").beta == 0.5
    rebuilt.close()
    # an env built in a worker process (as AsyncVectorEnv does) gets a copy of the counter: it says so
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert len(pool.apply(_count_bonus_warnings_in_child, (counter,))) == 1
    assert _count_bonus_warnings_in_child(counter) == []  # in its own process the counter is shared, no warning
