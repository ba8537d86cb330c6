"""The one list of sampling settings: `SampleConfig`'s fields, their docstrings, what each acts on.

`sunfish sample`'s flags (`commands.sample.add_setting_flags`), the panel's widgets
(`widgets.SamplingPanel`) and `session.sample`'s keywords are generated from here, so a new
`SampleConfig` field is reachable everywhere without another edit (a test enumerates them).
The notebooks' `sampling` parameter (06, 07) is a dict of these settings, checked by
`check_settings` with the config's own rules before a kernel starts (`notebook_params`).
No torch here: the CLI builds its parser from this module.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
from functools import lru_cache
from typing import Any, Mapping

from sunfish_lib.config import CACHES, ROUNDINGS, SAMPLERS, Config, SampleConfig
from sunfish_lib.errors import SunfishError
from sunfish_lib.config.validation import check_sample_ranges

SETTINGS = tuple(f.name for f in dataclasses.fields(SampleConfig))
"""Every sampling setting, in SampleConfig's order."""
APPLIES = {"eta": ("continuous",), "steps": ("masked", "continuous", "block"), "temperature": ("masked", "ar", "block", "continuous"),
           "top_k": ("masked", "ar", "block"), "top_p": ("masked", "ar", "block"), "block_length": ("masked",),
           "threshold": ("masked", "block"), "cfg_scale": ("masked",), "clamp": ("continuous",),
           "rounding": ("continuous",), "cache": ("masked",),
           "remask": ("masked",)}
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


def check_names(names) -> None:
    """Every name is a SampleConfig field (one-line SunfishError naming the first that is not)."""
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SETTINGS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SunfishError(f"unknown sampling setting {unknown[0]!r}; {hint}allowed: {', '.join(SETTINGS)}")


def check_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling settings as a notebook gives them ({field: value}), checked without a checkpoint.

    Names must be SampleConfig fields, values of the field's type (`Config.override`) and in its
    range (`validation.check_sample_ranges`, the one copy of the rules); a sampler must be one
    some objective has (which one fits is checked once the checkpoint is known). Returns the values
    as the config types them."""
    if not isinstance(values, Mapping):
        raise SunfishError(f"sampling settings must be a dict of SampleConfig fields, e.g. {{'steps': 32}}; "
                           f"got {values!r}")
    check_names(values)
    s = Config().override({f"sample.{k}": v for k, v in values.items()}).sample
    typed = {k: getattr(s, k) for k in values}
    check_sample_ranges(**{k: v for k, v in typed.items() if k != "sampler"})
    every = sorted({name for names in SAMPLERS.values() for name in names})
    if "sampler" in typed and typed["sampler"] not in every:
        raise SunfishError(f"sample.sampler={typed['sampler']!r} is not a sampler; choose one of {', '.join(every)}")
    return typed
