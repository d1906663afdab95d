"""DQN: the replay buffer's boundaries and memory, learning, checkpoints and resume, the CLI, SB3 interop."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamarcade.baselines.dqn import (
    DQNConfig,
    NatureCNN,
    evaluate,
    learner_forward,
    linear_schedule,
    load_q_network,
    train,
)
from dreamarcade.baselines.replay_buffer import ReplayBuffer
from dreamarcade.errors import CheckpointError


# --- a small task the tests build themselves -------------------------------------------------------
class Corridor(gym.Env):
    """Walk right along 8 cells to a +1 at the end; each step costs 0.01; 'left' at cell 0 stays."""

    metadata = {"render_modes": []}

    def __init__(self, length: int = 8) -> None:
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(length,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0
        self.t = 0

    def _obs(self) -> np.ndarray:
        o = np.zeros(self.length, np.float32)
        o[self.pos] = 1.0
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.pos = min(self.length - 1, self.pos + 1) if action == 1 else max(0, self.pos - 1)
        self.t += 1
        done = self.pos == self.length - 1
        return self._obs(), (1.0 if done else -0.01), done, self.t >= 40, {}


gym.register("TestCorridor-v0", entry_point=Corridor)


class OneStep(gym.Env):
    """Every episode is one step: action 0 pays 1, action 1 pays 0, and the episode terminates."""

    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(2, np.float32), {}

    def step(self, action):
        return np.ones(2, np.float32), float(action == 0), True, False, {}


gym.register("TestOneStep-v0", entry_point=OneStep)


class PixelCorridor(gym.Env):
    """A 36x36 uint8 corridor for the Nature CNN: start in cell 4 of 8, walk to the goal (+1, each step -0.01).

    The goal alternates between the two ends from one episode to the next and is drawn in the image (a grey
    column; the agent is a white one), so no constant action solves it: the network has to read the pixels.
    """

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, shape=(1, 36, 36), dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.pos, self.goal, self.t, self.episodes = 4, 0, 0, 0

    def _obs(self) -> np.ndarray:
        o = np.zeros((1, 36, 36), np.uint8)
        o[0, :, 4 * self.goal : 4 * self.goal + 4] = 128
        o[0, :, 4 * self.pos : 4 * self.pos + 4] = 255
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 4, 0
        self.goal = 0 if self.episodes % 2 == 0 else 7
        self.episodes += 1
        return self._obs(), {}

    def step(self, action):
        self.pos = min(7, self.pos + 1) if action == 1 else max(0, self.pos - 1)
        self.t += 1
        done = self.pos == self.goal
        return self._obs(), (1.0 if done else -0.01), done, self.t >= 40, {}


gym.register("TestPixelCorridor-v0", entry_point=PixelCorridor)


# --- replay buffer ----------------------------------------------------------------------------------
def _stacked_episode(ep: int, length: int, k: int = 4, hw: int = 6):
    """Frames carry (episode, step) so a rebuilt stack shows where each frame came from."""
    frames = [np.full((hw, hw), ep * 16 + min(s, 15), np.uint8) for s in range(length + 1)]
    zero = np.zeros((hw, hw), np.uint8)

    def stack(t: int) -> np.ndarray:
        return np.stack([frames[i] if i >= 0 else zero for i in range(t - k + 1, t + 1)])

    return [(stack(t), stack(t + 1)) for t in range(length)]


def test_buffer_rebuilds_exact_stacks_that_never_cross_episodes() -> None:
    rb = ReplayBuffer(200, (4, 6, 6), frame_stack=4, seed=0)
    added = set()
    for ep in range(12):
        trans = _stacked_episode(ep, length=3 + ep % 5)
        for t, (o, n) in enumerate(trans):
            term = t == len(trans) - 1
            rb.add(o[None], n[None], np.array([t % 3]), np.array([float(ep)]), np.array([term]), np.array([False]))
            added.add((o.tobytes(), n.tobytes(), t % 3, float(ep), term))
    batch = rb.sample(500)
    for o, a, r, n, d in zip(batch.obs, batch.actions, batch.rewards, batch.next_obs, batch.terminated):
        key = (o.numpy().tobytes(), n.numpy().tobytes(), int(a), float(r), bool(d))
        assert key in added
        episodes = {int(v) // 16 for v in o[:, 0, 0].tolist() if v != 0} | {
            int(v) // 16 for v in n[:, 0, 0].tolist() if v != 0
        }
        assert len(episodes) <= 1, "a stack mixed frames of two episodes"


def test_buffer_wraps_around_and_keeps_only_valid_transitions() -> None:
    rb = ReplayBuffer(50, (4, 6, 6), frame_stack=4, seed=1)
    added = set()
    for ep in range(40):
        for t, (o, n) in enumerate(_stacked_episode(ep % 16, length=5)):
            rb.add(o[None], n[None], np.array([0]), np.array([float(ep)]), np.array([t == 4]), np.array([False]))
            added.add((o.tobytes(), n.tobytes(), float(ep)))
    assert 0 < len(rb) <= 50
    batch = rb.sample(300)
    recent = {float(e) for e in range(40 - 12, 40)}
    for o, r, n in zip(batch.obs, batch.rewards, batch.next_obs):
        assert (o.numpy().tobytes(), n.numpy().tobytes(), float(r)) in added
        assert float(r) in recent  # only the newest transitions survive


def _fill_two_env_buffer(capacity: int, episodes: int) -> ReplayBuffer:
    """Two envs: env 1 sees env 0's frames upside down and the negated rewards."""
    rb = ReplayBuffer(capacity, (4, 6, 6), frame_stack=4, num_envs=2, seed=3)
    for ep in range(episodes):
        trans = _stacked_episode(ep % 16, length=4 + ep % 3)
        for t, (o, n) in enumerate(trans):
            end = np.array([t == len(trans) - 1] * 2)
            obs, nxt = np.stack([o, o[:, ::-1]]), np.stack([n, n[:, ::-1]])
            rb.add(obs, nxt, np.array([t % 3, 2]), np.array([ep, -ep], float), end, np.zeros(2, bool))
    return rb


