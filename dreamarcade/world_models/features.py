"""Real env -> world-model features, so one controller runs unchanged in the real game and in the dream.

:class:`FeatureTracker` holds the MDN-RNN state: each real frame is encoded by V to ``z = mu + sigma * eps``
(sampled, as the paper's real-env code), the previous ``(z, a)`` is fed to M to advance ``(h, c)``, and the
features are ``[z, c, h]`` (Doom) or ``[z, h]`` (CarRacing), exactly the dream's observation layout.

Example:
    >>> import gymnasium as gym, dreamarcade
    >>> from dreamarcade.world_models.features import WorldModelFeatures
    >>> from dreamarcade.world_models.model import WorldModel
    >>> env = WorldModelFeatures(gym.make("DoomTakeCover-v0"), WorldModel.bundled("doom"))
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (1088,)
    >>> env.close()
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from dreamarcade.world_models.controller import Controller
from dreamarcade.world_models.model import WorldModel
from dreamarcade.world_models.vae import frames_to_tensor

__all__ = ["FeatureTracker", "WorldModelFeatures", "WorldModelAgent", "seed_generator"]


def seed_generator(gen: torch.Generator, seed: int) -> None:
    """Seed ``gen`` with any int >= 0 (Gymnasium's seeds are unbounded): one past torch's 64 bits is hashed down to
    63 bits, the ones below are used as they are; a negative one is a ValueError.

    >>> import torch
    >>> gen = torch.Generator()
    >>> seed_generator(gen, 2**64)  # torch's own manual_seed overflows on it
    >>> gen.initial_seed() < 2**63
    True
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    if seed >= 2**64:
        seed = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> np.uint64(1))
    gen.manual_seed(seed)


