"""Fast inference path of the TDC/CMC visual encoder phi, for rewarding agent frames every step.

:class:`FusedVisualEncoder` is a frozen, inference-only copy of a trained
:class:`~dreamarcade.reward_models.embedding.VisualEncoder` (eval mode) that computes the same function with
fewer, cheaper operations:

* every BatchNorm (eval statistics) is folded into the preceding conv / linear layer, in float64, at build time;
* the 1/255 input scaling is folded into the first conv, so the input is the uint8 frames themselves;
* activations are channels-last (NHWC): the NCHW max-pool was the slowest op of the reference forward, and the
  agent's frames are already HWC, so no transpose is ever made;
* max-pool runs before ReLU (they commute exactly; ReLU then touches 4x fewer values) and is computed as two
  elementwise maxima over the channels-last memory (:func:`max_pool2x2_relu`, ~3x faster than PyTorch's CPU
  pool kernel here);
* the residual add and ReLU are in place; the MLP uses ``addmm`` with pre-transposed weights (the first one with
  its columns permuted to the NHWC flatten order);
* it runs under ``torch.inference_mode``.

The input is a *ring* of the last ``stack`` processed frames, ``(B, S, S, stack, 3)`` uint8, where the newest
frame is in slot ``newest`` and frame ``f`` of the stack (0 = oldest) is in slot ``(newest + 1 + f) % stack``.
The wrapper writes one frame per step into the next slot instead of shifting the other frames; the encoder
undoes the rotation by using a copy of the first conv's weights whose input channels are rotated to match
(one copy per possible ``newest``, built once). Centre cropping to ``crop_size`` is a view.

Outputs equal the reference encoder in eval mode up to float32 rounding (max abs difference ~1e-7 on the
bundled model, tested to 1e-5): the reward means the same thing, it is only computed faster.

Example:
    >>> import numpy as np
    >>> from dreamarcade.reward_models.embedding import EmbeddingConfig, TDCCMC
    >>> from dreamarcade.reward_models.inference import FusedVisualEncoder
    >>> fused = FusedVisualEncoder(TDCCMC(EmbeddingConfig()).eval().phi, stack=4, frame_size=54)
    >>> fused.embed_ring(np.zeros((2, 54, 54, 4, 3), np.uint8), newest=3).shape
    (2, 128)
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dreamarcade.precision import validate_precision
from dreamarcade.reward_models.embedding import VisualEncoder, _ResBlock

__all__ = [
    "FusedVisualEncoder",
    "OnnxVisualEncoder",
    "fold_conv_bn",
    "fold_linear_bn",
    "max_pool2x2_relu",
    "ring_order",
    "ring_to_stacks",
]


def _bn_scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift`` (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded: build it with track_running_stats")
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    w = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    b = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = w / torch.sqrt(var + bn.eps)
    return scale, b - mean * scale


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias (float64) of ``bn(conv(x))`` as a single conv (BatchNorm in eval mode)."""
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight.detach().double() * scale[:, None, None, None]
    b = shift if conv.bias is None else conv.bias.detach().double() * scale + shift
    return w, b


def fold_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias (float64) of ``bn(linear(x))`` as a single linear layer (BatchNorm in eval mode)."""
    scale, shift = _bn_scale_shift(bn)
    w = linear.weight.detach().double() * scale[:, None]
    b = shift if linear.bias is None else linear.bias.detach().double() * scale + shift
    return w, b


def max_pool2x2_relu(x: torch.Tensor) -> torch.Tensor:
    """``relu(max_pool2d(x, 2))`` of a channels-last (B, C, H, W) tensor, exactly, as two elementwise maxima.

    PyTorch's CPU max-pool kernel takes ~3x longer than this on the channels-last activations here: viewed as
    (B, H/2, 2, W/2, 2 * C), the pool is the maximum of the two rows of each pair, then of the two halves of the
    last axis (the two columns). Odd H or W lose their last row/column, as in ``max_pool2d``.
    """
    b, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1)[:, : h // 2 * 2, : w // 2 * 2]  # (B, H, W, C) view of the channels-last memory
    y = y.reshape(b, h // 2, 2, w // 2, 2 * c)
    r = torch.maximum(y[:, :, 0], y[:, :, 1])
    return torch.maximum(r[..., :c], r[..., c:]).relu_().permute(0, 3, 1, 2)


def ring_order(newest: int, stack: int) -> np.ndarray:
    """Ring slots of the stack's frames, oldest first: ``(newest + 1 + f) % stack`` for ``f = 0 .. stack - 1``."""
    return (int(newest) + 1 + np.arange(stack)) % stack


