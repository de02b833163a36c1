"""Typed config: defaults, YAML files with ``base:``, overrides, strict keys and types."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from volseg.bench import load_bench_config
from volseg.config import (
    Config,
    DataConfig,
    config_keys,
    from_dict,
    load_config,
    save_config,
    to_dict,
    validate_config,
)
from volseg.errors import VolsegError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- unknown keys


def test_yaml_typo_names_key_file_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "model:\n  encder:\n    name: vit_base_patch14_dinov2\n")
    with pytest.raises(VolsegError) as info:
        load_config(Config, path)
    message = str(info.value)
    assert "'model.encder'" in message
    assert str(path) in message
    assert "did you mean 'model.encoder'?" in message


def test_override_typo_names_override_and_suggestion() -> None:
    with pytest.raises(VolsegError) as info:
        load_config(Config, overrides=["train.lrr=0.1"])
    message = str(info.value)
    assert "'train.lrr'" in message
    assert "override 'train.lrr=0.1'" in message
    assert "did you mean 'train.lr'?" in message


def test_key_in_wrong_section_suggests_the_right_one() -> None:
    with pytest.raises(VolsegError, match="did you mean 'inference.overlap'"):
        load_config(Config, overrides=["train.overlap=0.5"])


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(VolsegError) as info:
        load_config(Config, overrides=["inference.zzzz=1"])
    assert "valid keys under 'inference': overlap, sw_batch_size, tta" in str(info.value)


def test_override_without_equals_is_rejected() -> None:
    with pytest.raises(VolsegError, match="override 'train.lr' is not of the form key=value"):
        load_config(Config, overrides=["train.lr"])


# ----------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.lr=abc", "train.lr", "expected float, got str 'abc'"),
        ("train.epochs=2.5", "train.epochs", "expected int, got float 2.5"),
        ("inference.tta=yes", "inference.tta", "expected bool (true or false), got str 'yes'"),
        ("data.spacing=[1.5,1.5]", "data.spacing", "expected a list of 3 floats"),
        ("data.ct_window=-100", "data.ct_window", "expected a list of 2 floats, got int -100"),
        ("data.classes=[liver, 3]", "data.classes[1]", "expected str"),
        ("model.encoder=vit", "model.encoder", "expected a mapping with keys name, weights"),
        (
            "model.encoder.mode=froze",
            "model.encoder.mode",
            "expected one of 'frozen', 'last_n', 'full', 'lora', got str 'froze'",
        ),
    ],
)
def test_wrong_types_are_rejected(override: str, key: str, expected: str) -> None:
    with pytest.raises(VolsegError) as info:
        load_config(Config, overrides=[override])
    message = str(info.value)
    assert f"config key '{key}' in override '{override}'" in message
    assert expected in message


def test_wrong_type_in_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train:\n  lr: fast\n")
    with pytest.raises(VolsegError, match=r"config key 'train.lr' in .*x\.yaml: expected float"):
        load_config(Config, path)


# ----------------------------------------------------------------------------- overrides


def test_overrides_parse_yaml_values() -> None:
    cfg = load_config(
        Config,
        overrides=[
            "train.lr=1e-3",
            "train.encoder_lr=2",
            "data.spacing=[1.5,1.5,3]",
            "model.encoder.weights=null",
            "model.encoder.lora.rank=4",
            "model.encoder.layers=[-4, -1]",
            "train.grad_clip=null",
            "train.amp=off",
            "inference.tta=true",
            "name=",
            "name=exp one",
        ],
    )
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.encoder_lr == 2.0 and isinstance(cfg.train.encoder_lr, float)
    assert cfg.data.spacing == (1.5, 1.5, 3.0)
    assert cfg.model.encoder.weights is None
    assert cfg.model.encoder.lora.rank == 4
    assert cfg.model.encoder.lora.alpha == 16.0  # untouched siblings keep their defaults
    assert cfg.model.encoder.layers == [-4, -1]
    assert cfg.train.grad_clip is None
    assert cfg.train.amp == "off"  # YAML 1.2: 'off' is a string, not False
    assert cfg.inference.tta is True
    assert cfg.name == "exp one"  # later overrides win


def test_overrides_apply_on_top_of_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train:\n  lr: 0.01\n  epochs: 3\n")
    cfg = load_config(Config, path, ["train.lr=0.5"])
    assert cfg.train.lr == 0.5
    assert cfg.train.epochs == 3
    assert cfg.train.batch_size == Config().train.batch_size


def test_unparsable_override_value_names_the_override() -> None:
    with pytest.raises(VolsegError, match=r"override 'data.spacing=\[1,2'"):
        load_config(Config, overrides=["data.spacing=[1,2"])


# ----------------------------------------------------------------------------- files


def test_base_inheritance_deep_merges(tmp_path: Path) -> None:
    write(tmp_path / "root.yaml", "seed: 7\ntrain:\n  epochs: 9\n  lr: 0.1\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "mid.yaml", "base: ../root.yaml\ntrain:\n  lr: 0.2\n")
    leaf = write(tmp_path / "sub" / "leaf.yaml", "base: mid.yaml\nname: leaf\n")
    cfg = load_config(Config, leaf)
    assert (cfg.name, cfg.seed, cfg.train.epochs, cfg.train.lr) == ("leaf", 7, 9, 0.2)


def test_base_cycle_is_detected(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(VolsegError, match="cycle") as info:
        load_config(Config, tmp_path / "a.yaml")
    assert "a.yaml -> " in str(info.value) and "b.yaml" in str(info.value)


def test_missing_base_names_both_files(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "base: nope.yaml\n")
    with pytest.raises(VolsegError, match=r"nope\.yaml \(base of .*a\.yaml\) not found"):
        load_config(Config, path)


def test_missing_file_is_a_volseg_error(tmp_path: Path) -> None:
    with pytest.raises(VolsegError, match=r"missing\.yaml not found"):
        load_config(Config, tmp_path / "missing.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "name: ok\ntrain:\n  lr: [1, 2\nseed: 1\n")
    with pytest.raises(VolsegError, match=r"bad\.yaml line \d+"):
        load_config(Config, path)


def test_duplicate_yaml_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.yaml", "train:\n  lr: 0.1\ntrain:\n  epochs: 2\n")
    with pytest.raises(VolsegError, match=r"dup\.yaml line 3: duplicate key 'train'"):
        load_config(Config, path)


def test_non_mapping_top_level_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(VolsegError, match=r"list\.yaml must hold a mapping"):
        load_config(Config, path)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(Config, write(tmp_path / "empty.yaml", "# nothing\n")) == Config()


# ----------------------------------------------------------------------------- saving


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        Config,
        overrides=[
            "name='1e-3'",
            "data.spacing=[0.8, 0.8, 2.5]",
            "data.classes=[liver, 'off']",
            "model.encoder.layers=[2, 5, 8, 11]",
            "model.encoder.mode=lora",
            "train.grad_clip=null",
            "train.encoder_lr=3e-6",
        ],
    )
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(Config, path) == cfg
    text = path.read_text()
    assert text.index("name:") < text.index("data:") < text.index("model:")
    assert "  spacing: [0.8, 0.8, 2.5]\n" in text
    assert list(tmp_path.joinpath("run").iterdir()) == [path]  # no temporary left behind


def test_to_dict_is_plain_data() -> None:
    data = to_dict(Config())
    assert list(data) == ["name", "output_dir", "seed", "data", "model", "train", "inference"]
    assert data["data"]["ct_window"] == [-175.0, 250.0]
    assert data["model"]["encoder"]["lora"] == {"rank": 8, "alpha": 16.0, "dropout": 0.0}
    assert from_dict(Config, data, source="dict") == Config()


def test_config_keys_are_dotted_leaves() -> None:
    keys = config_keys(Config)
    assert keys[:3] == ["name", "output_dir", "seed"]
    assert "model.encoder.lora.rank" in keys and "inference.tta" in keys
    assert "model.encoder" not in keys
    assert len(keys) == len(set(keys)) == 59


# ----------------------------------------------------------------------------- shipped YAMLs


def test_every_shipped_config_loads() -> None:
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert {p.name for p in paths} >= {
        "base.yaml",
        "synthetic_organs.yaml",
        "synthetic_glioma.yaml",
    }
    for path in paths:
        if path.name.startswith("bench_"):  # benchmark configs: models are training configs
            for model in load_bench_config(path).models:
                config = load_config(Config, CONFIGS.parent / model.config, model.overrides)
                assert isinstance(config, Config)
        else:
            assert isinstance(load_config(Config, path), Config)


def test_base_yaml_documents_the_defaults() -> None:
    assert load_config(Config, CONFIGS / "base.yaml") == Config()


def test_synthetic_configs_values() -> None:
    organs = load_config(Config, CONFIGS / "synthetic_organs.yaml")
    assert organs.data.manifest == "data/synthetic/organs/manifest.json"
    assert organs.model.task == "segmentation"
    assert organs.model.encoder.name == "vit_small_patch14_dinov2"
    assert organs.model.encoder.mode == "frozen"
    assert organs.train.epochs <= 100  # sized for the 15-minute CPU budget (docs/TRAINING.md)
    glioma = load_config(Config, CONFIGS / "synthetic_glioma.yaml")
    assert glioma.data.manifest == "data/synthetic/glioma/manifest.json"
    assert (glioma.model.task, glioma.data.intensity) == ("classification", "mri")
    assert glioma.model.head.name == "mil"


# ----------------------------------------------------------------------------- validation


def test_validate_catches_fold_out_of_range() -> None:
    with pytest.raises(VolsegError) as info:
        load_config(Config, overrides=["data.folds=3", "data.fold=3"])
    assert "'data.fold' is 3" in str(info.value)
    assert "0..2" in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("inference.overlap=1.0", "inference.overlap"),
        ("model.encoder.chunk=0", "model.encoder.chunk"),
        ("train.epochs=0", "train.epochs"),
        ("data.spacing=[1, 0, 1]", "data.spacing"),
        ("data.ct_window=[100, -100]", "data.ct_window"),
        ("train.lr=.nan", "train.lr"),
        ("train.cache_timing_batches=-1", "train.cache_timing_batches"),
    ],
)
def test_validate_catches_bad_values(override: str, key: str) -> None:
    with pytest.raises(VolsegError, match=f"config key '{key}' is "):
        load_config(Config, overrides=[override])


def test_validate_runs_on_direct_construction() -> None:
    cfg = Config()
    validate_config(cfg)
    with pytest.raises(VolsegError, match="'data.fold'"):
        dataclasses.replace(cfg, data=DataConfig(folds=2, fold=2))


# ----------------------------------------------------------------------------- generic loader


@dataclasses.dataclass
class Inner:
    size: tuple[int, ...] = (1,)
    path: Path = Path("a")


@dataclasses.dataclass
class Schema:
    required: str
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    inner: Inner = dataclasses.field(default_factory=lambda: Inner(size=(2, 2)))
    pair: tuple[int, str] | None = None
    kind: Literal["a", "b"] | int = "a"


def test_generic_schema_types() -> None:
    obj = from_dict(
        Schema,
        {
            "required": "x",
            "weights": {"dice": 1, "ce": 0.5},
            "inner": {"path": "b/c"},
            "pair": [3, "z"],
            "kind": 7,
        },
        source="t",
    )
    assert obj.weights == {"dice": 1.0, "ce": 0.5}
    assert obj.inner == Inner(size=(2, 2), path=Path("b/c"))  # partial section keeps its default
    assert obj.pair == (3, "z")
    assert obj.kind == 7
    assert from_dict(Schema, to_dict(obj), source="t") == obj
    assert config_keys(Schema) == [
        "required",
        "weights",
        "inner.size",
        "inner.path",
        "pair",
        "kind",
    ]


def test_generic_schema_errors() -> None:
    with pytest.raises(VolsegError, match="'required' is required but missing in t"):
        from_dict(Schema, {}, source="t")
    with pytest.raises(VolsegError, match=r"'weights.dice' in t: expected float, got str"):
        from_dict(Schema, {"required": "x", "weights": {"dice": "one"}}, source="t")
    with pytest.raises(VolsegError, match=r"'pair\[0\]' in t: expected int"):
        from_dict(Schema, {"required": "x", "pair": ["3", "z"]}, source="t")
    with pytest.raises(VolsegError, match="expected one of 'a', 'b' or int, got str 'c'"):
        from_dict(Schema, {"required": "x", "kind": "c"}, source="t")
