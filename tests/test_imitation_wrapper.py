"""YouTubeImitationReward: order, threshold, pay-once logic with a hand-built embedder; vector == single;
clear errors; the registered env passes check_env and works with SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dreamarcade.errors import VideoError
from dreamarcade.reward_models.checkpoints import CheckpointTracker, CheckpointTrajectory, build_checkpoints
from dreamarcade.wrappers.imitation import YouTubeImitationReward, YouTubeImitationRewardVector

S = 8  # frame size the hand-built embedder reads


class ColourEmbedder:
    """Hand-built embedder: one-hot of the last frame's red level (8 levels), so a "place" is a colour."""

    frame_size, stack, embed_dim = S, 2, 8

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, stacks: np.ndarray) -> np.ndarray:
        if stacks.shape[1:] != (self.stack, S, S, 3):
            raise ValueError(f"bad stack shape {stacks.shape}")
        self.calls.append(len(stacks))
        level = stacks[:, -1, S // 2, S // 2, 0] // 32
        return np.eye(8, dtype=np.float32)[level]


class CorridorEnv(gym.Env):
    """A corridor of 8 coloured places: action 1 moves forward, 0 stays, 2 moves back; RGB frames."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.pos = 0

    def _obs(self) -> np.ndarray:
        return np.full((16, 16, 3), 32 * self.pos + 5, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = int(np.clip(self.pos + {0: 0, 1: 1, 2: -1}[int(action)], 0, 7))
        return self._obs(), 1.0, self.pos == 7, False, {}

    def render(self):
        return self._obs()


def _checkpoints(places: list[int]) -> CheckpointTrajectory:
    emb = np.eye(8, dtype=np.float32)[places]
    return CheckpointTrajectory(emb, np.zeros(8, np.float32), np.arange(len(places)) * 16, 16, "hand-built")


def test_tracker_order_threshold_and_no_double_pay():
    t = CheckpointTracker(4, threshold=0.5, reward=0.5, skip=1)
    assert t.update(np.array([0.4, 0.0, 0.0, 0.0])) == (0.0, -1)  # below threshold
    assert t.update(np.array([0.0, 0.0, 0.0, 0.9])) == (0.0, -1)  # checkpoint 3 is not a candidate yet
    assert t.update(np.array([0.0, 0.6, 0.0, 0.0])) == (0.5, 1)  # skipping one (0) is allowed
    assert t.update(np.array([0.0, 0.9, 0.0, 0.0])) == (0.0, -1)  # 1 already paid
    assert t.update(np.array([0.9, 0.0, 0.0, 0.0])) == (0.0, -1)  # 0 was skipped: never paid later
    assert t.update(np.array([0.0, 0.0, 0.7, 0.8])) == (0.5, 3)  # the more similar candidate wins
    assert t.update(np.ones(4)) == (0.0, -1)  # all done
    t.reset()
    assert t.update(np.array([0.9, 0.0, 0.0, 0.0])) == (0.5, 0)
    strict = CheckpointTracker(3, skip=0)
    assert strict.update(np.array([0.0, 0.9, 0.0])) == (0.0, -1)


def test_wrapper_pays_checkpoints_in_order_once_and_modes():
    ck = _checkpoints([1, 2, 3, 5])
    env = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, mode="replace")
    _, info = env.reset(seed=0)
    assert info["imitation_checkpoint"] == 0
    rewards, matched = [], []
    for a in [1, 0, 2, 1, 1, 1, 1, 1]:  # forward, wait, back, then forward to the end
        _, r, term, _, info = env.step(a)
        rewards.append(r)
        matched.append(info["imitation_matched"])
        if term:
            break
    # place 1 pays once (revisiting it after stepping back pays nothing); 2, 3 then 5 (4 is not a checkpoint)
    assert matched == [0, -1, -1, -1, 1, 2, -1, 3]
    assert rewards == [0.5, 0, 0, 0, 0.5, 0.5, 0, 0.5]
    assert info["imitation_checkpoint"] == 4
    env = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, mode="add", reward=0.25)
    env.reset(seed=0)
    _, r, _, _, info = env.step(1)
    assert r == 1.25 and info["env_reward"] == 1.0 and info["imitation_reward"] == 0.25


def test_wrapper_threshold_and_observation_of_similarities():
    ck = _checkpoints([1, 2])
    env = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, threshold=0.0, observe_similarity=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"obs", "similarity"} and obs["similarity"].shape == (2,)
    assert env.observation_space.contains(obs)
    obs, r, *_ = env.step(0)  # still at place 0: similarity 0.0 to both checkpoints
    assert r == 1.0  # similarity 0.0 is not > threshold 0.0: game reward only
    np.testing.assert_allclose(obs["similarity"], [0.0, 0.0])
    obs, r, *_ = env.step(1)
    assert r == 1.5  # place 1 is checkpoint 0: similarity 1.0 > 0.0 pays
    np.testing.assert_allclose(obs["similarity"], [0.0, -1.0])  # the next: place 2; none after it (-1)


def test_vector_wrapper_matches_single_and_embeds_in_one_batch():
    ck = _checkpoints([1, 2, 3, 5, 6])
    actions = np.random.default_rng(0).choice([0, 1, 1, 2], size=(40, 3))
    singles = [YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck) for _ in range(3)]
    emb = ColourEmbedder()
    venv = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv] * 3), emb, ck)
    venv.reset(seed=0)
    for s in singles:
        s.reset(seed=0)
    emb.calls.clear()
    done = np.zeros(3, bool)
    for a in actions:
        _, vr, vterm, _, vinfo = venv.step(a)
        for i, s in enumerate(singles):
            if done[i]:  # NEXT_STEP autoreset: this step is the reset of sub-env i
                _, info = s.reset()
                sr, sterm = 0.0, False
                assert vr[i] == 0.0
                assert "env_reward" not in info and not vinfo["_env_reward"][i]  # a reset has no env reward
            else:
                _, sr, sterm, _, info = s.step(a[i])
                assert vr[i] == sr
            assert vinfo["imitation_checkpoint"][i] == info["imitation_checkpoint"]
            done[i] = sterm
        assert (vterm == done).all()
    assert emb.calls == [3] * len(actions)  # one batched call per vector step


class LivesCorridor(CorridorEnv):
    """CorridorEnv under EpisodicLife's protocol: a life is lost on first reaching place 3 (the episode ends), and
    the reset after it goes on with the same game, marked ``info["life_loss_continue"]``."""

    def reset(self, *, seed=None, options=None):
        if getattr(self, "_lost", False):
            self._lost = False  # as EpisodicLife: the last step's info, marked
            return self._obs(), {**self._last_info, "life_loss_continue": True}
        self._lives = 2
        return super().reset(seed=seed)

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        if self.pos == 3 and self._lives == 2:
            self._lives, self._lost = 1, True
            term = True
        self._last_info = info  # kept as EpisodicLife keeps it (the same dict object)
        return obs, r, term, trunc, info


def test_a_lost_life_under_episodic_life_does_not_pay_the_games_checkpoints_again():
    # the reset after a lost life set the progress back to 0: the same game's checkpoints were paid again
    ck = _checkpoints([1, 2, 3, 5])
    actions = [1, 1, 1, 2, 2, 1, 1, 1, 1]  # to place 3 (life lost there), back to 1, forward to the end
    env = YouTubeImitationReward(LivesCorridor(), ColourEmbedder(), ck, mode="replace")
    env.reset(seed=0)
    paid, progress = [], []
    for a in actions:
        _, r, term, _, info = env.step(a)
        paid.append(r)
        if term and info["imitation_checkpoint"] == 3:
            _, info = env.reset()
            assert info["life_loss_continue"] and info["imitation_checkpoint"] == 3
        progress.append(info["imitation_checkpoint"])
    assert paid == [0.5, 0.5, 0.5, 0, 0, 0, 0, 0, 0.5]  # 1, 2, 3 once each, then 5
    _, info = env.reset(seed=1)  # a new game starts over
    assert info["imitation_checkpoint"] == 0
    # the vector wrapper (NEXT_STEP autoreset: the reset comes in the next step) keeps the progress too
    venv = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([LivesCorridor] * 2), ColourEmbedder(), ck)
    venv.reset(seed=0)
    vprogress = []
    for a in [1, 1, 1, 0, 2, 2, 1, 1, 1, 1]:
        _, vr, _, _, vinfo = venv.step(np.array([a, a]))
        vprogress.append(vinfo["imitation_checkpoint"].tolist())
        assert (vr <= 1.5).all()
    assert vprogress[3] == [3, 3] and vprogress[-1] == [4, 4]
    # ... and so does its reset() (a partial reset of the ended sub-env; it set the progress back to 0 and the game's
    # checkpoints were paid again); a new game (a first reset) starts over
    nxt = gym.vector.AutoresetMode.NEXT_STEP
    venv = YouTubeImitationRewardVector(
        gym.vector.SyncVectorEnv([LivesCorridor], autoreset_mode=nxt), ColourEmbedder(), ck
    )
    venv.reset(seed=0)
    for a in [1, 1, 1]:
        _, _, term, _, vinfo = venv.step(np.array([a]))
    assert term[0] and vinfo["imitation_checkpoint"][0] == 3
    _, vinfo = venv.reset(options={"reset_mask": term})
    assert vinfo["life_loss_continue"][0] and vinfo["imitation_checkpoint"][0] == 3
    # the single wrapper's reset after a lost life reported the last step's env_reward (it wrote into the inner
    # env's info, which EpisodicLife hands back as the reset info)
    env.reset(seed=0)
    for a in [1, 1, 1]:
        _, _, term, _, info = env.step(a)
    assert term and "env_reward" in info
    _, info = env.reset()
    assert info["life_loss_continue"] and "env_reward" not in info


def test_vector_same_step_pays_a_checkpoint_on_the_last_frame_like_single():
    ck = _checkpoints([1, 2, 3, 5, 7])  # place 7 ends the episode: its checkpoint is reached on the last frame
    actions = np.random.default_rng(1).choice([0, 1, 1, 1, 2], size=(60, 3))
    singles = [YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, observe_similarity=True) for _ in range(3)]
    venv = gym.vector.SyncVectorEnv([CorridorEnv] * 3, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    venv = YouTubeImitationRewardVector(venv, ColourEmbedder(), ck, observe_similarity=True)
    venv.reset(seed=0)
    for s in singles:
        s.reset(seed=0)
    paid_on_last_frame = 0
    for a in actions:
        vobs, vr, vterm, _, vinfo = venv.step(a)
        for i, s in enumerate(singles):
            sobs, sr, sterm, _, info = s.step(a[i])
            assert vr[i] == sr and vterm[i] == sterm
            assert vinfo["imitation_matched"][i] == info["imitation_matched"]
            if sterm:  # SAME_STEP: the vector's obs is already the next episode's first
                assert vinfo["final_info"]["imitation_checkpoint"][i] == info["imitation_checkpoint"]
                final = vinfo["final_obs"][i]  # the last observation, in the observation space like the single's
                assert venv.single_observation_space.contains(final)
                np.testing.assert_array_equal(final["obs"], sobs["obs"])
                np.testing.assert_array_equal(final["similarity"], sobs["similarity"])
                paid_on_last_frame += info["imitation_matched"] == 4
                sobs, info = s.reset()
            assert vinfo["imitation_checkpoint"][i] == info["imitation_checkpoint"]
            np.testing.assert_array_equal(vobs["similarity"][i], sobs["similarity"])
    assert paid_on_last_frame >= 2


def test_vector_reset_mask_resets_only_the_masked_envs():
    ck = _checkpoints([1, 2, 3, 5])
    venv = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv] * 2), ColourEmbedder(), ck)
    venv.reset(seed=0)
    for _ in range(3):
        _, _, _, _, info = venv.step(np.array([1, 1]))  # both at place 3: checkpoints 0, 1, 2 paid
    assert info["imitation_checkpoint"].tolist() == [3, 3]
    ring1, newest = venv._ring[1].copy(), venv._newest
    _, info = venv.reset(options={"reset_mask": np.array([True, False])})
    assert info["imitation_checkpoint"].tolist() == [0, 3]
    np.testing.assert_array_equal(venv._ring[1], ring1)  # env 1's frames are kept, in the same ring order
    assert venv._newest == newest
    _, r, _, _, info = venv.step(np.array([1, 1]))  # env 0 at place 1 (paid again), env 1 at place 4 (none)
    assert r.tolist() == [1.5, 1.0]
    _, r, _, _, info = venv.step(np.array([1, 1]))  # env 0 at place 2, env 1 at place 5: checkpoint 3
    assert r.tolist() == [1.5, 1.5] and info["imitation_checkpoint"].tolist() == [2, 4]


class BlackFirstFrameEnv(CorridorEnv):
    """The corridor seen through a letterbox (4 black rows at top and bottom), after an all-black first frame."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Box(0, 255, (24, 16, 3), np.uint8)
        self.t = 0

    def _obs(self) -> np.ndarray:
        frame = np.zeros((24, 16, 3), np.uint8)
        if self.t > 0:
            frame[4:20] = 32 * self.pos + 5 + 40
        return frame

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.t += 1
        return super().step(action)


def test_auto_crop_is_detected_on_the_first_frame_that_is_not_black():
    from dreamarcade.reward_models.video import CropBox, process_frame

    env = YouTubeImitationReward(BlackFirstFrameEnv(), ColourEmbedder(), _checkpoints([1, 2]))
    env.reset(seed=0)
    assert env.crop == "auto"  # an all-black frame shows no border: detection waits
    obs, *_ = env.step(1)
    assert env.crop == CropBox(4, 4, 0, 0)
    np.testing.assert_array_equal(env._ring[0, :, :, env._newest], process_frame(obs, CropBox(4, 4, 0, 0), (S, S)))
    env.reset()
    assert env.crop == CropBox(4, 4, 0, 0)  # kept once found


def test_clear_errors():
    ck = _checkpoints([1, 2])

    class Wide(ColourEmbedder):
        embed_dim = 16

    with pytest.raises(ValueError, match="8-d embeddings but the embedder outputs 16-d"):
        YouTubeImitationReward(CorridorEnv(), Wide(), ck)
    with pytest.raises(ValueError, match="mode must be"):
        YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, mode="sum")
    frames = np.zeros((20, S, S, 3), np.uint8)
    with pytest.raises(VideoError, match="too short for checkpoints every 16"):
        build_checkpoints(ColourEmbedder(), frames, every=16)
    with pytest.raises(ValueError, match="demo frames must be"):
        build_checkpoints(ColourEmbedder(), np.zeros((64, 12, 12, 3), np.uint8))
    traj = build_checkpoints(ColourEmbedder(), np.zeros((64, S, S, 3), np.uint8), every=16, centre=False)
    assert len(traj) == 3 and traj.frame_indices.tolist() == [16, 32, 48]


