"""Dream and real World Models envs: Gymnasium conformance, determinism, temperature, errors, SB3."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import dreamarcade  # noqa: F401  (registers the ids)
from dreamarcade.envs.dream import DreamBatch, DreamEnv
from dreamarcade.errors import CheckpointError, MissingExtraError
from dreamarcade.world_models.model import WorldModel, bundled_dir

# check_env (Gymnasium 1.x) reports most failures (out-of-space observations, wrong dtypes, non-bool flags, ...)
# only as warnings, so every warning is an error here except those named below.
_UNBOUNDED_BOX = r".*A Box observation space (minimum|maximum) value is (-)?infinity.*"


def _check(env: gym.Env, unbounded: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if unbounded:
            # Latent features (VAE z samples, MDN-RNN h) have no finite range by design, so the space is (-inf, inf).
            warnings.filterwarnings("ignore", message=_UNBOUNDED_BOX)
        check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", ["DreamDoom-v0", "DreamCarRacing-v0"])
def test_dream_envs_pass_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    _check(env, unbounded=True)
    obs, _ = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    env.close()


def test_dream_pixels_and_render() -> None:
    env = gym.make("DreamDoom-v0", obs_type="pixels", render_mode="rgb_array")
    _check(env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.std() > 0  # a decoded frame, not a blank
    env.close()
    # a recorded dream plays at the real game's speed: CarRacing's dream declared Doom's 35 fps
    for dream, real in (("DreamDoom-v0", "DoomTakeCover-v0"), ("DreamCarRacing-v0", "CarRacing64-v0")):
        fps = gym.make(real).metadata["render_fps"]
        assert gym.make(dream).metadata["render_fps"] == fps
        vec = gym.make_vec(dream, num_envs=2, vectorization_mode="vector_entry_point")
        assert vec.metadata["render_fps"] == fps
    assert gym.make("CarRacing64-v0").metadata["render_fps"] == 50


@pytest.mark.parametrize("env_id", ["DoomTakeCover-v0", "DoomTakeCoverFeatures-v0"])
def test_real_doom_envs_pass_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    _check(env, unbounded=env_id.endswith("Features-v0"))
    env.close()


def test_the_real_features_env_takes_seeds_past_64_bits_as_the_dream_does() -> None:
    # DreamDoom-v0 hashes such a seed down; the features env's V noise overflowed torch's manual_seed on it
    from dreamarcade.world_models.features import FeatureTracker

    env = gym.make("DoomTakeCoverFeatures-v0")
    first = env.reset(seed=2**64)[0]
    np.testing.assert_array_equal(first, env.reset(seed=2**64)[0])
    assert not np.array_equal(first, env.reset(seed=2**64 + 1)[0])
    env.close()
    tracker = FeatureTracker(WorldModel.bundled("doom"), seed=2**70)
    tracker.seed(2**64 + 3)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        tracker.seed(-1)


def test_real_carracing_passes_check_env() -> None:
    env = gym.make("CarRacing64-v0")
    _check(env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    with pytest.raises(ValueError, match=r"non-finite action \[nan, 0.0, 0.0\]"):  # it steered nowhere silently
        env.unwrapped.step(np.array([np.nan, 0.0, 0.0], np.float32))
    env.close()


def test_real_takecover_is_paper_faithful() -> None:
    from dreamarcade.envs.doom import TakeCoverEnv

    env = gym.make("DoomTakeCover-v0", render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    assert obs.shape == (64, 64, 3)
    assert env.unwrapped.doom_skill == 4 and env.spec.max_episode_steps == 2100  # the registered TimeLimit
    assert env.unwrapped.max_steps is None and TakeCoverEnv().max_steps == 2100  # constructed directly: its own
    full = env.render()
    assert full.shape == (120, 160, 3)  # HUD rendered on the full frame, cropped from the observation
    total, steps, done = 0.0, 0, False
    while not done:
        _, r, term, trunc, _ = env.step(np.array([0.0], np.float32))
        total, steps, done = total + r, steps + 1, term or trunc
    assert total == steps  # score = steps survived
    with pytest.raises(ValueError, match="shape"):
        env.reset(seed=0)
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="non-finite action"):  # NaN compared false: a silent no-op
        env.unwrapped.step(np.array([np.nan], np.float32))
    env.close()
    # before the first reset, render() gives a black frame of the screen's size (it was always 120x160)
    assert TakeCoverEnv(render_mode="rgb_array", screen_resolution="RES_640X480").render().shape == (480, 640, 3)


def test_real_takecover_seeded_determinism() -> None:
    env = gym.make("DoomTakeCover-v0")
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=11)
        frames = [obs]
        for t in range(40):
            frames.append(env.step(np.array([np.sin(t / 5.0)], np.float32))[0])
        runs.append(np.stack(frames))
    assert np.array_equal(runs[0], runs[1])
    env.close()


def test_real_takecover_moves_only_past_a_third() -> None:
    """The paper's action threshold: |a| <= 1/3 is a no-op, a > 1/3 moves right and a < -1/3 left (full speed)."""
    from dreamarcade.envs.doom import action_to_buttons

    assert action_to_buttons(0.3) == action_to_buttons(-0.3) == action_to_buttons(0.0) == [0, 0]
    assert action_to_buttons(1 / 3) == action_to_buttons(-1 / 3) == [0, 0]
    # float32 (the action space's dtype) rounds 1/3 up to 0.33333334, which used to move the player
    assert action_to_buttons(float(np.float32(1 / 3))) == action_to_buttons(float(np.float32(-1 / 3))) == [0, 0]
    assert action_to_buttons(0.34) == [0, 1] and action_to_buttons(-0.34) == [1, 0]
    env = gym.make("DoomTakeCover-v0")

    def frames(a: float) -> np.ndarray:  # 6 tics holding ``a`` from the same seeded start
        obs, _ = env.reset(seed=5)
        return np.stack([obs] + [env.step(np.array([a], np.float32))[0] for _ in range(6)])

    try:
        runs = {a: frames(a) for a in (0.0, 0.3, -0.3, 1 / 3, 0.34, -0.34, 1.0, -1.0)}
        env.reset(seed=0)
        for _ in range(2100):  # standing still until a fireball ends it (a few hundred steps)
            if env.step(np.array([0.0], np.float32))[2]:
                break
        assert env.step(np.array([0.0], np.float32))[1:3] == (0.0, True)  # no survival reward after the end
    finally:
        env.close()
    assert np.array_equal(runs[1 / 3], runs[0.0])  # exactly 1/3, sent as float32: a no-op
    assert np.array_equal(runs[0.3], runs[0.0]) and np.array_equal(runs[-0.3], runs[0.0])
    assert np.array_equal(runs[0.34], runs[1.0]) and np.array_equal(runs[-0.34], runs[-1.0])
    assert not np.array_equal(runs[0.34][-1], runs[0.0][-1]) and not np.array_equal(runs[-0.34][-1], runs[0.0][-1])
    assert not np.array_equal(runs[0.34][-1], runs[-0.34][-1])


