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

Action map: by default M reads the action as given (the paper: TakeCover's continuous ``a`` in [-1, 1]).
``action_map="takecover"`` makes M read what the game does with it instead: -1 for ``a < -1/3`` (left), +1 for
``a > 1/3`` (right), 0 otherwise. A continuous input makes M learn that step function from data (and lets a
controller sit where M interpolates it wrongly); the mapped input has three values. Every path that feeds M
(training, the real-env features, the dreams) applies the same map, and the checkpoint records it.

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

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dreamarcade.checkpoint import built_from_config, load_checkpoint, save_checkpoint
from dreamarcade.envs.doom import THIRD  # TakeCover's threshold: float32's 1/3 must stay a no-op
from dreamarcade.errors import CheckpointError
from dreamarcade.precision import validate_precision
from dreamarcade.world_models.vae import checkpoint_extras

__all__ = ["ACTION_MAPS", "MDNRNN", "PackedMDNRNN", "map_actions_", "mdn_loss", "sample_next"]

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

ACTION_MAPS = ("none", "takecover")


def _check_action_map(action_map: str, action_size: int) -> str:
    if action_map not in ACTION_MAPS:
        raise ValueError(f"action_map must be one of {ACTION_MAPS}, got {action_map!r}.")
    if action_map == "takecover" and action_size != 1:
        raise ValueError(f"action_map='takecover' is for TakeCover's single action, but action_size={action_size}.")
    return action_map


def map_actions_(a: torch.Tensor | np.ndarray, action_map: str) -> torch.Tensor | np.ndarray:
    """Apply an action map in place to ``a`` (a torch tensor or a numpy array) and return it.

    "none" leaves ``a`` as it is; "takecover" writes TakeCover's buttons: -1 (a < -1/3), +1 (a > 1/3), else 0.
    """
    if action_map == "takecover":  # compared in float64, as the real env compares the Python float it is given
        if isinstance(a, np.ndarray):
            a64 = a.astype(np.float64)
            np.copyto(a, (a64 > THIRD).astype(a.dtype) - (a64 < -THIRD).astype(a.dtype))
        else:
            a64 = a.double()
            a.copy_((a64 > THIRD).to(a.dtype) - (a64 < -THIRD).to(a.dtype))
    return a


class MDNRNN(nn.Module):
    """LSTM + mixture-density head.

    Doom: 512 units, 1,680,833 parameters (the paper's 1,678,785 plus the second bias vector PyTorch's LSTM keeps).

    Example:
        >>> import torch
        >>> from dreamarcade.world_models.mdnrnn import MDNRNN, sample_next
        >>> sum(p.numel() for p in MDNRNN(z_size=64, action_size=1, hidden_size=512, predict_done=True).parameters())
        1680833
        >>> m = MDNRNN(z_size=32, action_size=3, hidden_size=256, predict_reward=True)  # CarRacing's M
        >>> state = m.initial_state(2)
        >>> out, state = m.step(torch.zeros(2, 32), torch.zeros(2, 3), state)  # (z_t, a_t) -> head output for t+1
        >>> out.shape  # 32 dims x 5 mixtures x 3 + 1 reward
        torch.Size([2, 481])
        >>> nxt = sample_next(m, out, temperature=1.0, generator=torch.Generator().manual_seed(0))
        >>> nxt["z"].shape, nxt["reward"].shape
        (torch.Size([2, 32]), torch.Size([2]))
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
        action_map: str = "none",
    ) -> None:
        super().__init__()
        self.z_size, self.action_size, self.hidden_size = int(z_size), int(action_size), int(hidden_size)
        self.action_map = _check_action_map(action_map, self.action_size)
        self.n_mixtures = int(n_mixtures)
        self.restart_input, self.predict_done, self.predict_reward = restart_input, predict_done, predict_reward
        self.input_size = z_size + action_size + (1 if restart_input else 0)
        self.cell = nn.LSTMCell(self.input_size, hidden_size)
        self.n_mdn = z_size * n_mixtures * 3
        self.out_size = self.n_mdn + int(predict_done) + int(predict_reward)
        self.head = nn.Linear(hidden_size, self.out_size)
        # what the checkpoint it was loaded from records beyond config() (training record, calibrate-done's
        # done_bias_shift); WorldModel.save writes it again, so a copied or bundled M keeps it
        self.checkpoint_meta: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------- running
    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(batch, self.hidden_size, device=device)
        return z, z.clone()

    def _inputs(self, z: torch.Tensor, a: torch.Tensor, restart: torch.Tensor | None) -> torch.Tensor:
        if self.action_map != "none":
            a = map_actions_(a.clone(), self.action_map)
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
            # .float(): under bfloat16 autocast the matmuls run in bf16 but the cell state stays fp32 (no-op in fp32)
            gates = (xw[:, i] + F.linear(h, self.cell.weight_hh)).float()
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
            "action_map": self.action_map,
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
        with built_from_config(directory, "MDN-RNN checkpoint"):
            model = cls(
                cfg["z_size"], cfg["action_size"], cfg["hidden_size"], cfg["n_mixtures"],
                cfg["restart_input"], cfg["predict_done"], cfg["predict_reward"],
                cfg.get("action_map", "none"),  # checkpoints written before the option read actions as given
            )  # fmt: skip
        try:
            model.load_state_dict({k: v.float() for k, v in tensors.items()})
        except RuntimeError as exc:
            raise CheckpointError(f"MDN-RNN checkpoint '{directory}' does not fit its config: {exc}") from exc
        model.checkpoint_meta = checkpoint_extras(cfg, model.config())
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
    if not math.isfinite(temperature) or temperature <= 0:
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


class PackedMDNRNN:
    """An inference-only copy of an :class:`MDNRNN`'s weights, laid out for fast stepping of dreams.

    Same math as :meth:`MDNRNN.step` followed by :func:`sample_next`, with the same random draws from the
    generator in the same order (one uniform per latent dim chooses its mixture component by inverse CDF, then
    one normal), and fewer, cheaper operations:

    * the state of N sequences is one row buffer ``[z, a, restart, 1, h]`` (:attr:`row_size` columns) plus the
      cell state c: all four LSTM gates are ONE matmul of that row with ``[W_ih | b_ih + b_hh | W_hh]`` (the
      constant 1 column carries the biases; gate rows reordered i, f, o, g so one sigmoid and one tanh cover
      them), and the cell update runs in place;
    * the head reads ``[1, h]`` (the row's tail) and its rows are regrouped into ``[logit_pi, done, reward]``
      (component-major, then latent dim) and ``(mu, logsigma)`` pairs, so the mixture choice is a softmax and a
      cumulative sum over contiguous (N, K, z) slices; the temperature is folded into the weights
      (``logit_pi / tau``; ``logsigma + log(tau) / 2``, so ``sigma`` already carries ``sqrt(tau)``);
    * one sequence (:meth:`step_one_numpy_`) runs on numpy views of the buffers (a fraction of torch's per-call
      overhead) and computes only the chosen components' (mu, logsigma) rows: a one-env step reads every weight
      once from memory, and the head is 30% of them.

    Results equal the reference path up to float32 rounding (sums grouped differently; tests check it). The
    packed weights are a snapshot: build a new one after changing the model's weights or the temperature.
    ``precision="bf16"`` runs the batched path's three matmuls on bfloat16 copies of the weights (a faster,
    slightly different dream: ~3 significant digits in the gate and head pre-activations; the state stays fp32).

    Example:
        >>> import torch
        >>> m = MDNRNN(z_size=64, action_size=1, hidden_size=512, predict_done=True)
        >>> packed = PackedMDNRNN(m, temperature=1.15)
        >>> packed.w_gates.shape  # 4 gates x 512 units, inputs [z, a, restart, 1, h]
        torch.Size([2048, 579])
    """

    def __init__(self, rnn: MDNRNN, temperature: float, precision: str = "fp32") -> None:
        tau = float(temperature)
        if not math.isfinite(tau) or tau <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; use a small value like 0.01 (near-greedy).")
        self.temperature, self.precision = tau, validate_precision(precision)
        self.z_size, self.action_size, self.hidden_size = rnn.z_size, rnn.action_size, rnn.hidden_size
        self.n_mixtures, self.input_size = rnn.n_mixtures, rnn.input_size
        self.predict_done, self.predict_reward = rnn.predict_done, rnn.predict_reward
        self.action_map = rnn.action_map
        self.row_size = rnn.input_size + 1 + rnn.hidden_size
        h, zs, k = rnn.hidden_size, rnn.z_size, rnn.n_mixtures
        self.n_pi = k * zs
        with torch.no_grad():
            cell = rnn.cell
            dev = cell.weight_ih.device
            order = torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)]).to(dev)
            bias = (cell.bias_ih + cell.bias_hh)[:, None]
            self.w_gates = torch.cat([cell.weight_ih, bias, cell.weight_hh], 1)[order].contiguous()
            w = torch.cat([rnn.head.bias[:, None], rnn.head.weight], 1)  # [b | W]: reads [1, h]
            rows = torch.arange(rnn.n_mdn, device=dev).view(zs, 3, k)  # head row of (dim, param, component)
            pi_rows = rows[:, 0, :].t().reshape(-1)  # (component, dim)
            ml_rows = rows[:, 1:, :].permute(2, 0, 1).reshape(-1)  # (component, dim, [mu, logsigma])
            extra = torch.arange(rnn.n_mdn, rnn.out_size, device=dev)  # done logit, reward
            self.w_pd = torch.cat([w[pi_rows] / tau, w[extra]]).contiguous()
            self.w_ml = w[ml_rows].contiguous()
            self.w_ml[1::2, 0] += 0.5 * math.log(tau)  # logsigma bias: sigma * sqrt(tau)
        # bf16: the three matmuls read bfloat16 copies of the weights (AMX: ~5x faster at 1024 dreams); their
        # results, the cell state, the sampling and z stay fp32
        self._mm_weights = (
            tuple(w.to(torch.bfloat16) for w in (self.w_gates, self.w_pd, self.w_ml)) if precision == "bf16" else None
        )

    def _mm(self, x: torch.Tensor, which: int, out: torch.Tensor) -> None:
        """``out = x @ W.T`` for W = (w_gates, w_pd, w_ml)[which], in the packed precision."""
        if self._mm_weights is None:
            torch.mm(x, (self.w_gates, self.w_pd, self.w_ml)[which].t(), out=out)
        else:
            out.copy_(torch.mm(x.to(torch.bfloat16), self._mm_weights[which].t()))

    def new_rows(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """A zero state row buffer (n, :attr:`row_size`) with its constant 1 column set."""
        xh = torch.zeros(n, self.row_size, device=device)
        xh[:, self.input_size] = 1.0
        return xh

    def lstm_(self, xh: torch.Tensor, c: torch.Tensor, gates: torch.Tensor) -> None:
        """One LSTM step in place: ``xh`` (N, row_size) is ``[z, a, restart, 1, h]``; its h part and ``c`` (N, H)
        are overwritten with the new state; ``gates`` (N, 4H) is scratch."""
        h = self.hidden_size
        if self.action_map != "none":
            map_actions_(xh[:, self.z_size : self.z_size + self.action_size], self.action_map)
        self._mm(xh, 0, gates)
        sig = gates[:, : 3 * h].sigmoid_()
        g = gates[:, 3 * h :].tanh_()
        c.mul_(sig[:, h : 2 * h]).addcmul_(sig[:, :h], g)
        torch.mul(sig[:, 2 * h :], torch.tanh(c), out=xh[:, self.input_size + 1 :])

    def head_sample_(
        self, xh: torch.Tensor, out_pd: torch.Tensor, out_ml: torch.Tensor,
        u: torch.Tensor, eps: torch.Tensor, generator: torch.Generator | None,
    ) -> None:  # fmt: skip
        """Head on the new h and a draw of z_{t+1} into ``xh[:, :z]``.

        ``out_pd`` (N, K z + extras) receives the mixture logits (already / tau), then the done logit and the
        reward; ``out_ml`` (N, 2 K z) and ``u``, ``eps`` (N, z) are scratch.
        """
        n, zs, k = xh.shape[0], self.z_size, self.n_mixtures
        one_h = xh[:, self.input_size :]
        self._mm(one_h, 1, out_pd)
        probs = torch.softmax(out_pd[:, : self.n_pi].view(n, k, zs), 1)
        u.uniform_(generator=generator)  # = torch.rand(N, z, 1) of the reference: the same numbers
        # component = #{k < K-1 : cdf_k < u}: the reference's count over all K clamped to K-1, without the clamp
        idx = (probs[:, : k - 1].cumsum(1) < u[:, None]).sum(1)
        self._mm(one_h, 2, out_ml)
        ml = out_ml.view(n, k, zs, 2).gather(1, idx.view(n, 1, zs, 1).expand(n, 1, zs, 2)).view(n, zs, 2)
        eps.normal_(generator=generator)
        torch.addcmul(ml[..., 0], ml[..., 1].exp(), eps, out=xh[:, :zs])

    def step_one_numpy_(
        self, xh: np.ndarray, c: np.ndarray, gates: np.ndarray, out_pd: np.ndarray,
        u: torch.Tensor, eps: torch.Tensor, generator: torch.Generator | None,
    ) -> None:  # fmt: skip
        """:meth:`lstm_` + :meth:`head_sample_` for ONE sequence, on numpy views (1-D) of CPU buffers.

        The random numbers still come from the torch ``generator`` (into the (1, z) tensors ``u`` and ``eps``),
        so the draws are the batched path's; only the chosen components' (mu, logsigma) rows are computed.
        """
        if not hasattr(self, "_np"):
            k, zs = self.n_mixtures, self.z_size
            self._np = {
                "w_gates": self.w_gates.numpy(), "w_pd": self.w_pd.numpy(),
                "w_ml_rows": self.w_ml.numpy().reshape(k * zs, -1),  # row (component, dim): [mu | logsigma]
                "dims": np.arange(zs),
            }  # fmt: skip
        w = self._np
        hs, zs, k, i = self.hidden_size, self.z_size, self.n_mixtures, self.input_size
        if self.action_map != "none":
            map_actions_(xh[zs : zs + self.action_size], self.action_map)
        np.matmul(w["w_gates"], xh, out=gates)
        sig = gates[: 3 * hs]
        np.negative(sig, out=sig)
        np.exp(sig, out=sig)
        sig += 1.0
        np.reciprocal(sig, out=sig)  # sigmoid, as torch computes it
        g = gates[3 * hs :]
        np.tanh(g, out=g)
        g *= sig[:hs]
        c *= sig[hs : 2 * hs]
        c += g
        h = xh[i + 1 :]
        np.tanh(c, out=h)
        h *= sig[2 * hs :]
        one_h = xh[i:]
        np.matmul(w["w_pd"], one_h, out=out_pd)
        logits = out_pd[: self.n_pi].reshape(k, zs)
        probs = np.exp(logits - logits.max(0))
        probs /= probs.sum(0)
        u.uniform_(generator=generator)
        idx = (np.cumsum(probs[: k - 1], 0) < u.numpy()[0]).sum(0)
        flat = idx * zs + w["dims"]
        ml = np.matmul(w["w_ml_rows"].take(flat, 0).reshape(2 * zs, hs + 1), one_h).reshape(zs, 2)
        eps.normal_(generator=generator)
        z = xh[:zs]
        np.exp(ml[:, 1], out=z)
        z *= eps.numpy()[0]
        z += ml[:, 0]
