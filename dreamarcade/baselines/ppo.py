"""PPO (Schulman et al. 2017), CleanRL-style: feed-forward (CNN/MLP) and recurrent (LSTM, for RL^2 trials).

One file that reads top to bottom: hyperparameters (:class:`PPOConfig`), the actor-critic network
(:class:`ActorCritic`), the training loop (:func:`train_ppo`), evaluation (:func:`evaluate_policy`) and a CLI.
The defaults are the retro-baselines PPO used for Sonic in "Gotta Learn Fast" (ppo2, CnnPolicy, nsteps 4096,
nminibatches 8, lam 0.95, gamma 0.99, noptepochs 3, ent 0.01, lr 2e-4, clip 0.1).

It works on any env with a ``Discrete`` action space and one of these observation spaces:

* ``Box`` image ``(C, H, W)`` uint8 (e.g. an 84x84 4-frame stack) -> Nature CNN,
* ``Box`` vector ``(D,)`` -> two-layer tanh MLP,
* ``Dict`` ``{"obs": image, "meta": vector}`` (what :class:`~dreamarcade.wrappers.metarl.EpisodeConcat` gives for
  image envs) -> Nature CNN on the image, concatenated with the vector.

With ``recurrent=True`` an LSTM sits on top of the encoder; its state is carried across steps and reset only when
the env reports ``terminated or truncated`` (so under ``EpisodeConcat`` it persists for the whole trial: RL^2).

Time limits: GAE treats ``truncated`` exactly like ``terminated`` (no bootstrap from the final observation), as
OpenAI baselines' ppo2, the anchor, does (its ``dones`` are the envs' ``done``, which a TimeLimit sets too). This
is deliberate parity with the retro-baselines numbers, and a known bias: values of states near a time limit (e.g.
the Sonic contest's 4,500-step cap) are pulled towards 0. ``info["final_obs"]`` is not used.

Example:
    >>> import gymnasium as gym, tempfile
    >>> from dreamarcade.baselines.ppo import PPOConfig, train_ppo
    >>> cfg = PPOConfig(total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1)
    >>> result = train_ppo([lambda: gym.make("CartPole-v1")] * 2, cfg, tempfile.mkdtemp(), progress=False)
    >>> result.global_step
    256

CLI: ``python -m dreamarcade.baselines ppo train --env-id CartPole-v1 --total-timesteps 50000`` (see ``--help``);
the Sonic pipeline (joint training, fine-tuning, the evaluation protocol) is in ``ppo joint|finetune|protocol``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical

from dreamarcade.baselines.common import (
    GracefulStop,
    RunLogger,
    add_dataclass_args,
    check_counts,
    check_ranges,
    check_run_dir_free,
    claim_run_dir,
    drop_rows_after,
    has_episode_statistics,
    last_logged_step,
    note_nothing_to_train,
    plot_learning_curve,
    read_episodes,
    releases_run_dirs,
    resolve_device,
    save_hyperparameters,
    seed_everything,
)
from dreamarcade.baselines.common import (
    RunDirInUseError as RunDirInUseError,  # re-exported: train_ppo raises it
)
from dreamarcade.baselines.self_imitation import EpisodeBuffer, self_imitation_loss
from dreamarcade.checkpoint import (
    built_from_config,
    checkpoint_exists,
    json_text,
    load_checkpoint,
    pack_state,
    refuse_diverged,
    save_checkpoint,
    strip_prefix,
    unpack_state,
    with_prefix,
)
from dreamarcade.errors import CheckpointError, check_seed, describe_changes, input_checks, input_error_status
from dreamarcade.precision import flush_denormals

CHECKPOINT_KIND = "ppo"
# PPOConfig fields that say where and how a run goes and logs, not what it learns: a resume may change them freely
RUN_SETTINGS = (
    "device",
    "torch_threads",
    "vector_mode",
    "checkpoint_every_updates",
    "eval_every_steps",
    "eval_episodes",
)
SIL_DIR = "self_imitation"  # the self-imitation episodes of a run (sil_coef > 0), beside checkpoint/


# ----------------------------------------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class PPOConfig:
    """PPO hyperparameters; defaults are retro-baselines' Sonic PPO (ppo2 ``CnnPolicy``).

    As in ppo2, a time-limit truncation ends the GAE sum like a termination (no bootstrap; see the module docstring).

    Example:
        >>> from dreamarcade.baselines.ppo import PPOConfig
        >>> cfg = PPOConfig(total_timesteps=1000, num_envs=8, num_steps=128, ent_coef_final=0.0)
        >>> cfg.validate()
        >>> cfg.batch_size, cfg.entropy_coef_at(0), cfg.entropy_coef_at(500)
        (1024, 0.01, 0.005)
        >>> try:
        ...     PPOConfig(num_envs=6, num_minibatches=4, recurrent=True).validate()
        ... except ValueError as err:
        ...     print(str(err).split(". ")[1])
        Use num_minibatches=3, or a multiple of 4 envs.
    """

    total_timesteps: int = 1_000_000  # the Sonic protocol's per-test-level budget
    learning_rate: float = 2e-4
    anneal_lr: bool = False  # retro-baselines used a constant learning rate
    num_envs: int = 1  # retro-baselines ran one env per worker
    num_steps: int = 4096  # rollout length per env (ppo2 nsteps)
    num_minibatches: int = 8
    update_epochs: int = 3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.1
    clip_vloss: bool = True  # ppo2 clips the value loss with the same clip range
    ent_coef: float = 0.01
    ent_coef_final: float | None = None  # if set, the entropy bonus falls linearly to this by total_timesteps
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    target_kl: float | None = None
    # self-imitation (Oh et al. 2018; module self_imitation): replay the best episodes' steps that beat the critic
    sil_coef: float = 0.0  # weight of the self-imitation loss; 0: off (plain PPO)
    sil_value_coef: float = 0.01  # the paper's beta: weight of its value term
    sil_updates: int = 4  # self-imitation minibatches (of the PPO minibatch size) after each PPO update (paper: 4)
    sil_episodes: int = 16  # the best episodes kept for it (by training return)
    # network
    network: Literal["auto", "cnn", "mlp"] = "auto"  # "auto" (cnn for images, mlp for vectors), "cnn" or "mlp"
    recurrent: bool = False  # LSTM on top of the encoder (RL^2)
    lstm_size: int = 256
    mlp_hidden: int = 64
    # infrastructure
    seed: int = 1
    device: str = "cpu"
    torch_threads: int = 1  # the box is shared: one thread unless asked otherwise
    # "auto": async (subprocess) when num_envs > 1 or with evaluation, else sync
    vector_mode: Literal["auto", "async", "sync"] = "auto"
    checkpoint_every_updates: int = 10
    eval_every_steps: int = 0  # 0: never; else evaluate the eval envs every this many steps
    eval_episodes: int = 1

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the fix."""
        counts = ("total_timesteps", "num_envs", "num_steps", "update_epochs", "checkpoint_every_updates")
        counts += ("torch_threads", "lstm_size", "mlp_hidden", "eval_episodes", "sil_updates", "sil_episodes")
        check_counts(
            self,
            {**dict.fromkeys(counts, 1), "eval_every_steps": 0},
            {
                "update_epochs": " (passes over each rollout)",
                "checkpoint_every_updates": " (one is also always written at the end)",
                "eval_every_steps": " (0: no evaluation)",
            },
        )
        if self.num_minibatches < 1 or self.num_minibatches > self.num_envs * self.num_steps:
            raise ValueError(
                f"num_minibatches={self.num_minibatches} must be between 1 and num_envs*num_steps="
                f"{self.num_envs}*{self.num_steps}={self.num_envs * self.num_steps} (num_envs is the number of envs "
                "train_ppo is given); use fewer minibatches or a longer num_steps."
            )
        check_ranges(
            self,
            {
                "learning_rate": (0.0, None, False),
                "gamma": (0.0, 1.0, True),
                "gae_lambda": (0.0, 1.0, True),
                "clip_coef": (0.0, None, False),
                "vf_coef": (0.0, None, True),
                "max_grad_norm": (0.0, None, False),
                "target_kl": (0.0, None, False),
                "ent_coef": (0.0, None, True),  # a negative entropy bonus rewards a deterministic policy
                "ent_coef_final": (0.0, None, True),
                "sil_coef": (0.0, None, True),
                "sil_value_coef": (0.0, None, True),
            },
        )
        check_seed("seed (--seed)", self.seed)
        resolve_device(self.device)  # a misspelled or absent device is refused here, before a run directory is written
        if self.recurrent and self.sil_coef > 0:
            raise ValueError(
                "self-imitation (sil_coef > 0) replays single steps, which a recurrent agent cannot be trained on "
                "without their LSTM state: use sil_coef=0 with recurrent=True."
            )
        if self.recurrent and self.num_envs % self.num_minibatches != 0:
            fit = max(d for d in range(1, min(self.num_envs, self.num_minibatches) + 1) if self.num_envs % d == 0)
            raise ValueError(
                f"recurrent PPO splits the batch by env (whole sequences), so num_envs={self.num_envs} must be a "
                f"multiple of num_minibatches={self.num_minibatches}. Use num_minibatches={fit}, or "
                f"a multiple of {self.num_minibatches} envs."
            )
        if self.network not in ("auto", "cnn", "mlp"):
            raise ValueError(f"network must be 'auto', 'cnn' or 'mlp', got {self.network!r}.")
        if self.vector_mode not in ("auto", "async", "sync"):
            raise ValueError(f"vector_mode must be 'auto', 'async' or 'sync', got {self.vector_mode!r}.")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    def entropy_coef_at(self, global_step: int) -> float:
        """The entropy bonus at ``global_step``: constant, or linear from ``ent_coef`` to ``ent_coef_final``."""
        if self.ent_coef_final is None:
            return self.ent_coef
        frac = min(1.0, global_step / self.total_timesteps)
        return self.ent_coef + frac * (self.ent_coef_final - self.ent_coef)


