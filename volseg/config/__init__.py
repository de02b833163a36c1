"""Typed run configuration: dataclass defaults, YAML files on top, ``key=value`` overrides."""

from __future__ import annotations

from volseg.config.dump import save_config, to_dict
from volseg.config.introspect import config_keys
from volseg.config.loader import from_dict, load_config
from volseg.config.schema import (
    Config,
    DataConfig,
    EncoderConfig,
    HeadConfig,
    InferenceConfig,
    LoraConfig,
    ModelConfig,
    TrainConfig,
)
from volseg.config.validate import validate_config

__all__ = [
    "Config",
    "DataConfig",
    "EncoderConfig",
    "HeadConfig",
    "InferenceConfig",
    "LoraConfig",
    "ModelConfig",
    "TrainConfig",
    "config_keys",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
    "validate_config",
]
