"""Number formats for the heavy matmuls: fp32 (the default everywhere) or bf16 mixed precision.

One place names the choices, checks a caller's value and builds the autocast context, for the baselines (DQN,
world-model training) and the inference paths that take a ``precision`` (dream stepping, the imitation encoder).

Example:
    >>> import torch
    >>> from dreamarcade.precision import autocast, validate_precision
    >>> validate_precision("bf16")
    'bf16'
    >>> with autocast("bf16", torch.device("cpu")):
    ...     y = torch.ones(2, 3) @ torch.ones(3, 4)
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS = ("fp32", "bf16")


def validate_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; a clear ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}.")
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    """Fail on an unknown precision; warn where bfloat16 would be emulated (about 3x slower than fp32)."""
    validate_precision(precision)
    if precision == "bf16" and device.type == "cpu" and not torch.cpu._is_avx512_bf16_supported():
        warnings.warn(
            "--precision bf16 on a CPU without native bfloat16 (AVX512-BF16 / AMX) is slower than fp32; "
            "use --precision fp32 on this machine.",
            stacklevel=2,
        )


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``precision="bf16"``, nothing for "fp32".

    Under it the matmuls and convolutions run in bfloat16 while the weights, their gradients and the optimizer
    stay fp32 (mixed precision: ~1.5-3x faster matmuls on CPUs with AMX and on CUDA GPUs).
    """
    if validate_precision(precision) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
