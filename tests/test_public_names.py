"""Every package's public names import: each name in `__all__` resolves, and `from pkg import *` works.

`sunfish_lib.sampling` resolves its names on first use (PEP 562), so a name whose module moved
fails only when someone imports it; this walk imports every one.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import sunfish_lib


def _packages() -> list[str]:
    """sunfish_lib and every package below it (walk_packages imports each one to look inside)."""
    return ["sunfish_lib"] + [m.name for m in pkgutil.walk_packages(sunfish_lib.__path__, "sunfish_lib.") if m.ispkg]


PACKAGES = _packages()
WITH_ALL = [name for name in PACKAGES if hasattr(importlib.import_module(name), "__all__")]


def test_the_walk_finds_the_public_packages():
    # The packages that state a public face; a walk that found none would pass everything below.
    assert {"sunfish_lib", "sunfish_lib.sampling", "sunfish_lib.diffusion", "sunfish_lib.data"} <= set(WITH_ALL)


def test_sampling_exports_nearest_tokens():
    """The rounding step of continuous sampling, named in `sampling.__all__` (it lives in diffusion.rounding)."""
    from sunfish_lib.sampling import nearest_tokens
    from sunfish_lib.diffusion import rounding

    assert nearest_tokens is rounding.nearest_tokens


@pytest.mark.parametrize("package", WITH_ALL)
def test_every_name_in_all_imports(package):
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        try:
            getattr(module, name)
        except (AttributeError, ImportError) as e:
            missing.append(f"{name} ({type(e).__name__}: {e})")
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"


@pytest.mark.parametrize("package", WITH_ALL)
def test_star_import_gives_exactly_all(package):
    namespace: dict = {}
    exec(f"from {package} import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(importlib.import_module(package).__all__)