def test_dream_seeded_determinism() -> None:
    trajs = []
    for _ in range(2):
        env = gym.make("DreamDoom-v0")
        obs, _ = env.reset(seed=123)
        seq = [obs]
        for t in range(30):
            seq.append(env.step(np.array([np.cos(t / 3.0)], np.float32))[0])
        trajs.append(np.stack(seq))
    assert np.array_equal(trajs[0], trajs[1])
    env = gym.make("DreamDoom-v0")
    other = env.reset(seed=124)[0]
    for _ in range(5):
        other = env.step(np.zeros(1, np.float32))[0]
    assert not np.array_equal(other, trajs[0][5])


def test_a_copied_or_pickled_dream_goes_on_like_the_original() -> None:
    # the copy's numpy views still pointed into the original's buffers (or into none): its observations froze
    import copy
    import pickle

    env = DreamEnv("doom")
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(1, np.float32))
    copies = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    a = np.array([0.7], np.float32)
    original = [env.step(a)[0] for _ in range(5)]
    for c in copies:
        seq = [c.step(a)[0] for _ in range(5)]
        assert not np.array_equal(seq[0], seq[-1])
        np.testing.assert_allclose(seq, original, atol=1e-6)


def test_low_temperature_is_deterministic() -> None:
    wm = WorldModel.bundled("doom")
    a, b = DreamBatch(wm, 2, temperature=1e-8, seed=1), DreamBatch(wm, 2, temperature=1e-8, seed=999)
    a.reset_all()
    b.reset_all()
    b.z = a.z.clone()  # same start, different random streams
    actions = torch.tensor([[0.9], [-0.9]])
    for _ in range(25):
        fa, *_ = a.step(actions)
        fb, *_ = b.step(actions)
    assert torch.allclose(fa, fb, atol=1e-3)
    # at the paper's temperature the two random streams diverge
    c, d = DreamBatch(wm, 2, 1.15, seed=1), DreamBatch(wm, 2, 1.15, seed=999)
    c.reset_all()
    d.reset_all()
    d.z = c.z.clone()
    for _ in range(5):
        fc, *_ = c.step(actions)
        fd, *_ = d.step(actions)
    assert not torch.allclose(fc, fd, atol=1e-3)


