"""Weights in Meta, timm and HuggingFace formats load into the encoder with the same features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from volseg.errors import VolsegError
from volseg.models import SliceEncoder, build_vit, load_encoder_weights
from volseg.models import weights as weights_module

TINY, TINY_REG = "vit_test_patch14_dinov2", "vit_test_patch14_reg4_dinov2"
transformers = pytest.importorskip("transformers")


class NotATensor:
    """A custom class a safe loader must refuse to unpickle."""


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter, so no tensor keeps a trivial (zero/one) init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module.eval()


def images(n: int = 2, h: int = 28, w: int = 42) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1))


def patch_tokens(vit, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vit.forward_features(x)[:, vit.num_prefix_tokens :]


def assert_same_features(source, target, x: torch.Tensor | None = None) -> None:
    x = images() if x is None else x
    torch.testing.assert_close(
        patch_tokens(target, x), patch_tokens(source, x), atol=1e-5, rtol=1e-5
    )


def to_meta(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm DINOv2 state dict -> Meta's names (the inverse of timm's conversion)."""
    out = {key: value.clone() for key, value in state.items()}
    dim = state["cls_token"].shape[-1]
    out["mask_token"] = torch.zeros(1, dim)
    if "reg_token" in out:  # Meta keeps a cls position; timm folds it into cls_token
        cls_pos = torch.randn(1, 1, dim, generator=torch.Generator().manual_seed(2))
        out["register_tokens"] = out.pop("reg_token")
        out["cls_token"] = state["cls_token"] - cls_pos
        out["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
    return out


def to_meta_swiglu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    meta = to_meta(state)
    return {
        k.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3."): v for k, v in meta.items()
    }


# --- timm format ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [TINY, TINY_REG])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_format(tmp_path: Path, name: str, suffix: str) -> None:
    source = randomise(build_vit(name))
    path = tmp_path / f"timm{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    encoder = SliceEncoder(name).eval()
    report = load_encoder_weights(encoder.vit, path)
    assert report.format == "timm" and report.tensors == len(state)
    assert_same_features(source, encoder.vit)


def test_timm_training_checkpoint_nested_and_ddp_prefixed(tmp_path: Path) -> None:
    source = randomise(build_vit(TINY))
    path = tmp_path / "checkpoint.pth"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}}, path)
    encoder = SliceEncoder(TINY, weights=path).eval()
    assert_same_features(source, encoder.vit)


# --- Meta format ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [TINY, TINY_REG])
def test_meta_format(tmp_path: Path, name: str) -> None:
    source = randomise(build_vit(name))
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(to_meta(source.state_dict()), path)
    encoder = SliceEncoder(name).eval()
    assert load_encoder_weights(encoder.vit, path).format == "meta"
    assert_same_features(source, encoder.vit)


@pytest.mark.parametrize("name", ["vit_giant_patch14_dinov2", "vit_giant_patch14_reg4_dinov2"])
def test_meta_format_swiglu(tmp_path: Path, name: str) -> None:
    """Giant's SwiGLU MLP (``mlp.w12``/``mlp.w3``), at test size."""
    kwargs = dict(embed_dim=48, depth=1, num_heads=2, num_classes=0, img_size=28)
    source = randomise(timm.create_model(name, **kwargs))
    target = timm.create_model(name, **kwargs)
    path = tmp_path / "dinov2_vitg14_pretrain.pth"
    torch.save(to_meta_swiglu(source.state_dict()), path)
    load_encoder_weights(target, path)
    assert_same_features(source, target.eval(), images(2, 28, 28))


