"""Reading a recorded `Trajectory`: what changed and what was committed at each step, entropy, heatmaps.

All functions look at one batch row and return plain tensors/arrays/strings (no plotting):
`plots` (06/07 group) draws them, `widgets.TrajectoryViewer` and notebook 07 show them.

- changed (S, T): the token at a position differs from the step before (step 0: from
  `start`, the ids the sampler was given).
- committed (S, T): newly fixed at this step. Masked samplers record it (a [MASK] became a
  token); continuous samplers have no commit, so a position counts as committed at the
  first step from which its rounded prediction stays at its final token.
- entropy per step: mean entropy (nats) of the token distribution the sampler drew from,
  over the positions still undecided before the step (masked) or every generated
  position (continuous).
"""

from __future__ import annotations

import html

import numpy as np
import torch

from sunfish_lib.errors import SunfishError
from sunfish_lib.data.pieces import NEWLINE, decode_pieces

STATES = ("context", "mask", "committed", "changed", "same")
HEATMAP_FIELDS = {"confidence": "p(token) of the proposal", "distance": "distance to nearest embedding",
                  "masked": "mask state (1 = [MASK])", "entropy": "entropy (nats)"}


def _check_row(traj, row: int) -> None:
    if not len(traj):
        raise SunfishError("the trajectory has no steps; sample with record=True (or --trajectory FILE)")
    B = traj.steps[0]["tokens"].shape[0]
    if not 0 <= row < B:
        raise SunfishError(f"row={row} is out of range; this trajectory holds {B} samples (0..{B - 1})")


def tokens(traj, row: int = 0) -> torch.Tensor:
    """Token ids at every step, (S, T)."""
    _check_row(traj, row)
    return traj.stack("tokens")[:, row]


def start_ids(traj, row: int = 0) -> torch.Tensor | None:
    """What the sampler was given, (T,), or None for trajectories recorded without it."""
    return None if traj.start is None else traj.start[row]


def generated(traj, row: int = 0) -> torch.Tensor:
    """(T,) bool: positions the sampler generated (not prompt context)."""
    start, mask_id = start_ids(traj, row), traj.meta.get("mask_id")
    T = tokens(traj, row).shape[1]
    if start is None or mask_id is None:
        return torch.ones(T, dtype=torch.bool)
    return start == mask_id


def changed(traj, row: int = 0) -> torch.Tensor:
    """(S, T) bool: the token differs from the previous step's (step 0: from `start`)."""
    tok = tokens(traj, row)
    start = start_ids(traj, row)
    prev = torch.cat([(start if start is not None else tok[0])[None], tok[:-1]])
    return tok != prev


def committed(traj, row: int = 0) -> torch.Tensor:
    """(S, T) bool: newly committed at each step (see module docstring)."""
    if "committed" in traj.fields():
        return traj.stack("committed")[:, row].bool()
    tok = tokens(traj, row)
    settled = (tok == tok[-1][None]).flip(0).long().cumprod(0).flip(0).bool()  # (S, T) equal to final from here on
    first = settled & ~torch.cat([torch.zeros_like(settled[:1]), settled[:-1]])
    return first & generated(traj, row)[None]


def step_entropy(traj, row: int = 0) -> list[float]:
    """Mean entropy (nats) per step over the positions being decided (see module docstring)."""
    if "entropy" not in traj.fields():
        raise SunfishError("this trajectory has no entropy field; record it again with the current samplers")
    ent = traj.stack("entropy")[:, row].double()  # (S, T)
    if "masked" in traj.fields():
        masked = traj.stack("masked")[:, row].bool()
        before = torch.cat([generated(traj, row)[None], masked[:-1]])  # undecided when the step began
    else:
        before = generated(traj, row)[None].expand_as(ent)
    counts = before.sum(1).clamp(min=1)
    return ((ent * before).sum(1) / counts).tolist()


def heatmap(traj, field: str, row: int = 0) -> np.ndarray:
    """One recorded field as a (positions, steps) float array (`masked`: 1 where [MASK])."""
    have = [f for f in traj.fields() if f in HEATMAP_FIELDS]
    if field not in have:
        raise SunfishError(f"trajectory field {field!r} was not recorded; this one has {', '.join(have) or 'none'}")
    _check_row(traj, row)
    return traj.stack(field)[:, row].double().T.numpy()  # (T, S)


