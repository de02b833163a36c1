"""SliceEncoder: shapes per slice axis, chunking, padding, channels, modalities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from volseg.errors import VolsegError
from volseg.models import SliceEncoder

TINY = "vit_test_patch14_dinov2"


@pytest.fixture(scope="module")
def encoder() -> SliceEncoder:
    torch.manual_seed(0)
    return SliceEncoder(TINY).eval()


def reference(encoder: SliceEncoder, image: torch.Tensor) -> torch.Tensor:
    """Patch features of ``(N, 1, H, W)`` images in [0, 1], computed by hand with timm."""
    rgb = (image.expand(-1, 3, -1, -1) - encoder.mean) / encoder.std
    rgb = F.pad(rgb, (0, -rgb.shape[-1] % 14, 0, -rgb.shape[-2] % 14))
    tokens = encoder.vit.forward_features(rgb)[:, encoder.vit.num_prefix_tokens :]
    h, w = rgb.shape[-2] // 14, rgb.shape[-1] // 14
    return tokens.reshape(len(image), h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("shape", "axis", "expected"),
    [
        ((1, 1, 30, 17, 5), "axial", (1, 48, 3, 2, 5)),
        ((1, 1, 30, 17, 5), "coronal", (1, 48, 3, 17, 1)),
        ((1, 1, 30, 17, 5), "sagittal", (1, 48, 30, 2, 1)),
        ((2, 1, 15, 29, 3), "axial", (2, 48, 2, 3, 3)),
        ((2, 1, 15, 29, 3), "coronal", (2, 48, 2, 29, 1)),
        ((2, 1, 15, 29, 3), "sagittal", (2, 48, 15, 3, 1)),
    ],
)
def test_output_shape_per_slice_axis(shape, axis, expected) -> None:
    torch.manual_seed(0)
    enc = SliceEncoder(TINY, slice_axis=axis).eval()
    out = enc(torch.rand(shape))
    assert out.shape == expected
    assert (enc.out_channels, *out.shape[2:]) == enc.feature_shape(shape[2:])
    assert enc.embed_dim == 48 and enc.patch_size == 14 and enc.slice_axis == axis


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_slices_land_in_place(encoder: SliceEncoder, axis: str) -> None:
    """Each output slice is the encoding of the matching input slice, axes kept as (X, Y, Z)."""
    torch.manual_seed(1)
    x = torch.rand(2, 1, 16, 20, 18)
    encoder.slice_axis = axis
    try:
        out = encoder(x)
    finally:
        encoder.slice_axis = "axial"
    dim = {"sagittal": 2, "coronal": 3, "axial": 4}[axis]
    image = x[1].select(dim - 1, 7)  # (1, H, W), in-plane axes in (X, Y, Z) order
    expected = reference(encoder, image[None])[0]
    torch.testing.assert_close(out[1].select(dim - 1, 7), expected, atol=1e-5, rtol=1e-5)


def test_chunk_size_does_not_change_output() -> None:
    torch.manual_seed(0)
    enc = SliceEncoder(TINY).eval()
    x = torch.rand(2, 1, 15, 29, 3)
    outs = []
    for chunk in (1, 2, 100):
        enc.chunk = chunk
        outs.append(enc(x))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=1e-5)


def test_padding_is_zero_after_normalisation(encoder: SliceEncoder) -> None:
    torch.manual_seed(2)
    exact = torch.rand(1, 1, 28, 28, 1)  # no padding needed
    torch.testing.assert_close(encoder(exact)[..., 0], reference(encoder, exact[..., 0]))
    odd = torch.rand(1, 1, 27, 22, 1)  # padded to 28 x 28 with the normalised value 0
    padded = (odd[..., 0].expand(-1, 3, -1, -1) - encoder.mean) / encoder.std
    padded = F.pad(padded, (0, 6, 0, 1))
    tokens = encoder.vit.forward_features(padded)[:, 1:]
    expected = tokens.reshape(1, 2, 2, 48).permute(0, 3, 1, 2)
    torch.testing.assert_close(encoder(odd)[..., 0], expected, atol=1e-5, rtol=1e-5)


def test_multimodal_subset_uses_the_shared_encoder(encoder: SliceEncoder) -> None:
    torch.manual_seed(3)
    t1, flair = torch.rand(1, 1, 20, 16, 2), torch.rand(1, 1, 20, 16, 2)
    out = encoder.encode_modalities({"t1": t1, "flair": flair})
    assert list(out) == ["t1", "flair"]
    torch.testing.assert_close(out["flair"], encoder(flair))
    assert list(encoder.encode_modalities({"t1": t1})) == ["t1"]


def test_learned_adapter_starts_as_repeat() -> None:
    torch.manual_seed(0)
    repeat = SliceEncoder(TINY).eval()
    learned = SliceEncoder(TINY, channel_adapter="learned").eval()
    learned.vit.load_state_dict(repeat.vit.state_dict())
    x = torch.rand(1, 1, 20, 16, 2)
    torch.testing.assert_close(learned(x), repeat(x))
    assert learned.adapter is not None and learned.adapter.weight.requires_grad


def test_learned_adapter_takes_several_channels() -> None:
    enc = SliceEncoder(TINY, in_channels=2, channel_adapter="learned").eval()
    assert enc(torch.rand(1, 2, 14, 14, 2)).shape == (1, 48, 1, 1, 2)
    with pytest.raises(VolsegError, match="in_channels=1"):
        enc.encode_modalities({"t1": torch.rand(1, 1, 14, 14, 2)})


def test_repeat_refuses_several_channels() -> None:
    with pytest.raises(VolsegError, match="learned"):
        SliceEncoder(TINY, in_channels=2)


def test_wrong_input_channels_or_rank(encoder: SliceEncoder) -> None:
    with pytest.raises(VolsegError, match=r"\(B, 1, X, Y, Z\)"):
        encoder(torch.rand(1, 2, 14, 14, 2))
    with pytest.raises(VolsegError):
        encoder(torch.rand(1, 14, 14, 2))


def test_layer_fusion_mean_and_concat() -> None:
    torch.manual_seed(0)
    mean = SliceEncoder(TINY, layers=[0, -1]).eval()
    concat = SliceEncoder(TINY, layers=[-1, 0], fusion="concat").eval()
    concat.vit.load_state_dict(mean.vit.state_dict())
    assert mean.layers == concat.layers == (0, 2)
    x = torch.rand(1, 1, 20, 16, 2)
    out = mean(x)
    assert out.shape == (1, 48, 2, 2, 2)
    torch.testing.assert_close(concat(x), out, atol=1e-5, rtol=1e-5)  # projection starts as mean
    assert concat.fuse is not None and mean.fuse is None


def test_registers_variant_drops_register_tokens() -> None:
    enc = SliceEncoder("vit_test_patch14_reg4_dinov2").eval()
    assert enc.vit.num_prefix_tokens == 5
    assert enc(torch.rand(1, 1, 20, 30, 2)).shape == (1, 48, 2, 3, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"slice_axis": "oblique"}, "slice_axis"),
        ({"layers": [3]}, "layers"),
        ({"chunk": 0}, "chunk"),
        ({"channel_adapter": "rgb"}, "channel_adapter"),
    ],
)
def test_bad_options(kwargs, match) -> None:
    with pytest.raises(VolsegError, match=match):
        SliceEncoder(TINY, **kwargs)


def test_unknown_model_name() -> None:
    with pytest.raises(VolsegError, match="vit_tiny_dinov9"):
        SliceEncoder("vit_tiny_dinov9")


def test_real_vit_small_architecture_runs_on_cpu() -> None:
    torch.manual_seed(0)
    enc = SliceEncoder("vit_small_patch14_dinov2", chunk=8).eval()
    assert enc.vit.patch_embed.img_size == (518, 518)  # checkpoint pos_embed grid kept
    with torch.no_grad():
        out = enc(torch.rand(1, 1, 224, 224, 8))
    assert out.shape == (1, 384, 16, 16, 8)
    assert torch.isfinite(out).all()