def test_meta_training_checkpoint_teacher_chunked(tmp_path: Path) -> None:
    """Meta's ``teacher_checkpoint.pth``: ``teacher.backbone.blocks.<chunk>.<block>.*`` + heads."""
    source = randomise(build_vit(TINY_REG))
    meta = to_meta(source.state_dict())
    chunked = {}
    for key, value in meta.items():
        if key.startswith("blocks."):
            block = int(key.split(".")[1])
            key = key.replace("blocks.", f"blocks.{block // 2}.", 1)
        chunked[key] = value
    teacher = {f"backbone.{k}": v for k, v in chunked.items()}
    teacher["dino_head.mlp.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher}, path)
    encoder = SliceEncoder(TINY_REG, weights=path).eval()
    assert_same_features(source, encoder.vit)


def test_meta_position_grid_resampled_to_another_img_size(tmp_path: Path) -> None:
    path = tmp_path / "meta.pth"
    torch.save(to_meta(randomise(build_vit(TINY)).state_dict()), path)
    encoder = SliceEncoder(TINY, weights=path, img_size=224)
    assert encoder.vit.pos_embed.shape == (1, 1 + 16 * 16, 48)


# --- HuggingFace format ---------------------------------------------------------------------


def hf_model(registers: bool, swiglu: bool = False, layers: int = 3):
    kwargs = dict(
        hidden_size=48,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=192,
        image_size=28,  # 2 x 2 patches: a 28 x 28 input needs no position interpolation
        patch_size=14,
        layerscale_value=1.0,
        use_swiglu_ffn=swiglu,
    )
    if registers:
        if not hasattr(transformers, "Dinov2WithRegistersModel"):
            pytest.skip("transformers has no Dinov2WithRegistersModel")
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **kwargs)
        return randomise(transformers.Dinov2WithRegistersModel(config))
    return randomise(transformers.Dinov2Model(transformers.Dinov2Config(**kwargs)))


def hf_patch_tokens(model, x: torch.Tensor) -> torch.Tensor:
    registers = getattr(model.config, "num_register_tokens", 0)
    with torch.no_grad():
        return model(pixel_values=x).last_hidden_state[:, 1 + registers :]


def save_hf(model, folder: Path, bin_file: bool) -> Path:
    model.save_pretrained(folder)
    if bin_file:  # the older export layout: pytorch_model.bin instead of model.safetensors
        state = load_file(folder / "model.safetensors")
        (folder / "model.safetensors").unlink()
        torch.save(state, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("bin_file", [False, True], ids=["safetensors", "bin"])
@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "with_registers"])
def test_huggingface_folder(tmp_path: Path, registers: bool, bin_file: bool) -> None:
    model = hf_model(registers)
    folder = save_hf(model, tmp_path / "dinov2-hf", bin_file)
    encoder = SliceEncoder(TINY_REG if registers else TINY, img_size=28).eval()
    assert load_encoder_weights(encoder.vit, folder).format == "huggingface"
    x = images(3, 28, 28)
    torch.testing.assert_close(
        patch_tokens(encoder.vit, x), hf_patch_tokens(model, x), atol=1e-5, rtol=1e-5
    )
    # the same through the volume path: slice k of the features is HF on normalised slice k
    volume = torch.rand(1, 1, 28, 28, 2, generator=torch.Generator().manual_seed(3))
    rgb = (volume[..., 1].expand(-1, 3, -1, -1) - encoder.mean) / encoder.std
    expected = hf_patch_tokens(model, rgb).reshape(1, 2, 2, 48).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(encoder(volume)[..., 1], expected, atol=1e-5, rtol=1e-5)


def test_huggingface_swiglu_and_in_memory_names(tmp_path: Path) -> None:
    """SwiGLU (``weights_in/out`` on disk), and a raw ``state_dict()`` with transformers 5 names."""
    model = hf_model(registers=True, swiglu=True, layers=1)
    kwargs = dict(embed_dim=48, depth=1, num_heads=2, num_classes=0, img_size=28)
    x = images(2, 28, 28)
    folder = save_hf(model, tmp_path / "hf", bin_file=False)
    raw = tmp_path / "raw.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, raw)
    for source in (folder, raw):
        target = timm.create_model("vit_giant_patch14_reg4_dinov2", **kwargs).eval()
        assert load_encoder_weights(target, source).format == "huggingface"
        torch.testing.assert_close(
            patch_tokens(target, x), hf_patch_tokens(model, x), atol=1e-5, rtol=1e-5
        )


