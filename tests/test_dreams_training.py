"""World Models training on small data generated from the real envs: V, M, C, storage, pipeline pieces."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from dreamarcade.checkpoint import load_checkpoint, save_checkpoint
from dreamarcade.errors import CheckpointError
from dreamarcade.world_models.collect import collect
from dreamarcade.world_models.controller import Controller
from dreamarcade.world_models.mdnrnn import MDNRNN, mdn_loss, sample_next
from dreamarcade.world_models.rollouts import (
    FrameStream,
    ShardWriter,
    encode_shards,
    list_shards,
    load_series,
    load_shard,
)
from dreamarcade.world_models.vae import ConvVAE, frames_to_tensor, vae_loss


@pytest.fixture(scope="module")
def doom_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("doom_frames")
    summary = collect("doom", d, episodes=3, workers=1, seed=0, min_length=0, max_steps=80, backend="inline")
    assert summary["episodes"] == 3 and summary["steps"] > 0
    return d


def test_shards_hold_whole_episodes(doom_data) -> None:
    shards = list_shards(doom_data)
    data = load_shard(shards[0])
    assert data["frames"].shape[1:] == (64, 64, 3) and data["frames"].dtype == np.uint8
    assert data["actions"].shape[1] == 1 and np.all(np.abs(data["actions"]) <= 1)
    assert int(data["episode_lengths"].sum()) == len(data["frames"]) == len(data["dones"])
    total = sum(len(b) for b in FrameStream(doom_data, batch_size=16, shards_in_memory=1))
    assert total == sum(int(load_shard(p)["episode_lengths"].sum()) for p in shards)


def test_collect_resumes_without_duplicating_episodes(tmp_path) -> None:
    from dreamarcade.world_models.collect import CollectJob, run_job

    def job(out, episodes):
        return CollectJob("doom", str(out), 0, episodes, seed=5, min_length=0, max_steps=25, episodes_per_shard=1)

    def episodes(out):
        parts = [load_shard(p) for p in list_shards(out)]
        acts = np.concatenate([p["actions"] for p in parts])
        lengths = np.concatenate([p["episode_lengths"] for p in parts])
        return np.split(acts, np.cumsum(lengths)[:-1])

    # a job killed after 2 of its 4 episodes were stored, then run again: it collects only the other 2
    assert run_job(job(tmp_path / "killed", 2))["episodes"] == 2
    res = run_job(job(tmp_path / "killed", 4))
    assert res["episodes"] == 4 and res["resumed"] == 2
    resumed = episodes(tmp_path / "killed")
    assert len(resumed) == 4 and len(list_shards(tmp_path / "killed")) == 4
    assert all(not np.array_equal(resumed[i], resumed[j]) for i in range(4) for j in range(i))  # no replays
    run_job(job(tmp_path / "straight", 4))
    straight = episodes(tmp_path / "straight")
    assert all(np.array_equal(a, b) for a, b in zip(resumed, straight))  # the same data as an uninterrupted job
    # collect() with the same settings on a finished folder: nothing new, the summary counts what is stored
    d = tmp_path / "collect"
    first = collect("doom", d, episodes=2, workers=1, seed=0, min_length=0, max_steps=25, backend="inline")
    again = collect("doom", d, episodes=2, workers=1, seed=0, min_length=0, max_steps=25, backend="inline")
    assert again["episodes"] == 2 and again["resumed"] == 2 and again["steps"] == first["steps"]
    assert sum(len(load_shard(p)["episode_lengths"]) for p in list_shards(d)) == 2
    assert json.loads((d / "collect-s0.json").read_text())["min_length"] == 0  # calibrate-done's cut
    # resuming a 2-worker collection with 1 worker would split the episodes differently: refused
    two = tmp_path / "two"
    collect("doom", two, episodes=2, workers=2, seed=3, min_length=0, max_steps=25, backend="inline")
    with pytest.raises(ValueError, match="by 2 workers.*--workers 2"):
        collect("doom", two, episodes=3, workers=1, seed=3, min_length=0, max_steps=25, backend="inline")
    # and with more workers, the first jobs would count as done and the new ones add episodes: refused too
    with pytest.raises(ValueError, match="by 2 workers.*--workers 2"):
        collect("doom", two, episodes=4, workers=4, seed=3, min_length=0, max_steps=25, backend="inline")
    assert sum(len(load_shard(p)["episode_lengths"]) for p in list_shards(two)) == 2
    # another env or step cap on the same folder and seed: the Doom episodes were counted as CarRacing ones
    with pytest.raises(ValueError, match=r"other settings \(env: 'doom' -> 'carracing'.*--frames-dir"):
        collect("carracing", d, episodes=2, workers=1, seed=0, min_length=0, max_steps=25, backend="inline")
    with pytest.raises(ValueError, match=r"max_steps: 25 -> 30"):
        collect("doom", d, episodes=3, workers=1, seed=0, min_length=0, max_steps=30, backend="inline")
    assert sum(len(load_shard(p)["episode_lengths"]) for p in list_shards(d)) == 2


def test_collect_in_worker_processes_shows_its_progress_in_episodes(tmp_path, capsys) -> None:
    from dreamarcade.world_models.collect import CollectJob, run_job

    # the bar counted jobs: with one job per worker, each collecting many episodes, it sat at 0/2 until the end
    run_job(CollectJob("doom", str(tmp_path), 0, 1, seed=0, min_length=0, max_steps=15))  # one stored before
    summary = collect("doom", tmp_path, episodes=5, workers=2, seed=0, min_length=0, max_steps=15, progress=True)
    assert summary["episodes"] == 5 and summary["resumed"] == 1
    bar = capsys.readouterr().err
    assert "1/5 [" in bar and "5/5 [" in bar and "episode" in bar


def test_killed_collection_leaves_no_worker_writing(tmp_path) -> None:
    """SIGTERM to `world_models collect` (a scheduler's kill) stops its worker processes too: they used to be
    orphaned and go on collecting for hours."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "frames"
    cmd = [sys.executable, "-m", "dreamarcade.baselines", "world_models", "collect", "--env", "doom",
           "--run-dir", str(tmp_path), "--episodes", "100000", "--workers", "1", "--max-steps", "30"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list_shards(out) and time.time() < deadline:
        time.sleep(0.2)
    assert list_shards(out), "the collection wrote nothing"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    def stored() -> tuple[int, float]:
        shards = list_shards(out)
        return len(shards), max(p.stat().st_mtime for p in shards)

    time.sleep(3)  # the worker finishes its current 30-step episode, flushes and exits
    before = stored()
    time.sleep(3)
    assert stored() == before  # nobody writes any more
    for p in list_shards(out):
        load_shard(p)  # and what was written is whole


def test_corrupt_shard_is_reported(tmp_path, doom_data) -> None:
    from dreamarcade.world_models.collect import _stored

    bad = tmp_path / "frames-w0-00000.npz"
    bad.write_bytes(b"not an npz file")
    with pytest.raises(ValueError, match="Corrupt rollout shard"):
        load_shard(bad)
    good = list_shards(doom_data)[0].read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # cut off: numpy raises zipfile.BadZipFile, named here with the fix
    for read in (lambda: load_shard(bad), lambda: _stored(str(tmp_path), "frames")):
        with pytest.raises(ValueError, match="Corrupt rollout shard .*Delete it and collect again"):
            read()
    # one flipped byte anywhere in a small shard: it loads (a byte numpy never reads) or is that ValueError; some
    # bytes raised zlib.error, zipfile's NotImplementedError or tokenize.TokenError instead
    w = ShardWriter(tmp_path / "flip", prefix="frames-s0-w0", episodes_per_shard=1)
    n = 20
    w.add_episode((np.arange(n * 64 * 64 * 3) % 7).astype(np.uint8).reshape(n, 64, 64, 3), np.zeros((n, 1)),
                  np.ones(n), np.arange(n) == n - 1)  # fmt: skip
    w.close()
    path = list_shards(tmp_path / "flip")[0]
    raw = path.read_bytes()
    refused = 0
    for offset in range(len(raw)):
        path.write_bytes(raw[:offset] + bytes([raw[offset] ^ 0xFF]) + raw[offset + 1 :])
        try:
            load_shard(path)
        except ValueError as exc:
            assert "Corrupt rollout shard" in str(exc)
            refused += 1
    assert refused > len(raw) // 2


def test_shard_writer_never_overwrites_a_shard_after_one_is_deleted(tmp_path) -> None:
    # load_shard's advice for a corrupt shard is to delete it and collect again: the next shard must append
    def write(lengths: tuple[int, ...], prefix: str = "frames-w0") -> None:
        w = ShardWriter(tmp_path, prefix=prefix, episodes_per_shard=1)
        for n in lengths:
            w.add_episode(np.zeros((n, 64, 64, 3), np.uint8), np.zeros((n, 1)), np.ones(n), np.arange(n) == n - 1)
        w.close()

    write((3, 4, 5))
    write((2,) * 6, prefix="frames-w0-x")  # another writer whose prefix extends this one's: not counted
    (tmp_path / "frames-w0-00001.npz").unlink()
    write((7,))
    lengths = {p.name: load_shard(p)["episode_lengths"].tolist() for p in list_shards(tmp_path)}
    ours = {k: v for k, v in lengths.items() if not k.startswith("frames-w0-x")}
    assert ours == {"frames-w0-00000.npz": [3], "frames-w0-00002.npz": [5], "frames-w0-00003.npz": [7]}


def test_vae_loss_falls_and_round_trips(doom_data, tmp_path) -> None:
    torch.manual_seed(0)
    frames = np.concatenate([load_shard(p)["frames"] for p in list_shards(doom_data)])[:64]
    x = frames_to_tensor(frames)
    vae = ConvVAE(z_size=64)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        recon, mu, logvar = vae(x)
        loss, r_loss, kl = vae_loss(x, recon, mu, logvar)
        assert kl.item() >= 0.5 * 64 - 1e-4  # free bits: KL is floored at kl_tolerance * z
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(r_loss.item())
    assert losses[-1] < 0.7 * losses[0]
    vae.eval()
    vae.save(tmp_path / "vae")
    again = ConvVAE.load(tmp_path / "vae", z_size=64)
    assert torch.allclose(again.encode(x[:4])[0], vae.encode(x[:4])[0])
    with pytest.raises(CheckpointError, match="latent size"):
        ConvVAE.load(tmp_path / "vae", z_size=32)
    # encode the shards into series for M
    out = encode_shards(doom_data, tmp_path / "series", vae.encode_frames)
    series = load_series(tmp_path / "series")
    assert len(out) == len(list_shards(doom_data)) and series["mu"].shape[1] == 64


def test_frames_to_tensor_leaves_the_input_alone() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    expect = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(frames_to_tensor(frames), expect)
    for x in (frames.astype(np.float32), torch.as_tensor(frames).float()):  # float32: viewed, not copied, by torch
        before = x.copy() if isinstance(x, np.ndarray) else x.clone()
        assert torch.equal(frames_to_tensor(x), expect)
        assert (np.array_equal if isinstance(x, np.ndarray) else torch.equal)(x, before)


def test_mdn_loss_is_the_mixture_likelihood_of_the_steps_within_an_episode() -> None:
    """The GMM term against torch.distributions' mixture log-likelihood, averaged over latent dimensions and over the
    steps whose next latent is of the same episode (a dropped log-sigma, or the restart mask ignored, trained on)."""
    D = torch.distributions
    torch.manual_seed(0)
    rnn = MDNRNN(z_size=3, action_size=1, hidden_size=8, n_mixtures=2, predict_done=True)
    out = torch.randn(2, 5, rnn.out_size)
    z_next = torch.randn(2, 5, 3)
    z_mask = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 1, 0]], dtype=torch.bool)
    p = rnn.split(out)
    mixture = D.MixtureSameFamily(D.Categorical(logits=p["logit_pi"]), D.Normal(p["mu"], p["logsigma"].exp()))
    nll = -mixture.log_prob(z_next).mean(-1)  # (2, 5): per step, mean over the latent dimensions
    expected = nll[z_mask].mean()
    got = mdn_loss(rnn, out, z_next, z_mask)["gmm"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    across = z_next.clone()
    across[~z_mask] += 100.0  # targets across a restart: not in the loss
    torch.testing.assert_close(mdn_loss(rnn, out, across, z_mask)["gmm"], got)


def test_mdnrnn_loss_falls_with_restarts_and_round_trips(doom_data, tmp_path) -> None:
    from dreamarcade.baselines.world_models import _stream_batches

    torch.manual_seed(0)
    vae = ConvVAE(z_size=64).eval()
    encode_shards(doom_data, tmp_path / "series", vae.encode_frames)
    series = load_series(tmp_path / "series")
    rnn = MDNRNN(64, 1, 128, predict_done=True)
    opt = torch.optim.Adam(rnn.parameters(), lr=3e-3)
    batch = next(_stream_batches(series, 20, 64, np.random.default_rng(0)))
    assert batch["restart"].sum() > 0  # windows span episode boundaries (episodes are concatenated)
    z = torch.as_tensor(batch["mu"])
    restart = torch.as_tensor(batch["restart"])
    losses = []
    for _ in range(25):
        out = rnn(z[:, :-1], torch.as_tensor(batch["actions"]), restart[:, :-1])
        parts = mdn_loss(rnn, out, z[:, 1:], restart[:, 1:] < 0.5, done=torch.as_tensor(batch["dones"]))
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
        losses.append(parts["total"].item())
    assert losses[-1] < losses[0] - 0.1
    # zeroing the state at a restart makes what follows independent of what came before
    a = torch.zeros(1, 6, 1)
    r = torch.tensor([[0, 0, 0, 1, 0, 0]], dtype=torch.float32)
    z1, z2 = torch.randn(1, 6, 64), torch.randn(1, 6, 64)
    z2[:, 3:] = z1[:, 3:]
    assert torch.allclose(rnn(z1, a, r)[:, 3:], rnn(z2, a, r)[:, 3:], atol=1e-6)
    # the batched sequence pass equals stepping the cell
    out_seq = rnn(z1, a, r)
    state = rnn.initial_state(1)
    for t in range(6):
        o, state = rnn.step(z1[:, t], a[:, t], state, restart=r[:, t])
        assert torch.allclose(o, out_seq[:, t], atol=1e-5)
    rnn.save(tmp_path / "m")
    again = MDNRNN.load(tmp_path / "m", z_size=64, action_size=1)
    assert torch.allclose(again(z1, a, r), out_seq, atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(rnn, out_seq[:, 0], 0.0)


def test_mdnrnn_training_on_too_little_data_fails_clearly(tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, _stream_batches, step_train_mdnrnn

    def series(lengths):
        n = sum(lengths)
        return {"mu": np.zeros((n, 64), np.float16), "logvar": np.zeros((n, 64), np.float16),
                "actions": np.zeros((n, 1), np.float32), "rewards": np.zeros(n, np.float32),
                "dones": np.zeros(n, bool), "episode_lengths": np.array(lengths, np.int64)}  # fmt: skip

    for seed in range(8):  # exactly one 21-step window fits: every pass yields it, whatever the random offset
        batches = list(_stream_batches(series([21]), 20, 4, np.random.default_rng(seed)))
        assert len(batches) == 1 and batches[0]["mu"].shape == (1, 21, 64)
    with pytest.raises(ValueError, match="no window fits"):
        next(_stream_batches(series([20]), 20, 4, np.random.default_rng(0)))
    (tmp_path / "series").mkdir()
    np.savez_compressed(tmp_path / "series" / "series-s0-w0-00000.npz", **series([6, 5, 4]))
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), rnn_seq_len=20)
    with pytest.raises(ValueError, match=r"only 15 steps \(3 episodes\).*lower --rnn-seq-len"):
        step_train_mdnrnn(cfg)  # used to loop forever


def _write_random_series(directory) -> None:
    """Two 60-step Doom episodes of random latents and actions, as train-vae would encode them."""
    rng = np.random.default_rng(0)
    n = 120
    directory.mkdir()
    np.savez_compressed(
        directory / "series-s0-w0-00000.npz", mu=rng.normal(size=(n, 64)).astype(np.float16),
        logvar=np.full((n, 64), -2, np.float16), actions=rng.uniform(-1, 1, (n, 1)).astype(np.float32),
        rewards=np.ones(n, np.float32), dones=np.arange(n) % 60 == 59, episode_lengths=np.array([60, 60]),
    )  # fmt: skip


def test_mdnrnn_action_map_is_kept_by_resume_and_warm_start(tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn
    from dreamarcade.world_models.vae import ConvVAE

    _write_random_series(tmp_path / "series")
    ConvVAE(64).save(tmp_path / "vae")
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), rnn_epochs=1, rnn_seq_len=20, rnn_batch=2,
                   rnn_action_map="takecover")  # fmt: skip
    step_train_mdnrnn(cfg)
    assert MDNRNN.load(tmp_path / "mdnrnn").action_map == "takecover"
    assert MDNRNN.load(tmp_path / "world_model" / "mdnrnn").action_map == "takecover"
    assert load_checkpoint(tmp_path / "mdnrnn_train", kind="mdnrnn_train")[1]["action_map"] == "takecover"
    other = dataclasses.replace(cfg, rnn_epochs=2, rnn_action_map="none")
    with pytest.raises(ValueError, match="--rnn-action-map takecover"):
        step_train_mdnrnn(other)  # continuing it with another map would silently change what M reads
    step_train_mdnrnn(other, "_iter1", warm_start=tmp_path / "mdnrnn")  # the iterative procedure continues M
    assert MDNRNN.load(tmp_path / "mdnrnn").action_map == "takecover"


