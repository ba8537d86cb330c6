"""What each notebook showed: the closing cell's lines, read from the run's own results.

Every workbook notebook ends with a "what this showed" cell that prints these lines (and the run's
summary.md quotes them, `report.closing_text`). Figures are written by `tables.number`; verdicts that
depend on noise (a tie, a plateau) come from `eval.compare`'s helpers, never from a cell.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from sunfish_lib.diffusion.analysis import recovery_drop
from sunfish_lib.eval.compare import TIE_SE, best_and_ties, budget_lines, left_plateau, within_noise
from sunfish_lib.notebook.tables import number


def _lines(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def check_findings(results: Sequence[Any]) -> str:
    """00: how many installation checks passed, which failed, and the backbone's timing line."""
    failed = [r.name for r in results if not r.ok]
    lines = [f"{len(results) - len(failed)} of {len(results)} installation checks pass"
             + (f"; failing: {', '.join(failed)} (see the table's fixes)" if failed else "")]
    lines += [f"{r.name}: {r.detail}" for r in results if r.name == "tiny model fwd+bwd"]
    return _lines(lines)


def estimate_findings(rep: Mapping[str, Any], advice: Mapping[str, Any], flops_per_token: float) -> str:
    """01: the chosen setup's peak and per-GPU need, whether it fits, the cheapest change for its strategy
    (`sizing.estimate.advise`'s line), and the training FLOPs per token."""
    s, gib = rep["settings"], rep["memory"]["total"] / 2**30
    need = max((v["needed_gb"] for v in rep["verdicts"]), default=None)
    lines = [f"{s['strategy']} over {s['n_gpus']} GPU(s), {s['precision']}: peak {number(gib)} GiB per GPU, needs "
             f"{number(need)} GiB with slack and context: {'fits' if rep['fits'] else 'does not fit'}"]
    lines += [r["line"] for r in advice["strategies"] if r["strategy"] == s["strategy"]]
    lines.append(f"training costs {number(flops_per_token / 1e9)} GFLOPs per token")
    return _lines(lines)


def data_findings(summary: Mapping[str, Any], pipeline_tps: float, train_tps: float) -> str:
    """02: documents and tokens read, packing, and whether the pipeline outruns a training step."""
    ratio = pipeline_tps / train_tps
    return _lines([
        f"{number(summary['documents'])} documents, {number(summary['tokens'])} tokens, "
        f"{number(summary['chars_per_token'])} characters per token",
        f"packing efficiency {number(summary['packing_efficiency'])}, {number(summary['documents_per_sequence'])} "
        f"documents end per sequence, {number(summary['documents_split_per_sequence'])} of sequences continue a document",
        f"pipeline {number(float(pipeline_tps))} tokens/s vs a tiny training step's {number(float(train_tps))}: "
        f"{ratio:,.1f}x, " + ("data loading is not the bottleneck" if ratio >= 1 else "data loading IS the bottleneck"),
    ])


OVERFIT_TAIL = 0.25
"""The share of the logged training losses, at the end of the curve, the overfit verdict averages."""


def overfit_verdict(losses: Sequence[float], no_context_nats: float) -> dict:
    """03's verdict: the mean of the last OVERFIT_TAIL of the logged losses, with its standard error, and PASS
    when it sits more than `eval.compare.TIE_SE` SE below `no_context_nats` (the fixed batches' own unigram
    entropy, `eval.evaluate.batches_unigram_nats`): the model fits the batches using context. A masked loss
    is noisy (a fresh mask and t every step), hence a mean with its SE rather than one step's loss."""
    tail = list(losses[-max(2, round(len(losses) * OVERFIT_TAIL)):])
    mean = sum(tail) / len(tail)
    se = math.sqrt(sum((x - mean) ** 2 for x in tail) / (len(tail) - 1) / len(tail))
    est = {"nats_per_token": mean, "stderr": se}
    return {"passed": left_plateau(est, no_context_nats), "final_loss": mean, "stderr": se, "losses": len(tail),
            "initial_loss": losses[0], "no_context": no_context_nats}


