"""Encoder throughput: ``chunk: auto`` sizing, the fused attention path, ``--compile``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from volseg.cli.main import main
from volseg.config import Config, from_dict, load_config, validate_config
from volseg.config.schema import EncoderConfig
from volseg.errors import VolsegError
from volseg.inference import InferenceOptions
from volseg.models import SliceEncoder, apply_adaptation, merge_lora
from volseg.models import throughput as tp

TINY = "vit_test_patch14_dinov2"
GIB = 1024**3
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
VIT_S_224 = dict(tokens=257, embed_dim=384, mlp_ratio=4.0, dtype_bytes=2, pixels=224 * 224)


@pytest.fixture(scope="module")
def encoder() -> SliceEncoder:
    torch.manual_seed(0)
    return SliceEncoder(TINY).eval()


# ----------------------------------------------------------------------------- pure sizing


def test_slice_bytes_grows_with_every_dimension() -> None:
    base = tp.slice_bytes(**VIT_S_224)
    assert 4e6 < base < 2e7  # ViT-S/14 at 224 px in bf16: a few MB per slice, not a few KB
    for key, value in [("tokens", 1370), ("embed_dim", 768), ("mlp_ratio", 5.3), ("layers", 4)]:
        assert tp.slice_bytes(**{**VIT_S_224, key: value}) > base, key
    assert tp.slice_bytes(**{**VIT_S_224, "dtype_bytes": 4}) > base  # fp32: no autocast
    # without fused attention the (heads, T, T) scores and probabilities count too
    unfused = tp.slice_bytes(**VIT_S_224, heads=6, fused=False)
    assert unfused - base == 6 * 257 * 257 * (2 * 2 + 4)


def test_auto_chunk_divides_the_safe_share_of_free_memory() -> None:
    per_slice = tp.slice_bytes(**VIT_S_224)
    kept = 256 * 384 * 4  # one fp32 feature map per slice stays until the end
    free = (per_slice * 40 + kept * 100) / tp.SAFETY + 1
    chunk = tp.auto_chunk(int(free), n_slices=100, patch_tokens=256, **VIT_S_224)
    assert chunk == 40
    # the features of more slices leave less room for the chunk
    assert tp.auto_chunk(int(free), n_slices=300, patch_tokens=256, **VIT_S_224) < 40


@pytest.mark.parametrize(
    ("free", "n_slices", "expected"),
    [
        (0, 100, 1),  # nothing free: still one slice per call
        (140 * GIB, 100, 100),  # never more than the slices there are
        (140 * GIB, 5000, tp.MAX_AUTO_CHUNK),  # an H200: capped
        (2 * GIB, 5000, 1),  # the features alone fill the budget
    ],
)
def test_auto_chunk_is_clamped(free, n_slices, expected) -> None:
    assert tp.auto_chunk(free, n_slices=n_slices, **VIT_S_224) == expected


def test_auto_chunk_keeps_every_tensor_below_int32_indexing() -> None:
    dims = dict(tokens=37 * 37 + 1, embed_dim=1536, mlp_ratio=2 * 4096 / 1536, dtype_bytes=2)
    chunk = tp.auto_chunk(10**15, n_slices=10_000, **dims)  # ViT-g at 518 px, endless memory
    widest = dims["tokens"] * 2 * 4096
    assert chunk * widest <= 2**31 - 1 < (chunk + 1) * widest


def test_encoder_chunk_reads_the_dimensions_from_the_model() -> None:
    enc = SliceEncoder("vit_test_patch14_reg4_dinov2", input_size=224)
    got = tp.encoder_chunk(enc, 300, (512, 384), 3 * GIB, 2)
    expected = tp.auto_chunk(  # 512 x 384 -> 224 x 168 px -> 16 x 12 tokens (+ 5 prefix)
        3 * GIB,
        n_slices=300,
        tokens=16 * 12 + 5,
        patch_tokens=16 * 12,
        embed_dim=48,
        mlp_ratio=4.0,
        dtype_bytes=2,
        out_channels=48,
        pixels=224 * 168,
        heads=2,
    )
    assert got == expected


def test_giant_counts_both_halves_of_its_packed_swiglu() -> None:
    with torch.device("meta"):
        giant = SliceEncoder("vit_giant_patch14_dinov2", input_size=None)
    mlp = giant.vit.blocks[0].mlp
    assert tp._mlp_hidden(giant.vit.blocks[0], 1536) == mlp.fc1.out_features
    big, small = (tp.encoder_chunk(giant, 200, (518, 518), 20 * GIB, b) for b in (2, 4))
    assert 1 <= small < big < 200  # ViT-g at 518 px does not fit 200 slices in 20 GB


# ----------------------------------------------------------------------------- the rule


class _CudaSlices:
    """What :func:`~volseg.models.throughput.chunk_size` reads of a CUDA slice batch."""

    device = torch.device("cuda")
    dtype = torch.float32

    def __init__(self, n: int, h: int, w: int) -> None:
        self.shape = (n, 1, h, w)

    def __len__(self) -> int:
        return self.shape[0]


def test_auto_sizes_from_free_memory_on_cuda_without_gradient(encoder, monkeypatch) -> None:
    monkeypatch.setattr(tp, "free_memory", lambda device: 6 * GIB)
    encoder.chunk = "auto"
    slices = _CudaSlices(700, 512, 512)
    sized = tp.chunk_size(encoder, slices, tracked=False)
    assert sized == tp.encoder_chunk(encoder, 700, (512, 512), 6 * GIB, 4)  # no autocast: fp32
    assert tp.DEFAULT_CHUNK < sized <= tp.MAX_AUTO_CHUNK
    assert tp.chunk_size(encoder, slices, tracked=True) == tp.DEFAULT_CHUNK  # LoRA/full training
    encoder.chunk = 7
    assert tp.chunk_size(encoder, slices, tracked=False) == 7  # an int always wins
    encoder.chunk = "auto"


def test_auto_is_32_on_cpu_and_the_forward_records_it(encoder) -> None:
    assert SliceEncoder.__init__.__kwdefaults__["chunk"] == "auto"
    encoder.chunk = "auto"
    x = torch.rand(1, 1, 20, 30, 40)
    with torch.no_grad():
        out = encoder(x)
    assert encoder.resolved_chunk == tp.DEFAULT_CHUNK
    encoder.chunk = 3
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), out, atol=1e-6, rtol=1e-5)
    assert encoder.resolved_chunk == 3
    encoder.chunk = "auto"


@pytest.mark.parametrize("bad", [0, -2, "foo", 2.5, True, None])
def test_encoder_refuses_a_bad_chunk(encoder, bad) -> None:
    with pytest.raises(VolsegError, match="chunk must be an int >= 1 or 'auto'"):
        encoder.chunk = bad
    assert encoder.chunk == "auto"


# ----------------------------------------------------------------------------- config


def test_config_takes_auto_or_a_positive_int() -> None:
    assert EncoderConfig().chunk == "auto"
    assert load_config(Config, overrides=["model.encoder.chunk=auto"]).model.encoder.chunk == "auto"
    assert load_config(Config, overrides=["model.encoder.chunk=64"]).model.encoder.chunk == 64
    old = from_dict(Config, {"model": {"encoder": {"chunk": 32}}}, source="old checkpoint")
    assert old.model.encoder.chunk == 32  # checkpoints written before auto still load
    for override in ("model.encoder.chunk=foo", "model.encoder.chunk=0", "model.encoder.chunk=1.5"):
        with pytest.raises(VolsegError, match="'model.encoder.chunk'") as error:
            load_config(Config, overrides=[override])
        assert "\n" not in str(error.value)
    cfg = Config()
    cfg.model.encoder.chunk = "fast"  # set directly, past the loader's type check
    with pytest.raises(VolsegError) as error:
        validate_config(cfg)
    assert str(error.value).startswith(
        "config key 'model.encoder.chunk' is 'fast' but must be auto or an int >= 1;"
    )


def test_shipped_configs_setting_chunk_still_validate() -> None:
    setting = [p for p in sorted(CONFIGS.glob("*.yaml")) if "chunk:" in p.read_text()]
    assert setting, "no shipped config sets chunk any more: drop this test"
    for path in setting:
        chunk = load_config(Config, path).model.encoder.chunk
        assert chunk == "auto" or chunk >= 1, path


def test_built_encoder_takes_the_config_chunk() -> None:
    from volseg.models.registry import ENCODERS

    cfg = dataclasses.replace(EncoderConfig(name=TINY), chunk=16)
    assert ENCODERS.build(TINY, cfg=cfg).chunk == 16
    assert ENCODERS.build(TINY, cfg=EncoderConfig(name=TINY)).chunk == "auto"


# ----------------------------------------------------------------------------- predict options


def test_inference_options_take_a_typed_chunk() -> None:
    assert InferenceOptions(chunk="auto").chunk == "auto"
    assert InferenceOptions(chunk="64").chunk == 64
    assert InferenceOptions(chunk=8).chunk == 8
    assert InferenceOptions().compile is False and InferenceOptions(compile=True).compile
    with pytest.raises(VolsegError) as error:
        InferenceOptions(chunk="foo")
    assert str(error.value) == (
        "--chunk 'foo' is neither a number of slices nor auto; use e.g. --chunk 64 or --chunk auto"
    )
    with pytest.raises(VolsegError, match="^--chunk must be >= 1, got 0$"):
        InferenceOptions(chunk="0")


def test_predict_help_and_a_bad_chunk(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps help to the terminal width
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    lines = capsys.readouterr().out.splitlines()
    for flag in ("--chunk N|auto", "--compile"):
        line = next(line for line in lines if line.strip().startswith(flag))
        assert len(line.strip()) > len(flag) + 10, line  # the help sits on the flag's line
        following = lines[lines.index(line) + 1].strip()
        assert following == "" or following.startswith("-"), "help wraps: " + following
    status = main(["predict", "--model", "m", "-i", "in", "-o", "out", "--chunk", "foo"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: --chunk 'foo' ")


# ----------------------------------------------------------------------------- fused attention


def test_fused_attention_is_used_and_survives_lora(monkeypatch) -> None:
    torch.manual_seed(0)
    enc = SliceEncoder(TINY)
    assert tp.fused_attention(enc.vit)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    apply_adaptation(enc, "lora", lora_rank=2)
    assert tp.fused_attention(enc.vit)
    enc(torch.rand(1, 1, 28, 28, 2)).sum().backward()  # LoRA training runs it too
    assert len(calls) == len(enc.vit.blocks)  # one chunk, every block through SDPA
    merge_lora(enc)
    assert tp.fused_attention(enc.vit)
    enc.vit.blocks[1].attn.fused_attn = False
    assert not tp.fused_attention(enc.vit)
    assert not tp.fused_attention(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- compile


@pytest.fixture
def fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_pair(backend) -> tuple[SliceEncoder, SliceEncoder]:
    torch.manual_seed(0)
    eager = SliceEncoder(TINY, input_size=None).eval()
    compiled = SliceEncoder(TINY, input_size=None).eval()
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())
    tp.compile_encoder(compiled, backend=backend)
    assert compiled.compiled and list(compiled.state_dict()) == keys  # checkpoints unchanged
    return eager, compiled


def test_one_compile_serves_every_chunk_and_slice_size(fresh_dynamo) -> None:
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager, compiled = _compiled_pair(counting)
    cases = [((1, 1, 28, 42, 7), 3), ((1, 1, 70, 28, 5), 2), ((1, 1, 28, 28, 4), 3)]
    with torch.no_grad():  # last chunks of 1, 1 and 1 slice; three slice sizes
        for shape, chunk in cases:
            x = torch.rand(shape)
            compiled.chunk = chunk
            torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)
    assert len(graphs) == 1


def test_inductor_features_match_eager(fresh_dynamo) -> None:
    problem = tp._compile_problem(torch.device("cpu"))
    if problem:
        pytest.skip(problem)
    eager, compiled = _compiled_pair("inductor")
    x = torch.rand(1, 1, 28, 42, 5)
    compiled.chunk = 2
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-4, rtol=1e-4)


def test_compile_errors_are_one_line_naming_the_flag(fresh_dynamo, monkeypatch) -> None:
    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here\nsecond line")

    _, compiled = _compiled_pair(broken)
    with pytest.raises(VolsegError) as error, torch.no_grad():
        compiled(torch.rand(1, 1, 28, 28, 2))
    message = str(error.value)
    assert "--compile" in message and "\n" not in message
    assert "(RuntimeError: no compiler here)" in message

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(VolsegError) as error:
        tp.compile_encoder(SliceEncoder(TINY))
    assert str(error.value).startswith("--compile: torch.compile is not supported")
    assert "\n" not in str(error.value)


def test_compile_leaves_an_encoder_without_vit_alone() -> None:
    module = torch.nn.Identity()
    tp.compile_encoder(module)
    assert not hasattr(module, "compiled")
