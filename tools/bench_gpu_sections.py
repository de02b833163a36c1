"""The measurements of ``tools/bench_gpu.py``, one function per section.

Every section function takes ``(scale, device, results)`` (``scale``: the sizes, a
:class:`tools.bench_gpu.Scale`; ``results``: the sections measured
so far, for the fraction of peak and the ratios) and returns a JSON-ready dict, or None when
it does not apply to the device. Timings synchronise CUDA around each timed call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from volseg.config import Config, EncoderConfig, load_config
from volseg.inference import InferenceOptions, StepTimer, as_predictor
from volseg.inference.memory import peak_memory
from volseg.inference.window import sliding_window_logits
from volseg.models import build_model
from volseg.models.encoder import SliceEncoder
from volseg.models.throughput import fused_attention
from volseg.runtime import resolve_precision
from volseg.synth import case_rng, make_organ_case

if TYPE_CHECKING:
    from tools.bench_gpu import Scale

S, B, L = "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2"
TEST_VIT = "vit_test_patch14_dinov2"
NUM_CLASSES = 5
OVERLAP = 0.5  # sections 3 and 4: window overlap of volseg and of the MONAI peers alike
PREDICT_STEPS = ("read", "preprocess", "encode", "head", "postprocess")
FLOP_SLICES = 32  # slices of the chunk whose FLOPs are counted (FLOPs are linear in slices)


# nnU-Net 3d_fullres-like plan of an abdominal CT, in volseg's (X, Y, Z) order: 6 stages,
# 3x3x1 kernels in the first stage (thick slices), then 3x3x3; in-plane downsampling 32x,
# slice downsampling 16x.
NNUNET_KERNELS = [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
NNUNET_STRIDES = [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
NNUNET_FILTERS = [32, 64, 128, 256, 320, 320]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def once(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn``, CUDA work included; its result is dropped."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def timed(
    fn: Callable[[], Any],
    device: torch.device,
    scale: Scale,
    warmup: Callable[[], Any] | None = None,
    max_reps: int = 50,
    best: bool = False,
) -> float:
    """Median (``best``: shortest) seconds per call over ``scale.min_reps`` calls and at least
    ``scale.min_time``, after one warm-up call (``warmup`` or ``fn``)."""
    (warmup or fn)()
    times: list[float] = []
    while len(times) < max_reps and (len(times) < scale.min_reps or sum(times) < scale.min_time):
        times.append(once(fn, device))
    return min(times) if best else statistics.median(times)


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def matmul(scale: Scale, device: torch.device, results: dict) -> dict:
    """Section 1: dense matmul throughput, the denominator of "fraction of peak"."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    n, repeat = scale.matmul_n, 10 if cuda else 1
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(repeat):
            torch.mm(a, b, out=out)

    for _ in range(2):  # a few warm-ups: cuBLAS heuristics, clocks
        run()
    seconds = timed(run, device, scale, best=True) / repeat  # a peak: the fastest call
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "n": n,
        "seconds": seconds,
        "tflops": 2 * n**3 / seconds / 1e12,
    }


def gflop_per_slice(name: str, input_size: int | None, slice_size: int) -> float:
    """GFLOP of one slice through the encoder, counted by FlopCounterMode on one chunk of
    ``FLOP_SLICES`` slices on the meta device (no memory, no time; attention is counted on
    the math path, which does the FLOPs the fused kernels do)."""
    with torch.device("meta"):
        encoder = SliceEncoder(name, input_size=input_size, chunk=FLOP_SLICES).eval()
        x = torch.empty(1, 1, slice_size, slice_size, FLOP_SLICES)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(x)
    return counter.get_total_flops() / FLOP_SLICES / 1e9


def _peak_tflops(results: dict) -> float | None:
    peak = results.get("matmul") or {}
    return peak.get("tflops")


