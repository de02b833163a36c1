"""Encoder throughput: the ``auto`` chunk size, the fused-attention check and ``--compile``.

Chunk (slices per ViT call). A fixed 32 starves a large GPU on ViT-S (1,191 slices/s at
chunk 32 against 2,167 at chunk 128 on an H200), so ``chunk: auto`` sizes it per forward:

- the ViT runs without an autograd graph (inference, feature caching, validation) on CUDA:
  from the device's free memory (:func:`free_memory`), a safety fraction and a per-slice
  estimate derived from the ViT's dimensions (:func:`slice_bytes`), clamped to
  ``[1, number of slices]`` and at most :data:`MAX_AUTO_CHUNK`;
- on CPU (or MPS), or while gradients flow through the ViT (training LoRA, last_n, full):
  :data:`DEFAULT_CHUNK`, the old fixed default.

An int chunk is used as it is. The chunk never changes the features, only memory and speed.

Compile. :func:`compile_encoder` compiles every transformer block of the ViT in place
(regional compilation), with dynamic shapes: the blocks hold nearly all the work, the blocks of
one ViT share one compiled graph, and one graph serves every chunk size (the last chunk of a
case is shorter) and every slice size (tokens per slice). Padding the last chunk instead would
waste up to ``chunk - 1`` slices of work per case and still recompile for each new slice size.
The patch embedding stays eager: timm formats its size check with the image size, which would
pin every compile to one slice size. A chunk of one slice is run as two (torch specialises
size 1), so no size triggers a second compile.
"""

from __future__ import annotations

import logging
import math
import shutil
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from volseg.errors import VolsegError
from volseg.models.slicing import resized_extent

if TYPE_CHECKING:
    from volseg.models.encoder import SliceEncoder

__all__ = [
    "AUTO",
    "DEFAULT_CHUNK",
    "MAX_AUTO_CHUNK",
    "SAFETY",
    "auto_chunk",
    "check_chunk",
    "compile_encoder",
    "encoder_chunk",
    "free_memory",
    "fused_attention",
    "slice_bytes",
]

log = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_CHUNK = 32  # CPU, or gradients through the ViT: the old fixed default
MAX_AUTO_CHUNK = 512  # past a few hundred slices a call, a larger chunk no longer pays
SAFETY = 0.7  # fraction of the free memory the chunk may fill (allocator rounding, workspaces)
MAX_ELEMENTS = 2**31 - 1  # some CUDA kernels index with int32: keep every tensor below it
STREAM_BYTES = 4  # the residual stream and LayerNorm outputs stay fp32 under autocast


def check_chunk(value: object, what: str = "encoder chunk") -> int | str:
    """``value`` if it is an int >= 1 or ``"auto"``; else a one-line :class:`VolsegError`."""
    if value == AUTO and isinstance(value, str):
        return AUTO
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise VolsegError(f"{what} must be an int >= 1 or 'auto' (got {value!r})")


def slice_bytes(
    *,
    tokens: int,
    embed_dim: int,
    mlp_ratio: float,
    dtype_bytes: int,
    pixels: int = 0,
    channels: int = 1,
    layers: int = 1,
    heads: int = 1,
    fused: bool = True,
) -> int:
    """Peak memory one slice adds to a ViT call without autograd graph (an overestimate).

    Args:
        tokens: tokens per slice, prefix (class, register) tokens included.
        embed_dim: ViT width E.
        mlp_ratio: MLP hidden width over E, every MLP input projection counted (4 for DINOv2
            ViT-S/B/L; the packed SwiGLU of ViT-g counts both halves).
        dtype_bytes: bytes per element of the matmul outputs: 2 under bf16/fp16 autocast, 4.
        pixels: pixels per slice as the ViT sees it (resized and padded).
        channels: input channels per slice.
        layers: block outputs kept (each is normalised and reshaped: two fp32 copies).
        heads: attention heads; only used when ``fused`` is False.
        fused: attention runs in ``F.scaled_dot_product_attention`` (memory linear in tokens);
            otherwise the ``heads x tokens x tokens`` score and probability matrices count.

    The block's tensors are all counted as if alive at once, depth-independent (a block's
    activations are freed before the next one runs): fp32 residual stream, LayerNorm output,
    layer-scale output and sum, plus two copies per kept layer; in the matmul dtype q/k/v
    (and a contiguous copy or a LoRA update each), the attention output and its reshaped copy,
    the projection (and its LoRA update), the MLP hidden and its activation, the MLP output.
    """
    width = embed_dim * (
        STREAM_BYTES * (4 + 2 * layers) + dtype_bytes * (3 + 3 + 2 + 2 + 2 * mlp_ratio + 1)
    )
    per_token = math.ceil(width)
    attention = 0 if fused else heads * tokens * tokens * (2 * dtype_bytes + 4)
    # resized input (fp32), mean/std/pad copies of 3 channels (fp32), the matmul-dtype cast
    image = pixels * (4 * channels + 3 * 4 * 3 + 3 * dtype_bytes)
    return tokens * per_token + attention + image