def overfit_findings(verdict: Mapping[str, Any], objective: str, steps: int) -> str:
    """03: PASS/FAIL, the loss it reached (± SE) against the batches' no-context loss, and how far it fell."""
    return (f"{'PASS' if verdict['passed'] else 'FAIL'}: {objective} loss {number(verdict['initial_loss'], 'nats_per_token')}"
            f" -> {number(verdict['final_loss'], 'nats_per_token')} ± {number(verdict['stderr'], 'stderr')} (mean of the "
            f"last {verdict['losses']} logged) after {number(steps)} steps; without context these batches cost "
            f"{number(verdict['no_context'], 'nats_per_token')} nats/token, so the model "
            + ("fits them using context" if verdict["passed"] else f"is not {TIE_SE:g} SE below that"))


def likelihood_findings(table: Sequence[Mapping[str, Any]]) -> str:
    """04: the lowest held-out bound and its ties (within `TIE_SE` SE), masked against AR, each model
    against the unigram plateau. table: `workbook.likelihood_table` rows (the unigram row last)."""
    rows = {r["model"]: r for r in table if r["model"] != "unigram" and r.get("stderr") is not None}
    unigram = next(r["nats_per_token"] for r in table if r["model"] == "unigram")
    best, ties = best_and_ties(rows)
    lines = []
    if best is not None:
        lines.append(f"lowest held-out nats/token: {best} {number(rows[best]['nats_per_token'], 'nats_per_token')} ± "
                     f"{number(rows[best]['stderr'], 'stderr')}" + (f"; within {TIE_SE:g} SE of it: "
                     f"{', '.join(ties)}" if ties else f"; no other model within {TIE_SE:g} SE"))
    if {"masked", "ar"} <= set(rows):
        m, a = rows["masked"], rows["ar"]
        gap = m["nats_per_token"] - a["nats_per_token"]
        lines.append(f"masked ELBO minus AR NLL: {number(gap, 'nats_per_token')} nats/token, "
                     + ("within noise (a tie)" if within_noise(m, a) else f"more than {TIE_SE:g} SE apart"))
    learned = [k for k in rows if left_plateau(rows[k], unigram)]
    stuck = [k for k in rows if k not in learned]
    lines.append(f"below the unigram plateau ({number(unigram, 'nats_per_token')} nats/token) by more than "
                 f"{TIE_SE:g} SE: {', '.join(learned) or 'none'}" + (f"; still on it: {', '.join(stuck)}" if stuck else ""))
    return _lines(lines)


