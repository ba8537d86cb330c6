"""lm-evaluation-harness adapter: the `sunfish` model for any run folder, export or .ckpt.

Importing this module registers it with lm_eval (`lm_eval.simple_evaluate(model="sunfish",
model_args={"path": RUN})`); `sunfish eval-harness RUN --tasks ...` does that for you, and
`python -m sunfish_lib.eval.harness --model sunfish --model_args path=RUN --tasks ...` is the
lm_eval command line with the model registered.

What a score means, by objective:
- ar: log p(continuation | context), exact (teacher forcing under the causal mask);
- masked: a Monte-Carlo ELBO, a lower bound on log p(continuation | context): the context
  stays clean and only continuation tokens are masked, `draws` times (LLaDA's estimator,
  Nie et al. 2025, Eq. 6, as their lm-eval integration computes it);
- continuous: the chain's variational bound on log p(continuation | context)
  (`diffusion.continuous_bound`): only continuation positions are scored, the context is
  noised afresh at each level as the infill sampler holds it; `draws` KL draws.
"""

from __future__ import annotations

import sys

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from sunfish_lib.diffusion import build_objective
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling.session import Loaded, sample
from sunfish_lib.io.export import load_for_inference

NO_LIKELIHOOD = ("sunfish: this model's objective has no token likelihood or bound to score with; "
                 "use generation tasks, or a masked, continuous or ar run")


@register_model("sunfish")
class SunfishLM(LM):
    """lm_eval model over a Sunfish checkpoint; model_args: path, draws (masked ELBO), seed, device, batch_size."""

    def __init__(self, path: str, draws: int = 32, seed: int = 0, device: str | None = None,
                 batch_size: int | str = 16, **_ignored):
        super().__init__()
        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            if device is not None:  # lm_eval's command line defaults to cuda:0
                print(f"sunfish: device {device} is not available; evaluating on the CPU", file=sys.stderr)
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.cfg, self.tok = load_for_inference(path, device)
        if self.tok is None:
            raise SunfishError(f"sunfish: {path} has no tokenizer; pass a run folder or an export")
        self.objective = build_objective(self.cfg, mask_token_id=self.tok.mask_token_id)
        self.draws, self.seed = int(draws), int(seed)
        if self.draws < 1:
            raise SunfishError(f"sunfish: draws={draws} must be >= 1 (Monte-Carlo samples of the masked ELBO)")
        self.batch = int(batch_size) if str(batch_size).isdigit() else 16
        self._device = torch.device(device)  # lm_eval.LM.device reads it
        self.max_len = self.cfg.model.max_seq_len
        self.eos = self.tok.backend.token_to_id(self.tok.eos_token)

    # -- lm_eval interface -------------------------------------------------------
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return [self.score(ctx, cont) for ctx, cont in (r.args for r in requests)]

    def loglikelihood_rolling(self, requests) -> list[float]:
        """log p(text) (or its ELBO): windows of max_seq_len / 2 tokens, each given up to the text before it."""
        out = []
        for (text,) in (r.args for r in requests):
            ids, step = self.tok.encode(text), max(1, self.max_len // 2)
            out.append(sum(self._score_ids(ids[:i], ids[i:i + step])[0] for i in range(0, len(ids), step)))
        return out

    def generate_until(self, requests) -> list[str]:
        return [self.complete(ctx, dict(kw)) for ctx, kw in (r.args for r in requests)]

    # -- scoring -----------------------------------------------------------------
    def score(self, context: str, continuation: str) -> tuple[float, bool]:
        """(log p or its ELBO of the continuation's tokens given the context, whether greedy decoding yields them)."""
        ctx = self.tok.encode(context) if context else []
        return self._score_ids(ctx, self.tok.encode(continuation))

    def _score_ids(self, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
        if not self.objective.likelihood:
            raise SunfishError(NO_LIKELIHOOD)
        if not cont:
            return 0.0, True
        cont = cont[-(self.max_len - 1):]
        ids = ([self.eos] + ctx)[-(self.max_len - len(cont)):] + cont  # EOS opens a document, as in training
        x = torch.tensor(ids, device=self.device)[None]  # (1, T)
        g = torch.Generator(device=self.device).manual_seed(self.seed)
        return self.objective.continuation_score(self.model, x, len(cont), draws=self.draws, batch=self.batch,
                                                 generator=g)

    # -- generation --------------------------------------------------------------
    def complete(self, context: str, gen_kwargs: dict) -> str:
        """Sample up to max_gen_toks tokens after the context with the run's sampler; cut at the first stop string."""
        until = gen_kwargs.pop("until", None) or [self.tok.eos_token]
        until = ([until] if isinstance(until, str) else list(until)) + [self.tok.eos_token]
        length = int(gen_kwargs.pop("max_gen_toks", self.cfg.sample.length))
        length = max(1, min(length, self.max_len - 1))
        ctx = self.tok.encode(context)[-(self.max_len - length):]
        # lm_eval's default (as HF generate's) is greedy: temperature 0 unless do_sample with a temperature
        temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0) if gen_kwargs.get("do_sample", True) else 0.0
        settings = {"length": length, "num_samples": 1, "temperature": temperature}
        out = sample(Loaded(self.model, self.cfg, self.tok), prompt=self.tok.decode(ctx), seed=self.seed, **settings)
        text = self.tok.decode(out.ids[0, (out.start[0] != self.tok.mask_token_id).sum().item():].tolist())
        cut = min([i for i in (text.find(s) for s in until) if i >= 0], default=len(text))
        return text[:cut]


if __name__ == "__main__":  # the lm_eval command line with `sunfish` registered
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
