"""Probe features: the ViT's own patch features, CLS tokens pooled over the masked slices."""

from __future__ import annotations

import torch

from volseg.config import Config, load_config
from volseg.probe.features import _case_entry, probe_encoder, slice_tokens


def _config(tmp_path) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  task: classification\n  encoder:\n    input_size: native\n")
    return load_config(Config, path, ["model.encoder.name=vit_test_patch14_dinov2"])


def test_patch_tokens_are_the_slice_encoders_features(tmp_path):
    encoder, blocks = probe_encoder(_config(tmp_path))
    assert blocks == (0, 1, 2)  # a 3-block ViT: "last 4" is all of them
    volume = torch.rand(1, 1, 20, 30, 3)
    cls, patches = slice_tokens(encoder, volume, blocks)
    assert cls.shape == (3, 3, encoder.embed_dim) and patches.shape[:2] == (3, encoder.embed_dim)
    encoder.layers = blocks
    encoder.stack = True
    with torch.no_grad():
        reference = encoder(volume)[0]  # (3 E, x, y, z), block by block
    torch.testing.assert_close(patches.flatten(0, 1), reference, rtol=1e-5, atol=1e-5)


def test_grading_rows_pool_the_slices_the_mask_touches(tmp_path):
    encoder, blocks = probe_encoder(_config(tmp_path))
    image = torch.rand(2, 28, 28, 4)  # two modalities, four slices
    mask = torch.zeros(1, 28, 28, 4)
    mask[0, :14, :14, 2] = 1  # one patch of slice 2
    sample = {"image": image, "mask": mask, "presence": torch.tensor([1.0, 0.0]), "target": 1}
    entry = _case_entry(encoder, blocks, sample, "classification", 2, 100, 0)
    cls, patches = slice_tokens(encoder, image[0][None, None], blocks)
    torch.testing.assert_close(entry["cls"][0], cls[:, 2])  # slice 2 alone
    torch.testing.assert_close(entry["patch"][0], patches[:, :, 0, 0, 2])  # its masked patch
    assert not entry["cls"][1].any() and not entry["patch"][1].any()  # absent modality: zeros
    sample["mask"] = torch.zeros_like(mask)  # empty mask: every slice, every patch
    entry = _case_entry(encoder, blocks, sample, "classification", 2, 100, 0)
    torch.testing.assert_close(entry["cls"][0], cls.mean(dim=1))
    torch.testing.assert_close(entry["patch"][0], patches.mean(dim=(2, 3, 4)))


def test_cnn_rows_are_its_two_deepest_levels_and_their_slice_means(tmp_path):
    _config(tmp_path)  # writes c.yaml
    config = load_config(Config, tmp_path / "c.yaml", ["model.encoder.name=resnet50"])
    encoder, blocks = probe_encoder(config)
    assert blocks == (3, 4)  # strides 16 and 32
    volume = torch.rand(1, 1, 48, 64, 3)
    cls, patches = slice_tokens(encoder, volume, blocks)
    width = max(encoder.level_channels)  # 2048; the stride-16 level (1024) is zero-padded to it
    assert cls.shape == (2, 3, width) and patches.shape == (2, width, 3, 4, 3)
    assert float(patches[0, 1024:].abs().max()) == 0.0
    torch.testing.assert_close(cls, patches.mean(dim=(2, 3)).permute(0, 2, 1))
    with torch.no_grad():
        reference = encoder(volume)[0]  # (1024 + 2048, x, y, z): the levels concatenated
    torch.testing.assert_close(patches[0, :1024], reference[:1024], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(patches[1], reference[1024:], rtol=1e-4, atol=1e-4)