def test_buffer_save_and_load_round_trip(tmp_path) -> None:
    for episodes in (3, 40):  # partly filled, and wrapped around its ring
        rb = _fill_two_env_buffer(60, episodes)
        rb.save(tmp_path / "buf", global_step=123)
        assert not list(tmp_path.glob(".buf*")), "no temporary directory is left behind"
        back = ReplayBuffer(60, (4, 6, 6), frame_stack=4, num_envs=2, seed=99)
        assert back.load(tmp_path / "buf") == {"global_step": 123}
        assert len(back) == len(rb) > 0
        a, b = rb.sample(200), back.sample(200)  # the sampling RNG is restored too
        for x, y in zip(
            (a.obs, a.next_obs, a.actions, a.rewards, a.terminated),
            (b.obs, b.next_obs, b.actions, b.rewards, b.terminated),
        ):
            assert torch.equal(x, y)
    # A saved copy only fits a buffer of the same capacity / shape / env count.
    with pytest.raises(CheckpointError, match="capacity 60"):
        ReplayBuffer(80, (4, 6, 6), frame_stack=4, num_envs=2).load(tmp_path / "buf")
    with pytest.raises(CheckpointError, match="num_envs 2"):
        ReplayBuffer(60, (4, 6, 6), frame_stack=4, num_envs=1).load(tmp_path / "buf")
    # A save cut off between its two renames leaves only the previous copy, under .buf.old: it is used.
    (tmp_path / "buf").rename(tmp_path / ".buf.old")
    assert ReplayBuffer.saved_copy_exists(tmp_path / "buf")
    assert ReplayBuffer(60, (4, 6, 6), frame_stack=4, num_envs=2).load(tmp_path / "buf") == {"global_step": 123}
    (tmp_path / ".buf.old").rename(tmp_path / "buf")
    (tmp_path / "buf" / "frames.npy").write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(CheckpointError, match="frames.npy"):
        ReplayBuffer(60, (4, 6, 6), frame_stack=4, num_envs=2).load(tmp_path / "buf")
    (tmp_path / "buf" / "buffer.json").unlink()
    with pytest.raises(CheckpointError, match="buffer.json is missing"):
        ReplayBuffer(60, (4, 6, 6), frame_stack=4, num_envs=2).load(tmp_path / "buf")


def test_buffer_save_never_deletes_the_last_complete_copy(tmp_path, monkeypatch) -> None:
    import os

    rb = _fill_two_env_buffer(60, 3)
    rb.save(tmp_path / "buf", global_step=1)
    (tmp_path / "buf").rename(tmp_path / ".buf.old")  # a save cut off between its renames: only the old copy
    (tmp_path / ".buf.123.tmp").mkdir()  # and a killed save's temporary folder
    real_replace = os.replace

    def crash_on_the_final_rename(src, dst):
        if str(dst) == str(tmp_path / "buf"):
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_final_rename)
    with pytest.raises(OSError, match="killed"):
        rb.save(tmp_path / "buf", global_step=2)  # the next save is cut off too
    monkeypatch.setattr(os, "replace", real_replace)
    back = ReplayBuffer(60, (4, 6, 6), frame_stack=4, num_envs=2)
    assert back.load(tmp_path / "buf") == {"global_step": 1}  # the old copy survived both cut-off saves
    rb.save(tmp_path / "buf", global_step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buf"]  # no stale folder left behind
    assert ReplayBuffer(60, (4, 6, 6), frame_stack=4, num_envs=2).load(tmp_path / "buf") == {"global_step": 3}


def test_buffer_truncation_keeps_bootstrap_and_timeout_next_obs() -> None:
    rb = ReplayBuffer(10, (2,), frame_stack=1, obs_dtype=np.float32, seed=0)
    rb.add(
        np.array([[0.0, 0.0]]),
        np.array([[1.0, 1.0]]),
        np.array([1]),
        np.array([0.5]),
        np.array([False]),
        np.array([True]),
    )
    rb.add(
        np.array([[5.0, 5.0]]),
        np.array([[6.0, 6.0]]),
        np.array([0]),
        np.array([1.0]),
        np.array([True]),
        np.array([False]),
    )
    b = rb.sample(64)
    seen = set()
    for o, n, d in zip(b.obs.tolist(), b.next_obs.tolist(), b.terminated.tolist()):
        seen.add(o[0])
        if o[0] == 0.0:
            assert n[0] == 1.0 and d == 0.0  # truncated: not terminal, true final observation kept
        else:  # the next episode starts from its own first frame, not the truncated one's last ([1, 1])
            assert o == [5.0, 5.0] and n[0] == 6.0 and d == 1.0
    assert seen == {0.0, 5.0}  # both transitions were drawn


def test_buffer_bytes_per_transition_at_100k() -> None:
    rb = ReplayBuffer(100_000, (4, 84, 84), frame_stack=4)
    per_transition = rb.nbytes / 100_000
    assert per_transition <= 7_200, per_transition  # SB3: 56,448 (28,224 with optimize_memory_usage)
    assert per_transition >= 84 * 84


def test_buffer_rejects_non_stacks() -> None:
    rb = ReplayBuffer(10, (4, 6, 6), frame_stack=4)
    o = np.random.default_rng(0).integers(0, 255, (1, 4, 6, 6), dtype=np.uint8)
    n = np.random.default_rng(1).integers(0, 255, (1, 4, 6, 6), dtype=np.uint8)
    with pytest.raises(ValueError, match="not frame stacks"):
        rb.add(o, n, np.array([0]), np.array([0.0]), np.array([False]), np.array([False]))
    with pytest.raises(ValueError, match="stacked on axis 0"):
        ReplayBuffer(10, (84, 84, 4), frame_stack=4)
    # env 0's stack is fine, env 1's is not: nothing is stored (env 0's transition was, and the envs went out of step)
    two = ReplayBuffer(10, (4, 6, 6), frame_stack=4, num_envs=2)
    good = np.concatenate([o[:, 1:], n[:, :1]], axis=1)  # o shifted by one frame
    with pytest.raises(ValueError, match="not frame stacks"):
        two.add(np.concatenate([o, o]), np.concatenate([good, n]), np.zeros(2), np.zeros(2), np.zeros(2, bool),
                np.zeros(2, bool))  # fmt: skip
    assert two.trans_written.tolist() == [0, 0] and two.frames_written.tolist() == [0, 0]


# --- the agent --------------------------------------------------------------------------------------
def _small_cfg(tmp_path, **kw) -> DQNConfig:
    base = dict(
        env_id="TestCorridor-v0",
        total_timesteps=3000,
        learning_starts=200,
        buffer_size=5000,
        target_network_frequency=100,
        train_frequency=1,
        exploration_fraction=0.4,
        learning_rate=1e-3,
        end_e=0.02,
        batch_size=64,
        gamma=0.95,
        run_dir=str(tmp_path / "run"),
        progress=False,
        video_episodes=0,
        checkpoint_interval=1000,
        tensorboard=False,
        torch_threads=1,
        seed=0,
    )
    base.update(kw)
    return DQNConfig(**base)


def test_dqn_learns_the_corridor(tmp_path) -> None:
    result = train(_small_cfg(tmp_path))
    assert result["global_step"] == 3000
    ev = evaluate(tmp_path / "run" / "checkpoint", episodes=5, epsilon=0.0, video_path=None)
    # The optimal policy walks right 7 times: return 1 - 6 * 0.01 = 0.94. A random walk rarely gets there.
    assert min(ev["returns"]) == pytest.approx(0.94)
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / "episodes.csv").read_text().count("\n") > 50


