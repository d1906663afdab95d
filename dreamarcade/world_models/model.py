"""A trained world model: V (ConvVAE) + M (MDN-RNN) + the initial latents a dream starts from.

On disk (one directory, e.g. ``dreamarcade/assets/dream_doom`` or a run's ``runs/dreams/doom``)::

    world_model.json   env ("doom" | "carracing"), default temperature, step cap, feature layout
    vae/               ConvVAE checkpoint (safetensors + config.json)
    mdnrnn/            MDN-RNN checkpoint
    initial_z/         mu / logvar of recorded first frames (dream resets sample one of them)
    controller/        optional: a controller evolved for this model

Example:
    >>> from dreamarcade.world_models.model import WorldModel
    >>> wm = WorldModel.bundled("doom")
    >>> wm.feature_size  # [z, c, h] = 64 + 512 + 512
    1088
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamarcade.checkpoint import (
    atomic_write_text,
    built_from_config,
    load_checkpoint,
    read_json_object,
    save_checkpoint,
)
from dreamarcade.errors import CheckpointError
from dreamarcade.world_models.mdnrnn import MDNRNN
from dreamarcade.world_models.vae import ConvVAE

__all__ = ["WorldModel", "ENV_DEFAULTS", "bundled_dir", "check_controller_matches", "world_model_fingerprint"]

# Per env: latent size, action size, LSTM size, feature layout, reward source, step cap, default temperature.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "doom": {"z_size": 64, "action_size": 1, "hidden_size": 512, "features": "zch", "reward": "survival",
             "max_steps": 2100, "temperature": 1.15, "predict_done": True, "predict_reward": False},
    "carracing": {"z_size": 32, "action_size": 3, "hidden_size": 256, "features": "zh", "reward": "predicted",
                  "max_steps": 1000, "temperature": 1.0, "predict_done": False, "predict_reward": True},
}  # fmt: skip

# The real envs' action boxes. Their games saturate outside them (TakeCover thresholds at +-1/3, CarRacing's
# steering joint and brakes saturate, gas is clipped), so M must be fed actions clipped to these bounds.
ACTION_BOUNDS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "doom": ((-1.0,), (1.0,)),
    "carracing": ((-1.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def bundled_dir(env: str) -> Path:
    """Directory of the weights this package ships for ``env`` ("doom" or "carracing")."""
    if env not in ENV_DEFAULTS:
        raise ValueError(f"Unknown env {env!r}; choose one of {sorted(ENV_DEFAULTS)}.")
    return _ASSETS / ("dream_doom" if env == "doom" else "dream_carracing")


@dataclass
class WorldModel:
    """V + M + initial latents for one env.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from dreamarcade.world_models.model import WorldModel
        >>> wm = WorldModel.bundled("carracing")
        >>> wm.z_size, wm.action_size, wm.features, wm.reward
        (32, 3, 'zh', 'predicted')
        >>> wm.clip_actions(np.array([[2.0, -0.5, 0.25]])).tolist()  # steer, gas, brake into the real env's box
        [[1.0, 0.0, 0.25]]
        >>> h, c = wm.rnn.initial_state(1)
        >>> wm.make_features(torch.zeros(1, wm.z_size), h, c).shape  # [z, h] = 32 + 256
        torch.Size([1, 288])
    """

    env: str
    vae: ConvVAE
    rnn: MDNRNN
    initial_mu: torch.Tensor
    initial_logvar: torch.Tensor
    temperature: float
    max_steps: int
    features: str  # "zch": [z, c, h] (Doom) or "zh": [z, h] (CarRacing)
    reward: str  # "survival": +1 per step, or "predicted": the reward head

    @property
    def z_size(self) -> int:
        return self.vae.z_size

    @property
    def action_size(self) -> int:
        return self.rnn.action_size

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) float32 arrays (A,): the real env's action box."""
        low, high = ACTION_BOUNDS[self.env]
        return np.array(low, np.float32), np.array(high, np.float32)

    def clip_actions(self, actions: np.ndarray) -> np.ndarray:
        """Actions (..., A) clipped to :attr:`action_bounds`, as float32: what the real game effectively does."""
        low, high = self.action_bounds
        return np.clip(np.asarray(actions, np.float32), low, high)

    @property
    def feature_size(self) -> int:
        h = self.rnn.hidden_size
        return self.z_size + (2 * h if self.features == "zch" else h)

    def make_features(self, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, c, h] if self.features == "zch" else [z, h], -1)

    def to(self, device: str | torch.device) -> WorldModel:
        self.vae.to(device)
        self.rnn.to(device)
        self.initial_mu = self.initial_mu.to(device)
        self.initial_logvar = self.initial_logvar.to(device)
        return self

    # --------------------------------------------------------------------------------------------- storage
    def save(self, directory: str | os.PathLike[str], half: bool = False) -> None:
        d = Path(directory)
        # what V's and M's checkpoints recorded beyond their configs (training records, calibrate-done's
        # done_bias_shift) is written again: a copy or a bundle of a calibrated model says it is calibrated
        self.vae.save(d / "vae", half=half, extra=self.vae.checkpoint_meta)
        self.rnn.save(d / "mdnrnn", half=half, extra=self.rnn.checkpoint_meta)
        save_checkpoint(
            d / "initial_z",
            {"mu": self.initial_mu.half() if half else self.initial_mu,
             "logvar": self.initial_logvar.half() if half else self.initial_logvar},
            {"kind": "initial_z", "z_size": self.z_size},
        )  # fmt: skip
        meta = {"env": self.env, "temperature": self.temperature, "max_steps": self.max_steps,
                "features": self.features, "reward": self.reward}  # fmt: skip
        atomic_write_text(d / "world_model.json", json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike[str], env: str | None = None, device: str = "cpu") -> WorldModel:
        """Load a world model directory; ``env`` (if given) must match, and V, M and initial z must agree."""
        d = check_world_model_dir(directory)
        meta_path = d / "world_model.json"
        meta = read_json_object(meta_path)  # unreadable, or a missing field later: a CheckpointError naming it
        if env is not None and meta.get("env") != env:
            raise CheckpointError(f"World model '{d}' was trained for {meta.get('env')!r}, not {env!r}.")
        vae = ConvVAE.load(d / "vae", device=device)
        rnn = MDNRNN.load(d / "mdnrnn", z_size=vae.z_size, device=device)
        tensors, cfg = load_checkpoint(d / "initial_z", kind="initial_z")
        if cfg.get("z_size") != vae.z_size or tensors["mu"].shape[-1] != vae.z_size:
            raise CheckpointError(f"initial_z in '{d}' has z={cfg.get('z_size')}, the VAE z={vae.z_size}.")
        want_a = ENV_DEFAULTS[meta["env"]]["action_size"]
        if rnn.action_size != want_a:
            raise CheckpointError(
                f"MDN-RNN in '{d}' takes {rnn.action_size} action dims; env {meta['env']!r} has {want_a}."
            )
        with built_from_config(meta_path, "World model"):
            return cls(
                env=meta["env"], vae=vae, rnn=rnn,
                initial_mu=tensors["mu"].float().to(device), initial_logvar=tensors["logvar"].float().to(device),
                temperature=float(meta["temperature"]), max_steps=int(meta["max_steps"]),
                features=meta["features"], reward=meta["reward"],
            )  # fmt: skip

    @classmethod
    def bundled(cls, env: str, device: str = "cpu") -> WorldModel:
        """The world model this package ships for ``env`` (trained by this project's pipeline)."""
        d = bundled_dir(env)
        if not (d / "world_model.json").is_file():
            raise CheckpointError(
                f"No bundled world model for {env!r} at '{d}'. Reinstall dreamarcade, or pass model_dir= pointing at "
                "a model trained with `python -m dreamarcade.baselines world_models pipeline`."
            )
        return cls.load(d, env=env, device=device)

    @staticmethod
    def initial_from_series(mu: np.ndarray, logvar: np.ndarray, lengths: np.ndarray, n: int = 1000) -> tuple:
        """The first-frame (mu, logvar) of up to ``n`` episodes, as the paper's initial_z.json."""
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)[:n]
        return torch.as_tensor(mu[starts], dtype=torch.float32), torch.as_tensor(logvar[starts], dtype=torch.float32)


