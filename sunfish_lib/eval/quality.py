"""Sample quality: how good a sample is, always next to the same figure for held-out real text.

Three measures, each computed on the generated tokens of every sample and on windows of
held-out text of the same token length (the scale that makes a number readable):

- unigram entropy (nats): entropy of each sample's own token histogram, averaged over samples
  (`sampling.analysis.token_entropy`). Degenerate, repetitive text scores low; ln(n) when no
  token repeats.
- distinct-n (Li et al. 2016, "A diversity-promoting objective"): unique n-grams / all n-grams
  of a sample, averaged over samples. 1.0: no n-gram repeats.
- judge perplexity: exp of the mean NLL per token of the sample text under a causal model that
  is not the one sampled (an `ar` run of ours, or a Hugging Face causal-LM folder).
  MDLM (Sahoo et al. 2024, Sec. 4.1) warns that generative perplexity alone is gamed by
  low-entropy text (repeating one frequent word scores well), so it is never reported without
  the entropy: `sample_quality` returns both, and `display.samples_html` shows both.

A judge is independent: never the sampled model, its ancestor (a converted model's AR parent), its
descendant or a model grown from the same parent (`runs.lineage`). No judge is invented: without one
(none named, none unrelated in the workbook's run folder) the judge fields are None and `judge_note` says
why and what to do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from sunfish_lib.data import get_tokenizer, make_loader
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.runs.discovery import find_model, model_stamp, workbook_folder, workbook_model
from sunfish_lib.runs.lineage import model_identity, relation
from sunfish_lib.sampling.analysis import token_entropy

DISTINCT_N = (2, 3)
REFERENCE_WINDOWS = 8  # held-out windows behind each reference figure


# ----------------------------------------------------------------------------
# Measures on token ids
# ----------------------------------------------------------------------------

def unigram_entropy(ids: Sequence[int]) -> float:
    """Entropy (nats) of the token histogram of one sequence: -sum_v p_v ln p_v."""
    return token_entropy(torch.as_tensor(list(ids), dtype=torch.long)[None])[0]


def distinct_n(ids: Sequence[int], n: int) -> float:
    """Unique n-grams / n-grams of one sequence (nan when it is shorter than n)."""
    ids = [int(i) for i in ids]
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def _mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def token_measures(rows: Sequence[Sequence[int]]) -> dict[str, float | None]:
    """entropy and distinct_n (means over rows) of several token sequences."""
    out = {"entropy": _mean([unigram_entropy(r) for r in rows if len(r)])}
    for n in DISTINCT_N:
        out[f"distinct_{n}"] = _mean([distinct_n(r, n) for r in rows])
    return out


# ----------------------------------------------------------------------------
# The judge
# ----------------------------------------------------------------------------

@dataclass
class Judge:
    """A causal LM that scores text: encode(text) -> ids; logits((1, T) ids) -> (1, T, V)."""

    name: str
    encode: Callable[[str], list[int]]
    logits: Callable[[torch.Tensor], torch.Tensor]
    bos_id: int
    max_len: int

    @torch.no_grad()
    def nll(self, text: str) -> tuple[float, int]:
        """(total NLL in nats, tokens scored) of `text`: -sum_i ln p(x_i | BOS, x_<i), truncated to max_len."""
        ids = [self.bos_id] + self.encode(text)[: self.max_len - 1]
        if len(ids) < 2:
            return 0.0, 0
        x = torch.tensor([ids])  # (1, T)
        logp = torch.log_softmax(self.logits(x)[0, :-1].double(), dim=-1)  # (T-1, V): position i predicts i+1
        return float(-logp.gather(1, x[0, 1:, None]).sum()), len(ids) - 1

    def perplexity(self, texts: Sequence[str]) -> float | None:
        """exp(total NLL / total tokens) over texts (None when nothing was scored)."""
        scored = [self.nll(t) for t in texts]
        n = sum(k for _, k in scored)
        return math.exp(sum(v for v, _ in scored) / n) if n else None


def _is_hf_folder(path: Path) -> bool:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "model_type" in cfg and "diffusion" not in cfg


_JUDGES: dict[tuple, Judge] = {}  # one loaded judge, reused while its files stay the same


def load_judge(path: str | Path) -> Judge:
    """An `ar` run folder / export / .ckpt of ours, or a Hugging Face causal-LM folder, as a Judge."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise SunfishError(f"judge {path} does not exist; pass an ar run folder, its export/ or a "
                           "Hugging Face causal-LM folder")
    key = model_stamp(p)
    if key not in _JUDGES:
        _JUDGES.clear()
        _JUDGES[key] = _load_judge(p)
    return _JUDGES[key]


def _load_judge(p: Path) -> Judge:
    path = p
    if p.is_dir() and _is_hf_folder(p):
        return _hf_judge(p)

    model, cfg, tok = load_for_inference(p)
    if cfg.diffusion.objective != "ar":
        raise SunfishError(f"judge {path} is a {cfg.diffusion.objective} model; a judge must be causal: an ar run "
                           "folder of ours or a Hugging Face causal-LM folder")
    if tok is None:
        tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    model.eval()
    t = (lambda x: torch.zeros(x.shape[0])) if model.cfg.time_conditioning else (lambda x: None)
    # BOS = EOS, as the ar sampler starts an unprompted sample (sampling.autoregressive.ARSampler)
    return Judge(str(p), tok.encode, lambda x: model(x, t=t(x)), tok.eos_token_id, cfg.model.max_seq_len)


