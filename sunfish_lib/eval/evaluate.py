"""Likelihood evaluation: one table across objectives, each number labelled for what it is.

- AR: exact NLL, -1/N sum_i log p(x_i | x_<i).
- masked: the continuous-time ELBO (MDLM Eq. 10), an upper bound on the NLL, estimated
  by Monte Carlo over t with antithetic pairs (t, 1 - t) on stratified draws; its
  standard error is reported.
- continuous: the variational bound of the T-step Gaussian chain on the embeddings
  (`diffusion.continuous_bound`: prior KL + the chain's KL terms, VDM Eq. 13, + the decoder's
  -log p(w | z_0)), an upper bound on the NLL, estimated by importance-sampled noise levels.

Units: nats per token, perplexity exp(nats/token), and bits per byte
(nats_total / ln 2 / UTF-8 bytes of exactly the scored tokens) so different tokenizers
compare. Bytes come from per-token byte lengths (`SunfishTokenizer.token_bytes`): special
tokens (EOS, [PAD]) stand for no text and count 0, and a row cut inside a UTF-8 character
counts each byte once (decoding the row would count a U+FFFD, 3 bytes, at each cut).

Each objective computes its own per-sequence figure (`sequence_nats`, `kind`: the shared interface,
`diffusion/objective.py`); this module only aggregates. Scored tokens: each objective's
`scored(batch)` (B, T). The AR baseline built by
`build_objective` reads an EOS as BOS and scores every real token, the same set as the
masked ELBO; sequences are weighted by their scored-token counts, so an all-ones
attention mask changes nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch

from sunfish_lib.data import make_loader
from sunfish_lib.model.devices import resolve_device, resolve_dtype
from sunfish_lib.diffusion import build_objective
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.export import load_for_inference


@dataclass
class LikelihoodResult:
    objective: str
    kind: str  # "exact NLL", "ELBO upper bound", ...
    nats_per_token: float
    stderr: float  # standard error of nats_per_token over sequences (and t draws)
    tokens: int
    sequences: int
    bytes: int | None = None
    t_samples: int = 0

    @property
    def is_likelihood(self) -> bool:
        """True for an NLL or a bound on it; perplexity and bits/byte mean nothing otherwise."""
        return self.kind in ("exact NLL", "ELBO upper bound")

    @property
    def perplexity(self) -> float | None:
        if not self.is_likelihood:
            return None
        # a loose bound (an untrained continuous model's runs to hundreds of nats/token) is an infinite perplexity
        return math.exp(self.nats_per_token) if self.nats_per_token < 700 else math.inf

    @property
    def bits_per_byte(self) -> float | None:
        if not self.bytes or not self.is_likelihood:
            return None
        return self.nats_per_token * self.tokens / math.log(2) / self.bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}


@torch.no_grad()
def evaluate_likelihood(
    model,
    objective,
    batches: Iterable[dict],
    *,
    t_samples: int = 8,
    token_bytes: Sequence[int] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """Validation likelihood of `model` under `objective` over `batches`.

    token_bytes (V,): UTF-8 bytes of each token id (`SunfishTokenizer.token_bytes()`), for
    bits per byte over exactly the tokens `objective.scored(batch)` scores.
    """
    was_training = model.training
    model.eval()
    lengths = None if token_bytes is None else torch.as_tensor(token_bytes, dtype=torch.long)
    per_seq, weights, n_bytes = [], [], 0
    for batch in batches:
        per_seq.append(objective.sequence_nats(model, batch, t_samples, generator))
        scored = objective.scored(batch)  # (B, T) bool
        weights.append(scored.sum(1).double())
        if lengths is not None:
            n_bytes += int(lengths.to(scored.device)[batch["input_ids"]][scored].sum())
    model.train(was_training)
    if not per_seq:
        raise ValueError("evaluate_likelihood got no batches")
    v, w = torch.cat(per_seq), torch.cat(weights)
    mean = (v * w).sum() / w.sum()
    # SE of a ratio estimator (token-weighted mean over sequences)
    se = torch.sqrt(((w * (v - mean)) ** 2).sum()) / w.sum()
    return LikelihoodResult(objective.name, objective.kind, mean.item(), se.item(), int(w.sum().item()), len(v),
                            n_bytes or None, objective.t_draws(t_samples))


def evaluate_run(path, *, val_batches: int = 20, t_samples: int = 16, seed: int = 0, device=None,
                 dtype=None) -> LikelihoodResult:
    """Validation likelihood of a run folder, exported folder or .ckpt on its own data config.

    The held-out documents of `data.source` (the same split training never saw), the first
    `val_batches` batches; bits per byte over the scored tokens' bytes (`token_bytes`). device: None is the
    best available (`devices.best_device`); dtype: the weights' (float32 default).
    """
    if val_batches < 1 or t_samples < 1:
        raise SunfishError(f"val_batches={val_batches} and t_samples={t_samples} must both be >= 1")
    if not 0 <= seed < 2**32:
        raise SunfishError(f"seed={seed} must be an integer in [0, 2**32 - 1] (the range torch seeds from)")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    model, cfg, tok = load_for_inference(path, dev)
    model = model.to(dtype=dt)
    if tok is None:
        raise SunfishError(f"{path} has no tokenizer/ folder; evaluate a run folder or an exported model")
    batches = []
    for b in make_loader(cfg.data, tok, "validation", seed=cfg.seed, num_workers=0):
        batches.append({k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in b.items()
                        if not k.startswith("_")})
        if len(batches) == val_batches:
            break

    objective = build_objective(cfg, tok.mask_token_id, tok.eos_token_id)
    return evaluate_likelihood(model, objective, batches, t_samples=t_samples, token_bytes=tok.token_bytes(),
                               generator=torch.Generator(device=dev).manual_seed(seed))


def unigram_baseline(cfg, tok, *, val_batches: int = 20, train_batches: int = 200) -> dict:
    """The plateau a model with no context sits on: a unigram model of the training split, on held-out text.

    Token frequencies of the first `train_batches` training batches (add-1/2 smoothed over the
    vocabulary) score the same held-out batches `evaluate_run` reads. Returns nats/token (the
    "corpus unigram entropy" a masked ELBO is compared with, in the same token units), bits
    per byte (comparable across tokenizers) and the token count.
    """
    counts: Counter = Counter()
    for i, b in enumerate(make_loader(cfg.data, tok, "train", seed=cfg.seed, num_workers=0)):
        if i == train_batches:
            break
        counts.update(b["input_ids"].flatten().tolist())
    total, V = sum(counts.values()), len(tok)
    nbytes = tok.token_bytes()
    nats, n_tok, n_bytes = 0.0, 0, 0
    for i, b in enumerate(make_loader(cfg.data, tok, "validation", seed=cfg.seed, num_workers=0)):
        if i == val_batches:
            break
        ids = b["input_ids"]
        nats -= sum(math.log((counts[t] + 0.5) / (total + 0.5 * V)) for t in ids.flatten().tolist())
        n_tok += ids.numel()
        n_bytes += sum(nbytes[t] for t in ids.flatten().tolist())  # the scored tokens' own bytes, as evaluate_run
    return {"kind": "unigram NLL (no context)", "nats_per_token": nats / n_tok,
            "bits_per_byte": nats / math.log(2) / n_bytes, "tokens": n_tok}


def batches_unigram_nats(cfg, tok, n_batches: int) -> float:
    """The loss a model with no context reaches on the first `n_batches` training batches (the overfit check's
    fixed batches): the entropy, in nats/token, of their own token frequencies. A model that fits them below
    this uses context, whatever its objective (a masked ELBO and an AR NLL both sit at it without context)."""
    counts: Counter = Counter()
    for i, b in enumerate(make_loader(cfg.data, tok, "train", seed=cfg.seed, num_workers=0)):
        if i == n_batches:
            break
        counts.update(b["input_ids"].flatten().tolist())
    total = sum(counts.values())
    if not total:
        raise SunfishError(f"the first {n_batches} training batches hold no tokens: check data.source")
    return -sum(c / total * math.log(c / total) for c in counts.values())
