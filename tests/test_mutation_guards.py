"""Guards for two behaviours a mutation audit could change without any test failing.

* Event-anchored CMC pairs (``train_embedding.losses`` with ``event_fraction > 0``): the audio window sits on a
  sound event and holds the samples of frames ``j - stack + 1 .. j`` exactly; the visual stack is at the gap of the
  pair's class; class 0 (the aligned pair, gap 0) is the positive, class 1 (gap inside the far interval) the
  negative. The frames and audio are hand-built so that every input of the real networks says which clip and frame
  it came from; forward hooks read them, and an oracle on ``tau_cm`` answers the label the pair's gap implies, so
  ``cmc_acc == 1`` says the sampler's labels are exactly those.
* The Sonic stack's episode statistics record the contest reward, below ``AllowBacktracking``. The contest env
  (the emulator) is replaced by a scripted stand-in with a backward move; every wrapper above it is the library's.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dreamarcade.envs.sonic as sonic
from dreamarcade.baselines.ppo_sonic import level_env_fn
from dreamarcade.envs.sonic import make_sonic_env
from dreamarcade.reward_models.embedding import TDCCMC, EmbeddingConfig
from dreamarcade.reward_models.train_embedding import Clip, losses
from dreamarcade.wrappers.retro import AllowBacktracking

# the audio net's even-kernel "same" convolutions warn about a padded copy (harmless; the library hides it too)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

# --- event-anchored CMC pairs ---------------------------------------------------------------------------------
NEAR, FAR = (0, 0), (5, 9)  # class 0: aligned (positive), class 1: 5..9 frames apart (negative)
CFG = EmbeddingConfig(
    frame_size=8,
    crop_size=8,  # no crop offset: every pixel of a stack is its frame's code
    stack=4,
    channels=(2, 2, 2),
    res_blocks=1,
    hidden=4,
    embed_dim=4,
    classifier_hidden=4,
    fps=15.0,
    audio_rate=120,  # 8 samples per frame
    n_fft=16,
    hop=8,
    audio_channels=(2, 2, 2, 2),
    cmc_intervals=(NEAR, FAR),
)
SPF, T = CFG.samples_per_frame, 30
# per clip, the frames whose audio window holds a sound event; none is 5..9 frames from another, so an audio
# window taken at the visual position of a negative pair is never an event. Clip 2 is silent: never anchored.
EVENTS = [np.array([14, 15, 16, 17]), np.array([2, 22, 23]), np.zeros(0, np.int64)]


def _clips() -> list[Clip]:
    clips = []
    for c in range(len(EVENTS)):
        frames = np.zeros((T, CFG.frame_size, CFG.frame_size, 3), np.uint8)
        frames[..., 0] = (5 * np.arange(T)).reshape(T, 1, 1)  # red = 5 * frame index
        frames[..., 1] = 10 * c  # green = 10 * clip
        # sample s of frame t of clip c: 1000 c + t + s / 100, exact in float32 and distinct everywhere
        audio = 1000.0 * c + np.arange(T)[:, None] + np.arange(SPF)[None] / 100.0
        clips.append(Clip(f"c{c}", frames, audio.astype(np.float32)))
    return clips


def _visual_frames(stacks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(clip, frame index of each of the stack's frames) of float stacks (B, 3 * stack, S, S)."""
    x = (stacks.reshape(len(stacks), CFG.stack, 3, -1)[..., 0] * 255).round().long().numpy()  # (B, stack, rgb)
    assert (x[:, :, 1] == x[:, :1, 1]).all()  # one clip per stack
    return x[:, 0, 1] // 10, x[:, :, 0] // 5


