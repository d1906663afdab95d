"""Dream environments: Gymnasium envs that step a trained MDN-RNN instead of a game.

* :class:`DreamBatch` - the batched torch core: N dreams stepped together (one LSTM call for all of them).
* :class:`DreamEnv` - one dream as a ``gymnasium.Env`` (``gym.make("DreamDoom-v0")``).
* :class:`DreamVectorEnv` - N dreams as a ``gymnasium.vector.VectorEnv`` (``gym.make_vec(...,
  vectorization_mode="vector_entry_point")``), autoreset in Gymnasium's default next-step mode.

A dream starts from one of the recorded initial latents (first frames of real episodes, as the paper's
``initial_z.json``). Each step feeds ``[z_t, a_t, restart_t]`` to the LSTM, samples ``z_{t+1}`` from the mixture
at temperature tau, and ends the episode when the done head says p > 0.5 (Doom) or at the step cap
(2100 Doom, 1000 CarRacing: the registered ``TimeLimit`` of a single env, ``max_episode_steps`` of the vector env;
``gym.make(id, max_episode_steps=N)`` / ``gym.make_vec(..., max_episode_steps=N)`` change it). Built directly,
``DreamEnv`` and ``DreamVectorEnv`` truncate at their ``max_episode_steps``, and never with None (the default).
Reward: +1 per step survived (Doom) or the reward head (CarRacing).

Observations: ``obs_type="features"`` gives what the controller reads ([z, c, h] for Doom, [z, h] for CarRacing;
the same layout :class:`~dreamarcade.world_models.features.WorldModelFeatures` gives in the real game);
``obs_type="pixels"`` gives the VAE's decoding of z as a 64x64x3 frame. ``render_mode="rgb_array"`` shows it.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamarcade.errors import check_count
from dreamarcade.world_models.features import WorldModelFeatures, seed_generator
from dreamarcade.world_models.mdnrnn import PackedMDNRNN
from dreamarcade.world_models.model import WorldModel
from dreamarcade.world_models.vae import ConvVAE

__all__ = [
    "DreamBatch",
    "DreamEnv",
    "DreamVectorEnv",
    "FusedDecoder",
    "WorldModelFeatures",
    "load_world_model",
    "make_real_features_env",
]


def load_world_model(env: str, model_dir: str | os.PathLike[str] | None, device: str = "cpu") -> WorldModel:
    """``model_dir`` if given, else the bundled weights for ``env``."""
    if model_dir is None:
        return WorldModel.bundled(env, device=device)
    return WorldModel.load(model_dir, env=env, device=device)


def _with_real_fps(metadata: dict[str, Any], env: str) -> dict[str, Any]:
    """``metadata`` with the real game's frame rate (Doom 35, CarRacing 50), so a recorded dream plays at its speed."""
    from dreamarcade.envs.carracing import CarRacing64Env
    from dreamarcade.envs.doom import TakeCoverEnv

    real = {"doom": TakeCoverEnv, "carracing": CarRacing64Env}.get(env)
    return metadata if real is None else {**metadata, "render_fps": real.metadata["render_fps"]}


def _check_max_steps(max_episode_steps: int | None) -> int | None:
    if max_episode_steps is None:
        return None
    if (
        isinstance(max_episode_steps, bool)
        or not isinstance(max_episode_steps, numbers.Real)
        or not math.isfinite(max_episode_steps)  # int(inf) raised OverflowError
        or int(max_episode_steps) != max_episode_steps
        or max_episode_steps < 1
    ):
        raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
    return int(max_episode_steps)


