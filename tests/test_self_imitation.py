"""Self-imitation learning (dreamarcade.baselines.self_imitation) and its use by PPO and the imitation agent."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from dreamarcade.baselines.self_imitation import EpisodeBuffer, self_imitation_loss
from dreamarcade.errors import CheckpointError


def _play(buf: EpisodeBuffer, rewards: list[float], step: int, env: int = 0, num_envs: int = 1, action: int = 1):
    """One episode of ``rewards`` in env ``env`` (the other envs idle mid-episode); observations count the steps."""
    for t, r in enumerate(rewards):
        obs = np.full((num_envs, 2), t, np.uint8)
        dones = np.zeros(num_envs, bool)
        dones[env] = t == len(rewards) - 1
        buf.add_step(obs, np.full(num_envs, action), np.eye(num_envs)[env] * r, dones, step + t)


def test_buffer_stores_discounted_returns_to_go_per_episode_and_keeps_the_envs_apart():
    buf = EpisodeBuffer(capacity=4, gamma=0.9, num_envs=2)
    obs = np.array([[1, 1], [2, 2]], np.uint8)
    # env 0: rewards 1, 0, 2 over three steps; env 1: reward 5 in one step, ending at the first
    buf.add_step(obs, np.array([0, 3]), np.array([1.0, 5.0]), np.array([False, True]), 1)
    buf.add_step(obs * 10, np.array([1, 4]), np.array([0.0, 0.0]), np.array([False, False]), 2)
    buf.add_step(obs * 20, np.array([2, 5]), np.array([2.0, 0.0]), np.array([True, False]), 3)
    assert [e.total for e in buf.episodes] == [5.0, 3.0]
    first, second = buf.episodes
    assert first.actions.tolist() == [3] and first.returns.tolist() == [5.0] and first.obs[""].tolist() == [[2, 2]]
    assert second.actions.tolist() == [0, 1, 2]
    np.testing.assert_allclose(second.returns, [1 + 0.9**2 * 2, 0.9 * 2, 2.0], rtol=1e-6)
    assert second.obs[""][:, 0].tolist() == [1, 10, 20]
    assert len(buf) == 4 and buf.best_return == 5.0
    assert [s[1] for s in buf._open[1]] == [4, 5]  # env 1's second episode is still open: not stored


def test_buffer_keeps_the_best_episodes_drops_the_oldest_of_the_lowest_and_refuses_a_tie():
    buf = EpisodeBuffer(capacity=2, gamma=1.0, num_envs=1)
    for step, total in enumerate([1.0, 3.0, 1.0, 2.0, 0.5, 3.0]):
        _play(buf, [total], 10 * step)
    assert [(e.total, e.end_step) for e in buf.episodes] == [(3.0, 10), (3.0, 50)]
    _play(buf, [3.0], 60)  # equal to the worst stored: not better, so not stored
    assert [e.end_step for e in buf.episodes] == [10, 50]


def test_buffer_samples_steps_of_dict_observations_with_their_actions_and_returns():
    buf = EpisodeBuffer(capacity=3, gamma=0.5, num_envs=1)
    for step, (n, action) in enumerate([(3, 7), (5, 2)]):
        for t in range(n):
            obs = {"frames": np.full((1, 2, 2), 10 * action + t, np.uint8), "meta": np.full((1, 2), t, np.float32)}
            buf.add_step(obs, np.array([action]), np.array([1.0]), np.array([t == n - 1]), 100 * step + t)
    obs, actions, returns = buf.sample(500, np.random.default_rng(0))
    assert set(obs) == {"frames", "meta"} and obs["frames"].shape == (500, 2, 2) and obs["meta"].shape == (500, 2)
    t = obs["meta"][:, 0].astype(int)
    assert (obs["frames"][:, 0, 0] == 10 * actions + t).all()  # each row is one stored step, whole
    lengths = np.where(actions == 7, 3, 5)
    np.testing.assert_allclose(returns, 2 * (1 - 0.5 ** (lengths - t)), rtol=1e-6)
    assert 0.3 < np.mean(actions == 7) < 0.45  # uniform over the 8 stored steps: 3 of 8 are the first episode's
    with pytest.raises(ValueError, match="no episode"):
        EpisodeBuffer(1, 0.9, 1).sample(4, np.random.default_rng(0))


@pytest.mark.parametrize(
    "kwargs, match", [({"capacity": 0}, "capacity"), ({"num_envs": 0}, "num_envs"), ({"gamma": 1.5}, "gamma")]
)
def test_buffer_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpisodeBuffer(**{"capacity": 2, "gamma": 0.9, "num_envs": 1, **kwargs})


def test_buffer_save_and_load_round_trip_drop_later_episodes_and_write_each_episode_once(tmp_path):
    buf = EpisodeBuffer(capacity=2, gamma=0.9, num_envs=1)
    _play(buf, [1.0, 0.0], 0)
    _play(buf, [0.0, 2.0], 10)
    buf.save(tmp_path, global_step=20)
    files = sorted(p.name for p in tmp_path.glob("episode_*"))
    assert len(files) == 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("episode_*")}
    _play(buf, [5.0], 30)  # replaces the return-1 episode
    buf.save(tmp_path, global_step=40)
    assert len(list(tmp_path.glob("episode_*"))) == 3  # the previous save's files stay until the next save
    buf.save(tmp_path, global_step=40)
    kept = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("episode_*")}
    assert len(kept) == 2 and len(set(files) & set(kept)) == 1  # then the return-1 episode's file is gone
    assert all(kept[name] == mtimes[name] for name in kept if name in mtimes)  # not written again

    back = EpisodeBuffer(capacity=2, gamma=0.9, num_envs=1)
    back.load(tmp_path, global_step=40, obs_shapes={"": (2,)})
    assert [(e.total, e.end_step) for e in back.episodes] == [(2.0, 11), (5.0, 30)]
    for a, b in zip(back.episodes, buf.episodes):
        np.testing.assert_array_equal(a.returns, b.returns)
        np.testing.assert_array_equal(a.obs[""], b.obs[""])
    early = EpisodeBuffer(capacity=2, gamma=0.9, num_envs=1)
    early.load(tmp_path, global_step=29, obs_shapes={"": (2,)})  # a resume from before the third episode ended
    assert [e.end_step for e in early.episodes] == [11]
    smaller = EpisodeBuffer(capacity=1, gamma=0.9, num_envs=1)
    smaller.load(tmp_path, global_step=40, obs_shapes={"": (2,)})
    assert [e.total for e in smaller.episodes] == [5.0]
    EpisodeBuffer(1, 0.9, 1).load(tmp_path / "none", 40, {"": (2,)})  # no directory: an empty start


def test_a_stop_between_the_buffer_save_and_the_agent_checkpoint_resumes_with_the_buffer_it_had(tmp_path):
    buf = EpisodeBuffer(capacity=1, gamma=1.0, num_envs=1)
    _play(buf, [1.0], 90)  # A, saved with the checkpoint at 100
    buf.save(tmp_path, global_step=100)
    _play(buf, [3.0], 150)  # B pushes A out; the buffer is saved at 200, and the run dies before its agent checkpoint
    buf.save(tmp_path, global_step=200)
    back = EpisodeBuffer(capacity=1, gamma=1.0, num_envs=1)
    back.load(tmp_path, global_step=100, obs_shapes={"": (2,)})  # the agent resumes from 100
    assert [(e.total, e.end_step) for e in back.episodes] == [(1.0, 90)]  # A (its file was kept), not nothing
    _play(back, [2.0], 160)  # the replayed steps give another episode; its file must not replace one still listed
    back.save(tmp_path, global_step=200)
    names = sorted(p.name for p in tmp_path.glob("episode_*"))
    assert len(names) == len(set(names)) == 2  # the new one and A (the previous save's), B's file pruned
    again = EpisodeBuffer(capacity=1, gamma=1.0, num_envs=1)
    again.load(tmp_path, global_step=200, obs_shapes={"": (2,)})
    assert [(e.total, e.end_step) for e in again.episodes] == [(2.0, 160)]
    np.testing.assert_array_equal(again.episodes[0].returns, [2.0])


def test_buffer_load_refuses_other_runs_and_corrupt_files(tmp_path):
    buf = EpisodeBuffer(capacity=2, gamma=0.9, num_envs=1)
    _play(buf, [1.0, 1.0], 0)
    buf.save(tmp_path, global_step=5)
    with pytest.raises(CheckpointError, match="does not fit"):
        EpisodeBuffer(2, 0.9, 1).load(tmp_path, 5, {"": (3,)})
    with pytest.raises(CheckpointError, match="does not fit"):
        EpisodeBuffer(2, 0.9, 1).load(tmp_path, 5, {"frames": (2,)})
    with pytest.raises(CheckpointError, match="gamma=0.9"):
        EpisodeBuffer(2, 0.99, 1).load(tmp_path, 5, {"": (2,)})
    next(tmp_path.glob("episode_*")).write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="cannot be read"):
        EpisodeBuffer(2, 0.9, 1).load(tmp_path, 5, {"": (2,)})
    (tmp_path / "index.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(CheckpointError, match="not a self-imitation index"):
        EpisodeBuffer(2, 0.9, 1).load(tmp_path, 5, {"": (2,)})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"obs.": np.zeros((2, 2), np.float32)}, "observations of dtype float32, this run's are uint8"),
        ({"actions": np.array([1.0, 1.0])}, "actions of dtype float64, not integers"),
        ({"actions": np.array([[1, 1], [1, 1]])}, "does not fit this run"),
        ({"actions": np.array([1, 9])}, "actions 1..9, outside this run's 0..3"),
        ({"actions": np.array([-1, 1])}, "actions -1..1, outside this run's 0..3"),
        ({"returns": np.array([np.nan, 1.0], np.float32)}, "returns that are not finite"),
    ],
)
def test_buffer_load_refuses_episodes_with_wrong_dtypes_actions_or_returns(tmp_path, change, message):
    from safetensors.numpy import load, save

    buf = EpisodeBuffer(capacity=2, gamma=0.9, num_envs=1)
    _play(buf, [1.0, 1.0], 0)
    buf.save(tmp_path, global_step=5)
    EpisodeBuffer(2, 0.9, 1).load(tmp_path, 5, {"": (2,)}, {"": np.uint8}, num_actions=4)  # as saved: loads
    path = next(tmp_path.glob("episode_*"))
    arrays = load(path.read_bytes())
    arrays.update(change)
    path.write_bytes(save(arrays))
    with pytest.raises(CheckpointError, match=message):
        EpisodeBuffer(2, 0.9, 1).load(tmp_path, 5, {"": (2,)}, {"": np.uint8}, num_actions=4)


def test_buffer_load_refuses_index_entries_it_cannot_use(tmp_path):
    buf = EpisodeBuffer(capacity=2, gamma=0.9, num_envs=1)
    _play(buf, [1.0, 1.0], 0)
    buf.save(tmp_path / "run", global_step=5)
    index = json.loads((tmp_path / "run" / "index.json").read_text())
    outside = tmp_path / "other" / index["episodes"][0]["file"]
    outside.parent.mkdir()
    outside.write_bytes((tmp_path / "run" / index["episodes"][0]["file"]).read_bytes())
    for bad, match in [
        ({"file": str(outside)}, "not one of the directory's own"),  # a path elsewhere, even to a valid file
        ({"file": "../other/" + outside.name}, "not one of the directory's own"),
        ({"file": 3}, "not one of the directory's own"),
        ({"total": None}, "TypeError"),
        ({"end_step": "x"}, "ValueError"),
    ]:
        entry = {**index["episodes"][0], **bad}
        (tmp_path / "run" / "index.json").write_text(json.dumps({**index, "episodes": [entry]}))
        with pytest.raises(CheckpointError, match=match):
            EpisodeBuffer(2, 0.9, 1).load(tmp_path / "run", 5, {"": (2,)})
    del entry["total"]
    (tmp_path / "run" / "index.json").write_text(json.dumps({**index, "episodes": [entry]}))
    with pytest.raises(CheckpointError, match="KeyError"):
        EpisodeBuffer(2, 0.9, 1).load(tmp_path / "run", 5, {"": (2,)})
    # a resume from before the last save reads the previous one, which is checked the same way
    (tmp_path / "run" / "index.json").write_text(json.dumps({**index, "previous": {"episodes": []}}))
    with pytest.raises(CheckpointError, match="global_step"):
        EpisodeBuffer(2, 0.9, 1).load(tmp_path / "run", 4, {"": (2,)})


def test_a_failed_save_writes_its_episodes_again_on_the_next_save(tmp_path, monkeypatch):
    from dreamarcade.baselines import self_imitation

    buf = EpisodeBuffer(capacity=2, gamma=0.9, num_envs=1)
    _play(buf, [1.0], 0)
    real = self_imitation.atomic_write_bytes

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(self_imitation, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError, match="No space"):
        buf.save(tmp_path, global_step=5)
    monkeypatch.setattr(self_imitation, "atomic_write_bytes", real)
    buf.save(tmp_path, global_step=5)
    back = EpisodeBuffer(2, 0.9, 1)
    back.load(tmp_path, 5, {"": (2,)})
    assert [e.total for e in back.episodes] == [1.0]


def test_loss_counts_only_steps_that_beat_the_critic_and_pulls_their_actions_up():
    log_prob = torch.log(torch.tensor([0.25, 0.25, 0.25, 0.25], requires_grad=True))
    value = torch.tensor([0.0, 1.0, 5.0, 5.0], requires_grad=True)
    returns = torch.tensor([2.0, 2.0, 1.0, 5.0])
    loss, frac = self_imitation_loss(log_prob, value, returns, value_coef=0.5)
    assert frac == 0.25 * 2  # 2 of 4 beat V
    # divided by the 2 valid steps: policy (2 + 1) * log 4 / 2, value 0.5 * 0.5 * (4 + 1) / 2
    assert loss.item() == pytest.approx(3 * np.log(4) / 2 + 0.5 * 0.5 * 5 / 2, rel=1e-6)
    loss.backward()
    assert value.grad.tolist() == pytest.approx([-0.5, -0.25, 0.0, 0.0])  # V rises towards R where R > V only
    zero, frac = self_imitation_loss(log_prob, torch.full((4,), 9.0), returns, value_coef=0.5)
    assert zero.item() == 0.0 and frac == 0.0


def test_ppo_config_refuses_bad_self_imitation_settings():
    from dreamarcade.baselines.ppo import PPOConfig

    for kwargs, match in [
        ({"sil_coef": -1.0}, "sil-coef"),
        ({"sil_coef": float("nan")}, "sil-coef"),
        ({"sil_value_coef": -0.1}, "sil-value-coef"),
        ({"sil_updates": 0}, "sil_updates|sil-updates"),
        ({"sil_episodes": 0}, "sil_episodes|sil-episodes"),
        ({"sil_coef": 1.0, "recurrent": True, "num_envs": 4}, "recurrent"),
    ]:
        with pytest.raises(ValueError, match=match):
            PPOConfig(**kwargs).validate()


def test_self_imitation_update_raises_the_stored_actions_probability():
    from dreamarcade.baselines.ppo import PPOConfig, _self_imitation_update, build_agent

    space = gym.spaces.Box(0, 1, (3,), np.float32)
    cfg = PPOConfig(num_envs=1, num_steps=32, num_minibatches=1, sil_coef=1.0, sil_updates=10, learning_rate=1e-3)
    torch.manual_seed(0)
    agent = build_agent(space, gym.spaces.Discrete(4), cfg)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate)
    buf = EpisodeBuffer(capacity=2, gamma=0.99, num_envs=1)
    obs = np.array([[0.2, 0.5, 0.9]], np.float32)
    for t in range(8):  # one good episode that always took action 2
        buf.add_step(obs, np.array([2]), np.array([1.0]), np.array([t == 7]), t)

    def prob() -> float:
        with torch.no_grad():
            return float(torch.softmax(agent.actor(agent.encode(torch.as_tensor(obs))), -1)[0, 2])

    before = prob()
    np.random.seed(0)
    metrics = _self_imitation_update(agent, optimizer, buf, cfg, torch.device("cpu"))
    assert prob() > before + 0.05  # 0.25 -> 0.33 in ten steps of lr 1e-3
    assert metrics["charts/sil_best_return"] == 8.0 and 0 < metrics["charts/sil_valid_frac"] <= 1
    empty = _self_imitation_update(agent, optimizer, EpisodeBuffer(1, 0.99, 1), cfg, torch.device("cpu"))
    assert np.isnan(empty["losses/sil_loss"])  # nothing stored yet: no update


def test_train_ppo_with_self_imitation_logs_it_and_resumes_with_its_episodes(tmp_path):
    from dreamarcade.baselines.ppo import PPOConfig, train_ppo

    cfg = PPOConfig(
        total_timesteps=1024,
        num_envs=2,
        num_steps=128,
        num_minibatches=4,
        update_epochs=1,
        sil_coef=1.0,
        sil_episodes=3,
        vector_mode="sync",
        checkpoint_every_updates=2,
    )
    fns = [lambda: gym.make("CartPole-v1")] * 2
    train_ppo(fns, cfg, tmp_path, progress=False, tensorboard=False)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    assert float(rows[-1]["charts/sil_best_return"]) > 0 and float(rows[-1]["losses/sil_loss"]) >= 0
    index = json.loads((tmp_path / "self_imitation" / "index.json").read_text())
    saved = [(e["total"], e["end_step"]) for e in index["episodes"]]
    assert len(saved) == 3 and index["global_step"] == 1024
    best = sorted(
        float(r["episodic_return"]) for r in csv.DictReader((tmp_path / "episodes.csv").read_text().splitlines())
    )[-3:]
    assert sorted(t for t, _ in saved) == best  # the three best episodes of the run

    import dreamarcade.baselines.ppo as ppo

    seen = {}
    real_load = ppo.EpisodeBuffer.load

    def spy(self, directory, global_step, *checks):
        real_load(self, directory, global_step, *checks)
        seen["episodes"] = [(e.total, e.end_step) for e in self.episodes]

    ppo.EpisodeBuffer.load = spy
    try:
        train_ppo(fns, PPOConfig(**{**cfg.__dict__, "total_timesteps": 1536}), tmp_path, resume=True, progress=False)
    finally:
        ppo.EpisodeBuffer.load = real_load
    assert seen["episodes"] == saved  # the resumed run starts with the episodes it had


def test_imitation_cli_passes_self_imitation_on_and_keeps_it_on_resume(tmp_path):
    from dreamarcade.baselines.imitation import _load_config, main

    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--reward", "game", "--num-envs", "2", "--num-steps", "16"]
    argv += ["--sil-coef", "0.5", "--sil-episodes", "2", "--max-episode-steps", "10", "--total-timesteps", "32"]
    assert main(argv) == 0
    cfg = _load_config(run)
    assert (cfg.ppo.sil_coef, cfg.ppo.sil_episodes) == (0.5, 2)
    assert json.loads((run / "self_imitation" / "index.json").read_text())["episodes"]  # 10-step episodes ended
    resume = ["train", "--run-dir", str(run), "--reward", "game", "--total-timesteps", "64", "--resume"]
    assert main(resume) == 0
    assert _load_config(run).ppo.sil_coef == 0.5  # not given again: the run's own value, not the default 1
    short = ["--num-envs", "1", "--num-steps", "16", "--total-timesteps", "16"]
    for flags, coef in (([], 1.0), (["--sil-coef", "0"], 0.0)):  # on by default for the imitation agent; 0: off
        other = tmp_path / f"sil{coef:g}"
        assert main(["train", "--run-dir", str(other), *short, *flags]) == 0
        assert _load_config(other).ppo.sil_coef == coef and (other / "self_imitation").is_dir() == (coef > 0)
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(tmp_path / "neg"), "--sil-coef", "-1"])


def test_self_imitation_ranks_and_imitates_the_reward_without_the_count_bonus(tmp_path):
    """The bonus shrinks as counts grow: the untrained policy's first episodes ranked first for good with it, and
    their bonus-inflated returns kept them imitated for the whole run."""
    from safetensors.numpy import load_file

    from dreamarcade.baselines.imitation import main
    from dreamarcade.baselines.ppo import _without_bonus

    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--reward", "game", "--count-bonus", "0.1", "--num-envs", "2"]
    argv += ["--num-steps", "16", "--max-episode-steps", "10", "--total-timesteps", "64"]
    assert main(argv) == 0
    episodes = json.loads((run / "self_imitation" / "index.json").read_text())["episodes"]
    assert episodes  # 10-step episodes of random play: no game score, so nothing but the bonus could rank them
    assert all(e["total"] == 0.0 for e in episodes)
    for e in episodes:
        assert not load_file(run / "self_imitation" / e["file"])["returns"].any()
    reward = np.array([1.5, 0.25])
    np.testing.assert_array_equal(_without_bonus(reward, {}), reward)
    np.testing.assert_array_equal(_without_bonus(reward, {"count_bonus": np.array([0.5, 0.25])}), [1.0, 0.0])
    masked = {"count_bonus": np.array([0.5, 0.0]), "_count_bonus": np.array([True, False])}  # a vector env's info
    np.testing.assert_array_equal(_without_bonus(reward, masked), [1.0, 0.25])
    # train_ppo's same-step autoreset: an env that ends its episode reports its last step's bonus in final_info (the
    # top level holds its reset's info), so the last step's bonus was kept and ranked the first episodes first
    import ale_py

    from dreamarcade.wrappers.exploration import CountBonus

    gym.register_envs(ale_py)

    def make() -> gym.Env:
        env = gym.make("ALE/Pong-v5", obs_type="grayscale", repeat_action_probability=0.0)
        return CountBonus(gym.wrappers.TimeLimit(env, 3), beta=0.1)

    envs = gym.vector.SyncVectorEnv([make, make], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    try:
        envs.reset(seed=0)
        for _ in range(7):  # two episode ends per env
            _, reward, *_, infos = envs.step(np.zeros(2, np.int64))
            np.testing.assert_allclose(_without_bonus(reward, infos), 0.0, atol=1e-12)  # Pong pays nothing this soon
            assert reward.max() > 0  # the bonus is paid
    finally:
        envs.close()