def schedule_findings(alpha_at: Mapping[str, Mapping[float, float]], recovery: Mapping[str, Mapping[str, list]]) -> str:
    """05: which schedule keeps the most signal at mid-chain, and where rounding recovery drops below half.
    alpha_at: `diffusion.analysis.alpha_bar_at`; recovery: `diffusion.analysis.recovery_accuracy`'s result."""
    lines = []
    for kind, at in alpha_at.items():
        r = recovery.get(kind)
        half = recovery_drop(r) if r else None
        lines.append(f"{kind}: alpha_bar " + " / ".join(f"{number(v)} at t={number(t)}" for t, v in at.items())
                     + (f"; rounding recovers under half the tokens from t = {number(half)}" if half is not None
                        else "; rounding recovers over half the tokens at every t measured" if r else ""))
    t_mid = sorted(next(iter(alpha_at.values())))[len(next(iter(alpha_at.values()))) // 2]
    mid = {k: at[t_mid] for k, at in alpha_at.items()}
    lines.append(f"at t={number(t_mid)} the most signal is left by {max(mid, key=mid.get)}, the least by "
                 f"{min(mid, key=mid.get)}")
    return _lines(lines)


def tradeoff_findings(rows: Sequence[Mapping[str, Any]]) -> str:
    """06: each drawn setting's forward passes per token against its entropy and judge perplexity
    (`tradeoff.TradeoffLog.rows`), then the cheapest setting."""
    if not rows:
        return "- no generation ran: see the panel's error above"
    lines = [f"{r['settings']}: {number(r['passes_per_token'], 'passes_per_token')} passes/token, entropy "
             f"{number(r['entropy'], 'entropy')} nats, judge perplexity {number(r['judge_ppl'], 'judge_ppl')}" for r in rows]
    cheap, dear = min(rows, key=lambda r: r["passes_per_token"]), max(rows, key=lambda r: r["passes_per_token"])
    if cheap is not dear:
        lines.append(f"fewest passes per token: {cheap['settings']}, "
                     f"{number(dear['passes_per_token'] / cheap['passes_per_token'], 'passes_per_token')}x fewer than "
                     f"{dear['settings']}")
    return _lines(lines)


def trajectory_findings(trajectories: Mapping[str, Any], row: int = 0) -> str:
    """07: per model, the steps recorded, how often tokens changed against how many were committed, and the
    entropy of the sampler's distributions at the first and last step (`sampling.analysis`)."""
    from sunfish_lib.sampling import analysis  # lazy: torch (1.6 s); the other findings and the summary need none

    lines = []
    for name, t in trajectories.items():
        changes, commits = int(analysis.changed(t, row).sum()), int(analysis.committed(t, row).sum())
        ent = analysis.step_entropy(t, row)
        lines.append(f"{name}: {len(t)} steps, {changes} token changes for {commits} committed positions "
                     f"({number(changes / max(commits, 1), 'passes_per_token')} changes per position); entropy "
                     f"{number(ent[0], 'entropy')} -> {number(ent[-1], 'entropy')} nats")
    return _lines(lines)


def conversion_findings(*, max_abs_diff: float, families: Sequence[str], ar_steps: int, ar_nll: Mapping[str, float],
                        unigram_nats: float, comparison: Sequence[Mapping[str, Any]], best: str,
                        quality: Mapping[str, Mapping[str, Any]]) -> str:
    """08: the conversion's logit check, the AR parent against the unigram model, each budget's comparison
    (`eval.compare.budget_lines`), the plateau warning, and the samples under an independent judge.
    quality: {best, "from scratch"}: `eval.quality.quality_of` figures."""
    final = comparison[-1]
    lines = [f"Conversion is exact: converted logits match the Hugging Face parents to {max_abs_diff:.1e} "
             f"({', '.join(families)}).",
             f"AR parent ({ar_steps} steps): exact NLL {ar_nll['nats_per_token']:.3f} ± {ar_nll['stderr']:.3f} nats/token; "
             f"unigram model {unigram_nats:.3f}.", *budget_lines(comparison)]
    if not final["baseline_left_plateau"]:
        lines.append(f"At {final['steps']} steps the from-scratch model is still on the unigram plateau: any lead of the "
                     "converted models is over one that has learned no context yet; a fair gap needs a longer scratch run.")
    q_best, q_scratch = quality[best], quality["from scratch"]
    if q_best["judge_ppl"] is not None:
        lines.append(f"Samples under an independent judge ({Path(q_best['judge']).name}): {best} {q_best['judge_ppl']:.1f}, "
                     f"from scratch {q_scratch['judge_ppl']:.1f}, held-out text {q_best['reference_judge_ppl']:.1f}; "
                     f"sample entropy {q_best['entropy']:.2f} and {q_scratch['entropy']:.2f} nats "
                     f"(held-out {q_best['reference_entropy']:.2f}).")
    return _lines(lines)


def compare_findings(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """09: each run's held-out likelihood, bits/byte and passes/token, the lowest and its ties (within
    `TIE_SE` SE), and where block diffusion sits between masked and AR. rows: {short name: compare metrics row}."""
    best, ties = best_and_ties(rows)
    lines = [f"- {name} ({r['objective']}, {r['eval_kind']}): {r['nats_per_token']:.3f} ± {r['stderr']:.3f} nats/token, "
             f"{r['bits_per_byte']:.3f} bits/byte, {r['passes_per_token']:.2f} passes/token" for name, r in rows.items()]
    if best is not None:
        lines.append(f"\nLowest held-out nats/token: {best} ({rows[best]['objective']})"
                     + (f"; within {TIE_SE:g} SE of it (a tie): {', '.join(ties)}." if ties
                        else f"; no other run is within {TIE_SE:g} SE."))
    by = {r["objective"]: r for r in rows.values()}
    if {"ar", "block", "masked"} <= set(by):
        gap = (by["masked"]["nats_per_token"] - by["block"]["nats_per_token"]) / (
            by["masked"]["nats_per_token"] - by["ar"]["nats_per_token"])
        lines.append(f"Block diffusion closes {gap:.2f} of the masked-AR gap in nats/token (1: as good as AR, 0: as masked).")
    return "\n".join(lines) if lines else "no run here reports a likelihood"
