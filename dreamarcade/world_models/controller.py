"""C: the World Models controller, a single linear layer + tanh, as one flat parameter vector for CMA-ES.

* CarRacing: ``tanh(W [z, h] + b)``, 3 outputs mapped to steer = tanh, gas = (tanh + 1) / 2,
  brake = clip(tanh, 0, 1); (32 + 256) * 3 + 3 = 867 parameters. V-only ablation: ``tanh(W z + b)``.
* Doom: ``tanh(W [z, c, h])`` with no bias, 1 output in [-1, 1]; (64 + 512 + 512) = 1,088 parameters.

:meth:`Controller.act_batch` evaluates a whole population at once: parameters (P, n), features (P, R, d).

Example:
    >>> import numpy as np
    >>> from dreamarcade.world_models.controller import Controller
    >>> c = Controller.for_env("doom", feature_size=1088)
    >>> c.num_params
    1088
    >>> c.set_flat(np.zeros(1088)); c.act(np.zeros(1088)).shape
    (1,)
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from dreamarcade.checkpoint import built_from_config, load_checkpoint, save_checkpoint
from dreamarcade.errors import CheckpointError

__all__ = ["Controller", "map_actions"]


def map_actions(raw: torch.Tensor, action_mode: str) -> torch.Tensor:
    """tanh outputs -> env actions: "doom" passes them on; "carracing" maps to steer / gas / brake."""
    if action_mode == "carracing":
        return torch.stack([raw[..., 0], (raw[..., 1] + 1) / 2, raw[..., 2].clamp(0, 1)], -1)
    return raw


class Controller:
    """Linear + tanh policy over world-model features, stored as a flat parameter vector.

    Example:
        >>> import torch
        >>> from dreamarcade.world_models.controller import Controller
        >>> c = Controller.for_env("carracing", feature_size=32 + 256)
        >>> c.num_params  # (32 + 256) * 3 weights + 3 biases
        867
        >>> population = torch.zeros(4, c.num_params)  # 4 candidate parameter vectors, e.g. from CMA-ES
        >>> actions = c.act_batch(population, torch.zeros(4, 2, 288))  # 2 rollouts each
        >>> actions.shape
        torch.Size([4, 2, 3])
        >>> actions[0, 0].tolist()  # tanh(0) mapped to steer 0, gas (0 + 1) / 2, brake 0
        [0.0, 0.5, 0.0]
    """

    def __init__(self, feature_size: int, action_size: int, bias: bool, action_mode: str = "doom") -> None:
        if action_mode not in ("doom", "carracing"):
            raise ValueError(f"action_mode must be 'doom' or 'carracing', got {action_mode!r}.")
        self.feature_size, self.action_size, self.bias, self.action_mode = feature_size, action_size, bias, action_mode
        self.num_params = feature_size * action_size + (action_size if bias else 0)
        self.params = np.zeros(self.num_params, np.float32)

    @classmethod
    def for_env(cls, env: str, feature_size: int) -> Controller:
        """The paper's controller for ``env`` ("doom": no bias, 1 action; "carracing": bias, 3 actions)."""
        if env == "doom":
            return cls(feature_size, 1, bias=False, action_mode="doom")
        if env == "carracing":
            return cls(feature_size, 3, bias=True, action_mode="carracing")
        raise ValueError(f"Unknown env {env!r}; choose 'doom' or 'carracing'.")

    def set_flat(self, params: np.ndarray) -> None:
        params = np.asarray(params, np.float32).reshape(-1)
        if params.size != self.num_params:
            raise ValueError(f"Controller needs {self.num_params} parameters, got {params.size}.")
        self.params = params.copy()

    def unflatten(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(P, n) -> W (P, A, d), b (P, A) or None."""
        p = params.shape[0]
        nw = self.feature_size * self.action_size
        w = params[:, :nw].reshape(p, self.action_size, self.feature_size)
        b = params[:, nw:] if self.bias else None
        return w, b

    def act_batch(self, params: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Population forward: params (P, n), features (P, R, d) -> env actions (P, R, A)."""
        w, b = self.unflatten(params)
        raw = torch.einsum("pad,prd->pra", w, features)
        if b is not None:
            raw = raw + b[:, None, :]
        return map_actions(torch.tanh(raw), self.action_mode)

    def act(self, features: np.ndarray) -> np.ndarray:
        """One feature vector (d,) -> env action (A,) with the current parameters."""
        f = torch.as_tensor(np.asarray(features, np.float32)).reshape(1, 1, -1)
        if f.shape[-1] != self.feature_size:
            raise ValueError(f"Controller expects {self.feature_size} features, got {f.shape[-1]}.")
        return self.act_batch(torch.as_tensor(self.params)[None], f)[0, 0].numpy()

    def config(self) -> dict[str, Any]:
        return {
            "kind": "controller",
            "feature_size": self.feature_size,
            "action_size": self.action_size,
            "bias": self.bias,
            "action_mode": self.action_mode,
        }

    def save(self, directory: str | os.PathLike[str], extra: dict | None = None) -> None:
        save_checkpoint(directory, {"params": torch.as_tensor(self.params)}, {**self.config(), **(extra or {})})

    @classmethod
    def load(cls, directory: str | os.PathLike[str], feature_size: int | None = None) -> Controller:
        tensors, cfg = load_checkpoint(directory, kind="controller")
        if feature_size is not None and cfg["feature_size"] != feature_size:
            raise CheckpointError(
                f"Controller '{directory}' reads {cfg['feature_size']} features, but the env gives {feature_size}. "
                "Evolve a controller for this world model (its z and hidden sizes)."
            )
        with built_from_config(directory, "Controller"):
            c = cls(cfg["feature_size"], cfg["action_size"], cfg["bias"], cfg["action_mode"])
            c.set_flat(tensors["params"].numpy())
        return c

    def __repr__(self) -> str:
        return f"Controller({json.dumps(self.config())})"
