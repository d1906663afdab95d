"""TDC + CMC video embeddings (Aytar et al. 2018): the visual encoder phi, the audio encoder psi, classifiers tau.

* **phi** (visual): a stack of ``stack`` RGB frames (channels first, 3 * stack channels) at ``crop_size`` pixels:
  three padded 3x3 convs (each BN + ReLU + 2x2 max-pool), ``res_blocks`` residual blocks, then a 2-layer MLP;
  the output is L2-normalised. Paper size: channels (32, 64, 64), 3 blocks, 1024 wide, 140 -> 128 crops.
* **psi** (audio): a log-magnitude STFT of the audio under the frame stack, four 1-D convs (kernel 8, BN, ReLU,
  2x max-pool) over time with frequency bins as channels, then a linear layer to the embedding, L2-normalised.
* **tau** (``tau_td``, ``tau_cm``): elementwise product of two embeddings -> MLP -> one logit per distance class.

:class:`EmbeddingConfig` holds every shape-defining number; :meth:`EmbeddingConfig.paper` gives the paper's sizes
and the default is a CPU-sized width. Where the paper is unclear (CMC classes, lambda, STFT) the choice is a
parameter; defaults and why are in the README's Video imitation section.

Example:
    >>> import torch
    >>> from dreamarcade.reward_models.embedding import EmbeddingConfig, TDCCMC
    >>> cfg = EmbeddingConfig()
    >>> model = TDCCMC(cfg).eval()
    >>> model.embed(torch.zeros(2, 3 * cfg.stack, cfg.crop_size, cfg.crop_size)).shape[0]
    2
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dreamarcade.checkpoint import built_from_config, load_checkpoint, save_checkpoint
from dreamarcade.errors import CheckpointError

__all__ = [
    "EmbeddingConfig",
    "check_intervals",
    "TDCCMC",
    "VisualEncoder",
    "AudioEncoder",
    "stack_frames",
    "load_embedding",
    "visual_fingerprint",
]

# kernel-8 "same" convolutions (the paper's audio net) make torch pad with a copy and warn about it: harmless here
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel", category=UserWarning)

PAPER_INTERVALS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (3, 4), (5, 20), (21, 200))


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_intervals(name: str, intervals: Any) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``intervals`` is a non-empty sequence of frame-gap classes
    ``(lo, hi)`` with integers ``0 <= lo <= hi``, in increasing order and disjoint (a gap in two classes would get
    either label at random).

    >>> check_intervals("tdc_intervals", ((0, 0), (3, 1)))
    Traceback (most recent call last):
    ...
    ValueError: tdc_intervals must be (lo, hi) frame gaps with integers 0 <= lo <= hi, got ((0, 0), (3, 1))
    """
    try:
        ok = len(intervals) > 0 and all(
            len(iv) == 2 and all(_is_int(x) for x in iv) and 0 <= iv[0] <= iv[1] for iv in intervals
        )
    except TypeError:  # not a sequence of pairs
        ok = False
    if not ok:
        raise ValueError(f"{name} must be (lo, hi) frame gaps with integers 0 <= lo <= hi, got {intervals}")
    overlapping = [(a, b) for a, b in zip(intervals, intervals[1:]) if b[0] <= a[1]]
    if overlapping:
        raise ValueError(
            f"{name} must be disjoint classes in increasing order, got {intervals}: {overlapping[0][0]} and "
            f"{overlapping[0][1]} overlap or are out of order"
        )