def test_checkpoint_trajectory_round_trip(tmp_path):
    ck = _checkpoints([1, 2, 3])
    ck.save(tmp_path / "ck")
    back = CheckpointTrajectory.load(tmp_path / "ck")
    np.testing.assert_array_equal(back.embeddings, ck.embeddings)
    np.testing.assert_array_equal(back.mean, ck.mean)
    np.testing.assert_array_equal(back.frame_indices, ck.frame_indices)
    assert back.every == 16


def test_envs_without_rgb_frames_get_the_wrappers_message_and_a_dict_image_falls_back_to_render():
    import ale_py

    gym.register_envs(ale_py)

    class GrayDict(CorridorEnv):  # a Dict with a grayscale "image": the RGB frame comes from render()
        def __init__(self) -> None:
            super().__init__()
            self.observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (16, 16), np.uint8)})

        def _obs(self):
            return {"image": np.full((16, 16), 32 * self.pos + 5, np.uint8)}

        def render(self):
            return np.full((16, 16, 3), 32 * self.pos + 5, np.uint8)

    class GrayNoRender(GrayDict):
        def render(self):
            return None

    ck = _checkpoints([1, 2])
    env = YouTubeImitationReward(GrayDict(), ColourEmbedder(), ck)
    env.reset(seed=0)
    assert env.step(1)[1] == pytest.approx(0.5 + 1.0)  # place 1 reached, from the rendered frame
    with pytest.raises(ValueError, match="needs RGB frames.*nor a Dict with one under 'image'"):
        YouTubeImitationReward(GrayNoRender(), ColourEmbedder(), ck).reset(seed=0)
    ale = gym.make("ALE/Pong-v5", obs_type="grayscale")  # no render_mode: ALE's render() raises
    with pytest.raises(ValueError, match="render_mode='rgb_array' .env.render.. failed: .*render mode"):
        YouTubeImitationReward(ale, ColourEmbedder(), ck).reset(seed=0)
    ale.close()


