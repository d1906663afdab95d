"""The fast imitation-reward path: the fused encoder equals the trained encoder (eval mode), the ring buffer and
vectorised checkpoint logic equal the reference semantics, ``embed_every`` and ``num_threads`` do what they say."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_imitation_wrapper import ColourEmbedder, CorridorEnv, _checkpoints

from dreamarcade.reward_models.checkpoints import CheckpointTracker, CheckpointTrajectory, FrameStackEmbedder
from dreamarcade.reward_models.embedding import TDCCMC, EmbeddingConfig, load_embedding, stack_frames
from dreamarcade.reward_models.inference import FusedVisualEncoder, max_pool2x2_relu, ring_order
from dreamarcade.wrappers.imitation import YouTubeImitationReward, YouTubeImitationRewardVector

BUNDLE = Path(__file__).resolve().parent.parent / "dreamarcade/assets/montezuma_imitation"


def _random_stats_model(cfg: EmbeddingConfig, seed: int = 0) -> TDCCMC:
    """A TDCCMC whose BatchNorms have non-trivial statistics and affine parameters (what folding must get right)."""
    torch.manual_seed(seed)
    model = TDCCMC(cfg)
    for m in model.phi.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("which", ["bundled", "random-bn-2-blocks"])
def test_fused_encoder_equals_reference_eval_encoder(which):
    if which == "bundled":
        model, _ = load_embedding(BUNDLE / "embedding")
    else:
        model = _random_stats_model(EmbeddingConfig(frame_size=40, crop_size=32, res_blocks=2, embed_dim=64))
    cfg = model.cfg
    frames = _frames(24, cfg.frame_size)
    idx = np.arange(len(frames))
    with torch.no_grad():
        ref = model.phi(stack_frames(frames, idx, cfg)).numpy()  # exactly what training/eval computes
    fused = FusedVisualEncoder(model.phi, cfg.stack, cfg.frame_size)
    stacks = frames[np.clip(idx[:, None] + np.arange(-cfg.stack + 1, 1), 0, len(frames) - 1)]
    assert np.abs(fused.embed_stacks(stacks) - ref).max() < 1e-5
    for newest in range(cfg.stack):  # every rotation of the ring gives the same embeddings
        ring = np.empty((len(frames), cfg.frame_size, cfg.frame_size, cfg.stack, 3), np.uint8)
        ring[:, :, :, ring_order(newest, cfg.stack)] = stacks.transpose(0, 2, 3, 1, 4)
        assert np.abs(fused.embed_ring(ring, newest) - ref).max() < 1e-5
    embedder = FrameStackEmbedder(model)
    assert np.abs(embedder(stacks) - embedder.reference(stacks)).max() < 1e-5
    assert np.abs(FrameStackEmbedder(model, fused=False)(stacks) - ref).max() < 1e-6
    with pytest.raises(ValueError, match="uint8 frame ring"):
        fused.embed_ring(np.zeros((2, cfg.frame_size, cfg.frame_size, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="newest must be a ring slot"):
        fused.embed_ring(ring, cfg.stack)


class NoiseEnv(gym.Env):
    """Random RGB frames at the bundled embedding's frame size (so no resize happens), seeded."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (54, 54, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (54, 54, 3), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        return self.np_random.integers(0, 256, (54, 54, 3), dtype=np.uint8), 0.0, False, self.t >= 9, {}


def test_wrapper_with_fused_embedder_matches_reference_embedder():
    """Ring buffer + fused encoder == the model's own forward on explicit oldest-first stacks of the frames seen."""
    model, _ = load_embedding(BUNDLE / "embedding")
    ck = CheckpointTrajectory.load(BUNDLE / "checkpoints")
    ref = FrameStackEmbedder(model, fused=False)
    fast = YouTubeImitationReward(NoiseEnv(), FrameStackEmbedder(model), ck, crop=None, observe_similarity=True)
    slow = YouTubeImitationReward(NoiseEnv(), ref, ck, crop=None, observe_similarity=True)
    obs, _ = fast.reset(seed=7)
    slow.reset(seed=7)
    history = [obs["obs"]] * 4  # before the first frame, a stack repeats it (as on the video side)
    for _ in range(9):
        a, b = fast.step(0), slow.step(0)
        history = history[1:] + [a[0]["obs"]]
        expect = ck.centre(ref.reference(np.stack(history)[None]))[0] @ ck.embeddings.T
        assert np.abs(fast._sims[0] - expect).max() < 1e-5
        np.testing.assert_allclose(a[0]["similarity"], b[0]["similarity"], atol=1e-5)
        assert abs(a[4]["imitation_similarity"] - b[4]["imitation_similarity"]) < 1e-5
        assert a[1] == b[1] and a[4]["imitation_checkpoint"] == b[4]["imitation_checkpoint"]


