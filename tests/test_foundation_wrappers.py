"""Wrapper semantics, checked against Gymnasium's own wrappers and ale-py's C++ vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dreamarcade.envs.atari import make_dqn_env, make_dqn_vector_env
from dreamarcade.wrappers import (
    ClipRewardSign,
    EpisodicLife,
    FireReset,
    FrameStack,
    GrayscaleResize,
    MaxAndSkip,
    NoopReset,
)

ale_py = pytest.importorskip("ale_py")
cv2 = pytest.importorskip("cv2")


def _actions(n: int, n_actions: int, seed: int = 0) -> list[int]:
    return [int(a) for a in np.random.default_rng(seed).integers(0, n_actions, size=n)]


def test_matches_gymnasium_atari_preprocessing_and_frame_stack() -> None:
    """Same seed, same actions: our stack equals AtariPreprocessing + FrameStackObservation + sign clip.

    Only the observation returned with the game's end may differ (Gymnasium pools stale frames there).
    """
    ours = make_dqn_env("Pong", fire_reset=False, episodic_life=False, noop_max=30)
    ref = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    ref = gym.wrappers.AtariPreprocessing(ref, noop_max=30, frame_skip=4, screen_size=84)
    ref = gym.wrappers.TransformReward(ref, lambda r: float(np.sign(r)))
    ref = gym.wrappers.FrameStackObservation(ref, 4, padding_type="zero")
    o1, _ = ours.reset(seed=7)
    o2, _ = ref.reset(seed=7)
    np.testing.assert_array_equal(o1, o2)
    steps = 0
    for a in _actions(1500, ours.action_space.n):
        o1, r1, t1, u1, _ = ours.step(a)
        o2, r2, t2, u2, _ = ref.step(a)
        assert (r1, t1, u1) == (r2, t2, u2)
        if t1 or u1:
            break
        np.testing.assert_array_equal(o1, o2)
        steps += 1
    assert steps > 500


@pytest.mark.parametrize(
    "game,kwargs",
    [
        ("Pong", dict(noop_max=0, fire_reset=False, episodic_life=False)),
        ("Breakout", dict(noop_max=0, fire_reset=True, episodic_life=True)),
    ],
)
def test_python_path_equals_cpp_vector_path(game: str, kwargs: dict) -> None:
    """The Python wrapper stack and ale-py's AtariVectorEnv give identical rollouts (episodic life included)."""
    single = make_dqn_env(game, **kwargs)
    vector = make_dqn_vector_env(1, game, **kwargs)
    o, _ = single.reset(seed=3)
    ov, _ = vector.reset(seed=3)
    np.testing.assert_array_equal(o, ov[0])
    life_losses = 0
    for a in _actions(1200, single.action_space.n, seed=1):
        o, r, term, trunc, info = single.step(a)
        ov, rv, termv, truncv, infov = vector.step(np.array([a]))
        assert r == rv[0] and term == termv[0] and trunc == truncv[0]
        game_over = info.get("game_over", term or trunc)
        if not game_over:
            np.testing.assert_array_equal(o, ov[0])
        if term or trunc:
            if game_over:
                break
            life_losses += 1
            o, _ = single.reset()  # the game continues; the C++ env needs no call
            np.testing.assert_array_equal(o, ov[0])
    if kwargs["episodic_life"]:
        assert life_losses >= 1
    vector.close()


