"""Hypothesis strategies for the fuzz lane (issue #31): valid, boundary and hostile values for what users type.

Shared by tests/test_fuzz_cli.py and tests/test_fuzz_files.py; the oracle is tests/fuzz_oracle.py.
"""

from __future__ import annotations

import dataclasses
import typing

from hypothesis import strategies as st

from sunfish_lib.config import Config

HOSTILE_TEXT = ["", " ", "\t", "\x00", "\x1b[2J", "é", "日本語", "\ud800", "None", "null", "nan", "NaN", "inf", "-inf",
                "1e400", "-1e400", "1e-400", "0x10", "1_000", "0", "-0", "-1", "1.5", "true", "false", "yes", "[]", "{}",
                "[1, 2]", "'quoted'", '"dq"', "a=b", "../../etc/passwd", "/dev/null", "/proc/self/mem", "~", "*", "**",
                "$(rm -rf /)", "x" * 5000, "2" * 400, str(2**63), str(-(2**63) - 1), str(2**64), "[MASK]", "<|endoftext|>"]
"""Texts every typed surface is tried with: empty, control characters, lone surrogates, numbers out of range."""

hostile_text = st.sampled_from(HOSTILE_TEXT)
any_text = st.one_of(hostile_text, st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), max_size=8))


def numbers_as_text(lo: int = -3, hi: int = 70):
    """Integers and floats as a user types them: boundaries (0, +-1, 2**31, 2**63), huge, NaN/inf, junk."""
    return st.one_of(
        st.integers(lo, hi).map(str),
        st.sampled_from([0, 1, -1, 2, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)]).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(-2, 2).map(lambda f: f"{f:.3g}"),
        hostile_text,
    )


def config_fields() -> dict[str, typing.Any]:
    """dotted key -> type hint of every Config field (the `--set` surface)."""
    out = {"seed": int, "preset": str}
    hints = typing.get_type_hints(Config)
    for section in ("model", "diffusion", "data", "train", "sample"):
        cls = hints[section]
        for f in dataclasses.fields(cls):
            out[f"{section}.{f.name}"] = typing.get_type_hints(cls)[f.name]
    return out


FIELDS = config_fields()
ALLOWED_WORDS = ["masked", "ar", "continuous", "linear", "cosine", "sqrt", "constant", "x0", "eps", "elbo", "layernorm",
                 "rmsnorm", "gelu", "swiglu", "learned", "rope", "llama3", "default", "auto", "single", "ddp", "fsdp",
                 "32-true", "bf16-mixed", "16-mixed", "stop", "skip", "ddim", "ddpm", "confidence", "threshold",
                 "random", "prefix", "dual", "none", "bpe", "gpt2", "shakespeare", "fineweb", "smoke", "tiny"]


def value_for(hint) -> st.SearchStrategy[str]:
    """A `--set` value for a field of type `hint`: a plausible one, a boundary, or hostile text."""
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if base is bool:
        typed = st.sampled_from(["true", "false", "1", "0", "yes", "off", "none", "2", "True "])
    elif base in (int, float):
        typed = numbers_as_text()
    else:
        typed = st.sampled_from(ALLOWED_WORDS)
    return st.one_of(typed, typed, any_text)


def set_pair() -> st.SearchStrategy[str]:
    """`KEY=VALUE` for `--set`: a real field (dotted or bare) with a typed/hostile value, or a broken pair."""
    key = st.sampled_from(sorted(FIELDS))
    real = key.flatmap(lambda k: st.tuples(st.sampled_from([k, k.split(".")[-1]]), value_for(FIELDS[k])))
    broken = st.tuples(st.one_of(any_text, st.sampled_from(["model.", ".n_layers", "model.bogus", "train..lr",
                                                            "MODEL.n_layers", "n_layer"])), any_text)
    pair = st.one_of(real, real, real, broken).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.one_of(pair, pair, pair, pair, any_text)  # some without '='