def test_calibrate_done_targets_the_random_episodes_of_frames_dir(tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, calibration_target

    n = 240
    for name, lengths in (("series_b", [100, 140]), ("series_iter1", [200, 40])):
        (tmp_path / name).mkdir()
        np.savez_compressed(
            tmp_path / name / "series-s0-w0-00000.npz", mu=np.zeros((n, 64), np.float16),
            logvar=np.zeros((n, 64), np.float16), actions=np.zeros((n, 1), np.float32),
            rewards=np.ones(n, np.float32), dones=np.isin(np.arange(n), np.cumsum(lengths) - 1),
            episode_lengths=np.array(lengths),
        )  # fmt: skip
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), frames_dir="frames_b")
    # series_b only: the controller's series_iter1 is not random play; with no collect record, collect's default cut
    assert calibration_target(cfg) == (120.0, 100)
    assert calibration_target(dataclasses.replace(cfg, calibrate_target=300.0)) == (300.0, 0)  # a mean over all
    (tmp_path / "frames_b").mkdir()  # the cut collect recorded (0: --max-steps below 100 kept every episode)
    (tmp_path / "frames_b" / "collect-s0.json").write_text('{"seed": 0, "workers": 1, "episodes": 2, "min_length": 0}')
    assert calibration_target(cfg) == (120.0, 0)
    (tmp_path / "frames_b" / "collect-s1.json").write_text('{"seed": 1, "workers": 1, "episodes": 2}')  # older: 100
    with pytest.raises(ValueError, match=r"different lengths \[0, 100\].*--calibrate-target"):
        calibration_target(cfg)
    with pytest.raises(FileNotFoundError, match="--calibrate-target"):  # the default frames/ was never encoded
        calibration_target(dataclasses.replace(cfg, frames_dir="frames"))