def test_vectorised_checkpoint_logic_equals_tracker():
    """Random similarity sequences: the wrapper's vectorised pay-once rule == CheckpointTracker, per env."""
    rng = np.random.default_rng(3)
    n, skip, num_envs = 7, 1, 5
    ck = CheckpointTrajectory(np.eye(8, dtype=np.float32)[:n], np.zeros(8, np.float32), np.arange(n), 16)
    venv = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv] * num_envs), ColourEmbedder(), ck)
    trackers = [CheckpointTracker(n, 0.5, 0.5, skip) for _ in range(num_envs)]
    for _ in range(60):
        sims = rng.uniform(-0.2, 1.0, (num_envs, n)).astype(np.float32)
        pay = rng.random(num_envs) < 0.8
        venv._sims[:] = sims
        r, matched, _ = venv._update(pay)
        for i, t in enumerate(trackers):
            expect = t.update(sims[i]) if pay[i] else (0.0, -1)
            assert (r[i], matched[i]) == expect and venv._next[i] == t.next


def test_embed_every_embeds_every_kth_step_and_pays_only_then():
    ck = _checkpoints([1, 2, 3, 5, 6])
    emb = ColourEmbedder()
    env = YouTubeImitationReward(CorridorEnv(), emb, ck, mode="replace", embed_every=2)
    _, info = env.reset(seed=0)
    assert info["imitation_embedded"]
    emb.calls.clear()
    embedded, rewards = [], []
    for _ in range(6):
        _, r, term, _, info = env.step(1)  # forward every step: places 1..6
        embedded.append(info["imitation_embedded"])
        rewards.append(r)
    assert embedded == [False, True, False, True, False, True] and emb.calls == [1, 1, 1]
    # what the fidelity trade costs: place 1 (step 1) is never embedded; place 2 (step 2) pays checkpoint 1
    # (0 skipped); place 3 (step 3) is never embedded, so checkpoint 2 is missed, and at places 4 and 6 the
    # candidates are still checkpoints 2 and 3 (places 3 and 5): nothing more is paid
    assert rewards == [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    every = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, mode="replace")
    every.reset(seed=0)
    assert [every.step(1)[1] for _ in range(6)] == [0.5, 0.5, 0.5, 0.0, 0.5, 0.5]
    # a step that is not embedded pays nothing, also when the last embedding would match the next checkpoint:
    # checkpoints 0 and 1 are both place 2, and step 3 (at place 3, not embedded) must not pay 1 from step 2's look
    twins = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), _checkpoints([2, 2, 3]), mode="replace",
                                   embed_every=2)  # fmt: skip
    twins.reset(seed=0)
    assert [twins.step(1)[1] for _ in range(4)] == [0.0, 0.5, 0.0, 0.0]
    # the default (embed_every=1) has no such info key and embeds every step
    default = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck)
    default.reset(seed=0)
    assert "imitation_embedded" not in default.step(1)[4]
    # NaN, inf and None failed inside int() or float() without naming the argument; a huge skip ran out of memory
    bad = [{"embed_every": v} for v in (0, 1.5, float("nan"), float("inf"), None)]
    bad += [{"threshold": None}, {"threshold": "0.5"}, {"reward": float("nan")}, {"skip": 10**10}]
    for kwargs in bad:
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"^{name}[=]?.* (must be|is more than)"):
            YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, **kwargs)
    assert YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, skip=len(ck)).skip == len(ck)


def test_embed_every_vector_matches_single():
    ck = _checkpoints([1, 2, 3, 5, 6])
    actions = np.random.default_rng(1).choice([0, 1, 1, 2], size=(30, 3))
    singles = [YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, embed_every=3) for _ in range(3)]
    emb = ColourEmbedder()
    venv = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv] * 3), emb, ck, embed_every=3)
    venv.reset(seed=0)
    expected_calls = [3]  # the reset embeds every sub-env in one pass
    for s in singles:
        s.reset(seed=0)
    done = np.zeros(3, bool)
    for a in actions:
        _, vr, vterm, _, vinfo = venv.step(a)
        if vinfo["imitation_embedded"].any():  # one batched pass over exactly the sub-envs due this step
            expected_calls.append(int(vinfo["imitation_embedded"].sum()))
        for i, s in enumerate(singles):
            if done[i]:  # NEXT_STEP autoreset: this step is the reset of sub-env i
                _, info = s.reset()
                sterm = False
                assert vr[i] == 0.0 and vinfo["imitation_embedded"][i]
            else:
                _, sr, sterm, _, info = s.step(a[i])
                assert vr[i] == sr and vinfo["imitation_embedded"][i] == info["imitation_embedded"]
            done[i] = sterm
            assert vinfo["imitation_checkpoint"][i] == info["imitation_checkpoint"]
        assert (vterm == done).all()
    assert emb.calls == expected_calls
    assert sum(emb.calls) < 3 * (len(actions) + 1) / 2  # every 3rd step (or a reset): far fewer than every step