class FusedDecoder:
    """V's decoder for dream frames, with its first two layers fused into one small matrix.

    ``fc_dec`` (z -> 1024) has no nonlinearity, and the first transposed conv sees a 1x1 input, so it is a
    linear map 1024 -> 128 x 5 x 5: together they are one (z, 3200) matrix (0.8 MB for Doom) instead of 13 MB of
    conv weights read for every frame. The remaining transposed convs run unchanged. Frames equal
    :meth:`ConvVAE.decode_to_frames` up to float32 rounding (a pixel may differ by 1 out of 255 where a value
    sits on a rounding boundary). A snapshot of the weights: rebuild after changing them.

    Example:
        >>> import torch
        >>> from dreamarcade.world_models.model import WorldModel
        >>> decode = FusedDecoder(WorldModel.bundled("doom").vae)
        >>> decode(torch.zeros(2, 64)).shape
        (2, 64, 64, 3)
    """

    def __init__(self, vae: ConvVAE) -> None:
        first = vae.dec[0]
        if not isinstance(first, torch.nn.ConvTranspose2d) or first.kernel_size != (5, 5):
            raise TypeError("FusedDecoder expects the World Models ConvVAE decoder (first layer: 5x5 ConvTranspose2d).")
        with torch.no_grad():
            w1 = first.weight.reshape(first.in_channels, -1)  # (1024, 128*5*5)
            self.weight = (vae.fc_dec.weight.t() @ w1).contiguous()  # (z, 3200)
            self.bias = (vae.fc_dec.bias @ w1 + first.bias.repeat_interleave(25)).contiguous()
        self.channels = first.out_channels
        self.rest = vae.dec[1:]

    @torch.inference_mode()
    def __call__(self, z: torch.Tensor) -> np.ndarray:
        """z (N, z) -> uint8 frames (N, 64, 64, 3)."""
        x = torch.addmm(self.bias, z, self.weight).view(-1, self.channels, 5, 5)
        img = self.rest(x).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return img.permute(0, 2, 3, 1).cpu().numpy()


MIN_TEMPERATURE = 1e-8  # the smallest dream temperature: a float32 logit divided by much less can overflow


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):  # True read as 1.0
        raise ValueError(f"temperature must be a number > 0 (Doom default 1.15), got {temperature!r}")
    t = float(temperature)
    if not np.isfinite(t) or t < MIN_TEMPERATURE:  # below it, logits / temperature overflow float32 to NaN
        raise ValueError(
            f"temperature must be > 0, at least {MIN_TEMPERATURE:g} (the paper used 0.1-1.3; Doom default 1.15), got "
            f"{temperature}. Use a small value such as 0.01 for a nearly deterministic dream."
        )
    return t