def test_calibrate_done_caps_the_dreams_where_the_random_collection_was_capped(tmp_path) -> None:
    """A collection with --max-steps N has a mean length of at most N: the dreams it is compared with end at N too
    (they ran to the model's 2100 steps, so the calibration made the dream far too deadly)."""
    from dreamarcade.baselines.world_models import WMConfig, calibration_cap

    cfg = WMConfig(env="doom", run_dir=str(tmp_path), frames_dir="frames")
    assert calibration_cap(cfg) == 0  # nothing recorded: the model's own cap
    assert calibration_cap(dataclasses.replace(cfg, max_steps=300)) == 300  # nothing recorded: --max-steps
    (tmp_path / "frames").mkdir()
    record = {"seed": 0, "workers": 1, "episodes": 2, "min_length": 100}
    (tmp_path / "frames" / "collect-s0.json").write_text(json.dumps({**record, "max_steps": 150}))
    assert calibration_cap(cfg) == 150
    assert calibration_cap(dataclasses.replace(cfg, max_steps=150)) == 150
    with pytest.raises(ValueError, match="--max-steps 300, but the random episodes .* were collected with 150"):
        calibration_cap(dataclasses.replace(cfg, max_steps=300))
    assert calibration_cap(dataclasses.replace(cfg, max_steps=300, calibrate_target=200.0)) == 300
    (tmp_path / "frames" / "collect-s1.json").write_text(json.dumps({**record, "seed": 1, "max_steps": None}))
    with pytest.raises(ValueError, match=r"different lengths \['the env own', 150\].*--calibrate-target"):
        calibration_cap(cfg)


def test_bundle_swaps_in_a_complete_bundle_and_a_failed_one_leaves_the_old_whole(tmp_path, monkeypatch) -> None:
    import shutil

    from dreamarcade.baselines.world_models import WMConfig, step_bundle
    from dreamarcade.world_models.model import WorldModel, bundled_dir

    run, dest = tmp_path / "run", tmp_path / "assets" / "dream_doom"
    shutil.copytree(bundled_dir("doom"), run / "world_model")
    shutil.copytree(bundled_dir("doom"), dest)
    (dest / "MODEL_CARD.md").write_text("card")
    (dest / "mdnrnn" / "stray.txt").write_text("from the old bundle")
    cfg = WMConfig(env="doom", run_dir=str(run))
    monkeypatch.setattr(WorldModel, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        step_bundle(cfg, dest=dest)
    assert (dest / "mdnrnn" / "stray.txt").is_file() and WorldModel.load(dest, env="doom").z_size == 64  # untouched
    monkeypatch.undo()
    step_bundle(cfg, dest=dest)  # the stopped bundle's staging folder is cleared first
    assert WorldModel.load(dest, env="doom").z_size == 64 and (dest / "MODEL_CARD.md").read_text() == "card"
    assert not (dest / "mdnrnn" / "stray.txt").exists() and not (dest / "controller").exists()  # run had none
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dream_doom"]  # no staging or old copy left
    # stopped between the swap's two renames (the old bundle moved aside, the new one not yet in place): the next
    # bundle puts the old one back before clearing leftovers, so the files only it had (the card) survive
    import os

    real_replace = os.replace

    def stopped(src, dst):
        if str(src).endswith(".dream_doom.bundling"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt):
        step_bundle(cfg, dest=dest)
    monkeypatch.undo()
    assert not dest.exists()
    step_bundle(cfg, dest=dest)
    assert (dest / "MODEL_CARD.md").read_text() == "card" and WorldModel.load(dest, env="doom").z_size == 64


def test_mdnrnn_training_without_a_v_is_refused_before_it_starts(tmp_path) -> None:
    # it trained M to the end, then failed to load V, and the next run (with V) threw that M away as "another V's"
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn

    _write_random_series(tmp_path / "series")
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), rnn_seq_len=20, rnn_batch=2, rnn_epochs=1.0)
    with pytest.raises(FileNotFoundError, match=r"No complete checkpoint in '.*vae'.*train-vae --env doom"):
        step_train_mdnrnn(cfg)
    assert not (tmp_path / "mdnrnn_train").exists() and not (tmp_path / "logs_mdnrnn").exists()


def test_bundle_refuses_an_eval_controller_that_is_not_there(tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, step_bundle
    from dreamarcade.world_models.model import bundled_dir

    run, dest = tmp_path / "run", tmp_path / "assets" / "dream_doom"
    shutil.copytree(bundled_dir("doom"), run / "world_model")
    shutil.copytree(bundled_dir("doom"), dest)
    before = sorted(p.name for p in dest.iterdir())
    assert "controller" in before
    cfg = WMConfig(env="doom", run_dir=str(run), eval_controller=str(run / "controler_typo"))
    with pytest.raises(CheckpointError, match="--eval-controller '.*controler_typo' holds no complete controller"):
        step_bundle(cfg, dest=dest)  # it bundled no controller and deleted the shipped one
    assert sorted(p.name for p in dest.iterdir()) == before


def test_mdnrnn_training_state_of_an_earlier_v_is_not_continued(tmp_path, capsys) -> None:
    # train-vae trains V again and re-encodes the series; M's training state learned the old V's latents
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn

    _write_random_series(tmp_path / "series")
    torch.manual_seed(0)
    ConvVAE(64).save(tmp_path / "vae")
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), rnn_epochs=1, rnn_seq_len=20, rnn_batch=2)
    step_train_mdnrnn(cfg)
    first = load_checkpoint(tmp_path / "mdnrnn")[0]
    step_train_mdnrnn(cfg)  # same V, all steps done: resumed, nothing more to train
    assert all(torch.equal(first[k], v) for k, v in load_checkpoint(tmp_path / "mdnrnn")[0].items())
    ConvVAE(64).save(tmp_path / "vae")  # another V (another init): the old training state must not be resumed
    capsys.readouterr()
    step_train_mdnrnn(cfg)
    assert "V changed since" in capsys.readouterr().out
    meta = load_checkpoint(tmp_path / "mdnrnn_train", kind="mdnrnn_train")[1]
    assert meta["vae_sha256"] == load_checkpoint(tmp_path / "vae")[1]["_weights_sha256"]  # trained again, for this V
    # from step 0 with the same seed on the same latents (not re-encoded here): the same M, as a fresh run gives it
    assert all(torch.equal(first[k], v) for k, v in load_checkpoint(tmp_path / "mdnrnn")[0].items())


def test_controller_shapes_and_round_trip(tmp_path) -> None:
    doom = Controller.for_env("doom", 1088)
    car = Controller.for_env("carracing", 32 + 256)
    assert doom.num_params == 1088 and car.num_params == 867  # the paper's counts
    params = np.random.default_rng(0).normal(size=(5, 867)).astype(np.float32)
    acts = car.act_batch(torch.as_tensor(params), torch.randn(5, 3, 288))
    assert acts.shape == (5, 3, 3)
    assert float(acts[..., 1].min()) >= 0 and float(acts[..., 2].min()) >= 0  # gas, brake in [0, 1]
    car.set_flat(params[0])
    car.save(tmp_path / "c")
    again = Controller.load(tmp_path / "c", feature_size=288)
    assert np.array_equal(again.params, params[0])
    with pytest.raises(CheckpointError, match="features"):
        Controller.load(tmp_path / "c", feature_size=1088)
    with pytest.raises(ValueError, match="parameters"):
        car.set_flat(np.zeros(10))
    save_checkpoint(tmp_path / "wrongkind", {"w": torch.zeros(1)}, {"kind": "vae"})
    with pytest.raises(CheckpointError, match="controller"):
        Controller.load(tmp_path / "wrongkind")