def ring_to_stacks(ring: np.ndarray, newest: int) -> np.ndarray:
    """A (B, S, S, stack, 3) frame ring as (B, stack, S, S, 3) stacks, oldest frame first (the video side's layout)."""
    ring = np.asarray(ring)
    return np.ascontiguousarray(ring[:, :, :, ring_order(newest, ring.shape[3])].transpose(0, 3, 1, 2, 4))


class FusedVisualEncoder:
    """A frozen, BatchNorm-folded, channels-last copy of a trained visual encoder phi (see module docstring).

    Args:
        phi: the trained :class:`~dreamarcade.reward_models.embedding.VisualEncoder`. Its weights are copied
            (a snapshot): build the fused encoder after training, and rebuild it if phi changes.
        stack: frames per stack (``EmbeddingConfig.stack``).
        frame_size: side of the processed frames in the ring (``EmbeddingConfig.frame_size``); the centre
            ``crop_size`` square is what phi sees, exactly as in training.
        device: where to run ("cpu" or "cuda").
        precision: "fp32" (default: the trained encoder's embeddings up to float32 rounding) or "bf16" (weights
            and activations in bfloat16, the embedding normalised in fp32: ~2x faster batches on CPUs with AMX;
            similarities move by ~1e-2, so a checkpoint right at the threshold can be paid a step earlier or later).

    Example (a frame ring whose newest frame is in slot 1 embeds like the same frames stacked oldest first):
        >>> import numpy as np
        >>> from dreamarcade.reward_models.checkpoints import FrameStackEmbedder
        >>> from dreamarcade.reward_models.embedding import EmbeddingConfig, TDCCMC
        >>> from dreamarcade.reward_models.inference import FusedVisualEncoder, ring_to_stacks
        >>> model = TDCCMC(EmbeddingConfig()).eval()
        >>> fused = FusedVisualEncoder(model.phi, stack=4, frame_size=54)
        >>> ring = np.random.default_rng(0).integers(0, 256, (2, 54, 54, 4, 3), dtype=np.uint8)
        >>> fast = fused.embed_ring(ring, newest=1)
        >>> reference = FrameStackEmbedder(model, fused=False)(ring_to_stacks(ring, newest=1))
        >>> fast.shape, bool(np.allclose(fast, reference, atol=1e-5))
        ((2, 128), True)
    """

    def __init__(
        self,
        phi: VisualEncoder,
        stack: int,
        frame_size: int,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.precision = validate_precision(precision)
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if not isinstance(phi, VisualEncoder):
            raise TypeError(f"FusedVisualEncoder needs a VisualEncoder (TDCCMC.phi), got {type(phi).__name__}")
        if phi.in_channels != 3 * stack:
            raise ValueError(f"phi reads {phi.in_channels} channels, but stack={stack} gives {3 * stack}")
        if frame_size < phi.size:
            raise ValueError(f"frame_size {frame_size} is smaller than phi's crop size {phi.size}")
        self.stack, self.frame_size, self.crop_size = int(stack), int(frame_size), int(phi.size)
        self.device = torch.device(device)
        cl = torch.channels_last

        def as_conv(w: torch.Tensor) -> torch.Tensor:
            return w.float().to(self.device, self.dtype).contiguous(memory_format=cl)

        def as_vec(b: torch.Tensor) -> torch.Tensor:
            return b.float().to(self.device, self.dtype)

        layers = list(phi.conv)
        convs: list[tuple[torch.Tensor, torch.Tensor]] = []
        res: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        i = 0
        while i < len(layers):  # [Conv, BN, ReLU, MaxPool] * len(channels), then residual blocks
            layer = layers[i]
            if isinstance(layer, nn.Conv2d):
                bn, relu, pool = layers[i + 1 : i + 4]
                if not (
                    isinstance(bn, nn.BatchNorm2d)
                    and isinstance(relu, nn.ReLU)
                    and isinstance(pool, nn.MaxPool2d)
                    and pool.kernel_size in (2, (2, 2))
                    and layer.padding in (1, (1, 1))
                    and layer.stride in (1, (1, 1))
                    and not res
                ):
                    raise ValueError("unexpected VisualEncoder layout: expected Conv-BN-ReLU-MaxPool(2) blocks")
                w, b = fold_conv_bn(layer, bn)
                convs.append((w, b))
                i += 4
            elif isinstance(layer, _ResBlock):
                w1, b1 = fold_conv_bn(layer.c1, layer.b1)
                w2, b2 = fold_conv_bn(layer.c2, layer.b2)
                res.append((as_conv(w1), as_vec(b1), as_conv(w2), as_vec(b2)))
                i += 1
            else:
                raise ValueError(f"unexpected layer {type(layer).__name__} in VisualEncoder.conv")
        if not convs:
            raise ValueError("VisualEncoder.conv has no conv layer")
        w0, b0 = convs[0]
        w0 = w0 / 255.0  # frames arrive as uint8 0..255; phi was trained on x / 255
        # one copy of the first conv per ring position: slot s holds stack frame f = (s - newest - 1) % stack
        self._w0 = []
        for newest in range(self.stack):
            per_slot = [w0[:, 3 * f : 3 * f + 3] for f in (np.arange(self.stack) - newest - 1) % self.stack]
            self._w0.append(as_conv(torch.cat(per_slot, dim=1)))
        self._b0 = as_vec(b0)
        self._convs = [(as_conv(w), as_vec(b)) for w, b in convs[1:]]
        self._res = res

        lin1, bn1, relu1, lin2 = list(phi.mlp)
        if not (
            isinstance(lin1, nn.Linear)
            and isinstance(bn1, nn.BatchNorm1d)
            and isinstance(relu1, nn.ReLU)
            and isinstance(lin2, nn.Linear)
        ):
            raise ValueError("unexpected VisualEncoder.mlp layout: expected Linear-BN-ReLU-Linear")
        wl1, bl1 = fold_linear_bn(lin1, bn1)
        c_last = convs[-1][0].shape[0]
        side = self.crop_size // 2 ** len(convs)
        if wl1.shape[1] != c_last * side * side:
            raise ValueError(f"phi.mlp reads {wl1.shape[1]} features, the convs give {c_last}x{side}x{side}")
        # phi flattens (C, H, W); the channels-last activations flatten as (H, W, C): permute the columns once
        wl1 = wl1.view(-1, c_last, side, side).permute(0, 2, 3, 1).reshape(wl1.shape[0], -1)
        self._wl1_t = as_vec(wl1.t().contiguous())
        self._bl1 = as_vec(bl1)
        self._wl2_t = as_vec(lin2.weight.detach().t().contiguous())
        self._bl2 = as_vec(lin2.bias.detach())
        self.embed_dim = int(lin2.out_features)

    def _input(self, ring: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(ring)
        s, k = self.frame_size, self.stack
        if x.ndim != 5 or tuple(x.shape[1:]) != (s, s, k, 3) or x.dtype != torch.uint8:
            raise ValueError(
                f"the fused encoder expects a (batch, {s}, {s}, {k}, 3) uint8 frame ring, got "
                f"{tuple(x.shape)} {x.dtype}"
            )
        o, c = (s - self.crop_size) // 2, self.crop_size
        x = x[:, o : o + c, o : o + c].reshape(x.shape[0], c, c, 3 * k).permute(0, 3, 1, 2)
        return x.to(self.device, self.dtype, memory_format=torch.channels_last)  # 0..255 is exact in bf16 too

    def forward_ring(self, ring: np.ndarray | torch.Tensor, newest: int) -> torch.Tensor:
        """Embeddings (B, embed_dim) float32 tensor, L2-normalised, of a uint8 frame ring (see module docstring)."""
        if not 0 <= int(newest) < self.stack:
            raise ValueError(f"newest must be a ring slot in [0, {self.stack}), got {newest}")
        with torch.inference_mode():
            return self.forward_input(self._input(ring), int(newest))

    def forward_input(self, x: torch.Tensor, newest: int) -> torch.Tensor:
        """The network on :meth:`forward_ring`'s converted input: (B, 3 * stack, crop, crop) channels-last in the
        encoder's dtype and device, the ring's slots in channel order. Call it under ``torch.no_grad()`` or
        ``torch.inference_mode()``; it is the part that ``torch.compile`` can take (see
        ``benchmarks/bench_encoder_alternatives.py --compiled``)."""
        x = max_pool2x2_relu(F.conv2d(x, self._w0[newest], self._b0, padding=1))
        for w, b in self._convs:
            x = max_pool2x2_relu(F.conv2d(x, w, b, padding=1))
        for w1, b1, w2, b2 in self._res:
            y = F.conv2d(x, w1, b1, padding=1).relu_()
            x = F.conv2d(y, w2, b2, padding=1).add_(x).relu_()
        h = torch.addmm(self._bl1, x.permute(0, 2, 3, 1).reshape(x.shape[0], -1), self._wl1_t).relu_()
        return F.normalize(torch.addmm(self._bl2, h, self._wl2_t).float(), dim=1)

    def embed_ring(self, ring: np.ndarray | torch.Tensor, newest: int) -> np.ndarray:
        """Like :meth:`forward_ring`, as a (B, embed_dim) float32 numpy array."""
        return self.forward_ring(ring, newest).cpu().numpy()

    def embed_stacks(self, stacks: np.ndarray) -> np.ndarray:
        """Embed (B, stack, S, S, 3) uint8 frame stacks (oldest first), the layout the video side uses."""
        stacks = np.asarray(stacks)
        if stacks.ndim != 5:
            raise ValueError(f"expected (batch, stack, S, S, 3) uint8 frame stacks, got {stacks.shape}")
        # stack order oldest..newest == ring with newest in the last slot
        return self.embed_ring(np.ascontiguousarray(stacks.transpose(0, 2, 3, 1, 4)), self.stack - 1)


class OnnxVisualEncoder:
    """The fused encoder's network as one ONNX Runtime graph: the same embeddings, less per-operation cost.

    At batch 1 (one env, one frame per step) more than half of a torch embedding pass goes to its ~20 small
    operations' per-call costs rather than to arithmetic. ONNX Runtime runs the same folded network (the weights of
    a :class:`FusedVisualEncoder`: BatchNorm and the 1/255 scaling folded in) as one graph whose input is the uint8
    frame ring itself: the centre crop, the conversion to float, the convolutions, the MLP and the L2
    normalisation all run inside one call. There is one graph per ring slot of the newest frame, whose first conv
    has its input channels rotated to the ring's order, as in :class:`FusedVisualEncoder`. Outputs equal
    :class:`FusedVisualEncoder` (fp32) up to float32 rounding (~1e-7, tested to 1e-5).

    Needs the ``onnx`` extra (``pip install "dreamarcade[onnx]"``: the ``onnx`` package to build the graph,
    ``onnxruntime`` to run it). CPU and fp32 only. Sessions open on first use; a process forked after one was
    opened (a ``fork`` multiprocessing worker) opens its own.

    Args:
        fused: an fp32 CPU :class:`FusedVisualEncoder` whose weights are copied into the graph.
        num_threads: ONNX Runtime's intra-op threads (>= 1), or None (default): torch's thread count when a
            session opens (on its first pass), so a forked worker, which dreamarcade limits to one torch thread,
            opens its sessions with one. The threads never spin between calls, so a pass with 2 threads does not
            take a core away from the env between steps.

    Example:
        >>> import numpy as np
        >>> from dreamarcade.reward_models.embedding import EmbeddingConfig, TDCCMC
        >>> from dreamarcade.reward_models.inference import FusedVisualEncoder, OnnxVisualEncoder
        >>> fused = FusedVisualEncoder(TDCCMC(EmbeddingConfig()).eval().phi, stack=4, frame_size=54)
        >>> fast = OnnxVisualEncoder(fused, num_threads=1)
        >>> ring = np.random.default_rng(0).integers(0, 256, (2, 54, 54, 4, 3), dtype=np.uint8)
        >>> bool(np.allclose(fast.embed_ring(ring, newest=1), fused.embed_ring(ring, newest=1), atol=1e-5))
        True
    """

    def __init__(self, fused: FusedVisualEncoder, num_threads: int | None = None) -> None:
        from dreamarcade.errors import check_count, require

        if fused.precision != "fp32" or fused.device.type != "cpu":
            raise ValueError(
                f"ONNX Runtime runs the fp32 CPU encoder, got precision={fused.precision!r} on {fused.device}: "
                "use backend='torch' for bf16 or a GPU"
            )
        if num_threads is not None:
            num_threads = check_count("num_threads", num_threads, hint=" or None (torch's setting)")
        self._ort = require("onnxruntime", "the ONNX Runtime embedding backend", extra="onnx")
        self.stack, self.frame_size, self.crop_size = fused.stack, fused.frame_size, fused.crop_size
        self.embed_dim, self.num_threads = fused.embed_dim, num_threads
        # one graph per ring slot of the newest frame, with the first conv's input channels rotated to match (as in
        # FusedVisualEncoder): gathering the ring's slots inside the graph made every pass ~1.3x slower
        self._graphs = [_encoder_graph(fused, newest) for newest in range(self.stack)]
        self._sessions: list[Any] = [None] * self.stack
        _LIVE.add(self)

    def threads(self) -> int:
        """The intra-op threads a session opened now would get: ``num_threads``, or torch's setting."""
        return self.num_threads if self.num_threads is not None else torch.get_num_threads()

    def _open(self, newest: int) -> Any:
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(self._graphs[newest], options, providers=["CPUExecutionProvider"])
        self._sessions[newest] = session
        return session

    def __getstate__(self) -> dict[str, Any]:  # a session cannot be pickled: keep the graphs, reopen them on use
        state = {k: v for k, v in self.__dict__.items() if k != "_ort"}
        state["_sessions"] = [None] * self.stack
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from dreamarcade.errors import require

        self.__dict__.update(state)
        self._ort = require("onnxruntime", "the ONNX Runtime embedding backend", extra="onnx")
        _LIVE.add(self)

    def _drop_sessions(self) -> None:
        import ctypes

        for session in self._sessions:
            if session is not None:  # never destroyed in this process: see _sessions_after_fork
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(session))
        self._sessions = [None] * self.stack

    def embed_ring(self, ring: np.ndarray, newest: int) -> np.ndarray:
        """(B, embed_dim) float32 embeddings, L2-normalised, of a (B, S, S, stack, 3) uint8 frame ring."""
        ring = np.asarray(ring)
        s, k = self.frame_size, self.stack
        if ring.ndim != 5 or ring.shape[1:] != (s, s, k, 3) or ring.dtype != np.uint8:
            raise ValueError(
                f"the encoder expects a (batch, {s}, {s}, {k}, 3) uint8 frame ring, got {ring.shape} {ring.dtype}"
            )
        if isinstance(newest, bool) or not 0 <= int(newest) < k:
            raise ValueError(f"newest must be a ring slot in [0, {k}), got {newest}")
        if len(ring) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        session = self._sessions[int(newest)] or self._open(int(newest))
        return session.run(None, {"ring": np.ascontiguousarray(ring)})[0]

    def embed_stacks(self, stacks: np.ndarray) -> np.ndarray:
        """Embed (B, stack, S, S, 3) uint8 frame stacks (oldest first), the layout the video side uses."""
        stacks = np.asarray(stacks)
        if stacks.ndim != 5:
            raise ValueError(f"expected (batch, stack, S, S, 3) uint8 frame stacks, got {stacks.shape}")
        return self.embed_ring(np.ascontiguousarray(stacks.transpose(0, 2, 3, 1, 4)), self.stack - 1)


_LIVE: weakref.WeakSet[OnnxVisualEncoder] = weakref.WeakSet()


def _sessions_after_fork() -> None:
    """In a forked child, open every encoder's sessions anew on first use: a session opened by the parent may
    hold intra-op threads, which do not exist in the child. Its threads are gone, so neither running nor
    destroying it can work there (its destructor waits for them forever): each is given one reference more, so
    the child never destroys it, not even at exit."""
    for encoder in list(_LIVE):
        encoder._drop_sessions()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_sessions_after_fork)


