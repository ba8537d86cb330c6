"""What a noise schedule does to text embeddings: data for notebook 05 (pure functions, torch only).

- `schedule_curves`: alpha_bar, SNR and beta against t for each schedule.
- `noise_and_round`: noise x_0 to step k with q(x_k | x_0), scale back by 1/sqrt(alpha_bar_k)
  and round each position to the nearest embedding: what survives at that noise level.
- `recovery_accuracy`: the fraction of tokens that rounding recovers, against t. This is
  the argument for the sqrt schedule (Diffusion-LM, Li et al. 2022, Sec. 4.2): under linear
  or cosine, tokens stay recoverable for a large part of the chain, so those steps teach little.
- `loss_by_t`: a trained model's loss terms at fixed t (needs a checkpoint).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from sunfish_lib.diffusion.schedules import NoiseSchedule
from sunfish_lib.diffusion.rounding import nearest_tokens


def schedule_curves(kinds: Sequence[str] = ("linear", "cosine", "sqrt"), num_timesteps: int = 1000) -> dict:
    """{kind: {"t", "alpha_bar", "snr", "beta"}} as float lists, t = (k + 1) / T."""
    out = {}
    for kind in kinds:
        s = NoiseSchedule(kind, num_timesteps)
        k = torch.arange(num_timesteps)
        out[kind] = {"t": s.model_time(k).tolist(), "alpha_bar": s.alpha_bar.tolist(),
                     "snr": s.snr().tolist(), "beta": s.betas.tolist()}
    return out


@torch.no_grad()
def noise_and_round(ids: torch.Tensor, table: torch.Tensor, schedule: NoiseSchedule, k: int, *,
                    metric: str = "euclidean", generator: torch.Generator | None = None):
    """Token ids (B, T) -> (rounded ids (B, T), distance to the chosen embedding (B, T)) after noising to step k."""
    x0 = table[ids].double()  # (B, T, e)
    kk = torch.full((ids.shape[0],), k, dtype=torch.long)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x_k = schedule.q_sample(x0, kk, noise) / schedule.alpha_bar[k].sqrt()
    return nearest_tokens(x_k, table, metric)


def recovery_accuracy(ids: torch.Tensor, table: torch.Tensor, kinds: Sequence[str] = ("linear", "cosine", "sqrt"),
                      num_timesteps: int = 1000, points: int = 20, *, metric: str = "euclidean", seed: int = 0) -> dict:
    """{kind: {"t": [...], "accuracy": [...]}}: fraction of ids recovered by rounding noisy embeddings."""
    out = {}
    ks = sorted({int(round(i * (num_timesteps - 1) / max(points - 1, 1))) for i in range(points)})
    for kind in kinds:
        s = NoiseSchedule(kind, num_timesteps)
        g = torch.Generator().manual_seed(seed)
        acc = [(noise_and_round(ids, table, s, k, metric=metric, generator=g)[0] == ids).double().mean().item()
               for k in ks]
        out[kind] = {"t": [(k + 1) / num_timesteps for k in ks], "accuracy": acc}
    return out


@torch.no_grad()
def loss_by_t(objective, model, batches: Iterable[dict], t_values: Sequence[float], seed: int = 0) -> dict:
    """{"t", "mse", "rounding_ce", "rounding_acc"}: a model's loss terms at each fixed t, averaged over batches."""
    batches = list(batches)
    T = objective.num_timesteps
    out = {"t": [], "mse": [], "rounding_ce": [], "rounding_acc": []}
    was_training = model.training
    model.eval()
    for t in t_values:
        t = (int(objective.schedule.step_of(torch.tensor(t, dtype=torch.float64))) + 1) / T  # the nearest step's t
        g = torch.Generator().manual_seed(seed)
        sums = {name: 0.0 for name in ("mse", "rounding_ce", "rounding_acc")}
        for b in batches:
            res = objective.loss_at(model, b, torch.full((b["input_ids"].shape[0],), t, dtype=torch.float64), g)
            for name in sums:
                sums[name] += res[name].item() / len(batches)
        out["t"].append(t)
        for name, v in sums.items():
            out[name].append(v)
    model.train(was_training)
    return out


def alpha_bar_at(kinds: Sequence[str], num_timesteps: int, t_values: Sequence[float]) -> dict:
    """{kind: {t: alpha_bar}} at the steps `NoiseSchedule.step_of` maps each model time t to."""
    t = torch.tensor(list(t_values), dtype=torch.float64)
    out = {}
    for kind in kinds:
        s = NoiseSchedule(kind, num_timesteps)
        out[kind] = dict(zip(t_values, s.alpha_bar[s.step_of(t)].tolist()))
    return out


def recovery_drop(curve: dict, level: float = 0.5) -> float | None:
    """The first t of a `recovery_accuracy` curve where rounding recovers fewer than `level` of the tokens
    (None: it never does at the t measured)."""
    return next((t for t, a in zip(curve["t"], curve["accuracy"]) if a < level), None)
