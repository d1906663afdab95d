"""One Adam step over the Nature CNN's parameters, with normal and with denormal optimizer state, with and
without flushing denormals (``dreamarcade.precision.flush_denormals``).

A weight whose gradient has become exactly zero (a dead ReLU unit) keeps an Adam first moment that shrinks by
``beta1`` per update, through the denormal range (below 1.2e-38) on its way to zero. This times that state
directly: every moment entry set to a denormal value, against the same step on ordinary values. Two torch
Adam implementations are timed: the fused kernel (dreamarcade's DQN) and torch's default on CPU tensors, a loop
over the parameters (what SB3's ``torch.optim.Adam`` runs).

    OMP_NUM_THREADS=1 python benchmarks/bench_denormals.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dreamarcade.baselines.common import positive_int
from dreamarcade.baselines.dqn import NatureCNN


def time_adam_step(fused: bool, denormal_state: bool, flush: bool, repeats: int) -> float:
    """Median milliseconds of one Adam step over a Nature CNN (6 actions), state set as asked."""
    torch.set_flush_denormal(flush)  # this thread only: run with one torch thread
    net = NatureCNN(4, 6)
    params = list(net.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, fused=True) if fused else torch.optim.Adam(params, lr=1e-4)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()  # creates the state

    def make_state_denormal() -> None:
        # written as bits (2**16 as int32 is ~9.2e-41): a float this small would be flushed on conversion
        for q in params:
            opt.state[q]["exp_avg"].view(torch.int32).fill_(1 << 16)
            opt.state[q]["exp_avg_sq"].view(torch.int32).fill_(1 << 16)

    if denormal_state:
        make_state_denormal()
        for q in params:
            q.grad.zero_()  # a dead unit: its gradient is exactly zero
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
        if denormal_state:  # keep the state denormal rather than letting it decay to zero
            make_state_denormal()
    torch.set_flush_denormal(False)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=positive_int, default=30)
    a = p.parse_args()
    torch.set_num_threads(1)
    n = sum(q.numel() for q in NatureCNN(4, 6).parameters())
    print(f"| Adam step over the Nature CNN ({n:,} parameters), 1 thread | normal state | denormal state | ratio |")
    print("|---|---|---|---|")
    for fused in (True, False):
        for flush in (False, True):
            normal = time_adam_step(fused, False, flush, a.repeats)
            denormal = time_adam_step(fused, True, flush, a.repeats)
            name = "fused" if fused else "torch default (SB3)"
            name += ", denormals flushed" if flush else ", IEEE denormals"
            print(f"| {name} | {normal:.2f} ms | {denormal:.2f} ms | {denormal / normal:.1f}x |", flush=True)


if __name__ == "__main__":
    from dreamarcade.errors import run_cli

    run_cli(main)  # a missing run folder or bundle: one error line, not a traceback
