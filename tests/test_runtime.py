"""Device and mixed precision: one behaviour for training, its validation and prediction."""

from __future__ import annotations

import os

import pytest
import torch

from tests.conftest import GEOMETRIES
from tests.engine.conftest import SHAPE, tiny_config
from tests.inference.conftest import body_ct, write_segmentation_checkpoint
from volseg.engine.plan import make_plan
from volseg.engine.state import build_session
from volseg.errors import VolsegError
from volseg.inference import InferenceOptions, Predictor, predict_volume
from volseg.inference.window import sliding_window_logits
from volseg.runtime import DistContext, init_distributed, resolve_precision
from volseg.synth import synthesize_organs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def organs(tmp_path_factory):
    return synthesize_organs(tmp_path_factory.mktemp("organs"), cases=6, shape=SHAPE, seed=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_segmentation_checkpoint(tmp_path_factory.mktemp("run") / "best.pt")


def autocast_seen(model: torch.nn.Module) -> list[torch.dtype | None]:
    """Record the autocast dtype (None: off) each encoder forward runs under."""
    seen: list[torch.dtype | None] = []

    def hook(_module, _args):
        on = torch.is_autocast_enabled("cpu")
        seen.append(torch.get_autocast_dtype("cpu") if on else None)

    model.encoder.register_forward_pre_hook(hook)
    return seen


@pytest.mark.parametrize(
    ("device", "amp", "dtype"),
    [
        ("cpu", "auto", None),
        ("cpu", "bf16", torch.bfloat16),
        ("cpu", "off", None),
        ("cuda", "bf16", torch.bfloat16),
        ("cuda", "fp16", torch.float16),
        ("cuda", "off", None),
    ],
)
def test_precision_table(device, amp, dtype):
    precision = resolve_precision(amp, device)
    assert precision.dtype is dtype and precision.device_type == device
    if device == "cpu":  # a CUDA scaler disables itself (with a warning) without a GPU
        assert not precision.scaler().is_enabled()


def test_unknown_and_cpu_fp16_settings_are_one_line_errors():
    with pytest.raises(VolsegError, match=r"^--amp is 'half', not one of auto, bf16, fp16, off$"):
        resolve_precision("half", CPU, option="--amp")
    with pytest.raises(VolsegError, match=r"^config key 'train.amp' is 'fp16' but there is no GPU"):
        resolve_precision("fp16", CPU)


def test_bf16_on_cpu_runs_in_bf16_in_training_validation_and_prediction(
    organs, tmp_path, checkpoint
):
    plan = make_plan(tiny_config(organs, tmp_path, "train.amp=bf16"))
    session = build_session(plan, DistContext())
    assert session.precision.dtype is torch.bfloat16  # the training forward
    seen = autocast_seen(session.model)
    image = torch.rand(1, 1, *SHAPE)
    sliding_window_logits(  # what validation runs, with train.amp
        session.model.eval(), image, roi_slices=4, overlap=0.25, sw_batch_size=1,
        amp=plan.config.train.amp,
    )  # fmt: skip
    predictor = Predictor.from_checkpoint(checkpoint, InferenceOptions(amp="bf16", device="cpu"))
    assert predictor.precision.dtype is torch.bfloat16
    seen_predicting = autocast_seen(predictor.model)
    predict_volume(predictor, body_ct(GEOMETRIES["oblique"]))
    assert seen and set(seen) == {torch.bfloat16}
    assert seen_predicting and set(seen_predicting) == {torch.bfloat16}


def test_fp16_on_cpu_is_refused_by_training_and_prediction_alike(organs, tmp_path, checkpoint):
    plan = make_plan(tiny_config(organs, tmp_path, "train.amp=fp16"))
    with pytest.raises(VolsegError, match="train.amp=bf16 or off"):
        build_session(plan, DistContext())
    with pytest.raises(VolsegError, match="--amp bf16 or --amp off"):
        Predictor.from_checkpoint(checkpoint, InferenceOptions(amp="fp16", device="cpu"))


def test_one_process_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed()
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)


@pytest.mark.parametrize("native", [True, False])
def test_auto_runs_bf16_only_for_prediction_on_cpus_with_native_bf16(native, monkeypatch):
    import volseg.runtime as runtime

    monkeypatch.setattr(runtime, "_CPU_BF16", native)
    predicting = resolve_precision("auto", "cpu", option="--amp", cpu_auto_bf16=True)
    assert predicting.name == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cpu").name == "fp32"  # training: always fp32 on CPU
    assert resolve_precision("off", "cpu", cpu_auto_bf16=True).name == "fp32"
    from tests.inference.conftest import segmentation_model

    cfg, model = segmentation_model()
    predictor = Predictor(model, cfg, modalities=["CT"], options=InferenceOptions(device="cpu"))
    assert predictor.precision.name == ("bf16" if native else "fp32")


def test_cpu_bf16_detection_reads_the_cpu_flags(monkeypatch):
    import volseg.runtime as runtime

    monkeypatch.setattr(runtime, "_CPU_BF16", None)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    has = "avx512_bf16" in flags or "amx_bf16" in flags
    assert runtime.cpu_computes_bf16() is (has and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_a_resolved_precision_is_passed_through():
    resolved = resolve_precision("bf16", "cpu")
    assert resolve_precision(resolved, "cpu", option="--amp") is resolved
