"""The faster paths of the imitation reward: the ONNX Runtime encoder (same embeddings as the torch ones), the
float32 route of the area resize (bit for bit cv2's uint8 result), and the single env's scalar checkpoint update
(the same decisions as the vector one)."""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import pickle
import sys

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch

from dreamarcade.reward_models.checkpoints import CheckpointTrajectory, FrameStackEmbedder
from dreamarcade.reward_models.embedding import TDCCMC, EmbeddingConfig
from dreamarcade.reward_models.video import area_resize, process_frame

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dreamarcade.reward_models.inference import OnnxVisualEncoder  # noqa: E402


def _model(seed: int = 0) -> TDCCMC:
    torch.manual_seed(seed)
    model = TDCCMC(EmbeddingConfig())
    for m in model.modules():  # running statistics away from (0, 1), so that folding them matters
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _rings(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 54, 54, 4, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_encoder_equals_the_torch_encoders_for_every_ring_slot(batch):
    model = _model()
    onnx_e = FrameStackEmbedder(model, backend="onnxruntime")
    torch_e = FrameStackEmbedder(model, backend="torch")
    reference = FrameStackEmbedder(model, fused=False)
    assert onnx_e.backend == "onnxruntime" and torch_e.backend == "torch" and reference.backend == "torch"
    ring = _rings(batch)
    for newest in range(4):
        got = onnx_e.embed_ring(ring, newest)
        assert got.shape == (batch, 128) and got.dtype == np.float32
        assert np.abs(got - torch_e.embed_ring(ring, newest)).max() < 1e-5
        assert np.abs(got - reference.embed_ring(ring, newest)).max() < 1e-5
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    stacks = np.ascontiguousarray(ring.transpose(0, 3, 1, 2, 4))  # (B, stack, S, S, 3), oldest first
    assert np.abs(onnx_e(stacks) - reference(stacks)).max() < 1e-5


def test_onnx_encoder_on_the_bundled_model_and_a_slot_mix_up_is_seen():
    pytest.importorskip("ale_py")
    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.wrappers.imitation import load_imitation_model

    onnx_e, _ = load_imitation_model(ASSET_DIR)
    torch_e, _ = load_imitation_model(ASSET_DIR, backend="torch")
    assert onnx_e.backend == "onnxruntime"  # the default, when installed
    ring = _rings(2, seed=1)
    assert np.abs(onnx_e.embed_ring(ring, 1) - torch_e.embed_ring(ring, 1)).max() < 1e-5
    assert np.abs(onnx_e.embed_ring(ring, 1) - torch_e.embed_ring(ring, 2)).max() > 1e-3  # the slot order counts


def test_backend_choice_and_errors(monkeypatch):
    model = _model()
    assert FrameStackEmbedder(model).backend == "onnxruntime"
    assert FrameStackEmbedder(model, precision="bf16").backend == "torch"  # auto: ONNX Runtime is fp32 only
    assert FrameStackEmbedder(model, fused=False).runtime is None
    with pytest.raises(ValueError, match="backend must be 'auto', 'torch' or 'onnxruntime'"):
        FrameStackEmbedder(model, backend="ort")
    with pytest.raises(ValueError, match="needs fused=True, precision='fp32'"):
        FrameStackEmbedder(model, precision="bf16", backend="onnxruntime")
    with pytest.raises(ValueError, match="needs fused=True"):
        FrameStackEmbedder(model, fused=False, backend="onnxruntime")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails, as if not installed
    assert FrameStackEmbedder(model).backend == "torch"  # auto without ONNX Runtime: torch


def test_onnx_threads_follow_num_threads_or_torch():
    model = _model()
    assert FrameStackEmbedder(model, num_threads=2).runtime.threads() == 2
    follows = FrameStackEmbedder(model).runtime  # None: torch's setting when a session opens
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert follows.threads() == 1
        torch.set_num_threads(2)
        assert follows.threads() == 2
    finally:
        torch.set_num_threads(before)
    two = FrameStackEmbedder(model, num_threads=2)
    one = FrameStackEmbedder(model, num_threads=1)
    ring = _rings(5)
    assert np.abs(two.embed_ring(ring, 0) - one.embed_ring(ring, 0)).max() < 1e-6
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1 or None"):
        OnnxVisualEncoder(one.fused, num_threads=0)


def _threads_in_child(embedder: FrameStackEmbedder) -> tuple[int, int]:
    embedder.embed_ring(_rings(1), 0)
    return torch.get_num_threads(), embedder.runtime.threads()


def _in_forked_worker(fn, *args):
    """``fn(*args)`` in a fork-started pool worker. The worker dumps its stack to stderr and exits if it is still
    busy after 60 s (rather than hanging the test run), and it is stopped with close/join: an earlier test's
    ``ray.init`` leaves Ray's SIGTERM handler in this process, which its forked children inherit."""
    ctx = mp.get_context("fork")
    pool = ctx.Pool(1, initializer=faulthandler.dump_traceback_later, initargs=(60, False, sys.stderr, True))
    try:
        return pool.apply_async(fn, args).get(timeout=90)
    finally:
        pool.close()
        pool.join()


def test_a_forked_worker_opens_its_sessions_with_its_own_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        embedder = FrameStackEmbedder(_model())  # num_threads=None: torch's count when a session opens
        assert embedder.runtime.threads() == 2
        assert _in_forked_worker(_threads_in_child, embedder) == (1, 1)  # dreamarcade gives a forked child one
    finally:
        torch.set_num_threads(before)


def test_onnx_encoder_checks_its_input():
    enc = FrameStackEmbedder(_model()).runtime
    with pytest.raises(ValueError, match=r"\(batch, 54, 54, 4, 3\) uint8 frame ring"):
        enc.embed_ring(np.zeros((1, 54, 54, 4, 3), np.float32), 0)
    with pytest.raises(ValueError, match=r"\(batch, 54, 54, 4, 3\) uint8 frame ring"):
        enc.embed_ring(np.zeros((1, 48, 48, 4, 3), np.uint8), 0)
    with pytest.raises(ValueError, match=r"newest must be a ring slot in \[0, 4\)"):
        enc.embed_ring(_rings(1), 4)
    assert enc.embed_ring(np.zeros((0, 54, 54, 4, 3), np.uint8), 0).shape == (0, 128)
    with pytest.raises(cv2.error):  # an empty target is cv2's error, as before
        area_resize(np.zeros((10, 10, 3), np.uint8), (0, 0))
    with pytest.raises(ValueError, match="fp32 CPU encoder"):
        OnnxVisualEncoder(FrameStackEmbedder(_model(), precision="bf16").fused)


def test_onnx_encoder_pickles_and_works_in_a_forked_child():
    embedder = FrameStackEmbedder(_model(), num_threads=2)
    ring = _rings(2)
    expected = embedder.embed_ring(ring, 3)  # the parent has opened a session (with 2 threads) before the fork
    copy = pickle.loads(pickle.dumps(embedder))
    assert np.array_equal(copy.embed_ring(ring, 3), expected)
    assert np.array_equal(_in_forked_worker(embedder.embed_ring, ring, 3), expected)


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_area_resize_is_cv2_inter_area_bit_for_bit(channels):
    rng = np.random.default_rng(channels or 0)
    sizes = [(192, 160, 54, 54), (210, 160, 84, 84), (108, 108, 54, 54), (162, 162, 54, 54), (54, 160, 54, 54)]
    sizes += [(30, 20, 54, 54), (60, 30, 20, 45), (54, 54, 54, 54)]  # enlargements and a mix: cv2 as it is
    sizes += [tuple(int(v) for v in (*rng.integers(2, 300, 2), *rng.integers(1, 120, 2))) for _ in range(150)]
    for h, w, oh, ow in sizes:
        shape = (h, w) if channels is None else (h, w, channels)
        for frame in (rng.integers(0, 256, shape, dtype=np.uint8), (rng.integers(0, 3, shape) * 127).astype(np.uint8)):
            want = cv2.resize(frame, (ow, oh), interpolation=cv2.INTER_AREA)
            got = area_resize(frame, (ow, oh))
            assert got.dtype == np.uint8 and got.shape == want.shape and np.array_equal(got, want), (shape, ow, oh)


def test_process_frame_of_an_atari_frame_is_unchanged():
    pytest.importorskip("ale_py")
    import ale_py

    from dreamarcade.reward_models.video import detect_borders

    gym.register_envs(ale_py)
    env = gym.make("ALE/MontezumaRevenge-v5", frameskip=4, repeat_action_probability=0.0)
    frame, _ = env.reset(seed=0)
    for a in [0, 5, 11, 3] * 5:
        frame = env.step(a)[0]
    env.close()
    crop = detect_borders(frame)
    want = cv2.resize(np.ascontiguousarray(crop.apply(frame)), (54, 54), interpolation=cv2.INTER_AREA)
    assert np.array_equal(process_frame(frame, crop, (54, 54)), want)


def _hand_wrappers(n: int, skip: int, thresholds: np.ndarray):
    from dreamarcade.wrappers.imitation import YouTubeImitationReward, YouTubeImitationRewardVector
    from tests.test_imitation_wrapper import ColourEmbedder, CorridorEnv

    ck = CheckpointTrajectory(np.eye(8, dtype=np.float32)[np.arange(n) % 8], np.zeros(8, np.float32),
                              np.arange(n) * 16, 16, "hand-built")  # fmt: skip
    single = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, skip=skip, crop=None)
    vector = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv]), ColourEmbedder(), ck, skip=skip,
                                          crop=None)  # fmt: skip
    single.thresholds = vector.thresholds = thresholds
    return single, vector


