"""Config overrides and typing: `key=value` strings and dicts onto the frozen dataclasses of `config`.

Keys are dotted (`model.n_layers`) or, when unambiguous, bare (`max_steps`); values are typed by the
field they set (`coerce`: "6" -> 6, "true" -> True, "none" -> None for optional fields). Works on any
Config-shaped dataclass (its sections found from its type hints), so this module imports no config.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import fields, replace
from typing import Any, Mapping

from sunfish_lib.errors import ConfigError


def accumulation_for(global_batch_size: int, sequences_per_pass: int, accumulate_grad_batches: int = 1) -> int:
    """Micro-batches per optimizer step that keep `global_batch_size` sequences per step
    (0: no global batch fixed, `accumulate_grad_batches` as given)."""
    if not global_batch_size:
        return accumulate_grad_batches
    return max(1, global_batch_size // sequences_per_pass)


def short_run_rules(cfg, overrides: Mapping[str, Any]):
    """The one place the short-run rule lives (CLI, notebooks, benches all go through it).

    When `overrides` change max_steps but not warmup_steps, warmup becomes a tenth of the
    steps, never more than it was: min(warmup_steps, max(1, max_steps // 10)).
    """
    keys = {str(k).split(".")[-1] for k in overrides}
    if "max_steps" not in keys or "warmup_steps" in keys:
        return cfg
    t = cfg.train
    return cfg.override({"train.warmup_steps": min(t.warmup_steps, max(1, t.max_steps // 10))})


def with_max_steps(cfg, max_steps: int):
    """A saved run's config at a new max_steps (resuming, re-running a notebook), validated.

    The saved warmup is kept unless it no longer fits the new length; then `short_run_rules`
    caps it (a run saved with warmup 40 of 400 steps, resumed to end at step 11, warms up for 1).
    """
    out = cfg.override({"train.max_steps": int(max_steps)})
    if out.train.warmup_steps > out.train.max_steps:
        out = short_run_rules(out, {"train.max_steps": max_steps})
    return out.validate()


def parse_set_args(pairs: list[str] | None) -> dict[str, str]:
    """CLI `--set key=value` strings -> dict (values stay strings; typed on apply)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r} is not key=value; e.g. --set model.n_layers=6")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


_SECTIONS = ("model", "diffusion", "data", "train", "sample")


def _field_index(root: type) -> dict[str, list[str]]:
    """bare field name -> dotted keys that have it (for unambiguous bare keys); root: the Config class."""
    index: dict[str, list[str]] = {}
    for sec in _SECTIONS:
        sec_cls = typing.get_type_hints(root)[sec]
        for f in fields(sec_cls):
            index.setdefault(f.name, []).append(f"{sec}.{f.name}")
    for top in ("seed", "preset"):
        index.setdefault(top, []).append(top)
    return index


def _all_keys(root: type) -> list[str]:
    index = _field_index(root)
    return sorted({k for ks in index.values() for k in ks} | set(index))


def _resolve_key(root: type, key: str) -> str:
    index = _field_index(root)
    if key in ("seed", "preset"):
        return key
    if "." in key:
        sec, _, name = key.partition(".")
        if sec in _SECTIONS and f"{sec}.{name}" in index.get(name, []):
            return key
    elif key in index:
        matches = index[key]
        if len(matches) == 1:
            return matches[0]
        raise ConfigError(f"config key {key!r} is ambiguous; use one of {', '.join(matches)}")
    close = difflib.get_close_matches(key, _all_keys(root), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `sunfish estimate --help` or sunfish_lib/config.py"
    raise ConfigError(f"unknown config key {key!r}{hint}")


def set_key(cfg, key: str, value: Any):
    """A copy of `cfg` (a Config) with the dotted or bare `key` set to `value`, typed by the field."""
    dotted = _resolve_key(type(cfg), key)
    if "." not in dotted:
        hint = typing.get_type_hints(type(cfg))[dotted]
        return replace(cfg, **{dotted: coerce(dotted, value, hint)})
    sec, name = dotted.split(".", 1)
    section = getattr(cfg, sec)
    hint = typing.get_type_hints(type(section))[name]
    return replace(cfg, **{sec: replace(section, **{name: coerce(dotted, value, hint)})})


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert `value` (maybe a CLI string) to the field's type, or raise ConfigError."""
    if typing.get_origin(hint) is tuple:
        return _coerce_tuple(key, value, typing.get_args(hint))
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if isinstance(value, str) and optional and value.strip().lower() in ("none", "null") + (("auto",) if base is bool else ()):
        return None  # an optional switch's None is "auto": the library decides (e.g. train.compile, model.causal)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}=None is not allowed; give a {base.__name__}")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if base is int:
            number = _as_int(value)
            if -(2**63) <= number < 2**63:
                return number
            # beyond int64, torch, numpy and float arithmetic overflow later (the fuzz lane found one: issue #31)
            raise ConfigError(f"{key}={number} is out of range; give an integer below 2**63")
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except ConfigError:
        raise
    except (ValueError, TypeError):
        pass
    else:
        return value
    example = {bool: "true", int: "8", float: "0.5", str: "text"}.get(base, "...")
    what = "true, false or auto" if optional and base is bool else base.__name__ + (" or null" if optional else "")
    raise ConfigError(f"{key}={value!r} is not a valid {what}; give one, e.g. {key}={example}")


def _as_int(value: Any) -> int:
    """An int from an int, an integral float or text ("6", "1e5"); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:  # allow "1e5"-style integers
            f = float(value)
            if not f.is_integer():
                raise
            return int(f)
    return int(value)


def _coerce_tuple(key: str, value: Any, items: tuple) -> tuple:
    """A fixed-length tuple field (e.g. diffusion.t_clip) from a list/tuple, or a string "0.3,0.8" / "[0.3, 0.8]"."""
    parts = [v for v in value.strip().strip("[]()").split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != len(items):
        raise ConfigError(f"{key}={value!r} must be a list of {len(items)} values, e.g. [0.3, 0.8]")
    return tuple(coerce(f"{key}[{i}]", v, hint) for i, (v, hint) in enumerate(zip(parts, items)))


def from_dict(cls, d: Mapping[str, Any], prefix: str = ""):
    """An instance of the dataclass `cls` from a (nested) mapping; unknown keys and mistyped values are ConfigErrors."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'} must be an object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    d = _renamed(cls, d, prefix)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(f"{prefix}{name}", value, hint)
    return cls(**kwargs)


def _renamed(cls, d: Mapping[str, Any], prefix: str) -> Mapping[str, Any]:
    """`d` with the keys older files wrote under `cls.LEGACY_KEYS` (old name -> field) given their current names."""
    legacy = getattr(cls, "LEGACY_KEYS", {})
    for old, new in legacy.items():
        if old in d and new in d:
            raise ConfigError(f"config has both '{prefix}{old}' (its old name) and '{prefix}{new}'; keep only {new}")
    return {legacy.get(k, k): v for k, v in d.items()}
