"""The closing "what this showed" lines and the helpers the notebooks call instead of inline logic."""

import math
from types import SimpleNamespace

import pytest
import torch

from sunfish_lib.data.summary import batch_with_boundary, document_lines, packed_row_lines, stats_table
from sunfish_lib.diffusion.analysis import alpha_bar_at, recovery_drop
from sunfish_lib.eval.compare import budget_comparison
from sunfish_lib.notebook.findings import (check_findings, compare_findings, conversion_findings, data_findings,
                                           likelihood_findings, overfit_findings,
                                           overfit_verdict, schedule_findings)
from sunfish_lib.notebook.workbook import likelihood_notes

TABLE = [  # likelihood_table rows: masked 0.05 above AR with SEs 0.02 (within 2 SE), continuous on the plateau
    {"model": "masked", "nats_per_token": 5.05, "stderr": 0.02, "perplexity": math.exp(5.05)},
    {"model": "ar", "nats_per_token": 5.00, "stderr": 0.02, "perplexity": math.exp(5.00)},
    {"model": "block", "nats_per_token": 5.03, "stderr": 0.02, "perplexity": math.exp(5.03)},
    {"model": "continuous", "nats_per_token": 5.9, "stderr": 0.05, "perplexity": math.exp(5.9)},
    {"model": "unigram", "nats_per_token": 5.85, "stderr": 0.0, "perplexity": math.exp(5.85)},
]


def test_likelihood_findings_use_the_tie_rule_and_the_plateau():
    text = likelihood_findings(TABLE)
    assert text.splitlines() == [
        "- lowest held-out nats/token: ar 5.000 ± 0.020; within 2 SE of it: masked, block",
        "- masked ELBO minus AR NLL: 0.050 nats/token, within noise (a tie)",
        "- below the unigram plateau (5.850 nats/token) by more than 2 SE: masked, ar, block; still on it: continuous",
    ]
    apart = [{**r, "stderr": 0.01} if r["model"] in ("masked", "ar") else r for r in TABLE]
    assert "0.050 nats/token, more than 2 SE apart" in likelihood_findings(apart)  # 0.05 > 2 * hypot(0.01, 0.01)


def test_likelihood_notes_place_block_between_ar_and_masked():
    assert likelihood_notes(TABLE) == ["masked/AR perplexity ratio 1.05", "block 4 closes 0.40 of the masked-AR gap in nats/token",
                                       "masked ELBO / unigram NLL 0.86", "continuous bound / unigram NLL 1.01"]


def test_overfit_verdict_averages_the_tail_and_needs_two_se_below_no_context():
    losses = [8.0] * 12 + [4.0, 4.2, 3.8, 4.0]  # tail (a quarter): mean 4.0, SE 0.0816
    v = overfit_verdict(losses, no_context_nats=4.5)
    assert (v["losses"], v["final_loss"], round(v["stderr"], 4), v["passed"]) == (4, 4.0, 0.0816, True)
    assert not overfit_verdict(losses, no_context_nats=4.15)["passed"]  # 4.0 + 2 * 0.0816 > 4.15
    assert overfit_findings(v, "masked", 200) == (
        "PASS: masked loss 8.000 -> 4.000 ± 0.082 (mean of the last 4 logged) after 200 steps; without context "
        "these batches cost 4.500 nats/token, so the model fits them using context")


def test_check_and_data_findings_read_their_inputs():
    results = [SimpleNamespace(name="python", ok=True, detail="3.11"),
               SimpleNamespace(name="tiny model fwd+bwd", ok=False, detail="64 ms")]
    assert check_findings(results) == ("- 1 of 2 installation checks pass; failing: tiny model fwd+bwd (see the table's "
                                       "fixes)\n- tiny model fwd+bwd: 64 ms")
    summary = {"documents": 3, "tokens": 120000, "chars_per_token": 3.2, "packing_efficiency": 1.0,
               "documents_per_sequence": 0.0062, "documents_split_per_sequence": 1.0}
    lines = data_findings(summary, 200000.0, 4000.0).splitlines()
    assert lines[0] == "- 3 documents, 120,000 tokens, 3.200 characters per token"
    assert lines[2] == "- pipeline 200,000 tokens/s vs a tiny training step's 4,000: 50.0x, data loading is not the bottleneck"
    assert data_findings(summary, 100.0, 4000.0).endswith("data loading IS the bottleneck")


def test_alpha_bar_at_uses_step_of_and_schedule_findings_name_the_extremes():
    at = alpha_bar_at(["sqrt", "cosine"], 1000, (0.1, 0.5, 0.9))
    assert at["sqrt"][0.5] == pytest.approx(1 - math.sqrt(0.5 + 1e-4), rel=2e-2)  # Diffusion-LM's closed form
    assert at["cosine"][0.5] == pytest.approx(math.cos((0.5 + 0.008) / 1.008 * math.pi / 2) ** 2, abs=2e-3)
    recovery = {"sqrt": {"t": [0.1, 0.3, 0.5], "accuracy": [0.9, 0.4, 0.1]},
                "cosine": {"t": [0.1, 0.3, 0.5], "accuracy": [1.0, 0.9, 0.8]}}
    assert (recovery_drop(recovery["sqrt"]), recovery_drop(recovery["cosine"])) == (0.3, None)
    lines = schedule_findings(at, recovery).splitlines()
    assert lines[0].endswith("; rounding recovers under half the tokens from t = 0.3")
    assert lines[1].endswith("; rounding recovers over half the tokens at every t measured")
    assert lines[2] == "- at t=0.5 the most signal is left by cosine, the least by sqrt"


