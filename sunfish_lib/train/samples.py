"""Periodic samples during training, written to the run folder (samples/step_NNNNNN.txt).

Training sits below sampling, so the function that samples is given by the caller (`sunfish train`
and the workbook pass `sunfish_lib.sampling.session.training_samples`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytorch_lightning as pl

SampleFn = Callable[..., list[str]]
"""sample_fn(model, cfg, tokenizer, *, seed, num_samples, length) -> texts: unconditional samples with cfg's sampler."""


class PeriodicSamples(pl.Callback):
    """Every `every` steps, a few unconditional samples with the config's sampler (rank 0 only).

    Sampling needs the full weights in one process, so under FSDP it is skipped (the
    exported model samples after training).
    """

    def __init__(self, folder: Path, every: int, sample_fn: SampleFn, num_samples: int = 2, length: int = 48,
                 tokenizer=None):
        self.folder, self.every, self.sample_fn = Path(folder), every, sample_fn
        self.num_samples, self.length, self.tokenizer = num_samples, length, tokenizer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.every or pl_module._micro % pl_module.cfg.train.accumulate_grad_batches:
            return
        if pl_module._sharded or not trainer.is_global_zero:
            return
        tok = self.tokenizer or trainer.datamodule.tokenizer
        cfg = pl_module.cfg
        texts = self.sample_fn(pl_module.model, cfg, tok, seed=step, num_samples=self.num_samples,
                               length=min(self.length, cfg.model.max_seq_len))
        self.folder.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(f"--- sample {i} ---\n{t}" for i, t in enumerate(texts))
        (self.folder / f"step_{step:06d}.txt").write_text(f"step {step}, sampler {cfg.sample.sampler}\n\n{body}\n")