def test_float_frames_numpy_crops_and_bad_spacings_are_handled_clearly():
    class FloatCorridor(CorridorEnv):  # frames rescaled to [0, 1]: a uint8 cast would make them all black
        def __init__(self) -> None:
            super().__init__()
            self.observation_space = gym.spaces.Box(0.0, 1.0, (16, 16, 3), np.float32)

        def _obs(self) -> np.ndarray:
            return super()._obs().astype(np.float32) / 255.0

    ck = _checkpoints([1, 2])
    with pytest.raises(ValueError, match="needs uint8 RGB frames"):
        YouTubeImitationReward(FloatCorridor(), ColourEmbedder(), ck).reset(seed=0)
    with pytest.raises(ValueError, match="needs uint8 RGB observations"):
        YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([FloatCorridor]), ColourEmbedder(), ck)
    env = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, crop=np.array([1, 1, 0, 0]))
    from dreamarcade.reward_models.video import CropBox

    assert env.crop == CropBox(1, 1, 0, 0)
    with pytest.raises(ValueError, match="crop must be"):
        YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, crop=np.zeros(3))
    with pytest.raises(ValueError, match="CropBox.top must be an integer >= 0"):  # it kept the frame's last rows
        YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, crop=(-3, 0, 0, 0))
    with pytest.raises(ValueError, match="CropBox.left must be an integer >= 0"):  # not truncated to 1
        CropBox(left=1.5)
    too_big = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, crop=(10, 10, 0, 0))
    with pytest.raises(ValueError, match=r"leaves nothing of a 16x16 frame"):  # was an OpenCV assertion
        too_big.reset(seed=0)
    # an action outside the Discrete space: ALE played -1 as its last action and failed on 18 with an IndexError
    single = YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck)
    single.reset(seed=0)
    vector = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv] * 2), ColourEmbedder(), ck)
    vector.reset(seed=0)
    for bad in (-1, 3, 1.5):
        with pytest.raises(gym.error.InvalidAction, match=r"not in the action space Discrete\(3\); pass an int in"):
            single.step(bad)
        with pytest.raises(gym.error.InvalidAction, match="not in the action space Discrete"):
            vector.step(np.array([0, bad]))
    single.step(np.int64(1)), vector.step(np.array([1, 2]))  # numpy ints are actions
    # NaN never paid, 1.5 was truncated to 1; a threshold of 1 or more (a similarity is at most 1) never paid either
    bads = ({"threshold": float("nan")}, {"threshold": 1.0}, {"reward": float("inf")}, {"skip": 1.5}, {"skip": -1})
    for bad in bads:
        with pytest.raises(ValueError, match=next(iter(bad))):
            YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck, **bad)
    frames = np.zeros((64, S, S, 3), np.uint8)
    for every in (0, -16, 2.5):
        with pytest.raises(ValueError, match="every .* must be an integer >= 1"):
            build_checkpoints(ColourEmbedder(), frames, every=every)
    with pytest.raises(ValueError, match="start must be in"):
        build_checkpoints(ColourEmbedder(), frames, every=16, start=64)