def encoder(scale: Scale, device: torch.device, results: dict) -> dict:
    """Section 2: SliceEncoder slices/s, TFLOP/s and fraction of the matmul peak."""
    precision = resolve_precision("auto", device, option="amp")
    size = scale.slice_size
    x = torch.rand(1, 1, size, size, scale.encoder_slices, device=device)
    default_chunk = EncoderConfig().chunk
    chunks = list(dict.fromkeys([*scale.chunks, default_chunk, "auto"]))
    peak = _peak_tflops(results)
    rows, fused = [], {}
    for name in scale.encoders:
        for input_size in (EncoderConfig().input_size, None):
            input_size = None if input_size == "native" else input_size
            with torch.device(device):
                enc = SliceEncoder(name, input_size=input_size).eval()
            fused[name] = fused_attention(enc.vit)
            gflop = gflop_per_slice(name, input_size, size)
            for chunk in chunks:
                enc.chunk = chunk
                row: dict[str, Any] = {
                    "encoder": name,
                    "input_size": input_size or "native",
                    "chunk": chunk,
                    "default": chunk == default_chunk,
                }
                rows.append(row)

                def run(enc: SliceEncoder = enc, n: int | None = None) -> None:
                    with torch.no_grad(), precision.autocast():
                        enc(x if n is None else x[..., :n])

                first = chunk if isinstance(chunk, int) else None
                seconds = timed(run, device, scale, warmup=lambda r=run, n=first: r(n=n))
                speed = scale.encoder_slices / seconds
                tflops = speed * gflop / 1e3
                row.update(
                    seconds=seconds,
                    slices_per_s=speed,
                    resolved_chunk=enc.resolved_chunk,
                    gflop_per_slice=gflop,
                    tflops=tflops,
                    fraction_of_peak=tflops / peak if peak else None,
                )
            del enc
            free(device)
    return {
        "slice_size": [size, size],
        "slices_per_pass": scale.encoder_slices,
        "precision": precision.name,
        "flops": f"FlopCounterMode on one chunk of {FLOP_SLICES} slices (meta device)",
        "fused_attn": fused,
        "sdp_backends": _sdp_backends() if device.type == "cuda" else None,
        "rows": rows,
    }


def _sdp_backends() -> dict[str, bool]:
    b = torch.backends.cuda
    return {
        "flash": b.flash_sdp_enabled(),
        "mem_efficient": b.mem_efficient_sdp_enabled(),
        "cudnn": b.cudnn_sdp_enabled(),
        "math": b.math_sdp_enabled(),
    }


def default_model(encoder_name: str | None, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """The default config's segmentation model (random weights, 5 classes) in eval mode."""
    overrides = [f"model.encoder.name={encoder_name}"] if encoder_name else []
    config = load_config(Config, None, overrides)
    model = build_model(config.model, num_classes=NUM_CLASSES, modalities=["CT"])
    return model.to(device).eval(), config


def measure(
    call: Callable[[torch.Tensor], Any],
    image: torch.Tensor,
    window: list[int],
    device: torch.device,
) -> dict[str, float]:
    """Seconds and peak memory (MiB) of ``call(image)``, after a warm-up call on one window of
    ``image`` (the same layer shapes: kernels chosen, CPU primitives made, memory pooled)."""
    call(image[(..., *(slice(0, w) for w in window))])
    free(device)
    with peak_memory(device) as mem:
        seconds = once(lambda: call(image), device)
    return {"seconds": seconds, "peak_mb": mem["mb"], "memory": mem["device"]}


def model(scale: Scale, device: torch.device, results: dict) -> dict:
    """Section 3: the default model over slab windows: cached, naive, cached_stacked (head in
    its training layout)."""
    net, config = default_model(scale.model_encoder, device)
    image = torch.rand(1, 1, *scale.volume, device=device)
    window = dict(
        roi_slices=config.data.slab, overlap=OVERLAP, sw_batch_size=config.inference.sw_batch_size
    )
    out: dict[str, Any] = {
        "shape": list(scale.volume),
        "encoder": config.model.encoder.name,
        "head": config.model.head.name,
        **window,
    }
    slab = [*scale.volume[:2], config.data.slab]
    stacked = hasattr(net.head, "slices_first")  # also time the head's training layout
    for mode in ("cached", "naive", "cached_stacked")[: 3 if stacked else 2]:
        if stacked:
            net.head.slices_first = mode != "cached_stacked"
        out[mode] = measure(
            lambda x, n=mode == "naive": sliding_window_logits(net, x, naive=n, **window),
            image, slab, device,
        )  # fmt: skip
    out["naive_over_cached"] = out["naive"]["seconds"] / out["cached"]["seconds"]
    return out


def _swinunetr(cfg: dict) -> torch.nn.Module:
    from volseg.models.baselines import monai_swinunetr

    # volseg's SwinUNETR baseline, without its padding wrapper (the windows here are whole
    # multiples of 32 already; the wrapper would pad a 32-slice window to 64)
    return monai_swinunetr(1, NUM_CLASSES, channels=cfg["feature_size"]).net


def _dynunet(cfg: dict) -> torch.nn.Module:
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=NUM_CLASSES,
        kernel_size=NNUNET_KERNELS,
        strides=NNUNET_STRIDES,
        upsample_kernel_size=NNUNET_STRIDES[1:],
        filters=cfg["filters"],
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=False,
    )


