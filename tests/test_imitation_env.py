"""The registered MontezumaImitation-v0 (bundled model), its vector entry point, SB3, and the agent CLI."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("ale_py")

import dreamarcade  # noqa: E402,F401  (registers the ids)
from dreamarcade.envs.montezuma_imitation import ASSET_DIR  # noqa: E402


def test_bundle_is_small_and_loads():
    from dreamarcade.wrappers.imitation import load_imitation_model

    size = sum(p.stat().st_size for p in ASSET_DIR.rglob("*") if p.is_file())
    assert size <= 15 * 2**20
    embedder, ck = load_imitation_model(ASSET_DIR)
    assert len(ck) >= 2 and ck.embeddings.shape[1] == embedder.embed_dim
    np.testing.assert_allclose(np.linalg.norm(ck.embeddings, axis=1), 1.0, rtol=1e-5)


def test_registered_env_passes_check_env_and_reports_imitation_info():
    from gymnasium.utils.env_checker import check_env

    env = gym.make("MontezumaImitation-v0")
    check_env(env.unwrapped, skip_render_check=True)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.shape == (210, 160, 3) and info["imitation_checkpoint"] == 0
    obs, r, term, trunc, info = env.step(0)
    assert {"imitation_reward", "imitation_similarity", "imitation_matched", "env_reward"} <= set(info)
    assert r == info["imitation_reward"] + info["env_reward"]
    env.close()
    env = gym.make("MontezumaImitation-v0", observe_similarity=True, mode="replace")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_vector_entry_point_agrees_with_single_env():
    actions = np.random.default_rng(0).integers(0, 18, size=(12, 2))
    venv = gym.make_vec("MontezumaImitation-v0", num_envs=2, vectorization_mode="vector_entry_point")
    venv.reset(seed=[3, 4])
    singles = [gym.make("MontezumaImitation-v0") for _ in range(2)]
    for i, s in enumerate(singles):
        s.reset(seed=3 + i)
    for a in actions:
        _, vr, _, _, vinfo = venv.step(a)
        for i, s in enumerate(singles):
            _, sr, _, _, info = s.step(int(a[i]))
            assert vr[i] == pytest.approx(sr)
            assert vinfo["imitation_similarity"][i] == pytest.approx(info["imitation_similarity"], abs=1e-4)
    venv.close()
    with pytest.raises(TypeError, match="embed_evry"):  # a misspelled option is an error, as with gym.make
        gym.make_vec("MontezumaImitation-v0", num_envs=2, vectorization_mode="vector_entry_point", embed_evry=2)


# the first 74 agent steps of a Montezuma trajectory found by montezuma_search (seed 4): the key (+100) is
# collected on the 74th; (action, repeats)
KEY_RUN = [(11, 7), (2, 5), (14, 1), (11, 4), (5, 16), (17, 7), (4, 7), (15, 15), (2, 9), (9, 2), (17, 1)]


# a whole key + door + room-exit trajectory found by montezuma_search (seed 3, start delay 80); (action, repeats)
EXIT_RUN = [(0, 80), (11, 10), (5, 2), (16, 5), (3, 1), (5, 9), (16, 2), (6, 12), (15, 18), (8, 1), (15, 5), (1, 4),
            (9, 9), (1, 1), (2, 28), (12, 7), (6, 4), (7, 13), (6, 4), (5, 5), (13, 4), (6, 7), (14, 21), (10, 9),
            (8, 3), (9, 5), (12, 2), (7, 1), (5, 1), (17, 6), (10, 13), (8, 3), (11, 2), (13, 4), (11, 9), (4, 4),
            (6, 7)]  # fmt: skip


def test_rooms_visited_counts_the_room_exit_that_the_score_cannot_tell():
    from dreamarcade.baselines.imitation import RoomsVisited
    from dreamarcade.envs.montezuma_search import make_montezuma

    env = RoomsVisited(make_montezuma())
    _, info = env.reset(seed=0)
    score, seen = 0.0, [info["rooms_visited"]]
    for a in [a for a, n in EXIT_RUN for _ in range(n)]:
        _, r, term, trunc, info = env.step(a)
        score += float(r)
        seen.append(info["rooms_visited"])
    env.close()
    assert score == 400.0 and seen[0] == 1 and seen[-1] == 2
    first_exit = seen.index(2)
    assert seen[first_exit:] == [2] * (len(seen) - first_exit)  # a count, not the current room
    _, info = env.reset(seed=0)
    assert info["rooms_visited"] == 1  # a new episode starts counting again


@pytest.mark.parametrize("reward", ["game", "imitation"])
def test_agent_evaluation_counts_the_raw_game_score_in_every_reward_mode(reward):
    from dreamarcade.baselines.imitation import ImitationConfig, make_envs, play_episodes

    script = [a for a, n in KEY_RUN for _ in range(n)]
    # the time limit ends the episode on the very step the key is collected
    # one threshold for all checkpoints, as the registered env compared with below (the agent's default is 0.1)
    cfg = ImitationConfig(reward=reward, num_envs=1, max_episode_steps=len(script), distinct_margin=None)
    envs = make_envs(cfg)
    steps = iter(script * 2)  # the game is deterministic: the second episode replays the first
    try:
        scores, progress, paid, rooms = play_episodes(envs, lambda obs: np.array([next(steps)]), episodes=2, seed=0)
    finally:
        envs.close()
    assert scores == [100.0, 100.0]  # raw, not sign-clipped, and not 0 without the imitation wrapper
    assert rooms == [1, 1]  # the key is in the first room
    assert progress[0] == progress[1] and paid[0] == paid[1]  # each episode counts from 0 again
    progress, paid = progress[:1], paid[:1]
    if reward == "game":
        assert progress == paid == [0]  # no imitation wrapper: no checkpoint to reach
    else:
        # The same key run on the single registered env (same bundle, threshold 0.5, frameskip 4, no sticky
        # actions: deterministic) reaches the same checkpoint. The bundled demo is a key+door trajectory, so going
        # to the key passes more of its checkpoints than random play (1, see the README's threshold row).
        env = gym.make("MontezumaImitation-v0")
        try:
            env.reset(seed=0)
            single_paid = 0
            for a in script:
                *_, info = env.step(a)
                single_paid += info["imitation_reward"] > 0
        finally:
            env.close()
        assert progress == [info["imitation_checkpoint"]] and 1 < progress[0] < 15
        assert paid == [single_paid] and 1 <= single_paid <= progress[0]  # the step ending the episode counted too


def test_works_with_stable_baselines3():
    sb3 = pytest.importorskip("stable_baselines3")
    env = gym.make("MontezumaImitation-v0", observe_similarity=False)
    model = sb3.PPO("CnnPolicy", env, n_steps=16, batch_size=16, n_epochs=1, verbose=0, device="cpu")
    model.learn(16)
    env.close()
    assert model.num_timesteps == 16  # one full rollout of n_steps=16 was collected from the env


def test_agent_cli_trains_resumes_and_evaluates(tmp_path, capsys):
    import torch

    from dreamarcade.baselines.imitation import evaluate, main
    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.errors import CheckpointError

    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--embed-every", "2", "--num-envs", "2", "--num-steps", "16"]
    argv += ["--distinct-margin", "0.1", "--game-reward-scale", "5", "--max-episode-steps", "200"]
    argv += ["--total-timesteps", "32"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # says whether SIGTERM cut it short
    assert result["global_step"] == 32 and result["stopped_early"] is False
    assert (run / "checkpoint" / "config.json").is_file()
    saved = json.loads((run / "imitation_config.json").read_text())
    # eval rebuilds the reward from these
    assert saved["embed_every"] == 2 and saved["distinct_margin"] == 0.1 and saved["game_reward_scale"] == 5.0
    assert main([*argv[:-1], "64", "--resume"]) == 0
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert main(["eval", str(run), "--episodes", "0"]) == 2  # a clear error, not a traceback from an empty vector env
    # a deterministic policy in the deterministic game: no-op starts by default, so its 2 episodes are not one twice
    assert main(["eval", str(run), "--episodes", "2", "--deterministic", "--json", str(tmp_path / "det.json")]) == 0
    det = json.loads((tmp_path / "det.json").read_text())
    assert det["deterministic"] and det["noop_max"] == 30 and len(det["scores"]) == 2
    assert evaluate(run, episodes=1, noop_max=0)["noop_max"] == 0
    # --json where no file can be written: refused before the episodes are played, not after them
    (tmp_path / "a_file").write_text("")
    for bad_json in (tmp_path, tmp_path / "a_file" / "out.json"):
        assert main(["eval", str(run), "--episodes", "1", "--json", str(bad_json)]) == 2
    # an imitation_config.json edited to another reward kind rebuilt envs without the similarities the policy reads:
    # a TypeError deep in the forward pass; now the checkpoint is checked against the rebuilt env
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    (edited / "imitation_config.json").write_text(json.dumps({**saved, "reward": "game"}))
    with pytest.raises(CheckpointError, match="was trained on observations .*rebuilt from .*imitation_config.json"):
        evaluate(edited, episodes=1)
    # a resume that writes out only the run dir and budget keeps the run's settings; it used to fall back to the
    # defaults (8 envs, 128 steps, seed 1, another learning rate) for every flag not repeated
    short = ["train", "--run-dir", str(run), "--total-timesteps", "96", "--resume"]
    assert main(short) == 0
    resumed = json.loads((run / "imitation_config.json").read_text())
    assert resumed == {**saved, "ppo": {**saved["ppo"], "total_timesteps": 96}}
    assert main([*short, "--seed", "5"]) == 2  # a resumed run goes on with its checkpoint's seed
    assert main([*short, "--game-reward-scale", "1"]) == 2  # nor with another reward
    # naming the bundled reward is not another reward: it was refused (None -> the bundle's path)
    assert main([*short, "--asset-dir", str(ASSET_DIR)]) == 0
    assert main([*short, "--asset-dir", str(tmp_path)]) == 2  # another folder is
    with pytest.raises(SystemExit):  # an abbreviation would not count as given, so it is refused outright
        main([*short, "--learn", "0.5"])
    for flag, value in (("--threshold", "nan"), ("--game-reward-scale", "-1"), ("--game-reward-scale", "inf")):
        with pytest.raises(SystemExit) as exc:  # NaN would pay nothing, and the run could never be resumed
            main(["train", "--run-dir", str(tmp_path / "nan"), flag, value])
        assert exc.value.code == 2
    bads = [["--num-envs", "0"], ["--max-episode-steps", "0"], ["--seed", "-1"], ["--seed", str(2**32)]]
    bads += [["--device", "no-such-device"]] + ([] if torch.cuda.is_available() else [["--device", "cuda"]])
    # a threshold no similarity can pass (or any passes), a batch smaller than the minibatches (its message named
    # a flag this CLI lacks), and flags the reward kind ignores (they were saved and did nothing)
    bads += [["--threshold", "1"], ["--threshold", "-1.5"], ["--num-envs", "1", "--num-steps", "2"]]
    bads += [["--reward", "game", "--threshold", "0.4"], ["--reward", "imitation_only", "--game-reward-scale", "5"]]
    bads += [["--reward", "game", "--asset-dir", str(ASSET_DIR)]]  # no reward bundle is loaded: it was saved unread
    for bad in bads:  # refused before the run dir is written (a bad seed or device left a config that --resume kept)
        capsys.readouterr()
        assert main(["train", "--run-dir", str(tmp_path / "bad"), *bad, "--total-timesteps", "8"]) == 2
        assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "bad").exists()
    # eval plays the training episodes unless told otherwise, and says which
    out = evaluate(run, episodes=1, noop_max=0, max_episode_steps=7, whole_games=True)
    assert out["max_episode_steps"] == 7 and out["life_loss_terminal"] is False
    assert det["max_episode_steps"] == 200 and det["life_loss_terminal"] is False
    # a checkpoint without its settings file: nothing to check a resume against (it went on with any settings)
    (edited / "imitation_config.json").unlink()
    assert main(["train", "--run-dir", str(edited), "--total-timesteps", "96", "--resume"]) == 2


def test_agent_cli_keeps_the_traceback_of_an_error_raised_while_training(tmp_path, monkeypatch, capsys):
    """Only the checks of the flags, the run directory and the envs are printed as one line (exit 2)."""
    from dreamarcade.baselines import imitation

    def crash(*args, **kwargs):  # the training loop itself (train_ppo is tested on its own) fails with a bug
        raise ValueError("a bug in the middle of a run")

    monkeypatch.setattr(imitation, "train_ppo", crash)
    argv = ["train", "--run-dir", str(tmp_path / "run"), "--num-envs", "1", "--total-timesteps", "8"]
    with pytest.raises(ValueError, match="a bug in the middle of a run"):
        imitation.main(argv)
    assert (tmp_path / "run" / "imitation_config.json").is_file()  # the checks had passed
    assert imitation.main(["eval", str(tmp_path / "run")]) == 2  # no checkpoint yet: bad input, one line
    assert capsys.readouterr().err.startswith("error: No complete checkpoint in")


def test_agent_train_never_replaces_the_settings_of_another_run(tmp_path):
    import dataclasses

    from dreamarcade.baselines.imitation import ImitationConfig, train
    from dreamarcade.baselines.ppo import RunDirInUseError
    from dreamarcade.errors import DreamArcadeError

    run = tmp_path / "run"
    cfg = ImitationConfig(num_envs=2, embed_every=2)
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, num_steps=16, total_timesteps=32))
    train(cfg, run, progress=False)
    stored = (run / "imitation_config.json").read_text()
    with pytest.raises(RunDirInUseError):  # a new run into the same directory
        train(dataclasses.replace(cfg, reward="game"), run, progress=False)
    with pytest.raises(DreamArcadeError, match=r"threshold: 0.5 -> 0.9"):  # a resume with another reward
        train(dataclasses.replace(cfg, threshold=0.9), run, resume=True, progress=False)
    with pytest.raises(DreamArcadeError, match=r"distinct_margin: 0.1 -> None"):
        train(dataclasses.replace(cfg, distinct_margin=None), run, resume=True, progress=False)
    assert (run / "imitation_config.json").read_text() == stored  # what eval rebuilds the envs from


def test_agent_run_finds_its_reward_bundle_from_any_directory(tmp_path, monkeypatch):
    """A relative --asset-dir is saved absolute: eval and --resume from elsewhere used to miss the bundle."""
    import dataclasses

    from dreamarcade.baselines.imitation import ImitationConfig, evaluate, train
    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.errors import CheckpointError

    shutil.copytree(ASSET_DIR, tmp_path / "bundle")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = ImitationConfig(num_envs=1, embed_every=2, asset_dir="bundle")
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, num_steps=16, total_timesteps=16))
    train(cfg, "run", progress=False)
    saved = json.loads((tmp_path / "run" / "imitation_config.json").read_text())
    assert saved["asset_dir"] == str(tmp_path / "bundle")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert evaluate(tmp_path / "run", episodes=1)["episodes"] == 1
    more = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, total_timesteps=32))
    more = dataclasses.replace(more, asset_dir=str(tmp_path / "bundle"))
    assert train(more, tmp_path / "run", resume=True, progress=False).global_step == 32  # the same bundle: not refused
    # a path that is not a bundle names what a bundle is, not only its first missing file
    with pytest.raises(CheckpointError, match=r"is not a reward bundle \(no embedding/ or checkpoints/\)"):
        train(dataclasses.replace(cfg, asset_dir="bundle"), tmp_path / "other", progress=False)


@pytest.mark.parametrize("life_loss_terminal", [False, True])
def test_agent_episodes_go_on_after_a_lost_life_unless_asked(life_loss_terminal):
    from dreamarcade.baselines.imitation import ImitationConfig, build_parser, make_envs

    flag = ["--life-loss-terminal"] if life_loss_terminal else []
    assert build_parser().parse_args(["train", *flag]).life_loss_terminal is life_loss_terminal
    assert build_parser().parse_args(["train", "--no-life-loss-terminal"]).life_loss_terminal is False
    envs = make_envs(ImitationConfig(reward="game", num_envs=1, life_loss_terminal=life_loss_terminal))
    envs.reset(seed=0)
    lives, ended = [], False
    for _ in range(40):  # walking LEFT off the start platform costs a life within ~10 steps
        _, _, term, trunc, info = envs.step(np.array([4]))
        lives.append(int(info["lives"][0]))
        if term[0] or trunc[0]:
            ended = True
            break
    envs.close()
    assert ended is life_loss_terminal
    if not life_loss_terminal:
        assert min(lives) < max(lives)  # a life was lost and the episode went on


def test_policy_frames_reset_mask_restarts_only_the_masked_stacks():
    from dreamarcade.baselines.imitation import PolicyFrames

    venv = gym.vector.SyncVectorEnv(
        [lambda: gym.make("ALE/MontezumaRevenge-v5")] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    env = PolicyFrames(venv, reward="game", similarity=False)
    try:
        env.reset(seed=0)
        for _ in range(30):
            obs, *_ = env.step(np.full(2, 3))  # RIGHT: Panama Joe moves, so the stacked frames differ
        assert len({f.tobytes() for f in obs[1]}) > 1
        after, _ = env.reset(options={"reset_mask": np.array([True, False])})
        assert np.array_equal(after[1], obs[1])  # env 1 plays on: its frame history is kept
        assert len({f.tobytes() for f in after[0]}) == 1  # env 0 restarted: its first frame fills the stack
    finally:
        env.close()


def test_policy_frames_final_obs_is_the_stack_the_policy_would_see():
    # info["final_obs"] was the inner wrapper's {"obs": RGB frame, "similarity": ...}, outside the observation space
    from dreamarcade.baselines.imitation import ImitationConfig, PolicyFrames, make_envs

    env = make_envs(ImitationConfig(num_envs=2, max_episode_steps=3))
    try:
        obs, _ = env.reset(seed=0)
        stacks = [obs["obs"]]
        for _ in range(3):
            obs, reward, term, trunc, info = env.step(np.zeros(2, np.int64))
            stacks.append(obs["obs"])
        assert trunc.all()
        for i in range(2):
            final = info["final_obs"][i]
            assert env.single_observation_space.contains(final)
            # the last stack before the restart, moved on by the final frame
            assert np.array_equal(final["obs"][:-1], stacks[-2][i][1:])
            assert len({f.tobytes() for f in obs["obs"][i]}) == 1  # the new episode's stack: its first frame only
    finally:
        env.close()
    next_step = gym.vector.SyncVectorEnv([lambda: gym.make("ALE/MontezumaRevenge-v5")] * 2)
    with pytest.raises(ValueError, match="needs a SAME_STEP-autoreset vector env"):  # mixed episodes in its stacks
        PolicyFrames(next_step, reward="game", similarity=False)
    next_step.close()


def test_policy_frames_weights_the_sign_clipped_game_reward():
    from dreamarcade.baselines.imitation import PolicyFrames

    def pong() -> gym.vector.VectorEnv:
        return gym.vector.SyncVectorEnv(
            [lambda: gym.make("ALE/Pong-v5", repeat_action_probability=0.0)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )

    rewards = {}
    for scale in (1.0, 5.0):
        env = PolicyFrames(pong(), reward="game", similarity=False, game_scale=scale)
        env.reset(seed=0)
        rewards[scale] = np.array([env.step(np.zeros(1, np.int64))[1][0] for _ in range(150)])
        env.close()
    # standing still, the player loses a point (-1 from the game) within 150 steps
    assert set(rewards[1.0]) == {0.0, -1.0}
    np.testing.assert_array_equal(rewards[5.0], 5.0 * rewards[1.0])
    with pytest.raises(ValueError, match="game_scale"):
        PolicyFrames(pong(), reward="game", similarity=False, game_scale=float("nan"))


def test_play_episodes_gives_every_env_its_share_instead_of_the_first_to_end():
    from dreamarcade.baselines.imitation import play_episodes

    def mountain_car(limit: int):
        return lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("MountainCar-v0", max_episode_steps=limit))

    envs = gym.vector.SyncVectorEnv(
        [mountain_car(3), mountain_car(20)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    scores, progress, paid, rooms = play_episodes(envs, lambda obs: np.zeros(2, np.int64), episodes=4, seed=0)
    envs.close()
    # -1 per step: env 0 ends four 3-step episodes before env 1's first 20-step one; each gets two
    assert sorted(scores) == [-20.0, -20.0, -3.0, -3.0] and progress == paid == [0, 0, 0, 0] and rooms == [0, 0, 0, 0]


def test_play_episodes_noop_starts_vary_the_episodes_of_a_fixed_policy():
    """The game is deterministic, so a deterministic policy needs no-op starts to play more than one episode."""
    from dreamarcade.baselines.imitation import play_episodes

    taken: list[list[int]] = [[], []]

    class Record(gym.Wrapper):
        def __init__(self, env: gym.Env, i: int) -> None:
            super().__init__(env)
            self.i = i

        def step(self, action):
            taken[self.i].append(int(action))
            return self.env.step(action)

    def car(i: int):  # 5-step episodes; the policy always pushes right (2)
        return lambda: gym.wrappers.RecordEpisodeStatistics(Record(gym.make("MountainCar-v0", max_episode_steps=5), i))

    def starts(noop_max: int, seed: int) -> list[int]:
        for t in taken:
            t.clear()
        envs = gym.vector.SyncVectorEnv([car(0), car(1)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        play_episodes(envs, lambda obs: np.full(2, 2, np.int64), episodes=12, seed=seed, noop_max=noop_max)
        envs.close()
        episodes = [t[k : k + 5] for t in taken for k in range(0, len(t), 5)]
        assert len(episodes) == 12
        noops = [e.index(2) if 2 in e else 5 for e in episodes]
        # each episode: its NOOPs (action 0) first, then the policy's actions only
        assert all(e == [0] * n + [2] * (5 - n) for e, n in zip(episodes, noops))
        return noops

    assert starts(0, seed=0) == [0] * 12
    noops = starts(3, seed=0)
    assert set(noops) <= {0, 1, 2, 3} and len(set(noops)) >= 3  # 0 to noop_max, drawn per episode
    assert starts(3, seed=0) == noops and starts(3, seed=1) != noops  # reproducible by seed
    with pytest.raises(ValueError, match=r"noop_max must be an integer >= 0 \(0: no no-op starts\), got -1"):
        play_episodes(None, lambda obs: obs, episodes=1, noop_max=-1)


def test_agent_episodes_longer_than_4500_steps_are_not_cut_by_the_ale():
    """The agent's ALE env had a fixed 18,000-frame cap (4500 steps): a longer --max-episode-steps was accepted,
    saved, and cut at 4500 without a word."""
    from dreamarcade.baselines.imitation import ImitationConfig, make_envs

    for steps, frames in ((1000, 18_000), (6000, 24_000)):
        envs = make_envs(ImitationConfig(reward="game", num_envs=1, max_episode_steps=steps))
        try:
            inner = envs
            while not hasattr(inner, "envs"):
                inner = inner.env
            assert inner.envs[0].unwrapped.ale.getInt("max_num_frames_per_episode") == frames
        finally:
            envs.close()


def test_a_frameskip_off_the_embeddings_frame_rate_is_warned_about():
    """At frameskip 2 the agent steps at 30 frames/s, while the embedding read its videos at 15: the stacks span half
    the demonstration's time, and nothing said so."""
    for make in (
        lambda: gym.make("MontezumaImitation-v0", frameskip=2),
        lambda: gym.make_vec("MontezumaImitation-v0", num_envs=1, vectorization_mode="vector_entry_point", frameskip=2),
    ):
        with pytest.warns(UserWarning, match="frameskip=2 steps the agent at 30 frames/s, .* frameskip=4 matches it"):
            make().close()


