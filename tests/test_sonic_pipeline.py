"""The joint-training / fine-tune / protocol pipeline and JERK, end to end on Airstriker (the shipped ROM)."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("stable_retro")

from dreamarcade.baselines.jerk import JERKConfig, run_jerk  # noqa: E402
from dreamarcade.baselines.ppo import PPOConfig, load_agent  # noqa: E402
from dreamarcade.baselines.ppo_sonic import joint_train, report_table, sonic_protocol  # noqa: E402
from dreamarcade.envs.sonic import make_contest_env  # noqa: E402
from dreamarcade.errors import CheckpointError, MissingROMError  # noqa: E402

AIR = ("Airstriker-Genesis", "Level1")
TINY = PPOConfig(total_timesteps=64, num_steps=32, num_minibatches=2, update_epochs=1, eval_every_steps=64)


def test_joint_then_finetune_protocol_and_table(tmp_path):
    joint = joint_train(
        [AIR, AIR], TINY, tmp_path / "joint", eval_levels=[AIR], scenario="scenario", max_episode_steps=25,
        progress=False,
    )  # fmt: skip
    assert joint.global_step == 64
    assert (tmp_path / "joint" / "test_score_curve.png").exists()
    evals = (tmp_path / "joint" / "eval.csv").read_text().splitlines()
    assert evals[0].startswith("step,eval/Airstriker-Genesis:Level1") and len(evals) == 3  # at 0 and at 64 steps
    agent, config, _ = load_agent(tmp_path / "joint" / "checkpoint")
    assert config["obs_space"]["shape"] == [4, 84, 84] and config["n_actions"] == 7
    # a resume with another episode limit would mix two runs' episodes in one curve (it went on without a word)
    longer = dataclasses.replace(TINY, total_timesteps=128)
    with pytest.raises(CheckpointError, match=r"max_episode_steps 25 \(now 40\)"):
        joint_train(
            [AIR, AIR], longer, tmp_path / "joint", eval_levels=[AIR], scenario="scenario", max_episode_steps=40,
            resume=True, progress=False,
        )  # fmt: skip

    summary = sonic_protocol(
        [AIR], TINY, tmp_path / "finetune", timesteps=64, init_checkpoint=tmp_path / "joint" / "checkpoint",
        label="Joint PPO + fine-tune", scenario="scenario", max_episode_steps=25, progress=False,
    )  # fmt: skip
    score = summary["scores"]["Airstriker-Genesis:Level1"]
    assert score["episodes"] >= 2 and summary["mean_score"] == score["score"]
    saved = json.loads((tmp_path / "finetune" / "scores.json").read_text())
    assert saved["init_checkpoint"].endswith("checkpoint")
    table = report_table([tmp_path / "finetune"])
    assert "| Joint PPO + fine-tune | 1 | 64 |" in table and "3127.9" in table and "7438.2" in table


def test_sync_retro_actors_with_evaluation_are_refused_before_the_run(tmp_path):
    """The evaluation's envs start in subprocesses whose first one is built in this process, which a sync retro
    actor already holds: stable-retro's traceback came at step 0, after the run directory was written."""
    from dreamarcade.baselines.ppo import train_ppo

    def air():
        return make_contest_env(*AIR, scenario="scenario", max_episode_steps=25)

    with pytest.raises(ValueError, match="--vector-mode sync runs the retro envs in this process"):
        train_ppo([air], dataclasses.replace(TINY, vector_mode="sync"), tmp_path / "run", eval_env_fns={"a": air})
    assert not (tmp_path / "run").exists()


def test_pipeline_fails_fast_on_missing_rom(tmp_path):
    import stable_retro

    try:
        stable_retro.data.get_romfile_path("SonicTheHedgehog-Genesis-v0")
        pytest.skip("the Sonic ROM is imported here")
    except FileNotFoundError:
        pass
    with pytest.raises(MissingROMError, match="SonicTheHedgehog-Genesis-v0"):
        sonic_protocol([("SonicTheHedgehog-Genesis", "GreenHillZone.Act2")], TINY, tmp_path, progress=False)


def test_jerk_on_airstriker(tmp_path):
    env = make_contest_env("Airstriker-Genesis", "Level1", scenario="scenario", max_episode_steps=120)
    try:
        result = run_jerk(env, JERKConfig(total_timesteps=500, save_every_episodes=1), tmp_path, progress=False)
    finally:
        env.close()
    assert result["steps"] >= 500 and result["episodes"] >= 4
    assert (tmp_path / "episodes.csv").exists() and (tmp_path / "jerk_state.npz").exists()