def _audio_frames(audio: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(clip, frame index of each of the window's frames) of audio windows (B, stack * samples per frame)."""
    first = audio.reshape(len(audio), CFG.stack, SPF)[..., 0].double().numpy()
    return (first[:, 0] // 1000).astype(int), np.round(first % 1000).astype(int)


def _label(gap: int) -> int:
    for k, (lo, hi) in enumerate(CFG.cmc_intervals):
        if lo <= gap <= hi:
            return k
    return -1  # in no class: no label can be right


def _cmc_pairs(batch: int, event_fraction: float, seed: int = 0, tdc_weight: float = 0.0):
    """Run ``losses`` once; return (visual clips, visual frames, audio windows, audio clips, audio frames, out)."""
    torch.manual_seed(seed)
    cfg = EmbeddingConfig.from_json({**CFG.to_json(), "tdc_weight": tdc_weight})
    model = TDCCMC(cfg).train()
    phi_in: list[torch.Tensor] = []
    psi_in: list[torch.Tensor] = []
    model.phi.register_forward_pre_hook(lambda mod, args: phi_in.append(args[0].detach().clone()))
    model.psi.register_forward_pre_hook(lambda mod, args: psi_in.append(args[0].detach().clone()))
    m = int(round(event_fraction * batch))

    def oracle(mod, args, logits):  # the label each pair's frame gap implies, as decisive logits
        stacks = phi_in[-1] if m == batch else torch.cat([phi_in[-1], phi_in[0][m:batch]])
        _, vis = _visual_frames(stacks)
        _, aud = _audio_frames(psi_in[-1])
        want = torch.tensor([_label(abs(int(a) - int(b))) for a, b in zip(vis[:, -1], aud[:, -1])])
        return 50.0 * F.one_hot(want.clamp(min=0), len(CFG.cmc_intervals)).float() * (want >= 0)[:, None]

    model.tau_cm.register_forward_hook(oracle)
    out = losses(model, _clips(), batch, np.random.default_rng(seed), event_fraction, EVENTS)
    assert len(psi_in) == 1
    stacks = phi_in[-1] if m == batch else torch.cat([phi_in[-1], phi_in[0][m:batch]])
    vc, vf = _visual_frames(stacks)
    ac, af = _audio_frames(psi_in[0])
    return vc, vf, psi_in[0].numpy(), ac, af, out


def _expected_window(clip: int, j: int) -> np.ndarray:
    idx = np.clip(np.arange(j - CFG.stack + 1, j + 1), 0, T - 1)
    return _clips()[clip].audio[idx].reshape(-1)


@pytest.mark.parametrize("tdc_weight", [0.0, 1.0])
def test_event_anchored_cmc_pairs_audio_on_the_event_vision_at_the_class_gap(tdc_weight):
    batch = 48
    vc, vf, windows, ac, af, out = _cmc_pairs(batch, 1.0, tdc_weight=tdc_weight)
    np.testing.assert_array_equal(vc, ac)  # frames and sound of one clip
    assert set(ac.tolist()) == {0, 1}  # the silent clip is never anchored on
    i, j = vf[:, -1], af[:, -1]  # the positions the stack and the window end at
    for c, jj, w in zip(ac, j, windows):
        assert jj in EVENTS[c]  # the audio is at an event
        np.testing.assert_array_equal(w, _expected_window(c, jj))  # exactly frames j-3..j's samples, in order
    gaps = np.abs(i - j)
    pos, neg = gaps == 0, (gaps >= FAR[0]) & (gaps <= FAR[1])
    assert (pos | neg).all()  # every pair is aligned or inside the far interval
    assert 0.25 < pos.mean() < 0.75  # both classes, about as often
    np.testing.assert_array_equal(vf[pos], af[pos])  # a positive hears exactly the frames it shows
    assert set(np.sign(i - j)[neg].tolist()) == {-1, 1}  # negatives: the frames before and after the sound
    for c, jj in zip(ac[neg], i[neg]):
        assert jj not in EVENTS[c]  # (so a window taken at the visual position is caught above)
    # labels: the oracle answers 0 for aligned pairs and 1 for far ones; the sampler's targets agree on every pair
    assert float(out["cmc_acc"]) == 1.0
    assert float(out["cmc"]) < 1e-6


def test_event_anchored_pairs_fill_the_front_of_the_batch_and_keep_their_labels():
    batch, fraction = 40, 0.5
    m = int(round(fraction * batch))
    vc, vf, windows, ac, af, out = _cmc_pairs(batch, fraction, seed=3, tdc_weight=1.0)
    np.testing.assert_array_equal(vc, ac)
    assert all(jj in EVENTS[c] for c, jj in zip(ac[:m], af[:m, -1]))  # the first m are anchored on events
    assert not all(jj in EVENTS[c] for c, jj in zip(ac[m:], af[m:, -1]))  # the rest are uniform positions
    for c, jj, w in zip(ac, af[:, -1], windows):
        np.testing.assert_array_equal(w, _expected_window(c, jj))
    assert float(out["cmc_acc"]) == 1.0  # the labels of both parts are the classes of their gaps


# --- the Sonic stack's wrapper order ----------------------------------------------------------------------------
GENESIS_BUTTONS = ["B", "A", "MODE", "START", "UP", "DOWN", "LEFT", "RIGHT", "C", "Y", "X", "Z"]
CONTEST_REWARDS = [5.0, -3.0, 2.0, -4.0, 1.0]  # progress 5, back 3, on 2, back 4, on 1: the contest score is 1


class ContestStandIn(gym.Env):
    """Stands in for the emulator under the contest env: 12 Genesis buttons, scripted contest rewards."""

    metadata = {"render_modes": [], "render_fps": 15}
    observation_space = gym.spaces.Box(0, 255, (24, 32, 3), np.uint8)
    action_space = gym.spaces.MultiBinary(12)
    buttons = GENESIS_BUTTONS

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(self.observation_space.shape, np.uint8), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, np.int8))
        r = CONTEST_REWARDS[self.t]
        self.t += 1
        obs = np.full(self.observation_space.shape, 10 * self.t, np.uint8)
        return obs, r, self.t == len(CONTEST_REWARDS), False, {}


def _episode(env: gym.Env) -> tuple[list[float], dict]:
    env.reset(seed=0)
    rewards, done, info = [], False, {}
    while not done:
        _, r, term, trunc, info = env.step(1)
        rewards.append(float(r))
        done = term or trunc
    return rewards, info


@pytest.mark.parametrize("scale", [None, 0.01])
def test_sonic_stack_records_the_contest_score_below_backtracking(monkeypatch, scale):
    monkeypatch.setattr(sonic, "make_contest_env", lambda *a, **kw: ContestStandIn())
    builders = [
        lambda: make_sonic_env("SonicTheHedgehog-Genesis", "GreenHillZone.Act1", backtracking=True, reward_scale=scale),
        level_env_fn("SonicTheHedgehog-Genesis", "GreenHillZone.Act1", reward_scale=scale, backtracking=True),
    ]
    for build in builders:
        env = build()
        try:
            assert any(isinstance(e, AllowBacktracking) for e in _chain(env))
            rewards, info = _episode(env)
            # the agent is paid new maxima only (5, then nothing: the cumulative 2, 4, 0, 1 never passes 5) ...
            assert rewards == pytest.approx([5.0 * (scale or 1.0), 0.0, 0.0, 0.0, 0.0])
            # ... while the episode statistics hold the contest's own score and length, unscaled
            assert info["episode"]["r"] == pytest.approx(sum(CONTEST_REWARDS)) == 1.0
            assert info["episode"]["l"] == len(CONTEST_REWARDS)
            chain = [type(e) for e in _chain(env)]
            assert chain.index(gym.wrappers.RecordEpisodeStatistics) > chain.index(AllowBacktracking)  # outer first
        finally:
            env.close()


def _chain(env: gym.Env) -> list[gym.Env]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out