def test_a_temperature_set_later_dreams_as_one_built_with_it() -> None:
    """``temperature`` was a plain attribute: a new value (a temperature curriculum, ``SyncVectorEnv.set_attr``) was
    reported back while the dream kept sampling at the temperature it was built with."""

    def dream(env: gym.Env | gym.vector.VectorEnv, steps: int = 15) -> np.ndarray:
        obs, _ = env.reset(seed=0)
        seq = [obs]
        for _ in range(steps):
            seq.append(env.step(np.zeros(env.action_space.shape, np.float32))[0])
        return np.stack(seq)

    env = gym.make("DreamDoom-v0")
    base = dream(env)
    env.unwrapped.temperature = 0.05
    assert env.unwrapped.temperature == 0.05
    cooled = dream(env)
    np.testing.assert_array_equal(cooled, dream(gym.make("DreamDoom-v0", temperature=0.05)))
    assert not np.array_equal(cooled, base)
    sync = gym.make_vec("DreamDoom-v0", num_envs=2, vectorization_mode="sync")
    sync.set_attr("temperature", 0.05)
    assert sync.get_attr("temperature") == (0.05, 0.05)
    built = gym.make_vec("DreamDoom-v0", num_envs=2, vectorization_mode="sync", temperature=0.05)
    np.testing.assert_array_equal(dream(sync), dream(built))
    vec = gym.make_vec("DreamDoom-v0", num_envs=3, vectorization_mode="vector_entry_point")
    vec.unwrapped.temperature = 0.05
    assert vec.unwrapped.temperature == 0.05
    built = gym.make_vec("DreamDoom-v0", num_envs=3, vectorization_mode="vector_entry_point", temperature=0.05)
    np.testing.assert_array_equal(dream(vec), dream(built))
    for bad in (0.0, -1.0, float("nan"), True, "0.5"):  # the constructor's rule; the old value stays
        with pytest.raises(ValueError, match="temperature must be"):
            env.unwrapped.temperature = bad
        with pytest.raises(ValueError, match="temperature must be"):
            vec.unwrapped.temperature = bad
    assert env.unwrapped.temperature == vec.unwrapped.temperature == 0.05


def test_vector_env_batched_and_autoreset() -> None:
    envs = gym.make_vec("DreamDoom-v0", num_envs=16, vectorization_mode="vector_entry_point", temperature=1.15)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (16, 1088)
    saw_end = False
    for _ in range(400):
        obs, rew, term, trunc, _ = envs.step(envs.action_space.sample())
        assert obs.shape == (16, 1088) and rew.shape == (16,)
        if term.any() or trunc.any():
            saw_end = True
            ended = term | trunc
            obs, rew, term, trunc, _ = envs.step(envs.action_space.sample())
            assert np.all(rew[ended] == 0.0)  # next-step autoreset: the restart step carries no reward
    assert saw_end
    with pytest.raises(ValueError, match="shape"):
        envs.step(np.zeros((3, 1), np.float32))
    envs.close()