class DreamBatch:
    """N dreams stepped together in torch. The fast core behind every dream env and CMA-ES in the dream.

    State lives in preallocated buffers and is updated in place each step (:class:`PackedMDNRNN`: one matmul for
    the LSTM gates, the head's mixture choice with one uniform and one normal per latent dim). ``z``, ``h``,
    ``c``, ``first`` are live views of those buffers (``.clone()`` to keep a value); assigning them copies into
    the buffers. :meth:`keep` drops dreams (e.g. finished ones) from the batch. M's weights are packed when the
    batch is built (or its ``temperature`` is set): build a new batch after changing them. ``precision="bf16"``
    runs M's matmuls in bfloat16 (see :class:`PackedMDNRNN`): ~2x faster steps of large batches on CPUs with AMX.

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

    def __init__(
        self, model: WorldModel, num: int, temperature: float, seed: int | None = None, precision: str = "fp32"
    ) -> None:
        self.model, self.precision = model, precision
        # where step() truncates a dream; a caller may lengthen or shorten it, or set None for no cap
        self.max_steps: int | None = int(model.max_steps)
        self.device = self.model.initial_mu.device
        self.gen = torch.Generator(device=self.device)
        self.seed(int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
        self.temperature = temperature  # packs M's weights for this temperature
        self._decoder: FusedDecoder | None = None  # built on first decode()
        self._alloc(int(num))

    # ------------------------------------------------------------------------------------------- state buffers
    def _alloc(self, num: int) -> None:
        if num < 1:
            raise ValueError(f"A dream batch needs at least 1 dream, got num={num}.")
        rnn, dev = self.model.rnn, self.device
        zs, hs = self.model.z_size, rnn.hidden_size
        self._xh = self._packed.new_rows(num, dev)  # [z, a, restart, 1, h]: the LSTM input row
        self._c = torch.zeros(num, hs, device=dev)
        self._gates = torch.empty(num, 4 * hs, device=dev)
        self._out_pd = torch.empty(num, self._packed.w_pd.shape[0], device=dev)
        self._out_ml = torch.empty(num, self._packed.w_ml.shape[0], device=dev)
        self._u = torch.empty(num, zs, device=dev)
        self._eps = torch.empty(num, zs, device=dev)
        self._first = torch.zeros(num, device=dev)
        self._slice_row()
        self.t = torch.zeros(num, dtype=torch.long, device=dev)
        self._any_first = False
        self._ones = torch.ones(num, device=dev)
        self._np = self._numpy_views()
        self._no_done = torch.zeros(num, dtype=torch.bool, device=dev)

    def _slice_row(self) -> None:
        """z, a, h (and the restart flag) as views of the LSTM input row ``_xh``."""
        rnn, zs = self.model.rnn, self.model.z_size
        a = rnn.action_size
        self._z, self._a, self._h = self._xh[:, :zs], self._xh[:, zs : zs + a], self._xh[:, rnn.input_size + 1 :]
        if rnn.restart_input:
            self._first = self._xh[:, zs + a]

    def _numpy_views(self) -> tuple[np.ndarray, ...] | None:
        """One dream on the CPU in fp32 steps in numpy, on views of the torch state buffers (else None)."""
        if self.num == 1 and self.device.type == "cpu" and self.precision == "fp32":
            return tuple(x[0].numpy() for x in (self._xh, self._c, self._gates, self._out_pd))
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # a pickled torch.Generator comes back reseeded: keep its state instead
        state["gen"] = (str(self.gen.device), self.gen.get_state())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a copy (copy.deepcopy, pickle) has copies of the buffers: its numpy views must point into those, or its
        # steps would write to arrays no buffer reads; and it goes on with the same random stream
        device, rng = state["gen"]
        self.__dict__.update(state)
        self.gen = torch.Generator(device=device)
        self.gen.set_state(rng)
        self._slice_row()  # pickle copies each view on its own: make them views of the copied row again
        self._np = self._numpy_views()

    @property
    def num(self) -> int:
        """Number of dreams in the batch."""
        return self._xh.shape[0]

    @num.setter
    def num(self, value: int) -> None:
        if int(value) != self.num:
            raise ValueError(f"num={value} does not match the state buffers ({self.num}); assign z to resize.")

    @property
    def temperature(self) -> float:
        return self._packed.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._packed = PackedMDNRNN(self.model.rnn, _check_temperature(value), self.precision)

    def _set(self, buf: torch.Tensor, value: torch.Tensor) -> None:
        if value.shape[0] != self.num:
            raise ValueError(
                f"Expected {self.num} rows (the batch size), got shape {tuple(value.shape)}; "
                "use DreamBatch.keep(mask) to drop dreams."
            )
        buf.copy_(value)

    @torch.no_grad()
    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the dreams where ``mask`` (N,) is True, in order (e.g. drop finished dreams)."""
        if mask.shape != (self.num,):
            raise ValueError(f"keep() needs a mask of shape ({self.num},), got {tuple(mask.shape)}.")
        idx = mask.nonzero().squeeze(1)
        xh, c, t = self._xh[idx], self._c[idx], self.t[idx]
        self._alloc(len(idx))
        self._xh.copy_(xh)
        self._c.copy_(c)
        self.t.copy_(t)
        self._any_first = bool(self._first.any())

    @property
    def z(self) -> torch.Tensor:
        """Current latents (N, z): a live view."""
        return self._z

    @z.setter
    def z(self, value: torch.Tensor) -> None:
        self._set(self._z, value)

    @property
    def h(self) -> torch.Tensor:
        """LSTM hidden state (N, H): a live view."""
        return self._h

    @h.setter
    def h(self, value: torch.Tensor) -> None:
        self._set(self._h, value)

    @property
    def c(self) -> torch.Tensor:
        """LSTM cell state (N, H): a live view."""
        return self._c

    @c.setter
    def c(self, value: torch.Tensor) -> None:
        self._set(self._c, value)

    @property
    def first(self) -> torch.Tensor:
        """1.0 where the next step is a dream's first (restart flag fed to M): a live view."""
        return self._first

    @first.setter
    def first(self, value: torch.Tensor) -> None:
        self._set(self._first, value.float())
        self._any_first = bool(self._first.any())

    # ------------------------------------------------------------------------------------------------ stepping
    def seed(self, seed: int) -> None:
        """Reseed the dreams' random stream. Any int >= 0 (Gymnasium's seeds are unbounded): one past torch's 64
        bits is hashed down to 63 bits, the ones below are used as they are (:func:`seed_generator`)."""
        seed_generator(self.gen, seed)

    def features(self) -> torch.Tensor:
        """The controller's observation (N, d): a new tensor."""
        return self.model.make_features(self._z, self._h, self._c)

    @torch.no_grad()
    def reset(self, mask: torch.Tensor) -> None:
        """Restart the dreams where ``mask`` is True from random recorded initial latents."""
        n = int(mask.sum())
        if n == 0:
            return
        idx = torch.randint(0, self.model.initial_mu.shape[0], (n,), generator=self.gen, device=self.device)
        eps = torch.randn(n, self.model.z_size, generator=self.gen, device=self.device)
        z0 = self.model.initial_mu[idx] + torch.exp(0.5 * self.model.initial_logvar[idx]) * eps
        if n == self.num:
            self._z.copy_(z0)
            self._h.zero_()
            self._c.zero_()
            self.t.zero_()
            self._first.fill_(1.0)
        else:  # row indices: touch only the restarted rows (a boolean-mask fill reads every row of the batch)
            rows = mask.nonzero().squeeze(1)
            self._z.index_copy_(0, rows, z0)
            self._h.index_fill_(0, rows, 0.0)
            self._c.index_fill_(0, rows, 0.0)
            self.t.index_fill_(0, rows, 0)
            self._first.index_fill_(0, rows, 1.0)
        self._any_first = True

    def reset_all(self) -> torch.Tensor:
        self.reset(torch.ones(self.num, dtype=torch.bool, device=self.device))
        return self.features()

    @torch.no_grad()  # not inference_mode: the buffers must stay ordinary tensors for callers outside it
    def advance(self) -> None:
        """One step of every dream with the actions already in :attr:`action_buffer`: M's state and z in place."""
        if self._any_first:  # the LSTM state is zeroed at a restart (reset() did; this keeps assigned states honest)
            keep = (1.0 - self._first)[:, None]
            self._h.mul_(keep)
            self._c.mul_(keep)
        p = self._packed
        if self._np is not None:
            p.step_one_numpy_(*self._np, self._u, self._eps, self.gen)
        else:
            p.lstm_(self._xh, self._c, self._gates)
            p.head_sample_(self._xh, self._out_pd, self._out_ml, self._u, self._eps, self.gen)
        if self._any_first:
            self._first.zero_()
            self._any_first = False

    @property
    def action_buffer(self) -> torch.Tensor:
        """(N, A) view where the next step's actions go (write into it, then call :meth:`advance`).

        With an M trained under an action map (``MDNRNN.action_map``), :meth:`advance` leaves the mapped actions
        (what M read) in this buffer; write every step's actions anew."""
        return self._a

    @property
    def done_logit(self) -> torch.Tensor:
        """(N,) the done head's logit of the last step (Doom); the dream ends where it is > 0."""
        return self._out_pd[:, self._packed.n_pi]

    @property
    def predicted_reward(self) -> torch.Tensor:
        """(N,) the reward head's prediction of the last step (CarRacing)."""
        return self._out_pd[:, self._packed.n_pi + int(self._packed.predict_done)]

    @torch.no_grad()
    def step_outcome(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """actions (N, A) -> reward (N,), terminated (N,), truncated (N,): one step, without building features."""
        if actions.shape != self._a.shape:
            raise ValueError(f"Dream actions must have shape {tuple(self._a.shape)}, got {tuple(actions.shape)}.")
        self._a.copy_(actions)
        self.advance()
        self.t += 1
        reward = self.predicted_reward.clone() if self.model.reward == "predicted" else self._ones.clone()
        terminated = self.done_logit > 0.0 if self._packed.predict_done else self._no_done.clone()
        if self.max_steps is None:  # no cap: only the done head ends a dream
            truncated = self._no_done.clone()
        else:
            truncated = (self.t >= self.max_steps) & ~terminated
        return reward, terminated, truncated

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """actions (N, A) -> features (N, d), reward (N,), terminated (N,), truncated (N,)."""
        reward, terminated, truncated = self.step_outcome(actions)
        return self.features(), reward, terminated, truncated

    def decode(self) -> np.ndarray:
        """The current latents decoded by V: uint8 frames (N, 64, 64, 3)."""
        if self._decoder is None:
            self._decoder = FusedDecoder(self.model.vae)
        return self._decoder(self._z)


def _spaces(model: WorldModel, obs_type: str) -> tuple[spaces.Space, spaces.Box]:
    if obs_type == "features":
        obs = spaces.Box(-np.inf, np.inf, (model.feature_size,), np.float32)
    elif obs_type == "pixels":
        obs = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    else:
        raise ValueError(f"obs_type must be 'features' or 'pixels', got {obs_type!r}.")
    low, high = model.action_bounds
    return obs, spaces.Box(low, high, dtype=np.float32)


class DreamEnv(gym.Env):
    """One dream of a trained world model as a Gymnasium env.

    Actions outside the action box are clipped to it before M sees them, because that is what the real
    game does with them (TakeCover: any a > 1/3 is "right"; CarRacing saturates steering, gas and brake),
    and M only ever learned from in-range actions. The wrong action *shape* is an error.

    Args:
        env: "doom" or "carracing" (which world model).
        model_dir: a world model directory; None uses the bundled weights.
        temperature: tau (> 0); Doom default 1.15 as the paper's best agent. Setting ``env.unwrapped.temperature``
            later changes it from the next step on (a temperature curriculum).
        obs_type: "features" ([z, c, h] / [z, h], float32) or "pixels" (decoded 64x64x3 uint8).
        render_mode: None or "rgb_array" (the decoded dream frame).
        max_episode_steps: truncate episodes after this many steps; None (default) never truncates, as
            Gymnasium's own envs: ``gym.make`` adds the registered cap (2100 Doom, 1000 CarRacing, the real games')
            as a ``TimeLimit``, and ``gym.make(id, max_episode_steps=N)`` replaces it, longer or shorter.

    Example:
        >>> import gymnasium as gym, dreamarcade
        >>> env = gym.make("DreamDoom-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (1088,)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> reward
        1.0
        >>> gym.make("DreamDoom-v0", max_episode_steps=5000).spec.max_episode_steps  # a longer dream
        5000
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
        max_episode_steps: int | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")
        self.max_episode_steps = _check_max_steps(max_episode_steps)
        self.model = load_world_model(env, model_dir, device)
        self.metadata = _with_real_fps(self.metadata, env)
        tau = _check_temperature(self.model.temperature if temperature is None else temperature)
        self.obs_type, self.render_mode = obs_type, render_mode
        self.observation_space, self.action_space = _spaces(self.model, obs_type)
        self._dream = DreamBatch(self.model, 1, tau, seed=0)
        self._started, self._t = False, 0
        d = self._dream
        self._views = self._state_views()
        self._i_done = d._packed.n_pi
        self._i_reward = d._packed.n_pi + int(d._packed.predict_done)

    @property
    def temperature(self) -> float:
        """tau of the dream's sampling. Setting it (a temperature curriculum; also through Gymnasium's
        ``set_wrapper_attr`` or ``SyncVectorEnv.set_attr``) checks it as the constructor does, and the dream samples
        at the new tau from the next step on."""
        return self._dream.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        # was a plain attribute: a new value was reported back while the dream kept sampling at the old one
        self._dream.temperature = value  # checked (_check_temperature), and M repacked for it

    def _state_views(self) -> tuple[np.ndarray, ...] | None:
        """Numpy views of the dream's state buffers on the CPU (a one-env step reads/writes them for free)."""
        d = self._dream
        if d.device.type != "cpu":
            return None
        parts = (d.z, d.c, d.h) if self.model.features == "zch" else (d.z, d.h)
        return (d.action_buffer[0].numpy(), d._out_pd[0].numpy(), d.t.numpy(), *(x[0].numpy() for x in parts))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a copy (copy.deepcopy, pickle) has its own dream: its views must point into that one's buffers, or the
        # copy's observations never change
        self.__dict__.update(state)
        self._views = self._state_views()

    def _obs(self) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._dream.decode()[0]
        if self._views is not None:
            return np.concatenate(self._views[3:])
        return self._dream.features()[0].cpu().numpy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._dream.seed(int(self.np_random.integers(0, 2**63 - 1)))
        self._dream.reset_all()
        self._started, self._t = True, 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._started:
            raise RuntimeError("Call reset() before step().")
        a = np.asarray(action, dtype=np.float32)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"DreamEnv({self.model.env}) takes actions of shape {self.action_space.shape}, got shape {a.shape}."
            )
        if not np.isfinite(a).all():  # clip keeps NaN: M's state would turn NaN and the dream never end
            raise ValueError(f"DreamEnv({self.model.env}) got a non-finite action {a.tolist()}: check the policy.")
        # the real game saturates outside its action box (TakeCover: a=5 acts as a=1); M only saw in-range actions
        a = np.clip(a, self.action_space.low, self.action_space.high)
        d = self._dream
        if self._views is not None:
            self._views[0][:] = a
            d.advance()
            out = self._views[1]
            terminated = self.model.rnn.predict_done and float(out[self._i_done]) > 0.0
            reward = float(out[self._i_reward]) if self.model.reward == "predicted" else 1.0
            self._views[2][0] = self._t + 1
        else:
            r, term, _ = d.step_outcome(torch.as_tensor(a, device=d.device)[None])
            reward, terminated = float(r[0]), bool(term[0])
        self._t += 1
        cap = self.max_episode_steps
        truncated = cap is not None and self._t >= cap and not terminated
        return self._obs(), reward, terminated, truncated, {"steps": self._t}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._dream.decode()[0]


