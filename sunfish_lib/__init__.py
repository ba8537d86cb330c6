"""Sunfish: a notebook-driven research workbook for diffusion language models.

The core (config, model, estimator) imports with only torch installed; heavy
dependencies (datasets, transformers, papermill, ipywidgets) are imported where used.
"""

from sunfish_lib.config import (
    Config,
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    PRESETS,
    get_config,
)
from sunfish_lib.errors import ConfigError, SunfishError

__version__ = "0.1.0"

__all__ = [
    "Config",
    "DataConfig",
    "DiffusionConfig",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "PRESETS",
    "get_config",
    "ConfigError",
    "SunfishError",
    "__version__",
]