def test_vector_env_list_seeds_match_the_int_seed() -> None:
    from dreamarcade.envs.dream import DreamVectorEnv

    a, b = DreamVectorEnv(num_envs=3), DreamVectorEnv(num_envs=3)
    actions = np.array([[0.5], [-0.5], [0.0]], np.float32)
    obs_a, obs_b = a.reset(seed=7)[0], b.reset(seed=[7, 8, 9])[0]  # Gymnasium's meaning of an int: env i gets 7 + i
    for _ in range(5):
        np.testing.assert_array_equal(obs_a, obs_b)
        obs_a, obs_b = a.step(actions)[0], b.step(actions)[0]
    first = a.reset(seed=[3, 1, 4])[0]  # any other list: one seed derived from all of it, deterministic
    np.testing.assert_array_equal(first, b.reset(seed=[3, 1, 4])[0])
    assert not np.array_equal(first, b.reset(seed=3)[0])
    assert a.reset(seed=[None, None, None])[0].shape == (3, 1088)
    with pytest.raises(ValueError, match="3 envs"):
        a.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="mixes None"):
        a.reset(seed=[1, None, 2])
    np.testing.assert_array_equal(a.reset(seed=np.int64(7))[0], b.reset(seed=7)[0])  # numpy ints are seeds too


def test_vector_env_reset_mask_restarts_only_the_masked_dreams() -> None:
    from dreamarcade.envs.dream import DreamVectorEnv

    envs = DreamVectorEnv(num_envs=2)
    envs.reset(seed=0)
    for _ in range(5):
        before, *_ = envs.step(np.array([[0.5], [0.5]], np.float32))
    obs, _ = envs.reset(options={"reset_mask": np.array([False, True])})
    np.testing.assert_array_equal(obs[0], before[0])  # dream 0 goes on where it was
    assert np.all(obs[1, 64:] == 0) and np.any(before[1, 64:] != 0)  # dream 1 restarted: c and h are zero again
    with pytest.raises(ValueError, match="reset_mask must be a bool array of shape"):
        envs.reset(options={"reset_mask": np.array([1, 0])})
    with pytest.raises(ValueError, match="only, got \\['task'\\]"):
        envs.reset(options={"task": 3})


def test_unseeded_vector_envs_dream_differently_and_a_seed_makes_them_agree() -> None:
    from dreamarcade.envs.dream import DreamVectorEnv

    a, b = DreamVectorEnv(num_envs=2), DreamVectorEnv(num_envs=2)  # as Gymnasium's: unseeded means fresh entropy
    actions = np.zeros((2, 1), np.float32)
    a.reset(), b.reset()
    assert not np.array_equal(a.step(actions)[0], b.step(actions)[0])
    a.reset(seed=5), b.reset(seed=5)
    np.testing.assert_array_equal(a.step(actions)[0], b.step(actions)[0])


