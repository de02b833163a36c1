"""One-command speed benchmark of volseg on a GPU (with a small CPU version): one table, one JSON.

Sections (``--sections`` picks a subset, comma-separated):

1. ``matmul``: measured dense matmul throughput (CUDA: bf16 8192^3; CPU: float32 1024^3) in
   TFLOP/s, fastest timed call, the denominator of every "fraction of peak".
2. ``encoder``: :class:`~volseg.models.encoder.SliceEncoder` (random weights) over 512x512
   slices for ViT-S/B/L at the default ``input_size`` (224) and at native size, for chunks 32,
   128, the encoder's default and ``"auto"``: slices/s,
   TFLOP/s (FLOPs counted by ``FlopCounterMode`` on one chunk) and fraction of peak; whether
   every timm attention block takes the fused SDPA path.
3. ``model``: the default segmentation model (5 classes) on a 512x512x200 tensor, slab windows
   of 16 at overlap 0.5, cached vs ``naive=True``: seconds and peak memory; and cached with
   the pyramid head in its stacked-slices layout (``head.slices_first = False``), to check on
   each device that the slices-first inference layout pays.
4. ``peers``: MONAI SwinUNETR (feature size 48, 96^3 windows) and an nnU-Net-3d_fullres-like
   DynUNet (160x160x64 windows) on the same tensor, overlap 0.5: seconds, peak memory, ratios.
5. ``predict``: ``Predictor.predict`` on an in-memory synthetic 512x512x200 CT, seconds per
   step (read, preprocess, encode, head, postprocess) after one warm-up call.
6. ``large``: a 512x512x1000 volume with logits stitched on the CPU, ViT-S/B/L: seconds and
   peak GPU memory (GPU only).

CUDA runs use bf16 autocast (``--amp auto``), the CPU float32. On the CPU every size is scaled
down (128x128 slices, ViT-S only, 96x96x32 volumes, smaller MONAI peers) so the run takes a
few minutes; ``--quick`` is the tiny configuration the tests run (not a measurement). Weights
are random: they cost what trained ones do, and nothing is downloaded. Run::

    .venv/bin/python tools/bench_gpu.py                 # cuda if present, else cpu
    .venv/bin/python tools/bench_gpu.py --device cpu --sections matmul,encoder

A section that fails (e.g. out of memory) is recorded as an error in the table and the JSON and
the others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout: use the in-repo volseg
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from tools import bench_gpu_sections as sections  # noqa: E402
from tools.bench_predict import cpu_model  # noqa: E402

TITLES = {
    "matmul": "1. matrix peak",
    "encoder": "2. encoder throughput",
    "model": "3. model only (sliding windows)",
    "peers": "4. MONAI peers on the same tensor",
    "predict": "5. whole-case prediction by step",
    "large": "6. large volume peak memory",
}
SHORT = {
    "vit_small_patch14_dinov2": "ViT-S",
    "vit_base_patch14_dinov2": "ViT-B",
    "vit_large_patch14_dinov2": "ViT-L",
    "vit_test_patch14_dinov2": "ViT-test",
}


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark configuration (``gpu``, ``cpu`` or ``quick``)."""

    name: str
    matmul_n: int
    encoders: tuple[str, ...]
    slice_size: int
    encoder_slices: int
    chunks: tuple[int, ...]
    model_encoder: str | None  # None: the default config's encoder
    volume: tuple[int, int, int]  # sections 3 and 4
    swin: dict[str, Any]
    dynunet: dict[str, Any]
    predict_shape: tuple[int, int, int]
    large_shape: tuple[int, int, int] | None
    large_encoders: tuple[str, ...] = ()
    min_time: float = 1.0
    min_reps: int = 3
    scaled_peers: bool = False
    notes: list[str] = field(default_factory=list)


