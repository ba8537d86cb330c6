"""Sampling from a checkpoint: what `sunfish sample` and the notebook panel (`widgets.SamplingPanel`) share.

Both go through the same three calls, so the same settings and seed give the same samples:

    loaded = load_checkpoint("runs/<run>")                 # run folder, exported folder or .ckpt
    gen = sample(loaded, mode="uncond", prompt="ROMEO:", seed=0, steps=32, callback=on_step)
    save_samples(loaded.run_dir / "samples", sample_record(loaded, gen, ...))

`sample` is the ONE public generation entry point (the CLI, the panel, the notebooks, the
benches and the periodic-samples callback call it; a bare model goes in as
`Loaded(model, cfg, tokenizer)`). Settings are every `SampleConfig` field (`sampling.settings`);
they are checked with the config's own rules (the only range checks), so a bad value gets the
same one-line error everywhere. `prompts=[...]` draws `num_samples` rows per prompt in one
padded batch. Sample i of a prompt is a function of (model, settings, seed, i, the prompt) only: each row draws
from its own stream seeded from (seed, i) (`noise.RowNoise`), so it is the same text drawn alone, as row i of
a larger batch, or beside other prompts (the speed-quality view and the benches compare at equal seeds on this).
`render_ids` shows an intermediate sequence as text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from sunfish_lib.config import SAMPLERS, Config
from sunfish_lib.data.tokenizer import get_tokenizer
from sunfish_lib.diffusion import objective_class
from sunfish_lib.model.devices import resolve_device, resolve_dtype
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.sampling.generate import Generation, initial_ids, pad_rows
from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.sampling.samplers import build_sampler
from sunfish_lib.sampling.settings import SETTINGS, check_names
from sunfish_lib.sampling.trajectory import Trajectory

MASK_GLYPH = "░"


@dataclass
class Loaded:
    """A checkpoint ready to sample: model (eval mode), its config and tokenizer, and where it came from."""

    model: torch.nn.Module
    cfg: Config
    tokenizer: Any
    path: Path | None = None

    @property
    def objective(self) -> str:
        return self.cfg.diffusion.objective

    @property
    def iterative(self) -> bool:
        """Sampling runs denoising steps (diffusion), not one token per pass (ar): `Objective.iterative`."""
        return objective_class(self.objective).iterative

    @property
    def samplers(self) -> tuple[str, ...]:
        """Sampler names this checkpoint's objective supports."""
        return SAMPLERS[self.objective]

    @property
    def run_dir(self) -> Path | None:
        return None if self.path is None else run_folder_of(self.path)


def load_checkpoint(path: str | Path, device: str | torch.device | None = "cpu", dtype=None) -> Loaded:
    """A run folder, an exported model folder or a .ckpt -> `Loaded` (one-line SunfishError otherwise).

    device None or 'auto': the best available (`devices.best_device`); dtype: float32 (default),
    bfloat16 or float16 for the weights."""
    if not str(path).strip():
        raise SunfishError("no checkpoint given; pick a run folder, an exported model folder or a .ckpt file")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    p = Path(str(path).strip()).expanduser()
    model, cfg, tok = load_for_inference(p, dev)
    model = model.to(dtype=dt)
    if tok is None:  # a checkpoint copied without its run folder: rebuild the tokenizer its config names
        tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    return Loaded(model, cfg, tok, p)


def run_folder_of(path: str | Path) -> Path | None:
    """The run folder a checkpoint path belongs to (where samples are saved), or None."""
    p = Path(path)
    if p.is_file():
        return p.parent.parent if p.parent.name == "checkpoints" else None
    if p.name == "export" and ((p.parent / "checkpoints").is_dir() or (p.parent / "config.json").is_file()):
        return p.parent
    if (p / "export").is_dir() or (p / "checkpoints").is_dir():
        return p
    return None


def sample_config(cfg: Config, settings: dict[str, Any]) -> Config:
    """cfg with the given sample settings (None: keep the checkpoint's), checked by the config's rules."""
    check_names(sorted(settings))
    given = {f"sample.{k}": v for k, v in settings.items() if v is not None}
    return cfg.override(given).validate()


def _check_unicode(text, label: str) -> None:
    """A prompt must be text the tokenizer can take: a str of valid Unicode (a lone surrogate, which an argv byte
    that is not UTF-8 or a JSON escape like \\ud800 gives, is not)."""
    if not isinstance(text, str):
        raise SunfishError(f"{label} is a {type(text).__name__}, not text; give a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SunfishError(f"{label} holds U+{ord(text[e.start]):04X} at position {e.start}, which is not valid "
                           "Unicode text; give UTF-8 text") from None