def auto_chunk(
    free_bytes: int,
    *,
    n_slices: int,
    tokens: int,
    embed_dim: int,
    mlp_ratio: float,
    dtype_bytes: int,
    patch_tokens: int | None = None,
    out_channels: int | None = None,
    pixels: int = 0,
    channels: int = 1,
    layers: int = 1,
    heads: int = 1,
    fused: bool = True,
    safety: float = SAFETY,
    cap: int = MAX_AUTO_CHUNK,
) -> int:
    """Slices per ViT call that fit in ``free_bytes`` (pure: no device is asked).

    The features of every slice stay on the device until the last chunk is done (one fp32
    copy of ``n_slices x patch_tokens x out_channels``, concatenated once after the last
    chunk, when no chunk's memory is held); that is set aside first. The rest, times
    ``safety``, is divided by :func:`slice_bytes`.

    Args:
        free_bytes: device memory the call may use.
        n_slices: slices to encode (the chunk never exceeds it).
        patch_tokens: tokens per slice without the prefix tokens (default ``tokens``).
        out_channels: feature channels per token (default ``embed_dim``).
        cap: upper bound of the chunk.
        Other arguments: as for :func:`slice_bytes`.

    Returns:
        An int in ``[1, max(1, min(n_slices, cap))]``.
    """
    per_slice = slice_bytes(
        tokens=tokens,
        embed_dim=embed_dim,
        mlp_ratio=mlp_ratio,
        dtype_bytes=dtype_bytes,
        pixels=pixels,
        channels=channels,
        layers=layers,
        heads=heads,
        fused=fused,
    )
    kept = (tokens if patch_tokens is None else patch_tokens) * (out_channels or embed_dim)
    budget = safety * free_bytes - 4 * kept * n_slices
    fits = int(budget // per_slice) if budget > 0 else 1
    widest = tokens * max(math.ceil(mlp_ratio * embed_dim), 3 * embed_dim, 1)
    return max(1, min(fits, n_slices, cap, MAX_ELEMENTS // widest))


def encoder_chunk(
    encoder: SliceEncoder,
    n_slices: int,
    size: tuple[int, int],
    free_bytes: int,
    dtype_bytes: int,
) -> int:
    """:func:`auto_chunk` for ``n_slices`` slices of in-plane ``size`` through ``encoder``."""
    vit, p = encoder.vit, encoder.patch_size
    h, w = (math.ceil(n / p) for n in resized_extent(size, encoder.input_size))
    blocks = list(vit.blocks)
    width = encoder.embed_dim
    hidden = [_mlp_hidden(b, width) for b in blocks]
    return auto_chunk(
        free_bytes,
        n_slices=n_slices,
        tokens=h * w + int(vit.num_prefix_tokens),
        patch_tokens=h * w,
        embed_dim=width,
        mlp_ratio=max(hidden, default=4 * width) / width,
        dtype_bytes=dtype_bytes,
        out_channels=encoder.out_channels,
        pixels=h * w * p * p,
        channels=encoder.in_channels,
        layers=len(encoder.layers),
        heads=max((int(getattr(b.attn, "num_heads", 1)) for b in blocks), default=1),
        fused=fused_attention(vit),
    )


def chunk_size(encoder: SliceEncoder, slices: Tensor, *, tracked: bool) -> int:
    """Slices per ViT call for ``slices`` ``(N, C, H, W)`` (module docstring)."""
    chunk = encoder.chunk
    if chunk != AUTO:
        return int(chunk)
    if tracked or slices.device.type != "cuda" or not hasattr(encoder.vit, "blocks"):
        return DEFAULT_CHUNK  # the memory model is a ViT's: CNNs take the default
    dtype = _autocast_dtype("cuda") or slices.dtype
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    free = free_memory(slices.device)
    size = (int(slices.shape[-2]), int(slices.shape[-1]))
    return encoder_chunk(encoder, len(slices), size, free, dtype_bytes)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type``, None when autocast is off (or unknown)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):  # torch without the per-device API: count fp32
        pass
    return None


def free_memory(device: torch.device) -> int:
    """Bytes a CUDA ``device`` can still allocate: free on the device plus what PyTorch's
    allocator holds but does not use (it reuses that first)."""
    free, _ = torch.cuda.mem_get_info(device)
    idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + max(idle, 0))


def _mlp_hidden(block: nn.Module, width: int) -> int:
    """Hidden width of a block's MLP, every input projection summed (packed SwiGLU: both)."""
    mlp = getattr(block, "mlp", None)
    linears = [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] if mlp else []
    return max(sum(linears) - width, width) if linears else 4 * width


def fused_attention(vit: nn.Module) -> bool:
    """True when every block's attention runs ``F.scaled_dot_product_attention``.

    timm's attention modules take the fused path when their ``fused_attn`` flag is set (from
    ``timm.layers.use_fused_attn()``, off with ``TIMM_FUSED_ATTN=0``); LoRA adapters wrap only
    the ``qkv``/``proj`` layers, so they keep it.
    """
    blocks = getattr(vit, "blocks", None)
    if blocks is None or len(blocks) == 0:
        return False
    return all(getattr(getattr(b, "attn", None), "fused_attn", False) is True for b in blocks)


def compile_encoder(encoder: nn.Module, *, backend: str | object = "inductor") -> None:
    """Compile the ViT blocks of ``encoder`` in place for ``--compile`` (module docstring).

    Call it once the encoder is on its device and LoRA adapters are merged (swapping layers
    afterwards recompiles). The first forward then compiles (tens of seconds on a GPU); later
    ones reuse the graph. A second call does nothing; an encoder without a ViT (a MONAI
    baseline) is left as it is. Weights, ``state_dict`` and the features do not change.

    Args:
        encoder: a :class:`~volseg.models.encoder.SliceEncoder`.
        backend: the ``torch.compile`` backend.

    Raises:
        VolsegError: one line naming ``--compile`` when torch.compile cannot run here; a
            compile that fails in the first forward raises the same kind of line there.
    """
    vit = getattr(encoder, "vit", None)
    if vit is None:
        log.info("--compile: %s has no ViT; nothing compiled", type(encoder).__name__)
        return
    if getattr(encoder, "compiled", False):
        return
    device = next(vit.parameters()).device
    problem = _compile_problem(device) if backend == "inductor" else None
    if problem:
        raise VolsegError(f"--compile: {problem}; run without --compile")
    for block in vit.blocks:
        block.compile(backend=backend, dynamic=True)
    encoder.compiled = True


def _compile_problem(device: torch.device) -> str | None:
    """Why torch.compile (inductor) cannot run on ``device`` here, or None."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python/torch build"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "torch.compile on a GPU needs Triton (pip install triton)"
    if device.type == "cpu":
        from torch._inductor import config

        cxx = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
        names = [str(c) for c in cxx if c]
        found = not names or any(shutil.which(c) for c in names)
        return None if found else "torch.compile on CPU needs a C++ compiler (g++ or clang++)"
    return None


def is_compile_error(err: Exception) -> bool:
    """True for an error torch.compile raised (tracing or the backend), not the model's own."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(err, TorchDynamoException)


def compile_failed(err: Exception) -> VolsegError:
    """The one line for a compile that failed in the first forward."""
    inner = getattr(err, "inner_exception", None) or err.__cause__ or err  # the backend's own
    lines = str(inner).strip().splitlines() or [""]
    reason = f"{type(inner).__name__}: {lines[0][:200]}"
    return VolsegError(f"--compile: torch.compile failed ({reason}); run without --compile")