def test_single_env_scalar_update_decides_like_the_vector_update():
    rng = np.random.default_rng(0)
    for trial in range(400):
        n, skip = int(rng.integers(1, 7)), int(rng.integers(0, 3))
        skip = min(skip, n)
        thresholds = rng.choice([0.3, 0.5, 0.7], n).astype(np.float64)
        single, vector = _hand_wrappers(n, skip, thresholds)
        values = [-1.0, 0.2, 0.5, 0.6, 0.7, 0.9] + ([np.nan, np.inf] if trial % 4 == 0 else [])
        sims = rng.choice(values, (1, n)).astype(np.float32)  # ties on purpose; NaN/inf: a diverged model
        nxt = int(rng.integers(0, n + 1))
        pay = bool(rng.integers(0, 2))
        for w in (single, vector):
            w._sims[:] = sims
            w._next[:] = nxt
        r, matched, best = single._update_one(pay)
        vr, vmatched, vbest = vector._update(np.array([pay]))
        assert (r, matched) == (float(vr[0]), int(vmatched[0])), trial
        assert best == float(vbest[0]) or (np.isnan(best) and np.isnan(vbest[0])), trial
        assert single._next[0] == vector._next[0]


def test_both_backends_pay_the_same_on_real_montezuma_frames():
    pytest.importorskip("ale_py")
    import ale_py

    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.wrappers.imitation import YouTubeImitationRewardVector, load_imitation_model

    gym.register_envs(ale_py)

    def base() -> gym.Env:
        return gym.make("ALE/MontezumaRevenge-v5", frameskip=4, repeat_action_probability=0.0)

    runs = {}
    for backend in ("onnxruntime", "torch"):
        embedder, ck = load_imitation_model(ASSET_DIR, backend=backend)
        assert embedder.backend == backend
        envs = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([base] * 3), embedder, ck, distinct_margin=0.1)
        envs.reset(seed=3)
        rng = np.random.default_rng(0)
        sims, paid = [], []
        for _ in range(150):
            _, _, _, _, info = envs.step(rng.integers(0, 18, 3))
            sims.append(envs.similarities)
            paid.append(info["imitation_matched"])
        envs.close()
        runs[backend] = np.stack(sims), np.stack(paid)
    assert np.abs(runs["onnxruntime"][0] - runs["torch"][0]).max() < 1e-5
    assert np.array_equal(runs["onnxruntime"][1], runs["torch"][1])
    assert (runs["torch"][1] >= 0).any()  # some checkpoint is paid on the way, so the comparison means something
