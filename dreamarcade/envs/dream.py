"""Dream environments: Gymnasium envs that step a trained MDN-RNN instead of a game.

* :class:`DreamBatch` - the batched torch core: N dreams stepped together (one LSTM call for all of them).
* :class:`DreamEnv` - one dream as a ``gymnasium.Env`` (``gym.make("DreamDoom-v0")``).
* :class:`DreamVectorEnv` - N dreams as a ``gymnasium.vector.VectorEnv`` (``gym.make_vec(...,
  vectorization_mode="vector_entry_point")``), autoreset in Gymnasium's default next-step mode.

A dream starts from one of the recorded initial latents (first frames of real episodes, as the paper's
``initial_z.json``). Each step feeds ``[z_t, a_t, restart_t]`` to the LSTM, samples ``z_{t+1}`` from the mixture
at temperature tau, and ends the episode when the done head says p > 0.5 (Doom) or at the step cap
(2100 Doom, 1000 CarRacing). Reward: +1 per step survived (Doom) or the reward head (CarRacing).

Observations: ``obs_type="features"`` gives what the controller reads ([z, c, h] for Doom, [z, h] for CarRacing;
the same layout :class:`~dreamarcade.world_models.features.WorldModelFeatures` gives in the real game);
``obs_type="pixels"`` gives the VAE's decoding of z as a 64x64x3 frame. ``render_mode="rgb_array"`` shows it.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamarcade.world_models.features import WorldModelFeatures
from dreamarcade.world_models.mdnrnn import sample_next
from dreamarcade.world_models.model import WorldModel

__all__ = [
    "DreamBatch",
    "DreamEnv",
    "DreamVectorEnv",
    "WorldModelFeatures",
    "load_world_model",
    "make_real_features_env",
]


def load_world_model(env: str, model_dir: str | os.PathLike[str] | None, device: str = "cpu") -> WorldModel:
    """``model_dir`` if given, else the bundled weights for ``env``."""
    if model_dir is None:
        return WorldModel.bundled(env, device=device)
    return WorldModel.load(model_dir, env=env, device=device)


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(
            f"temperature must be > 0 (the paper used 0.1-1.3; Doom default 1.15), got {temperature}. "
            "Use a small value such as 0.01 for a nearly deterministic dream."
        )
    return t


class DreamBatch:
    """N dreams stepped together in torch. The fast core behind every dream env and CMA-ES in the dream.

    Example:
        >>> import torch
        >>> from dreamarcade.envs.dream import DreamBatch
        >>> from dreamarcade.world_models.model import WorldModel
        >>> dream = DreamBatch(WorldModel.bundled("doom"), num=4, temperature=1.15, seed=0)
        >>> feats = dream.reset_all()
        >>> feats, reward, done, truncated = dream.step(torch.zeros(4, 1))
        >>> feats.shape
        torch.Size([4, 1088])
    """

    def __init__(self, model: WorldModel, num: int, temperature: float, seed: int | None = None) -> None:
        self.model = model
        self.num = int(num)
        self.temperature = _check_temperature(temperature)
        self.device = self.model.initial_mu.device
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
        zs, hs = model.z_size, model.rnn.hidden_size
        self.z = torch.zeros(self.num, zs, device=self.device)
        self.h = torch.zeros(self.num, hs, device=self.device)
        self.c = torch.zeros(self.num, hs, device=self.device)
        self.t = torch.zeros(self.num, dtype=torch.long, device=self.device)
        self.first = torch.ones(self.num, device=self.device)

    def seed(self, seed: int) -> None:
        self.gen.manual_seed(int(seed))

    def features(self) -> torch.Tensor:
        return self.model.make_features(self.z, self.h, self.c)

    @torch.no_grad()
    def reset(self, mask: torch.Tensor) -> None:
        """Restart the dreams where ``mask`` is True from random recorded initial latents."""
        n = int(mask.sum())
        if n == 0:
            return
        idx = torch.randint(0, self.model.initial_mu.shape[0], (n,), generator=self.gen, device=self.device)
        eps = torch.randn(n, self.model.z_size, generator=self.gen, device=self.device)
        self.z[mask] = self.model.initial_mu[idx] + torch.exp(0.5 * self.model.initial_logvar[idx]) * eps
        self.h[mask] = 0.0
        self.c[mask] = 0.0
        self.t[mask] = 0
        self.first[mask] = 1.0

    def reset_all(self) -> torch.Tensor:
        self.reset(torch.ones(self.num, dtype=torch.bool, device=self.device))
        return self.features()

    @torch.no_grad()
    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """actions (N, A) -> features (N, d), reward (N,), terminated (N,), truncated (N,)."""
        rnn = self.model.rnn
        if actions.shape != (self.num, rnn.action_size):
            raise ValueError(
                f"Dream actions must have shape ({self.num}, {rnn.action_size}), got {tuple(actions.shape)}."
            )
        out, (self.h, self.c) = rnn.step(self.z, actions.float(), (self.h, self.c), restart=self.first)
        nxt = sample_next(rnn, out, self.temperature, self.gen)
        self.z = nxt["z"]
        self.first = torch.zeros_like(self.first)
        self.t += 1
        if self.model.reward == "predicted":
            reward = nxt["reward"]
        else:
            reward = torch.ones(self.num, device=self.device)
        terminated = nxt["done"] if "done" in nxt else torch.zeros(self.num, dtype=torch.bool, device=self.device)
        truncated = (self.t >= self.model.max_steps) & ~terminated
        return self.features(), reward, terminated, truncated

    @torch.no_grad()
    def decode(self) -> np.ndarray:
        """The current latents decoded by V: uint8 frames (N, 64, 64, 3)."""
        return self.model.vae.decode_to_frames(self.z)


def _spaces(model: WorldModel, obs_type: str) -> tuple[spaces.Space, spaces.Box]:
    if obs_type == "features":
        obs = spaces.Box(-np.inf, np.inf, (model.feature_size,), np.float32)
    elif obs_type == "pixels":
        obs = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    else:
        raise ValueError(f"obs_type must be 'features' or 'pixels', got {obs_type!r}.")
    if model.env == "doom":
        act = spaces.Box(-1.0, 1.0, (1,), np.float32)
    else:
        act = spaces.Box(np.array([-1.0, 0.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32))
    return obs, act


class DreamEnv(gym.Env):
    """One dream of a trained world model as a Gymnasium env.

    Args:
        env: "doom" or "carracing" (which world model).
        model_dir: a world model directory; None uses the bundled weights.
        temperature: tau (> 0); Doom default 1.15 as the paper's best agent.
        obs_type: "features" ([z, c, h] / [z, h], float32) or "pixels" (decoded 64x64x3 uint8).
        render_mode: None or "rgb_array" (the decoded dream frame).

    Example:
        >>> import gymnasium as gym, dreamarcade
        >>> env = gym.make("DreamDoom-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (1088,)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> reward
        1.0
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35}

    def __init__(
        self,
        env: str = "doom",
        model_dir: str | os.PathLike[str] | None = None,
        temperature: float | None = None,
        obs_type: str = "features",
        render_mode: str | None = None,
        device: str = "cpu",
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")
        self.model = load_world_model(env, model_dir, device)
        self.temperature = _check_temperature(self.model.temperature if temperature is None else temperature)
        self.obs_type, self.render_mode = obs_type, render_mode
        self.observation_space, self.action_space = _spaces(self.model, obs_type)
        self._dream = DreamBatch(self.model, 1, self.temperature, seed=0)
        self._started = False

    def _obs(self) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._dream.decode()[0]
        return self._dream.features()[0].cpu().numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._dream.seed(int(self.np_random.integers(0, 2**63 - 1)))
        self._dream.reset_all()
        self._started = True
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._started:
            raise RuntimeError("Call reset() before step().")
        a = np.asarray(action, dtype=np.float32)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"DreamEnv({self.model.env}) takes actions of shape {self.action_space.shape}, got shape {a.shape}."
            )
        _, reward, terminated, truncated = self._dream.step(torch.as_tensor(a, device=self._dream.device)[None])
        return self._obs(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), {"steps": int(self._dream.t[0])}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._dream.decode()[0]