def test_dream_actions_are_clipped_to_the_action_box() -> None:
    """The real game saturates (TakeCover: a=5 moves like a=1), so the dream must feed M the clipped action."""
    from dreamarcade.envs.dream import DreamVectorEnv
    from dreamarcade.world_models.features import FeatureTracker

    for env_id, big, edge in (
        ("DreamDoom-v0", [5.0], [1.0]),
        ("DreamCarRacing-v0", [-3.0, 2.0, -1.0], [-1.0, 1.0, 0.0]),
    ):
        envs = [gym.make(env_id) for _ in range(2)]
        obs = [e.reset(seed=4)[0] for e in envs]
        for _ in range(5):
            np.testing.assert_array_equal(obs[0], obs[1])
            obs = [envs[0].step(np.array(big, np.float32))[0], envs[1].step(np.array(edge, np.float32))[0]]
        np.testing.assert_array_equal(obs[0], obs[1])
    # CarRacing's M reads actions as given (the bundled Doom M maps them to left/no-op/right, which saturates by
    # itself), so only a clip in the vector env and the tracker makes these equal
    big = np.array([[-3.0, 2.0, -1.0], [4.0, -2.0, 5.0]], np.float32)
    edge = np.array([[-1.0, 1.0, 0.0], [1.0, 0.0, 1.0]], np.float32)
    vecs = [DreamVectorEnv(num_envs=2, env="carracing") for _ in range(2)]
    obs = [v.reset(seed=4)[0] for v in vecs]
    for _ in range(5):
        obs = [vecs[0].step(big)[0], vecs[1].step(edge)[0]]
    np.testing.assert_array_equal(obs[0], obs[1])
    # a NaN passes the clip: an M that reads actions as given (CarRacing's) turned NaN and the dream never ended
    nan = np.array([np.nan, 0.0, 0.0], np.float32)
    with pytest.raises(ValueError, match="non-finite action"):
        envs[0].step(nan)
    with pytest.raises(ValueError, match=r"non-finite actions for envs \[1\]"):
        vecs[0].step(np.stack([edge[0], nan]))
    # the real-env features: M is fed the clipped action too
    wm, frame = WorldModel.bundled("carracing"), np.full((64, 64, 3), 90, np.uint8)
    t1, t2 = FeatureTracker(wm, seed=0), FeatureTracker(wm, seed=0)
    t1.reset(frame), t2.reset(frame)
    np.testing.assert_array_equal(t1.step(big[0], frame), t2.step(edge[0], frame))
    t1.step(big[1], frame), t2.step(edge[1], frame)
    np.testing.assert_array_equal(t1.step(big[0], frame), t2.step(edge[0], frame))  # M's state got the same input
    wm = WorldModel.bundled("doom")
    # unseeded trackers (e.g. the sub-envs of a vector env reset without a seed) draw V's noise independently
    assert not np.array_equal(FeatureTracker(wm).reset(frame), FeatureTracker(wm).reset(frame))


def test_vector_env_rejects_unknown_kwargs() -> None:
    from dreamarcade.envs.dream import DreamVectorEnv

    with pytest.raises(TypeError, match="temprature"):
        DreamVectorEnv(num_envs=2, temprature=0.5)
    with pytest.raises(TypeError, match="temprature"):
        gym.make_vec("DreamDoom-v0", num_envs=2, vectorization_mode="vector_entry_point", temprature=0.5)
    envs = gym.make_vec("DreamDoom-v0", num_envs=2, vectorization_mode="vector_entry_point", render_mode="rgb_array",
                        max_episode_steps=50)  # fmt: skip
    envs.reset(seed=0)
    frames = envs.render()  # one frame per env, a tuple like SyncVectorEnv's (RecordVideo asserted on an ndarray)
    assert isinstance(frames, tuple) and [f.shape for f in frames] == [(64, 64, 3)] * 2
    assert envs.unwrapped.max_episode_steps == 50
    # Gymnasium's seeds are unbounded: one past 64 bits overflowed torch's manual_seed
    big = 2**64 + 5
    first = envs.reset(seed=big)[0]
    np.testing.assert_array_equal(first, envs.reset(seed=big)[0])
    assert not np.array_equal(first, envs.reset(seed=2**64 + 6)[0])
    envs.close()
    from dreamarcade.envs.dream import DreamVectorEnv

    for bad in (dict(num_envs=2.5), dict(max_episode_steps=float("inf")), dict(temperature=True)):
        with pytest.raises(ValueError, match="num_envs must be an integer|max_episode_steps must be|temperature must"):
            DreamVectorEnv(**bad)


def test_the_real_envs_caps_are_registered_like_the_dreams_and_can_be_lengthened() -> None:
    """The real ids hid their cap in the env (spec: None), so gym.make(id, max_episode_steps=1200) still ended at
    1000; now the cap is the registered TimeLimit, as for the dreams. Constructed directly, the env caps itself."""
    from dreamarcade.envs.carracing import CarRacing64Env

    for real, dream in (("DoomTakeCover-v0", "DreamDoom-v0"), ("CarRacing64-v0", "DreamCarRacing-v0")):
        assert gym.spec(real).max_episode_steps == gym.spec(dream).max_episode_steps
    assert gym.spec("DoomTakeCoverFeatures-v0").max_episode_steps == 2100
    assert gym.spec("CarRacingFeatures-v0").max_episode_steps == 1000

    def length(env: gym.Env) -> int:
        env.reset(seed=0)
        for t in range(1, 3000):
            *_, terminated, truncated, _ = env.step(np.array([0.0, 0.0, 0.0], np.float32))
            assert not terminated
            if truncated:
                return t
        return -1

    assert length(gym.make("CarRacing64-v0", max_episode_steps=1200)) == 1200  # it ended at 1000
    assert length(CarRacing64Env(max_steps=30)) == 30