def test_cpp_same_step_final_obs_at_a_life_loss_is_the_frames_reached() -> None:
    # ale-py's SAME_STEP final_obs at a life loss (the game goes on) held zeros or an earlier step's frames; it is
    # now the observation returned, which is the single env's at that step. At a game over it is ale-py's own.
    kwargs = dict(noop_max=0, fire_reset=True, episodic_life=True)
    single = make_dqn_env("Breakout", **kwargs)
    vector = make_dqn_vector_env(1, "Breakout", autoreset_mode="SameStep", **kwargs)
    single.reset(seed=3)
    vector.reset(seed=3)
    life_losses = 0
    for a in _actions(1200, 4, seed=1):
        o, r, term, trunc, info = single.step(a)
        ov, rv, termv, truncv, infov = vector.step(np.array([a]))
        assert term == termv[0]
        if term and not info["game_over"]:
            life_losses += 1
            np.testing.assert_array_equal(infov["final_obs"][0], o)
            single.reset()
        elif term or trunc:
            break
    assert life_losses >= 3
    vector.close()
    # with a batch_size the rows are whichever envs finished first (info["env_id"]): lives are kept per env id
    batched = make_dqn_vector_env(4, "Breakout", autoreset_mode="SameStep", batch_size=2, **kwargs)
    batched.reset(seed=0)
    lives, mended = {}, 0
    for actions in np.random.default_rng(0).integers(0, 4, (1500, 2)):
        ov, _, termv, _, infov = batched.step(actions)
        for row, env_id in enumerate(infov["env_id"]):
            if termv[row] and 0 < infov["lives"][row] < lives.get(env_id, 99):
                np.testing.assert_array_equal(infov["final_obs"][row], ov[row])
                mended += 1
            lives[env_id] = infov["lives"][row]
    assert mended >= 10 and hasattr(batched, "send") and hasattr(batched, "recv")
    batched.close()
    # NEXT_STEP (the default) has no final_obs; without episodic life there is no life-loss episode end
    assert type(make_dqn_vector_env(1, "Breakout")).__name__ == "AtariVectorAPI"
    no_life = make_dqn_vector_env(1, "Breakout", autoreset_mode="SameStep", episodic_life=False)
    assert type(no_life).__name__ == "AtariVectorAPI"
    no_life.close()


def test_single_and_vector_paths_agree_on_shapes_and_refuse_the_same_settings() -> None:
    single, vector = make_dqn_env("Pong", frame_stack=1), make_dqn_vector_env(1, "Pong", frame_stack=1)
    assert single.observation_space.shape == vector.single_observation_space.shape == (1, 84, 84)
    vector.close()
    for bad in (dict(frame_skip=0), dict(frame_stack=0), dict(frame_stack=-1), dict(frame_skip=2.5)):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            make_dqn_env("Pong", **bad)
        with pytest.raises(ValueError, match="must be an integer >= 1"):  # frame_stack=0: the C++ reset hung
            make_dqn_vector_env(1, "Pong", **bad)
    for make in (lambda: make_dqn_env("Pong", noop_max=-5), lambda: make_dqn_vector_env(1, "Pong", noop_max=-5)):
        with pytest.raises(ValueError, match="noop_max must be an integer >= 0"):  # it was silently taken as 0
            make()
    # ale-py takes any value, and at >= 1 (or True, read as 1) every action of the agent was ignored
    for rap in (1.5, -0.1, 1.0, True, float("nan")):
        with pytest.raises(ValueError, match=r"repeat_action_probability .* in \[0, 1\)"):
            make_dqn_env("Pong", repeat_action_probability=rap)
        with pytest.raises(ValueError, match=r"repeat_action_probability .* in \[0, 1\)"):
            make_dqn_vector_env(1, "Pong", repeat_action_probability=rap)
    for n in (0, -1, 1.5):  # 0 crashed the process in C++ (SIGSEGV)
        with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
            make_dqn_vector_env(n, "Pong")
    with pytest.raises(
        ValueError,
        match=r"screen_size must be an integer >= 1 \(one integer: the C\+\+ vector path makes square frames",
    ):
        make_dqn_vector_env(1, "Pong", screen_size=(84, 84))
    # a batch larger than the envs: reset() waited forever; a negative one failed inside numpy
    for batch, says in ((3, "batch_size=3 is more than num_envs=2"), (-1, "batch_size must be an integer >= 0")):
        with pytest.raises(ValueError, match=says):
            make_dqn_vector_env(2, "Pong", batch_size=batch)
    # a frame cap of 0 is no cap on both paths (the C++ env truncated every step); a float failed inside pybind
    for make in (make_dqn_env, lambda *a, **k: make_dqn_vector_env(1, *a, **k)):
        for bad in (-5, 100.5):
            with pytest.raises(ValueError, match="max_num_frames_per_episode must be an integer >= 0 .*0: no cap"):
                make("Pong", max_num_frames_per_episode=bad)
    single = make_dqn_env("Pong", max_num_frames_per_episode=0, noop_max=0)
    vector = make_dqn_vector_env(1, "Pong", max_num_frames_per_episode=0, noop_max=0)
    single.reset(seed=0), vector.reset(seed=0)
    for _ in range(5):
        assert not single.step(0)[3] and not vector.step(np.zeros(1, np.int64))[3][0]
    single.close(), vector.close()


