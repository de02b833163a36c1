"""``volseg predict``: label maps or grades for a file, a folder or a manifest of cases."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from volseg.cli.common import add_command
from volseg.runtime import AMP_MODES  # torch-free

DESCRIPTION = """\
MODEL is a run folder (its checkpoints/best.pt, else last.pt) or a checkpoint file. The
preprocessing (orientation, spacing, intensity window, crop), the modalities and the label
values all come from the checkpoint; nothing is re-typed here. Several --model options (folds,
or runs trained on the same labels and modalities) are ensembled: each preprocesses the case
as it was trained, and their probabilities are averaged on the case's grid before the argmax.

INPUT is one of:
  - an image file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) or a DICOM series folder;
  - a folder of cases: every image file and every sub-folder (a DICOM series) is a case;
    nnU-Net names {case}_{XXXX}.nii.gz are grouped, XXXX = modality index, and so are
    names after the model's modalities, {case}_{modality}.nii.gz (case_T1.nii.gz,
    case_FLAIR.nii.gz, ...; a modality without a file is missing, which grading accepts);
  - a manifest (volseg manifest.json, MSD/nnU-Net dataset.json or its folder, grading CSV).
A model with several modalities takes a 4D file with one channel each, files named as above,
or a manifest (modalities matched by name).

OUTPUT is a folder, or for one input volume the label map itself: -o seg.nii.gz (any image
extension; it sets the format) writes that file and nothing else (seg_probs.nii.gz with
--save-probs); for one DICOM series -o seg.dcm writes a DICOM-SEG (--format dicom-seg implied).
Outputs in an OUTPUT folder (every file written atomically: temp file + rename):
  <case_id>.nii.gz         label map (uint8, uint16 above 255) with exactly the input's
                           geometry, so it opens aligned over the input in ITK-SNAP/Slicer
  <case_id>.dcm            with --format dicom-seg (DICOM series input): a DICOM-SEG in the
                           source's study, one segment per label, frames on the source slices
  <case_id>_probs.nii.gz   with --save-probs: class probabilities (K, X, Y, Z), rounded to
                           float16 and stored as float32 (NIfTI has no float16 type)
  predictions.csv/.json    grading models: per-class probabilities, the predicted class,
                           modalities used, most-attended slices per modality (slice indices
                           of the input file)
  timings.csv              per case: status, seconds in read, preprocess, encode, head,
                           postprocess, write, total; the error of a failed case

Segmentation encodes every slice once (in chunks of --chunk), then slides the 3D head over
the feature volume in windows of whole slices (--roi-slices along the slice axis), blended
with Gaussian weights. A case that fails (unreadable file, wrong modality count) is reported
and the others continue; the exit status is then 1. --skip-existing resumes a cohort.

Several GPUs: torchrun shards the cases across processes; each writes its own cases and
rank 0 merges the timing tables:
  torchrun --nproc_per_node=4 -m volseg predict --model runs/organs --input scans/ --output pred/

