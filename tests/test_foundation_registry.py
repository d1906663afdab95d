"""The catalog: registration, the list command, check_env on every installed id, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dreamarcade
from dreamarcade.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from dreamarcade.errors import CheckpointError, MissingExtraError, is_installed, require
from dreamarcade.registry import catalog

INSTALLED = [e for e in catalog() if e.installed]
# Ids whose observation Box is (-inf, inf) by design: latent world-model features (VAE z, MDN-RNN h) have no finite
# range, and EpisodeConcat appends the previous reward, which is unbounded.
UNBOUNDED_OBS = {
    "DreamDoom-v0",
    "DreamCarRacing-v0",
    "DoomTakeCoverFeatures-v0",
    "CarRacingFeatures-v0",
    "MetaMaze-v0",
    "MetaMazePixels-v0",
    "MetaBandit-v0",
}


def test_every_catalog_id_is_registered() -> None:
    ids = [e.id for e in catalog()]
    assert len(ids) == len(set(ids)), "duplicate ids in the catalog"
    for env_id in ids:
        assert env_id in gym.registry
        assert "/" not in env_id, "ids are registered without a namespace"


@pytest.mark.parametrize("entry", INSTALLED, ids=lambda e: e.id)
def test_check_env_every_installed_id(entry) -> None:
    from dreamarcade.errors import MissingROMError

    try:
        env = gym.make(entry.id)
    except MissingROMError as exc:  # the package is installed but the user has not imported the game
        pytest.skip(str(exc))
    try:
        with warnings.catch_warnings():
            # check_env (Gymnasium 1.x) reports most failures (out-of-space observations, wrong dtypes, non-bool
            # flags, ...) only as warnings: every warning is an error except the expected ones below.
            warnings.simplefilter("error")
            # The registered (wrapped) env is what users get, so it is the one checked on purpose.
            warnings.filterwarnings("ignore", message=".*is different from the unwrapped version.*")
            if entry.id in UNBOUNDED_OBS:
                warnings.filterwarnings("ignore", message=r".*A Box observation space (minimum|maximum) value is.*")
            # stable-retro allows one emulator per process; the render and close checks would open a second one
            one_emulator = entry.extra == "retro"
            check_env(env, skip_render_check=one_emulator, skip_close_check=one_emulator)
    finally:
        env.close()


def test_make_with_module_prefix_needs_no_import() -> None:
    code = (
        "import gymnasium as gym, sys\n"
        "env = gym.make('dreamarcade:DQNPong-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert 'dreamarcade' in sys.modules\n"
        "print(obs.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(4, 84, 84)" in out.stdout


def test_list_command_prints_catalog() -> None:
    out = subprocess.run([sys.executable, "-m", "dreamarcade", "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for entry in catalog():
        assert entry.id in out.stdout
    assert "installed" in out.stdout.splitlines()[0]
    # a retro id whose ROM is not imported said "yes", then failed at gym.make; Airstriker's ships with stable-retro
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[2:] if line.strip()}
    if is_installed("stable_retro"):
        assert rows["AirstrikerContest-v0"].split()[2] == "yes"
        from dreamarcade.envs.sonic import missing_roms

        if missing_roms(["SonicTheHedgehog-Genesis"]):
            assert "no ROM" in rows["SonicContest-v0"] and "python -m stable_retro.import" in out.stdout
    from dreamarcade.__main__ import main

    assert main([]) == 2  # no command: a usage error (it exited 0)


def test_public_wrappers_reexported() -> None:
    for name in (
        "GrayscaleResize",
        "FrameStack",
        "ClipRewardSign",
        "NoopReset",
        "MaxAndSkip",
        "EpisodicLife",
        "FireReset",
    ):
        assert name in dreamarcade.__all__
        assert hasattr(dreamarcade, name)


def test_unknown_id_suggests_the_right_one() -> None:
    with pytest.raises(gym.error.Error, match="DQNPong"):
        gym.make("DQNPongg-v0")


def test_unknown_game_suggests_names() -> None:
    from dreamarcade.envs.atari import make_dqn_env

    with pytest.raises(ValueError, match="Unknown Atari game 'Pongg'.*'pong'"):
        make_dqn_env("Pongg")
    with pytest.raises(TypeError, match="game must be a game's name such as 'Pong'"):  # was an AttributeError
        make_dqn_env(5)


@pytest.mark.parametrize("game", ["Pong", "pong", "ALE/Pong-v5", "PongNoFrameskip-v4"])
def test_game_name_forms(game: str) -> None:
    from dreamarcade.envs.atari import ale_game_id

    assert ale_game_id(game) == "pong"
    assert ale_game_id("SpaceInvaders") == "space_invaders"
    assert ale_game_id("MontezumaRevenge") == "montezuma_revenge"


def test_every_ale_id_gymnasium_registers_names_its_game() -> None:
    import ale_py

    from dreamarcade.envs.atari import ale_game_id

    gym.register_envs(ale_py)
    ids = [i for i in gym.registry if i.startswith("ALE/") or i.endswith("NoFrameskip-v4")]
    assert len(ids) > 100
    for env_id in ids:
        assert ale_game_id(env_id) in ale_py.roms.get_all_rom_ids(), env_id
    assert ale_game_id("UpNDown") == "up_n_down" and ale_game_id("TicTacToe3D") == "tic_tac_toe_3d"


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate an uninstalled package: Python treats a None entry in sys.modules as "cannot import".
    monkeypatch.setitem(sys.modules, "vizdoom", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'dreamarcade\[doom\]'"):
        require("vizdoom", "ViZDoom envs")
    monkeypatch.setitem(sys.modules, "ale_py", None)
    from dreamarcade.envs.atari import make_dqn_env

    with pytest.raises(MissingExtraError, match=r"dreamarcade\[atari\]"):
        make_dqn_env("Pong")


def test_an_installed_package_whose_import_fails_shows_its_own_error(tmp_path, monkeypatch) -> None:
    # a broken install raises a plain ImportError (no .name): it was reported as "not installed, pip install ..."
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text('raise ImportError("brokenpkg needs libfoo.so.3")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="needs libfoo.so.3") as exc:
        require("brokenpkg", "a demo")
    assert not isinstance(exc.value, MissingExtraError)


def test_graceful_stop_leaves_an_ignored_signal_ignored() -> None:
    # a shell's background job ignores SIGINT: Ctrl-C in the launching script stopped the run anyway
    import signal

    from dreamarcade.baselines.common import GracefulStop

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with GracefulStop():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_graceful_stop_reports_on_stderr_so_stdout_stays_the_result(capsys) -> None:
    # the notice went to stdout, ahead of the JSON result a trainer's CLI prints: a script reading it failed
    import os
    import signal
    import time

    from dreamarcade.baselines.common import GracefulStop

    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # Python runs the handler between bytecodes, soon after the signal arrives
            if stop.requested:
                break
            time.sleep(0.001)
    assert stop.requested
    out, err = capsys.readouterr()
    assert out == "" and "SIGTERM: stopping after this step" in err


def test_learning_curves_leave_the_process_matplotlib_backend_alone(tmp_path) -> None:
    # plot_learning_curve ran matplotlib.use("Agg") inside every trainer: a notebook lost its inline plots
    matplotlib = pytest.importorskip("matplotlib")
    from dreamarcade.baselines.common import plot_learning_curve

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        out = plot_learning_curve({"run": (np.arange(30), np.ones(30))}, tmp_path / "c.png", "t")
        assert matplotlib.get_backend() == "svg"
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


def test_wrong_action_is_rejected() -> None:
    env = gym.make("DQNPong-v0")
    env.reset(seed=0)
    expected = f"action 99 is not in the action space {env.action_space}"  # dreamarcade/wrappers/atari.py
    with pytest.raises(gym.error.InvalidAction, match=re.escape(expected)):
        env.step(99)


def test_corrupt_checkpoint_is_detected(tmp_path) -> None:
    import torch

    d = save_checkpoint(tmp_path / "ck", {"w": torch.arange(10.0)}, {"kind": "dqn"})
    tensors, cfg = load_checkpoint(d, kind="dqn")
    assert torch.equal(tensors["w"], torch.arange(10.0))
    with pytest.raises(CheckpointError, match="'dqn' checkpoint, not a 'vae'"):
        load_checkpoint(d, kind="vae")
    weights = d / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])  # truncated
    with pytest.raises(CheckpointError, match="does not match the hash"):
        load_checkpoint(d)
    atomic_write_text(d / "config.json", "{not json")
    with pytest.raises(CheckpointError, match=r"Corrupt '.*config.json'"):
        load_checkpoint(d)
    with pytest.raises(CheckpointError, match="No complete checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_checkpoint_read_while_a_save_renames_its_files_is_not_called_corrupt(tmp_path, monkeypatch) -> None:
    # An evaluation beside a training run: the weights are read, then a save replaces weights and config, then the
    # config is read. The old weights with the new config is a race, not corruption: the loader reads again.
    import torch

    import dreamarcade.checkpoint as ck

    d = save_checkpoint(tmp_path / "ck", {"w": torch.zeros(3)}, {"kind": "dqn", "step": 0})
    real_read_config, saves = ck._read_config, []

    def read_config_after_a_save(path):
        if not saves:
            saves.append(save_checkpoint(d, {"w": torch.ones(3)}, {"kind": "dqn", "step": 1}))
        return real_read_config(path)

    monkeypatch.setattr(ck, "_read_config", read_config_after_a_save)
    tensors, cfg = load_checkpoint(d, kind="dqn")
    assert saves and cfg["step"] == 1 and torch.equal(tensors["w"], torch.ones(3))


def test_checkpoint_whose_first_config_lands_while_it_is_read_is_read_again(tmp_path, monkeypatch) -> None:
    # the first save's config rename landing between the reader's two looks made it return the weights with {}
    import torch

    import dreamarcade.checkpoint as ck

    d = save_checkpoint(tmp_path / "ck", {"w": torch.ones(2)}, {"kind": "dqn", "step": 5})
    real_read, reads = ck._read_weights_and_config, []

    def first_read_between_the_renames(directory):
        blob, digest, config = real_read(directory)
        # the first read saw neither config.json (not renamed yet) nor config.json.next (renamed since)
        reads.append({} if not reads else config)
        return blob, digest, reads[-1]

    monkeypatch.setattr(ck, "_read_weights_and_config", first_read_between_the_renames)
    monkeypatch.setattr(ck.time, "sleep", lambda s: None)
    tensors, cfg = load_checkpoint(d, kind="dqn")  # was: the weights with {} (or "a 'None' checkpoint")
    assert reads[0] == {} and cfg["step"] == 5 and torch.equal(tensors["w"], torch.ones(2))
    monkeypatch.setattr(ck, "_read_weights_and_config", lambda directory: (*real_read(directory)[:2], {}))
    with pytest.raises(ck.CheckpointError, match="no config.json: its save was cut off"):
        load_checkpoint(d)  # a config that never appears: a clear error after the retries


@pytest.mark.parametrize("cut_at", [1, 2, 3])
def test_checkpoint_save_cut_off_at_any_rename_leaves_a_complete_checkpoint(tmp_path, monkeypatch, cut_at) -> None:
    """A save interrupted before its n-th rename (Ctrl-C, SIGTERM) loses neither the old nor a complete new one."""
    import os

    import torch

    import dreamarcade.checkpoint as ck

    d = save_checkpoint(tmp_path / "ck", {"w": torch.zeros(3)}, {"kind": "dqn", "step": 1})
    calls = {"n": 0}
    real_replace = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == cut_at:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(d, {"w": torch.ones(3)}, {"kind": "dqn", "step": 2})
    monkeypatch.setattr(ck.os, "replace", real_replace)
    assert ck.checkpoint_exists(d)
    tensors, cfg = load_checkpoint(d, kind="dqn")
    # renames 1 (pending config) and 2 (weights) not done: the old checkpoint; after the weights: the new one
    assert cfg["step"] == (2 if cut_at == 3 else 1)
    assert torch.equal(tensors["w"], torch.full((3,), float(cfg["step"] - 1)))
    # a save killed mid-write (SIGKILL: no cleanup ran) leaves its temporary files; the next save removes them
    (d / f".{ck.WEIGHTS_FILE}.x1y2.tmp").write_bytes(b"half of the weights")
    (d / f".{ck.PENDING_CONFIG_FILE}.x1y2.tmp").write_text("{")
    save_checkpoint(d, {"w": torch.full((3,), 2.0)}, {"kind": "dqn", "step": 3})  # the next save completes
    assert load_checkpoint(d)[1]["step"] == 3 and not (d / ck.PENDING_CONFIG_FILE).exists()
    assert not list(d.glob(".*.tmp"))
    # a new file gets the umask's mode (it was always 0644: readable by all under a umask of 077)
    old_mask = os.umask(0o077)
    try:
        save_checkpoint(tmp_path / "private", {"w": torch.zeros(1)}, {"kind": "dqn"})
    finally:
        os.umask(old_mask)
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "private").iterdir()} == {0o600}


def test_checkpoint_cut_off_twice_still_loads_the_last_complete_save(tmp_path, monkeypatch) -> None:
    """Save 2 is cut after its weights rename (its pending config alone matches them); save 3 is cut before its
    weights rename. Save 3 must not destroy the only config of the weights on disk."""
    import os

    import torch

    import dreamarcade.checkpoint as ck

    d = save_checkpoint(tmp_path / "ck", {"w": torch.zeros(3)}, {"kind": "dqn", "step": 1})
    real_replace = os.replace

    def cut_at(n: int):
        calls = {"n": 0}

        def replace(src, dst):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            real_replace(src, dst)

        return replace

    monkeypatch.setattr(ck.os, "replace", cut_at(3))  # save 2: pending config and weights renamed, config not
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(d, {"w": torch.ones(3)}, {"kind": "dqn", "step": 2})
    monkeypatch.setattr(ck.os, "replace", cut_at(2))  # save 3 finishes save 2, then is cut at its pending config
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(d, {"w": torch.full((3,), 2.0)}, {"kind": "dqn", "step": 3})
    monkeypatch.setattr(ck.os, "replace", real_replace)
    tensors, cfg = load_checkpoint(d, kind="dqn")
    assert cfg["step"] == 2 and torch.equal(tensors["w"], torch.ones(3))


def test_checkpoint_state_round_trip(tmp_path) -> None:
    import torch

    from dreamarcade.checkpoint import pack_state, unpack_state

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    tensors: dict = {}
    skeleton = pack_state({"opt": opt.state_dict(), "arr": np.arange(3), "t": (1, "a")}, "s", tensors)
    save_checkpoint(tmp_path, tensors, {"kind": "x", "state": skeleton})
    loaded, cfg = load_checkpoint(tmp_path)
    state = unpack_state(cfg["state"], loaded)
    assert state["t"] == (1, "a")
    np.testing.assert_array_equal(state["arr"], np.arange(3))
    scalar_tensors: dict = {}
    zero_d = unpack_state(pack_state(np.array(3.5), "z", scalar_tensors), scalar_tensors)
    assert zero_d.shape == () and float(zero_d) == 3.5  # a 0-d array came back with shape (1,)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(state["opt"])
    # every optimizer tensor came back with its values (load_state_dict alone accepts any values)
    for key, saved in opt.state_dict()["state"].items():
        for name, value in saved.items():
            torch.testing.assert_close(opt2.state_dict()["state"][key][name], value, atol=0, rtol=0)
    assert float(opt.state_dict()["state"][0]["exp_avg"].abs().sum()) > 0  # a state worth comparing
    assert json.dumps(cfg["state"])  # the skeleton is plain JSON


def _readme_block(marker: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    return text[text.index(start) + len(start) : text.index(end)].strip()


def test_readme_env_table_matches_the_registry() -> None:
    from dreamarcade.registry import markdown_catalog

    assert _readme_block("env-table") == markdown_catalog(), "regenerate with `python -m dreamarcade list --markdown`"


def test_ci_runs_the_readme_test_command() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = _readme_block("test-command").strip("`").removeprefix("bash").strip()
    assert "python -m pytest" in command and command.startswith("pip install torch==2.13.0")
    extracted = subprocess.run(
        [
            "bash",
            "-c",
            "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md | grep -v '^<!--' | grep -v '^```'",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == command
    assert "test-command" in (root / ".ci" / "run").read_text()


def test_the_readmes_python_examples_run() -> None:
    # the README's Python blocks are what users paste first; none was run by a test
    import re

    for extra in ("ale_py", "vizdoom", "stable_baselines3"):  # what the blocks use (the [all] extras)
        pytest.importorskip(extra)
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 4
    for block in blocks:
        namespace: dict = {}
        try:
            exec(compile(block, "README.md", "exec"), namespace)
        finally:
            for value in namespace.values():  # envs and vector envs the block made
                if isinstance(value, (gym.Env, gym.vector.VectorEnv)):
                    value.close()