def test_evolve_resume_drops_unsaved_generations_and_restarts_for_another_controller(tmp_path, monkeypatch) -> None:
    from dreamarcade.baselines import world_models as W

    cfg = W.WMConfig(env="doom", run_dir=str(tmp_path), popsize=4, rollouts=1, generations=3, eval_every=0,
                     max_steps=20)  # fmt: skip
    real_save = W.save_checkpoint

    def killed_before_saving_generation_2(directory, tensors, meta):
        if meta.get("kind") == "cma_state" and meta["generation"] == 2:
            raise KeyboardInterrupt
        return real_save(directory, tensors, meta)

    monkeypatch.setattr(W, "save_checkpoint", killed_before_saving_generation_2)
    with pytest.raises(KeyboardInterrupt):
        W.step_evolve(cfg)
    monkeypatch.undo()
    W.step_evolve(cfg)  # resumes at generation 1: generation 2's logged row is replayed, not doubled

    def logged() -> list[float]:
        with open(tmp_path / "logs_controller" / "metrics.csv", newline="") as f:
            return [float(r["step"]) for r in csv.DictReader(f)]

    assert logged() == [1.0, 2.0, 3.0]
    # the saved state is a 1088-parameter (full) controller's: a V-only one starts over instead of failing at the end
    out = W.step_evolve(dataclasses.replace(cfg, controller="v-only", generations=2))
    assert Controller.load(out, feature_size=64).num_params == 64  # V-only: z (64) -> 1 action, no bias
    assert logged() == [1.0, 2.0]


def test_a_stopped_evolve_saves_its_generation_and_the_same_command_continues(tmp_path, monkeypatch) -> None:
    # Ctrl-C / SIGTERM lost the generation in progress, and a pipeline could not tell a stop from the end
    import signal

    from crash_helpers import sigterm_at_call

    from dreamarcade.baselines import world_models as W

    cfg = W.WMConfig(env="doom", run_dir=str(tmp_path), popsize=4, rollouts=1, generations=4, eval_every=0,
                     max_steps=20)  # fmt: skip
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(W, "dream_fitness", sigterm_at_call(W.dream_fitness, 2))  # during generation 2
    with pytest.raises(W.StageStopped, match=r"evolve stopped after generation 2/4"):
        W.step_evolve(cfg)
    assert signal.getsignal(signal.SIGTERM) is before
    assert load_checkpoint(tmp_path / "controller_cma", kind="cma_state")[1]["generation"] == 2
    assert Controller.load(tmp_path / "controller").num_params == 1088  # the mean so far, to evaluate
    monkeypatch.undo()
    W.step_evolve(cfg)
    with open(tmp_path / "logs_controller" / "metrics.csv", newline="") as f:
        assert [float(r["step"]) for r in csv.DictReader(f)] == [1.0, 2.0, 3.0, 4.0]


def test_copy_world_model_keeps_its_own_copy_and_refuses_another_models(tmp_path) -> None:
    # the temperature and CarRacing benchmarks reused an earlier run's copy whatever --model-dir said
    from dreamarcade.baselines.world_models import copy_world_model
    from dreamarcade.world_models.model import bundled_dir

    dest = tmp_path / "run" / "world_model"
    assert copy_world_model(bundled_dir("doom"), dest) and (dest / "world_model.json").is_file()
    assert not (tmp_path / "run" / "world_model.partial").exists()
    assert not copy_world_model(bundled_dir("doom"), dest)  # the same model: kept (a rerun goes on in it)
    other = tmp_path / "other"
    shutil.copytree(bundled_dir("doom"), other)
    meta = json.loads((other / "world_model.json").read_text())
    (other / "world_model.json").write_text(json.dumps({**meta, "max_steps": 50}))  # same V and M, other cap
    with pytest.raises(CheckpointError, match=r"holds another world model than .*other.*delete"):
        copy_world_model(other, dest)
    with pytest.raises(CheckpointError, match="another world model"):
        copy_world_model(bundled_dir("carracing"), dest)
    # a mistyped --model-dir was a bare FileNotFoundError of the copy, and left nothing to tell what was wrong
    with pytest.raises(CheckpointError, match=r"'.*no_such_run' is not a world model directory .*train-mdnrnn"):
        copy_world_model(tmp_path / "no_such_run", tmp_path / "run2" / "world_model")
    assert not (tmp_path / "run2").exists()