def test_num_threads_is_used_for_the_pass_and_restored():
    model = TDCCMC(EmbeddingConfig()).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seen: list[int] = []
        embedder = FrameStackEmbedder(model, num_threads=2, backend="torch")
        fused = embedder.fused
        fused.forward_ring = lambda ring, newest: (seen.append(torch.get_num_threads()), torch.zeros(1, 128))[1]
        embedder.embed_ring(np.zeros((1, 54, 54, 4, 3), np.uint8), 3)
        assert seen == [2] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        FrameStackEmbedder(model, num_threads=0)


@pytest.mark.parametrize("shape", [(3, 5, 8, 8), (1, 16, 7, 9)])
def test_channels_last_pool_equals_max_pool_then_relu(shape):
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    assert torch.equal(max_pool2x2_relu(x), torch.relu(torch.nn.functional.max_pool2d(x, 2)))


def test_registered_env_passes_embed_every_and_threads():
    pytest.importorskip("ale_py")
    import dreamarcade  # noqa: F401  (registers the ids)

    env = gym.make("MontezumaImitation-v0", embed_every=2, embed_threads=1)
    env.reset(seed=0)
    assert [env.step(0)[4]["imitation_embedded"] for _ in range(4)] == [False, True, False, True]
    assert env.unwrapped is not env and env.get_wrapper_attr("embed_every") == 2
    env.close()


def test_any_embedder_gets_oldest_first_stacks_from_the_ring():
    """An embedder without ``embed_ring`` receives (B, stack, S, S, 3) stacks, oldest frame first."""

    class Recording(ColourEmbedder):
        stack = 3

        def __call__(self, stacks: np.ndarray) -> np.ndarray:
            self.seen = stacks[:, :, 0, 0, 0].copy()  # each frame's red level identifies the place
            return super().__call__(stacks)

    emb = Recording()
    env = YouTubeImitationReward(CorridorEnv(), emb, _checkpoints([1, 2]), crop=None)
    env.reset(seed=0)
    assert emb.seen.tolist() == [[5, 5, 5]]  # before the first frame, the stack repeats it
    places = [0]
    for a in [1, 1, 2, 1, 1]:
        env.step(a)
        places.append(int(np.clip(places[-1] + {0: 0, 1: 1, 2: -1}[a], 0, 7)))
        expect = [32 * p + 5 for p in ([places[0]] * 3 + places)[-3:]]
        assert emb.seen.tolist() == [expect]


def test_bf16_encoder_is_close_to_fp32_and_reachable_from_the_registered_env():
    """precision="bf16": the bundled embedding in bfloat16 stays within ~1e-2 of fp32 (unit vectors, so that is
    also the error of a similarity), and the option reaches the encoder through gym.make."""
    model, _ = load_embedding(BUNDLE / "embedding")
    cfg = model.cfg
    frames = _frames(24, cfg.frame_size, seed=3)
    idx = np.arange(len(frames))
    stacks = frames[np.clip(idx[:, None] + np.arange(-cfg.stack + 1, 1), 0, len(frames) - 1)]
    ref = FrameStackEmbedder(model)(stacks)
    bf16 = FrameStackEmbedder(model, precision="bf16")
    got = bf16(stacks)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() < 0.03
    assert np.abs(got - ref).max() > 1e-4  # bfloat16 rounding shows (fp32 agrees to ~1e-7): not a silent fp32 path
    assert (np.sum(got * ref, axis=1) > 0.995).all()  # cosine similarity of each pair
    with pytest.raises(ValueError, match="needs the fused encoder"):
        FrameStackEmbedder(model, fused=False, precision="bf16")
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        FusedVisualEncoder(model.phi, cfg.stack, cfg.frame_size, precision="fp16")
    pytest.importorskip("ale_py")
    import dreamarcade  # noqa: F401  (registers the ids)

    env = gym.make("MontezumaImitation-v0", embed_precision="bf16")
    assert env.get_wrapper_attr("embedder").fused.precision == "bf16"
    env.close()