class DreamVectorEnv(VectorEnv):
    """N dreams in one batched torch env (Gymnasium ``VectorEnv``, next-step autoreset).

    Example:
        >>> import gymnasium as gym, dreamarcade
        >>> envs = gym.make_vec("DreamDoom-v0", num_envs=8, vectorization_mode="vector_entry_point")
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape
        (8, 1088)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        env: str = "doom",
        model_dir: str | os.PathLike[str] | None = None,
        temperature: float | None = None,
        obs_type: str = "features",
        render_mode: str | None = None,
        device: str = "cpu",
        max_episode_steps: int | None = None,
        **_: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")
        self.model = load_world_model(env, model_dir, device)
        if max_episode_steps is not None:
            self.model.max_steps = int(max_episode_steps)
        self.temperature = _check_temperature(self.model.temperature if temperature is None else temperature)
        self.num_envs, self.obs_type, self.render_mode = int(num_envs), obs_type, render_mode
        self.single_observation_space, self.single_action_space = _spaces(self.model, obs_type)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._dream = DreamBatch(self.model, self.num_envs, self.temperature, seed=0)
        self._needs_reset = torch.zeros(self.num_envs, dtype=torch.bool)

    def _obs(self) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._dream.decode()
        return self._dream.features().cpu().numpy().astype(np.float32)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if isinstance(seed, list):
            seed = seed[0]
        if seed is not None:
            self._dream.seed(int(seed))
        self._dream.reset_all()
        self._needs_reset[:] = False
        return self._obs(), {}

    def step(self, actions: Any):
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != self.action_space.shape:
            raise ValueError(f"DreamVectorEnv takes actions of shape {self.action_space.shape}, got {a.shape}.")
        resetting = self._needs_reset.clone()
        _, reward, terminated, truncated = self._dream.step(torch.as_tensor(a, device=self._dream.device))
        # Next-step autoreset: the dreams that ended last step restart now and this step's action is ignored.
        self._dream.reset(resetting.to(self._dream.device))
        reward = torch.where(resetting, torch.zeros_like(reward), reward)
        terminated = terminated & ~resetting
        truncated = truncated & ~resetting
        self._needs_reset = (terminated | truncated).cpu()
        return (self._obs(), reward.cpu().numpy().astype(np.float64), terminated.cpu().numpy(),
                truncated.cpu().numpy(), {})  # fmt: skip

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._dream.decode()


def make_real_features_env(
    env: str = "doom", model_dir: str | os.PathLike[str] | None = None, render_mode: str | None = None, **kwargs: Any
) -> gym.Env:
    """The real env (DoomTakeCover-v0 / CarRacing64-v0) wrapped so it observes the world model's features."""
    from dreamarcade.world_models.collect import make_real_env

    model = load_world_model(env, model_dir)
    return WorldModelFeatures(make_real_env(env, render_mode=render_mode, **kwargs), model)