def test_cli_prints_bad_input_as_one_line_but_keeps_the_traceback_of_a_bug(tmp_path, monkeypatch, capsys) -> None:
    """Exit 2 and one line for what the step checks first; an error from the work itself (here the dream's fitness,
    mid-evolution) keeps its traceback: the CLI used to print every ValueError of a whole step as a usage error."""
    from dreamarcade.baselines import world_models as W

    assert W.main(["train-vae", "--env", "doom", "--run-dir", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("error: No frame shards under")
    argv = ["--env", "doom", "--run-dir", str(tmp_path / "run"), "--popsize", "4", "--rollouts", "1"]
    for bad, message in (
        (["--rollouts", "0"], "--rollouts must be an integer >= 1"),
        (["--max-steps", "-5"], "--max-steps must"),
        # tracebacks before (division by zero, torch, cma), some after logs_controller/ was created
        (["--vae-batch", "0"], "--vae-batch must be an integer >= 1"),
        (["--rnn-seq-len", "0"], "--rnn-seq-len must be an integer >= 1"),
        (["--threads", "0"], "--threads must be an integer >= 1"),
        (["--popsize", "1"], "--popsize must be an integer >= 3"),
        (["--popsize", "2"], "--popsize must be an integer >= 3 (pycma fails"),  # a traceback in generation 2
        (["--temperature", "-1"], "--temperature must be a finite number in [0.0, inf) (0: the env's default)"),
        (["--sigma-init", "0"], "--sigma-init must be a finite number in (0.0, inf) (CMA-ES's initial step size)"),
        # floats no step could use: NaN weights after hours (a learning rate), or a refusal deep in a later step
        (["--vae-lr", "nan"], "--vae-lr must be a finite number in (0.0, inf), got nan"),
        (["--rnn-lr-decay", "1.5"], "--rnn-lr-decay must be a finite number in (0.0, 1.0]"),
        (["--calibrate-target", "nan"], "--calibrate-target must be a finite number in [0.0, inf)"),
        (["--explore", "2"], "--explore must be a finite number in [0.0, 1.0] (a probability)"),
    ):
        assert W.main(["evolve", *argv, *bad]) == 2  # counts no step can run with: refused before any step starts
        assert capsys.readouterr().err.startswith(f"error: {message}")
        assert not (tmp_path / "run").exists()
    # a controller that does not fit the world model it plays with: collect() refuses it before any job starts
    small = tmp_path / "small_controller"
    Controller.for_env("doom", feature_size=32).save(small)
    assert W.main(["collect", *argv, "--episodes", "1", "--backend", "inline", "--collect-controller", str(small)]) == 2
    assert capsys.readouterr().err.startswith("error: Controller reads 32 features")
    # calibrate-done checks the model before the bisection: CarRacing's M has no done head
    from dreamarcade.world_models.model import bundled_dir

    shutil.copytree(bundled_dir("carracing"), tmp_path / "car" / "world_model")
    assert (
        W.main(["calibrate-done", "--env", "carracing", "--run-dir", str(tmp_path / "car"), "--calibrate-target", "50"])
        == 2
    )
    assert "needs a world model whose M predicts done" in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise ValueError("a bug in the middle of a run")

    monkeypatch.setattr(W, "dream_fitness", bug)
    with pytest.raises(ValueError, match="a bug in the middle of a run"):
        W.main(["evolve", *argv, "--generations", "1", "--eval-every", "0", "--max-steps", "20"])


def test_dream_and_real_caps_can_be_longer_than_the_env_default() -> None:
    from dreamarcade.baselines.world_models import dream_returns
    from dreamarcade.world_models.model import WorldModel

    wm = WorldModel.bundled("carracing")  # no done head: only the cap ends a dream
    wm.reward = "survival"  # +1 a step: the return is the length
    ctrl = Controller.for_env("carracing", wm.feature_size)
    params = np.zeros((1, ctrl.num_params))
    assert dream_returns(wm, ctrl, params, 1, 1.0, seed=0, max_steps=1200).tolist() == [[1200.0]]  # was 1000
    assert dream_returns(wm, ctrl, params, 1, 1.0, seed=0, max_steps=30).tolist() == [[30.0]]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_next(MDNRNN(4, 1, hidden_size=8, n_mixtures=2), torch.zeros(1, 1, 100), float("nan"))


def test_cma_es_evolves_in_the_bundled_dream(tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, dream_fitness, step_evolve
    from dreamarcade.world_models.model import WorldModel

    cfg = WMConfig(
        env="doom", run_dir=str(tmp_path), popsize=8, rollouts=2, generations=2, eval_every=2, eval_rollouts=2,
        max_steps=150,
    )  # fmt: skip
    out = step_evolve(cfg)
    ctrl = Controller.load(out, feature_size=1088)
    assert (tmp_path / "controller_cma_curve.png").stat().st_size > 0
    # CMA-ES ran its 2 generations: one metrics row each, with worst <= mean <= best of the population's fitness
    with open(tmp_path / "logs_controller" / "metrics.csv", newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    assert [r["step"] for r in rows] == [1.0, 2.0]
    for r in rows:
        assert r["fitness_worst"] <= r["fitness_mean"] <= r["fitness_best"] <= cfg.max_steps
        assert r["fitness_best"] > r["fitness_worst"]  # 8 different candidates do not all score the same
    # the mean is evaluated every 2nd generation, under the same step cap, in the same row (NaN where not)
    assert np.isnan(rows[0]["dream_eval_of_mean"]) and 0 < rows[1]["dream_eval_of_mean"] <= cfg.max_steps
    _, meta = load_checkpoint(out, kind="controller")
    assert meta["generations"] == 2 and meta["popsize"] == 8 and meta["where"] == "dream"
    # the kept best candidate is the best one ever logged, in the saved controller and in the resumable CMA state
    best_params, best_meta = load_checkpoint(tmp_path / "controller_best", kind="controller")
    state, state_meta = load_checkpoint(tmp_path / "controller_cma", kind="cma_state")
    assert best_meta["fitness"] == pytest.approx(max(r["fitness_best"] for r in rows))
    assert state_meta["best_fitness"] == best_meta["fitness"] and state_meta["generation"] == 2
    assert torch.equal(state["best"], best_params["params"])
    assert np.array_equal(ctrl.params, state["mean"].numpy())  # the deployed controller is the CMA-ES mean
    wm = WorldModel.bundled("doom")
    fit = dream_fitness(wm, ctrl, np.stack([ctrl.params, np.zeros_like(ctrl.params)]), 4, 1.15, seed=0, max_steps=50)
    assert fit.shape == (2,) and np.all(fit > 0) and np.all(fit <= 50)
    from dreamarcade.baselines.world_models import check_controller_matches
    from dreamarcade.world_models.model import bundled_dir

    check_controller_matches(out, bundled_dir("doom"))  # evolved in the bundled dream: it fits (bundle's check)
    with pytest.raises(ValueError, match="evolved in another world model"):
        check_controller_matches(out, bundled_dir("carracing"))
    step_evolve(dataclasses.replace(cfg, generations=3, eval_every=0))  # resumed: one more generation
    with open(tmp_path / "logs_controller" / "metrics.csv", newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    assert [r["step"] for r in rows] == [1.0, 2.0, 3.0] and rows[2]["seconds"] >= rows[1]["seconds"]  # time carried
    # resumed with a shorter episode cap: CMA-ES goes on from its mean, but a best scored over 150 steps is not
    # comparable with fitnesses of at most 50, so the kept best is this run's (the old best_fitness stayed)
    old_best = max(r["fitness_best"] for r in rows)
    step_evolve(dataclasses.replace(cfg, generations=4, eval_every=0, max_steps=50))
    with open(tmp_path / "logs_controller" / "metrics.csv", newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    _, state_meta = load_checkpoint(tmp_path / "controller_cma", kind="cma_state")
    assert rows[3]["fitness_best"] <= 50 < old_best
    assert state_meta["generation"] == 4 and state_meta["best_fitness"] == rows[3]["fitness_best"]
    assert state_meta.get("objective", {}).get("max_steps") == 50
    # The run gets its own world model (the bundled one with M changed): the saved CMA-ES state was evolved in
    # another dream, so evolve starts again instead of stamping the old mean with the new model's fingerprint.
    import shutil

    shutil.copytree(bundled_dir("doom"), tmp_path / "world_model")
    m_dir = tmp_path / "world_model" / "mdnrnn"
    rnn, (_, m_meta) = MDNRNN.load(m_dir), load_checkpoint(m_dir, kind="mdnrnn")
    with torch.no_grad():
        rnn.head.bias += 0.01
    rnn.save(m_dir, extra={k: v for k, v in m_meta.items() if not k.startswith("_") and k not in rnn.config()})
    out = step_evolve(dataclasses.replace(cfg, generations=1, eval_every=0))
    with open(tmp_path / "logs_controller" / "metrics.csv", newline="") as f:
        assert [float(r["step"]) for r in csv.DictReader(f)] == [1.0]  # the old model's generations are gone
    assert load_checkpoint(out, kind="controller")[1]["generations"] == 1
    check_controller_matches(out, tmp_path / "world_model")
    with pytest.raises(ValueError, match="evolved in another world model"):
        check_controller_matches(out, bundled_dir("doom"))


def test_pipeline_with_iterations_resumes(tmp_path, capsys) -> None:
    """The whole pipeline at toy scale, with one round of the iterative procedure; a rerun skips every step."""
    from dreamarcade.baselines.world_models import WMConfig, step_pipeline

    cfg = WMConfig(
        env="doom", run_dir=str(tmp_path), episodes=2, workers=1, backend="inline", max_steps=40,
        vae_epochs=0.05, rnn_epochs=1, rnn_seq_len=20, rnn_batch=4, popsize=4, rollouts=1, generations=1,
        eval_every=0, eval_episodes=1, iterations=2, iter_episodes=1,
    )  # fmt: skip
    res = step_pipeline(cfg)
    for step in ("collect", "train-vae", "train-mdnrnn", "evolve", "evaluate", "collect_iter1", "evolve_iter1"):
        assert step in res, step
    assert (tmp_path / "frames_iter1").is_dir() and (tmp_path / "series_iter1").is_dir()
    assert (tmp_path / "controller_iter1" / "config.json").is_file()
    assert res["evaluate_iter1"]["episodes"] == 1
    for logs in ("logs_mdnrnn", "logs_mdnrnn_iter1"):  # one log per M: the iteration no longer erases the first
        with open(tmp_path / logs / "metrics.csv") as f:
            assert len(list(csv.DictReader(f))) >= 1, logs

    def written() -> dict:  # every file but the run directory's lock, which each claim stamps with its pid
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*") if p.is_file()
                and p.name != ".dreamarcade.lock"}  # fmt: skip

    files = written()
    capsys.readouterr()
    again = step_pipeline(cfg)  # resumable: everything is marked done
    out = capsys.readouterr().out
    assert again == res
    for step in res:
        assert f"[pipeline] {step}: done already, skipping" in out, step
    assert out.count("[pipeline]") == len(res)  # no step announced as running
    # nothing was run again: no file written, replaced or added
    assert written() == files
    # other settings: the steps they change are refused, not skipped (a rerun with --generations 50 or another --env
    # kept the old controller and exited 0); how a step runs is not what it makes
    with pytest.raises(CheckpointError, match=r"step evolve in .* other settings \(generations: 1 -> 2\)"):
        step_pipeline(dataclasses.replace(cfg, generations=2))
    with pytest.raises(CheckpointError, match=r"step collect in .* other settings \(env: 'doom' -> 'carracing'"):
        step_pipeline(dataclasses.replace(cfg, env="carracing"))
    assert step_pipeline(dataclasses.replace(cfg, threads=2, time_budget=5.0)) == res
    assert written() == files


def test_cli_help_describes_every_option(capsys) -> None:
    import dataclasses

    from dreamarcade.baselines.world_models import WMConfig, main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    for f in dataclasses.fields(WMConfig):
        if f.name != "extra":
            assert f"--{f.name.replace('_', '-')}" in text
    assert "CMA-ES population (default: 64)" in " ".join(text.split())


def test_bf16_mixed_precision_trains_v_and_m(doom_data, tmp_path) -> None:
    """``--precision bf16``: V's encoding and M's outputs stay close to fp32, and both train end to end."""
    from dreamarcade.baselines.world_models import WMConfig, encoder, step_train_mdnrnn, step_train_vae

    torch.manual_seed(0)
    frames = load_shard(list_shards(doom_data)[0])["frames"][:16]
    vae = ConvVAE(z_size=64).eval()
    mu32, lv32 = vae.encode_frames(frames)
    mu16, lv16 = encoder(vae, "bf16", torch.device("cpu"))(frames)
    assert mu16.dtype == np.float32 and np.abs(mu16 - mu32).max() <= 0.05 * np.abs(mu32).max() + 1e-3
    assert not np.array_equal(mu16, mu32)  # encoded in bfloat16, not silently in fp32
    rnn = MDNRNN(64, 1, 128, predict_done=True)
    z, a, r = torch.randn(2, 30, 64), torch.rand(2, 30, 1), torch.zeros(2, 30)
    ref = rnn(z, a, r)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = rnn(z, a, r).float()
    assert (mixed - ref).abs().max() <= 0.05 * ref.abs().max() and not torch.equal(mixed, ref)

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), precision="bf16", vae_epochs=0.5, vae_batch=16,
                   rnn_epochs=8, rnn_seq_len=20, rnn_batch=4)  # fmt: skip
    step_train_vae(cfg)
    step_train_mdnrnn(cfg)
    with open(tmp_path / "logs_mdnrnn" / "metrics.csv") as f:
        total = [float(row["total_loss"]) for row in csv.DictReader(f)]
    assert len(total) >= 8 and np.mean(total[-3:]) < np.mean(total[:3]) - 0.1
    assert (tmp_path / "world_model" / "world_model.json").is_file()
    with pytest.raises(ValueError, match="--precision must be one of 'fp32', 'bf16', got 'fp16'"):
        step_train_vae(dataclasses.replace(cfg, precision="fp16"))


def test_retraining_v_re_encodes_the_series_and_the_demo_refuses_a_trained_run(doom_data, tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, step_demo, step_train_vae

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), vae_epochs=0.1, vae_batch=16)
    step_train_vae(cfg)
    assert (tmp_path / "vae_loss.png").is_file()  # fewer than 20 steps logged no loss, and drew no curve
    before = load_series(tmp_path / "series")["mu"]
    step_train_vae(dataclasses.replace(cfg, vae_epochs=0.3))  # resumes V and trains it further
    after = load_series(tmp_path / "series")["mu"]
    vae = ConvVAE.load(tmp_path / "vae")
    frames = np.concatenate([load_shard(p)["frames"] for p in list_shards(doom_data)])
    np.testing.assert_allclose(after, vae.encode_frames(frames)[0].astype(np.float16), atol=2e-3)  # the new V's
    assert not np.allclose(before, after, atol=2e-3)
    with pytest.raises(ValueError, match="holds a pipeline run"):
        step_demo(cfg)  # would evolve in the bundled dream and replace this run's controller


def test_a_frames_folder_without_shards_makes_no_empty_series_and_an_old_empty_one_is_named(doom_data, tmp_path):
    """A collect stopped before its first shard leaves an empty frames_b: train-vae made an empty series_b from it,
    and train-mdnrnn then said to run train-vae, which made the same empty folder again (a loop)."""
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn, step_train_vae

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    (tmp_path / "frames_b").mkdir()
    assert encode_shards(tmp_path / "frames_b", tmp_path / "series_b", lambda f: (f, f)) == []
    assert not (tmp_path / "series_b").exists()
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), vae_epochs=0.05, vae_batch=16, rnn_epochs=1, rnn_seq_len=20,
                   rnn_batch=4)  # fmt: skip
    step_train_vae(cfg)
    assert list_shards(tmp_path / "series", "series") and not (tmp_path / "series_b").exists()
    (tmp_path / "series_b").mkdir()  # as an earlier train-vae left it
    with pytest.raises(FileNotFoundError, match=r"No series shards in '.*series_b'.* Delete '.*series_b'"):
        step_train_mdnrnn(cfg)
    (tmp_path / "series_b").rmdir()
    moved = tmp_path / "kept"  # a series folder emptied by a train-vae stopped before encoding: train-vae fills it
    shutil.move(tmp_path / "series", moved)
    (tmp_path / "series").mkdir()
    with pytest.raises(FileNotFoundError, match="run `world_models train-vae --env doom` to encode frames,"):
        step_train_mdnrnn(cfg)
    (tmp_path / "series").rmdir()
    shutil.move(moved, tmp_path / "series")
    assert (step_train_mdnrnn(cfg) / "world_model.json").is_file()


