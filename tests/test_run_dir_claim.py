"""One process per run directory: a second trainer on a busy run directory stops before it changes anything."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium as gym
import pytest

from dreamarcade.baselines.common import LOCK_FILE, RunDirBusyError, claim_run_dir, release_run_dir
from dreamarcade.baselines.ppo import PPOConfig, train_ppo


@contextmanager
def held_by_another_process(run_dir: Path, claim: str = "claim_run_dir") -> Iterator[int]:
    """A real second process that claims ``run_dir`` (with the function ``claim``, ``module:name`` or a name in
    ``baselines.common``) and holds it until the block ends; yields its pid."""
    module, _, name = claim.rpartition(":")
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from {module or "dreamarcade.baselines.common"} import {name} as claim
        claim(Path({str(run_dir)!r}))
        print("claimed", flush=True)
        sys.stdin.read()  # hold the claim until the test closes stdin
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
        yield proc.pid
    finally:
        proc.communicate(timeout=60)  # closes stdin: the process exits and the system drops its lock


def test_a_claim_held_by_another_process_is_refused_until_that_process_ends(tmp_path: Path) -> None:
    with held_by_another_process(tmp_path) as pid:
        with pytest.raises(RunDirBusyError, match=rf"in use by another process \(pid {pid}\)"):
            claim_run_dir(tmp_path)
        assert isinstance(RunDirBusyError("x"), BlockingIOError)
    claim_run_dir(tmp_path)  # the holder has exited
    claim_run_dir(tmp_path)  # this process again: fine (a run resumed in the same notebook after a crash)
    release_run_dir(tmp_path)
    release_run_dir(tmp_path)  # nothing held: nothing happens
    assert (tmp_path / LOCK_FILE).is_file()


def _ppo(run_dir: Path, resume: bool) -> None:
    cfg = PPOConfig(total_timesteps=256, num_steps=64, num_minibatches=1, update_epochs=1, vector_mode="sync")
    train_ppo([lambda: gym.make("CartPole-v1")], cfg, run_dir, resume=resume, progress=False, tensorboard=False)


def test_a_resume_into_a_busy_run_directory_stops_before_dropping_log_rows(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _ppo(run, resume=False)
    before = {n: (run / n).read_bytes() for n in ("episodes.csv", "metrics.csv", "hyperparameters.json")}
    with held_by_another_process(run), pytest.raises(RunDirBusyError):
        _ppo(run, resume=True)
    assert {n: (run / n).read_bytes() for n in before} == before  # not a row dropped, nothing rewritten
    _ppo(run, resume=True)  # once the other process is gone, the same resume runs (and releases its claim)
    claim_run_dir(run)
    release_run_dir(run)


def test_the_cli_prints_a_busy_run_directory_as_one_line(tmp_path: Path, capsys) -> None:
    from dreamarcade.baselines.ppo import main as ppo_main

    argv = ["train", "--env-id", "CartPole-v1", "--total-timesteps", "64", "--num-steps", "64"]
    argv += ["--num-minibatches", "1", "--vector-mode", "sync", "--run-dir", str(tmp_path)]
    with held_by_another_process(tmp_path) as pid:
        assert ppo_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"in use by another process (pid {pid})" in err


def test_a_run_directory_path_that_is_a_file_is_refused_as_one_line(tmp_path: Path, capsys) -> None:
    from dreamarcade.baselines.common import RunDirNotAFolderError, check_run_dir_free
    from dreamarcade.baselines.imitation import main as imitation_main

    a_file = tmp_path / "hyperparameters.json"
    a_file.write_text("{}")
    for run_dir, says in ((a_file, "is a file, not a folder"), (a_file / "run", "lies under")):
        for check in (check_run_dir_free, claim_run_dir):
            with pytest.raises(RunDirNotAFolderError, match=says):
                check(run_dir)
        for resume in ([], ["--resume"]):  # a FileExistsError traceback before
            argv = ["train", "--reward", "game", "--num-envs", "1", "--total-timesteps", "8", "--run-dir", str(run_dir)]
            assert imitation_main([*argv, *resume]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and says in err and "--run-dir" in err
    assert a_file.read_text() == "{}"


def test_every_trainer_claims_its_run_directory(tmp_path: Path) -> None:
    """DQN, JERK, the world-models steps and the embedding trainer refuse a directory another process holds."""
    import numpy as np

    from dreamarcade.baselines import world_models as W
    from dreamarcade.baselines.dqn import DQNConfig
    from dreamarcade.baselines.dqn import train as train_dqn
    from dreamarcade.baselines.jerk import JERKConfig, run_jerk
    from dreamarcade.envs.sonic import make_contest_env
    from dreamarcade.reward_models.demo_videos import write_av
    from dreamarcade.reward_models.embedding import EmbeddingConfig
    from dreamarcade.reward_models.train_embedding import TrainConfig, train_embedding

    frames = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    video = str(write_av(tmp_path / "v.mp4", iter(frames), 30))
    tiny = EmbeddingConfig(
        frame_size=20, crop_size=16, channels=(4, 8, 8), hidden=16, embed_dim=8, classifier_hidden=16, cmc_weight=0.0
    )
    dqn = DQNConfig(env_id="CartPole-v1", total_timesteps=50, learning_starts=10, progress=False, video_episodes=0)
    held = tmp_path / "held"
    held.mkdir()
    with held_by_another_process(held):
        with pytest.raises(RunDirBusyError):
            train_dqn(dataclasses.replace(dqn, run_dir=str(held), tensorboard=False))
        env = make_contest_env("Airstriker-Genesis", "Level1", scenario="scenario", max_episode_steps=50)
        try:
            with pytest.raises(RunDirBusyError):
                run_jerk(env, JERKConfig(total_timesteps=100), held, progress=False)
        finally:
            env.close()
        with pytest.raises(RunDirBusyError):
            train_embedding([video], held, tiny, TrainConfig(steps=2, batch_size=4), progress=False)
        argv = ["collect", "--env", "doom", "--episodes", "1", "--max-steps", "5", "--backend", "inline"]
        assert W.main([*argv, "--run-dir", str(held)]) == 2
    assert sorted(p.name for p in held.iterdir()) == [LOCK_FILE]  # not a file written by the refused runs


def _claimable_by_another_process(run_dir: Path) -> bool:
    code = (
        "import sys\n"
        "from dreamarcade.baselines.common import RunDirBusyError, claim_run_dir\n"
        "try:\n"
        f"    claim_run_dir({str(run_dir)!r})\n"
        "except RunDirBusyError:\n"
        "    sys.exit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_a_trainer_that_fails_or_refuses_its_input_releases_its_claim(tmp_path: Path) -> None:
    from dreamarcade.baselines import world_models as W
    from dreamarcade.baselines.dqn import main as dqn_main
    from dreamarcade.errors import CheckpointError

    run = tmp_path / "ppo"
    _ppo(run, resume=False)
    cfg = PPOConfig(total_timesteps=256, num_steps=64, num_minibatches=1, update_epochs=1, vector_mode="sync")
    with pytest.raises(CheckpointError):  # a resume whose network does not fit the checkpoint: refused in setup
        train_ppo([lambda: gym.make("CartPole-v1")], dataclasses.replace(cfg, mlp_hidden=8), run, resume=True,
                  progress=False, tensorboard=False)  # fmt: skip
    assert _claimable_by_another_process(run)
    dqn_dir = tmp_path / "dqn"
    assert dqn_main(["--env-id", "CartPole-v1", "--resume", "--run-dir", str(dqn_dir), "--no-progress"]) == 2
    assert not dqn_dir.exists()  # a mistyped --resume path was left behind, holding only the lock file
    assert _claimable_by_another_process(dqn_dir)  # (no checkpoint to resume)
    wm_dir = tmp_path / "wm"
    assert W.main(["train-vae", "--env", "doom", "--run-dir", str(wm_dir)]) == 2  # no collected frames
    assert _claimable_by_another_process(wm_dir)


def test_the_jerk_cli_prints_a_busy_run_directory_as_one_line(tmp_path: Path, capsys) -> None:
    from dreamarcade.baselines.jerk import main as jerk_main

    argv = ["--game", "Airstriker-Genesis", "--state", "Level1", "--scenario", "scenario", "--total-timesteps", "50"]
    with held_by_another_process(tmp_path) as pid:
        assert jerk_main([*argv, "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"in use by another process (pid {pid})" in err


def test_the_world_models_demo_claims_its_own_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    """Without --run-dir the demo runs in runs/dreams/demo, not in the doom pipeline's runs/dreams/doom."""
    from dreamarcade.baselines import world_models as W

    monkeypatch.chdir(tmp_path)
    demo = tmp_path / "runs" / "dreams" / "demo"
    demo.mkdir(parents=True)
    with held_by_another_process(demo):
        assert W.main(["demo"]) == 2
    assert "runs/dreams/demo is in use by another process" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "dreams" / "doom").exists()  # the pipeline's directory is not touched