def test_step_cap_is_the_registered_time_limit_and_can_be_lengthened() -> None:
    """The single env's cap is its registration's TimeLimit, so gym.make(max_episode_steps=N) goes past 1000/2100."""
    from dreamarcade.envs.dream import DreamVectorEnv

    assert gym.spec("DreamDoom-v0").max_episode_steps == WorldModel.bundled("doom").max_steps == 2100
    assert gym.spec("DreamCarRacing-v0").max_episode_steps == WorldModel.bundled("carracing").max_steps == 1000
    action = np.array([0.0, 0.3, 0.0], np.float32)  # the CarRacing dream has no done head: only the cap ends it

    def length(env: gym.Env) -> int:
        env.reset(seed=0)
        for t in range(1, 2000):
            _, _, terminated, truncated, info = env.step(action)
            assert not terminated and info["steps"] == t
            if truncated:
                return t
        return -1

    assert length(gym.make("DreamCarRacing-v0")) == 1000
    assert length(gym.make("DreamCarRacing-v0", max_episode_steps=1200)) == 1200  # longer than the default cap
    assert length(gym.make("DreamCarRacing-v0", max_episode_steps=7)) == 7
    assert length(DreamEnv("carracing", max_episode_steps=9)) == 9  # constructed directly, it can cap itself
    assert DreamEnv("carracing").max_episode_steps is None
    envs = gym.make_vec("DreamCarRacing-v0", num_envs=2, vectorization_mode="vector_entry_point")
    assert envs.unwrapped.max_episode_steps == 1000  # the vector env gets the registered cap
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
            DreamEnv("carracing", max_episode_steps=bad)
        with pytest.raises(ValueError, match="max_episode_steps must be a positive integer"):
            DreamVectorEnv(num_envs=1, env="carracing", max_episode_steps=bad)


def test_no_step_cap_means_the_same_to_the_single_and_the_vector_dream(tmp_path) -> None:
    # DreamVectorEnv(max_episode_steps=None) truncated at the model's own cap while DreamEnv(None) never truncated
    import shutil

    from dreamarcade.envs.dream import DreamVectorEnv

    model = tmp_path / "capped"
    shutil.copytree(bundled_dir("carracing"), model)  # no done head: only a cap ends its dreams
    meta = json.loads((model / "world_model.json").read_text())
    (model / "world_model.json").write_text(json.dumps({**meta, "max_steps": 3}))  # the model's own cap
    actions = np.tile(np.array([0.0, 0.3, 0.0], np.float32), (2, 1))

    def vector_ends(envs) -> list[int]:  # the steps that truncated, in 8 (it restarts itself after one)
        envs.reset(seed=0)
        return [t for t in range(1, 9) if envs.step(actions)[3].any()]

    def single_ends(env) -> list[int]:
        env.reset(seed=0)
        return [t for t in range(1, 9) if env.step(actions[0])[3]][:1]  # the first (it is not stepped past one)

    assert single_ends(DreamEnv("carracing", model_dir=model)) == []
    assert vector_ends(DreamVectorEnv(num_envs=2, env="carracing", model_dir=model)) == []  # ended at 3
    assert single_ends(DreamEnv("carracing", model_dir=model, max_episode_steps=5)) == [5]
    assert vector_ends(DreamVectorEnv(num_envs=2, env="carracing", model_dir=model, max_episode_steps=5)) == [5]
    # gym.make_vec: the registered cap by default, no cap for an explicit None (as the constructor), N for N
    kw = {"num_envs": 2, "vectorization_mode": "vector_entry_point", "model_dir": model}
    assert gym.make_vec("DreamCarRacing-v0", **kw).unwrapped.max_episode_steps == 1000
    assert vector_ends(gym.make_vec("DreamCarRacing-v0", max_episode_steps=None, **kw)) == []
    assert vector_ends(gym.make_vec("DreamCarRacing-v0", max_episode_steps=4, **kw)) == [4]
    assert gym.make("DreamCarRacing-v0", model_dir=model).spec.max_episode_steps == 1000