def test_dqn_resume_continues_the_schedule(tmp_path) -> None:
    train(_small_cfg(tmp_path, total_timesteps=1000))
    with pytest.raises(FileExistsError, match="--resume"):
        train(_small_cfg(tmp_path, total_timesteps=1000))
    with open(tmp_path / "run" / "episodes.csv", "a") as f:  # logged by a run killed after its checkpoint
        f.write("1234,9.0,5,0.5\n")
    result = train(_small_cfg(tmp_path, total_timesteps=1600, resume=True))
    assert result["global_step"] == 1600
    steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "episodes.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] > 1000  # the log continued after step 1000
    returns = [float(r.split(",")[1]) for r in (tmp_path / "run" / "episodes.csv").read_text().splitlines()[1:]]
    assert 9.0 not in returns  # the row logged after the checkpoint was dropped on resume (those steps replay)
    eps = [float(r.split(",")[3]) for r in (tmp_path / "run" / "episodes.csv").read_text().splitlines()[1:]]
    after = [e for s, e in zip(steps, eps) if s > 1000]
    assert max(after) <= linear_schedule(1.0, 0.02, int(0.4 * 1600), 1000) + 1e-6  # not restarted at 1.0
    with pytest.raises(CheckpointError, match="trained on TestCorridor-v0, not CartPole-v1.*--env-id TestCorridor-v0"):
        train(_small_cfg(tmp_path, env_id="CartPole-v1", total_timesteps=1700, resume=True))


def test_dqn_values_a_terminal_step_by_its_reward_alone(tmp_path) -> None:
    """Q of a step that ends the episode is its reward: bootstrapping from the next state there (a lost
    ``1 - terminated``) drove Q(s, 0) towards 1 / (1 - gamma) = 20 while the greedy policy stayed right."""
    train(_small_cfg(tmp_path, env_id="TestOneStep-v0", total_timesteps=1500, learning_starts=100))
    q, _ = load_q_network(tmp_path / "run" / "checkpoint")
    with torch.no_grad():
        values = q(torch.ones(1, 2)).squeeze(0).tolist()
    assert values == pytest.approx([1.0, 0.0], abs=0.15)


def test_dqn_resume_past_its_total_says_nothing_is_trained(tmp_path, capsys) -> None:
    train(_small_cfg(tmp_path, total_timesteps=600))
    capsys.readouterr()
    result = train(_small_cfg(tmp_path, total_timesteps=400, resume=True))  # "400 more" meant as a total
    assert result["global_step"] == 600 and not result["stopped_early"]
    err = capsys.readouterr().err
    assert "at step 600, which reaches --total-timesteps 400: nothing is trained" in err
    assert "pass a value above 600" in err


def test_dqn_never_mixes_two_runs_in_one_directory(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "episodes.csv").write_text("step,episodic_return,episodic_length,epsilon\n120,999.0,5,0.9\n")
    with pytest.raises(FileExistsError, match=r"already holds a run \(episodes.csv\).*--resume"):
        train(_small_cfg(tmp_path, total_timesteps=300))  # the logs of a run killed before its first checkpoint
    # and --resume sent the user back to "start without --resume": each message pointed to the other
    with pytest.raises(CheckpointError, match=r"stopped before its first one.*Delete its logs \(episodes.csv\)"):
        train(_small_cfg(tmp_path, total_timesteps=300, resume=True))
    (run / "episodes.csv").unlink()
    train(_small_cfg(tmp_path, total_timesteps=300))
    saved = (run / "hyperparameters.json").read_text()
    with pytest.raises(CheckpointError, match="not CartPole-v1"):
        train(_small_cfg(tmp_path, env_id="CartPole-v1", total_timesteps=400, resume=True))
    assert (run / "hyperparameters.json").read_text() == saved  # a refused resume leaves the run's settings


