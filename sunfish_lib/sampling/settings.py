"""The one list of sampling settings: `SampleConfig`'s fields, their docstrings, what each acts on.

`sunfish sample`'s flags (`commands.sample.add_setting_flags`), the panel's widgets
(`widgets.SamplingPanel`) and `session.sample`'s keywords are generated from here, so a new
`SampleConfig` field is reachable everywhere without another edit (a test enumerates them).
No torch here: the CLI builds its parser from this module.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from functools import lru_cache

from sunfish_lib.config import CACHES, DEVICE_HELP, DTYPE_NAMES, ROUNDINGS, SampleConfig  # noqa: F401 (the CLI and the panel read the device names here)

SETTINGS = tuple(f.name for f in dataclasses.fields(SampleConfig))
"""Every sampling setting, in SampleConfig's order."""
APPLIES = {"eta": ("continuous",), "steps": ("masked", "continuous"), "temperature": ("masked", "ar"),
           "top_k": ("masked", "ar"), "top_p": ("masked", "ar"), "block_length": ("masked",),
           "threshold": ("masked",), "cfg_scale": ("masked",), "clamp": ("continuous",),
           "rounding": ("continuous",), "cache": ("masked",)}
"""Objectives a setting acts on (absent: all)."""
CHOICES = {"rounding": ROUNDINGS, "cache": CACHES}
"""Settings with a fixed set of values (a dropdown in the panel, argparse choices on the CLI)."""
MODE_ONLY = {"length": "uncond", "mask_length": "infill"}
"""Settings that act in one mode only."""


def applies(name: str, objective: str | None, mode: str | None = None) -> bool:
    """Whether setting `name` acts on a checkpoint of `objective` (None: any) in `mode` (None: any)."""
    fits = objective is None or objective in APPLIES.get(name, (objective,))
    return fits and (mode is None or MODE_ONLY.get(name, mode) == mode)


def defaults() -> dict:
    """field -> its SampleConfig default."""
    return {f.name: f.default for f in dataclasses.fields(SampleConfig)}


@lru_cache(maxsize=None)
def field_docs(cls=SampleConfig) -> dict[str, str]:
    """field -> the docstring written under it in the dataclass source (tooltips and --help)."""
    tree = ast.parse(inspect.getsource(cls))
    body, out = tree.body[0].body, {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            out[node.target.id] = " ".join(str(nxt.value.value).split())
    return out