def test_bad_inputs_give_clear_errors(tmp_path) -> None:
    for tau in (0.0, -1.0, 1e-40):  # 1e-40 overflowed logits / tau to NaN: the dream always took component 0
        with pytest.raises(ValueError, match="temperature must be > 0"):
            gym.make("DreamDoom-v0", temperature=tau)
    from dreamarcade.envs.dream import DreamVectorEnv

    venv = DreamVectorEnv(num_envs=2, env="doom")
    with pytest.raises(RuntimeError, match="reset"):  # it dreamed from an all-zero state
        venv.step(np.zeros((2, 1), np.float32))
    with pytest.raises(RuntimeError, match="reset"):
        venv.reset(options={"reset_mask": np.array([True, False])})
    venv.reset(seed=0)
    venv.step(np.zeros((2, 1), np.float32))
    env = gym.make("DreamDoom-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="obs_type"):
        DreamEnv(obs_type="voxels")
    with pytest.raises(CheckpointError, match="world model directory"):
        DreamEnv(model_dir=tmp_path)
    # the real envs: 0 or -5 steps made every step a truncation, 2.7 and skill 4.9 were truncated, None failed in int()
    from dreamarcade.envs.carracing import CarRacing64Env
    from dreamarcade.envs.doom import TakeCoverEnv

    for bad in (0, -5, 2.7, True):  # None: no cap of its own (the registered ids' is their TimeLimit)
        with pytest.raises(ValueError, match=r"max_steps must be an integer >= 1 \(steps per episode\)"):
            CarRacing64Env(max_steps=bad)
        with pytest.raises(ValueError, match=r"max_steps must be an integer >= 1"):
            TakeCoverEnv(max_steps=bad)
    for bad in (0, 6, 4.9, None):
        with pytest.raises(ValueError, match=r"doom_skill must be"):
            TakeCoverEnv(doom_skill=bad)


def test_mismatched_and_corrupt_checkpoints(tmp_path) -> None:
    import shutil

    src = bundled_dir("doom")
    # a CarRacing M (z=32, 3 actions) inside a Doom world model: latent-size mismatch
    d = tmp_path / "mixed"
    shutil.copytree(src, d)
    shutil.rmtree(d / "mdnrnn")
    shutil.copytree(bundled_dir("carracing") / "mdnrnn", d / "mdnrnn")
    with pytest.raises(CheckpointError, match="z_size"):
        WorldModel.load(d)
    # the env the model was trained for must match the env asked for
    with pytest.raises(CheckpointError, match="trained for"):
        WorldModel.load(src, env="carracing")
    # action-size mismatch
    from dreamarcade.world_models.mdnrnn import MDNRNN

    with pytest.raises(CheckpointError, match="action_size"):
        MDNRNN.load(src / "mdnrnn", action_size=3)
    # truncated weights
    c = tmp_path / "corrupt"
    shutil.copytree(src, c)
    w = c / "vae" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="Corrupt"):
        WorldModel.load(c)
    # a corrupt world_model.json on an otherwise intact copy (on the copy above, V's weights raised first)
    j = tmp_path / "corrupt_json"
    shutil.copytree(src, j)
    (j / "world_model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"Corrupt.*world_model.json|world_model.json.*Corrupt"):
        WorldModel.load(j)
    assert json.loads((src / "world_model.json").read_text())["env"] == "doom"


def test_missing_extra_is_named(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "vizdoom", None)  # makes `import vizdoom` fail as if not installed
    env = gym.make("DoomTakeCover-v0")
    with pytest.raises(MissingExtraError, match=r"dreamarcade\[doom\]"):
        env.reset(seed=0)


def test_sb3_ppo_runs_on_dream_doom() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    env = gym.make("DreamDoom-v0")
    model = sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == (1,)