examples:
  volseg predict -i ct.nii.gz -o seg.nii.gz --model runs/organs
  volseg predict --model runs/organs --input ct.nii.gz --output pred/
  volseg predict -i scans/ -o pred/ --model runs/fold0 --model runs/fold1 --model runs/fold2
  volseg predict -i ct.nii.gz -o liver_spleen.nii.gz --model runs/organs --roi-subset liver,spleen
  volseg predict -i brains/ -o grades/ --model runs/glioma   # brains/case_T1.nii.gz, case_T2...
  volseg predict --model runs/organs/checkpoints/best.pt --input scans/ --output pred/ --tta
  volseg predict --model runs/organs --input dicom_series/ --output pred/ --format nrrd
  volseg predict --model runs/organs --input dicom_series/ --output pred/ --format dicom-seg
  volseg predict --model runs/organs --input dicom_series/ --output seg.dcm
  volseg predict --model runs/organs --input big_ct.nii.gz --output pred/ --stitch-device cpu
  volseg predict --model runs/glioma --input data/glioma/manifest.json --output grades/
  volseg predict --model runs/organs --input scans/ --output pred/ --skip-existing --save-probs"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``volseg predict`` to the subcommands."""
    p = add_command(
        sub,
        "predict",
        "Predict label maps (segmentation) or grades (grading) for volumes.",
        DESCRIPTION,
    )
    io = p.add_argument_group("inputs and outputs")
    io.add_argument(
        "--model",
        type=Path,
        required=True,
        action="append",
        metavar="RUN_DIR|CKPT",
        help="run folder or checkpoint file; repeat it to ensemble folds or runs with the "
        "same labels (probabilities averaged)",
    )
    io.add_argument(
        "-i",
        "--input",
        type=Path,
        required=True,
        metavar="FILE|FOLDER|MANIFEST",
        help="image file, DICOM folder, folder of cases, or manifest",
    )
    io.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DIR|FILE",
        help="output folder (created); for one input volume also a label-map file such as "
        "seg.nii.gz (its extension sets the format), or seg.dcm for a DICOM series (DICOM-SEG)",
    )
    io.add_argument(
        "--format",
        choices=["nii.gz", "nii", "nrrd", "mha", "same", "dicom-seg"],
        default="nii.gz",
        help="label map format; 'same' keeps the input's extension, .nii.gz for "
        "DICOM input; 'dicom-seg' writes a DICOM-SEG for DICOM input (default nii.gz)",
    )
    io.add_argument(
        "--save-probs",
        action="store_true",
        help="also write <case_id>_probs with the class probabilities",
    )
    io.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip cases whose outputs already exist (resume a cohort)",
    )

    win = p.add_argument_group("sliding window (defaults from the checkpoint config)")
    win.add_argument(
        "--roi-slices",
        type=int,
        metavar="N",
        help="slices per window along the slice axis; 0 = whole volume (default data.slab)",
    )
    win.add_argument(
        "--overlap",
        type=float,
        metavar="F",
        help="window overlap in [0, 1) (default inference.overlap)",
    )
    win.add_argument(
        "--sw-batch-size",
        type=int,
        metavar="N",
        help="windows per head call (default inference.sw_batch_size)",
    )
    win.add_argument(
        "--blend",
        choices=["gaussian", "constant"],
        default="gaussian",
        help="blending of overlapping windows (default gaussian)",
    )
    win.add_argument(
        "--naive-window",
        action="store_true",
        help="run the whole model per window instead of encoding each slice "
        "once (for comparison; same output, slower)",
    )
    win.add_argument(
        "--chunk",
        metavar="N|auto",
        help="slices per ViT call, or auto (from free GPU memory)",
    )

    post = p.add_argument_group("test-time augmentation and post-processing")
    post.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average the 8 mirror flips (default inference.tta)",
    )
    post.add_argument(
        "--roi-subset",
        metavar="NAMES",
        help="write only these labels, comma-separated names from the model's label map "
        "(e.g. liver,spleen); the others become 0, values are kept",
    )
    post.add_argument(
        "--keep-largest",
        action="store_true",
        help="keep only the largest connected component of each label",
    )
    post.add_argument(
        "--top-slices",
        type=int,
        default=3,
        metavar="N",
        help="most-attended slices reported per modality, grading (default 3)",
    )

    dev = p.add_argument_group("devices")
    dev.add_argument(
        "--device",
        metavar="DEV",
        help="cpu, cuda or cuda:N (default cuda if available; under torchrun cuda:LOCAL_RANK)",
    )
    dev.add_argument(
        "--stitch-device",
        metavar="DEV",
        help="device of the stitched output, e.g. cpu: keeps a large volume's "
        "output in host memory (default the model's device)",
    )
    dev.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the ViT blocks (the first case compiles)",
    )
    dev.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="auto",
        help="mixed precision: auto = bf16 on GPUs that support it (else fp16) and on CPUs "
        "with native bf16 (AVX512-BF16, AMX), else fp32; fp16 needs a GPU (default auto)",
    )
    dev.add_argument(
        "--prefetch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read and preprocess the next case while one runs (default: on for CUDA)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--verbose", action="store_true", help="log details, with the traceback of each failed case"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``volseg predict`` from parsed arguments; returns the exit status.

    Options, model paths, the input and the output are checked before torch and MONAI are
    imported, so a mistyped path or option costs a moment, not the imports of a model.
    """
    from volseg.inference.cases import check_request
    from volseg.inference.options import InferenceOptions

    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    # checked here, before the model loads: a bad device or window fails once, not per case
    options = InferenceOptions(
        roi_slices=args.roi_slices,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        tta=args.tta,
        mode=args.blend,
        naive=args.naive_window,
        keep_largest=args.keep_largest,
        stitch_device=args.stitch_device,
        amp=args.amp,
        device=args.device,
        chunk=args.chunk,
        compile=args.compile,
        top_slices=args.top_slices,
        roi_subset=args.roi_subset,
    )
    check_request(args.model, args.input, args.output, args.format)
    from volseg.inference.cohort import predict_cohort

    result = predict_cohort(
        args.model,
        args.input,
        args.output,
        options=options,
        save_probs=args.save_probs,
        output_format=args.format,
        skip_existing=args.skip_existing,
        progress=not args.quiet,
        prefetch=args.prefetch,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        _summary(result)
    return result.exit_code


def _summary(result) -> None:
    done, skipped, failed = (result.count(s) for s in ("ok", "skipped", "failed"))
    tables = result.tables and not result.table_error
    timings = f" (timings in {result.output / 'timings.csv'})" if tables else ""
    print(f"predicted {done} case(s), skipped {skipped}, failed {failed}: {result.output}{timings}")
    for row in result.failed:
        print(f"  failed {row['case_id']}: {row['error']}", file=sys.stderr)
    if result.table_error:
        print(
            f"error: {result.table_error}; fix the disk and re-run with --skip-existing "
            "(finished cases are kept)",
            file=sys.stderr,
        )