class _Tok:
    eos_token_id = 0

    def decode(self, ids):
        return "".join("|" if i == 0 else chr(96 + i) for i in ids)


def test_data_views_are_one_line_per_item():
    assert document_lines(["TITLE\n\nby someone\nmore", ""]) == ["TITLE: 22 characters, 4 lines",
                                                                  "(empty): 0 characters, 1 lines"]
    assert stats_table({"documents": 3, "tokens": 10, "chars_per_token": 3.14159, "sequences": 2,
                        "packing_efficiency": 0.99876, "documents_per_sequence": 1.5,
                        "documents_split_per_sequence": 0.5, "skipped_documents": {"empty": 2}})[2:5] == [
        {"statistic": "chars per token", "value": "3.14"}, {"statistic": "sequences", "value": 2},
        {"statistic": "packing efficiency", "value": "0.999"}]
    batch = {"input_ids": torch.tensor([[1, 2, 0, 3], [4, 5, 6, 7]])}
    assert packed_row_lines(batch, _Tok()) == ["row 0: EOS at 2; starts 'ab|c', ends 'ab|c'",
                                               "row 1: no EOS (inside one document); starts 'defg', ends 'defg'"]
    plain, with_eos = {"input_ids": torch.tensor([[1, 2]])}, {"input_ids": torch.tensor([[1, 0]])}
    assert batch_with_boundary([plain, plain, with_eos], 0) == (with_eos, 2)
    assert batch_with_boundary([plain, plain, with_eos], 0, max_batches=2) == (plain, 0)


def test_compare_findings_name_the_lowest_its_ties_and_blocks_place():
    rows = {name: {"objective": name, "eval_kind": "ELBO upper bound", "bits_per_byte": 1.5, "passes_per_token": 1.0,
                   **r} for name, r in {k["model"]: k for k in TABLE[:3]}.items()}
    text = compare_findings(rows)
    assert "- masked (masked, ELBO upper bound): 5.050 ± 0.020 nats/token, 1.500 bits/byte, 1.00 passes/token" in text
    assert "Lowest held-out nats/token: ar (ar); within 2 SE of it (a tie): masked, block." in text
    assert text.endswith("Block diffusion closes 0.40 of the masked-AR gap in nats/token (1: as good as AR, 0: as masked).")


def test_conversion_findings_warn_when_the_baseline_is_on_the_plateau():
    evals = {"converted": {4: {"nats_per_token": 5.0, "stderr": 0.02}},
             "from scratch": {4: {"nats_per_token": 5.84, "stderr": 0.02}}}
    comparison = budget_comparison(evals, unigram_nats=5.85, baseline="from scratch")
    q = {"judge": "/runs/x/ar-judge", "judge_ppl": 40.0, "reference_judge_ppl": 100.0, "entropy": 4.0,
         "reference_entropy": 5.0}
    lines = conversion_findings(max_abs_diff=1e-6, families=["llama"], ar_steps=100,
                                ar_nll={"nats_per_token": 4.9, "stderr": 0.01}, unigram_nats=5.85,
                                comparison=comparison, best="converted",
                                quality={"converted": q, "from scratch": {**q, "judge_ppl": 90.0}}).splitlines()
    assert lines[0] == "- Conversion is exact: converted logits match the Hugging Face parents to 1.0e-06 (llama)."
    assert lines[1] == "- AR parent (100 steps): exact NLL 4.900 ± 0.010 nats/token; unigram model 5.850."
    assert lines[2].startswith("- 4 steps: converted lowest at 5.000 ± 0.020 nats/token; from scratch 5.840 ± 0.020 is")
    assert lines[3].startswith("- At 4 steps the from-scratch model is still on the unigram plateau")
    assert lines[4].startswith("- Samples under an independent judge (ar-judge): converted 40.0, from scratch 90.0")


def test_batches_unigram_nats_is_the_entropy_of_the_fixed_batches_token_counts():
    from collections import Counter
    from itertools import islice

    from sunfish_lib.config import get_config
    from sunfish_lib.data import get_tokenizer, make_loader
    from sunfish_lib.eval.evaluate import batches_unigram_nats

    cfg = get_config("smoke", {"objective": "masked", "sampler": "ancestral"})
    tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    ids = [t for b in islice(iter(make_loader(cfg.data, tok, "train", seed=cfg.seed, num_workers=0)), 2)
           for t in b["input_ids"].flatten().tolist()]
    counts = Counter(ids)
    assert len(ids) == 256 and len(counts) < 256  # 2 batches of 4 x 32 tokens, some repeated
    expected = -sum(c / 256 * math.log(c / 256) for c in counts.values())
    assert batches_unigram_nats(cfg, tok, 2) == pytest.approx(expected) == pytest.approx(4.416, abs=1e-3)