# ----------------------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------------------
def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal init, as in baselines/CleanRL (it matters for PPO's early learning)."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class NatureCNN(nn.Module):
    """The DQN-Nature conv stack over ``(C, H, W)`` uint8 images scaled to [0, 1]; outputs ``out_dim`` features.

    Example:
        >>> import torch
        >>> from dreamarcade.baselines.ppo import NatureCNN
        >>> encoder = NatureCNN((4, 84, 84))
        >>> encoder(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape, encoder.out_dim
        (torch.Size([2, 512]), 512)
        >>> NatureCNN((3, 64, 64), out_dim=256)(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape
        torch.Size([1, 256])
    """

    def __init__(self, in_shape: Sequence[int], out_dim: int = 512) -> None:
        super().__init__()
        c, h, w = in_shape
        self.convs = nn.Sequential(
            layer_init(nn.Conv2d(c, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():  # flattened size for any H, W the three convs accept (84x84 -> 3136)
            n_flat = self.convs(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(layer_init(nn.Linear(n_flat, out_dim)), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x.float() / 255.0))


def _holds_retro_emulator(envs: gym.vector.VectorEnv) -> bool:
    """Whether ``envs`` runs a stable-retro emulator in this process (a sync vector env of retro envs)."""
    inner = getattr(envs, "envs", None)  # SyncVectorEnv's sub-envs; an async one keeps them in its workers
    return bool(inner) and any(type(e.unwrapped).__module__.split(".")[0] in ("stable_retro", "retro") for e in inner)


def describe_space(space: gym.Space) -> dict[str, Any]:
    """A JSON description of an observation space: what a checkpoint records to rebuild and check its network."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "box", "shape": list(space.shape), "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "dict", "spaces": {k: describe_space(s) for k, s in space.spaces.items()}}
    raise ValueError(
        f"PPO supports Box and Dict({{'obs', 'meta'}}) observation spaces, got {space}. "
        "Flatten or wrap the observation first (e.g. gymnasium.wrappers.FlattenObservation)."
    )


def _is_image(desc: dict[str, Any]) -> bool:
    return desc["type"] == "box" and len(desc["shape"]) == 3


def _check_image(desc: dict[str, Any], where: str = "Image observations") -> None:
    """Refuse what the Nature CNN would read wrong: a channels-last or too small frame, or one that is not uint8."""
    c, h, w = shape = desc["shape"]
    dtype = desc.get("dtype", "uint8")  # recorded by describe_space
    if dtype != "uint8":  # NatureCNN divides by 255: a float frame in [0, 1] reached it as at most 1/255
        raise ValueError(
            f"{where} must be uint8 pixels (0-255; the Nature CNN divides them by 255), got {dtype}: give uint8 "
            "frames, or use network='mlp' for other arrays."
        )
    if w <= 4 < c:  # an (H, W, C) frame such as (84, 84, 4) or (224, 320, 3)
        raise ValueError(
            f"{where} must be channels-first (C, H, W); got {tuple(shape)}, which looks channels-last. "
            "Use dreamarcade.wrappers.FrameStack (channels-first) or transpose."
        )
    if min(h, w) < 36:  # the Nature CNN's three convolutions (8/4, 4/2, 3/1) need 36 pixels
        raise ValueError(
            f"{where} of {h}x{w} pixels are too small for the Nature CNN (at least 36x36): resize them "
            "(GrayscaleResize), or use network='mlp' for small grids."
        )


class ActorCritic(nn.Module):
    """Shared-encoder actor-critic for a ``Discrete(n_actions)`` env, optionally recurrent.

    Built from a space description (:func:`describe_space`) so a checkpoint can rebuild it without the env.

    Example:
        >>> import gymnasium as gym, torch
        >>> space = gym.spaces.Box(0, 255, (4, 84, 84), "uint8")
        >>> net = ActorCritic(describe_space(space), n_actions=7)
        >>> action, logp, ent, value, _ = net.get_action_and_value(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))
        >>> tuple(action.shape), tuple(value.shape)
        ((2,), (2,))
    """

    def __init__(
        self,
        obs_desc: dict[str, Any],
        n_actions: int,
        network: str = "auto",
        recurrent: bool = False,
        lstm_size: int = 256,
        mlp_hidden: int = 64,
    ) -> None:
        super().__init__()
        self.obs_desc, self.n_actions, self.recurrent = obs_desc, n_actions, recurrent
        if obs_desc["type"] == "dict":
            spaces = obs_desc["spaces"]
            if set(spaces) != {"obs", "meta"} or not _is_image(spaces["obs"]) or len(spaces["meta"]["shape"]) != 1:
                raise ValueError(
                    f"Dict observations must be {{'obs': (C,H,W) image, 'meta': (D,) vector}}, got {obs_desc}."
                )
            if network == "mlp":  # it was ignored: the image goes through the CNN whatever the network asked
                raise ValueError(
                    "network='mlp' cannot read Dict {'obs': image, 'meta': vector} observations: they always use the "
                    "Nature CNN (network='auto' or 'cnn')."
                )
            _check_image(spaces["obs"], "The 'obs' image of Dict observations")
            self.image_encoder = NatureCNN(spaces["obs"]["shape"])
            meta_dim = spaces["meta"]["shape"][0]
            self.fuse = nn.Sequential(layer_init(nn.Linear(512 + meta_dim, 512)), nn.ReLU())
            feat_dim = 512
            self.kind = "dict"
        else:
            kind = network if network != "auto" else ("cnn" if _is_image(obs_desc) else "mlp")
            if kind == "cnn":
                if not _is_image(obs_desc):
                    raise ValueError(
                        f"network='cnn' needs (C, H, W) image observations, got shape {obs_desc['shape']}."
                    )
                _check_image(obs_desc)
                self.encoder = NatureCNN(obs_desc["shape"])
                feat_dim = 512
            else:
                in_dim = int(np.prod(obs_desc["shape"]))
                if recurrent:  # RL^2: a shared tanh layer feeds the LSTM
                    self.encoder = nn.Sequential(nn.Flatten(), layer_init(nn.Linear(in_dim, mlp_hidden)), nn.Tanh())
                    feat_dim = mlp_hidden
                else:  # CleanRL's separate actor and critic MLPs: a shared trunk lets value gradients swamp the policy
                    self.encoder = nn.Flatten()
                    feat_dim = in_dim
            self.kind = kind
        self.mlp_hidden = mlp_hidden
        if recurrent:
            self.lstm = nn.LSTM(feat_dim, lstm_size)
            for name, param in self.lstm.named_parameters():
                if "bias" in name:
                    nn.init.constant_(param, 0)
                elif "weight" in name:
                    nn.init.orthogonal_(param, 1.0)
            feat_dim = lstm_size
        if self.kind == "mlp" and not recurrent:
            self.actor = nn.Sequential(
                *self._mlp(feat_dim, mlp_hidden), layer_init(nn.Linear(mlp_hidden, n_actions), std=0.01)
            )
            self.critic = nn.Sequential(*self._mlp(feat_dim, mlp_hidden), layer_init(nn.Linear(mlp_hidden, 1), std=1.0))
        else:
            self.actor = layer_init(nn.Linear(feat_dim, n_actions), std=0.01)
            self.critic = layer_init(nn.Linear(feat_dim, 1), std=1.0)

    @staticmethod
    def _mlp(in_dim: int, hidden: int) -> list[nn.Module]:
        return [layer_init(nn.Linear(in_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)), nn.Tanh()]

    # -- encoder -------------------------------------------------------------------------------------------------------
    def encode(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "dict":
            return self.fuse(torch.cat([self.image_encoder(obs["obs"]), obs["meta"].float()], dim=1))
        return self.encoder(obs if self.kind == "cnn" else obs.float())

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor] | None:
        """Zero LSTM state for ``batch`` envs (None for a feed-forward network)."""
        if not self.recurrent:
            return None
        z = torch.zeros(self.lstm.num_layers, batch, self.lstm.hidden_size, device=device)
        return (z, z.clone())

    def features(
        self,
        obs: torch.Tensor | dict[str, torch.Tensor],
        state: tuple[torch.Tensor, torch.Tensor] | None,
        done: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Features for a batch laid out as ``T`` consecutive steps of ``B`` envs (``T*B`` rows, time-major).

        ``done[t, b] = 1`` means the observation at ``t`` starts a new episode, so the LSTM state is zeroed first.
        """
        x = self.encode(obs)
        if not self.recurrent:
            return x, None
        assert state is not None and done is not None
        batch = state[0].shape[1]
        x = x.reshape(-1, batch, x.shape[-1])
        done = done.reshape(-1, batch)
        outs = []
        h, c = state
        # One LSTM call per stretch of steps in which no env starts a new episode (instead of one call per step).
        starts = [0] + [t for t in range(1, x.shape[0]) if bool(done[t].any())] + [x.shape[0]]
        for s0, s1 in zip(starts[:-1], starts[1:]):
            keep = (1.0 - done[s0]).view(1, -1, 1)
            out, (h, c) = self.lstm(x[s0:s1], (h * keep, c * keep))
            outs.append(out)
        return torch.cat(outs).reshape(-1, self.lstm.hidden_size), (h, c)

    def get_value(self, obs: Any, state: Any = None, done: torch.Tensor | None = None) -> torch.Tensor:
        feat, _ = self.features(obs, state, done)
        return self.critic(feat).squeeze(-1)

    def get_action_and_value(
        self,
        obs: Any,
        state: Any = None,
        done: torch.Tensor | None = None,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """(action, log-prob, entropy, value, new LSTM state); samples unless ``action`` or ``deterministic``."""
        feat, new_state = self.features(obs, state, done)
        dist = Categorical(logits=self.actor(feat))
        if action is None:
            action = dist.probs.argmax(-1) if deterministic else dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(feat).squeeze(-1), new_state

    def shape_config(self) -> dict[str, Any]:
        """Everything that defines the network's shapes (stored in checkpoints)."""
        return {
            "obs_space": self.obs_desc,
            "n_actions": self.n_actions,
            "network": self.kind if self.kind != "dict" else "cnn",
            "recurrent": self.recurrent,
            "lstm_size": self.lstm.hidden_size if self.recurrent else 0,
            "mlp_hidden": self.mlp_hidden if self.kind == "mlp" else 0,
        }


def build_agent(obs_space: gym.Space, action_space: gym.Space, config: PPOConfig) -> ActorCritic:
    """An :class:`ActorCritic` for an env's spaces; clear errors for unsupported spaces."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(
            f"PPO here supports Discrete action spaces, got {action_space}. For stable-retro games wrap the env "
            "with dreamarcade.wrappers.SonicDiscretizer (or another discretizer)."
        )
    return ActorCritic(
        describe_space(obs_space),
        int(action_space.n),
        network=config.network,
        recurrent=config.recurrent,
        lstm_size=config.lstm_size,
        mlp_hidden=config.mlp_hidden,
    )


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    next_done: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimates (T, N) of a rollout, as CleanRL's / ppo2's.

    ``dones[t]`` marks ``obs[t]`` as the first of a new episode (the previous step ended one), so step t bootstraps
    from step t + 1 only when ``dones[t + 1]`` is 0; ``next_value`` / ``next_done`` are the step after the rollout's
    last. An episode end (terminated or truncated, as in ppo2) stops both the bootstrap and the advantage sum.

    Example (one env, an episode ending after step 1: step 1's advantage is its reward minus its value):
        >>> import torch
        >>> from dreamarcade.baselines.ppo import gae
        >>> r, v = torch.tensor([[1.0], [1.0], [1.0]]), torch.tensor([[0.5], [0.5], [0.5]])
        >>> d = torch.tensor([[0.0], [0.0], [1.0]])  # obs[2] starts a new episode
        >>> gae(r, v, d, torch.tensor([0.5]), torch.tensor([0.0]), gamma=1.0, lam=1.0).flatten().tolist()
        [1.5, 0.5, 1.0]
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        nonterminal = 1.0 - (next_done if t == T - 1 else dones[t + 1])
        nextvalues = next_value if t == T - 1 else values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nonterminal - values[t]
        lastgaelam = delta + gamma * lam * nonterminal * lastgaelam
        advantages[t] = lastgaelam
    return advantages


class PPOLoss(NamedTuple):
    """The terms of one minibatch's clipped-surrogate loss, as :func:`ppo_loss` returns them.

    ``loss`` is what gets back-propagated (``pg_loss - ent_coef * entropy + vf_coef * v_loss``); ``pg_loss``,
    ``v_loss`` and ``entropy`` (the mean policy entropy) carry gradients too. ``approx_kl`` (a 0-d tensor, no
    gradient) and ``clipfrac`` (a float) are statistics for the logs and ``target_kl``.

    Example:
        >>> import torch
        >>> from dreamarcade.baselines.ppo import PPOLoss
        >>> zero = torch.zeros(())
        >>> terms = PPOLoss(loss=zero, pg_loss=zero, v_loss=zero, entropy=zero, approx_kl=zero, clipfrac=0.0)
        >>> terms._fields
        ('loss', 'pg_loss', 'v_loss', 'entropy', 'approx_kl', 'clipfrac')
    """

    loss: torch.Tensor
    pg_loss: torch.Tensor
    v_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: float


def ppo_loss(
    newlogprob: torch.Tensor,
    old_logprob: torch.Tensor,
    entropy: torch.Tensor,
    newvalue: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_coef: float,
    ent_coef: float,
    vf_coef: float,
    norm_adv: bool,
    clip_vloss: bool,
) -> PPOLoss:
    """PPO's clipped-surrogate loss of one minibatch (1-D tensors of its steps), as CleanRL's / ppo2's.

    ``newlogprob`` / ``entropy`` / ``newvalue`` come from the network being trained; ``old_logprob`` /
    ``old_value`` were recorded in the rollout, ``returns`` and ``advantages`` are its GAE targets.

    * With ``norm_adv`` the advantages are normalised within this minibatch (mean 0, std 1; unbiased std + 1e-8),
      unless it holds a single step.
    * Policy: ``mean(max(-A * r, -A * clamp(r, 1 - clip_coef, 1 + clip_coef)))`` with ``r = exp(new - old)``.
    * Value: ``0.5 * mean((V - R) ** 2)``; with ``clip_vloss``, the max of that error and the one of ``V`` kept
      within ``old_value +- clip_coef`` (ppo2 clips the value with the policy's clip range).
    * Statistics (no gradient): ``approx_kl = mean((r - 1) - log r)`` and ``clipfrac``, the fraction of steps with
      ``|r - 1| > clip_coef``.

    Example (the policy moved on the second step only: its ratio 2 is clipped to 1.2, and counted in clipfrac):
        >>> import torch
        >>> from dreamarcade.baselines.ppo import ppo_loss
        >>> old = torch.log(torch.tensor([0.5, 0.25]))
        >>> new = torch.log(torch.tensor([0.5, 0.5]))
        >>> terms = ppo_loss(new, old, torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.tensor([1.0, 1.0]),
        ...                  torch.tensor([1.0, 1.0]), clip_coef=0.2, ent_coef=0.0, vf_coef=0.5, norm_adv=False,
        ...                  clip_vloss=False)
        >>> round(terms.pg_loss.item(), 4), terms.v_loss.item(), terms.clipfrac  # -(1 * 1 + 1 * 1.2) / 2
        (-1.1, 0.5, 0.5)
        >>> round(terms.loss.item(), 4)  # -1.1 + 0.5 * 0.5
        -0.85
    """
    logratio = newlogprob - old_logprob
    ratio = logratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean().item()
    mb_adv = advantages
    if norm_adv and len(advantages) > 1:
        mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
    pg_loss = torch.max(-mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()
    if clip_vloss:
        v_clipped = old_value + torch.clamp(newvalue - old_value, -clip_coef, clip_coef)
        v_loss = 0.5 * torch.max((newvalue - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - ent_coef * entropy_loss + vf_coef * v_loss
    return PPOLoss(loss, pg_loss, v_loss, entropy_loss, approx_kl, clipfrac)


def _note_changed_settings(saved: Any, config: PPOConfig) -> None:
    """On resume, say which learning settings differ from the checkpoint's (this run's apply from here on, as the
    learning rate always did); checkpoints from before the settings were kept say nothing."""
    if not isinstance(saved, dict):
        return
    now = dataclasses.asdict(config)  # JSON values only (validated: finite numbers, no tuples)
    keys = [k for k in now if k in saved and k not in RUN_SETTINGS]
    changed = describe_changes(saved, now, keys)
    if changed:
        print(f"Note: resuming with settings that differ from the checkpoint's: {changed}.", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def _global_rng_state() -> dict[str, Any]:
    """torch's and numpy's global RNG states, as a checkpoint keeps them (:func:`_set_global_rng_state` restores)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_key": np_state[1].astype(np.int64),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],  # a normal draw numpy holds for its next call
    }


def _set_global_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    has_gauss, gauss = rng.get("numpy_gauss", (0, 0.0))  # checkpoints from before it was kept: none
    np.random.set_state(("MT19937", np.asarray(rng["numpy_key"]).astype(np.uint32), rng["numpy_pos"], has_gauss, gauss))


def save_agent(
    directory: str | os.PathLike[str],
    agent: ActorCritic,
    optimizer: torch.optim.Optimizer | None = None,
    global_step: int = 0,
    extra: dict[str, Any] | None = None,
    env_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``agent`` (and optionally the optimizer and RNG state, for resuming) as a safetensors checkpoint.

    ``env_tensors``: state of the envs that a resume needs (e.g. exploration counts), stored under ``env.``.
    """
    tensors = with_prefix(agent.state_dict(), "model")
    tensors.update(with_prefix(env_tensors or {}, "env"))
    config: dict[str, Any] = {"kind": CHECKPOINT_KIND, **agent.shape_config(), "global_step": int(global_step)}
    if optimizer is not None:
        config["optimizer"] = pack_state(optimizer.state_dict(), "optim", tensors)
        config["rng"] = pack_state(_global_rng_state(), "rng", tensors)
    config.update(extra or {})
    return save_checkpoint(directory, tensors, config)


def load_agent(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[ActorCritic, dict[str, Any], dict[str, torch.Tensor]]:
    """Rebuild the agent stored in a PPO checkpoint; returns (agent, config, all tensors)."""
    tensors, config = load_checkpoint(directory, kind=CHECKPOINT_KIND)
    with built_from_config(directory, "PPO checkpoint"):
        agent = ActorCritic(
            config["obs_space"],
            config["n_actions"],
            network=config["network"],
            recurrent=config["recurrent"],
            lstm_size=config["lstm_size"] or 256,
            mlp_hidden=config["mlp_hidden"] or 64,
        )
    weights = strip_prefix(tensors, "model")
    try:
        agent.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"PPO checkpoint '{directory}' does not match its own config: {exc}") from exc
    return agent.to(device), config, tensors


_NETWORK_FLAGS = {"network": "--network", "recurrent": "--recurrent/--no-recurrent", "lstm_size": "--lstm-size",
                  "mlp_hidden": "--mlp-hidden"}  # fmt: skip


def check_same_network(loaded: ActorCritic, agent: ActorCritic, source: str) -> None:
    """Raise CheckpointError if the checkpoint's network differs in shape from the one this config builds."""
    have, want = loaded.shape_config(), agent.shape_config()
    for key, flag in _NETWORK_FLAGS.items():
        if have[key] != want[key]:
            raise CheckpointError(
                f"The PPO checkpoint '{source}' has {key}={have[key]!r} but this run's config builds {key}="
                f"{want[key]!r}. Set {flag} to the checkpoint's value (PPOConfig.{key}={have[key]!r}), or use "
                "another checkpoint or a new run directory."
            )


def check_agent_fits(
    agent: ActorCritic,
    obs_space: gym.Space,
    action_space: gym.Space,
    source: str,
    hint: str = "Use the same wrappers (frame size, stack, discretizer) as the run that wrote the checkpoint.",
) -> None:
    """Raise CheckpointError if a loaded agent cannot act in an env with these spaces (``hint``: what to do)."""
    want = describe_space(obs_space)
    n = getattr(action_space, "n", None)
    if agent.obs_desc != want or agent.n_actions != n:
        raise CheckpointError(
            f"The PPO checkpoint '{source}' was trained on observations {agent.obs_desc} with {agent.n_actions} "
            f"actions, but this env has observations {want} with action space {action_space}. {hint}"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Vector envs and observation batches
# ----------------------------------------------------------------------------------------------------------------------
EnvFns = Sequence[Callable[[], gym.Env]]


def make_vector_env(envs: gym.vector.VectorEnv | EnvFns, mode: str = "auto") -> gym.vector.VectorEnv:
    """A same-step-autoreset vector env from env factories (subprocesses when ``mode`` is async).

    stable-retro allows one emulator per process, so several retro envs need ``mode="async"``.
    """
    if isinstance(envs, gym.vector.VectorEnv):
        if envs.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError(
                "train_ppo needs a vector env with autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP "
                "(the final observation is in info['final_obs']); pass it when building the vector env, or pass "
                "a list of env factories instead."
            )
        return envs
    fns = list(envs)
    if not fns or not all(callable(f) for f in fns):
        raise ValueError("envs must be a gymnasium VectorEnv or a non-empty list of callables returning envs.")
    use_async = mode == "async" or (mode == "auto" and len(fns) > 1)
    if use_async:
        # Ctrl-C, `timeout` and SLURM signal the whole process group: the workers must leave the stop to this
        # process (which finishes its step, saves a checkpoint and closes them), or they die first and take the
        # run down without a checkpoint
        workers = [functools.partial(_ignoring_stop_signals, f, os.getpid()) for f in fns]
        return gym.vector.AsyncVectorEnv(workers, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    made: list[gym.Env] = []
    try:
        for f in fns:
            made.append(f())
    except RuntimeError as exc:  # stable-retro's own message did not say what to change
        for env in made:  # the emulator already started must not stay in this process
            env.close()
        if "multiple emulator instances" not in str(exc):
            raise
        raise ValueError(
            f"stable-retro runs one emulator per process, so {len(fns)} retro envs in one process (--vector-mode "
            "sync) cannot start: use --vector-mode async (or auto), which runs each env in a process of its own."
        ) from None
    return gym.vector.SyncVectorEnv([lambda e=e: e for e in made], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _ignoring_stop_signals(make_env: Callable[[], gym.Env], trainer_pid: int) -> gym.Env:
    """In a vector env's worker process: ignore SIGINT and SIGTERM, then build the env. In the trainer's own
    process (AsyncVectorEnv builds one env there to read its spaces) the handlers are left alone."""
    import signal

    if os.getpid() != trainer_pid:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return make_env()


def obs_to_tensor(obs: Any, device: torch.device) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(obs, dict):
        return {k: torch.as_tensor(np.asarray(v), device=device) for k, v in obs.items()}
    return torch.as_tensor(np.asarray(obs), device=device)


def _alloc_obs(space: gym.Space, lead: tuple[int, ...], device: torch.device) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _alloc_obs(s, lead, device) for k, s in space.spaces.items()}
    dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32  # uint8 frames stay uint8: 4x less memory
    return torch.zeros(lead + tuple(space.shape), dtype=dtype, device=device)


def _store(buf: Any, idx: int, value: Any) -> None:
    if isinstance(buf, dict):
        for k in buf:
            buf[k][idx] = value[k]
    else:
        buf[idx] = value


def _index(buf: Any, idx: Any) -> Any:
    if isinstance(buf, dict):
        return {k: v[idx] for k, v in buf.items()}
    return buf[idx]


def _flatten(buf: Any) -> Any:
    if isinstance(buf, dict):
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in buf.items()}
    return buf.reshape((-1,) + buf.shape[2:])


def _finished_episode_stats(infos: dict[str, Any], i: int) -> tuple[float, int] | None:
    """(return, length) recorded by a RecordEpisodeStatistics inside sub-env ``i`` (the unscaled score), if any."""
    final = infos.get("final_info")
    if not final or "episode" not in final or not final.get("_episode", np.zeros(i + 1, bool))[i]:
        return None
    return float(final["episode"]["r"][i]), int(final["episode"]["l"][i])


def _life_lost_only(infos: dict[str, Any], i: int, terminated: np.ndarray, truncated: np.ndarray) -> bool:
    """True when sub-env ``i``'s done is a lost life, not the end of the game: ``EpisodicLife`` (the ``DQN*-v0`` envs)
    ends an episode per life (terminated) and says ``info["game_over"] = False``; the game goes on from there. A
    truncation (an outer ``TimeLimit``) ends the game whatever ``game_over`` says: the next reset starts a new one."""
    if not terminated[i] or truncated[i]:
        return False
    final = infos.get("final_info")
    if not final or "game_over" not in final or not final.get("_game_over", np.ones(i + 1, bool))[i]:
        return False
    return not bool(final["game_over"][i])


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class PPOResult:
    """What :func:`train_ppo` returns.

    Example:
        >>> import gymnasium as gym, tempfile
        >>> from dreamarcade.baselines.ppo import PPOConfig, train_ppo
        >>> cfg = PPOConfig(total_timesteps=64, num_steps=64, num_minibatches=1, update_epochs=1)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     result = train_ppo([lambda: gym.make("CartPole-v1")], cfg, d, progress=False, tensorboard=False)
        >>> result.global_step, result.stopped_early, type(result.agent).__name__
        (64, False, 'ActorCritic')
        >>> len(result.episode_returns) == len(result.episode_steps) > 0  # CartPole episodes are short
        True
        >>> result.mean_return == sum(result.episode_returns) / len(result.episode_returns)
        True
    """

    agent: ActorCritic
    global_step: int
    episode_returns: list[float] = field(default_factory=list)  # every episode finished in this call (not resumed)
    episode_steps: list[int] = field(default_factory=list)  # global step at which each finished
    eval_history: list[dict[str, float]] = field(default_factory=list)
    steps_per_second: float = 0.0
    run_dir: Path | None = None
    stopped_early: bool = False  # stopped by Ctrl-C / SIGTERM (a checkpoint was saved; continue with resume)
    # Ctrl-C / SIGTERM arrived, also during the last update (then the run is complete and stopped_early is False): a
    # caller running several trainings in a row (the Sonic protocol) stops after this one
    stop_requested: bool = False

    @property
    def mean_return(self) -> float:
        """Mean return over the episodes of this call (after a resume, the run's are in ``episodes.csv``:
        :meth:`run_episodes`)."""
        return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")

    def run_episodes(self) -> tuple[int, float]:
        """(episodes, mean return) of the whole run, resumed parts included, from the run's ``episodes.csv``;
        this call's own episodes when there is no such file (or no ``run_dir``)."""
        csv_path = self.run_dir / "episodes.csv" if self.run_dir is not None else None
        if csv_path is None or not csv_path.exists() or not csv_path.stat().st_size:
            return len(self.episode_returns), self.mean_return
        returns = read_episodes(csv_path)[1]
        return len(returns), float(np.mean(returns)) if len(returns) else float("nan")


@releases_run_dirs  # the run directory's claim ends with the run, also when it raises
def train_ppo(
    envs: gym.vector.VectorEnv | EnvFns,
    config: PPOConfig,
    run_dir: str | os.PathLike[str],
    *,
    init_checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    eval_env_fns: dict[str, Callable[[], gym.Env]] | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    run_info: dict[str, Any] | None = None,
) -> PPOResult:
    """Train PPO; write logs, a learning curve and checkpoints into ``run_dir``.

    Args:
        envs: a same-step-autoreset ``VectorEnv`` or a list of env factories (one per parallel env; for joint
            training give one factory per level). A ``VectorEnv`` with ``checkpoint_tensors()`` and
            ``load_checkpoint_tensors(tensors, source)`` methods (the imitation agent's exploration counts) has that
            state saved with every checkpoint and restored on ``resume``.
        config: hyperparameters (``config.num_envs`` is overridden by the number of envs given).
        run_dir: output directory: ``episodes.csv``, ``metrics.csv``, ``tb/``, ``checkpoint/``, ``learning_curve.png``
            (and ``self_imitation/`` with ``config.sil_coef > 0``: the episodes it replays, saved with each checkpoint).
        init_checkpoint: start from these weights (fine-tuning); the optimizer starts fresh. Its network
            (``network``, ``recurrent``, ``lstm_size``, ``mlp_hidden``) must match ``config``'s.
        resume: continue from ``run_dir/checkpoint`` (weights, optimizer, step count, RNG) if it exists, else
            start from step 0; rows logged after the checkpoint's step are dropped from the CSV logs (those
            steps are played again). Without ``resume``, a ``run_dir`` that already holds a checkpoint or
            logged rows is refused (:class:`RunDirInUseError`, a FileExistsError), so two runs never mix in one
            ``episodes.csv``.
        eval_env_fns: named env factories evaluated every ``config.eval_every_steps`` (e.g. the Sonic test levels
            during joint training, to see overfitting); scores go to ``eval.csv`` as ``eval/<name>``.
        run_info: what the run trains on, as JSON values (the CLI's ``{"env_id": ...}``): kept in every checkpoint,
            and a ``resume`` with other values is refused, so one run never mixes two envs.
    """
    # Everything up to the first step checks the caller's envs, settings and checkpoints: errors raised here are
    # bad input (the CLIs print them as one line); an error from the training loop below keeps its traceback.
    with input_checks(gym.error.Error):
        # Validate against the number of envs actually given (it replaces config.num_envs), before starting any.
        if not isinstance(envs, gym.vector.VectorEnv):
            envs = list(envs)
        n_given = envs.num_envs if isinstance(envs, gym.vector.VectorEnv) else len(envs)
        if n_given:  # an empty list gets make_vector_env's message
            config = dataclasses.replace(config, num_envs=n_given)
        config.validate()
        flush_denormals()
        torch.set_num_threads(config.torch_threads)
        run_dir = Path(run_dir)
        ckpt_dir = run_dir / "checkpoint"
        if not resume:
            check_run_dir_free(run_dir)
        device = resolve_device(config.device)
        seed_everything(config.seed)
        # evaluation runs its envs in forked workers, which inherit this process's emulators: stable-retro refuses a
        # second emulator in a process that holds one, so with evaluation the actors stay out of this process too
        mode = "async" if eval_env_fns and config.vector_mode == "auto" else config.vector_mode
        envs = make_vector_env(envs, mode)
        try:  # a refused checkpoint must not leave the actor processes running
            # created only once the envs exist (a bad env id leaves no empty run dir), and claimed before the resume
            # below drops log rows: one process per run directory
            if eval_env_fns and config.eval_every_steps and _holds_retro_emulator(envs):  # failed in stable-retro
                raise ValueError(
                    "--vector-mode sync runs the retro envs in this process, and stable-retro allows one emulator "
                    "per process, so the evaluation envs cannot start: use --vector-mode async (or auto), or turn "
                    "evaluation off."
                )
            claim_run_dir(run_dir)
            obs_space, act_space = envs.single_observation_space, envs.single_action_space

            agent = build_agent(obs_space, act_space, config).to(device)
            optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5)
            global_step = 0
            if resume and checkpoint_exists(ckpt_dir):
                loaded, ck_cfg, tensors = load_agent(ckpt_dir, device)
                saved_info = ck_cfg.get("run_info")
                if saved_info is not None and not isinstance(saved_info, dict):  # a hand-edited config
                    saved_info = {"run_info": saved_info}
                if run_info is not None and saved_info is not None and saved_info != run_info:
                    changed = ", ".join(
                        f"{k} {saved_info.get(k)!r} (now {run_info.get(k)!r})"
                        for k in sorted(set(saved_info) | set(run_info))
                        if saved_info.get(k) != run_info.get(k)
                    )
                    raise CheckpointError(
                        f"the checkpoint in {ckpt_dir} was trained with {changed}: resume with the same settings, "
                        "or start a new run directory."
                    )
                check_agent_fits(loaded, obs_space, act_space, str(ckpt_dir))
                check_same_network(loaded, agent, str(ckpt_dir))
                _note_changed_settings(ck_cfg.get("hyperparameters"), config)
                agent.load_state_dict(loaded.state_dict())
                optimizer.load_state_dict(unpack_state(ck_cfg["optimizer"], tensors))
                for group in optimizer.param_groups:  # the loaded state carries the old rate; this run's config sets it
                    group["lr"] = config.learning_rate  # (annealing, when on, rescales it from here at every update)
                _set_global_rng_state(unpack_state(ck_cfg["rng"], tensors))
                global_step = int(ck_cfg["global_step"])
                if hasattr(envs, "load_checkpoint_tensors"):  # env state the run depends on (exploration counts)
                    envs.load_checkpoint_tensors(strip_prefix(tensors, "env"), f"PPO checkpoint '{ckpt_dir}'")
                print(f"resumed from {ckpt_dir} at step {global_step}", file=sys.stderr)
                note_nothing_to_train(global_step, config.total_timesteps)
            elif init_checkpoint is not None:
                loaded, _, _ = load_agent(init_checkpoint, device)
                check_agent_fits(loaded, obs_space, act_space, str(init_checkpoint))
                check_same_network(loaded, agent, str(init_checkpoint))
                agent.load_state_dict(loaded.state_dict())
            sil = None
            if config.sil_coef > 0:
                sil = EpisodeBuffer(config.sil_episodes, config.gamma, config.num_envs)
                if resume:  # the episodes it kept, up to the checkpoint's step
                    parts = _obs_parts(obs_space)
                    shapes = {k: tuple(p.shape) for k, p in parts.items()}
                    dtypes = {k: np.dtype(p.dtype) for k, p in parts.items()}
                    sil.load(run_dir / SIL_DIR, global_step, shapes, dtypes, int(act_space.n))
            if resume:  # the steps after the checkpoint are played again: drop what was logged of them (or all, from 0)
                for name in ("episodes.csv", "metrics.csv"):
                    drop_rows_after(run_dir / name, global_step)
                # the evaluation at step 0 runs again on a start from 0; a later one is logged before its checkpoint
                drop_rows_after(run_dir / "eval.csv", global_step if global_step > 0 else -1)
            save_hyperparameters(run_dir, config)
        except BaseException:
            envs.close()
            raise

    # Rollout storage: (num_steps, num_envs, ...), time-major so recurrent minibatches keep sequences whole.
    T, N = config.num_steps, config.num_envs
    obs_buf = _alloc_obs(obs_space, (T, N), device)
    actions = torch.zeros((T, N), dtype=torch.long, device=device)
    logprobs = torch.zeros((T, N), device=device)
    rewards = torch.zeros((T, N), device=device)
    dones = torch.zeros((T, N), device=device)
    values = torch.zeros((T, N), device=device)

    logger = RunLogger(run_dir, tensorboard=tensorboard, resumed_at=global_step if resume else None)
    result = PPOResult(agent=agent, global_step=global_step, run_dir=run_dir)
    next_obs_np, _ = envs.reset(seed=config.seed + global_step)
    next_obs = obs_to_tensor(next_obs_np, device)
    next_done = torch.zeros(N, device=device)
    lstm_state = agent.initial_state(N, device)
    ep_ret, ep_len = np.zeros(N), np.zeros(N, dtype=np.int64)
    num_updates = max(0, math.ceil((config.total_timesteps - global_step) / config.batch_size))
    next_eval = (global_step // config.eval_every_steps + 1) * config.eval_every_steps if config.eval_every_steps else 0
    bar = _progress_bar(progress, config.total_timesteps, global_step)
    start_time, start_step = time.time(), global_step
    if eval_env_fns and config.eval_every_steps:
        # at step 0; and on a resume, the evaluation a stop skipped (or one due while the run had none): the
        # checkpoint holds the policy it was due for, so the learning curve has no gap
        due = global_step // config.eval_every_steps * config.eval_every_steps
        last = last_logged_step(run_dir / "eval.csv") if global_step > 0 else None
        if global_step == 0 or last is None or last < due:
            _run_eval(agent, eval_env_fns, config, device, logger, result, global_step)

    stop = GracefulStop().__enter__()  # Ctrl-C / SIGTERM: finish this update, save, return
    try:
        for update in range(1, num_updates + 1):
            if config.anneal_lr:
                frac = 1.0 - global_step / config.total_timesteps
                optimizer.param_groups[0]["lr"] = frac * config.learning_rate
            ent_coef = config.entropy_coef_at(global_step)
            initial_lstm_state = None if lstm_state is None else (lstm_state[0].clone(), lstm_state[1].clone())

            # ---- collect a rollout ----------------------------------------------------------------------------------
            for step in range(T):
                global_step += N
                _store(obs_buf, step, next_obs)
                dones[step] = next_done
                with torch.no_grad():
                    action, logprob, _, value, lstm_state = agent.get_action_and_value(next_obs, lstm_state, next_done)
                values[step], actions[step], logprobs[step] = value, action, logprob
                action_np = action.cpu().numpy()
                obs_np, reward, terminated, truncated, infos = envs.step(action_np)
                done = np.logical_or(terminated, truncated)
                if sil is not None:  # its episodes end where GAE's do (a terminal lost life included)
                    sil.add_step(next_obs_np, action_np, _without_bonus(reward, infos), done, global_step)
                next_obs_np = obs_np
                rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
                next_obs = obs_to_tensor(obs_np, device)
                next_done = torch.as_tensor(done, dtype=torch.float32, device=device)
                ep_ret += reward
                ep_len += 1
                for i in np.flatnonzero(done):
                    # a lost life is a done for GAE and the LSTM, but the game (and its score) goes on
                    if _life_lost_only(infos, i, terminated, truncated):
                        continue
                    recorded = _finished_episode_stats(infos, i)
                    ret, length = recorded if recorded is not None else (float(ep_ret[i]), int(ep_len[i]))
                    logger.log_episode(global_step, ret, length, train_return=float(ep_ret[i]))
                    result.episode_returns.append(ret)
                    result.episode_steps.append(global_step)
                    ep_ret[i], ep_len[i] = 0.0, 0

            # ---- advantages (GAE) -----------------------------------------------------------------------------------
            with torch.no_grad():
                next_value = agent.get_value(next_obs, lstm_state, next_done)
                advantages = gae(rewards, values, dones, next_value, next_done, config.gamma, config.gae_lambda)
                returns = advantages + values

            # ---- optimise the clipped surrogate ---------------------------------------------------------------------
            b_obs = _flatten(obs_buf)
            b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
            b_adv, b_ret, b_val, b_dones = (
                advantages.reshape(-1),
                returns.reshape(-1),
                values.reshape(-1),
                dones.reshape(-1),
            )
            clipfracs: list[float] = []
            approx_kl = torch.zeros(())
            for _epoch in range(config.update_epochs):
                for mb_inds, mb_envs in _minibatches(T, N, config.num_minibatches, agent.recurrent):
                    mb_state = None
                    if agent.recurrent:  # whole sequences of a subset of envs, from the rollout's first state
                        mb_state = (initial_lstm_state[0][:, mb_envs], initial_lstm_state[1][:, mb_envs])
                    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
                        _index(b_obs, mb_inds), mb_state, b_dones[mb_inds], b_actions[mb_inds]
                    )
                    loss, pg_loss, v_loss, entropy_loss, approx_kl, clipfrac = ppo_loss(
                        newlogprob,
                        b_logprobs[mb_inds],
                        entropy,
                        newvalue,
                        b_val[mb_inds],
                        b_ret[mb_inds],
                        b_adv[mb_inds],  # normalised in there, per minibatch
                        clip_coef=config.clip_coef,
                        ent_coef=ent_coef,
                        vf_coef=config.vf_coef,
                        norm_adv=config.norm_adv,
                        clip_vloss=config.clip_vloss,
                    )
                    clipfracs.append(clipfrac)
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                    optimizer.step()
                if config.target_kl is not None and approx_kl > config.target_kl:
                    break
            sil_metrics = _self_imitation_update(agent, optimizer, sil, config, device) if sil is not None else {}
            # NaN weights (a learning rate too high) never replace the last good checkpoint; without this the next
            # rollout stopped on a bare "invalid logits" error, or a checkpoint due first saved the NaN
            refuse_diverged(agent, ckpt_dir, global_step, f"--learning-rate {config.learning_rate:g}", loss.item())

            # ---- log, evaluate, checkpoint --------------------------------------------------------------------------
            y_pred, y_true = b_val.cpu().numpy(), b_ret.cpu().numpy()
            var_y = np.var(y_true)
            sps = (global_step - start_step) / max(1e-9, time.time() - start_time)
            logger.log_metrics(
                global_step,
                **{
                    "losses/value_loss": v_loss.item(),
                    "losses/policy_loss": pg_loss.item(),
                    "losses/entropy": entropy_loss.item(),
                    "losses/approx_kl": approx_kl.item(),
                    "losses/clipfrac": float(np.mean(clipfracs)) if clipfracs else 0.0,
                    "losses/explained_variance": float("nan") if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y,
                    "charts/learning_rate": optimizer.param_groups[0]["lr"],
                    "charts/ent_coef": ent_coef,
                    "charts/SPS": sps,
                    **sil_metrics,
                },
            )
            result.global_step = global_step
            if bar is not None:
                recent = result.episode_returns[-20:]
                bar.update(global_step - bar.n)
                bar.set_postfix(ret=f"{np.mean(recent):.2f}" if recent else "-", sps=f"{sps:.0f}")
            if eval_env_fns and config.eval_every_steps and global_step >= next_eval:
                # stopping: the checkpoint first (an evaluation of minutes on Sonic can outlast a grace period); the
                # last update's evaluation always runs, as no resume would come back for it
                if stop.requested and update < num_updates:
                    print(
                        f"Stopping: the evaluation due at step {global_step} is skipped; --resume runs it first.",
                        file=sys.stderr,
                    )
                else:
                    _run_eval(agent, eval_env_fns, config, device, logger, result, global_step)
                next_eval += config.eval_every_steps
            if update % config.checkpoint_every_updates == 0 or update == num_updates or stop.requested:
                env_tensors = envs.checkpoint_tensors() if hasattr(envs, "checkpoint_tensors") else None
                # the settings are kept with the weights: hyperparameters.json is rewritten by every (resumed) call
                extra: dict[str, Any] = {"hyperparameters": dataclasses.asdict(config)}
                if run_info is not None:
                    extra["run_info"] = run_info
                if sil is not None:  # before the agent: a resume drops the episodes that ended after its checkpoint
                    sil.save(run_dir / SIL_DIR, global_step)
                save_agent(ckpt_dir, agent, optimizer, global_step, extra=extra, env_tensors=env_tensors)
                _plot(run_dir, result)
            if stop.requested and update < num_updates:
                result.stopped_early = True
                print(f"Stopped at step {global_step}; continue with resume from {run_dir}.", file=sys.stderr)
                break
    finally:
        result.stop_requested = stop.requested
        stop.__exit__()
        if bar is not None:
            bar.close()
        logger.close()
        envs.close()
    result.steps_per_second = (global_step - start_step) / max(1e-9, time.time() - start_time)
    return result


def _without_bonus(reward: np.ndarray, infos: dict[str, Any]) -> np.ndarray:
    """The reward less the count-based exploration bonus the env reports in ``info["count_bonus"]``
    (:class:`~dreamarcade.wrappers.exploration.CountBonus`, the imitation agent's ``PolicyFrames``): what
    self-imitation ranks and imitates. The bonus shrinks as the counts grow, so the first episodes of a run, paid for
    new places by the untrained policy, would rank first for good and keep returns above what the critic learns of
    the bonus paid now: their random steps would be imitated for the whole run.

    An env that ended its episode this step and was reset in it (a same-step autoreset vector env) reports its last
    step's info under ``infos["final_info"]`` and the reset's at the top: its bonus is taken from there."""
    out = reward
    for source in (infos, infos.get("final_info")):
        bonus = source.get("count_bonus") if isinstance(source, dict) else None
        if bonus is not None:
            out = out - np.where(source.get("_count_bonus", True), np.asarray(bonus, np.float64), 0.0)
    return out


def _obs_parts(space: gym.Space) -> dict[str, gym.Space]:
    """The observation's parts by key, as the self-imitation buffer stores them (``""`` for a plain array)."""
    return dict(space.spaces) if isinstance(space, gym.spaces.Dict) else {"": space}


def _self_imitation_update(
    agent: ActorCritic,
    optimizer: torch.optim.Optimizer,
    sil: EpisodeBuffer,
    config: PPOConfig,
    device: torch.device,
) -> dict[str, float]:
    """``config.sil_updates`` self-imitation minibatches from the buffer's best episodes; their metrics."""
    if not len(sil):
        return {
            "losses/sil_loss": float("nan"),
            "charts/sil_valid_frac": float("nan"),
            "charts/sil_best_return": sil.best_return,
        }
    rng = np.random.default_rng(np.random.randint(2**31))  # drawn from the checkpointed global stream: resumable
    batch = config.batch_size // config.num_minibatches
    losses, fracs = [], []
    for _ in range(config.sil_updates):
        obs, acts, rets = sil.sample(batch, rng)
        _, logprob, _, value, _ = agent.get_action_and_value(
            obs_to_tensor(obs, device), None, None, torch.as_tensor(acts, device=device)
        )
        loss, frac = self_imitation_loss(logprob, value, torch.as_tensor(rets, device=device), config.sil_value_coef)
        optimizer.zero_grad()
        (config.sil_coef * loss).backward()
        nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        fracs.append(frac)
    return {
        "losses/sil_loss": float(np.mean(losses)),
        "charts/sil_valid_frac": float(np.mean(fracs)),
        "charts/sil_best_return": sil.best_return,
    }


def _minibatches(T: int, N: int, num_minibatches: int, recurrent: bool) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Shuffled minibatch indices into the flattened (T*N) batch; recurrent ones take whole env columns."""
    if not recurrent:
        # every sample in every epoch: sizes differ by at most one when num_minibatches does not divide T*N
        return [(mb, np.arange(N)) for mb in torch.randperm(T * N).tensor_split(num_minibatches)]
    envs_per_mb = max(1, N // num_minibatches)
    env_perm = np.random.permutation(N)
    out = []
    flat = np.arange(T * N).reshape(T, N)
    for i in range(0, N, envs_per_mb):
        mb_envs = np.sort(env_perm[i : i + envs_per_mb])
        out.append((torch.as_tensor(flat[:, mb_envs].reshape(-1)), mb_envs))
    return out


def _progress_bar(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _plot(run_dir: Path, result: PPOResult) -> None:
    episodes = run_dir / "episodes.csv"
    if not episodes.exists() or episodes.stat().st_size == 0:
        return
    curves = {"train": read_episodes(episodes)}
    # the whole run's evaluations, from eval.csv: result.eval_history holds only this call's (not those before a resume)
    evals = run_dir / "eval.csv"
    rows: list[dict[str, str]] = []
    if evals.is_file():
        with evals.open(newline="") as f:
            rows = list(csv.DictReader(f))
    for column in sorted({k for r in rows for k in r if k.startswith("eval/")}):
        points = [(float(r["step"]), float(r[column])) for r in rows if r.get(column)]
        if points:
            xs, ys = (np.array(v) for v in zip(*points))
            curves[f"eval {column[5:]}"] = (xs, ys)
    plot_learning_curve(curves, run_dir / "learning_curve.png", title=f"PPO: {run_dir.name}", window=20)


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------
def evaluate_policy(
    agent: ActorCritic,
    env_fns: EnvFns,
    episodes: int = 1,
    deterministic: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    mode: str = "async",
) -> list[list[float]]:
    """Run ``agent`` on each env (in parallel) until each has finished ``episodes`` episodes; returns returns per env.

    ``mode="async"`` (default) runs each env in a subprocess, which keeps stable-retro emulators out of this process.

    Uses the unscaled return recorded by a RecordEpisodeStatistics inside the env when there is one. A done that is
    only a lost life (``info["game_over"] is False``, :class:`~dreamarcade.wrappers.atari.EpisodicLife`) is not an
    episode: each return is a whole game's.
    """
    if not isinstance(agent, ActorCritic):  # load_agent's whole tuple failed in the envs' first step
        hint = " (load_agent returns (agent, config, tensors))" if isinstance(agent, tuple) else ""
        raise TypeError(f"evaluate_policy needs the ActorCritic agent, got {type(agent).__name__}{hint}")
    envs = make_vector_env(list(env_fns), mode)
    device = torch.device(device)
    n = envs.num_envs
    results: list[list[float]] = [[] for _ in range(n)]
    try:
        obs, _ = envs.reset(seed=seed)
        state = agent.initial_state(n, device)
        done_t = torch.zeros(n, device=device)
        ep_ret = np.zeros(n)
        while min(len(r) for r in results) < episodes:
            with torch.no_grad():
                action, _, _, _, state = agent.get_action_and_value(
                    obs_to_tensor(obs, device), state, done_t, deterministic=deterministic
                )
            obs, reward, term, trunc, infos = envs.step(action.cpu().numpy())
            done = np.logical_or(term, trunc)
            ep_ret += reward
            for i in np.flatnonzero(done):
                if _life_lost_only(infos, i, term, trunc):  # the game goes on: one score per game, not per life
                    continue
                recorded = _finished_episode_stats(infos, i)
                if len(results[i]) < episodes:
                    results[i].append(recorded[0] if recorded is not None else float(ep_ret[i]))
                ep_ret[i] = 0.0
            done_t = torch.as_tensor(done, dtype=torch.float32, device=device)
    finally:
        envs.close()
    return results


def _run_eval(
    agent: ActorCritic,
    eval_env_fns: dict[str, Callable[[], gym.Env]],
    config: PPOConfig,
    device: torch.device,
    logger: RunLogger,
    result: PPOResult,
    step: int,
) -> None:
    names = list(eval_env_fns)
    scores = evaluate_policy(agent, [eval_env_fns[k] for k in names], config.eval_episodes, device=device, seed=step)
    row = {f"eval/{k}": float(np.mean(s)) for k, s in zip(names, scores)}
    row["eval/mean"] = float(np.mean([np.mean(s) for s in scores]))
    # eval.csv, not metrics.csv: eval rows have other columns. Written by name under the file's own header, so a
    # resumed run with its eval envs in another order (or other ones) never puts a score under the wrong column.
    logger.log_csv("eval.csv", {"step": step, **row})
    result.eval_history.append({"step": float(step), **{k[5:]: v for k, v in row.items()}})


# ----------------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------------
def add_config_args(
    parser: argparse.ArgumentParser, defaults: PPOConfig | None = None, exclude: Sequence[str] = ()
) -> None:
    """One ``--flag`` per :class:`PPOConfig` field (``--no-flag`` for booleans).

    ``exclude``: fields the command sets itself; they get no flag, so none is accepted and then ignored.
    """
    add_dataclass_args(parser, PPOConfig, defaults or PPOConfig(), exclude)


def config_from_args(args: argparse.Namespace) -> PPOConfig:
    """The :class:`PPOConfig` of parsed ``add_config_args`` flags (excluded fields keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PPOConfig) if hasattr(args, f.name)}
    return PPOConfig(**given)


def _make_gym_env(env_id: str, seed: int) -> Callable[[], gym.Env]:
    def thunk() -> gym.Env:
        import dreamarcade  # noqa: F401  (registers the dreamarcade ids in worker processes)

        env = gym.make(env_id)
        if not has_episode_statistics(env):  # the Sonic/retro factories record the unscaled return themselves
            env = gym.wrappers.RecordEpisodeStatistics(env)
        env.action_space.seed(seed)
        return env

    return thunk


def _cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    run_dir = Path(args.run_dir or f"runs/ppo/{args.env_id}")
    fns = [_make_gym_env(args.env_id, config.seed + i) for i in range(config.num_envs)]
    # --eval-every-steps scores the policy on a fresh copy of the env (eval.csv); its seeds differ from the actors'
    evals = {args.env_id: _make_gym_env(args.env_id, config.seed + 10_000)} if config.eval_every_steps > 0 else None
    result = train_ppo(
        fns,
        config,
        run_dir,
        init_checkpoint=args.init_from,
        resume=args.resume,
        eval_env_fns=evals,
        run_info={"env_id": args.env_id},
    )
    run_episodes, run_mean = result.run_episodes()
    print(
        json_text(
            {
                "run_dir": str(run_dir),
                "global_step": result.global_step,
                "mean_return": run_mean,  # the whole run's, resumed parts included
                "episodes": run_episodes,
                "sps": round(result.steps_per_second, 1),
            }
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dreamarcade.baselines ppo",
        description="PPO (CNN/MLP/LSTM) with checkpoints, resume, fine-tuning and the Sonic pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train PPO on any registered Discrete-action env id")
    p.add_argument("--env-id", required=True, help="a Gymnasium id, e.g. CartPole-v1 or MetaMaze-v0")
    p.add_argument("--run-dir", default=None, help="output directory (default runs/ppo/<env-id>)")
    p.add_argument("--init-from", default=None, help="PPO checkpoint directory to fine-tune from")
    p.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoint")
    add_config_args(p)
    p.set_defaults(func=_cmd_train)
    _add_sonic_commands(sub)
    return parser


def _add_sonic_commands(sub: Any) -> None:
    """The Sonic pipeline (joint training, fine-tuning, evaluation protocol) lives in ppo_sonic.py."""
    import importlib

    try:
        ppo_sonic = importlib.import_module("dreamarcade.baselines.ppo_sonic")
    except ModuleNotFoundError as exc:
        if exc.name != "dreamarcade.baselines.ppo_sonic":
            raise
        return
    ppo_sonic.add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        return input_error_status(exc)


if __name__ == "__main__":
    sys.exit(main())