def test_frame_wrappers_bad_input_and_step_before_reset() -> None:
    env = make_dqn_env("Pong", frame_skip=1)  # no MaxAndSkip, whose reset check used to be the only one
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(0)
    with pytest.raises(ValueError, match="crop2013' crops 120 rows .*at most 92"):
        make_dqn_env("Pong", crop2013=True, screen_size=120)
    resized = GrayscaleResize(gym.make("ALE/Pong-v5"), size=np.int64(42))  # a numpy integer size
    assert resized.observation_space.shape == (42, 42)
    # 2.5 was truncated to 2 and True read as 1, silently
    for size in (2.5, True, (84, 0), (84, 84, 3)):
        with pytest.raises(ValueError, match="size must be"):
            GrayscaleResize(gym.make("ALE/Pong-v5"), size=size)
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        make_dqn_env("Pong", screen_size=2.5)
    # True was read as 1 and 2.5 truncated to 2 by these three, silently
    from dreamarcade.wrappers import FrameStack, MaxAndSkip, NoopReset

    for make, name in (
        (lambda: FrameStack(GrayscaleResize(gym.make("ALE/Pong-v5")), num_stack=True), "num_stack"),
        (lambda: MaxAndSkip(gym.make("ALE/Pong-v5", frameskip=1), skip=True), "skip"),
        (lambda: NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_max=2.5), "noop_max"),
    ):
        with pytest.raises(ValueError, match=f"{name} must be an integer"):
            make()
    # crop_top: a float failed as a slice index at the first frame (naming nothing), True was read as 1
    for crop_top in (18.0, True, -1):
        with pytest.raises(ValueError, match="crop_top must be an integer >= 0"):
            GrayscaleResize(gym.make("ALE/Pong-v5"), mode="crop2013", crop_top=crop_top)


def test_wrapped_env_is_rebuilt_from_its_spec() -> None:
    # the wrappers called RecordConstructorArgs.__init__ without inheriting it: env.spec recorded kwargs=None for
    # them and gym.make(env.spec) refused ("cannot be recreated")
    env = ClipRewardSign(
        FrameStack(
            GrayscaleResize(
                FireReset(EpisodicLife(MaxAndSkip(NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_max=7), 3))),
                size=(60, 50),
            ),
            num_stack=3,
        )
    )
    kwargs = {w.name: w.kwargs for w in env.spec.additional_wrappers}
    assert kwargs["NoopReset"] == {"noop_max": 7, "noop_action": 0} and kwargs["MaxAndSkip"] == {"skip": 3}
    assert kwargs["FrameStack"]["num_stack"] == 3 and kwargs["GrayscaleResize"]["size"] == (60, 50)
    rebuilt = gym.make(env.spec)
    a, b = env.reset(seed=3)[0], rebuilt.reset(seed=3)[0]
    assert a.shape == b.shape == (3, 60, 50) and np.array_equal(a, b)
    for action in _actions(50, 6):
        assert np.array_equal(env.step(action)[0], rebuilt.step(action)[0])
    env.close()
    rebuilt.close()