@dataclass
class EmbeddingConfig:
    """Every shape-defining hyperparameter of the embedding (stored in checkpoints).

    Example:
        >>> import json
        >>> from dreamarcade.reward_models.embedding import EmbeddingConfig
        >>> cfg = EmbeddingConfig()
        >>> cfg.samples_per_frame  # audio samples under one 15 Hz frame at 7680 Hz
        512
        >>> EmbeddingConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg  # as checkpoints store it
        True
        >>> EmbeddingConfig.paper().embed_dim
        1024
    """

    frame_size: int = 54  # frames are resized to this square (paper: 140)
    crop_size: int = 48  # random crop for training, centre crop otherwise (paper: 128)
    stack: int = 4  # consecutive frames per input (paper: 4)
    channels: tuple[int, int, int] = (16, 32, 32)  # paper: (32, 64, 64)
    res_blocks: int = 1  # paper: 3
    hidden: int = 256  # MLP width (paper: 1024)
    embed_dim: int = 128  # N (paper: 1024)
    classifier_hidden: int = 256  # tau's hidden width (paper: 1024)
    fps: float = 15.0  # frames per second the videos are read at (agent step rate)
    audio_rate: int = 7680  # Hz; 512 samples per 15 Hz frame [assumption: not in the paper]
    n_fft: int = 256  # STFT size -> 129 frequency channels [assumption]
    hop: int = 64  # STFT hop -> 33 columns for 4 frames of audio [assumption]
    audio_channels: tuple[int, int, int, int] = (32, 64, 64, 128)  # paper: (32, 64, 128, 256)
    tdc_intervals: tuple[tuple[int, int], ...] = PAPER_INTERVALS
    cmc_intervals: tuple[tuple[int, int], ...] = PAPER_INTERVALS  # unresolved in the paper: a parameter
    cmc_weight: float = 1.0  # lambda in L = L_td + lambda * L_cm (value not in the paper: 1 assumed)
    tdc_weight: float = 1.0  # 1 in the paper; 0 trains a CMC-only embedding (an ablation row)
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def paper() -> EmbeddingConfig:
        """The paper's network sizes (140 -> 128 crops, 32/64/64 channels, 3 blocks, 1024-d)."""
        return EmbeddingConfig(
            frame_size=140,
            crop_size=128,
            channels=(32, 64, 64),
            res_blocks=3,
            hidden=1024,
            embed_dim=1024,
            classifier_hidden=1024,
            audio_channels=(32, 64, 128, 256),
        )

    @property
    def samples_per_frame(self) -> int:
        return round(self.audio_rate / self.fps)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["audio_channels"] = list(self.audio_channels)
        d["tdc_intervals"] = [list(x) for x in self.tdc_intervals]
        d["cmc_intervals"] = [list(x) for x in self.cmc_intervals]
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> EmbeddingConfig:
        if not isinstance(d, dict):  # a checkpoint's "embedding": null crashed with an AttributeError
            raise TypeError(f"the embedding settings must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(EmbeddingConfig)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("channels", "audio_channels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        for k in ("tdc_intervals", "cmc_intervals"):
            if k in kw:
                kw[k] = tuple(tuple(x) for x in kw[k])
                check_intervals(k, kw[k])  # a checkpoint's classes are sampled from again (evaluate_accuracy)
        return EmbeddingConfig(**kw)


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(x + self.b2(self.c2(y)))


class VisualEncoder(nn.Module):
    """phi: (B, 3 * stack, crop, crop) float in [0, 1] -> (B, embed_dim), L2-normalised.

    Example:
        >>> import torch
        >>> from dreamarcade.reward_models.embedding import EmbeddingConfig, VisualEncoder
        >>> cfg = EmbeddingConfig()
        >>> phi = VisualEncoder(cfg).eval()
        >>> e = phi(torch.rand(2, 3 * cfg.stack, cfg.crop_size, cfg.crop_size))  # two stacks of 4 RGB frames
        >>> tuple(e.shape), torch.allclose(e.norm(dim=1), torch.ones(2))
        ((2, 128), True)
    """

    def __init__(self, cfg: EmbeddingConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3 * cfg.stack
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        layers += [_ResBlock(c_in) for _ in range(cfg.res_blocks)]
        self.conv = nn.Sequential(*layers)
        side = cfg.crop_size // 8
        self.mlp = nn.Sequential(
            nn.Linear(c_in * side * side, cfg.hidden),
            nn.BatchNorm1d(cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.embed_dim),
        )
        self.in_channels = 3 * cfg.stack
        self.size = cfg.crop_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2:] != (self.size, self.size):
            raise ValueError(
                f"the visual encoder expects (batch, {self.in_channels}, {self.size}, {self.size}) frame stacks, "
                f"got {tuple(x.shape)}: process frames with the embedding's frame_size/crop_size/stack settings"
            )
        return F.normalize(self.mlp(self.conv(x).flatten(1)), dim=1)


class AudioEncoder(nn.Module):
    """psi: (B, samples) mono audio -> log STFT (B, freq, time) -> 1-D convs -> (B, embed_dim), L2-normalised.

    Example (the audio under a stack of 4 frames: 4 x 512 samples at 7680 Hz):
        >>> import torch
        >>> from dreamarcade.reward_models.embedding import AudioEncoder, EmbeddingConfig
        >>> cfg = EmbeddingConfig()
        >>> psi = AudioEncoder(cfg).eval()
        >>> tone = torch.sin(torch.arange(cfg.samples_per_frame * cfg.stack) / 5.0).repeat(2, 1)
        >>> tuple(psi.spectrogram(tone).shape)  # 129 frequency bins x 33 STFT columns
        (2, 129, 33)
        >>> e = psi(tone)
        >>> tuple(e.shape), torch.allclose(e.norm(dim=1), torch.ones(2))
        ((2, 128), True)
    """

    def __init__(self, cfg: EmbeddingConfig) -> None:
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop
        c_in = cfg.n_fft // 2 + 1
        layers: list[nn.Module] = []
        for c in cfg.audio_channels:
            layers += [nn.Conv1d(c_in, c, 8, padding="same", bias=False), nn.BatchNorm1d(c), nn.ReLU()]
            layers += [nn.MaxPool1d(2, ceil_mode=True)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        cols = cfg.samples_per_frame * cfg.stack // cfg.hop + 1
        for _ in cfg.audio_channels:
            cols = (cols + 1) // 2
        self.fc = nn.Linear(c_in * cols, cfg.embed_dim)
        self.samples = cfg.samples_per_frame * cfg.stack
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        return torch.log1p(spec.abs() * 10.0)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 2 or audio.shape[1] != self.samples:
            raise ValueError(f"the audio encoder expects (batch, {self.samples}) samples, got {tuple(audio.shape)}")
        return F.normalize(self.fc(self.conv(self.spectrogram(audio)).flatten(1)), dim=1)


class _Classifier(nn.Module):
    def __init__(self, d: int, hidden: int, k: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a * b)


class TDCCMC(nn.Module):
    """phi, psi and the two distance classifiers; ``embed`` is what rewards and cycle-consistency use.

    Example (embed every position of a processed video, save the model and load it back):
        >>> import tempfile, numpy as np, torch
        >>> from dreamarcade.reward_models.embedding import EmbeddingConfig, TDCCMC, load_embedding
        >>> model = TDCCMC(EmbeddingConfig())
        >>> frames = np.random.default_rng(0).integers(0, 256, (10, 54, 54, 3), dtype=np.uint8)
        >>> emb = model.embed_frames(frames)  # in eval mode; the training mode is restored after
        >>> emb.shape, model.training
        ((10, 128), True)
        >>> model.tau_td(torch.from_numpy(emb[:2]), torch.from_numpy(emb[5:7])).shape  # one logit per TDC class
        torch.Size([2, 6])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     model.save(d)
        ...     loaded, config = load_embedding(d)
        >>> config["kind"], bool(np.allclose(loaded.embed_frames(frames), emb, atol=1e-6))
        ('tdc_cmc', True)
    """

    def __init__(self, cfg: EmbeddingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.phi = VisualEncoder(cfg)
        self.psi = AudioEncoder(cfg)
        self.tau_td = _Classifier(cfg.embed_dim, cfg.classifier_hidden, len(cfg.tdc_intervals))
        self.tau_cm = _Classifier(cfg.embed_dim, cfg.classifier_hidden, len(cfg.cmc_intervals))

    def embed(self, stacks: torch.Tensor) -> torch.Tensor:
        """Visual embeddings of float frame stacks (B, 3 * stack, crop, crop) in [0, 1]."""
        return self.phi(stacks)

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """Embed every position of a processed video (T, frame_size, frame_size, 3) uint8 -> (T, embed_dim)."""
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        try:
            for s in range(0, len(frames), batch):
                idx = np.arange(s, min(s + batch, len(frames)))
                x = stack_frames(frames, idx, self.cfg).to(device)
                out.append(self.phi(x).float().cpu().numpy())
        finally:  # also when the frames are refused: a model in training must stay in training
            self.train(was)
        return np.concatenate(out) if out else np.zeros((0, self.cfg.embed_dim), np.float32)

    def save(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Atomic safetensors + JSON checkpoint (kind ``tdc_cmc``)."""
        config = {"kind": "tdc_cmc", "embedding": self.cfg.to_json(), **(extra or {})}
        tensors = {k: v for k, v in self.state_dict().items()}
        save_checkpoint(directory, tensors, config)


def stack_frames(
    frames: np.ndarray | torch.Tensor, idx: np.ndarray, cfg: EmbeddingConfig, crop: str = "center", rng: Any = None
) -> torch.Tensor:
    """Frame stacks ending at ``idx``: frames ``i - stack + 1 .. i`` (clamped at 0), cropped, channels first.

    ``frames`` (T, H, W, 3) uint8 with H = W = ``cfg.frame_size``; returns (B, 3 * stack, crop, crop) float32.
    ``crop="random"`` takes one random crop per stack (the paper's only augmentation); ``"center"`` takes the
    centre square. Indices outside ``[0, T)`` are refused.
    """
    f = torch.as_tensor(frames)
    if f.ndim != 4 or f.shape[1] != cfg.frame_size or f.shape[2] != cfg.frame_size or f.shape[3] != 3:
        raise ValueError(
            f"expected processed frames (T, {cfg.frame_size}, {cfg.frame_size}, 3), got {tuple(f.shape)}; "
            f"read videos with size=({cfg.frame_size}, {cfg.frame_size})"
        )
    if crop not in ("random", "center"):  # a typo turned the paper's only augmentation off silently
        raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
    idx = np.asarray(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= len(frames)):  # they were clamped to the first or last frame
        raise ValueError(f"frame indices must be in [0, {len(frames)}), got {idx.min()}..{idx.max()}")
    offs = np.arange(-cfg.stack + 1, 1)
    all_idx = np.clip(idx[:, None] + offs[None], 0, len(frames) - 1)
    x = f[torch.as_tensor(all_idx.reshape(-1))].reshape(len(idx), cfg.stack, cfg.frame_size, cfg.frame_size, 3)
    x = x.permute(0, 1, 4, 2, 3).reshape(len(idx), 3 * cfg.stack, cfg.frame_size, cfg.frame_size)
    m = cfg.frame_size - cfg.crop_size
    if crop == "random":
        rng = rng or np.random.default_rng()
        oy, ox = rng.integers(0, m + 1, size=(2, len(idx)))
        x = torch.stack(
            [x[b, :, oy[b] : oy[b] + cfg.crop_size, ox[b] : ox[b] + cfg.crop_size] for b in range(len(idx))]
        )
    else:
        o = m // 2
        x = x[:, :, o : o + cfg.crop_size, o : o + cfg.crop_size]
    return x.float().div_(255.0)


def visual_fingerprint(phi: nn.Module) -> str:
    """A short hash of a visual encoder's weights and BatchNorm statistics: what a checkpoint trajectory records, so
    that a reward never compares agent frames embedded by one encoder with checkpoints embedded by another.

    >>> a, b = TDCCMC(EmbeddingConfig()).phi, TDCCMC(EmbeddingConfig()).phi  # two random initialisations
    >>> fa = visual_fingerprint(a)
    >>> len(fa), fa == visual_fingerprint(a), fa == visual_fingerprint(b)
    (16, True, False)
    """
    h = hashlib.sha256()
    for name, tensor in sorted(phi.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def load_embedding(directory: str | os.PathLike[str]) -> tuple[TDCCMC, dict[str, Any]]:
    """Load a ``tdc_cmc`` checkpoint; raises :class:`CheckpointError` if shapes do not match its config."""
    tensors, config = load_checkpoint(directory, kind="tdc_cmc")
    with built_from_config(directory, "embedding checkpoint"):
        cfg = EmbeddingConfig.from_json(config["embedding"])
        model = TDCCMC(cfg)
    model_keys = set(model.state_dict())
    missing = model_keys - set(tensors)
    if missing:
        raise CheckpointError(f"embedding checkpoint '{directory}' lacks {sorted(missing)[:3]}...: re-train it")
    try:
        model.load_state_dict({k: v for k, v in tensors.items() if k in model_keys})
    except RuntimeError as exc:
        raise CheckpointError(f"embedding checkpoint '{directory}' does not match its config: {exc}") from exc
    model.eval()
    return model, config