def _adam_steps(run_dir) -> int:
    from dreamarcade.checkpoint import load_checkpoint, unpack_state

    tensors, ck = load_checkpoint(run_dir / "checkpoint", kind="dqn")
    return int(unpack_state(ck["optimizer"], tensors)["state"][0]["step"])


def test_dqn_learning_starts_counts_transitions_added(tmp_path) -> None:
    # Short episodes keep a few padding frames each, so a full buffer holds a little under buffer_size
    # transitions; learning must still start once learning_starts transitions went in (rl-zoo's 100k/100k).
    result = train(_small_cfg(tmp_path, total_timesteps=800, learning_starts=500, buffer_size=500))
    assert result["global_step"] == 800
    assert _adam_steps(tmp_path / "run") == 301  # one update at each of steps 500..800
    ev = evaluate(tmp_path / "run" / "checkpoint", episodes=1, video_path=None, device="auto")
    assert len(ev["returns"]) == 1 and ev["cut_off"] == 0


def test_dqn_progress_bar_follows_the_flag(tmp_path, capfd) -> None:
    def bar_drawn(run: str, progress: bool) -> bool:
        train(_small_cfg(tmp_path / run, total_timesteps=300, learning_starts=100, progress=progress))
        return "step/s" in capfd.readouterr().err

    assert bar_drawn("on", True) and not bar_drawn("off", False)


def test_dqn_evaluates_either_network_of_a_checkpoint(tmp_path) -> None:
    from dreamarcade.baselines.dqn import load_q_network

    # the last target copy is at step 200, then 50 more updates: the two networks differ at the end
    train(_small_cfg(tmp_path, total_timesteps=250, learning_starts=50, target_network_frequency=100))
    ck = tmp_path / "run" / "checkpoint"
    online, _ = load_q_network(ck)
    target, _ = load_q_network(ck, network="target")
    assert any(not torch.equal(a, b) for a, b in zip(online.state_dict().values(), target.state_dict().values()))
    assert len(evaluate(ck, episodes=1, video_path=None, network="target")["returns"]) == 1
    with pytest.raises(ValueError, match="--episodes must be an integer >= 1"):  # gave a NaN mean (not JSON)
        evaluate(ck, episodes=0, video_path=None)
    from dreamarcade.baselines.dqn import main

    assert main([f"--evaluate={ck}", "--episodes", "1", "--video", ""]) == 0  # the --flag=value form too
    with pytest.raises(ValueError, match="'online' or 'target'"):
        load_q_network(ck, network="best")