def test_frame_stack_matches_gymnasium() -> None:
    for padding, ref_padding in (("zero", "zero"), ("reset", "reset")):
        ours = FrameStack(GrayscaleResize(gym.make("ALE/Breakout-v5")), 4, padding=padding)
        ref = gym.wrappers.FrameStackObservation(
            GrayscaleResize(gym.make("ALE/Breakout-v5")), 4, padding_type=ref_padding
        )
        assert ours.observation_space == ref.observation_space
        np.testing.assert_array_equal(ours.reset(seed=1)[0], ref.reset(seed=1)[0])
        for a in _actions(60, 4):
            o1 = ours.step(a)[0]
            o2 = ref.step(a)[0]
            np.testing.assert_array_equal(o1, o2)


def test_grayscale_keep_dim_gives_sb3_an_image_it_can_stack() -> None:
    # (84, 84) frames: SB3's VecFrameStack laid four side by side, (84, 336), and CnnPolicy refused them
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    env = GrayscaleResize(gym.make("ALE/Pong-v5"), keep_dim=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == obs.shape == (84, 84, 1)
    np.testing.assert_array_equal(obs[:, :, 0], GrayscaleResize(gym.make("ALE/Pong-v5")).reset(seed=0)[0])
    venv = VecFrameStack(make_vec_env("ALE/Pong-v5", n_envs=1, wrapper_class=GrayscaleResize,
                                      wrapper_kwargs={"keep_dim": True}), 4)  # fmt: skip
    assert venv.observation_space.shape == (84, 84, 4)
    sb3.PPO("CnnPolicy", venv, n_steps=16, batch_size=16, n_epochs=1).learn(16)


def test_frame_stack_zero_padding_stays_in_the_observation_space() -> None:
    # zeros were written whatever the bounds: with 0 outside them the reset observation left the declared space
    def base() -> gym.Env:
        return gym.wrappers.RescaleObservation(gym.make("MountainCar-v0"), 1.0, 2.0)  # Box(1, 2)

    ours = FrameStack(base(), 4)
    ref = gym.wrappers.FrameStackObservation(base(), 4, padding_type="zero")
    obs, ref_obs = ours.reset(seed=0)[0], ref.reset(seed=0)[0]
    assert ours.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, ref_obs)  # Gymnasium clips its zeros into the bounds too


def test_frame_wrappers_can_be_copied_and_pickled() -> None:
    import copy
    import pickle

    env = FrameStack(GrayscaleResize(gym.make("ALE/Pong-v5")), 4)  # GrayscaleResize kept the cv2 module: neither
    env.reset(seed=0)
    for a in _actions(20, 6):
        env.step(a)
    for twin in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        np.testing.assert_array_equal(twin._stack(), env._stack())  # the frames so far came along
        obs = twin.step(0)[0]
        assert twin.observation_space.contains(obs) and np.array_equal(obs[:3], env._stack()[1:])
        twin.close()


def test_frame_stack_returns_independent_arrays() -> None:
    env = FrameStack(GrayscaleResize(gym.make("ALE/Pong-v5")), 4)
    first, _ = env.reset(seed=0)
    kept = first.copy()
    for a in _actions(10, 6):
        env.step(a)
    np.testing.assert_array_equal(first, kept)  # later steps never write into an array we handed out


