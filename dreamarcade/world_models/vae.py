"""V: the convolutional VAE of World Models (Ha & Schmidhuber 2018), in PyTorch.

Encoder: 4 convs (4x4, stride 2, ReLU; 32/64/128/256 channels) -> 2x2x256 -> dense mu, logvar.
Decoder: dense to 1024 -> 1x1x1024 -> deconvs 128 (5x5), 64 (5x5), 32 (6x6), 3 (6x6, sigmoid), all stride 2.
Loss: summed squared error per image + KL, with hardmaru's free bits: the per-image KL is clamped below at
``kl_tolerance * z_size`` (0.5 * 32 = 16 nats for CarRacing, 0.5 * 64 = 32 for Doom).

Example:
    >>> import torch
    >>> from dreamarcade.world_models.vae import ConvVAE
    >>> vae = ConvVAE(z_size=32)
    >>> x = torch.rand(2, 3, 64, 64)
    >>> recon, mu, logvar = vae(x)
    >>> recon.shape, mu.shape
    (torch.Size([2, 3, 64, 64]), torch.Size([2, 32]))
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamarcade.checkpoint import built_from_config, load_checkpoint, save_checkpoint
from dreamarcade.errors import CheckpointError

__all__ = ["ConvVAE", "vae_loss", "frames_to_tensor"]


def frames_to_tensor(frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 frames (N, 64, 64, 3) -> float tensor (N, 3, 64, 64) in [0, 1]."""
    t = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames, device=device)
    if t.ndim != 4 or tuple(t.shape[1:]) != (64, 64, 3):
        raise ValueError(f"Expected frames of shape (N, 64, 64, 3), got {tuple(t.shape)}.")
    t = t.permute(0, 3, 1, 2)
    if t.dtype == torch.float32:  # .float() would return t itself: divide out of place, the caller's data stays
        return t / 255.0
    return t.float().div_(255.0)  # .float() made a new tensor (uint8 frames): divide that one in place


def checkpoint_extras(meta: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What a model checkpoint's ``meta`` records beyond the model's ``config`` (a training record, calibrate-done's
    ``done_bias_shift``), less the bookkeeping that ``save_checkpoint`` adds itself (keys starting with ``_``).

    >>> checkpoint_extras({"kind": "vae", "z_size": 64, "train_steps": 4, "_weights_sha256": "ab"}, {"kind": "vae",
    ...                   "z_size": 64})
    {'train_steps': 4}
    """
    return {k: v for k, v in meta.items() if not k.startswith("_") and k not in config}


class ConvVAE(nn.Module):
    """The paper's ConvVAE for 64x64x3 frames (4.35M parameters at z=32, 4.45M at z=64).

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from dreamarcade.world_models.vae import ConvVAE
        >>> vae = ConvVAE(z_size=64)  # Doom's latent size
        >>> sum(p.numel() for p in vae.parameters())
        4446915
        >>> mu, logvar = vae.encode_frames(np.zeros((2, 64, 64, 3), np.uint8))  # uint8 frames -> latents
        >>> mu.shape, logvar.dtype
        ((2, 64), dtype('float32'))
        >>> frames = vae.decode_to_frames(torch.as_tensor(mu))  # latents -> uint8 frames
        >>> frames.shape, frames.dtype
        ((2, 64, 64, 3), dtype('uint8'))
    """

    def __init__(self, z_size: int = 32, kl_tolerance: float = 0.5) -> None:
        super().__init__()
        if z_size <= 0:
            raise ValueError(f"z_size must be positive, got {z_size}.")
        self.z_size = int(z_size)
        self.kl_tolerance = float(kl_tolerance)
        self.checkpoint_meta: dict[str, Any] = {}  # as MDNRNN's: what its checkpoint records beyond config()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
            nn.Conv2d(64, 128, 4, 2), nn.ReLU(),
            nn.Conv2d(128, 256, 4, 2), nn.ReLU(),
        )  # fmt: skip
        self.fc_mu = nn.Linear(1024, z_size)
        self.fc_logvar = nn.Linear(1024, z_size)
        self.fc_dec = nn.Linear(z_size, 1024)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(1024, 128, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 5, 2), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 6, 2), nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 6, 2), nn.Sigmoid(),
        )  # fmt: skip

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3, 64, 64) in [0, 1] -> mu, logvar (N, z)."""
        h = self.enc(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z) -> images (N, 3, 64, 64) in [0, 1]."""
        return self.dec(self.fc_dec(z).view(-1, 1024, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames (N, 64, 64, 3) -> mu, logvar as float32 numpy arrays (also under bfloat16 autocast)."""
        dev = next(self.parameters()).device
        mu, logvar = self.encode(frames_to_tensor(frames, dev))
        return mu.float().cpu().numpy(), logvar.float().cpu().numpy()

    @torch.no_grad()
    def decode_to_frames(self, z: torch.Tensor) -> np.ndarray:
        """z (N, z) -> uint8 frames (N, 64, 64, 3)."""
        img = self.decode(z).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return img.permute(0, 2, 3, 1).cpu().numpy()

    def config(self) -> dict[str, Any]:
        return {"kind": "vae", "z_size": self.z_size, "kl_tolerance": self.kl_tolerance, "image_size": 64}

    def save(self, directory: str | os.PathLike[str], half: bool = False, extra: dict | None = None) -> None:
        """Save weights (optionally float16, to ship small assets) and config atomically."""
        tensors = {k: (v.half() if half else v) for k, v in self.state_dict().items()}
        save_checkpoint(directory, tensors, {**self.config(), **(extra or {})})

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], z_size: int | None = None, device: str | torch.device = "cpu"
    ) -> ConvVAE:
        """Load a VAE checkpoint; ``z_size`` (if given) must match the checkpoint's."""
        tensors, cfg = load_checkpoint(directory, kind="vae")
        if z_size is not None and cfg["z_size"] != z_size:
            raise CheckpointError(
                f"VAE checkpoint '{directory}' has latent size z={cfg['z_size']}, but z={z_size} was expected "
                "(Doom uses 64, CarRacing 32). Use the checkpoint trained for this env."
            )
        with built_from_config(directory, "VAE checkpoint"):
            model = cls(cfg["z_size"], cfg.get("kl_tolerance", 0.5))
        try:
            model.load_state_dict({k: v.float() for k, v in tensors.items()})
        except RuntimeError as exc:
            raise CheckpointError(f"VAE checkpoint '{directory}' does not fit a ConvVAE: {exc}") from exc
        model.checkpoint_meta = checkpoint_extras(cfg, model.config())
        return model.to(device).eval()


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_tolerance: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, kl): summed squared error per image, KL clamped at kl_tolerance * z (free bits)."""
    r_loss = (x - recon).pow(2).flatten(1).sum(1).mean()
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    kl = torch.clamp(kl, min=kl_tolerance * mu.shape[1]).mean()
    return r_loss + kl, r_loss, kl