def test_dqn_evaluate_uses_the_env_kwargs_it_was_trained_with(tmp_path) -> None:
    # `dqn --evaluate CKPT` passes no kwargs: a DQNAtari-v0 run on game=SpaceInvaders was scored on Pong before
    cfg = _small_cfg(tmp_path, env_id="CartPole-v1", total_timesteps=300, learning_starts=100)
    train(dataclasses.replace(cfg, env_kwargs='{"max_episode_steps": 5}'))
    ck = tmp_path / "run" / "checkpoint"
    assert evaluate(ck, episodes=3, epsilon=0.0, video_path=None)["returns"] == [5.0, 5.0, 5.0]
    longer = evaluate(ck, episodes=3, epsilon=0.0, video_path=None, env_kwargs={"max_episode_steps": 8})
    assert longer["returns"] == [8.0, 8.0, 8.0]  # kwargs given explicitly still win
    # a hand-edited checkpoint config: an AttributeError / TypeError traceback before, one error naming the file now
    config = tmp_path / "run" / "checkpoint" / "config.json"
    good = config.read_text()
    for field, value in (("hyperparameters", "edited"), ("episodes", None)):
        config.write_text(json.dumps({**json.loads(good), field: value}))
        with pytest.raises(CheckpointError, match=r"DQN checkpoint '.*config.json' has a config it cannot be built"):
            train(dataclasses.replace(cfg, env_kwargs='{"max_episode_steps": 5}', total_timesteps=400, resume=True))
    config.write_text(good)
    # the video holds every step of every game, encoded as they come (a list of the frames grew to ~13 GiB)
    av = pytest.importorskip("av")
    ev = evaluate(ck, episodes=2, epsilon=0.0, video_path=tmp_path / "eval.mp4")
    with av.open(ev["video"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
    assert not list(tmp_path.glob(".eval.tmp*"))
    # a resume with other env kwargs (another DQNAtari-v0 game) trained on with a note, mixing two tasks in one run
    saved = (tmp_path / "run" / "hyperparameters.json").read_text()
    with pytest.raises(
        CheckpointError, match=r"""trained with --env-kwargs '\{"max_episode_steps": 5\}', not '\{\}'"""
    ):
        train(dataclasses.replace(cfg, total_timesteps=400, resume=True))
    assert (tmp_path / "run" / "hyperparameters.json").read_text() == saved
    same = dataclasses.replace(cfg, env_kwargs='{ "max_episode_steps" : 5 }', total_timesteps=400, resume=True)
    assert train(same)["global_step"] == 400  # the same dict written otherwise is the same env


def test_dqn_vector_steps_spanning_several_train_frequencies_do_every_update(tmp_path) -> None:
    # 3 envs, one gradient step per 2 env steps: 600 steps -> 300 updates (not one per vector step: 200)
    train(_small_cfg(tmp_path, total_timesteps=600, num_envs=3, train_frequency=2, learning_starts=1))
    assert _adam_steps(tmp_path / "run") == 300


def test_dqn_resume_applies_a_new_learning_rate_and_says_what_changed(tmp_path, capsys) -> None:
    train(_small_cfg(tmp_path, total_timesteps=400))
    train(_small_cfg(tmp_path, total_timesteps=600, learning_rate=5e-4, resume=True))
    err = capsys.readouterr().err  # a note, not the result: stdout is the CLI's JSON alone
    assert "learning_rate 0.001 -> 0.0005" in err and "total_timesteps 400 -> 600" in err
    from dreamarcade.checkpoint import load_checkpoint, unpack_state

    tensors, ck = load_checkpoint(tmp_path / "run" / "checkpoint", kind="dqn")
    assert unpack_state(ck["optimizer"], tensors)["param_groups"][0]["lr"] == 5e-4


class _CorridorThatSendsSigterm(Corridor):
    """The corridor, which sends SIGTERM to its own process at its 700th step (a user pressing stop)."""

    steps = 0

    def step(self, action):
        type(self).steps += 1
        if type(self).steps == 700:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().step(action)


gym.register("TestCorridorSigterm-v0", entry_point=_CorridorThatSendsSigterm)


def test_dqn_stops_cleanly_on_sigterm_and_resumes_with_its_buffer(tmp_path, capsys) -> None:
    _CorridorThatSendsSigterm.steps = 0
    cfg = _small_cfg(tmp_path, env_id="TestCorridorSigterm-v0", total_timesteps=5000, save_buffer=True)
    before = signal.getsignal(signal.SIGTERM)
    result = train(cfg)
    assert result["stopped_early"] and 700 <= result["global_step"] < 5000
    out, err = capsys.readouterr()
    assert "Stopped at step" in err and "Stopped" not in out  # stdout stays the CLI's JSON result
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
    ckpt = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    saved = json.loads((tmp_path / "run" / "replay_buffer" / "buffer.json").read_text())
    assert ckpt["global_step"] == saved["meta"]["global_step"] == result["global_step"]
    assert saved["stored_transitions"] == result["global_step"]
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000  # the curve so far
    # A buffer of another size is refused, and the run's settings file is left as it was (it was rewritten first)
    settings = (tmp_path / "run" / "hyperparameters.json").read_text()
    with pytest.raises(CheckpointError, match="capacity"):
        train(_small_cfg(tmp_path, env_id="TestCorridorSigterm-v0", buffer_size=7000, save_buffer=True, resume=True))
    assert (tmp_path / "run" / "hyperparameters.json").read_text() == settings
    # Resuming loads the buffer: it ends holding every transition of both runs, not only the new ones.
    more = train(
        _small_cfg(
            tmp_path,
            env_id="TestCorridorSigterm-v0",  # the counter is past 700: it sends no second SIGTERM
            total_timesteps=result["global_step"] + 300,
            save_buffer=True,
            resume=True,
        )
    )
    assert not more["stopped_early"] and more["global_step"] == result["global_step"] + 300
    final = json.loads((tmp_path / "run" / "replay_buffer" / "buffer.json").read_text())
    assert final["stored_transitions"] == more["global_step"]


def test_nature_cnn_folded_scaling_is_the_plain_forward_and_gradient() -> None:
    """The fast forward (uint8 reordered to channels-last, 1/255 folded into conv1) computes the textbook
    Nature CNN on x / 255, with the same gradients for every weight."""
    torch.manual_seed(0)
    net = NatureCNN(4, 6)
    x = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)

    def plain(m: NatureCNN) -> torch.Tensor:
        h = x.float() / 255.0
        for layer in m.torso:
            h = layer(h)
        return m.head(h)

    fast_out, ref_out = net(x), plain(net)
    assert torch.allclose(fast_out, ref_out, atol=1e-5, rtol=1e-4)
    fast_grads = torch.autograd.grad(fast_out.square().sum(), list(net.parameters()))
    ref_grads = torch.autograd.grad(ref_out.square().sum(), list(net.parameters()))
    for (name, _), g_fast, g_ref in zip(net.named_parameters(), fast_grads, ref_grads, strict=True):
        assert torch.allclose(g_fast, g_ref, atol=1e-5, rtol=1e-3), name


def test_nature_cnn_bf16_forward_is_close_to_fp32_and_keeps_fp32_weights() -> None:
    """The mixed-precision forward of the gradient step: bfloat16 where it is cheap, fp32 where precision counts.

    Its Q-values and gradients stay close to the fp32 ones (bfloat16 keeps ~3 significant digits), the gradients
    land on the fp32 weights, and the Q head's output is fp32."""
    torch.manual_seed(0)
    net = NatureCNN(4, 6)
    x = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    ref, mixed = net(x), net.forward_bf16(x)
    assert mixed.dtype == torch.float32
    assert (mixed - ref).abs().max() <= 0.02 * ref.abs().max()
    assert not torch.equal(mixed, ref)  # it ran in bfloat16: a silent fp32 path would match to the last bit
    g_ref = torch.autograd.grad(ref.square().sum(), list(net.parameters()))
    g_mix = torch.autograd.grad(mixed.square().sum(), list(net.parameters()))
    for (name, w), a, b in zip(net.named_parameters(), g_ref, g_mix, strict=True):
        assert b.dtype == w.dtype == torch.float32, name
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99, name
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        learner_forward("fp16")


def test_dqn_learns_the_pixel_corridor_with_bf16_mixed_precision(tmp_path, monkeypatch) -> None:
    calls = []
    real = NatureCNN.forward_bf16
    monkeypatch.setattr(NatureCNN, "forward_bf16", lambda self, x: calls.append(1) or real(self, x))  # a spy
    result = train(_small_cfg(tmp_path, env_id="TestPixelCorridor-v0", precision="bf16", total_timesteps=2500))
    assert result["global_step"] == 2500
    assert calls  # the gradient steps ran the bfloat16 forward, not a silent fp32 one
    ev = evaluate(tmp_path / "run" / "checkpoint", episodes=4, epsilon=0.0, video_path=None)
    # the shortest walks: 4 steps left (1 - 3 * 0.01) and 3 steps right, alternating; a constant action fails half
    assert ev["returns"] == pytest.approx([0.97, 0.98, 0.97, 0.98])


def test_dqn_config_refuses_zero_or_negative_intervals(tmp_path, capsys) -> None:
    from dreamarcade.baselines.dqn import main

    for name in ("train_frequency", "target_network_frequency", "checkpoint_interval", "batch_size"):
        for bad in (0, -4):
            with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be an integer >= 1"):
                _small_cfg(tmp_path, **{name: bad})
    assert _small_cfg(tmp_path, num_envs=np.int64(2)).num_envs == 2  # numpy integers (a sweep's arange) still work
    bad_floats = [("gamma", float("nan")), ("learning_rate", 0.0), ("start_e", 1.5), ("end_e", -0.1)]
    bad_floats += [("exploration_fraction", 2.0), ("eval_epsilon", float("nan")), ("max_grad_norm", float("nan"))]
    for name, bad in bad_floats:
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be a finite number in"):
            _small_cfg(tmp_path, **{name: bad})  # a NaN gamma trained to NaN weights and reported success
    assert _small_cfg(tmp_path, max_grad_norm=0.0).max_grad_norm == 0.0  # <= 0 still turns the clip off
    with pytest.raises(ValueError, match=r"--buffer-size \(1\) must be at least --num-envs \(2\)"):
        _small_cfg(tmp_path, num_envs=2, buffer_size=1)  # was a traceback after the run directory was written
    with pytest.raises(SystemExit) as exc:  # the CLI: a usage error, and no run directory is written
        main(["--train-frequency", "0", "--run-dir", str(tmp_path / "cli")])
    assert exc.value.code == 2 and "--train-frequency must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    # a misspelled device: the CLI's one-line error, not a traceback, and still no run directory
    assert main(["--device", "gpu", "--run-dir", str(tmp_path / "cli")]) == 2
    assert "error: --device 'gpu' is not a device" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    if not torch.cuda.is_available():  # a device this machine lacks, in training and in evaluation
        assert main(["--device", "cuda:0", "--run-dir", str(tmp_path / "cli")]) == 2
        assert "no CUDA GPU is visible" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exc:
            main(["--evaluate", str(tmp_path / "cli"), "--device", "cuda"])
        assert exc.value.code == 2 and "no CUDA GPU is visible" in capsys.readouterr().err
    # an unknown env id: one line too, and no empty run directory left behind
    assert main(["--env-id", "CartPolee-v1", "--run-dir", str(tmp_path / "cli")]) == 2
    assert "error: Unknown env id 'CartPolee-v1'. Did you mean ['CartPole-v1'" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    # the closing video of an env that cannot render frames: refused before training, not after it
    assert main(["--env-id", "TestCorridor-v0", "--run-dir", str(tmp_path / "cli")]) == 2
    assert "--video-episodes 1 films the trained agent, but TestCorridor-v0 renders [" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_dqn_cli_keeps_the_traceback_of_an_error_raised_while_training(tmp_path) -> None:
    """A ValueError from the middle of a run is a bug, not bad input: the CLI lets it through with its traceback.

    (The DQN CLI did so before it caught its setup's errors too; this guards that the catch stays on the setup.)"""
    from crash_helpers import CrashAtStep

    from dreamarcade.baselines.dqn import main

    gym.register(
        "CartPoleValueErrorAt150-v0", entry_point=lambda: CrashAtStep(gym.make("CartPole-v1"), 150, ValueError)
    )
    try:
        argv = ["--env-id", "CartPoleValueErrorAt150-v0", "--total-timesteps", "300", "--learning-starts", "100",
                "--video-episodes", "0", "--no-tensorboard", "--no-progress", "--run-dir", str(tmp_path)]  # fmt: skip
        with pytest.raises(ValueError, match="killed"):
            main(argv)
    finally:
        del gym.registry["CartPoleValueErrorAt150-v0"]


def test_dqn_refuses_what_it_cannot_use_in_one_line_before_the_run_directory(tmp_path) -> None:
    import ale_py

    gym.register_envs(ale_py)
    cases = [
        # ALE's own ids give (210, 160, 3) images: the Nature CNN said "at least 36x36, got 160x3"
        (dict(env_id="ALE/Pong-v5"), ValueError, r"channels-first .* \(210, 160, 3\) images, channels last"),
        (dict(env_id="FrozenLake-v1"), TypeError, "FlattenObservation"),  # was: "flatten Dict/Tuple"
        (dict(env_kwargs="notjson"), ValueError, "--env-kwargs must be a JSON object"),
        (dict(env_kwargs="[1]"), ValueError, "--env-kwargs must be a JSON object"),
        (dict(env_id="no_such_module:CartPole-v1"), gym.error.Error, "module 'no_such_module' cannot be imported"),
        (dict(buffer_size=10**14), ValueError, "--buffer-size 100000000000000: the replay buffer cannot be allocated"),
    ]
    for i, (kwargs, kind, message) in enumerate(cases):
        run = tmp_path / f"run{i}"
        with pytest.raises(kind, match=message):
            train(_small_cfg(tmp_path, total_timesteps=300, **{"run_dir": str(run), **kwargs}))
        assert not (run / "hyperparameters.json").exists()
    # gym.make's module:EnvId form (how ALE's own ids are named from a shell) was refused as an unknown id
    result = train(_small_cfg(tmp_path, env_id="gymnasium:CartPole-v1", total_timesteps=300, learning_starts=100))
    assert result["global_step"] == 300


def test_dqn_evaluate_refuses_settings_that_play_nonsense(tmp_path) -> None:
    train(_small_cfg(tmp_path, total_timesteps=300, learning_starts=100))
    for kwargs, message in (
        (dict(epsilon=1.5), r"--epsilon .* in \[0, 1\]"),
        (dict(epsilon=float("nan")), r"--epsilon .* in \[0, 1\]"),  # played greedily without a word
        (dict(max_steps=0), "--max-steps must be an integer >= 1"),  # returned a score of 0, "cut off"
        # found only after every game was played (a traceback, the scores lost)
        (dict(video_path=tmp_path), "--video .* is a directory"),
        (dict(video_path=tmp_path / "run" / "hyperparameters.json" / "a.mp4"), "is a file, not a folder"),
        (dict(video_path=tmp_path / "agent.gif"), r"end it in .mp4, .mkv, .mov or .avi"),
    ):
        with pytest.raises(ValueError, match=message):
            evaluate(tmp_path / "run" / "checkpoint", **{"episodes": 1, "video_path": None, **kwargs})
    with pytest.raises(ValueError, match="--video-max-steps must be an integer >= 1"):  # failed after training
        _small_cfg(tmp_path, video_max_steps=0)


def test_dqn_rejects_continuous_actions(tmp_path) -> None:
    with pytest.raises(TypeError, match="Discrete"):
        train(_small_cfg(tmp_path, env_id="Pendulum-v1"))


def test_dqn_on_pong_pixels_writes_a_video(tmp_path) -> None:
    av = pytest.importorskip("av")
    cfg = _small_cfg(
        tmp_path,
        env_id="DQNPong-v0",
        total_timesteps=200,
        learning_starts=100,
        buffer_size=1000,
        train_frequency=4,
        video_episodes=1,
        video_max_steps=40,
    )
    result = train(cfg)
    with av.open(result["video"]) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 40


def test_cli_help_and_training(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dreamarcade.baselines", "dqn", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "--total-timesteps" in out.stdout and "--resume" in out.stdout
    assert "--evaluate CHECKPOINT_DIR" in " ".join(out.stdout.split())  # the evaluation flags have their own help
    out = subprocess.run([sys.executable, "-m", "dreamarcade.baselines"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "dqn" in out.stderr  # no agent named: usage, as a usage error (it exited 0)
    out = subprocess.run(
        [sys.executable, "-m", "dreamarcade.baselines", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "dqn" in out.stdout
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dreamarcade.baselines",
            "dqn",
            "--env-id",
            "CartPole-v1",
            "--total-timesteps",
            "300",
            "--learning-starts",
            "100",
            "--video-episodes",
            "0",
            "--no-tensorboard",
            "--run-dir",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TQDM_DISABLE": "1"},  # tqdm's own switch for log files reaches the DQN's bar too
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["global_step"] == 300
    assert "step/s" not in out.stderr


# --- Stable-Baselines3 on the preprocessed env -------------------------------------------------------
def test_sb3_check_env_and_short_run() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("DQNPong-v0")
    sb3_check_env(env, warn=True)
    model = sb3.DQN("CnnPolicy", env, buffer_size=2000, learning_starts=100, train_freq=4, verbose=0, seed=0)
    model.learn(total_timesteps=300)
    assert model.num_timesteps == 300
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    ppo = sb3.PPO("CnnPolicy", gym.make("DQNBreakout-v0"), n_steps=64, batch_size=32, n_epochs=1, verbose=0)
    ppo.learn(total_timesteps=128)
    assert ppo.num_timesteps == 128  # two full rollouts of 64 steps


def test_sb3_episode_statistics_are_whole_game_raw_scores_with_wrap_dqn() -> None:
    """SB3's make_vec_env puts a Monitor outside a registered id's stack: with DQNSpaceInvaders-v0 it counts every
    lost life as an episode of sign-clipped rewards. wrap_dqn as its wrapper_class stacks on top of that Monitor."""
    pytest.importorskip("stable_baselines3")
    import ale_py
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from dreamarcade.envs.atari import make_dqn_env, wrap_dqn

    gym.register_envs(ale_py)  # the ALE/... ids

    class RandomAgent:  # a policy for evaluate_policy: seeded random actions, one env
        def __init__(self) -> None:
            self.rng = np.random.default_rng(0)

        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            return np.array([self.rng.integers(0, 6)]), None

    kwargs = dict(frameskip=1, repeat_action_probability=0.0)
    venv = make_vec_env("ALE/SpaceInvaders-v5", n_envs=1, seed=0, env_kwargs=kwargs, wrapper_class=wrap_dqn)
    assert venv.observation_space.shape == (4, 84, 84)
    rewards, _ = evaluate_policy(RandomAgent(), venv, n_eval_episodes=1, return_episode_rewards=True)
    env = make_dqn_env("SpaceInvaders")  # the same game with the same actions: its whole-game raw score
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    info: dict = {}
    while "episode" not in info:
        info = env.step(rng.integers(0, 6))[4]
    assert rewards == [info["episode"]["r"]] and rewards[0] > 30  # raw points (5-30 an alien), not a life's +1s
    per_life, _ = evaluate_policy(RandomAgent(), make_vec_env("DQNSpaceInvaders-v0", n_envs=1, seed=0),
                                  n_eval_episodes=1, return_episode_rewards=True)  # fmt: skip
    assert per_life[0] < rewards[0]  # the registered id under SB3's Monitor: one life, clipped (documented)
    # Gymnasium's own recorder around the id, as the README says: with the default key it stops at the game over
    # (it will not overwrite the stack's info["episode"]); under another key it counts lives beside the game's score
    outer = gym.wrappers.RecordEpisodeStatistics(gym.make("DQNSpaceInvaders-v0"), stats_key="life_episode")
    outer.reset(seed=0)
    rng, info, lives = np.random.default_rng(0), {}, 0
    while "episode" not in info:
        _, _, terminated, truncated, info = outer.step(rng.integers(0, 6))
        lives += "life_episode" in info
        if (terminated or truncated) and "episode" not in info:
            outer.reset()
    assert lives >= 2 and info["episode"]["r"] > info["life_episode"]["r"]
    with pytest.raises(AssertionError):
        default = gym.wrappers.RecordEpisodeStatistics(gym.make("DQNSpaceInvaders-v0"))
        default.reset(seed=0)
        for _ in range(20_000):
            if any(default.step(rng.integers(0, 6))[2:4]):
                default.reset()


_FLUSH_PROBE = """
import sys, torch
from dreamarcade.precision import flush_denormals
def flushed_bits(n):  # n copies of the smallest denormal times 1.0, as bits: nonzero where a thread did not flush
    return int(torch.count_nonzero((torch.ones(n, dtype=torch.int32).view(torch.float32) * 1.0).view(torch.int32)))
mode = sys.argv[1]
if mode == "late":  # the thread pool exists before the flag: its workers keep IEEE denormals
    torch.set_num_threads(2)
    (torch.ones(1 << 20) * 1.0).sum()
    print(flush_denormals())
elif mode == "early":
    ok = flush_denormals()
    torch.set_num_threads(2)
    print(ok, flushed_bits(1 << 22))
else:  # a DQN run flushes by itself
    from dreamarcade.baselines.dqn import DQNConfig, train
    train(DQNConfig(env_id="CartPole-v1", total_timesteps=300, learning_starts=100, run_dir=sys.argv[2],
                    progress=False, video_episodes=0, tensorboard=False, torch_threads=1))
    print(flushed_bits(1))
"""


def test_flush_denormals_reaches_every_torch_thread_and_every_dqn_run(tmp_path) -> None:
    # Denormal Adam state made a long Pong run 1.6x slower (30 -> 48 steps/s once flushed); trainers flush now.
    def probe(*args: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", _FLUSH_PROBE, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert probe("early") == ["True", "0"]  # set before the pool: both threads flush 4M denormals to zero
    assert probe("late") == ["False"]  # honest about workers created before the call
    assert probe("dqn", str(tmp_path / "run")) == ["0"]


def test_video_writer_streams_frames_and_leaves_no_video_when_cut_off(tmp_path) -> None:
    av = pytest.importorskip("av")
    from dreamarcade.baselines.common import VideoWriter, write_video

    frames = (np.full((21, 15), 10 * t, np.uint8) for t in range(7))  # a generator: never a list in memory
    path = write_video(frames, tmp_path / "gray.mp4", fps=15)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 7 and decoded[0].shape == (22, 16, 3)  # padded to even sizes
    with pytest.raises(RuntimeError, match="cut off"), VideoWriter(tmp_path / "cut.mp4") as video:
        video.add(np.zeros((8, 8, 3), np.uint8))
        raise RuntimeError("cut off")
    assert not list(tmp_path.glob("*cut*"))  # neither the video nor its temporary file
    with pytest.raises(ValueError, match="frame 1 is 10x8, larger"), VideoWriter(tmp_path / "sizes.mp4") as video:
        video.add(np.zeros((8, 8, 3), np.uint8))
        video.add(np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="write_video got no frames"):
        write_video([], tmp_path / "none.mp4")
    for bad in (np.full((8, 8, 3), 0.8, np.float32), np.full((8, 8, 3), 300)):  # cast to black / wrapped to 44
        with pytest.raises(ValueError, match="VideoWriter takes uint8 frames"):
            write_video([bad], tmp_path / "bad.mp4")
    assert not list(tmp_path.glob("*none*"))


def test_a_diverged_dqn_keeps_its_last_good_checkpoint(tmp_path) -> None:
    # a learning rate too high made the weights NaN; the run went on training on them and saved them over the last
    # good checkpoint at every interval until its end, with no word
    from dreamarcade.checkpoint import load_checkpoint
    from dreamarcade.errors import DivergedError, is_input_error

    train(_small_cfg(tmp_path, total_timesteps=1000))
    good, _ = load_checkpoint(tmp_path / "run" / "checkpoint")
    diverging = _small_cfg(tmp_path, total_timesteps=3000, learning_rate=1e30, resume=True)
    with pytest.raises(DivergedError, match=r"with --learning-rate 1e\+30: .*last checkpoint in .* is intact"):
        train(diverging)
    kept, config = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert config["global_step"] == 1000 and all(torch.equal(good[k], kept[k]) for k in good)
    with pytest.raises(DivergedError, match="nothing was saved. Train again with a lower learning rate") as exc:
        train(_small_cfg(tmp_path / "fresh", learning_rate=1e30))
    assert not (tmp_path / "fresh" / "run" / "checkpoint").exists()
    assert is_input_error(exc.value)  # the command line prints it as one line naming the fix, no traceback