def test_real_evaluation_reports_a_worker_that_cannot_start_instead_of_hanging(tmp_path) -> None:
    from dreamarcade.baselines.world_models import evaluate_real

    ctrl = Controller.for_env("doom", feature_size=1088)
    with pytest.raises(CheckpointError, match="not a world model directory"):  # used to respawn workers forever
        evaluate_real("doom", str(tmp_path / "no_model"), np.zeros(ctrl.num_params), ctrl, 1, 1)


def test_cli_evaluate_takes_a_controller_and_seeds_and_measures_random_on_them(tmp_path, capsys) -> None:
    """`evaluate --eval-controller D --eval-seed S`: episodes S, S+1, ... of D, with the random policy beside."""
    from dreamarcade.baselines.world_models import main
    from dreamarcade.world_models.model import bundled_dir

    argv = ["evaluate", "--env", "doom", "--run-dir", str(tmp_path), "--workers", "1", "--eval-episodes", "2"]
    ctrl = str(bundled_dir("doom") / "controller")
    assert main([*argv, "--eval-controller", ctrl, "--eval-seed", "777"]) == 0
    res = json.loads((tmp_path / "evaluate_controller_seed777.json").read_text())
    assert res["seed"] == 777 and res["controller"] == ctrl and len(res["returns"]) == 2
    assert 0 < res["random_mean"] <= 2100 and all(0 < r <= 2100 for r in res["returns"])
    assert main([*argv, "--eval-controller", ctrl, "--eval-seed", "778"]) == 0
    res2 = json.loads((tmp_path / "evaluate_controller_seed778.json").read_text())
    assert res2["returns"][0] == res["returns"][1]  # episode i is seeded eval_seed + i: 778 is 777's second
    assert main([*argv, "--eval-controller", ctrl, "--eval-seed", "779", "--max-steps", "5"]) == 0  # was ignored
    capped = json.loads((tmp_path / "evaluate_controller_seed779.json").read_text())
    assert capped["max_steps"] == 5 and capped["returns"] == [5.0, 5.0] and capped["random_mean"] == 5.0
    other = tmp_path / "other_controller"  # evolved in another world model: evaluate and video refuse it
    Controller.for_env("doom", feature_size=1088).save(other, extra={"world_model_sha256": "another model"})
    for step in ("evaluate", "video"):
        capsys.readouterr()
        assert main([step, *argv[1:], "--eval-controller", str(other)]) == 2  # the message, no traceback
        assert capsys.readouterr().err.startswith("error: The controller in ")


