"""End-to-end training runs on tiny data: run folder, determinism, exact resume, dry run."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from tests.engine.conftest import tiny_config
from volseg.engine import loop, run_training
from volseg.errors import VolsegError
from volseg.models.checkpoint import load_checkpoint, model_from_checkpoint

TIMES = ("epoch_seconds", "val_seconds")


def rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES} for line in lines]


def weights(run_dir, name="last.pt"):
    return load_checkpoint(run_dir / "checkpoints" / name)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def interrupt_at(monkeypatch, step: int, how: str):
    """In the ``step``-th optimiser step (1-based), raise KeyboardInterrupt before it updates
    anything (a killed run), or send SIGINT to this process (handled: the run stops after
    the step and saves)."""
    original = loop._optimizer_step
    count = {"n": 0}

    def patched(tools):
        count["n"] += 1
        if count["n"] == step:
            if how == "crash":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return original(tools)

    monkeypatch.setattr(loop, "_optimizer_step", patched)


@pytest.fixture(scope="module")
def baseline(organs, tmp_path_factory):
    """An uninterrupted 3-epoch run (4 training cases, 2 per batch: 2 steps per epoch)."""
    out = tmp_path_factory.mktemp("baseline")
    return run_training(tiny_config(organs, out, "train.epochs=3"), progress=False)


def test_run_folder_holds_every_artefact(baseline, organs):
    for name in ("config.yaml", "splits.json", "metrics.csv", "metrics.jsonl", "progress.png"):
        assert (baseline / name).is_file(), name
    assert (baseline / "checkpoints" / "best.pt").is_file()
    params = json.loads((baseline / "params.json").read_text())
    assert params["encoder_trainable"] == 0 < params["head_trainable"] == params["model_trainable"]
    assert any((baseline / "tensorboard").iterdir())
    assert len(list((baseline / "cache").glob("*.pt"))) == 6  # 4 train + 2 val volumes
    history = rows(baseline)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert [r["step"] for r in history] == [2, 4, 6]
    names = ["liver", "spleen", "kidney_left", "kidney_right"]
    assert all(f"dice/{n}" in history[-1] for n in names) and 0 <= history[-1]["dice_mean"] <= 1
    header = (baseline / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "lr", "dice_mean"} <= set(header)

    last = load_checkpoint(baseline / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and last["training"]["position"]["step"] == 6
    assert last["labels"] == {0: "background", 1: "liver", 2: "spleen", 3: "kidney_left",
                              4: "kidney_right"}  # fmt: skip
    assert last["preprocessing"]["slab"] == 8 and last["optimizer"] and last["scheduler"]
    best = load_checkpoint(baseline)
    assert best["metrics"]["dice_mean"] == max(r["dice_mean"] for r in history)
    model = model_from_checkpoint(last).eval()  # the checkpoint rebuilds a working model
    assert model(torch.rand(1, 1, 20, 18, 8)).shape == (1, 5, 20, 18, 8)


@pytest.mark.parametrize("change", ["shape", "missing"])
def test_checkpoint_of_another_model_is_a_one_line_error(baseline, change):
    checkpoint = load_checkpoint(baseline / "checkpoints" / "last.pt")
    key = next(k for k in checkpoint["model"] if k.startswith("head.") and k.endswith("weight"))
    if change == "shape":
        checkpoint["model"][key] = torch.zeros(3, 1)
    else:
        del checkpoint["model"][key]
    with pytest.raises(VolsegError, match=f"does not fit its model: .*{key}.*another volseg"):
        model_from_checkpoint(checkpoint)


def test_same_seed_gives_the_same_losses(baseline, organs, tmp_path, capsys):
    again = run_training(tiny_config(organs, tmp_path, "train.epochs=3"), progress=False)
    assert "feature cache: epoch time" in capsys.readouterr().err  # the measured speed-up
    assert [r["train_loss"] for r in rows(again)] == [r["train_loss"] for r in rows(baseline)]
    assert rows(again) == rows(baseline)
    assert_same_weights(weights(again), weights(baseline))


def test_killed_run_resumes_to_the_same_result(baseline, organs, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, step=4, how="crash")  # 2nd step of epoch 2: last.pt is epoch 1
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config(organs, tmp_path, "train.epochs=3"), progress=False)
    monkeypatch.undo()
    run_dir = tmp_path / "tiny"
    assert [r["epoch"] for r in rows(run_dir)] == [1]
    resumed = run_training(None, resume=run_dir, progress=False)
    assert resumed == run_dir
    assert rows(resumed) == rows(baseline)
    assert_same_weights(weights(resumed), weights(baseline))


@pytest.mark.parametrize(
    ("step", "stopped_at"),
    [(3, (1, 1, 3)), (2, (1, 0, 2))],  # inside epoch 2; in the last step of epoch 1
)
def test_stopped_run_saves_and_resumes_exactly(
    baseline, organs, tmp_path, monkeypatch, step, stopped_at
):
    interrupt_at(monkeypatch, step=step, how="signal")
    run_dir = run_training(tiny_config(organs, tmp_path, "train.epochs=3"), progress=False)
    monkeypatch.undo()
    position = load_checkpoint(run_dir / "checkpoints" / "last.pt")["training"]["position"]
    assert (position["epoch"], position["batch"], position["step"]) == stopped_at
    resumed = run_training(None, resume=run_dir, progress=False)
    assert rows(resumed) == rows(baseline)
    assert_same_weights(weights(resumed), weights(baseline))
    assert_same_weights(weights(resumed, "best.pt"), weights(baseline, "best.pt"))


def test_dry_run_writes_nothing(organs, tmp_path, capsys):
    run_dir = run_training(tiny_config(organs, tmp_path / "runs"), dry_run=True, progress=False)
    text = capsys.readouterr().out
    assert run_dir == tmp_path / "runs" / "tiny" and not (tmp_path / "runs").exists()
    for part in ("4 train, 2 val", "slabs of 8 axial", "trainable", "2 optimiser steps per epoch",
                 "= 4 steps", "cached once per volume", "native (median"):  # fmt: skip
        assert part in text, part


def test_existing_run_folders_are_never_reused(baseline, organs):
    config = tiny_config(organs, baseline.parent, "train.epochs=1")
    assert run_training(config, dry_run=True, progress=False) == baseline.parent / "tiny-1"


def test_init_from_copies_the_weights(baseline, organs, tmp_path):
    config = tiny_config(organs, tmp_path, "train.epochs=1", "train.lr=1e-12")
    run_dir = run_training(config, init_from=baseline / "checkpoints" / "last.pt", progress=False)
    start, trained = weights(baseline), weights(run_dir)
    head = [k for k in start if k.startswith("head.") and start[k].is_floating_point()]
    assert all(torch.allclose(start[k], trained[k], atol=1e-6) for k in head)


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(VolsegError, match="last.pt"):
        run_training(None, resume=tmp_path, progress=False)


def test_task_mismatch_is_a_user_error(glioma, tmp_path):
    with pytest.raises(VolsegError, match="model.task"):
        run_training(tiny_config(glioma, tmp_path), dry_run=True, progress=False)


def test_grading_run_reports_auc(glioma, tmp_path, capsys):
    config = tiny_config(
        glioma,
        tmp_path,
        "train.class_weights=balanced",
        "train.balanced_sampling=true",
        task="classification",
    )
    run_dir = run_training(config, progress=False)
    last = rows(run_dir)[-1]
    assert {"auc", "balanced_accuracy", "accuracy", "val_loss"} <= set(last)
    assert 0 <= last["balanced_accuracy"] <= 1
    assert last["temperature"] > 0 and 0 <= last["ece"] <= 1 and 0 <= last["ece_calibrated"] <= 1
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["classes"] == ["grade2", "grade3"] and checkpoint["task"] == "classification"
    out = capsys.readouterr().err  # the run's console is stderr
    assert out.count("will not transfer to other data") == 1  # random weights: one warning line
    assert "model.encoder.weights" in out


def test_cache_saving_is_timed_without_changing_the_run(baseline, organs, tmp_path, capsys):
    """The uncached-path timing before epoch 2 runs the real step but updates nothing."""
    # baseline timed 2 batches (its whole epoch); this run times none
    untimed = run_training(
        tiny_config(organs, tmp_path, "train.epochs=3", "train.cache_timing_batches=0"),
        progress=False,
    )
    assert rows(untimed) == rows(baseline)
    assert_same_weights(weights(untimed), weights(baseline))
    timings = load_checkpoint(baseline / "checkpoints" / "last.pt")["training"]["timings"]
    assert timings["recomputed_batches"] == 2 and timings["cached_epochs"] == 2
    assert timings["recomputed_epoch_s"] > 0 and timings["cached_epochs_s"] > 0
    assert (
        "recomputed_epoch_s"
        not in load_checkpoint(untimed / "checkpoints" / "last.pt")["training"]["timings"]
    )


def test_cache_timing_leaves_batchnorm_statistics_alone(glioma, tmp_path):
    """The grading head's BatchNorm updates running statistics in train mode; the probe
    must put them back, or validation after it would differ from an unprobed run."""
    extra = ("train.epochs=3", "train.val_every=1")
    timed = run_training(
        tiny_config(glioma, tmp_path / "timed", *extra, task="classification"), progress=False
    )
    untimed = run_training(
        tiny_config(
            glioma, tmp_path / "untimed", *extra, "train.cache_timing_batches=0",
            task="classification",
        ),
        progress=False,
    )  # fmt: skip
    assert any("running_mean" in key for key in weights(timed))
    assert (
        "recomputed_epoch_s"
        in load_checkpoint(timed / "checkpoints" / "last.pt")["training"]["timings"]
    )
    assert rows(untimed) == rows(timed)
    assert_same_weights(weights(untimed), weights(timed))


@pytest.mark.parametrize("cached", [True, False])
def test_grading_trains_on_a_cohort_with_missing_modalities(glioma, tmp_path, cached):
    """UCSF-PDGM and BraTS cohorts lack a modality here and there: such cases train and
    validate (zero-filled, masked out of the head) with and without the feature cache."""
    manifest = json.loads(glioma.read_text())
    for i, case in enumerate(manifest["cases"]):
        case["images"] = {m: str(glioma.parent / p) for m, p in case["images"].items()}
        case["label"] = str(glioma.parent / case["label"])
        case["mask"] = str(glioma.parent / case["mask"])
        del case["images"][manifest["modalities"][i % 4]]  # each case lacks one modality
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    config = tiny_config(
        path, tmp_path, f"data.cache_features={str(cached).lower()}", task="classification"
    )
    run_dir = run_training(config, progress=False)
    history = rows(run_dir)
    assert len(history) == 2
    for row in history:
        assert all(v == v for k, v in row.items() if k in ("train_loss", "val_loss", "accuracy"))
    assert history[-1]["val_cases"] == 2
    norm = {k: v for k, v in weights(run_dir).items() if k.endswith("norm.running_var")}
    assert norm and all(torch.isfinite(v).all() for v in norm.values())
    if cached:  # the stored presence says which modality each case lacks
        entries = [torch.load(p, weights_only=True) for p in (run_dir / "cache").glob("*.pt")]
        assert len(entries) == 6 and all(int(e["presence"].sum()) == 3 for e in entries)


def test_encoder_off_pyramid_trains_with_its_encoder_rows_augmentation(
    organs, tmp_path, monkeypatch
):
    """``model.encoder.name=none`` with the pyramid head trains on CPU, on the image alone,
    with exactly the augmentation the cached encoder row gets (no spatial warps)."""
    from volseg.engine import sources

    seen = []
    original = sources.build_transforms

    def spy(data_cfg, *, train, for_cached_features=False, **kw):
        if train:
            seen.append(for_cached_features)
        return original(data_cfg, train=train, for_cached_features=for_cached_features, **kw)

    monkeypatch.setattr(sources, "build_transforms", spy)
    run = run_training(tiny_config(organs, tmp_path, "model.encoder.name=none"), progress=False)
    assert seen == [True]
    state = weights(run, "best.pt")
    assert not any(key.startswith("head.project.") for key in state)
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][0]
    assert first["train_loss"] > 0 and torch.isfinite(torch.tensor(first["train_loss"]))


def test_the_size_baseline_trains_and_grades_without_an_encoder(glioma, tmp_path, capsys):
    """The no-encoder grading row: the tumour's volume alone, trained through the same engine."""
    config = tiny_config(
        glioma,
        tmp_path,
        "model.encoder.name=none",
        "model.head.name=size",
        "data.spacing=[1.0,1.0,2.0]",
        "train.epochs=3",
        task="classification",
    )
    run_dir = run_training(config, progress=False)
    last = rows(run_dir)[-1]
    assert 0 <= last["auc"] <= 1 and last["temperature"] > 0
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    head = {k: v for k, v in checkpoint["model"].items() if k.startswith("head.")}
    moments = {"head.volume.mean", "head.volume.seen"}
    assert set(head) >= {"head.classify.weight", "head.classify.bias", *moments}
    assert float(head["head.volume.seen"]) == 3 * 4  # every training case of every epoch, once
    assert float(head["head.volume.mean"]) > 0  # the mean log volume of the training tumours
    assert "will not transfer" not in capsys.readouterr().err  # no encoder, no weights warning