def peers(scale: Scale, device: torch.device, results: dict) -> dict:
    """Section 4: MONAI SwinUNETR and an nnU-Net-like DynUNet on the section-3 tensor."""
    from monai.inferers import sliding_window_inference

    precision = resolve_precision("auto", device, option="amp")
    image = torch.rand(1, 1, *scale.volume, device=device)
    sw_batch_size = Config().inference.sw_batch_size
    ours = results.get("model") or {}
    ours = ours.get("cached") if isinstance(ours, dict) else None
    out: dict[str, Any] = {
        "shape": list(scale.volume),
        "scaled_down": scale.scaled_peers,
        "precision": precision.name,
    }
    specs = {
        "swinunetr": (_swinunetr, dict(scale.swin, overlap=OVERLAP, mode="gaussian")),
        "dynunet": (
            _dynunet,
            dict(
                scale.dynunet,
                overlap=OVERLAP,
                mode="gaussian",
                kernels=NNUNET_KERNELS,
                strides=NNUNET_STRIDES,
                plan="nnU-Net 3d_fullres-like (abdominal CT), X,Y,Z order",
            ),
        ),
    }
    for name, (build, cfg) in specs.items():
        net = build(cfg).to(device).eval()

        def call(x: torch.Tensor, net: torch.nn.Module = net, cfg: dict = cfg) -> torch.Tensor:
            with torch.no_grad(), precision.autocast():
                return sliding_window_inference(
                    x,
                    cfg["roi"],
                    sw_batch_size,
                    lambda w: net(w).float(),
                    overlap=OVERLAP,
                    mode="gaussian",
                )

        row = {"config": dict(cfg, sw_batch_size=sw_batch_size)}
        row.update(measure(call, image, cfg["roi"], device))
        if ours:
            row["seconds_over_volseg"] = row["seconds"] / ours["seconds"]
            row["memory_over_volseg"] = row["peak_mb"] / ours["peak_mb"]
        out[name] = row
        del net
        free(device)
    return out


def predict(scale: Scale, device: torch.device, results: dict) -> dict:
    """Section 5: Predictor.predict on an in-memory synthetic CT, seconds per step."""
    net, config = default_model(scale.model_encoder, device)
    predictor = as_predictor(net, options=InferenceOptions(device=str(device)), config=config)
    image = make_organ_case(case_rng(0, 0), scale.predict_shape).image
    predictor.predict(image)  # warm-up
    timer = StepTimer(device)
    sync(device)
    start = time.perf_counter()
    predictor.predict(image, timer=timer)
    sync(device)
    total = time.perf_counter() - start
    o = predictor.options
    return {
        "shape": list(scale.predict_shape),
        "encoder": config.model.encoder.name,
        "roi_slices": o.roi_slices,
        "overlap": o.overlap,
        "sw_batch_size": o.sw_batch_size,
        "steps": {s: timer.seconds.get(s, 0.0) for s in PREDICT_STEPS},
        "seconds": total,
    }


def large(scale: Scale, device: torch.device, results: dict) -> dict | None:
    """Section 6: peak GPU memory of a long volume, logits stitched in host memory (GPU only)."""
    if device.type != "cuda" or scale.large_shape is None:
        return None
    return large_volume(scale, device)


def large_volume(scale: Scale, device: torch.device) -> dict:
    """Section 6 on any device (the tests run it on the CPU with a small shape)."""
    assert scale.large_shape is not None
    image = torch.rand(1, 1, *scale.large_shape, device=device)
    rows = []
    for name in scale.large_encoders:
        net, config = default_model(name, device)
        window = dict(
            roi_slices=config.data.slab,
            overlap=config.inference.overlap,
            sw_batch_size=config.inference.sw_batch_size,
        )
        row: dict[str, Any] = {"encoder": name, **window, "stitch_device": "cpu"}
        row.update(
            measure(
                lambda x, net=net, w=window: sliding_window_logits(
                    net, x, stitch_device="cpu", **w
                ),
                image,
                [*scale.large_shape[:2], config.data.slab],
                device,
            )
        )
        rows.append(row)
        del net
        free(device)
    return {
        "shape": list(scale.large_shape),
        "input_mb": image.numel() * image.element_size() / 2**20,
        "rows": rows,
    }


SECTIONS: dict[str, Callable[[Scale, torch.device, dict], dict | None]] = {
    "matmul": matmul,
    "encoder": encoder,
    "model": model,
    "peers": peers,
    "predict": predict,
    "large": large,
}