def _encoder_graph(fused: FusedVisualEncoder, newest: int) -> bytes:
    """The serialized ONNX model of ``fused``'s network on a uint8 ring whose newest frame is in slot ``newest``."""
    from dreamarcade.errors import require

    onnx = require("onnx", "building the ONNX Runtime embedding graph", extra="onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    s, c, k = fused.frame_size, fused.crop_size, fused.stack
    o = (s - c) // 2
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray | torch.Tensor) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().float().contiguous().cpu().numpy()
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    i64 = np.int64
    x = node("Slice", ["ring", const("crop_lo", np.array([o, o], i64)), const("crop_hi", np.array([o + c] * 2, i64)),
                       const("crop_axes", np.array([1, 2], i64))], "cropped")  # fmt: skip
    x = node("Reshape", [x, const("hwc", np.array([-1, c, c, 3 * k], i64))], "hwc_u8")
    x = node("Cast", [x], "hwc_f32", to=onnx.TensorProto.FLOAT)
    x = node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    for j, (w, b) in enumerate([(fused._w0[newest], fused._b0), *fused._convs]):
        x = node("Conv", [x, const(f"conv{j}_w", w), const(f"conv{j}_b", b)], f"conv{j}", **conv)
        x = node("Relu", [x], f"conv{j}_relu")
        x = node("MaxPool", [x], f"conv{j}_pool", kernel_shape=[2, 2], strides=[2, 2])
    for j, (w1, b1, w2, b2) in enumerate(fused._res):
        y = node("Conv", [x, const(f"res{j}_w1", w1), const(f"res{j}_b1", b1)], f"res{j}_c1", **conv)
        y = node("Relu", [y], f"res{j}_relu1")
        y = node("Conv", [y, const(f"res{j}_w2", w2), const(f"res{j}_b2", b2)], f"res{j}_c2", **conv)
        x = node("Relu", [node("Add", [y, x], f"res{j}_sum")], f"res{j}_out")
    x = node("Flatten", [node("Transpose", [x], "nhwc_features", perm=[0, 2, 3, 1])], "features", axis=1)
    x = node("Relu", [node("Gemm", [x, const("mlp1_w", fused._wl1_t), const("mlp1_b", fused._bl1)], "mlp1")], "hidden")
    e = node("Gemm", [x, const("mlp2_w", fused._wl2_t), const("mlp2_b", fused._bl2)], "raw")
    norm = node("ReduceL2", [e, const("l2_axes", np.array([1], i64))], "norm", keepdims=1)
    norm = node("Max", [norm, const("eps", np.array(1e-12, np.float32))], "norm_eps")  # F.normalize's eps
    node("Div", [e, norm], "embedding")
    graph = helper.make_graph(
        nodes,
        "dreamarcade_visual_encoder",
        [helper.make_tensor_value_info("ring", onnx.TensorProto.UINT8, ["batch", s, s, k, 3])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", fused.embed_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = min(model.ir_version, 9)  # readable by ONNX Runtime releases older than the onnx package
    onnx.checker.check_model(model)
    return model.SerializeToString()
