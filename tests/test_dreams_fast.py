"""The fast dream step (PackedMDNRNN, numpy one-env path, fused decoder) against the reference math.

The reference is M's own ``MDNRNN.step`` + ``sample_next`` driven by a generator with the same seed: the fast
paths make the same random draws in the same order, so trajectories must agree to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dreamarcade.envs.doom import action_to_buttons
from dreamarcade.envs.dream import DreamBatch, FusedDecoder
from dreamarcade.errors import CheckpointError
from dreamarcade.world_models.mdnrnn import MDNRNN, PackedMDNRNN, map_actions_, sample_next
from dreamarcade.world_models.model import WorldModel


@pytest.fixture(scope="module")
def doom() -> WorldModel:
    return WorldModel.bundled("doom")


def _reference(wm: WorldModel, z0: torch.Tensor, actions: list[torch.Tensor], seed: int, tau: float):
    """Features, done logits and rewards of the original (unfused) step, as DreamBatch computed them before."""
    rnn, n = wm.rnn, z0.shape[0]
    gen = torch.Generator().manual_seed(seed)
    z, (h, c), first = z0.clone(), rnn.initial_state(n), torch.ones(n)
    feats, extras = [], []
    with torch.no_grad():
        for a in actions:
            out, (h, c) = rnn.step(z, a, (h, c), restart=first)
            nxt = sample_next(rnn, out, tau, gen)
            z, first = nxt["z"], torch.zeros(n)
            feats.append(wm.make_features(z, h, c))
            extras.append(out[:, rnn.n_mdn :])
    return torch.stack(feats), torch.stack(extras)


def _fast(wm: WorldModel, n: int, actions: list[torch.Tensor], seed: int, tau: float, numpy_path: bool = True):
    dream = DreamBatch(wm, n, tau, seed=0)
    dream.reset_all()
    z0 = dream.z.clone()
    if not numpy_path:
        dream._np = None  # force the torch path for one env
    dream.seed(seed)
    feats, extras = [], []
    for a in actions:
        f, reward, term, trunc = dream.step(a)
        feats.append(f)
        k = dream._packed.n_pi
        extras.append(dream._out_pd[:, k:].clone())
        if wm.reward == "predicted":
            assert torch.equal(reward, extras[-1][:, -1])
        if wm.rnn.predict_done:
            assert torch.equal(term, extras[-1][:, 0] > 0)
    return z0, torch.stack(feats), torch.stack(extras)


@pytest.mark.parametrize(("n", "tau", "numpy_path"), [(1, 1.15, True), (1, 1.15, False), (8, 1.15, True),
                                                      (8, 0.3, True), (1, 1e-6, True)])  # fmt: skip
def test_fast_step_matches_reference_doom(doom: WorldModel, n: int, tau: float, numpy_path: bool) -> None:
    gen = torch.Generator().manual_seed(n)
    actions = [torch.rand(n, 1, generator=gen) * 2 - 1 for _ in range(40)]
    z0, feats, extras = _fast(doom, n, actions, seed=77, tau=tau, numpy_path=numpy_path)
    ref_feats, ref_extras = _reference(doom, z0, actions, seed=77, tau=tau)
    # same draws -> same mixture components -> the same trajectory, up to float32 rounding
    assert torch.allclose(feats, ref_feats, atol=1e-4, rtol=0), (feats - ref_feats).abs().max()
    assert torch.allclose(extras, ref_extras, atol=1e-4, rtol=0)


def test_fast_step_matches_reference_carracing() -> None:
    wm = WorldModel.bundled("carracing")  # z=32, 3 actions, reward head, features [z, h]
    gen = torch.Generator().manual_seed(0)
    for n in (1, 4):
        actions = [torch.rand(n, 3, generator=gen) for _ in range(25)]
        z0, feats, extras = _fast(wm, n, actions, seed=5, tau=1.0)
        ref_feats, ref_extras = _reference(wm, z0, actions, seed=5, tau=1.0)
        assert feats.shape[-1] == 32 + 256
        assert torch.allclose(feats, ref_feats, atol=1e-4, rtol=0)
        assert torch.allclose(extras, ref_extras, atol=1e-4, rtol=0)


def test_mixture_choice_follows_the_tempered_weights() -> None:
    """Distribution check of the sampler alone: component frequencies and moments of z at one fixed state."""
    torch.manual_seed(0)
    rnn = MDNRNN(z_size=2, action_size=1, hidden_size=8, n_mixtures=3).eval()
    with torch.no_grad():
        rnn.head.weight.zero_()
        # dim 0: logits (0, 1, 2), mus (-20, 0, 20), logsigma 0; dim 1: one dominant component
        rnn.head.bias.copy_(torch.tensor([0, 1, 2, -20, 0, 20, 0, 0, 0, 0, 0, 9, 1, 2, 3, -1, -1, -1.0]))
    tau, n = 1.5, 20000
    packed = PackedMDNRNN(rnn, tau)
    xh = packed.new_rows(n)
    out_pd, out_ml = torch.empty(n, packed.w_pd.shape[0]), torch.empty(n, packed.w_ml.shape[0])
    u, eps = torch.empty(n, 2), torch.empty(n, 2)
    packed.head_sample_(xh, out_pd, out_ml, u, eps, torch.Generator().manual_seed(1))
    z = xh[:, :2]
    p = torch.softmax(torch.tensor([0.0, 1, 2]) / tau, 0)
    comp = (z[:, 0] / 20).round().long() + 1  # nearest mean: components are 16 sigmas apart
    freq = torch.bincount(comp, minlength=3).float() / n
    assert torch.allclose(freq, p, atol=0.015)  # ~4 standard errors
    sigma = np.sqrt(tau) * np.exp(-1.0)  # component 2 of dim 1: mu 3, logsigma -1, noise scaled by sqrt(tau)
    assert abs(float(z[:, 1].mean()) - 3.0) < 0.02 and abs(float(z[:, 1].std()) - sigma) < 0.02


def test_keep_drops_dreams_and_bad_assignments_are_clear(doom: WorldModel) -> None:
    dream = DreamBatch(doom, 5, 1.15, seed=0)
    dream.reset_all()
    for _ in range(3):
        dream.step(torch.zeros(5, 1))
    mask = torch.tensor([True, False, True, True, False])
    before = [x.clone()[mask] for x in (dream.z, dream.h, dream.c, dream.t)]
    dream.keep(mask)
    assert dream.num == 3
    for old, new in zip(before, (dream.z, dream.h, dream.c, dream.t), strict=True):
        assert torch.equal(old, new)
    feats, *_ = dream.step(torch.zeros(3, 1))
    assert feats.shape == (3, 1088)
    with pytest.raises(ValueError, match="keep"):
        dream.z = torch.zeros(2, 64)
    with pytest.raises(ValueError, match="shape"):
        dream.step(torch.zeros(5, 1))


def test_partial_reset_restarts_only_the_masked_dreams_with_the_batch_draws(doom: WorldModel) -> None:
    dream = DreamBatch(doom, 6, 1.15, seed=3)
    dream.reset_all()
    for _ in range(4):
        dream.step(torch.zeros(6, 1))
    mask = torch.tensor([False, True, False, False, True, False])
    before = [x.clone() for x in (dream.z, dream.h, dream.c, dream.t, dream.first)]
    state = dream.gen.get_state()
    dream.reset(mask)
    # the restarted rows' z: the draws reset() makes, in its order (indices, then noise), from the same generator
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    idx = torch.randint(0, doom.initial_mu.shape[0], (2,), generator=gen)
    eps = torch.randn(2, doom.z_size, generator=gen)
    z0 = doom.initial_mu[idx] + torch.exp(0.5 * doom.initial_logvar[idx]) * eps
    assert torch.equal(dream.z[mask], z0)
    assert not dream.h[mask].any() and not dream.c[mask].any() and not dream.t[mask].any()
    assert bool((dream.first[mask] == 1.0).all())
    for old, new in zip(before, (dream.z, dream.h, dream.c, dream.t, dream.first), strict=True):
        assert torch.equal(old[~mask], new[~mask])  # the other dreams go on untouched
    dream.step(torch.zeros(6, 1))
    assert dream.t.tolist() == [5, 1, 5, 5, 1, 5]


def test_fused_decoder_matches_vae(doom: WorldModel) -> None:
    z = doom.initial_mu[:16] + 0.5 * torch.randn(16, doom.z_size, generator=torch.Generator().manual_seed(0))
    ref = doom.vae.decode_to_frames(z).astype(np.int16)
    fast = FusedDecoder(doom.vae)(z).astype(np.int16)
    assert fast.shape == (16, 64, 64, 3)
    diff = np.abs(ref - fast)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # only float32 rounding at .5 boundaries


def _map_copy(wm: WorldModel, action_map: str = "takecover") -> WorldModel:
    """The same world model with an M that reads actions through ``action_map`` ("takecover": the game's buttons,
    "none": the raw action), whatever map the bundled M was trained with."""
    rnn = MDNRNN(wm.rnn.z_size, 1, wm.rnn.hidden_size, wm.rnn.n_mixtures, True, True, False, action_map)
    rnn.load_state_dict(wm.rnn.state_dict())
    return dataclasses.replace(wm, rnn=rnn.eval())


def test_takecover_action_map_is_the_real_games_threshold() -> None:
    third = np.float32(1 / 3)
    values = [-1.0, -0.5, np.nextafter(-third, np.float32(-1)), -third, -0.2, 0.0, 0.2, third,
              np.nextafter(third, np.float32(1)), 0.34, 1.0]  # fmt: skip
    a = np.array(values, np.float32)
    # what TakeCoverEnv does with each action: [MOVE_LEFT, MOVE_RIGHT] -> right - left
    game = np.array([b[1] - b[0] for b in (action_to_buttons(float(v)) for v in a)], np.float32)
    assert set(game) == {-1.0, 0.0, 1.0}
    assert np.array_equal(map_actions_(a.copy(), "takecover"), game)
    assert torch.equal(map_actions_(torch.from_numpy(a.copy()), "takecover"), torch.from_numpy(game))
    assert np.array_equal(map_actions_(a.copy(), "none"), a)


@pytest.mark.parametrize(("n", "numpy_path"), [(1, True), (1, False), (8, True)])
def test_takecover_map_in_training_real_and_dream_paths(doom: WorldModel, n: int, numpy_path: bool) -> None:
    mapped, doom = _map_copy(doom, "takecover"), _map_copy(doom, "none")
    gen = torch.Generator().manual_seed(3)
    actions = [torch.rand(n, 1, generator=gen) * 2 - 1 for _ in range(30)]
    buttons = [map_actions_(a.clone(), "takecover") for a in actions]
    z0, feats, extras = _fast(mapped, n, actions, seed=11, tau=1.15, numpy_path=numpy_path)
    # the mapped M on raw actions == the unmapped M on the buttons, in the fast dream and the reference step
    ref_feats, ref_extras = _reference(doom, z0, buttons, seed=11, tau=1.15)
    assert torch.allclose(feats, ref_feats, atol=1e-4, rtol=0)
    assert torch.allclose(extras, ref_extras, atol=1e-4, rtol=0)
    map_feats, _ = _reference(mapped, z0, actions, seed=11, tau=1.15)
    assert torch.allclose(map_feats, ref_feats, atol=1e-5, rtol=0)
    raw_feats, _ = _reference(doom, z0, actions, seed=11, tau=1.15)
    assert not torch.allclose(raw_feats, ref_feats, atol=1e-3)  # the map changes what M reads
    # teacher-forced training pass: raw actions in, the same outputs as buttons through the unmapped M
    z = torch.randn(2, 12, 64, generator=gen)
    a = torch.rand(2, 12, 1, generator=gen) * 2 - 1
    restart = torch.zeros(2, 12)
    with torch.no_grad():
        assert torch.allclose(mapped.rnn(z, a, restart), doom.rnn(z, map_actions_(a.clone(), "takecover"), restart))
    assert a.abs().max() <= 1 and not set(a.flatten().tolist()) <= {-1.0, 0.0, 1.0}  # the caller's actions untouched


def test_action_map_round_trips_and_bad_values_are_clear(tmp_path) -> None:
    rnn = MDNRNN(8, 1, 16, predict_done=True, action_map="takecover")
    rnn.save(tmp_path / "m")
    assert MDNRNN.load(tmp_path / "m").action_map == "takecover"
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["action_map"]  # a checkpoint written before the option existed
    cfg_path.write_text(json.dumps(cfg))
    assert MDNRNN.load(tmp_path / "m").action_map == "none"
    cfg["action_map"] = "buttons"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="action_map must be one of"):
        MDNRNN.load(tmp_path / "m")
    with pytest.raises(ValueError, match="single action"):
        MDNRNN(32, 3, 16, action_map="takecover")


def test_bf16_dream_is_seeded_close_to_fp32_and_equally_hard(doom: WorldModel) -> None:
    """precision="bf16": M's matmuls on bfloat16 weights. Same seed -> same dream; one step from the same state
    with the same draws stays close to fp32; and the dream's death rate under random play matches fp32's."""
    import gymnasium as gym

    n = 64
    runs = []
    for precision in ("fp32", "bf16", "bf16"):
        dream = DreamBatch(doom, n, 1.15, seed=3, precision=precision)
        dream.reset_all()
        feats, _, done, _ = dream.step(torch.full((n, 1), 0.5))
        runs.append((feats.clone(), dream.done_logit.clone()))
    assert torch.equal(runs[1][0], runs[2][0])  # seeded determinism in bf16
    (f32, d32), (f16, d16) = runs[0], runs[1]
    # the same draws: the LSTM state [c, h] differs by rounding only; a latent dim of z can differ more where the
    # rounding moves a mixture weight across its uniform draw (another component is chosen), which is rare
    assert (f16[:, 64:] - f32[:, 64:]).abs().max() < 0.05 * f32[:, 64:].abs().max()
    assert ((f16[:, :64] - f32[:, :64]).abs() > 0.05).float().mean() < 0.01
    assert (d16 - d32).abs().max() < 0.05 * d32.abs().max() + 0.05
    assert not torch.equal(f16[:, 64:], f32[:, 64:])  # bfloat16 rounding shows: a silent fp32 path would not
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        DreamBatch(doom, 2, 1.15, precision="fp16")

    lengths = {}
    for precision in ("fp32", "bf16"):
        envs = gym.make_vec("DreamDoom-v0", num_envs=256, vectorization_mode="vector_entry_point", precision=precision)
        envs.reset(seed=0)
        rng = np.random.default_rng(0)
        t, ended = np.zeros(256, int), []
        for _ in range(2100):
            _, _, term, trunc, _ = envs.step(rng.uniform(-1, 1, (256, 1)).astype(np.float32))
            t += 1
            finished = term | trunc
            ended += t[finished].tolist()
            t[finished] = -1  # next step is the autoreset step
            if len(ended) >= 256:
                break
        lengths[precision] = np.mean(ended)
    # ~260 episodes each (std ~0.7 of the mean): 20% is ~3 standard errors of the difference (measured: 188 vs 203)
    assert abs(lengths["bf16"] - lengths["fp32"]) < 0.2 * lengths["fp32"]