def test_vector_env_refuses_zero_envs_by_name():  # an IndexError inside SyncVectorEnv before
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1, got 0"):
        gym.make_vec("MontezumaImitation-v0", num_envs=0, vectorization_mode="vector_entry_point")
    for p in (1.0, 1.5, -0.5, True):  # went to ale-py as given: at >= 1 the agent's actions were all ignored
        with pytest.raises(ValueError, match=r"repeat_action_probability must be a probability in \[0, 1\)"):
            gym.make("MontezumaImitation-v0", repeat_action_probability=p)
        with pytest.raises(ValueError, match=r"repeat_action_probability must be a probability in \[0, 1\)"):
            gym.make_vec(
                "MontezumaImitation-v0",
                num_envs=1,
                vectorization_mode="vector_entry_point",
                repeat_action_probability=p,
            )


def test_vector_env_time_limit_keeps_the_game_score_of_truncated_episodes():
    venv = gym.make_vec(
        "MontezumaImitation-v0", num_envs=1, vectorization_mode="vector_entry_point", max_episode_steps=5
    )
    try:
        venv.reset(seed=0)
        for _ in range(5):
            *_, trunc, info = venv.step(np.zeros(1, np.int64))
        assert trunc[0] and "episode" in info and info["episode"]["l"][0] == 5
    finally:
        venv.close()