GPU = Scale(
    name="gpu",
    matmul_n=8192,
    encoders=(sections.S, sections.B, sections.L),
    slice_size=512,
    encoder_slices=256,
    chunks=(32, 128),
    model_encoder=None,
    volume=(512, 512, 200),
    swin=dict(feature_size=48, roi=[96, 96, 96]),
    dynunet=dict(roi=[160, 160, 64], filters=sections.NNUNET_FILTERS),
    predict_shape=(512, 512, 200),
    large_shape=(512, 512, 1000),
    large_encoders=(sections.S, sections.B, sections.L),
)
CPU = Scale(
    name="cpu",
    matmul_n=1024,
    encoders=(sections.S,),
    slice_size=128,
    encoder_slices=32,
    chunks=(8, 32),
    model_encoder=None,
    volume=(96, 96, 32),
    swin=dict(feature_size=12, roi=[64, 64, 32]),
    dynunet=dict(roi=[64, 64, 32], filters=[8, 16, 32, 64, 80, 80]),
    predict_shape=(128, 128, 32),
    large_shape=None,
    min_time=1.0,
    min_reps=1,
    scaled_peers=True,
    notes=["CPU configuration: float32, small slices and volumes, scaled-down MONAI peers"],
)
QUICK = Scale(
    name="quick",
    matmul_n=256,
    encoders=(sections.TEST_VIT,),
    slice_size=32,
    encoder_slices=8,
    chunks=(4, 8),
    model_encoder=sections.TEST_VIT,
    volume=(32, 32, 24),
    swin=dict(feature_size=12, roi=[64, 64, 32]),  # the smallest windows both networks take
    dynunet=dict(roi=[64, 64, 32], filters=[4, 8, 16, 32, 32, 32]),
    predict_shape=(32, 32, 12),
    large_shape=None,
    min_time=0.0,
    min_reps=1,
    scaled_peers=True,
    notes=["quick configuration (tests): test-size ViT, tiny volumes; not a measurement"],
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("runs/bench_gpu/bench_gpu.json"),
        help="where the results go (default: runs/bench_gpu/bench_gpu.json)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(sections.SECTIONS),
        help=f"comma-separated subset of {','.join(sections.SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny configuration for tests (not a measurement)"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in sections.SECTIONS]
    if unknown or not chosen:
        parser.error(f"--sections: unknown {unknown}; choose from {', '.join(sections.SECTIONS)}")
    args.sections = [s for s in sections.SECTIONS if s in chosen]  # run in the table's order
    return args


def environment(device: torch.device, scale: Scale) -> dict[str, Any]:
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "threads": None if cuda else torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "configuration": scale.name,
        "notes": scale.notes,
    }


def run_sections(names: list[str], scale: Scale, device: torch.device) -> dict:
    """Each section in turn; a failing one leaves ``{"error": ...}`` and the rest still run."""
    results: dict[str, Any] = {}
    for name in names:
        torch.manual_seed(0)
        start = time.perf_counter()
        try:
            results[name] = sections.SECTIONS[name](scale, device, results)
        except Exception as err:  # recorded; the other sections still run
            traceback.print_exc(file=sys.stderr)
            results[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"  [{name} took {time.perf_counter() - start:.1f} s]", file=sys.stderr)
    return results


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.3g}"
    return str(value)


def render(name: str, r: dict | None) -> list[str]:
    """Table lines of one section's result."""
    if r is None:
        return [f"{TITLES[name]}: skipped (no GPU)"]
    if "error" in r:
        return [f"{TITLES[name]}: ERROR {r['error']}"]
    return RENDERERS[name](r)


def _matmul(r: dict) -> list[str]:
    n = r["n"]
    return [
        f"{TITLES['matmul']}: {r['dtype']} {n}x{n} @ {n}x{n}: {r['tflops']:.2f} TFLOP/s "
        f"({r['seconds'] * 1e3:.3f} ms per product)"
    ]


def _encoder(r: dict) -> list[str]:
    fused = ", ".join(
        f"{SHORT.get(k, k)} {'yes' if v else 'NO'}" for k, v in r["fused_attn"].items()
    )
    h, w = r["slice_size"]
    lines = [
        f"{TITLES['encoder']}: {h}x{w} slices, {r['slices_per_pass']} per pass, "
        f"{r['precision']}; FLOPs: {r['flops']}",
        f"   fused SDPA in every attention block: {fused}"
        + (f"; SDPA backends enabled: {r['sdp_backends']}" if r.get("sdp_backends") else ""),
        f"   {'encoder':<9}{'input':>7}{'chunk':>9}{'slices/s':>11}{'GFLOP/sl':>10}"
        f"{'TFLOP/s':>9}{'of peak':>9}",
    ]
    for row in r["rows"]:
        chunk = f"{row['chunk']}{'*' if row['default'] else ''}"
        head = (
            f"   {SHORT.get(row['encoder'], row['encoder']):<9}{row['input_size']!s:>7}{chunk:>9}"
        )
        lines.append(
            f"{head}{row['slices_per_s']:>11.1f}{row['gflop_per_slice']:>10.3g}"
            f"{row['tflops']:>9.3g}{fmt(row['fraction_of_peak'], 3):>9}"
            + (f"  (auto: {row['resolved_chunk']})" if row["chunk"] == "auto" else "")
        )
    lines.append("   * the encoder's default chunk")
    return lines