def test_grayscale_resize_is_cv2_inter_area() -> None:
    env = gym.make("ALE/Pong-v5")
    wrapped = GrayscaleResize(env)
    raw, _ = env.reset(seed=0)
    obs, _ = wrapped.reset(seed=0)
    expected = cv2.resize(cv2.cvtColor(raw, cv2.COLOR_RGB2GRAY), (84, 84), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(obs, expected)
    crop = GrayscaleResize(gym.make("ALE/Pong-v5"), mode="crop2013")
    obs2013, _ = crop.reset(seed=0)
    assert obs2013.shape == (84, 84)
    full = cv2.resize(cv2.cvtColor(raw, cv2.COLOR_RGB2GRAY), (84, 110), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(obs2013, full[18:102])
    color = GrayscaleResize(gym.make("ALE/Pong-v5"), size=(64, 48), grayscale=False)
    assert color.reset(seed=0)[0].shape == (64, 48, 3)


def test_max_and_skip_fast_path_equals_generic_path() -> None:
    class Passthrough(gym.Wrapper):  # any non-transparent wrapper forces the generic path
        pass

    fast = MaxAndSkip(gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0), 4)
    slow = MaxAndSkip(Passthrough(gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)), 4)
    assert fast._ale_env is not None and slow._ale_env is None
    ref = gym.wrappers.MaxAndSkipObservation(gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0), 4)
    for env in (fast, slow, ref):
        env.reset(seed=5)
    for a in _actions(3000, 4, seed=2):
        a_out, b_out, c_out = fast.step(a), slow.step(a), ref.step(a)
        np.testing.assert_array_equal(a_out[0], b_out[0])
        assert a_out[1:4] == b_out[1:4] == c_out[1:4]
        assert a_out[4] == b_out[4]
        if a_out[2] or a_out[3]:
            break
        np.testing.assert_array_equal(a_out[0], c_out[0])


def test_max_and_skip_rejects_double_skipping() -> None:
    with pytest.raises(ValueError, match="frameskip=1"):
        MaxAndSkip(gym.make("ALE/Pong-v5"), 4)  # v5 already skips 4


def test_clip_reward_sign() -> None:
    env = ClipRewardSign(gym.wrappers.TransformReward(gym.make("CartPole-v1"), lambda r: -0.3 * r))
    env.reset(seed=0)
    assert env.step(0)[1] == -1.0
    assert isinstance(env.step(0)[1], float)


def test_noop_reset_is_seeded_and_bounded() -> None:
    counts = []
    for seed in range(6):
        env = NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_max=30)
        env.reset(seed=seed)
        counts.append(env.last_noops)
        env2 = NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_max=30)
        env2.reset(seed=seed)
        assert env2.last_noops == env.last_noops
    assert all(1 <= c <= 30 for c in counts) and len(set(counts)) > 1
    # the reset's info keys (ALE's "seeds") are kept, as Gymnasium's AtariPreprocessing keeps them; the no-ops'
    # frame numbers are on top
    noop = NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_max=30)
    _, info = noop.reset(seed=0)
    _, reference = gym.wrappers.AtariPreprocessing(gym.make("ALE/Pong-v5", frameskip=1), noop_max=30).reset(seed=0)
    assert "seeds" in info and set(info) == set(reference)
    assert info["frame_number"] == noop.last_noops


def test_noop_reset_checks_noop_action() -> None:
    with pytest.raises(ValueError, match="not 'NOOP'"):
        NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_action=1)
    with pytest.raises(ValueError, match="noop_action=9 is not an action of this env"):
        NoopReset(gym.make("ALE/Pong-v5", frameskip=1), noop_action=9)
    for bad in (0.5, "0"):  # 0.5 became 0 on an env without action meanings; "0" failed inside a comparison
        with pytest.raises(ValueError, match="noop_action must be an integer >= 0"):
            NoopReset(gym.make("CartPole-v1"), noop_action=bad)