@torch.no_grad()
def sample(loaded: Loaded, *, mode: str = "uncond", prompt: str = "", prompts: list[str] | None = None,
           seed: int = 0, record: bool = False, callback: Callable[[int, int, torch.Tensor], None] | None = None,
           **settings) -> Generation:
    """Generate with the checkpoint's objective (see module docstring): the one public entry point."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise SunfishError(f"seed={seed!r} must be an integer in [0, 2**32 - 1]")
    cfg = sample_config(loaded.cfg, settings)
    s, model, tok = cfg.sample, loaded.model, loaded.tokenizer
    sampler = build_sampler(model, cfg, tok, s)
    device = next(model.parameters()).device
    texts = [prompt or ""] if prompts is None else [p or "" for p in prompts]
    for i, text in enumerate(texts):
        _check_unicode(text, "the prompt" if prompts is None else f"prompt {i + 1}")
    if not texts:
        raise SunfishError("prompts is empty; give at least one prompt (one per line)")
    blocks = [initial_ids(tok, mode=mode, prompt=p, length=s.length, mask_length=s.mask_length,
                          num_samples=s.num_samples, max_len=cfg.model.max_seq_len) for p in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    x, keys, lengths = pad_rows(blocks, pad)
    x = x.to(device)
    noise = RowNoise(seed, [i for _ in texts for i in range(s.num_samples)])  # a prompt's samples are 0..n-1
    meta = {"mode": mode, "prompt": prompt if prompts is None else list(texts), "seed": seed,
            "objective": cfg.diffusion.objective, "mask_id": tok.mask_token_id}
    trajectory = Trajectory(sampler=s.sampler, meta=meta, start=x.cpu()) if record else None
    was_training = model.training
    model.eval()
    try:
        out, passes, positions = _run(sampler, x, keys, lengths, noise, trajectory, callback)
    finally:
        model.train(was_training)
    out = out.cpu()
    decoded = [tok.decode(row[:n].tolist()) for row, n in zip(out, lengths)]
    return Generation(out, x.cpu(), decoded, trajectory, passes, s, None if keys is None else lengths, positions)


def training_samples(model, cfg: Config, tokenizer, *, seed: int, num_samples: int, length: int) -> list[str]:
    """Unconditional samples of a model being trained, with its config's sampler (`train.samples.SampleFn`).

    A masked sampler takes at most `length` steps (one token per step at most is all a row can use).
    """
    steps = objective_class(cfg.diffusion.objective).sampling_steps(cfg.sample.steps, length)
    gen = sample(Loaded(model, cfg, tokenizer), mode="uncond", seed=seed, num_samples=num_samples, length=length,
                 steps=steps)
    return gen.texts


def _run(sampler, x, keys, lengths, noise, trajectory, callback):
    """Run the sampler over x; samplers that take key padding (`Sampler.key_padding`: the masked ones without an
    approximate cache) run every row in one batch, attending past the padding; the others run each group of rows
    with the same length and [MASK] columns as its own batch, in row order (each row keeps its stream).
    Returns (ids, forward passes, positions run or None)."""
    if sampler.key_padding:
        res = sampler(x, noise=noise, record=False if trajectory is None else trajectory, callback=callback,
                      attention_mask=None if keys is None else keys.to(x.device))
        return res.ids, res.forward_passes, res.positions
    groups: dict[tuple, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault((n, tuple(x[i, :n].eq(sampler.mask_id).nonzero().flatten().tolist())), []).append(i)
    if len(groups) == 1:
        res = sampler(x, noise=noise, record=False if trajectory is None else trajectory, callback=callback)
        return res.ids, res.forward_passes, res.positions
    if trajectory is not None:
        raise SunfishError("a trajectory of prompts with different lengths or [MASK] places needs a masked model "
                           "without sample.cache; record one prompt at a time")
    out, passes = x.clone(), 0
    for (n, _), rows in groups.items():
        res = sampler(x[rows, :n], noise=RowNoise(noise.seed, [noise.rows[i] for i in rows]), callback=callback)
        out[rows, :n] = res.ids
        passes += res.forward_passes
    return out, passes, None


def render_ids(tokenizer, ids, mask_glyph: str = MASK_GLYPH) -> str:
    """Text of one row of ids (T,), each [MASK] shown as `mask_glyph` (runs decoded whole, so bytes join)."""
    mask_id = tokenizer.mask_token_id
    out, run = [], []
    for i in (int(v) for v in ids):
        if i == mask_id:
            if run:
                out.append(tokenizer.decode(run))
                run = []
            out.append(mask_glyph)
        else:
            run.append(i)
    if run:
        out.append(tokenizer.decode(run))
    return "".join(out)


def sample_record(loaded: Loaded, gen, *, mode: str, prompt: str, seed: int, seconds: float | None = None) -> dict:
    """What a samples file holds: checkpoint, settings, seed, texts and ids."""
    settings = {k: getattr(gen.sample or loaded.cfg.sample, k) for k in SETTINGS}
    return {
        "checkpoint": str(loaded.path), "objective": loaded.objective, "mode": mode, "prompt": prompt,
        "seed": seed, "settings": settings, "texts": gen.texts, "ids": gen.ids.tolist(),
        "forward_passes": gen.forward_passes, "seconds": None if seconds is None else round(seconds, 3),
    }


def save_samples(folder: str | Path, record: dict) -> tuple[Path, Path]:
    """Write `sample-<timestamp>.json` and `.txt` into folder; returns both paths."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SunfishError(f"cannot create {folder} ({e.strerror}); pass --no-save or a writable run folder") from None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = f"sample-{stamp}"
    for i in range(1, 1000):
        if not (folder / f"{stem}.json").exists():
            break
        stem = f"sample-{stamp}-{i}"
    json_path, txt_path = folder / f"{stem}.json", folder / f"{stem}.txt"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    txt_path.write_text(format_samples(record["texts"]) + "\n")
    return json_path, txt_path


def format_samples(texts: list[str]) -> str:
    """Samples as plain text, one `--- sample i ---` header each."""
    return "\n\n".join(f"--- sample {i + 1} ---\n{t}" for i, t in enumerate(texts))