def fields_for(traj) -> list[str]:
    """The heatmap fields this trajectory has (masked: confidence, masked, entropy; continuous: distance, entropy)."""
    return [f for f in HEATMAP_FIELDS if f in traj.fields()]


def step_tokens(tokenizer, traj, step: int, row: int = 0) -> list[tuple[str, str]]:
    """(text, state) per position at `step`; state is one of STATES (newly committed wins over changed)."""
    tok = tokens(traj, row)
    if not 0 <= step < tok.shape[0]:
        raise SunfishError(f"step={step} is out of range; this trajectory has steps 0..{tok.shape[0] - 1}")
    ch, cm, gen = changed(traj, row)[step], committed(traj, row)[step], generated(traj, row)
    mask_id = tokenizer.mask_token_id
    ids = tok[step].tolist()
    out = []
    for t, (i, piece) in enumerate(zip(ids, decode_pieces(tokenizer, ids))):  # UTF-8 characters kept whole
        state = ("context" if not gen[t] else "mask" if i == mask_id else "committed" if cm[t]
                 else "changed" if ch[t] else "same")
        out.append(("░" if i == mask_id else piece, state))
    return out


STATE_STYLE = {"context": "color:#555", "mask": "color:#aaa", "committed": "background:#b7e4b0;font-weight:bold",
               "changed": "background:#ffe08a", "same": ""}


def step_html(tokenizer, traj, step: int, row: int = 0) -> str:
    """The text at `step` as HTML: each token a span with class `sf-<state>` and data-pos; legend on top."""
    spans = []
    for pos, (text, state) in enumerate(step_tokens(tokenizer, traj, step, row)):
        spans.append(f'<span class="sf-tok sf-{state}" data-pos="{pos}" style="{STATE_STYLE[state]}">'
                     f"{html.escape(text.replace(chr(10), NEWLINE + chr(10)))}</span>")  # a committed newline shows
    legend = " ".join(f'<span style="{STATE_STYLE[s]}">{s}</span>' for s in ("committed", "changed", "mask", "context"))
    t = traj.times[step] if step < len(traj.times) else float("nan")
    return (f'<div class="sf-step"><div style="font-size:85%">step {step + 1}/{len(traj)}, t = {t:.3f} · {legend}</div>'
            f'<pre style="white-space:pre-wrap;margin:4px 0">{"".join(spans)}</pre></div>')


def token_entropy(ids: torch.Tensor, keep: torch.Tensor | None = None) -> list[float]:
    """Entropy (nats) of each sample's own token histogram, (B, T) ids -> B floats.

    The sample-entropy statistic of MDLM / ReMDM evaluations: degenerate, repetitive text has
    low entropy (one token repeated: 0). keep (B, T) bool selects the positions counted
    (e.g. the generated ones, not the prompt).
    """
    out = []
    for b in range(ids.shape[0]):
        row = ids[b] if keep is None else ids[b][keep[b]]
        if row.numel() == 0:
            out.append(float("nan"))
            continue
        p = torch.unique(row, return_counts=True)[1].double() / row.numel()
        out.append(float(-(p * p.log()).sum()))
    return out


def commit_order(traj, row: int = 0) -> torch.Tensor:
    """(T,) long: the step at which each position was (last) committed; -1 where it never was (given text)."""
    committed = traj.stack("committed")[:, row].bool()  # (S, T)
    steps = torch.arange(committed.shape[0])[:, None].expand_as(committed)
    return torch.where(committed, steps, torch.full_like(steps, -1)).max(0).values


def ar_ness(traj) -> float:
    """Share of commits that fill the leftmost open positions (DiffuCoder's local AR-ness, Gong et al. 2025,
    arXiv 2506.20639, Sec. 3): a step that commits n tokens scores the ones among the n leftmost positions
    still masked before it. 1.0 is left-to-right decoding; a random order on T positions gives about 1/T-ish."""
    committed = traj.stack("committed").bool()  # (S, B, T)
    masked_after = traj.stack("masked").bool()
    remasked = traj.stack("remasked").bool() if "remasked" in traj.fields() else torch.zeros_like(committed)
    open_before = (masked_after & ~remasked) | committed  # (S, B, T)
    rank = open_before.long().cumsum(-1)  # 1-based rank among open positions, left to right
    n = committed.sum(-1, keepdim=True)  # (S, B, 1) commits of the step
    hits = (committed & (rank <= n)).sum()
    total = committed.sum()
    return float(hits) / float(total) if total else float("nan")