def _hf_judge(path: Path) -> Judge:
    # lazy: transformers takes 5.2 s to import after this module; only a Hugging Face judge needs it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if bos is None:
        raise SunfishError(f"judge {path}: its tokenizer has neither a BOS nor an EOS token to start a text with")
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 1024))
    return Judge(str(path), lambda s: tok(s, add_special_tokens=False)["input_ids"],
                 lambda x: model(input_ids=x).logits, int(bos), max_len)


def find_judge(roots: Sequence[str | Path | None], *sampled: str | Path) -> Path | None:
    """An AR model under `roots` related to none of the `sampled` models: not one of them, their ancestor,
    descendant or grown from their parent (`runs.lineage.relation`). A workbook's own AR baseline (04, the
    longest-trained) first, else the nearest to the top, newest first (nested run folders included)."""
    def related(d: Path) -> bool:
        return any(relation(d, s) is not None for s in sampled)

    for root in (r for r in roots if r):
        baseline = workbook_model(root, "ar")
        if baseline is not None and not related(baseline):
            return baseline
    return find_model(roots, "ar", skip=related)


# ----------------------------------------------------------------------------
# Quality of a Generation
# ----------------------------------------------------------------------------

def reference_windows(cfg, tokenizer, length: int, count: int = REFERENCE_WINDOWS) -> list[list[int]]:
    """`count` windows of `length` held-out tokens (validation split of cfg.data), specials dropped."""
    specials = {tokenizer.eos_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id}
    stream: list[int] = []  # rows joined: a window may be longer than the model's sequence
    for batch in make_loader(cfg.data, tokenizer, "validation", seed=cfg.seed, num_workers=0):
        stream += [i for row in batch["input_ids"].tolist() for i in row if i not in specials]
        if len(stream) >= count * length:
            break
    return [stream[i:i + length] for i in range(0, len(stream) - length + 1, length)][:count]


def sample_quality(ids: torch.Tensor, start: torch.Tensor, tokenizer, cfg, *, judge: Judge | None = None,
                   judge_note: str | None = None, reference: bool = True) -> dict:
    """Quality fields of samples (B, T) drawn from start (B, T) ([MASK] where generated).

    Per sample and averaged: entropy, distinct_2/3 of the generated tokens and, with a judge,
    its perplexity of the whole sample text; `reference_*`: the same on held-out windows of the
    same length. See the module docstring.
    """
    mask_id = tokenizer.mask_token_id
    rows = [r[s == mask_id].tolist() for r, s in zip(ids, start)]
    n = max((len(r) for r in rows), default=0)
    texts = [tokenizer.decode(r.tolist(), skip_special_tokens=True) for r in ids]
    per = [token_measures([r]) for r in rows]
    out = {"tokens_per_sample": n, **token_measures(rows),
           "per_sample": [{k: v for k, v in m.items()} for m in per]}
    ref = reference_windows(cfg, tokenizer, n) if reference and n else []
    out.update({f"reference_{k}": v for k, v in token_measures(ref).items()})
    out["reference_windows"] = len(ref)
    out.update({"judge": None, "judge_ppl": None, "reference_judge_ppl": None,
                "judge_note": judge_note or "no judge: name an ar run or a Hugging Face causal-LM folder"})
    if judge is not None:
        scored = [judge.nll(t) for t in texts]
        for m, (v, k) in zip(out["per_sample"], scored):
            m["judge_ppl"] = math.exp(v / k) if k else None
        total = sum(k for _, k in scored)
        out.update({"judge": judge.name, "judge_note": None,
                    "judge_ppl": math.exp(sum(v for v, _ in scored) / total) if total else None,
                    "reference_judge_ppl": judge.perplexity([tokenizer.decode(r) for r in ref]) if ref else None})
    return out


def judge_for(judge: str | Path | None, sampled: str | Path, run_dir: str | Path | None = None) -> tuple[Judge | None, str | None]:
    """(Judge, note): the named one, else the nearest AR model unrelated to `sampled` under run_dir or the
    sampled model's workbook, else (None, why there is none and what to do).

    A named judge related to the sampled model (`runs.lineage.relation`) is a one-line SunfishError: it shares
    the weights it is meant to check (a converted model judged by its AR parent scores its own parent's text).
    """
    if judge:
        related = relation(judge, sampled)
        if related:
            raise SunfishError(f"judge {judge} is {related} the sampled model {model_identity(sampled)}: it shares "
                               "the weights it would check; pass an ar model trained apart from it (another run or a "
                               "Hugging Face causal-LM folder), or leave the judge out to find one")
        return load_judge(judge), None
    roots = [run_dir, workbook_folder(model_identity(sampled))]
    found = find_judge(roots, sampled)
    if found is not None:
        return load_judge(found), None
    nearest = find_model(roots, "ar")
    if nearest is not None:
        where = f"the ar model {nearest} is {relation(nearest, sampled)} the sampled model"
    elif any(roots):
        where = f"no ar model under {', '.join(str(r) for r in roots if r)}"
    else:
        where = "the checkpoint is not inside a workbook run folder"
    return None, (f"no independent judge: {where}; train an ar model apart from it (another seed) next to it, or "
                  "pass --judge PATH (an ar run or a HF causal-LM folder)")


def quality_of(gen, loaded, *, judge: str | Path | None = None, run_dir: str | Path | None = None,
               reference: bool = True) -> dict:
    """`sample_quality` of a `sampling.generate.Generation` drawn from `loaded` (`sampling.session.Loaded`)."""
    j, note = judge_for(judge, loaded.run_dir or loaded.path, run_dir)
    return sample_quality(gen.ids, gen.start, loaded.tokenizer, loaded.cfg, judge=j, judge_note=note,
                          reference=reference)