def _memory_row(label: str, m: dict, extra: str = "") -> str:
    return f"   {label:<11}{m['seconds']:>10.2f}{fmt(m['peak_mb'], 0):>11}{extra}"


def _model(r: dict) -> list[str]:
    return [
        f"{TITLES['model']}: {SHORT.get(r['encoder'], r['encoder'])} + {r['head']}, "
        f"{'x'.join(map(str, r['shape']))}, {r['roi_slices']}-slice slabs, overlap {r['overlap']}, "
        f"sw_batch_size {r['sw_batch_size']}; memory: {r['cached']['memory']}",
        f"   {'mode':<11}{'seconds':>10}{'peak MiB':>11}",
        _memory_row("cached", r["cached"]),
        _memory_row("naive", r["naive"]),
        *([_memory_row("cached*", r["cached_stacked"])] if "cached_stacked" in r else []),
        f"   naive/cached time: {r['naive_over_cached']:.2f}x"
        + ("; * head in its stacked-slices training layout" if "cached_stacked" in r else ""),
    ]


def _peers(r: dict) -> list[str]:
    scaled = " (scaled down for the CPU)" if r["scaled_down"] else ""
    lines = [
        f"{TITLES['peers']}: {'x'.join(map(str, r['shape']))}, {r['precision']}{scaled}",
        f"   {'network':<11}{'seconds':>10}{'peak MiB':>11}{'time / volseg':>15}"
        f"{'memory / volseg':>17}  configuration",
    ]
    for name in ("swinunetr", "dynunet"):
        p, c = r[name], r[name]["config"]
        if name == "swinunetr":
            what = f"feature_size {c['feature_size']}, windows {c['roi']}"
        else:
            what = f"filters {c['filters']}, windows {c['roi']}, strides {c['strides']}"
        ratios = f"{fmt(p.get('seconds_over_volseg')):>15}{fmt(p.get('memory_over_volseg')):>17}"
        lines.append(_memory_row(name, p, f"{ratios}  {what}, overlap {c['overlap']}"))
    lines.append("   ratios: peer / volseg model-only cached (section 3); '-' if 3 did not run")
    return lines


def _predict(r: dict) -> list[str]:
    steps = r["steps"]
    return [
        f"{TITLES['predict']}: synthetic CT {'x'.join(map(str, r['shape']))}, "
        f"{SHORT.get(r['encoder'], r['encoder'])}, {r['roi_slices']}-slice slabs, overlap "
        f"{r['overlap']}, after one warm-up call",
        "   " + "".join(f"{s:>12}" for s in [*steps, "total"]),
        "   " + "".join(f"{v:>12.2f}" for v in [*steps.values(), r["seconds"]]),
    ]


def _large(r: dict) -> list[str]:
    lines = [
        f"{TITLES['large']}: {'x'.join(map(str, r['shape']))}, logits stitched on the CPU "
        f"(input on the GPU: {r['input_mb']:.0f} MiB)",
        f"   {'encoder':<11}{'seconds':>10}{'peak MiB':>11}",
    ]
    lines += [_memory_row(SHORT.get(x["encoder"], x["encoder"]), x) for x in r["rows"]]
    return lines


RENDERERS = {
    "matmul": _matmul,
    "encoder": _encoder,
    "model": _model,
    "peers": _peers,
    "predict": _predict,
    "large": _large,
}


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a temp file in the same folder, then replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here; use --device cpu", file=sys.stderr)
        return 2
    scale = QUICK if args.quick else GPU if device.type == "cuda" else CPU
    torch.manual_seed(0)
    env = environment(device, scale)
    print(
        f"volseg benchmark on {env['device']} ({env['device_name']}), torch {env['torch']}"
        + (f", {env['threads']} CPU threads" if env["threads"] else f", CUDA {env['cuda']}")
        + f", {env['date']}, configuration {scale.name}"
    )
    for note in scale.notes:
        print(f"note: {note}")
    start = time.perf_counter()
    results = run_sections(args.sections, scale, device)
    failed = [n for n, r in results.items() if isinstance(r, dict) and "error" in r]
    print()
    for name, result in results.items():
        print("\n".join(render(name, result)))
        print()
    seconds = time.perf_counter() - start
    write_json(
        args.json,
        {**env, "sections": results, "failed": failed, "wall_seconds": seconds},
    )
    print(f"{len(results)} sections in {seconds:.0f} s, {len(failed)} failed; JSON: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
