"""PPO baseline: recurrent PPO learns a bandit family (RL^2), LSTM masking, checkpoints, resume, clear errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from crash_helpers import CrashAtStep

import dreamarcade  # noqa: F401
from dreamarcade.baselines.ppo import (
    ActorCritic,
    PPOConfig,
    describe_space,
    gae,
    load_agent,
    main,
    save_agent,
    train_ppo,
)
from dreamarcade.envs.bandit import BanditEnv
from dreamarcade.envs.maze import RandomMazeEnv
from dreamarcade.errors import CheckpointError
from dreamarcade.wrappers.metarl import EpisodeConcat


def _bandit_fns(n):
    return [lambda: gym.make("MetaBandit-v0")] * n


def _eval_bandit(agent, trials=200):
    env = gym.make("MetaBandit-v0")
    per_pull = []
    for k in range(trials):
        obs, _ = env.reset(seed=10_000 + k)  # tasks the training never drew with these seeds
        state, done, ret = agent.initial_state(1), torch.zeros(1), 0.0
        while True:
            with torch.no_grad():
                action, _, _, _, state = agent.get_action_and_value(torch.as_tensor(obs[None]), state, done)
            obs, r, term, trunc, _ = env.step(int(action[0]))
            ret += r
            if term or trunc:
                break
        per_pull.append(ret / 10)
    return float(np.mean(per_pull))


def test_recurrent_ppo_learns_two_armed_bandit_family(tmp_path):
    """RL^2: an LSTM policy that remembers which arm paid beats chance (0.5 per pull) on unseen tasks."""
    cfg = PPOConfig(
        total_timesteps=16_000, num_envs=8, num_steps=50, num_minibatches=2, update_epochs=4, learning_rate=3e-3,
        clip_coef=0.2, gamma=0.9, recurrent=True, lstm_size=32, mlp_hidden=16, vector_mode="sync", seed=0,
    )  # fmt: skip
    result = train_ppo(_bandit_fns(8), cfg, tmp_path, progress=False, tensorboard=False)
    untrained = ActorCritic(result.agent.obs_desc, 2, recurrent=True, lstm_size=32, mlp_hidden=16)
    assert _eval_bandit(untrained) < 0.56
    assert _eval_bandit(result.agent) > 0.62


def test_lstm_segments_match_step_by_step():
    """One LSTM call per done-free stretch must equal the step-by-step masked recurrence."""
    torch.manual_seed(0)
    net = ActorCritic(describe_space(gym.spaces.Box(-1, 1, (5,))), 3, recurrent=True, lstm_size=8, mlp_hidden=4)
    T, B = 12, 3
    x = torch.randn(T * B, 5)
    done = (torch.rand(T, B) < 0.25).float()
    state = (torch.randn(1, B, 8), torch.randn(1, B, 8))
    feats, (h, c) = net.features(x, state, done.reshape(-1))
    enc = net.encode(x).reshape(T, B, -1)
    hs, cs, outs = state[0], state[1], []
    for t in range(T):
        keep = (1 - done[t]).view(1, -1, 1)
        out, (hs, cs) = net.lstm(enc[t : t + 1], (hs * keep, cs * keep))
        outs.append(out[0])
    torch.testing.assert_close(feats, torch.cat(outs))
    torch.testing.assert_close(h, hs)


def test_checkpoint_resume_and_finetune(tmp_path, capsys):
    cfg = PPOConfig(total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1,
                    vector_mode="sync", checkpoint_every_updates=1)  # fmt: skip
    fns = [lambda: gym.make("CartPole-v1")] * 2
    first = train_ppo(fns, cfg, tmp_path / "a", progress=False, tensorboard=False)
    assert first.global_step == 256
    for name in ("episodes.csv", "metrics.csv", "hyperparameters.json", "learning_curve.png", "checkpoint"):
        assert (tmp_path / "a" / name).exists()
    agent, config, _ = load_agent(tmp_path / "a" / "checkpoint")
    assert config["kind"] == "ppo" and config["global_step"] == 256
    for p, q in zip(agent.parameters(), first.agent.parameters()):
        torch.testing.assert_close(p, q)
    cfg.total_timesteps, cfg.learning_rate = 512, 1e-3
    resumed = train_ppo(fns, cfg, tmp_path / "a", resume=True, progress=False, tensorboard=False)
    assert resumed.global_step == 512  # continued from 256, not from 0
    with open(tmp_path / "a" / "metrics.csv") as f:  # the optimizer state came back, the new rate applies
        rates = {float(r["step"]): float(r["charts/learning_rate"]) for r in csv.DictReader(f)}
    assert rates[256] == pytest.approx(2e-4) and rates[384] == rates[512] == pytest.approx(1e-3)
    again = train_ppo(fns, cfg, tmp_path / "a", resume=True, progress=False, tensorboard=False)
    assert again.global_step == 512  # already there: nothing trained, and the user is told why
    assert "at step 512, which reaches --total-timesteps 512: nothing is trained" in capsys.readouterr().err
    tuned = train_ppo(fns, cfg, tmp_path / "b", init_checkpoint=tmp_path / "a" / "checkpoint", progress=False,
                      tensorboard=False)  # fmt: skip
    assert tuned.global_step == 512
    # the fine-tuned agent starts from the checkpoint's weights: with a vanishing learning rate it ends on them
    start = load_agent(tmp_path / "a" / "checkpoint")[0]
    still = train_ppo(fns, dataclasses.replace(cfg, total_timesteps=128, learning_rate=1e-12), tmp_path / "b0",
                      init_checkpoint=tmp_path / "a" / "checkpoint", progress=False, tensorboard=False)  # fmt: skip
    for p, q in zip(still.agent.parameters(), start.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    with pytest.raises(CheckpointError, match="observations"):
        train_ppo([lambda: gym.make("Acrobot-v1")], cfg, tmp_path / "c", init_checkpoint=tmp_path / "a" / "checkpoint",
                  progress=False, tensorboard=False)  # fmt: skip
    (tmp_path / "a" / "checkpoint" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_agent(tmp_path / "a" / "checkpoint")


class _SigtermAtStep(gym.Wrapper):
    """CartPole that sends SIGTERM to its own process at its 300th step (a user stopping the run)."""

    steps = 0

    def step(self, action):
        type(self).steps += 1
        if type(self).steps == 300:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.env.step(action)


def test_sigterm_stops_after_the_update_and_saves_a_checkpoint(tmp_path, capfd):
    _SigtermAtStep.steps = 0
    cfg = PPOConfig(total_timesteps=4096, num_envs=1, num_steps=128, num_minibatches=2, update_epochs=1,
                    vector_mode="sync", checkpoint_every_updates=100)  # fmt: skip
    before = signal.getsignal(signal.SIGTERM)
    result = train_ppo([lambda: _SigtermAtStep(gym.make("CartPole-v1"))], cfg, tmp_path, progress=False,
                       tensorboard=False)  # fmt: skip
    # Step 300 falls in the third rollout of 128 steps: that update is finished, saved, and the run returns.
    assert result.stopped_early and result.global_step == 384
    assert load_agent(tmp_path / "checkpoint")[1]["global_step"] == 384
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
    assert load_agent(tmp_path / "checkpoint")[1]["hyperparameters"] == dataclasses.asdict(cfg)  # kept with it
    # other learning settings on resume: taken, as the learning rate always was, but said (nothing on disk kept the
    # first part's: hyperparameters.json is rewritten); where it runs (threads) is not a learning setting
    other = dataclasses.replace(cfg, gamma=0.9, learning_rate=1e-3, torch_threads=2)
    resumed = train_ppo([lambda: gym.make("CartPole-v1")], other, tmp_path, resume=True, progress=False,
                        tensorboard=False)  # fmt: skip
    assert not resumed.stopped_early and resumed.global_step == 4096
    note = capfd.readouterr().err
    assert "differ from the checkpoint's: learning_rate: 0.0002 -> 0.001, gamma: 0.99 -> 0.9." in note
    assert "torch_threads" not in note
    # an evaluation due at the stopping update is skipped: the checkpoint is saved first (an evaluation of minutes
    # could outlast the grace period of a scheduler's SIGTERM and lose it)
    _SigtermAtStep.steps = 0
    cfg = dataclasses.replace(cfg, eval_every_steps=384)
    result = train_ppo([lambda: _SigtermAtStep(gym.make("CartPole-v1"))], cfg, tmp_path / "eval", progress=False,
                       tensorboard=False, eval_env_fns={"cartpole": lambda: gym.make("CartPole-v1")})  # fmt: skip
    assert result.stopped_early and result.global_step == 384
    assert [h["step"] for h in result.eval_history] == [0.0]  # not 384
    # the resume makes it up first, with the checkpoint's policy (the one it was due for), then goes on
    cfg_more = dataclasses.replace(cfg, total_timesteps=1024)
    resumed = train_ppo([lambda: gym.make("CartPole-v1")], cfg_more, tmp_path / "eval", resume=True, progress=False,
                        tensorboard=False, eval_env_fns={"cartpole": lambda: gym.make("CartPole-v1")})  # fmt: skip
    assert [h["step"] for h in resumed.eval_history] == [384.0, 768.0]
    with open(tmp_path / "eval" / "eval.csv") as f:
        assert [float(r["step"]) for r in csv.DictReader(f)] == [0.0, 384.0, 768.0]
    # a resume with nothing missing evaluates nothing extra
    resumed = train_ppo([lambda: gym.make("CartPole-v1")], dataclasses.replace(cfg, total_timesteps=1152),
                        tmp_path / "eval", resume=True, progress=False, tensorboard=False,
                        eval_env_fns={"cartpole": lambda: gym.make("CartPole-v1")})  # fmt: skip
    assert [h["step"] for h in resumed.eval_history] == [1152.0]
    # stopped during the last update: its evaluation runs (no resume would come back for it)
    _SigtermAtStep.steps = 0
    cfg = dataclasses.replace(cfg, total_timesteps=384, eval_every_steps=384)
    result = train_ppo([lambda: _SigtermAtStep(gym.make("CartPole-v1"))], cfg, tmp_path / "last", progress=False,
                       tensorboard=False, eval_env_fns={"cartpole": lambda: gym.make("CartPole-v1")})  # fmt: skip
    assert not result.stopped_early and [h["step"] for h in result.eval_history] == [0.0, 384.0]


def test_save_agent_roundtrip_for_image_dict_observations(tmp_path):
    env = gym.make("MetaMazePixels-v0")
    net = ActorCritic(describe_space(env.observation_space), 4, recurrent=True, lstm_size=16)
    save_agent(tmp_path, net)
    loaded, config, _ = load_agent(tmp_path)
    assert config["obs_space"]["type"] == "dict"
    obs, _ = env.reset(seed=0)
    batch = {k: torch.as_tensor(v[None]) for k, v in obs.items()}
    state = net.initial_state(1)
    a = net.get_action_and_value(batch, state, torch.zeros(1), deterministic=True)
    b = loaded.get_action_and_value(batch, state, torch.zeros(1), deterministic=True)
    torch.testing.assert_close(a[3], b[3])


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Discrete"):
        train_ppo([lambda: gym.make("Pendulum-v1")], PPOConfig(total_timesteps=8, num_steps=8, num_minibatches=1),
                  tmp_path, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="channels-first"):
        ActorCritic(describe_space(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)), 4, network="cnn")
    with pytest.raises(ValueError, match=r"20x20 pixels are too small for the Nature CNN .*network='mlp'"):
        ActorCritic(describe_space(gym.spaces.Box(0, 255, (3, 20, 20), np.uint8)), 4)  # was a conv kernel error
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_envs=1, num_steps=4, num_minibatches=8).validate()
    with pytest.raises(ValueError, match="SAME_STEP"):
        train_ppo(gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")]), PPOConfig(), tmp_path, progress=False)
    # Checked against the envs given (1), not config.num_envs (8): 8 minibatches of 4 steps would be empty.
    with pytest.raises(ValueError, match=r"num_minibatches=8 must be between 1 and num_envs\*num_steps=1\*4=4"):
        train_ppo([lambda: gym.make("CartPole-v1")], PPOConfig(num_envs=8, num_steps=4, num_minibatches=8),
                  tmp_path / "few", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="num_envs=2 must be a multiple of num_minibatches=8. Use num_minibatches=2"):
        PPOConfig(recurrent=True, num_envs=2, num_steps=64, num_minibatches=8).validate()
    with pytest.raises(ValueError, match="num_minibatches=3"):
        PPOConfig(recurrent=True, num_envs=6, num_steps=64, num_minibatches=4).validate()
    PPOConfig(recurrent=True, num_envs=8, num_steps=64, num_minibatches=4).validate()
    with pytest.raises(ValueError, match=r"--update-epochs must be an integer >= 1 \(passes over each rollout\)"):
        PPOConfig(update_epochs=0).validate()
    with pytest.raises(ValueError, match="--checkpoint-every-updates must be an integer >= 1"):
        PPOConfig(checkpoint_every_updates=0).validate()
    for field, value in (("torch_threads", 0), ("lstm_size", 0), ("eval_episodes", 0), ("eval_every_steps", -1)):
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be an integer >= "):
            PPOConfig(**{field: value}).validate()  # torch_threads=0 failed inside torch; the others mid-run
    with pytest.raises(ValueError, match="--total-timesteps must be an integer >= 1, got 1000.5"):
        PPOConfig(total_timesteps=1000.5).validate()
    bad_floats = [("gamma", float("nan")), ("gamma", 1.5), ("gae_lambda", -0.1), ("clip_coef", -1.0)]
    bad_floats += [("learning_rate", 0.0), ("max_grad_norm", 0.0), ("target_kl", 0.0), ("vf_coef", float("inf"))]
    for field, value in bad_floats:
        with pytest.raises(ValueError, match=f"--{field.replace('_', '-')} must be a finite number in"):
            PPOConfig(**{field: value}).validate()  # NaN crashed mid-run; a negative clip trained without a word
    with pytest.raises(ValueError, match=r"--ent-coef must be a finite number in \[0.0, inf\), got nan"):
        PPOConfig(ent_coef=float("nan")).validate()
    PPOConfig(gamma=np.float32(0.99), learning_rate=np.float64(1e-3), clip_coef=1).validate()  # numpy floats, ints
    with pytest.raises(ValueError, match="'obs' image of Dict observations must be channels-first"):
        ActorCritic(describe_space(EpisodeConcat(RandomMazeEnv(size=3, obs_type="pixels")).observation_space), 4)
    # a float image went through the CNN's /255 (a frame in [0, 1] arrived as at most 1/255), and network='mlp' on
    # Dict observations was ignored (the CNN was built, and the checkpoint said cnn)
    with pytest.raises(ValueError, match="must be uint8 pixels .* got float32: .* network='mlp'"):
        ActorCritic(describe_space(gym.spaces.Box(0, 1, (4, 84, 84), np.float32)), 4)
    dict_space = gym.spaces.Dict(
        {"obs": gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), "meta": gym.spaces.Box(-1, 1, (6,), np.float32)}
    )
    with pytest.raises(ValueError, match="network='mlp' cannot read Dict"):
        ActorCritic(describe_space(dict_space), 4, network="mlp")
    assert ActorCritic(describe_space(dict_space), 4).kind == "dict"


def test_device_names_are_checked_before_training(capsys, tmp_path):
    from dreamarcade.baselines.common import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu' is not a device: use cpu, cuda, cuda:N, mps or auto"):
        resolve_device("gpu")  # was torch's RuntimeError listing 19 device types
    with pytest.raises(ValueError, match="only cpu, cuda, cuda:N, mps and auto are supported"):
        resolve_device("meta")
    if not torch.backends.mps.is_available():  # was accepted, then failed at the first tensor moved there
        with pytest.raises(ValueError, match="MPS backend is not available; use cpu"):
            resolve_device("mps")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")
    run = tmp_path / "run"
    assert main(["train", "--env-id", "CartPole-v1", "--device", "gpu", "--run-dir", str(run)]) == 2
    assert "error: --device 'gpu' is not a device" in capsys.readouterr().err


def test_cli_help_and_bad_env(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "--total-timesteps" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["protocol", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--timesteps-per-level" in out
    # a level's score is the mean of its training episodes: the protocol has no held-out evaluation to configure
    assert "--eval-every-steps" not in out and "--eval-episodes" not in out and "--num-envs" not in out
    for command in ("protocol", "finetune"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert "--eval-episodes" not in capsys.readouterr().out
    # an unknown id and a continuous-action env: exit code 2 and a message naming the problem, no traceback
    assert main(["train", "--env-id", "CartPolee-v1", "--run-dir", str(tmp_path / "a"), "--total-timesteps", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "`CartPolee` doesn't exist" in err and "`CartPole`" in err
    assert main(["train", "--env-id", "Pendulum-v1", "--run-dir", str(tmp_path / "b"), "--total-timesteps", "8"]) == 2
    assert "error: PPO here supports Discrete action spaces, got Box(" in capsys.readouterr().err


def test_cli_keeps_the_traceback_of_an_error_raised_while_training(tmp_path, capsys):
    """Bad input is one line and exit 2; a ValueError from the middle of a run is not bad input: it propagates with
    its traceback (the CLI used to catch every ValueError of the whole run and print it as a usage error)."""
    gym.register("CartPoleValueErrorAt40-v0", entry_point=lambda: CrashAtStep(gym.make("CartPole-v1"), 40, ValueError))
    try:
        argv = ["train", "--env-id", "CartPoleValueErrorAt40-v0", "--total-timesteps", "64", "--num-envs", "1",
                "--num-minibatches", "1", "--vector-mode", "sync", "--checkpoint-every-updates", "1"]  # fmt: skip
        with pytest.raises(ValueError, match="killed"):
            main([*argv, "--run-dir", str(tmp_path / "a"), "--num-steps", "16"])
        assert (tmp_path / "a" / "checkpoint").is_dir()  # it failed in the training loop, after updates were saved
        capsys.readouterr()
        assert main([*argv, "--run-dir", str(tmp_path / "b"), "--num-steps", "0"]) == 2  # bad input: one line
        assert capsys.readouterr().err.startswith("error: --num-steps must be an integer >= 1, got 0")
    finally:
        del gym.registry["CartPoleValueErrorAt40-v0"]


def test_input_checks_mark_errors_of_the_checks_only():
    from dreamarcade.errors import input_checks, is_input_error

    for error in (ValueError, TypeError, OSError):
        with pytest.raises(error) as caught, input_checks(OSError):
            raise error("bad")
        assert is_input_error(caught.value), error
    with pytest.raises(RuntimeError) as caught, input_checks():  # not a kind the checks raise: left unmarked
        raise RuntimeError("a crash")
    assert not is_input_error(caught.value)
    assert not is_input_error(ValueError("raised outside any check")) and is_input_error(CheckpointError("x"))


def test_eval_csv_keeps_columns_by_name_and_the_train_cli_evaluates(tmp_path, capsys, monkeypatch):
    def capped(n):
        return lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1", max_episode_steps=n))

    cfg = PPOConfig(total_timesteps=64, num_envs=1, num_steps=32, num_minibatches=1, update_epochs=1,
                    vector_mode="sync", eval_every_steps=32, eval_episodes=1)  # fmt: skip
    fns = [lambda: gym.make("CartPole-v1")]
    train_ppo(fns, cfg, tmp_path / "a", eval_env_fns={"short": capped(3), "long": capped(500)}, progress=False,
              tensorboard=False)  # fmt: skip
    cfg.total_timesteps = 128  # resumed with the eval envs in the other order: each score stays in its column
    train_ppo(fns, cfg, tmp_path / "a", resume=True, eval_env_fns={"long": capped(500), "short": capped(3)},
              progress=False, tensorboard=False)  # fmt: skip
    with open(tmp_path / "a" / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["step"]) for r in rows] == [0, 32, 64, 96, 128]
    assert all(float(r["eval/short"]) == 3.0 and float(r["eval/long"]) > 3.0 for r in rows)
    # the learning curve after the resume draws every evaluation, also those logged before it
    import dreamarcade.baselines.ppo as ppo_module

    drawn = {}
    monkeypatch.setattr(ppo_module, "plot_learning_curve", lambda curves, *a, **k: drawn.update(curves))
    ppo_module._plot(tmp_path / "a", ppo_module.PPOResult(agent=None, global_step=128))
    assert drawn["eval short"][0].tolist() == [0, 32, 64, 96, 128] and set(drawn) >= {"train", "eval long"}
    # `ppo train --eval-every-steps N` scores the policy on a fresh copy of the env (it used to be ignored)
    run = tmp_path / "cli"
    argv = ["train", "--env-id", "CartPole-v1", "--run-dir", str(run), "--total-timesteps", "64", "--num-envs", "1",
            "--num-steps", "32", "--num-minibatches", "1", "--update-epochs", "1", "--vector-mode", "sync",
            "--eval-every-steps", "32"]  # fmt: skip
    assert main(argv) == 0
    with open(run / "eval.csv") as f:
        assert [float(r["step"]) for r in csv.DictReader(f)] == [0, 32, 64]
    # `ppo train --resume` with another env id (same spaces) went on, mixing two envs' episodes in one run
    other = [("CartPole-v0" if a == "CartPole-v1" else "96" if a == "64" else a) for a in argv]
    capsys.readouterr()
    assert main([*other, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trained with env_id 'CartPole-v1' (now 'CartPole-v0')" in err and "Traceback" not in err
    capsys.readouterr()
    assert main([*argv[:6], "96", *argv[7:], "--resume"]) == 0  # the same env resumes
    # its summary covers the whole run, not only this call's episodes
    printed = json.loads(capsys.readouterr().out)
    with open(run / "episodes.csv") as f:
        returns = [float(r["episodic_return"]) for r in csv.DictReader(f)]
    assert printed["episodes"] == len(returns) and printed["mean_return"] == pytest.approx(np.mean(returns))
    # the Sonic protocol sets the env count, vector mode and budget itself: those flags are not accepted
    with pytest.raises(SystemExit) as exc:
        main(["protocol", "--levels", "Airstriker-Genesis:Level1", "--num-envs", "3"])
    assert exc.value.code == 2 and "unrecognized arguments: --num-envs 3" in capsys.readouterr().err


def test_entropy_bonus_schedule(tmp_path):
    """``ent_coef_final`` anneals the entropy bonus linearly over the budget; a resume continues the schedule."""
    constant = PPOConfig(total_timesteps=1000, ent_coef=0.01)
    assert constant.entropy_coef_at(0) == constant.entropy_coef_at(1000) == 0.01
    annealed = PPOConfig(total_timesteps=1000, ent_coef=0.01, ent_coef_final=0.0)
    assert annealed.entropy_coef_at(0) == pytest.approx(0.01)
    assert annealed.entropy_coef_at(250) == pytest.approx(0.0075)
    assert annealed.entropy_coef_at(1000) == annealed.entropy_coef_at(5000) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="ent-coef-final"):
        PPOConfig(ent_coef_final=-0.1).validate()
    with pytest.raises(ValueError, match="--ent-coef must be a finite number"):
        PPOConfig(ent_coef=float("inf")).validate()

    cfg = PPOConfig(
        total_timesteps=64, num_envs=2, num_steps=8, num_minibatches=1, update_epochs=1, ent_coef=0.02,
        ent_coef_final=0.0, mlp_hidden=8, vector_mode="sync", checkpoint_every_updates=1,
    )  # fmt: skip
    # half the budget, then a resume to the whole: the schedule goes on from the checkpoint's step
    train_ppo([lambda: gym.make("CartPole-v1")] * 2, dataclasses.replace(cfg, total_timesteps=32), tmp_path,
              progress=False, tensorboard=False)  # fmt: skip
    train_ppo([lambda: gym.make("CartPole-v1")] * 2, cfg, tmp_path, resume=True, progress=False, tensorboard=False)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["charts/ent_coef"]) for r in rows]
    assert logged[2:] == pytest.approx([0.02 * (1 - 16 * k / 64) for k in (2, 3)])  # set at each update's start


def _steps(path):
    with open(path, newline="") as f:
        return [float(r["step"]) for r in csv.DictReader(f)]


def test_resume_drops_rows_logged_after_the_checkpoint_and_a_fresh_run_refuses_an_old_dir(tmp_path):
    cfg = PPOConfig(total_timesteps=160, num_envs=1, num_steps=32, num_minibatches=2, update_epochs=1,
                    vector_mode="sync", checkpoint_every_updates=2)  # fmt: skip
    with pytest.raises(RuntimeError, match="killed"):  # checkpoint at step 64, killed at step 100
        train_ppo([lambda: CrashAtStep(gym.make("CartPole-v1"), 100)], cfg, tmp_path, progress=False,
                  tensorboard=False)  # fmt: skip
    assert load_agent(tmp_path / "checkpoint")[1]["global_step"] == 64
    assert _steps(tmp_path / "metrics.csv") == [32, 64, 96] and max(_steps(tmp_path / "episodes.csv")) > 64
    with pytest.raises(FileExistsError, match="resume"):
        train_ppo([lambda: gym.make("CartPole-v1")], cfg, tmp_path, progress=False, tensorboard=False)
    result = train_ppo([lambda: gym.make("CartPole-v1")], cfg, tmp_path, resume=True, progress=False,
                       tensorboard=False)  # fmt: skip
    assert result.global_step == 160
    assert _steps(tmp_path / "metrics.csv") == [32, 64, 96, 128, 160]  # 96 once: the killed update's row is gone
    episode_steps = _steps(tmp_path / "episodes.csv")
    assert episode_steps == sorted(episode_steps)  # no episode of steps 65-100 is counted twice
    assert [s for s in episode_steps if s > 64] == result.episode_steps


def test_checkpoint_with_another_network_is_a_clear_checkpoint_error(tmp_path):
    cfg = PPOConfig(total_timesteps=64, num_envs=2, num_steps=32, num_minibatches=2, update_epochs=1,
                    vector_mode="sync", recurrent=True, lstm_size=16, mlp_hidden=8)  # fmt: skip
    fns = [lambda: gym.make("CartPole-v1")] * 2
    train_ppo(fns, cfg, tmp_path / "a", progress=False, tensorboard=False)
    bigger = dataclasses.replace(cfg, lstm_size=32, total_timesteps=128)
    with pytest.raises(CheckpointError, match=r"lstm_size=16 .* lstm_size=32\. Set --lstm-size"):
        train_ppo(fns, bigger, tmp_path / "a", resume=True, progress=False, tensorboard=False)
    with pytest.raises(CheckpointError, match=r"recurrent=True .* recurrent=False"):
        train_ppo(fns, dataclasses.replace(cfg, recurrent=False), tmp_path / "b",
                  init_checkpoint=tmp_path / "a" / "checkpoint", progress=False, tensorboard=False)  # fmt: skip
    with pytest.raises(CheckpointError, match="mlp_hidden=8 .* mlp_hidden=64"):
        train_ppo(fns, dataclasses.replace(cfg, mlp_hidden=64), tmp_path / "c",
                  init_checkpoint=tmp_path / "a" / "checkpoint", progress=False, tensorboard=False)  # fmt: skip


def test_trial_return_is_the_trial_not_its_last_inner_episode(tmp_path):
    """An inner RecordEpisodeStatistics must not make PPO log the last inner episode's return as the trial's."""

    def trial_env():
        return EpisodeConcat(gym.wrappers.RecordEpisodeStatistics(BanditEnv()), num_episodes=4)

    cfg = PPOConfig(total_timesteps=64, num_envs=1, num_steps=32, num_minibatches=1, update_epochs=1,
                    vector_mode="sync")  # fmt: skip
    train_ppo([trial_env], cfg, tmp_path, progress=False, tensorboard=False)
    with open(tmp_path / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and all(int(r["episodic_length"]) == 4 for r in rows)
    returns = [float(r["episodic_return"]) for r in rows]
    assert returns == [float(r["train_return"]) for r in rows] and max(returns) >= 2  # one pull pays at most 1


def test_train_cli_on_a_retro_contest_env_with_evaluation(tmp_path):
    """`ppo train` on a contest env: one episode recorder (the env has its own), and evaluation workers can start."""
    pytest.importorskip("stable_retro")
    from dreamarcade.baselines.common import has_episode_statistics
    from dreamarcade.baselines.ppo import _make_gym_env

    env = _make_gym_env("AirstrikerContest-v0", 0)()
    try:
        recorders, e = 0, env
        while isinstance(e, gym.Wrapper):
            recorders += isinstance(e, gym.wrappers.RecordEpisodeStatistics)
            e = e.env
        assert recorders == 1  # a second one asserted when the first episode ended
    finally:
        env.close()
    assert not has_episode_statistics(gym.make("CartPole-v1"))
    monitor = pytest.importorskip("stable_baselines3.common.monitor")
    assert has_episode_statistics(gym.wrappers.TimeLimit(monitor.Monitor(gym.make("CartPole-v1")), 50))  # SB3's
    run = tmp_path / "retro"
    argv = ["train", "--env-id", "AirstrikerContest-v0", "--run-dir", str(run), "--total-timesteps", "32",
            "--num-envs", "1", "--num-steps", "32", "--num-minibatches", "1", "--update-epochs", "1",
            "--eval-every-steps", "32", "--eval-episodes", "1"]  # fmt: skip
    # with one actor in this process, the forked evaluation worker inherited its emulator and stable-retro refused
    assert main(argv) == 0
    with open(run / "eval.csv") as f:
        assert [float(r["step"]) for r in csv.DictReader(f)] == [0, 32]


def test_subprocess_env_workers_leave_ctrl_c_and_sigterm_to_the_trainer():
    # Ctrl-C, `timeout` and SLURM signal the whole process group: a worker that died of it took the run down
    # before the trainer could save its checkpoint
    from dreamarcade.baselines.ppo import make_vector_env

    before = signal.getsignal(signal.SIGINT)
    envs = make_vector_env([lambda: gym.make("CartPole-v1")] * 2, mode="async")
    assert signal.getsignal(signal.SIGINT) is before  # the env built here to read the spaces changed nothing here
    try:
        envs.reset(seed=0)
        for proc in envs.processes:
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGINT)
        for _ in range(3):
            envs.step(np.zeros(2, np.int64))  # the workers are still there
        assert all(proc.is_alive() for proc in envs.processes)
    finally:
        envs.close()


def test_minibatches_use_every_sample_when_the_batch_does_not_divide():
    from dreamarcade.baselines.ppo import _minibatches

    torch.manual_seed(0)
    mbs = _minibatches(T=5, N=3, num_minibatches=4, recurrent=False)  # 15 samples: 4 + 4 + 4 + 3, none dropped
    assert sorted(len(idx) for idx, _ in mbs) == [3, 4, 4, 4]
    assert sorted(torch.cat([idx for idx, _ in mbs]).tolist()) == list(range(15))


def test_a_lost_life_is_not_an_episode_in_training_logs_or_evaluation(tmp_path):
    """DQN*-v0 ends an episode per life (EpisodicLife, game_over False): PPO logged each life as an episode, so
    episodes.csv and the evaluation mixed single lives with whole-game scores."""
    from dreamarcade.baselines.ppo import evaluate_policy

    class CountGames(gym.Wrapper):
        games = 0

        def step(self, action):
            out = self.env.step(action)
            type(self).games += "episode" in out[4]  # RecordEpisodeStatistics inside: a whole game ended
            return out

    make = lambda: CountGames(gym.make("DQNBreakout-v0"))  # noqa: E731
    cfg = PPOConfig(total_timesteps=768, num_steps=128, num_minibatches=1, update_epochs=1, vector_mode="sync")
    train_ppo([make], cfg, tmp_path, progress=False, tensorboard=False)
    with open(tmp_path / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert CountGames.games >= 1 and len(rows) == CountGames.games  # one row per game, not one per life
    assert all(int(r["episodic_length"]) > 100 for r in rows)  # a game of Breakout is five lives
    CountGames.games = 0
    agent = load_agent(tmp_path / "checkpoint")[0]
    scores = evaluate_policy(agent, [make], episodes=2, mode="sync", seed=0)
    assert len(scores[0]) == 2 and CountGames.games == 2
    with pytest.raises(TypeError, match=r"load_agent returns \(agent, config, tensors\)"):  # an AttributeError
        evaluate_policy(load_agent(tmp_path / "checkpoint"), [make], mode="sync")
    # an outer TimeLimit ends the game (game_over is still False): that episode counts, or a game without lives
    # (Pong) would never log one and the evaluation would never return
    capped = lambda: gym.make("DQNPong-v0", max_episode_steps=50)  # noqa: E731
    train_ppo([capped], dataclasses.replace(cfg, total_timesteps=256), tmp_path / "pong", progress=False,
              tensorboard=False)  # fmt: skip
    with open(tmp_path / "pong" / "episodes.csv", newline="") as f:
        assert [int(r["episodic_length"]) for r in csv.DictReader(f)] == [50] * 5
    assert len(evaluate_policy(agent, [capped], episodes=1, mode="sync", seed=0)[0]) == 1


def test_gae_matches_the_discounted_sum_of_td_errors_within_each_episode():
    """The advantage of step t is sum_l (gamma lambda)^l delta_(t+l) over the rest of its own episode, each delta
    bootstrapping only from a step of the same episode (ppo2's convention: dones[t] marks obs[t] as a new start)."""
    rng = np.random.default_rng(0)
    T, N, gamma, lam = 12, 3, 0.9, 0.8
    rewards, values = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    dones = (rng.random((T, N)) < 0.25).astype(float)
    next_value, next_done = rng.normal(size=N), np.array([0.0, 1.0, 0.0])
    expected = np.zeros((T, N))
    for n in range(N):
        # the step after step t, and whether it belongs to the same episode
        after_v = np.append(values[1:, n], next_value[n])
        same = 1.0 - np.append(dones[1:, n], next_done[n])
        delta = rewards[:, n] + gamma * after_v * same - values[:, n]
        for t in range(T):
            total, weight = 0.0, 1.0
            for u in range(t, T):
                total += weight * delta[u]
                if not same[u]:
                    break
                weight *= gamma * lam
            expected[t, n] = total
    as_t = [torch.as_tensor(x, dtype=torch.float64) for x in (rewards, values, dones, next_value, next_done)]
    np.testing.assert_allclose(gae(*as_t, gamma, lam).numpy(), expected, rtol=1e-12)


def test_a_diverged_ppo_keeps_its_last_good_checkpoint(tmp_path):
    # a learning rate too high: the next rollout stopped on a bare "invalid logits" ValueError, or a checkpoint due
    # before it saved the NaN weights over the last good ones
    from dreamarcade.errors import DivergedError

    cfg = PPOConfig(total_timesteps=128, num_envs=2, num_steps=32, num_minibatches=2, update_epochs=1,
                    vector_mode="sync", checkpoint_every_updates=1)  # fmt: skip
    fns = [lambda: gym.make("CartPole-v1")] * 2
    train_ppo(fns, cfg, tmp_path / "a", progress=False, tensorboard=False)
    good = load_agent(tmp_path / "a" / "checkpoint")[0].state_dict()
    cfg.total_timesteps, cfg.learning_rate = 1024, 1e30
    with pytest.raises(DivergedError, match=r"by step \d+ with --learning-rate 1e\+30: .*checkpoint' is intact"):
        train_ppo(fns, cfg, tmp_path / "a", resume=True, progress=False, tensorboard=False)
    kept, config, _ = load_agent(tmp_path / "a" / "checkpoint")
    assert config["global_step"] == 128 and all(torch.equal(good[k], v) for k, v in kept.state_dict().items())


def test_a_checkpoint_keeps_numpys_cached_normal_draw(tmp_path):
    # numpy's legacy RNG holds the second of each pair of normal draws; checkpoints dropped it, so the first normal
    # draw after a resume differed from the uninterrupted run's
    from dreamarcade.baselines.ppo import _set_global_rng_state, save_agent
    from dreamarcade.checkpoint import load_checkpoint, unpack_state

    cfg = PPOConfig(total_timesteps=64, num_envs=2, num_steps=32, num_minibatches=2, update_epochs=1,
                    vector_mode="sync")  # fmt: skip
    agent = train_ppo([lambda: gym.make("CartPole-v1")] * 2, cfg, tmp_path / "a", progress=False).agent
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.standard_normal()  # the pair's second draw is now cached
    save_agent(tmp_path / "ck", agent, torch.optim.Adam(agent.parameters()), 64)
    expected = (np.random.standard_normal(), np.random.standard_normal(), torch.rand(2))
    np.random.seed(99)
    torch.manual_seed(99)
    tensors, config = load_checkpoint(tmp_path / "ck")
    _set_global_rng_state(unpack_state(config["rng"], tensors))  # what train_ppo(resume=True) calls
    assert (np.random.standard_normal(), np.random.standard_normal()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])