def test_a_mil_run_with_lesion_volume_learns_the_training_volumes(glioma, tmp_path):
    """The volume term trains through the cached engine (frozen encoder): its running moments
    see every training case of every epoch, and the checkpoint keeps them."""
    config = tiny_config(
        glioma, tmp_path, "data.spacing=[1.0,1.0,2.0]", "model.head.lesion_volume=true",
        task="classification",
    )  # fmt: skip
    run_dir = run_training(config, progress=False)
    model = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert float(model["head.volume.seen"]) == 2 * 4 and float(model["head.volume.mean"]) > 0
    assert model["head.volume_logits.weight"].shape == (2, 1)


def test_the_size_baseline_refuses_a_case_without_a_mask_at_planning(glioma, tmp_path):
    """A cohort whose cases lack the tumour mask fails in one line naming the case and the key,
    before any run folder is made, not at the size head's first training step."""
    from volseg.engine.plan import make_plan

    manifest = json.loads(glioma.read_text())
    for case in manifest["cases"]:
        case["images"] = {m: str(glioma.parent / p) for m, p in case["images"].items()}
        case["label"] = str(glioma.parent / case["label"])
        case["mask"] = str(glioma.parent / case["mask"])
    first = manifest["cases"][0]
    del first["mask"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    overrides = ("model.encoder.name=none", "data.spacing=[1.0,1.0,2.0]")
    config = tiny_config(path, tmp_path, *overrides, "model.head.name=size", task="classification")
    with pytest.raises(VolsegError, match=rf"case '{first['id']}' has no 'mask'"):
        make_plan(config)
    volume = tiny_config(
        path, tmp_path, "data.spacing=[1.0,1.0,2.0]", "model.head.lesion_volume=true",
        task="classification",
    )  # fmt: skip
    with pytest.raises(VolsegError, match=r"has no 'mask'.*lesion_volume=true grades"):
        make_plan(volume)
    make_plan(tiny_config(path, tmp_path, *overrides, task="classification"))  # mil: masks optional
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no run folder