def test_vector_info_has_gymnasium_masks_like_a_sync_vector_of_single_wrappers():
    ck = _checkpoints([1, 2, 3])
    venv = YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv] * 2), ColourEmbedder(), ck)
    sync = gym.vector.SyncVectorEnv([lambda: YouTubeImitationReward(CorridorEnv(), ColourEmbedder(), ck)] * 2)
    _, info = venv.reset(seed=0)
    _, sync_info = sync.reset(seed=0)
    assert info["_imitation_checkpoint"].tolist() == [True, True]
    _, info = venv.reset(options={"reset_mask": np.array([False, True])})
    assert info["_imitation_checkpoint"].tolist() == [False, True]  # only the reset env's entries are new
    _, _, _, _, info = venv.step(np.array([1, 1]))
    _, _, _, _, sync_info = sync.step(np.array([1, 1]))
    keys = {k for k in sync_info if "imitation" in k or "env_reward" in k}
    assert keys and keys == {k for k in info if "imitation" in k or "env_reward" in k}
    for k in keys:
        np.testing.assert_array_equal(info[k], sync_info[k])


def test_checkpoint_trajectory_load_refuses_incomplete_or_inconsistent_files(tmp_path):
    import torch

    from dreamarcade.checkpoint import save_checkpoint
    from dreamarcade.errors import CheckpointError

    emb = torch.eye(4)[:2]
    config = {"kind": "imitation_checkpoints", "every": 16, "num_checkpoints": 2, "embed_dim": 4}
    save_checkpoint(tmp_path / "no_mean", {"embeddings": emb, "frame_indices": torch.tensor([16, 32])}, config)
    with pytest.raises(CheckpointError, match="lacks mean"):
        CheckpointTrajectory.load(tmp_path / "no_mean")
    bad = {"embeddings": emb, "mean": torch.zeros(7), "frame_indices": torch.tensor([16, 32])}
    save_checkpoint(tmp_path / "bad_mean", bad, config)
    with pytest.raises(CheckpointError, match=r"inconsistent: the centring mean must have the embeddings' size \(4,\)"):
        CheckpointTrajectory.load(tmp_path / "bad_mean")
    bad = {"embeddings": emb, "mean": torch.zeros(4), "frame_indices": torch.tensor([16])}
    save_checkpoint(tmp_path / "bad_index", bad, config)
    with pytest.raises(CheckpointError, match="one integer frame index per checkpoint"):
        CheckpointTrajectory.load(tmp_path / "bad_index")
    half = {"embeddings": emb.bfloat16(), "mean": torch.zeros(4).bfloat16(), "frame_indices": torch.tensor([16, 32])}
    save_checkpoint(tmp_path / "bf16", half, config)
    loaded = CheckpointTrajectory.load(tmp_path / "bf16")  # bfloat16 has no numpy type: read as float32
    assert loaded.embeddings.dtype == np.float32 and loaded.embeddings.tolist() == emb.tolist()