class FeatureTracker:
    """Keeps M's state along a real episode and turns each frame into controller features.

    Example:
        >>> import numpy as np
        >>> from dreamarcade.world_models.features import FeatureTracker
        >>> from dreamarcade.world_models.model import WorldModel
        >>> tracker = FeatureTracker(WorldModel.bundled("doom"), seed=0)
        >>> frame = np.zeros((64, 64, 3), np.uint8)
        >>> feats = tracker.reset(frame)  # [z, c, h] = 64 + 512 + 512
        >>> feats.shape, feats.dtype
        ((1088,), dtype('float32'))
        >>> bool((feats[64:] == 0).all())  # M has not stepped yet: c and h are zero
        True
        >>> feats = tracker.step(np.array([0.5]), frame)  # feed (z, a) to M, encode the next frame
        >>> bool((feats[64:] != 0).any())
        True
    """

    def __init__(self, model: WorldModel, seed: int | None = None) -> None:
        self.model = model
        self.gen = torch.Generator()
        if seed is not None:
            seed_generator(self.gen, seed)
        else:  # fresh entropy, as Gymnasium's unseeded envs: unseeded trackers (sub-envs) must not share V's noise
            self.gen.seed()
        self.z: torch.Tensor | None = None
        self.state = model.rnn.initial_state(1)
        self._first = True

    def seed(self, seed: int) -> None:
        """Reseed V's sampling noise; any int >= 0, as :meth:`~dreamarcade.envs.dream.DreamBatch.seed`."""
        seed_generator(self.gen, seed)

    @torch.no_grad()
    def encode(self, frame: np.ndarray) -> torch.Tensor:
        mu, logvar = self.model.vae.encode(frames_to_tensor(np.asarray(frame)[None]))
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=self.gen)

    @torch.no_grad()
    def reset(self, frame: np.ndarray) -> np.ndarray:
        self.state = self.model.rnn.initial_state(1)
        self._first = True
        self.z = self.encode(frame)
        return self.features()

    @torch.no_grad()
    def step(self, action: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Feed (z_t, a_t) to M, then encode the next frame."""
        assert self.z is not None, "call reset() first"
        # M learned from in-range actions; the real game saturates outside its box, so feed M the clipped action
        a = torch.as_tensor(self.model.clip_actions(np.asarray(action, np.float32).reshape(1, -1)))
        restart = torch.ones(1) if self._first else torch.zeros(1)
        _, self.state = self.model.rnn.step(self.z, a, self.state, restart=restart)
        self._first = False
        self.z = self.encode(frame)
        return self.features()

    def features(self) -> np.ndarray:
        h, c = self.state
        return self.model.make_features(self.z, h, c)[0].numpy().astype(np.float32)


class WorldModelFeatures(gym.Wrapper):
    """Wraps a real env with 64x64x3 frames so its observations are the world model's features.

    ``info["frame"]`` keeps the 64x64 frame the features came from. Gymnasium's ``check_env`` on one built by hand
    needs ``skip_render_check=True, skip_close_check=True``: those checks rebuild the env from ``env.spec``, which
    cannot rebuild and compare a wrapper holding a model.

    Example:
        >>> import gymnasium as gym
        >>> import numpy as np
        >>> import dreamarcade
        >>> from dreamarcade.world_models.features import WorldModelFeatures
        >>> from dreamarcade.world_models.model import WorldModel
        >>> env = WorldModelFeatures(gym.make("DoomTakeCover-v0"), WorldModel.bundled("doom"))
        >>> env.observation_space.shape
        (1088,)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(np.array([0.0], np.float32))
        >>> obs.shape, info["frame"].shape
        ((1088,), (64, 64, 3))
        >>> env.close()
    """

    def __init__(self, env: gym.Env, model: WorldModel) -> None:
        super().__init__(env)
        if env.observation_space.shape != (64, 64, 3):
            raise ValueError(
                f"WorldModelFeatures needs 64x64x3 frames, got observation shape {env.observation_space.shape}; "
                "wrap DoomTakeCover-v0 or CarRacing64-v0."
            )
        if int(np.prod(env.action_space.shape)) != model.action_size:
            raise ValueError(
                f"The world model takes {model.action_size} action dims, the env has {env.action_space.shape}."
            )
        self.model = model
        self.tracker = FeatureTracker(model)
        self.observation_space = spaces.Box(-np.inf, np.inf, (model.feature_size,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        frame, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self.tracker.seed(seed)
        info = dict(info, frame=frame)
        return self.tracker.reset(frame), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        feats = self.tracker.step(action, frame)
        return feats, reward, terminated, truncated, dict(info, frame=frame)


class WorldModelAgent:
    """V + M + C as a policy over real frames: ``policy = agent.reset(seed); action = policy(frame)``.

    The controller reads all the features ([z, c, h] / [z, h]) or, V-only (``--controller v-only``), z alone.

    Example:
        >>> import numpy as np
        >>> from dreamarcade.world_models.controller import Controller
        >>> from dreamarcade.world_models.features import WorldModelAgent
        >>> from dreamarcade.world_models.model import WorldModel
        >>> wm = WorldModel.bundled("doom")
        >>> agent = WorldModelAgent(wm, Controller.for_env("doom", feature_size=wm.z_size))  # V-only: z alone
        >>> policy = agent.reset(seed=0)
        >>> frame = np.zeros((64, 64, 3), np.uint8)
        >>> policy(frame)  # zero weights: tanh(0)
        array([0.], dtype=float32)
        >>> h, c = agent.tracker.state  # M's state: still zero after the first frame
        >>> bool((h == 0).all())
        True
        >>> policy(frame).shape  # each later frame first advances M with the previous action
        (1,)
        >>> h, c = agent.tracker.state
        >>> bool((h != 0).any())
        True
    """

    def __init__(self, model: WorldModel, controller: Controller) -> None:
        if controller.feature_size not in (model.z_size, model.feature_size):
            raise ValueError(
                f"Controller reads {controller.feature_size} features; this world model gives {model.feature_size} "
                f"({model.features}) or {model.z_size} (z alone, V-only). Evolve a controller for this world model."
            )
        self.model, self.controller = model, controller
        self.tracker = FeatureTracker(model)
        self._prev_action: np.ndarray | None = None

    @classmethod
    def from_dirs(
        cls, model_dir: str | os.PathLike[str], controller_dir: str | os.PathLike[str], env: str
    ) -> WorldModelAgent:
        """A world model directory and a controller checkpoint (``evolve``'s output)."""
        model = WorldModel.load(model_dir, env=env)
        return cls(model, Controller.load(controller_dir))  # __init__ checks its size against the model

    def reset(self, seed: int = 0) -> WorldModelAgent:
        self.tracker.seed(seed)
        self._prev_action = None
        return self

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self._prev_action is None:
            feats = self.tracker.reset(frame)
        else:
            feats = self.tracker.step(self._prev_action, frame)
        self._prev_action = self.controller.act(feats[: self.controller.feature_size])  # V-only: z alone
        return self._prev_action

    def override_action(self, action: np.ndarray) -> None:
        """Tell the agent the env was given ``action`` instead of its own (exploration), so M sees what was done."""
        if self._prev_action is None:
            raise RuntimeError("override_action() needs a previous call to the agent.")
        self._prev_action = np.asarray(action, np.float32).reshape(self._prev_action.shape)
