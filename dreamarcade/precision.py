"""Number formats for the heavy matmuls: fp32 (the default everywhere) or bf16 mixed precision; denormals.

One place names the choices, checks a caller's value and builds the autocast context, for the baselines (DQN,
world-model training) and the inference paths that take a ``precision`` (dream stepping, the imitation encoder).
:func:`flush_denormals` is called by every trainer before it sets its thread count (see there why).

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


def flush_denormals() -> bool:
    """Flush denormal floats to zero on the CPU, for this thread and torch's CPU threads created after it.

    Adam's moment estimates of a weight whose gradient has become exactly zero (a dead ReLU unit) decay
    geometrically towards zero, through the denormal range (below 1.2e-38), where x86 arithmetic is ~20x slower:
    an Adam step over the Nature CNN takes 40 ms instead of 1.3 ms on denormal state
    (``benchmarks/bench_denormals.py``). TensorFlow flushes denormals by default; so does every dreamarcade
    trainer, through this call. Values that small are zero for learning purposes.

    The flag is per thread and a new thread inherits it, so call this before ``torch.set_num_threads`` and the
    first parallel op: torch's worker threads that already exist keep their old mode. Returns True when all of
    torch's CPU threads now flush (checked on a tensor large enough to be split across them), False when the CPU
    cannot flush or some threads were created earlier.

    Example:
        >>> import torch
        >>> from dreamarcade.precision import flush_denormals
        >>> _ = flush_denormals()  # True in a fresh process; False here if torch threads already ran
        >>> tiny = torch.tensor([1], dtype=torch.int32).view(torch.float32)  # the smallest denormal, 1.4e-45
        >>> (tiny * 1.0).view(torch.int32).item()  # flushed to zero on this thread
        0
        >>> torch.set_flush_denormal(False)  # back to IEEE denormals
        True
    """
    if not torch.set_flush_denormal(True):
        return False
    # 1M copies of the smallest denormal, built from its bits (a float literal would be flushed on conversion),
    # multiplied on every intra-op thread; the result's bits are all zero only where each thread flushed
    probe = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)
    return bool(torch.count_nonzero((probe * 1.0).view(torch.int32)) == 0)
