"""Time ``volseg predict`` on a realistic-size synthetic CT and print where the time goes.

Makes a 512x512x150 abdominal CT phantom (:func:`volseg.synth.make_organ_case`), a ViT-S/14
(DINOv2 architecture, random weights) + default-head checkpoint, runs the cohort prediction that
``volseg predict`` runs, and prints ``timings.csv``. Random weights cost exactly what trained
ones do; nothing is downloaded. The figures in docs/PERFORMANCE.md come from::

    .venv/bin/python tools/bench_predict.py --threads 2

Not a test: it takes minutes on a laptop CPU.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

import torch

from volseg.config import Config, load_config
from volseg.engine.checkpoint import make_checkpoint, save_checkpoint
from volseg.inference import InferenceOptions, predict_cohort
from volseg.io import write_image
from volseg.models import build_model
from volseg.synth import ORGAN_LABELS, case_rng, make_organ_case

STEPS = ("read", "preprocess", "encode", "head", "postprocess", "write", "total")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_predict"))
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 150))
    parser.add_argument("--encoder", default="vit_small_patch14_dinov2")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--roi-slices", type=int, default=None, help="default data.slab (16)")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--naive-window", action="store_true")
    parser.add_argument("--stitch-device", default=None)
    parser.add_argument("--amp", default="auto", help="auto (bf16 on GPUs), bf16, fp16, off")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    case = make_organ_case(case_rng(0, 0), tuple(args.shape))
    image_path = write_image(case.image, args.out / "inputs" / "ct_000.nii.gz")
    print(
        f"synthetic CT {case.image.shape} int16 spacing {case.image.spacing.round(3).tolist()} "
        f"written in {time.perf_counter() - start:.1f} s"
    )

    torch.manual_seed(0)
    config = load_config(Config, None, [f"model.encoder.name={args.encoder}"])
    model = build_model(config.model, num_classes=len(ORGAN_LABELS), modalities=["CT"])
    checkpoint = save_checkpoint(
        args.out / "run" / "checkpoints" / "best.pt",
        make_checkpoint(model, config, modalities=["CT"], labels=ORGAN_LABELS),
    )
    options = InferenceOptions(
        roi_slices=args.roi_slices,
        tta=args.tta,
        naive=args.naive_window,
        stitch_device=args.stitch_device,
        device=args.device,
        amp=args.amp,
    )
    print(
        f"device: {args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}, "
        f"CPU: {cpu_model()}, torch threads: {torch.get_num_threads()}, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    print(
        f"model: {args.encoder} (random weights) + {config.model.head.name} head, "
        f"{len(ORGAN_LABELS)} classes, encoder input size {config.model.encoder.input_size}, "
        f"--amp {args.amp}; "
        f"window {args.roi_slices or config.data.slab} slices, overlap "
        f"{config.inference.overlap}, sw_batch_size {config.inference.sw_batch_size}"
    )
    result = predict_cohort(
        checkpoint, image_path.parent, args.out / "pred", options=options, progress=False
    )
    with open(args.out / "pred" / "timings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"\n{'case':<10}{'status':<8}" + "".join(f"{s:>12}" for s in STEPS))
    for row in rows:
        print(f"{row['case_id']:<10}{row['status']:<8}" + "".join(f"{row[s]:>12}" for s in STEPS))
        if row["error"]:
            print(f"  error: {row['error']}")
    print(f"\ntimings (seconds) in {args.out / 'pred' / 'timings.csv'}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
