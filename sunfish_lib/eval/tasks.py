"""Task accuracy: a trained run answers a task folder's test rows, scored by the task's own rules.

How each objective answers (greedy: temperature 0; sample i depends only on its row):

- masked: the row's prompt, then [MASK] up to `data.seq_len`; the sampler (any decoding order: random,
  low_confidence = top probability, margin, with or without ReMDM remasking) fills one position per step, EOS
  allowed; the answer is the text before the first EOS. Rows with an `infill` (reversal) are also asked as the
  statement with the answer span masked, EOS-padded as in training: the `direction` gets the infill answer and
  `direction_qa` the question-form one.
- ar: [EOS as BOS] + prompt, continued left to right (KV cache) to `data.seq_len`; cut at the first EOS.

Accuracy per direction with its binomial SE; each answer keeps its commit order (masked), for AR-ness
(`sampling.analysis.ar_ness`) and the decode-order heatmap.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from sunfish_lib.data.tokenizer import SunfishTokenizer
from sunfish_lib.model.devices import resolve_device
from sunfish_lib.diffusion.masked import MaskSchedule
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.sampling.analysis import ar_ness
from sunfish_lib.sampling.autoregressive import sample_ar
from sunfish_lib.sampling.masked import MaskedSampler
from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.sampling.trajectory import Trajectory
from sunfish_lib.tasks import accuracy, load_task

BATCH = 256


@dataclass
class TaskResult:
    """Accuracy of one run and decoding order on a task: per direction, with worked examples."""

    task: str
    objective: str
    sampler: str
    accuracy: dict[str, float] = field(default_factory=dict)
    stderr: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    ar_ness: float | None = None
    examples: list[dict] = field(default_factory=list)
    trajectory: Trajectory | None = None  # of the first batch (masked): the commit order of row 0 is its heatmap

    def to_dict(self) -> dict:
        return {"task": self.task, "objective": self.objective, "sampler": self.sampler, "accuracy": self.accuracy,
                "stderr": self.stderr, "n": self.n, "ar_ness": self.ar_ness}


def _answer(tok: SunfishTokenizer, ids: torch.Tensor) -> str:
    """Text of generated ids up to the first EOS."""
    ids = ids.tolist()
    if tok.eos_token_id in ids:
        ids = ids[: ids.index(tok.eos_token_id)]
    return tok.decode(ids, skip_special_tokens=True).strip()


def _masked_inputs(tok, rows, T: int, infill: bool) -> tuple[torch.Tensor, list[slice]]:
    """(x (N, T) with [MASK] where the model answers, the answer slice of each row)."""
    x = torch.full((len(rows), T), tok.eos_token_id, dtype=torch.long)
    spans = []
    for i, r in enumerate(rows):
        if infill:
            ids = tok.encode(r["infill"]["text"])
            a = r["infill"]["start"]
            span = slice(a, a + r["infill"]["length"])
        else:
            ids = tok.encode(r["prompt"])
            span = slice(len(ids), T)
        if len(ids) >= T:
            raise SunfishError(f"test row {i}: {len(ids)} tokens do not fit data.seq_len={T}; "
                               "train with a longer data.seq_len")
        x[i, : len(ids)] = torch.tensor(ids)
        x[i, span] = tok.mask_token_id
        spans.append(span)
    return x, spans


def answer_masked(model, cfg, tok, rows, *, sampler: str, remask: float = 0.0, infill: bool = False,
                  seed: int = 0, record: bool = False) -> tuple[list[str], Trajectory | None]:
    """Greedy answers of a masked model, one [MASK] committed per step in the `sampler`'s order."""
    T = cfg.data.seq_len
    dev = next(model.parameters()).device
    answers, first_traj = [], None
    for b in range(0, len(rows), BATCH):
        part = rows[b: b + BATCH]
        x, spans = _masked_inputs(tok, part, T, infill)
        steps = int((x == tok.mask_token_id).sum(1).max())
        s = MaskedSampler(model, tok.mask_token_id, kind=sampler, steps=steps, temperature=0.0, remask=remask,
                          schedule=MaskSchedule(cfg.diffusion.mask_schedule), shift_logits=cfg.diffusion.shift_logits,
                          exclude_ids=[tok.pad_token_id])
        traj = Trajectory(sampler=sampler) if record and first_traj is None else None
        out = s.generate(x.to(dev), noise=RowNoise(seed, range(b, b + len(part))), trajectory=traj)  # row i: (seed, i)
        first_traj = first_traj or traj
        answers += [_answer(tok, out[i, sp].cpu()) for i, sp in enumerate(spans)]
    return answers, first_traj