def test_the_demo_refuses_another_env_and_its_help_lists_its_presets(tmp_path, capsys) -> None:
    """The demo runs the bundled Doom dream only: `--env carracing demo` used to run Doom without a word."""
    from dreamarcade.baselines.world_models import _DEMO_DEFAULTS, main

    assert main(["demo", "--env", "carracing", "--run-dir", str(tmp_path / "demo")]) == 2
    assert capsys.readouterr().err.startswith("error: demo runs the bundled DreamDoom-v0 model only")
    assert not (tmp_path / "demo").exists()
    with pytest.raises(SystemExit):
        main(["--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "--popsize 32" in helptext and f"--time-budget {_DEMO_DEFAULTS['time_budget']:g}" in helptext


def test_the_demo_and_the_video_use_the_eval_seed_backend_and_step_cap_given(tmp_path) -> None:
    """demo played its real episodes from seed 12345 in worker processes whatever --eval-seed / --backend said, and
    demo and video filmed up to 700 frames whatever --max-steps said."""
    from dreamarcade.baselines.world_models import evaluate_real, main
    from dreamarcade.world_models.controller import Controller
    from dreamarcade.world_models.model import bundled_dir

    run = tmp_path / "demo"
    argv = ["--run-dir", str(run), "--generations", "1", "--popsize", "4", "--rollouts", "1", "--workers", "1"]
    argv += ["--eval-episodes", "2", "--eval-seed", "777", "--backend", "inline", "--max-steps", "30"]
    assert main(["demo", *argv]) == 0
    scores = json.loads((run / "scores.json").read_text())
    assert scores["eval_seed"] == 777 and scores["real_steps"] <= 30 and scores["dream_steps"] <= 30
    ctrl = Controller.load(run / "controller")
    again = evaluate_real("doom", bundled_dir("doom"), ctrl.params, ctrl, 2, 1, seed=777, max_steps=30)
    assert scores["real_mean"] == pytest.approx(float(again.mean()))
    assert main(["video", "--env", "doom", "--run-dir", str(run), "--max-steps", "12"]) == 0  # the bundled model
    av = pytest.importorskip("av")
    with av.open(str(run / "dream_vs_real.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) <= 13  # the first frame and one per step


def test_the_video_caps_both_episodes_at_max_steps_also_past_their_own_caps(tmp_path) -> None:
    """video --max-steps N: the real env kept its default cap (2100) and the dream the model's, while evolve and
    evaluate lengthen both to N."""
    from dreamarcade.baselines.world_models import dream_vs_real_video
    from dreamarcade.world_models.model import WorldModel, bundled_dir

    wm = WorldModel.bundled("doom")
    wm.max_steps = 5  # a model whose own cap is shorter than --max-steps
    ctrl = Controller.load(bundled_dir("doom") / "controller", feature_size=wm.feature_size)
    info = dream_vs_real_video(wm, ctrl, tmp_path / "v.mp4", temperature=0.1, max_frames=100, max_steps=12)
    assert info == {"real_steps": 12, "dream_steps": 12}  # was 5 in the dream, and the real game played on


def test_collect_refuses_an_unknown_backend_before_writing_anything(tmp_path) -> None:
    from dreamarcade.errors import is_input_error
    from dreamarcade.world_models.collect import collect

    with pytest.raises(ValueError, match="Unknown backend 'rey'") as exc:
        collect("doom", tmp_path / "frames", 1, backend="rey")
    assert is_input_error(exc.value)  # printed as one line by the CLI
    assert not (tmp_path / "frames").exists()  # the folder and its manifest were written first
    with pytest.raises(ValueError, match="at most 1000 jobs per seed, got 1001"):  # job seeds would overlap seed 1's
        collect("doom", tmp_path / "frames", 2000, workers=1001, backend="inline")
    assert not (tmp_path / "frames").exists()


def test_settings_and_resume_details_of_the_stages(tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, _plot_cma, _resume_train_state, _save_train_state

    # a seed out of numpy's range was a traceback from deep in collect / evolve / the real evaluation
    for name, value in (("seed", -1), ("seed", 2**32), ("eval_seed", -1), ("seed", 1.5)):
        flag = "--" + name.replace("_", "-")
        with pytest.raises(ValueError, match=f"{flag} must be an integer from 0"):
            WMConfig(**{name: value}).validate()
    # evolve --generations 0 on a fresh run logs no generation: the plot has nothing to draw (it raised)
    _plot_cma(tmp_path / "logs_controller" / "metrics.csv", tmp_path / "cma.png", "dream")
    assert not (tmp_path / "cma.png").exists()
    # a resumed V trains at the learning rate given now, not the one saved with Adam's state
    model = torch.nn.Linear(3, 2)
    _save_train_state(tmp_path / "vae_train", "vae_train", model, torch.optim.Adam(model.parameters(), lr=1e-4), 7, 1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert _resume_train_state(tmp_path / "vae_train", "vae_train", model, opt) == (7, 1.0)
    assert [g["lr"] for g in opt.param_groups] == [1e-3]


def test_a_finished_m_run_again_keeps_the_calibrated_world_model(tmp_path) -> None:
    # train-mdnrnn run again after calibrate-done rewrote the world model from the uncalibrated M: the shift was lost
    from dreamarcade.baselines.world_models import _calibrated_from

    rnn = MDNRNN(z_size=4, action_size=1, hidden_size=8, n_mixtures=2, predict_done=True)
    calibrated = MDNRNN(z_size=4, action_size=1, hidden_size=8, n_mixtures=2, predict_done=True)
    calibrated.load_state_dict(rnn.state_dict())
    bias = next(v for k, v in calibrated.state_dict().items() if k.endswith("bias"))
    bias[-1] += 3.5  # what calibrate-done does to the done head
    calibrated.save(tmp_path / "calibrated", extra={"done_bias_shift": 3.5})
    assert _calibrated_from(rnn, tmp_path / "calibrated")
    calibrated.save(tmp_path / "no_shift")  # not calibrated: rewriting it loses nothing
    assert not _calibrated_from(rnn, tmp_path / "no_shift")
    other = MDNRNN(z_size=4, action_size=1, hidden_size=8, n_mixtures=2, predict_done=True)  # another M's weights
    other.save(tmp_path / "other", extra={"done_bias_shift": 3.5})
    assert not _calibrated_from(rnn, tmp_path / "other")
    assert not _calibrated_from(rnn, tmp_path / "missing")


def test_a_stopped_v_saves_the_step_it_stopped_at_and_the_same_command_continues(doom_data, tmp_path, monkeypatch):
    # SIGTERM killed train-vae: every step since its last save (up to 199) was lost
    import signal

    from crash_helpers import sigterm_at_call

    from dreamarcade.baselines.world_models import StageStopped, WMConfig, step_train_vae
    from dreamarcade.world_models import vae as vae_module

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), vae_epochs=0.5, vae_batch=16)
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(vae_module, "vae_loss", sigterm_at_call(vae_module.vae_loss, 3))
    with pytest.raises(StageStopped, match=r"train-vae stopped at step 3/\d+"):
        step_train_vae(cfg)
    assert signal.getsignal(signal.SIGTERM) is before
    assert load_checkpoint(tmp_path / "vae_train", kind="vae_train")[1]["step"] == 3
    assert not (tmp_path / "vae").exists()  # an unfinished V is not saved as the run's V
    monkeypatch.undo()
    step_train_vae(cfg)
    assert load_checkpoint(tmp_path / "vae", kind="vae")[1]["train_steps"] > 3


def test_a_cut_off_save_changes_the_world_model_fingerprint_like_the_load(tmp_path, monkeypatch) -> None:
    """A save killed between its weights rename and its config rename: the load takes the new weights (through the
    pending config), so the fingerprint must name them too (it read config.json, naming the old ones, and a
    controller of the old M passed the check)."""
    import os

    import dreamarcade.checkpoint as ck
    from dreamarcade.baselines.world_models import check_controller_matches, world_model_fingerprint
    from dreamarcade.world_models.controller import Controller
    from dreamarcade.world_models.model import WorldModel, bundled_dir

    d = tmp_path / "world_model"
    shutil.copytree(bundled_dir("doom"), d)
    wm = WorldModel.load(d, env="doom")
    before = world_model_fingerprint(d)
    Controller.for_env("doom", wm.feature_size).save(tmp_path / "ctrl", extra={"world_model_sha256": before})
    with torch.no_grad():
        wm.rnn.head.bias[wm.rnn.n_mdn] += 3.0  # what calibrate-done changes
    replace = os.replace

    def killed_before_the_config_rename(src, dst):
        if str(src).endswith(".next") and str(dst).endswith("config.json"):
            raise KeyboardInterrupt
        return replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", killed_before_the_config_rename)
    with pytest.raises(KeyboardInterrupt):
        wm.rnn.save(d / "mdnrnn")
    monkeypatch.setattr(ck.os, "replace", replace)
    tensors, _ = load_checkpoint(d / "mdnrnn")
    assert float(tensors["head.bias"][wm.rnn.n_mdn]) == pytest.approx(float(wm.rnn.head.bias[wm.rnn.n_mdn]))
    assert world_model_fingerprint(d) != before
    with pytest.raises(ValueError, match="was evolved in another world model"):
        check_controller_matches(tmp_path / "ctrl", d)


def test_the_inline_real_pool_leaves_the_callers_signal_handlers_alone() -> None:
    """The worker setup ignores Ctrl-C and SIGTERM (the parent stops after the generation); run inline, it made the
    caller itself ignore Ctrl-C for good."""
    import signal

    from dreamarcade.baselines.world_models import RealPool
    from dreamarcade.world_models.controller import Controller
    from dreamarcade.world_models.model import bundled_dir

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    pool = RealPool("doom", str(bundled_dir("doom")), Controller.for_env("doom", 1088), workers=1, backend="inline")
    try:
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        [(score, steps)] = pool.episodes([np.zeros(1088)], seeds=[0], max_steps=5)
        assert steps == 5
    finally:
        pool.close()


def test_collect_jobs_get_absolute_policy_paths_and_run_in_another_working_directory(tmp_path, monkeypatch) -> None:
    # a Ray task runs in the cluster's working directory (/ on a `ray start` node): the jobs got the relative
    # policy and controller folders as typed, and failed there, while the manifest recorded them absolute
    import os
    from pathlib import Path

    import dreamarcade.world_models.collect as collect_module
    from dreamarcade.world_models.model import bundled_dir

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    policy = os.path.relpath(bundled_dir("doom"))  # a world model and its controller, typed relative to work/
    jobs, run_job = [], collect_module.run_job

    def in_another_directory(job):  # as a Ray worker of a `ray start` cluster runs it: in /
        jobs.append(job)
        os.chdir("/")
        try:
            return run_job(job)
        finally:
            os.chdir(work)

    monkeypatch.setattr(collect_module, "run_job", in_another_directory)
    summary = collect("doom", "frames", episodes=1, workers=1, min_length=0, max_steps=10, backend="inline",
                      policy_dir=policy, controller_dir=os.path.join(policy, "controller"))  # fmt: skip
    assert summary["episodes"] == 1 and list_shards(work / "frames")
    (job,) = jobs
    assert Path(job.out_dir) == work / "frames"
    assert (
        Path(job.policy_dir) == bundled_dir("doom") and Path(job.controller_dir) == bundled_dir("doom") / "controller"
    )
    manifest = json.loads((work / "frames" / "collect-s0.json").read_text())
    assert (manifest["policy_dir"], manifest["controller_dir"]) == (job.policy_dir, job.controller_dir)


def test_a_v_resumed_with_another_loss_or_batch_is_refused_and_v_records_them(doom_data, tmp_path) -> None:
    # --kl-tolerance / --vae-batch changed on a resume were taken silently: half the steps with one loss, steps of
    # two batch sizes counted as one, and V's config recorded only the new KL tolerance
    from dreamarcade.baselines.world_models import WMConfig, step_train_vae

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), vae_epochs=0.1, vae_batch=16, kl_tolerance=0.5)
    step_train_vae(cfg)
    state = load_checkpoint(tmp_path / "vae_train", kind="vae_train")[1]
    assert (state["kl_tolerance"], state["vae_batch"]) == (0.5, 16)
    record = load_checkpoint(tmp_path / "vae", kind="vae")[1]
    assert (record["kl_tolerance"], record["vae_batch"]) == (0.5, 16)
    series = list_shards(tmp_path / "series", "series")
    for change, named in (
        (dict(kl_tolerance=3.0), "kl_tolerance: 0.5 -> 3.0"),
        (dict(vae_batch=32), "vae_batch: 16 -> 32"),
    ):
        with pytest.raises(CheckpointError, match=rf"{named}\).*--kl-tolerance 0.5 --vae-batch 16.*new --run-dir"):
            step_train_vae(dataclasses.replace(cfg, vae_epochs=0.3, **change))
    assert list_shards(tmp_path / "series", "series") == series  # refused before V's series were removed
    step_train_vae(dataclasses.replace(cfg, vae_epochs=0.2, vae_lr=1e-3))  # more epochs at another rate: continues
    assert load_checkpoint(tmp_path / "vae", kind="vae")[1]["train_steps"] == 3


def test_an_m_resumed_with_another_loss_sequence_or_batch_is_refused_and_m_records_them(tmp_path) -> None:
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn

    _write_random_series(tmp_path / "series")
    ConvVAE(64).save(tmp_path / "vae")
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), rnn_epochs=1, rnn_seq_len=20, rnn_batch=2, done_pos_weight=10)
    step_train_mdnrnn(cfg)
    settings = {"done_pos_weight": 10, "rnn_seq_len": 20, "rnn_batch": 2}
    for ckpt in ("mdnrnn_train", "mdnrnn", "world_model/mdnrnn"):
        meta = load_checkpoint(tmp_path / ckpt)[1]
        assert {k: meta.get(k) for k in settings} == settings, ckpt
    flags = "--done-pos-weight 10 --rnn-seq-len 20 --rnn-batch 2"
    changes = {"done_pos_weight: 10 -> 1.0": dict(done_pos_weight=1.0), "rnn_seq_len: 20 -> 10": dict(rnn_seq_len=10),
               "rnn_batch: 2 -> 4": dict(rnn_batch=4)}  # fmt: skip
    for named, change in changes.items():
        with pytest.raises(CheckpointError, match=rf"{named}\).*{flags}"):
            step_train_mdnrnn(dataclasses.replace(cfg, rnn_epochs=2, **change))
    step_train_mdnrnn(dataclasses.replace(cfg, rnn_epochs=2, rnn_lr=5e-4))  # more epochs at another rate: continues
    assert load_checkpoint(tmp_path / "mdnrnn")[1]["train_steps"] == 6