def test_a_refused_imitation_resume_leaves_the_runs_config_alone(tmp_path: Path) -> None:
    from dreamarcade.baselines.imitation import ImitationConfig, _save_config
    from dreamarcade.baselines.imitation import train as train_imitation

    _save_config(tmp_path, ImitationConfig(num_envs=1))
    before = (tmp_path / "imitation_config.json").read_bytes()
    with held_by_another_process(tmp_path), pytest.raises(RunDirBusyError):
        train_imitation(ImitationConfig(num_envs=2), tmp_path, resume=True, progress=False)
    assert (tmp_path / "imitation_config.json").read_bytes() == before


def test_a_directory_another_thread_holds_is_refused(tmp_path: Path) -> None:
    import threading

    errors: list[BaseException] = []
    claim_run_dir(tmp_path)
    try:
        worker = threading.Thread(target=lambda: _try(lambda: claim_run_dir(tmp_path), errors))
        worker.start()
        worker.join()
    finally:
        release_run_dir(tmp_path)
    assert len(errors) == 1 and isinstance(errors[0], RunDirBusyError) and "another thread" in str(errors[0])


def _try(fn, errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:  # handed to the test's thread
        errors.append(exc)


def test_the_sonic_protocol_claims_the_directory_of_its_scores(tmp_path: Path) -> None:
    from dreamarcade.baselines.ppo_sonic import sonic_protocol

    cfg = PPOConfig(num_steps=64, num_minibatches=1, update_epochs=1)
    with held_by_another_process(tmp_path), pytest.raises(RunDirBusyError):
        sonic_protocol([("Airstriker-Genesis", "Level1")], cfg, tmp_path, timesteps=64, scenario="scenario",
                       progress=False)  # fmt: skip
    assert not (tmp_path / "scores.json").exists()
    assert _claimable_by_another_process(tmp_path)


def test_a_second_bundle_into_the_same_destination_is_refused_before_it_touches_anything(tmp_path: Path) -> None:
    import shutil

    from dreamarcade.baselines.world_models import WMConfig, step_bundle
    from dreamarcade.world_models.model import WorldModel, bundled_dir

    run, dest = tmp_path / "run", tmp_path / "assets" / "dream_doom"
    shutil.copytree(bundled_dir("doom"), run / "world_model")
    shutil.copytree(bundled_dir("doom"), dest)
    staging = dest.parent / ".dream_doom.bundling"  # a stopped bundle's leftover: the running one's, for all we know
    staging.mkdir()
    cfg = WMConfig(env="doom", run_dir=str(run))
    with held_by_another_process(dest, claim="dreamarcade.baselines.world_models:_claim_bundle_dest") as pid:
        with pytest.raises(RunDirBusyError, match=rf"another bundle into .*dream_doom is running \(pid {pid}\)"):
            step_bundle(cfg, dest=dest)
        assert staging.is_dir()  # not cleared under the other bundle
    step_bundle(cfg, dest=dest)  # the other has ended
    assert WorldModel.load(dest, env="doom").z_size == 64
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dream_doom"]  # no lock file beside or in the bundle
    assert not any(p.name == LOCK_FILE for p in dest.rglob("*"))
    with held_by_another_process(dest, claim="dreamarcade.baselines.world_models:_claim_bundle_dest"):
        pass  # the claim ended with the bundle: another process may bundle now


def test_a_filesystem_without_file_locks_warns_and_runs_unlocked(tmp_path: Path, monkeypatch) -> None:
    """NFS without lockd, Lustre without flock: flock fails with ENOLCK, and every run stopped on a raw OSError."""
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock files .*No locks available.*start one run per directory"):
        claim_run_dir(tmp_path / "run")
    release_run_dir(tmp_path / "run")  # nothing was held: nothing to release


def test_world_model_steps_called_from_python_claim_their_run_and_check_their_settings(tmp_path: Path) -> None:
    # the CLI claimed the run directory and checked the settings before calling a step; called from Python (as the
    # benchmarks do), step_evolve wrote a controller into a directory another process was training in, took a
    # misspelled controller as the full one, and saved an untrained controller for negative generations
    from dreamarcade.baselines.common import _claims
    from dreamarcade.baselines.world_models import WMConfig, step_evolve

    cfg = WMConfig(env="doom", run_dir=str(tmp_path / "run"), generations=1, popsize=4, rollouts=1, max_steps=20)
    with held_by_another_process(tmp_path / "run") as pid, pytest.raises(RunDirBusyError, match=rf"pid {pid}"):
        step_evolve(cfg)
    assert not (tmp_path / "run" / "controller").exists()
    for change, message in (
        (dict(controller="v_only"), "--controller must be one of 'full', 'v-only', got 'v_only'"),
        (dict(generations=-5), "--generations must be an integer >= 0, got -5"),
    ):
        with pytest.raises(ValueError, match=message):
            step_evolve(dataclasses.replace(cfg, **change))
    assert step_evolve(cfg).is_dir() and not _claims  # a step releases its claim when it returns