def answer_ar(model, cfg, tok, rows) -> list[str]:
    """Greedy answers of an AR model: [EOS as BOS] + prompt continued to data.seq_len, grouped by prompt length."""
    T, dev = cfg.data.seq_len, next(model.parameters()).device
    groups = defaultdict(list)
    for i, r in enumerate(rows):
        groups[len(tok.encode(r["prompt"]))].append(i)
    answers = [""] * len(rows)
    for p, idx in groups.items():
        for b in range(0, len(idx), BATCH):
            part = idx[b: b + BATCH]
            prompt = torch.tensor([[tok.eos_token_id] + tok.encode(rows[i]["prompt"]) for i in part], device=dev)
            out = sample_ar(model, prompt, max(1, T - p), temperature=0.0,
                            exclude_ids=[tok.mask_token_id, tok.pad_token_id])
            for j, i in enumerate(part):
                answers[i] = _answer(tok, out[j, p + 1:].cpu())
    return answers


def _score(res: TaskResult, mod, rows, answers, tag: str | None = None, n_examples: int = 3) -> None:
    by = defaultdict(list)
    for r, a in zip(rows, answers):
        key = r.get("direction", "test") + (f"_{tag}" if tag else "")
        ok = bool(mod.score(r, a))
        by[key].append(ok)
        if sum(1 for e in res.examples if e["direction"] == key) < n_examples:
            res.examples.append({"direction": key, "prompt": r["infill"]["text"] if tag is None and "infill" in r
                                 and res.objective == "masked" else r["prompt"],
                                 "expected": r["completion"], "generated": a, "correct": ok})
    for key, oks in by.items():
        res.accuracy[key], res.stderr[key] = accuracy(oks)
        res.n[key] = len(oks)


@torch.no_grad()
def evaluate_task(run, task_dir, *, sampler: str = "margin", remask: float = 0.0, limit: int | None = None,
                  seed: int = 0, device=None, model_bundle=None) -> TaskResult:
    """Accuracy of `run` (run folder, export or .ckpt) on the test rows of `task_dir` (`tasks.make_task`)."""
    meta, rows, mod = load_task(task_dir)
    rows = rows[:limit] if limit else rows
    model, cfg, tok = model_bundle or load_for_inference(run, resolve_device(device))
    if tok is None:
        raise SunfishError(f"{run} has no tokenizer/ folder; evaluate a run trained on the task's tokenizer")
    model.eval()
    objective = cfg.diffusion.objective
    res = TaskResult(meta["task"], objective, sampler if objective == "masked" else "ar")
    if objective == "ar":
        _score(res, mod, rows, answer_ar(model, cfg, tok, rows))
    elif objective == "masked":
        has_infill = [r for r in rows if "infill" in r]
        if has_infill:
            answers, traj = answer_masked(model, cfg, tok, has_infill, sampler=sampler, remask=remask, infill=True,
                                          seed=seed)
            _score(res, mod, has_infill, answers)
            qa, _ = answer_masked(model, cfg, tok, has_infill, sampler=sampler, remask=remask, seed=seed)
            _score(res, mod, has_infill, qa, tag="qa")
        plain = [r for r in rows if "infill" not in r]
        if plain:
            answers, traj = answer_masked(model, cfg, tok, plain, sampler=sampler, remask=remask, seed=seed,
                                          record=True)
            _score(res, mod, plain, answers)
            res.trajectory = traj
            res.ar_ness = ar_ness(traj) if traj is not None else None
    else:
        raise SunfishError(f"task accuracy needs a masked or ar run; {run} is {objective}")
    return res