def test_checkpoints_remember_their_encoder_and_the_wrappers_refuse_another(tmp_path):
    import torch

    from dreamarcade.reward_models.checkpoints import FrameStackEmbedder
    from dreamarcade.reward_models.embedding import TDCCMC, EmbeddingConfig

    torch.manual_seed(0)
    built_with, other = FrameStackEmbedder(TDCCMC(EmbeddingConfig())), FrameStackEmbedder(TDCCMC(EmbeddingConfig()))
    frames = np.random.default_rng(0).integers(0, 255, (40, 54, 54, 3), dtype=np.uint8)
    ck = build_checkpoints(built_with, frames, every=16)
    ck.save(tmp_path / "ck")
    loaded = CheckpointTrajectory.load(tmp_path / "ck")
    assert loaded.embedding_fingerprint == built_with.fingerprint != other.fingerprint
    YouTubeImitationReward(CorridorEnv(), built_with, loaded).close()  # the encoder it was built with: fine
    # same embedding size, other weights: the similarities would mean nothing, so both wrappers refuse
    with pytest.raises(ValueError, match=rf"embedded by another encoder \(fingerprint {built_with.fingerprint}\)"):
        YouTubeImitationReward(CorridorEnv(), other, loaded)
    with pytest.raises(ValueError, match="embedded by another encoder"):
        YouTubeImitationRewardVector(gym.vector.SyncVectorEnv([CorridorEnv]), other, loaded)
    # a trajectory from before the fingerprint (None) is still accepted
    loaded.embedding_fingerprint = None
    YouTubeImitationReward(CorridorEnv(), other, loaded).close()


def test_the_bundled_checkpoints_were_built_by_the_bundled_embedding():
    from dreamarcade.envs.montezuma_imitation import ASSET_DIR
    from dreamarcade.wrappers.imitation import load_imitation_model

    embedder, checkpoints = load_imitation_model(ASSET_DIR)
    assert checkpoints.embedding_fingerprint == embedder.fingerprint