def test_episodic_life_resets_only_at_game_over() -> None:
    env = EpisodicLife(MaxAndSkip(FireReset(gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0))))
    env.reset(seed=0)
    assert env.lives == 5
    frame_before = None
    for a in _actions(5000, 4, seed=3):
        _, _, term, trunc, info = env.step(a)
        if term:
            assert not info["game_over"]
            frame_before = info["episode_frame_number"]
            break
    assert frame_before is not None, "no life was lost"
    _, info = env.reset()
    assert info["life_loss_continue"] and env.lives == 4
    assert env.unwrapped.ale.getEpisodeFrameNumber() == frame_before  # same game, nothing stepped
    for a in _actions(5000, 4, seed=4):  # lose another life; then an explicit new_game option starts a new game
        if env.step(a)[2]:
            break
    assert env.lives == 3
    _, info = env.reset(options={"new_game": True})
    assert "life_loss_continue" not in info and env.lives == 5
    # Any other reset starts a new game: one called mid-life, or after an outer TimeLimit's truncation.
    env.step(1)
    _, info = env.reset()
    assert "life_loss_continue" not in info and env.lives == 5
    limited = gym.wrappers.TimeLimit(env, max_episode_steps=3)
    limited.reset(seed=1)
    for _ in range(3):
        _, _, term, trunc, _ = limited.step(0)
    assert trunc and not term
    _, info = limited.reset()
    assert "life_loss_continue" not in info and env.unwrapped.ale.getEpisodeFrameNumber() < 3 * 4 + 31
    with pytest.raises(TypeError, match="lives"):
        EpisodicLife(gym.make("CartPole-v1"))


def test_fire_reset_presses_fire_once() -> None:
    env = FireReset(gym.make("ALE/Breakout-v5", frameskip=1))
    _, info = env.reset(seed=0)
    assert env.active and info["episode_frame_number"] == 1
    assert FireReset(gym.make("ALE/Pong-v5", frameskip=1)).active  # Pong lists FIRE as action 1 too
    assert not FireReset(gym.make("CartPole-v1")).active


@pytest.mark.parametrize("reset_wrapper", [FireReset, lambda e: NoopReset(e, noop_max=30)])
def test_reset_wrappers_outside_episodic_life_leave_a_lost_lifes_reset_alone(reset_wrapper) -> None:
    """SB3's order (FireReset outside EpisodicLife): the FIRE / no-ops after a lost life moved the game on while
    FrameStack kept its frames for the continued game, so the stack no longer showed the screen."""
    base = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    gray = GrayscaleResize(reset_wrapper(EpisodicLife(MaxAndSkip(base, 4))))
    env = FrameStack(gray, 4)
    env.reset(seed=0)
    for t in range(3000):
        obs, _, terminated, truncated, info = env.step(1 if t == 0 else 0)
        if terminated or truncated:
            break
    assert not info["game_over"]
    before = base.unwrapped.ale.getEpisodeFrameNumber()
    again, reset_info = env.reset()
    assert reset_info["life_loss_continue"] and base.unwrapped.ale.getEpisodeFrameNumber() == before
    np.testing.assert_array_equal(again[-1], gray.observation(base.unwrapped.ale.getScreenRGB()))


def test_image_wrappers_reject_vector_observations() -> None:
    with pytest.raises(TypeError, match=r"GrayscaleResize needs an image observation"):
        GrayscaleResize(gym.make("CartPole-v1"))
    cartpole = gym.make("CartPole-v1")
    dict_env = gym.wrappers.TransformObservation(
        cartpole, lambda o: {"x": o}, gym.spaces.Dict({"x": cartpole.observation_space})
    )
    with pytest.raises(TypeError, match="Dict"):
        GrayscaleResize(dict_env)
    with pytest.raises(TypeError, match="Box"):
        FrameStack(dict_env, 4)


def test_vector_env_entry_point_and_sticky_actions_explicit() -> None:
    envs = gym.make_vec("DQNPong-v0", num_envs=2, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    envs.close()
    # ale-py's own vector options pass through (they were refused as "not supported")
    same_step = gym.make_vec(
        "DQNPong-v0",
        num_envs=1,
        vectorization_mode="vector_entry_point",
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        thread_affinity_offset=-1,
        batch_size=0,
    )
    assert same_step.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    same_step.close()
    env = gym.make("DQNPong-v0")
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    sticky = gym.make("DQNPong-v0", repeat_action_probability=0.25)
    assert sticky.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)


