"""CNN slice encoders: level/grid contract, locality, local weights, frozen feature cache."""

from __future__ import annotations

import pytest
import torch

from tests.engine.conftest import organs  # noqa: F401  (the phantom fixture)
from volseg.config.schema import EncoderConfig
from volseg.errors import VolsegError
from volseg.models.cnn_encoder import CnnSliceEncoder, build_encoder
from volseg.models.encoder import SliceEncoder


@pytest.mark.parametrize(
    ("name", "layers", "patch", "channels"),
    [
        ("resnet10t", None, 16, 256 + 512),
        ("resnet18", (1, 2), 4, 64 + 128),
        ("densenet121", (-1,), 32, 1024),
        ("vgg11", (2, 4), 4, 256 + 512),
    ],
)
def test_levels_land_on_the_finest_stride_grid(name, layers, patch, channels) -> None:
    torch.manual_seed(0)
    enc = CnnSliceEncoder(name, layers=layers).eval()
    x = torch.rand(1, 1, 40, 23, 2)  # not multiples of any stride: padded, then cropped
    with torch.no_grad():
        out = enc(x)
    assert enc.patch_size == patch and enc.out_channels == channels
    assert out.shape == (1, channels, -(-40 // patch), -(-23 // patch), 2)
    assert (enc.out_channels, *out.shape[2:]) == enc.feature_shape((40, 23, 2))


def test_features_land_on_the_voxels_they_saw() -> None:
    """Perturbing a corner of one slice changes only that slice, and only nearby cells."""
    torch.manual_seed(0)
    enc = CnnSliceEncoder("resnet18", layers=(1,)).eval()  # stride 4, receptive field < 50 px
    x = torch.rand(1, 1, 128, 128, 3)
    y = x.clone()
    y[0, 0, :8, :8, 1] += 0.5
    with torch.no_grad():
        change = (enc(y) - enc(x)).abs().amax(dim=1)[0]  # (32, 32, 3)
    assert change[..., 0].max() == 0 and change[..., 2].max() == 0
    assert change[:2, :2, 1].min() > 0
    assert change[16:, :, 1].max() == 0 and change[:, 16:, 1].max() == 0
    assert change[..., 1].max() == change[:4, :4, 1].max()  # the largest change is local


def test_grey_slices_map_to_rgb_like_the_vit() -> None:
    torch.manual_seed(0)
    repeat = CnnSliceEncoder("resnet10t", layers=(1,)).eval()
    learned = CnnSliceEncoder("resnet10t", layers=(1,), channel_adapter="learned").eval()
    learned.vit.load_state_dict(repeat.vit.state_dict())
    x = torch.rand(1, 1, 32, 32, 2)
    with torch.no_grad():
        torch.testing.assert_close(learned(x), repeat(x))
    with pytest.raises(VolsegError, match="channel_adapter 'repeat'"):
        CnnSliceEncoder("resnet10t", in_channels=3)


def test_weights_load_from_a_state_dict_and_a_wrong_file_is_one_line(tmp_path) -> None:
    torch.manual_seed(1)
    source = CnnSliceEncoder("resnet10t", layers=(1, 2))
    path = tmp_path / "resnet10t.pth"
    full = dict(source.vit.state_dict(), **{"fc.weight": torch.zeros(3, 512)})  # a classifier
    torch.save(full, path)
    torch.manual_seed(2)
    loaded = CnnSliceEncoder("resnet10t", layers=(1, 2), weights=path)
    for key, value in source.vit.state_dict().items():
        assert torch.equal(loaded.vit.state_dict()[key], value), key
    wrong = tmp_path / "resnet18.pth"
    torch.save(CnnSliceEncoder("resnet18").vit.state_dict(), wrong)
    with pytest.raises(VolsegError) as err:
        CnnSliceEncoder("resnet10t", weights=wrong)
    assert str(wrong) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(VolsegError, match="no such file"):
        CnnSliceEncoder("resnet10t", weights=tmp_path / "absent.pth")


def test_generic_path_builds_cnns_and_timm_vits() -> None:
    with torch.device("meta"):
        cnn = build_encoder(EncoderConfig(name="resnet18"))
        vit = build_encoder(EncoderConfig(name="vit_tiny_patch16_224"))
    assert isinstance(cnn, CnnSliceEncoder) and cnn.patch_size == 16
    assert type(vit) is SliceEncoder and vit.patch_size == 16
    with pytest.raises(VolsegError, match="unknown encoder .resnet_nonexistent."):
        build_encoder(EncoderConfig(name="resnet_nonexistent"))


def test_frozen_cnn_features_are_cached(organs, tmp_path) -> None:  # noqa: F811
    from tests.engine.conftest import tiny_config
    from volseg.engine.plan import make_plan
    from volseg.engine.state import build_session
    from volseg.runtime import DistContext

    plan = make_plan(tiny_config(organs, tmp_path, "model.encoder.name=resnet10t"))
    session = build_session(plan, DistContext())
    assert session.cached is True
    assert isinstance(session.model.encoder, CnnSliceEncoder)


def test_vit_only_adaptation_modes_are_refused_for_a_cnn() -> None:
    from volseg.models.adapt import apply_adaptation

    enc = CnnSliceEncoder("resnet10t")
    with pytest.raises(VolsegError, match="needs ViT blocks"):
        apply_adaptation(enc, "lora")
    apply_adaptation(enc, "frozen")
    assert enc.cacheable and not enc.vit.training