def check_world_model_dir(directory: str | os.PathLike[str]) -> Path:
    """``directory`` as a Path, or a :class:`CheckpointError` naming the fix if it holds no world model.

    >>> from dreamarcade.world_models.model import bundled_dir, check_world_model_dir
    >>> check_world_model_dir(bundled_dir("doom")).name
    'dream_doom'
    """
    d = Path(directory)
    if not (d / "world_model.json").is_file():
        raise CheckpointError(
            f"'{d}' is not a world model directory (no world_model.json). Pass the directory written by "
            "`python -m dreamarcade.baselines world_models train-mdnrnn` or a bundled one."
        )
    return d


def weights_sha256(checkpoint_dir: str | os.PathLike[str]) -> str:
    """The SHA-256 of the weights a checkpoint loads ("" when there is no checkpoint). It equals the hash the save
    recorded; after a save cut off between its renames it is the new weights', which the load takes, while
    ``config.json`` still records the old ones."""
    from dreamarcade.checkpoint import _read_weights_and_config, checkpoint_exists

    d = Path(checkpoint_dir)
    return _read_weights_and_config(d)[1] if checkpoint_exists(d) else ""


def world_model_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """A hash of the weights of V and M in ``model_dir`` (from their checkpoints' recorded weight hashes)."""
    parts = [weights_sha256(Path(model_dir) / sub) for sub in ("vae", "mdnrnn")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def check_controller_matches(
    ctrl_dir: str | os.PathLike[str], model_dir: str | os.PathLike[str], flag: str = "--eval-controller"
) -> None:
    """Raise ValueError if the controller in ``ctrl_dir`` was evolved in another world model than ``model_dir``'s.

    With ``--iterations`` each round retrains M in place, so ``run/controller`` (round 0) no longer fits
    ``run/world_model``. Controllers saved before the fingerprint was recorded pass with a note. ``flag``: the
    option that names the controller, for the message.
    """
    recorded = load_checkpoint(ctrl_dir, kind="controller")[1].get("world_model_sha256")
    if recorded is None:
        print(f"note: {ctrl_dir} does not record its world model; cannot check that it fits {model_dir}")
    elif recorded != world_model_fingerprint(model_dir):
        raise ValueError(
            f"The controller in {ctrl_dir} was evolved in another world model than {model_dir} (after "
            "--iterations, M was retrained: use that round's controller_iter<k>). Pass the matching controller "
            f"with {flag}, or evolve one in this world model."
        )