def test_m_refuses_frames_that_are_not_all_encoded(doom_data, tmp_path) -> None:
    # a train-vae killed while encoding (or frames collected after V was trained) left frame shards without their
    # series: M trained on part of the data without a word
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    (tmp_path / "frames_b").mkdir()
    (shard,) = list_shards(doom_data)
    for worker in (0, 1):
        shutil.copy(shard, tmp_path / "frames_b" / shard.name.replace("-w0-", f"-w{worker}-"))

    def encode_all() -> None:
        for name in ("frames", "frames_b"):
            encode_shards(
                tmp_path / name, tmp_path / name.replace("frames", "series"), lambda f: (np.zeros((len(f), 64)),) * 2
            )

    encode_all()
    ConvVAE(64).save(tmp_path / "vae")
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), rnn_epochs=0.2, rnn_seq_len=20, rnn_batch=4)
    (tmp_path / "series_b" / "series-s0-w1-00000.npz").unlink()  # train-vae killed after the first of two
    with pytest.raises(
        FileNotFoundError, match=r"1 of the 2 frame shards in '.*frames_b'.*run `world_models train-vae"
    ):
        step_train_mdnrnn(cfg)
    shutil.rmtree(tmp_path / "series_b")  # frames_b collected after V was trained
    with pytest.raises(FileNotFoundError, match=r"2 of the 2 frame shards in '.*frames_b'.*to finish encoding"):
        step_train_mdnrnn(cfg)
    assert not (tmp_path / "mdnrnn_train").exists()
    encode_all()
    assert (step_train_mdnrnn(cfg) / "world_model.json").is_file()


def test_the_world_model_copy_and_the_bundle_keep_the_calibrated_done_shift(tmp_path) -> None:
    # WorldModel.save dropped what M's checkpoint recorded: a calibrated run bundled without its done_bias_shift
    from dreamarcade.baselines.world_models import WMConfig, step_bundle
    from dreamarcade.world_models.model import WorldModel, bundled_dir

    run, dest = tmp_path / "run", tmp_path / "assets" / "dream_doom"
    shutil.copytree(bundled_dir("doom"), run / "world_model")
    wm = WorldModel.load(run / "world_model")
    wm.rnn.save(run / "world_model" / "mdnrnn", extra={"done_bias_shift": 0.21875, "train_steps": 7})  # calibrated
    WorldModel.load(run / "world_model").save(tmp_path / "copy")
    step_bundle(WMConfig(env="doom", run_dir=str(run)), dest=dest)
    for model in (tmp_path / "copy", dest):
        meta = load_checkpoint(model / "mdnrnn", kind="mdnrnn")[1]
        assert (meta.get("done_bias_shift"), meta.get("train_steps")) == (0.21875, 7), model


def test_a_busy_bundle_names_what_the_command_offers(tmp_path, monkeypatch) -> None:
    # it said to bundle into another --dest, which the command does not have
    from dreamarcade.baselines import world_models
    from dreamarcade.baselines.common import RunDirBusyError

    def busy(_lock_dir) -> None:
        raise RunDirBusyError("busy")

    monkeypatch.setattr(world_models, "claim_run_dir", busy)
    with pytest.raises(RunDirBusyError) as err:
        world_models._claim_bundle_dest(tmp_path / "dream_doom")
    assert "--dest" not in str(err.value) and "--dest" not in world_models.build_parser().format_help()
    assert "run `world_models bundle` again" in str(err.value)


def test_calibrate_done_warns_when_every_collected_episode_reached_the_cap(doom_data, tmp_path) -> None:
    """The fixture's 3 random episodes all reach its 80-step cap: the data holds no death, so the calibrated dream
    (almost) never ends and every controller scores the cap. That was chosen without a word."""
    from dreamarcade.baselines.world_models import WMConfig, step_calibrate_done, step_train_mdnrnn, step_train_vae

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), vae_epochs=0.1, vae_batch=16, rnn_epochs=1, rnn_seq_len=20,
                   rnn_batch=2)  # fmt: skip
    step_train_vae(cfg)
    step_train_mdnrnn(cfg)
    with pytest.warns(UserWarning, match=r"every collected episode reached the collection's --max-steps 80"):
        result = step_calibrate_done(cfg)
    assert result["target"] == 80.0 and result["max_steps"] == 80


def test_a_diverged_v_or_m_keeps_its_last_good_training_state(doom_data, tmp_path) -> None:
    # a learning rate too high made V's or M's weights NaN, and they were saved over the last good training state
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn, step_train_vae
    from dreamarcade.errors import DivergedError

    (tmp_path / "frames").symlink_to(doom_data, target_is_directory=True)
    cfg = WMConfig(env="doom", run_dir=str(tmp_path), vae_epochs=0.1, vae_batch=16)
    step_train_vae(cfg)
    good = load_checkpoint(tmp_path / "vae_train")[0]
    with pytest.raises(DivergedError, match=r"by step \d+ with --vae-lr 1e\+30: .*vae_train' is intact"):
        step_train_vae(dataclasses.replace(cfg, vae_epochs=0.3, vae_lr=1e30))
    kept = load_checkpoint(tmp_path / "vae_train")[0]
    assert all(torch.equal(good[k], kept[k]) for k in good)

    m_dir = tmp_path / "m"
    m_dir.mkdir()
    _write_random_series(m_dir / "series")
    ConvVAE(64).save(m_dir / "vae")
    m_cfg = WMConfig(env="doom", run_dir=str(m_dir), rnn_epochs=1, rnn_seq_len=20, rnn_batch=2, rnn_lr=1e30)
    with pytest.raises(DivergedError, match=r"the loss became (nan|inf) by step 2 with --rnn-lr 1e\+30: .*nothing"):
        step_train_mdnrnn(m_cfg)
    assert not (m_dir / "mdnrnn_train").exists() and not (m_dir / "world_model").exists()


def test_v_and_m_draw_their_weights_and_noise_from_the_seed(doom_data, tmp_path) -> None:
    # called from Python (not the CLI, which seeds torch), --seed changed only the batch order: every seed started
    # from the same V and M, and the global RNG's state, not the seed, decided the noise
    from dreamarcade.baselines.world_models import WMConfig, step_train_mdnrnn, step_train_vae

    def train(name: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        run = tmp_path / name
        run.mkdir()
        (run / "frames").symlink_to(doom_data, target_is_directory=True)
        torch.rand(7)  # whatever the caller drew before
        step_train_vae(WMConfig(env="doom", run_dir=str(run), vae_epochs=0.05, vae_batch=16, seed=seed))
        m_run = run / "m"
        m_run.mkdir()
        _write_random_series(m_run / "series")
        ConvVAE(64).save(m_run / "vae")
        torch.rand(7)
        step_train_mdnrnn(WMConfig(env="doom", run_dir=str(m_run), rnn_epochs=0.3, rnn_seq_len=20, rnn_batch=2,
                                   seed=seed))  # fmt: skip
        return load_checkpoint(run / "vae")[0], load_checkpoint(m_run / "mdnrnn")[0]

    (v0, m0), (v0b, m0b), (v1, m1) = train("a", 0), train("b", 0), train("c", 1)
    assert all(torch.equal(v0[k], v0b[k]) for k in v0) and all(torch.equal(m0[k], m0b[k]) for k in m0)
    assert not any(torch.equal(v0[k], v1[k]) for k in v0 if k.endswith("weight"))
    assert not any(torch.equal(m0[k], m1[k]) for k in m0 if k.endswith("weight"))
