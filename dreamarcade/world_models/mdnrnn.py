"""M: the MDN-RNN of World Models, in PyTorch.

An LSTM (256 units for CarRacing, 512 for Doom) reads ``[z_t, a_t, restart_t]`` and a linear head predicts,
for every latent dimension independently, a 5-component Gaussian mixture over ``z_{t+1}`` (log pi, mu,
log sigma), plus optionally

* a **done** logit trained with sigmoid cross-entropy, positives weighted x10 (hardmaru's ``restart_factor``);
  the dream says done when ``p > 0.5`` (logit > 0), the deterministic cut-off the paper found more stable;
* a **reward** prediction (MSE) for envs whose reward is not survival (CarRacing).

Training data are the episodes **concatenated into one stream with a restart flag**, as in the original: the
flag is an input, and the LSTM state is zeroed at every restart, so a sequence may span episode boundaries.

Temperature tau: mixture logits are divided by tau and the Gaussian noise is scaled by sqrt(tau).

Example:
    >>> import torch
    >>> from dreamarcade.world_models.mdnrnn import MDNRNN
    >>> m = MDNRNN(z_size=64, action_size=1, hidden_size=512, predict_done=True)
    >>> out = m(torch.zeros(2, 10, 64), torch.zeros(2, 10, 1), torch.zeros(2, 10))
    >>> out.shape  # 64 dims x 5 mixtures x 3 + 1 done logit
    torch.Size([2, 10, 961])
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dreamarcade.checkpoint import load_checkpoint, save_checkpoint
from dreamarcade.errors import CheckpointError

__all__ = ["MDNRNN", "mdn_loss", "sample_next"]

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MDNRNN(nn.Module):
    """LSTM + mixture-density head.

    Doom: 512 units, 1,680,833 parameters (the paper's 1,678,785 plus the second bias vector PyTorch's LSTM keeps).
    """

    def __init__(
        self,
        z_size: int = 32,
        action_size: int = 3,
        hidden_size: int = 256,
        n_mixtures: int = 5,
        restart_input: bool = True,
        predict_done: bool = False,
        predict_reward: bool = False,
    ) -> None:
        super().__init__()
        self.z_size, self.action_size, self.hidden_size = int(z_size), int(action_size), int(hidden_size)
        self.n_mixtures = int(n_mixtures)
        self.restart_input, self.predict_done, self.predict_reward = restart_input, predict_done, predict_reward
        self.input_size = z_size + action_size + (1 if restart_input else 0)
        self.cell = nn.LSTMCell(self.input_size, hidden_size)
        self.n_mdn = z_size * n_mixtures * 3
        self.out_size = self.n_mdn + int(predict_done) + int(predict_reward)
        self.head = nn.Linear(hidden_size, self.out_size)

    # ----------------------------------------------------------------------------------------------- running
    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(batch, self.hidden_size, device=device)
        return z, z.clone()

    def _inputs(self, z: torch.Tensor, a: torch.Tensor, restart: torch.Tensor | None) -> torch.Tensor:
        parts = [z, a]
        if self.restart_input:
            parts.append((restart if restart is not None else torch.zeros(z.shape[:-1], device=z.device))[..., None])
        return torch.cat(parts, -1)

    def step(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        restart: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step: (z_t, a_t) and state (h, c) -> head output for t+1 and the new state."""
        h, c = state
        if restart is not None:
            keep = (1.0 - restart.float())[:, None]
            h, c = h * keep, c * keep
        h, c = self.cell(self._inputs(z, a, restart), (h, c))
        return self.head(h), (h, c)

    def forward(self, z: torch.Tensor, a: torch.Tensor, restart: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass over (B, T, .) sequences; the state is zeroed where ``restart`` is 1."""
        b, t = z.shape[:2]
        state = self.initial_state(b, z.device)
        x = self._inputs(z, a, restart)
        # Input projection for all steps at once, then a cheap per-step recurrence: faster than LSTMCell per step.
        xw = F.linear(x, self.cell.weight_ih, self.cell.bias_ih + self.cell.bias_hh)
        keep = 1.0 - restart.float()
        h, c = state
        hs = []
        for i in range(t):
            h, c = h * keep[:, i, None], c * keep[:, i, None]
            gates = xw[:, i] + F.linear(h, self.cell.weight_hh)
            ig, fg, gg, og = gates.chunk(4, 1)
            c = torch.sigmoid(fg) * c + torch.sigmoid(ig) * torch.tanh(gg)
            h = torch.sigmoid(og) * torch.tanh(c)
            hs.append(h)
        return self.head(torch.stack(hs, 1))

    def split(self, out: torch.Tensor, normalize: bool = True) -> dict[str, torch.Tensor]:
        """Head output -> logpi, mu, logsigma (..., z, K) and optional done logit / reward (...)."""
        k, zs = self.n_mixtures, self.z_size
        mdn = out[..., : self.n_mdn].reshape(*out.shape[:-1], zs, 3 * k)
        logpi, mu, logsigma = mdn.split(k, -1)
        res = {"logit_pi": logpi, "mu": mu, "logsigma": logsigma}
        if normalize:  # sampling applies its own temperature softmax and skips this
            res["logpi"] = F.log_softmax(logpi, -1)
        i = self.n_mdn
        if self.predict_done:
            res["done_logit"] = out[..., i]
            i += 1
        if self.predict_reward:
            res["reward"] = out[..., i]
        return res

    # ----------------------------------------------------------------------------------------------- storage
    def config(self) -> dict[str, Any]:
        return {
            "kind": "mdnrnn",
            "z_size": self.z_size,
            "action_size": self.action_size,
            "hidden_size": self.hidden_size,
            "n_mixtures": self.n_mixtures,
            "restart_input": self.restart_input,
            "predict_done": self.predict_done,
            "predict_reward": self.predict_reward,
        }

    def save(self, directory: str | os.PathLike[str], half: bool = False, extra: dict | None = None) -> None:
        tensors = {k: (v.half() if half else v) for k, v in self.state_dict().items()}
        save_checkpoint(directory, tensors, {**self.config(), **(extra or {})})

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        z_size: int | None = None,
        action_size: int | None = None,
        device: str | torch.device = "cpu",
    ) -> MDNRNN:
        """Load an MDN-RNN checkpoint, checking latent and action sizes against what the caller expects."""
        tensors, cfg = load_checkpoint(directory, kind="mdnrnn")
        for name, want in (("z_size", z_size), ("action_size", action_size)):
            if want is not None and cfg[name] != want:
                raise CheckpointError(
                    f"MDN-RNN checkpoint '{directory}' has {name}={cfg[name]}, but {name}={want} is needed "
                    "(the VAE's latent size / the env's action size). Use the checkpoint trained for this env and VAE."
                )
        model = cls(
            cfg["z_size"], cfg["action_size"], cfg["hidden_size"], cfg["n_mixtures"],
            cfg["restart_input"], cfg["predict_done"], cfg["predict_reward"],
        )  # fmt: skip
        try:
            model.load_state_dict({k: v.float() for k, v in tensors.items()})
        except RuntimeError as exc:
            raise CheckpointError(f"MDN-RNN checkpoint '{directory}' does not fit its config: {exc}") from exc
        return model.to(device).eval()


def mdn_loss(
    model: MDNRNN,
    out: torch.Tensor,
    z_next: torch.Tensor,
    z_mask: torch.Tensor,
    done: torch.Tensor | None = None,
    reward: torch.Tensor | None = None,
    step_mask: torch.Tensor | None = None,
    done_pos_weight: float = 10.0,
) -> dict[str, torch.Tensor]:
    """GMM negative log-likelihood per latent dimension (+ weighted done BCE, + reward MSE).

    ``z_mask`` marks steps whose next latent belongs to the same episode (no target across a restart);
    ``step_mask`` marks real (non-padding) steps for the done / reward terms.
    """
    p = model.split(out)
    y = z_next[..., None]
    log_normal = -0.5 * ((y - p["mu"]) * torch.exp(-p["logsigma"])).pow(2) - p["logsigma"] - LOG_SQRT_2PI
    nll = -torch.logsumexp(p["logpi"] + log_normal, -1).mean(-1)  # mean over latent dims
    zm = z_mask.float()
    losses = {"gmm": (nll * zm).sum() / zm.sum().clamp(min=1)}
    total = losses["gmm"]
    sm = torch.ones_like(zm) if step_mask is None else step_mask.float()
    if model.predict_done and done is not None:
        bce = F.binary_cross_entropy_with_logits(
            p["done_logit"], done.float(), pos_weight=torch.tensor(done_pos_weight, device=out.device), reduction="none"
        )
        losses["done"] = (bce * sm).sum() / sm.sum().clamp(min=1)
        total = total + losses["done"]
    if model.predict_reward and reward is not None:
        losses["reward"] = ((p["reward"] - reward).pow(2) * sm).sum() / sm.sum().clamp(min=1)
        total = total + losses["reward"]
    losses["total"] = total
    return losses


def sample_next(
    model: MDNRNN, out: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Sample z_{t+1} from the head output with temperature tau; also done (logit > 0) and reward."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use a small value like 0.01 for near-greedy.")
    p = model.split(out, normalize=False)
    probs = torch.softmax(p["logit_pi"] / temperature, -1)  # (B, z, K)
    b, zs, k = probs.shape
    u = torch.rand(b, zs, 1, generator=generator, device=out.device)
    # Inverse-CDF draw of one mixture per dimension (torch.multinomial has no batched generator-safe path here).
    idx = (probs.cumsum(-1) < u).sum(-1, keepdim=True).clamp_(max=k - 1)
    mu = p["mu"].gather(-1, idx).squeeze(-1)
    sigma = p["logsigma"].gather(-1, idx).squeeze(-1).exp()
    eps = torch.randn(b, zs, generator=generator, device=out.device)
    res = {"z": mu + sigma * eps * math.sqrt(temperature)}
    if model.predict_done:
        res["done"] = p["done_logit"] > 0.0
        res["done_logit"] = p["done_logit"]
    if model.predict_reward:
        res["reward"] = p["reward"]
    return res