class DreamVectorEnv(VectorEnv):
    """N dreams in one batched torch env (Gymnasium ``VectorEnv``, next-step autoreset).

    Takes DreamEnv's arguments plus ``num_envs`` and ``precision`` ("fp32", or "bf16": M's matmuls in bfloat16,
    about 2x the steps/s of 1024 dreams on a CPU with AMX, in a slightly different dream). ``max_episode_steps``
    means what it means to DreamEnv: truncate each dream after this many steps, None never truncates. A vector env
    gets no ``TimeLimit``, so ``gym.make_vec`` passes the registered cap (2100 Doom, 1000 CarRacing) as
    ``max_episode_steps`` unless given another, None included.

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
        precision: str = "fp32",
    ) -> None:
        # no **kwargs: gym.make_vec passes num_envs, the id's kwargs, max_episode_steps and the caller's kwargs,
        # all named above, so a misspelled option (temprature=0.5) is a TypeError instead of silently ignored
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None or 'rgb_array'.")
        max_episode_steps = _check_max_steps(max_episode_steps)
        num_envs = check_count("num_envs", num_envs)  # 2.5 was cut to 2
        self.model = load_world_model(env, model_dir, device)
        self.metadata = _with_real_fps(self.metadata, env)
        tau = _check_temperature(self.model.temperature if temperature is None else temperature)
        self.num_envs, self.obs_type, self.render_mode = int(num_envs), obs_type, render_mode
        self.single_observation_space, self.single_action_space = _spaces(self.model, obs_type)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # unseeded: fresh entropy, so unseeded vector envs differ (as Gymnasium's do); reset(seed=s) reseeds
        self._dream = DreamBatch(self.model, self.num_envs, tau, seed=None, precision=precision)
        # None: no cap, as DreamEnv's (the model's own cap truncated these dreams while DreamEnv's never ended)
        self.max_episode_steps = self._dream.max_steps = max_episode_steps
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._started = False  # step() before reset() dreamed from an all-zero state

    @property
    def temperature(self) -> float:
        """tau of every dream's sampling; setting it is checked as in the constructor and applies from the next step."""
        return self._dream.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        # was a plain attribute: a new value was reported back while the dreams kept sampling at the old one
        self._dream.temperature = value  # checked (_check_temperature), and M repacked for it

    def _obs(self) -> np.ndarray:
        if self.obs_type == "pixels":
            return self._dream.decode()
        return self._dream.features().cpu().numpy()  # a new float32 tensor each step: no extra copy

    def _one_seed(self, seed: int | list[int | None] | None) -> int | None:
        """The dreams share one random stream, so a list of per-env seeds becomes one seed: ``[s, s+1, ...]``
        gives what ``s`` gives (Gymnasium's vector envs seed env i with ``s + i``); any other list gives a seed
        derived from all its entries; all None is None."""
        if seed is None or not isinstance(seed, (list, tuple)):
            return None if seed is None else int(seed)  # numpy integers too (Gymnasium's seeding takes only int)
        if len(seed) != self.num_envs:
            raise ValueError(f"reset(seed=...) got {len(seed)} seeds for {self.num_envs} envs; pass one per env.")
        if all(s is None for s in seed):
            return None
        if any(s is None for s in seed):
            raise ValueError(
                "reset(seed=[...]) mixes None and ints; the dreams share one random stream, so seed all of them "
                "(or pass one int)."
            )
        seeds = [int(s) for s in seed]
        if seeds == list(range(seeds[0], seeds[0] + self.num_envs)):
            return seeds[0]
        return int(np.random.SeedSequence(seeds).generate_state(1, np.uint32)[0])

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Restart every dream, or with ``options={"reset_mask": mask}`` only the dreams where ``mask`` is True
        (Gymnasium's partial reset; the others go on). ``seed``: an int, or one per env (see :meth:`_one_seed`)."""
        unknown = sorted(set(options or {}) - {"reset_mask"})
        if unknown:
            raise ValueError(f"DreamVectorEnv.reset takes options={{'reset_mask': ...}} only, got {unknown}.")
        mask = None if options is None or options.get("reset_mask") is None else np.asarray(options["reset_mask"])
        if mask is not None and (mask.dtype != np.bool_ or mask.shape != (self.num_envs,)):
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},), got {mask!r}.")
        seed = self._one_seed(seed)
        if mask is not None and not self._started:
            raise RuntimeError("Call reset() without a reset_mask first: the dreams not in the mask have no state yet.")
        super().reset(seed=seed)
        if seed is not None:
            self._dream.seed(int(seed))
        if mask is None:
            self._dream.reset_all()
            self._needs_reset[:] = False
            self._started = True
        else:
            self._dream.reset(torch.from_numpy(mask).to(self._dream.device))
            self._needs_reset[mask] = False
        return self._obs(), {}

    @torch.no_grad()
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("Call reset() before step().")
        a = np.asarray(actions, dtype=np.float32)
        if a.shape != self.action_space.shape:
            raise ValueError(f"DreamVectorEnv takes actions of shape {self.action_space.shape}, got {a.shape}.")
        if not np.isfinite(a).all():  # as DreamEnv: a NaN would poison its dream's state for good
            bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(1))
            raise ValueError(f"DreamVectorEnv got non-finite actions for envs {bad.tolist()}: check the policy.")
        a = np.clip(a, self.single_action_space.low, self.single_action_space.high)  # as the real game (DreamEnv)
        d = self._dream
        resetting = self._needs_reset
        reward, terminated, truncated = (x.cpu().numpy() for x in d.step_outcome(torch.from_numpy(a)))
        reward = reward.astype(np.float64)
        # Next-step autoreset: the dreams that ended last step restart now and this step's action is ignored.
        if resetting.any():
            d.reset(torch.from_numpy(resetting).to(d.device))
            reward[resetting] = 0.0
            terminated &= ~resetting
            truncated &= ~resetting
        self._needs_reset = terminated | truncated
        return self._obs(), reward, terminated, truncated, {}

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Each env's decoded frame (64x64x3 uint8), as a tuple like Gymnasium's vector envs give (RecordVideo
        and HumanRendering expect a sequence)."""
        if self.render_mode != "rgb_array":
            return None
        return tuple(self._dream.decode())


def make_real_features_env(
    env: str = "doom", model_dir: str | os.PathLike[str] | None = None, render_mode: str | None = None, **kwargs: Any
) -> gym.Env:
    """The real env (DoomTakeCover-v0 / CarRacing64-v0) wrapped so it observes the world model's features."""
    from dreamarcade.world_models.collect import make_real_env

    model = load_world_model(env, model_dir)
    return WorldModelFeatures(make_real_env(env, render_mode=render_mode, **kwargs), model)