def test_bundle_per_checkpoint_thresholds_pay_the_checkpoints_after_the_key_only_with_it():
    # EXIT_RUN is the trajectory the bundled demo video shows (montezuma_search seed 3, start delay 80). Its climb
    # to the key passes the places of checkpoints 7 and 8, which the demo took after the key on the way down.
    env = gym.make("MontezumaImitation-v0", distinct_margin=0.1)
    thr = env.get_wrapper_attr("thresholds")
    env.reset(seed=0)
    score, keyed, sims, matched = 0.0, [], [], []
    for a in [a for a, n in EXIT_RUN for _ in range(n)]:
        _, _, _, _, info = env.step(a)
        score += info["env_reward"]
        keyed.append(score >= 100)
        sims.append(env.get_wrapper_attr("similarities"))
        matched.append(info["imitation_matched"])
    env.close()
    keyed, sims = np.array(keyed), np.array(sims)
    assert [m for m in matched if m >= 0] == list(range(15))  # the demo's own trajectory is paid every checkpoint
    before = sims[~keyed][:, [7, 8]].max(axis=0)
    assert (before > 0.5).all()  # one threshold (the paper's 0.5) would pay them on the way up, without the key
    assert (before < thr[[7, 8]]).all()  # their own thresholds need the key
    assert thr[:7].max() < 0.6  # the checkpoints up to the key (the rolling skull's) stay near 0.5
    env = gym.make("MontezumaImitation-v0")  # the default: one threshold, the paper's
    np.testing.assert_allclose(env.get_wrapper_attr("thresholds"), 0.5)
    env.close()


def test_count_bonus_is_added_to_the_imitation_and_game_rewards():
    """With --count-bonus the agent's reward is imitation + sign(game) + bonus, every term kept (a bonus that
    replaced the others would pass a test on steps where the game and the checkpoints pay nothing)."""
    from dreamarcade.baselines.imitation import ImitationConfig, make_envs

    script = [a for a, n in KEY_RUN for _ in range(n)]
    envs = make_envs(ImitationConfig(num_envs=1, count_bonus=0.1, max_episode_steps=len(script) + 5))
    paid = {"imitation": 0.0, "game": 0.0, "bonus": 0.0}
    try:
        envs.reset(seed=0)
        for a in script:
            _, reward, _, _, info = envs.step(np.array([a]))
            imit, game, bonus = info["imitation_reward"][0], np.sign(info["env_reward"][0]), info["count_bonus"][0]
            assert reward[0] == pytest.approx(imit + game + bonus)
            paid["imitation"] += imit
            paid["game"] += game
            paid["bonus"] += bonus
    finally:
        envs.close()
    assert paid["imitation"] > 0 and paid["game"] == 1.0 and paid["bonus"] > 0  # checkpoints, the key, new cells
