"""Corrupt, cut-off or mismatched files are refused with an error naming the file and the fix, never a bare
KeyError/TypeError from deep inside a loader, and a refused resume changes nothing in the run directory."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamarcade.checkpoint import CheckpointFields, read_json_object, save_checkpoint
from dreamarcade.errors import CheckpointError


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_a_missing_config_field_or_tensor_names_the_file() -> None:
    config = CheckpointFields({"kind": "vae"}, "run/vae/config.json", "field")
    assert isinstance(config, dict) and config.get("z_size") is None and json.loads(json.dumps(config)) == config
    with pytest.raises(CheckpointError, match=r"'run/vae/config.json' has no field 'z_size'"):
        config["z_size"]
    with pytest.raises(CheckpointError, match=r"has no tensor 'params'"):
        CheckpointFields({}, "run/c/weights.safetensors", "tensor")["params"]


@pytest.mark.parametrize("text", ['{"levels": 3', "[1, 2]", "\udcff"])
def test_read_json_object_refuses_cut_off_json_and_other_types(tmp_path: Path, text: str) -> None:
    path = tmp_path / "scores.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError, match=rf"Corrupt '{path}'"):
        read_json_object(path)


def test_world_model_configs_with_a_missing_or_mistyped_field_are_checkpoint_errors(tmp_path: Path) -> None:
    from dreamarcade.world_models.model import WorldModel, bundled_dir

    def copy(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(bundled_dir("doom"), d)
        return d

    d = copy("no_mixtures")
    _edit_json(d / "mdnrnn" / "config.json", n_mixtures=None)
    with pytest.raises(CheckpointError, match=r"mdnrnn/config.json' has no field 'n_mixtures'"):
        WorldModel.load(d, env="doom")
    d = copy("text_size")
    _edit_json(d / "mdnrnn" / "config.json", hidden_size="512")
    with pytest.raises(CheckpointError, match=r"MDN-RNN checkpoint '.*' has a config it cannot be built from"):
        WorldModel.load(d, env="doom")
    d = copy("no_temperature")
    _edit_json(d / "world_model.json", temperature=None)
    with pytest.raises(CheckpointError, match=r"world_model.json' has no field 'temperature'"):
        WorldModel.load(d, env="doom")
    d = copy("list")
    (d / "world_model.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="expected a JSON object, got list"):
        WorldModel.load(d, env="doom")
    assert WorldModel.load(copy("intact"), env="doom").z_size == 64


def test_agent_checkpoints_with_a_missing_field_or_wrong_size_are_checkpoint_errors(tmp_path: Path) -> None:
    from dreamarcade.baselines.dqn import load_q_network
    from dreamarcade.baselines.ppo import load_agent
    from dreamarcade.world_models.controller import Controller

    save_checkpoint(tmp_path / "dqn", {"x": torch.zeros(1)}, {"kind": "dqn", "obs_shape": [4], "n_actions": 2})
    with pytest.raises(CheckpointError, match="has no field 'pixels'"):
        load_q_network(tmp_path / "dqn")
    save_checkpoint(tmp_path / "ppo", {"x": torch.zeros(1)}, {"kind": "ppo", "n_actions": 2})
    with pytest.raises(CheckpointError, match="has no field 'obs_space'"):
        load_agent(tmp_path / "ppo")
    c = {"kind": "controller", "feature_size": 3, "action_size": 1, "bias": True, "action_mode": "doom"}
    save_checkpoint(tmp_path / "c", {"params": torch.zeros(7)}, c)
    with pytest.raises(CheckpointError, match=r"Controller '.*' has a config it cannot be built from"):
        Controller.load(tmp_path / "c")
    save_checkpoint(tmp_path / "c", {"weights": torch.zeros(4)}, c)
    with pytest.raises(CheckpointError, match="has no tensor 'params'"):
        Controller.load(tmp_path / "c")


def test_replay_buffer_metadata_with_a_missing_field_is_a_checkpoint_error(tmp_path: Path) -> None:
    from dreamarcade.baselines.replay_buffer import ReplayBuffer

    def buffer() -> ReplayBuffer:
        return ReplayBuffer(16, (4,), frame_stack=1, num_envs=1, obs_dtype=np.float32)

    buffer().save(tmp_path / "rb")
    _edit_json(tmp_path / "rb" / "buffer.json", stored_frames=None)
    with pytest.raises(CheckpointError, match="buffer.json' has no field 'stored_frames'"):
        buffer().load(tmp_path / "rb")
    (tmp_path / "rb" / "buffer.json").write_text("[]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        buffer().load(tmp_path / "rb")
    # fields of the wrong shape or kind: numpy's broadcast error named no file, a bad RNG state was a KeyError
    for field, value in (("frames_written", [0, 0, 0]), ("rng", {"bit_generator": "PCG64"})):
        buffer().save(tmp_path / "rb2")
        _edit_json(tmp_path / "rb2" / "buffer.json", **{field: value})
        with pytest.raises(CheckpointError, match=r"buffer.json' has a config it cannot be built from"):
            buffer().load(tmp_path / "rb2")
        shutil.rmtree(tmp_path / "rb2")


def test_every_corrupt_byte_of_a_replay_buffer_array_is_a_checkpoint_error(tmp_path: Path) -> None:
    # a zero-byte .npy (what a power cut before the data reached the disk leaves) raised EOFError, and a flipped
    # header byte tokenize.TokenError, both as tracebacks through `dqn --resume`
    from dreamarcade.baselines.replay_buffer import ReplayBuffer

    def buffer() -> ReplayBuffer:
        return ReplayBuffer(16, (4,), frame_stack=1, num_envs=1, obs_dtype=np.float32)

    full = buffer()
    for t in range(5):
        full.add(np.full((1, 4), t, np.float32), np.full((1, 4), t + 1, np.float32), np.ones(1, np.int64),
                 np.ones(1, np.float32), np.zeros(1, bool), np.zeros(1, bool))  # fmt: skip
    full.save(tmp_path / "rb")
    path = tmp_path / "rb" / "actions.npy"
    good = path.read_bytes()
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"Corrupt replay buffer file .*actions.npy' \(EOFError.*Delete"):
        buffer().load(tmp_path / "rb")
    for i in range(len(good)):  # every byte flipped: loaded (data bytes) or refused, never another error
        bad = bytearray(good)
        bad[i] ^= 0xFF
        path.write_bytes(bytes(bad))
        with contextlib.suppress(CheckpointError):
            buffer().load(tmp_path / "rb")


def test_rollout_shards_missing_an_array_or_a_step_are_refused_by_name(tmp_path: Path) -> None:
    from dreamarcade.checkpoint import atomic_write_bytes
    from dreamarcade.world_models.rollouts import load_shard, npz_bytes

    n = 10
    series = {
        "mu": np.zeros((n, 64), np.float16), "logvar": np.zeros((n, 64), np.float16),
        "actions": np.zeros((n, 1), np.float32), "rewards": np.zeros(n, np.float32), "dones": np.zeros(n, bool),
        "episode_lengths": np.array([n]),
    }  # fmt: skip
    path = tmp_path / "series-s0-w0-00000.npz"
    atomic_write_bytes(path, npz_bytes(series).getvalue())
    assert len(load_shard(path)["mu"]) == n
    atomic_write_bytes(path, npz_bytes({k: v for k, v in series.items() if k != "logvar"}).getvalue())
    with pytest.raises(ValueError, match=r"Corrupt rollout shard '.*series-s0-w0-00000.npz': it lacks .*'logvar'"):
        load_shard(path)
    atomic_write_bytes(path, npz_bytes({**series, "rewards": np.zeros(n - 1, np.float32)}).getvalue())
    with pytest.raises(ValueError, match=r"\['rewards'\] do not have one entry per step \(10\)"):
        load_shard(path)
    frames = tmp_path / "frames-s0-w0-00000.npz"
    atomic_write_bytes(
        frames, npz_bytes({k: series[k] for k in ("actions", "rewards", "dones", "episode_lengths")}).getvalue()
    )
    with pytest.raises(ValueError, match=r"lacks the arrays \['frames'\]"):
        load_shard(frames)


def test_train_mdnrnn_refuses_series_encoded_for_another_env(tmp_path: Path) -> None:
    from dreamarcade.baselines import world_models as W

    n = 120
    (tmp_path / "series").mkdir()
    np.savez_compressed(
        tmp_path / "series" / "series-s0-w0-00000.npz", mu=np.zeros((n, 32), np.float16),
        logvar=np.zeros((n, 32), np.float16), actions=np.zeros((n, 3), np.float32), rewards=np.zeros(n, np.float32),
        dones=np.arange(n) % 60 == 59, episode_lengths=np.array([60, 60]),
    )  # fmt: skip
    cfg = W.WMConfig(env="doom", run_dir=str(tmp_path), rnn_seq_len=50, rnn_batch=4)
    with pytest.raises(ValueError, match=r"mu of shape \[32\] per step, but --env doom needs 64"):
        W.step_train_mdnrnn(cfg)
    assert not (tmp_path / "mdnrnn").exists()


def test_imitation_eval_of_a_run_with_a_broken_config_is_one_line(tmp_path: Path, capsys) -> None:
    from dreamarcade.baselines.imitation import main

    (tmp_path / "imitation_config.json").write_text('{"reward": "imitation"}')
    assert main(["eval", str(tmp_path), "--episodes", "1"]) == 2
    assert "imitation_config.json' has no field 'ppo'" in capsys.readouterr().err
    (tmp_path / "imitation_config.json").write_text('{"reward": "imitation", "ppo": {"no_such_setting": 1}}')
    assert main(["eval", str(tmp_path), "--episodes", "1"]) == 2
    assert "does not describe an imitation run" in capsys.readouterr().err


def test_a_world_model_training_state_of_another_model_is_a_checkpoint_error(tmp_path: Path) -> None:
    # a vae_train state saved with z=32 (carracing) resumed for z=64 (doom) was a raw load_state_dict traceback
    from dreamarcade.baselines.world_models import _resume_train_state, _save_train_state
    from dreamarcade.world_models.vae import ConvVAE

    small = ConvVAE(z_size=32)
    _save_train_state(tmp_path / "vae_train", "vae_train", small, torch.optim.Adam(small.parameters()), 7, 1.5)
    assert _resume_train_state(tmp_path / "vae_train", "vae_train", small, torch.optim.Adam(small.parameters()))[0] == 7
    big = ConvVAE(z_size=64)
    with pytest.raises(CheckpointError, match=r"does not fit this vae_train \(size mismatch for .*another --env"):
        _resume_train_state(tmp_path / "vae_train", "vae_train", big, torch.optim.Adam(big.parameters()))


def test_run_cli_reports_bad_input_in_one_line_and_keeps_other_tracebacks(capsys) -> None:
    from dreamarcade.errors import run_cli

    def missing_bundle() -> None:
        raise CheckpointError("no checkpoint in 'runs/imitation9/bundle8'")

    with pytest.raises(SystemExit) as exc:
        run_cli(missing_bundle)
    assert exc.value.code == 2 and capsys.readouterr().err == "error: no checkpoint in 'runs/imitation9/bundle8'\n"

    def bug() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):  # not bad input: its traceback stays
        run_cli(bug)


def test_a_benchmark_given_a_missing_run_folder_says_so_in_one_line(tmp_path) -> None:
    # seven benchmark scripts printed a traceback for a missing runs/... folder or bundle
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dreams_temperature.py"
    missing = tmp_path / "runs" / "world_model"
    args = ["--model-dir", str(missing), "--taus", "1.0", "--generations", "1", "--out", str(tmp_path / "out")]
    res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [
        f"error: '{missing}' is not a world model directory (no world_model.json). Pass the directory written by "
        "`python -m dreamarcade.baselines world_models train-mdnrnn` or a bundled one."
    ]
