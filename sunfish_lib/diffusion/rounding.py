"""Rounding: map vectors in the embedding space to the nearest token embedding.

Diffusion-LM (Li et al. 2022, Sec. 4.1-4.2) decodes x_0 by rounding every position to
the nearest word embedding, and its "clamping trick" (Sec. 4.2) snaps the predicted x0
to the nearest embedding at every reverse step (with L2 distance, as its
`denoised_fn_round`). Nearest is by euclidean distance, the rule training's rounding CE
learns (logits -||x0_hat - e_v||^2), or by cosine similarity. `sample.rounding="auto"` (the
default) means euclidean, and cosine only with `diffusion.embed_norm=True`, where every
embedding has the same norm and the two rules pick the same token.

Memory: the score matrix (positions x vocabulary) is never built whole. Rows go in
blocks of `ROW_BLOCK` and the vocabulary in chunks sized so a block's scores stay under
`max_elements` floats (64 MiB by default), keeping a running best — so a 50k vocabulary
and 65k positions need no more than a small model's activations.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from sunfish_lib.config import ROUNDINGS
from sunfish_lib.errors import SunfishError

METRICS = ("cosine", "euclidean")
ROW_BLOCK = 4096
MAX_ELEMENTS = 1 << 24


def resolve_metric(rounding: str, embed_norm: bool) -> str:
    """`sample.rounding` -> the metric used: auto is euclidean, or cosine when embeddings are normalised."""
    if rounding not in ROUNDINGS:
        raise SunfishError(f"sample.rounding={rounding!r} is not allowed; choose one of {', '.join(ROUNDINGS)}")
    if rounding == "auto":
        return "cosine" if embed_norm else "euclidean"
    return rounding


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise SunfishError(f"rounding={metric!r} is not allowed; choose one of {', '.join(METRICS)}")


@torch.no_grad()
def nearest_tokens(
    x: torch.Tensor,
    table: torch.Tensor,
    metric: str = "euclidean",
    *,
    exclude_ids: Sequence[int] = (),
    max_elements: int = MAX_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest token to each vector: x (..., e), table (V, e) -> ids (...) and euclidean distance (...).

    cosine: argmax of x.e_v / (|x| |e_v|); euclidean: argmin |x - e_v|, computed as the
    argmax of 2 x.e_v - |e_v|^2 (|x|^2 is the same for every v). Ties go to the lower id.
    `exclude_ids` (e.g. [MASK], [PAD]) are never chosen. The distance is to the chosen
    embedding whatever the metric (what trajectories record).
    """
    _check_metric(metric)
    e = table.shape[1]
    flat = x.reshape(-1, e).float()  # (N, e)
    keys = table.float()
    if metric == "cosine":
        q, keys, bias = F.normalize(flat, dim=-1), F.normalize(keys, dim=-1), None
    else:
        q, bias = 2.0 * flat, -keys.pow(2).sum(-1)  # (V,)
    ex = torch.as_tensor(list(exclude_ids), dtype=torch.long, device=keys.device)
    N, V = flat.shape[0], keys.shape[0]
    rows = min(max(N, 1), ROW_BLOCK)
    chunk = max(1, min(V, max_elements // rows))
    ids = torch.empty(N, dtype=torch.long, device=flat.device)
    for r0 in range(0, N, rows):
        best = torch.full((min(rows, N - r0),), float("-inf"), device=flat.device)
        arg = torch.zeros_like(best, dtype=torch.long)
        for v0 in range(0, V, chunk):
            s = q[r0:r0 + rows] @ keys[v0:v0 + chunk].t()  # (rows, chunk)
            if bias is not None:
                s = s + bias[v0:v0 + chunk]
            if ex.numel():
                local = ex[(ex >= v0) & (ex < v0 + chunk)] - v0
                s[:, local] = float("-inf")
            m, a = s.max(-1)
            better = m > best  # strict: an earlier chunk (lower id) wins ties
            best = torch.where(better, m, best)
            arg = torch.where(better, a + v0, arg)
        ids[r0:r0 + rows] = arg
    dist = (flat - table.float()[ids]).norm(dim=-1)  # (N,)
    return ids.view(x.shape[:-1]), dist.view(x.shape[:-1])


def snap_to_embeddings(x: torch.Tensor, table: torch.Tensor, metric: str = "euclidean",
                       exclude_ids: Sequence[int] = ()) -> torch.Tensor:
    """The clamping trick (Diffusion-LM Sec. 4.2): replace each vector by its nearest embedding, (..., e)."""
    ids, _ = nearest_tokens(x, table, metric, exclude_ids=exclude_ids)
    return table[ids].to(x.dtype)