def test_same_wrappers_on_stable_retro_airstriker() -> None:
    stable_retro = pytest.importorskip("stable_retro")
    raw = stable_retro.make("Airstriker-Genesis-v0", render_mode=None)
    try:
        env = FrameStack(ClipRewardSign(GrayscaleResize(MaxAndSkip(raw, 4))), 4)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        rng = np.random.default_rng(0)
        for _ in range(50):
            obs, r, term, trunc, _ = env.step(rng.integers(0, 2, size=12).astype(np.int8))
            assert r in (-1.0, 0.0, 1.0)
            assert not (obs[-1] == 0).all()
        # the newest frame is the resized max of the last two emulator frames
        raw.reset(seed=0)
        a = np.zeros(12, np.int8)
        frames = [raw.step(a)[0] for _ in range(4)]
        pooled = MaxAndSkip(raw, 4)
        raw.reset(seed=0)
        expected = np.maximum(frames[2], frames[3])
        np.testing.assert_array_equal(pooled.step(a)[0], expected)
    finally:
        raw.close()


def test_same_wrappers_on_vizdoom() -> None:
    pytest.importorskip("vizdoom")
    import vizdoom.gymnasium_wrapper  # noqa: F401

    base = gym.make("VizdoomTakeCover-v1")
    screen_space = base.observation_space["screen"]
    env = gym.wrappers.TransformObservation(base, lambda o: o["screen"], screen_space)
    env = FrameStack(ClipRewardSign(GrayscaleResize(MaxAndSkip(env, 4))), 4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84)
    total = 0.0
    for a in _actions(30, 3):
        obs, r, term, trunc, _ = env.step(a)
        total += r
        if term or trunc:
            break
    assert total > 0  # TakeCover pays +1 per tic survived; clipped to +1 per agent step
    env.close()


def test_the_cpp_vector_env_takes_gymnasiums_seed_lists_and_gives_float_rewards() -> None:
    # gym.make_vec("DQNPong-v0", ...) is ale-py's AtariVectorEnv: reset(seed=[0, 1]) was a TypeError ('Unsupported
    # seed type'), a list of actions an AssertionError, and rewards int32 where the sync and async modes give float64
    envs = make_dqn_vector_env(2, "Breakout")
    listed = envs.reset(seed=[5, 9])[0]
    np.testing.assert_array_equal(listed, envs.reset(seed=np.array([5, 9]))[0])
    np.testing.assert_array_equal(listed[1], envs.reset(seed=[np.int64(9), 5])[0][0])  # per env, NumPy ints too
    envs.reset(seed=[5, None])  # None: that env unseeded, as in SyncVectorEnv
    # a partial reset numbers the seeds by env, as the sync mode does (ale-py counted only the envs being reset)
    masked = envs.reset(seed=8, options={"reset_mask": np.array([False, True])})[0]
    np.testing.assert_array_equal(masked[1], listed[1])
    masked = envs.reset(seed=[0, 9], options={"reset_mask": np.array([False, True])})[0]
    np.testing.assert_array_equal(masked[1], listed[1])
    for bad in ([-1, 5], [0.9, 5], [2**31, 0], [1, 2, 3]):  # ale-py: -1 unseeded, 0.9 cut to 0, a TypeError
        with pytest.raises(ValueError, match="seed"):
            envs.reset(seed=bad)
    for bad in ([0.7, 1.9], [4, 0], [-1, 0]):  # cut to [0, 1]; Breakout has 4 actions: the C++ env hung
        with pytest.raises(ValueError, match=r"actions must be integers in \[0, 4\)"):
            envs.step(bad)
    assert envs.batch_size == 2 and envs.ale is envs.unwrapped.ale  # ale-py's attributes read through
    sync = gym.make_vec("DQNBreakout-v0", num_envs=2, vectorization_mode="sync")
    sync.reset(seed=0)
    envs.reset(seed=0)
    for _ in range(200):
        rewards = envs.step([1, 3])[1]  # FIRE, LEFT as a plain list
        assert rewards.dtype == sync.step(np.array([1, 3]))[1].dtype == np.float64
    envs.close()
    sync.close()