def test_huggingface_folder_problems(tmp_path: Path) -> None:
    vit = build_vit(TINY)
    with pytest.raises(VolsegError, match="config.json"):
        load_encoder_weights(vit, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(VolsegError, match="not a DINOv2"):
        load_encoder_weights(vit, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    with pytest.raises(VolsegError, match="model.safetensors"):
        load_encoder_weights(vit, tmp_path)


# --- strictness and unsafe or damaged files ----------------------------------------------------


def test_missing_keys_are_listed_with_count(tmp_path: Path) -> None:
    state = build_vit(TINY).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("blocks.1.", "blocks.2."))}
    path = tmp_path / "two_blocks_short.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    with pytest.raises(
        VolsegError, match=r"two_blocks_short.*missing \(28\): blocks\.1\..*, \.\.\."
    ):
        load_encoder_weights(build_vit(TINY), path)


def test_unexpected_keys_and_shapes_are_listed(tmp_path: Path) -> None:
    state = build_vit(TINY).state_dict()
    state["head.weight"] = torch.zeros(10, 48)
    state["blocks.0.norm1.weight"] = torch.zeros(50)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(VolsegError) as err:
        load_encoder_weights(build_vit(TINY), path)
    message = str(err.value)
    assert "odd.pth" in message and "unexpected (1): head.weight" in message
    assert "shape (1): blocks.0.norm1.weight (50,) vs model (48,)" in message
    assert "\n" not in message


def test_registers_checkpoint_into_plain_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "reg4.pth"
    torch.save(to_meta(build_vit(TINY_REG).state_dict()), path)
    with pytest.raises(VolsegError, match=r"reg4\.pth.*register tokens.*_reg4_"):
        load_encoder_weights(build_vit(TINY), path)
    path = tmp_path / "plain.pth"
    torch.save(to_meta(build_vit(TINY).state_dict()), path)
    with pytest.raises(VolsegError, match=r"plain\.pth.*no register tokens"):
        load_encoder_weights(build_vit(TINY_REG), path)


def test_pickle_with_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": build_vit(TINY).state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(VolsegError, match=r"evil\.pth: refused"):
        load_encoder_weights(build_vit(TINY), path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_names_the_file(tmp_path: Path, suffix: str) -> None:
    whole, cut = tmp_path / f"whole{suffix}", tmp_path / f"cut{suffix}"
    state = {k: v.contiguous() for k, v in build_vit(TINY).state_dict().items()}
    save_file(state, whole) if suffix == ".safetensors" else torch.save(state, whole)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VolsegError, match=rf"cut\{suffix}: cannot be read"):
        load_encoder_weights(build_vit(TINY), cut)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "notes.pth"
    junk.write_text("these are not weights " * 20)
    with pytest.raises(VolsegError, match="notes.pth"):
        load_encoder_weights(build_vit(TINY), junk)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(VolsegError, match="list.pth: holds a list, not a state dict"):
        load_encoder_weights(build_vit(TINY), listed)
    other = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(2)}, other)
    with pytest.raises(VolsegError, match="not a DINOv2"):
        load_encoder_weights(build_vit(TINY), other)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VolsegError, match="no such file"):
        load_encoder_weights(build_vit(TINY), tmp_path / "nowhere.pth")


@pytest.mark.parametrize(
    "name", ["vit_small_patch14_dinov2.lvd142m", "timm/vit_small_patch14_dinov2.lvd142m"]
)
def test_hub_name_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    vit = build_vit(TINY)
    monkeypatch.setattr(weights_module.timm, "create_model", offline)
    with pytest.raises(VolsegError, match="unreachable.*local.*Meta DINOv2 .pth"):
        load_encoder_weights(vit, name)


def test_hub_download_is_loaded_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    source = randomise(build_vit(TINY))
    target = build_vit(TINY).eval()

    def fake_hub(name, pretrained=False, **kwargs):
        assert name == "hf-hub:timm/vit_test" and pretrained
        return source

    monkeypatch.setattr(weights_module.timm, "create_model", fake_hub)
    assert load_encoder_weights(target, "timm/vit_test").format == "hub"
    assert_same_features(source, target)
