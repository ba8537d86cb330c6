"""How fast this machine trains a config: measured, in seconds, before a long run starts.

The workbook prints "04 trains 3 models x 1,500 steps: about N min on this machine" from this
figure, so a slower machine says so up front instead of going quiet for longer.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from sunfish_lib.config import Config
from sunfish_lib.model import Backbone


def tokens_per_second(cfg: Config, threads: int, *, passes: int = 3) -> float:
    """Tokens/s of one training process of `cfg` at `threads` CPU threads: backbone forward, backward and an
    AdamW step on one micro-batch of random tokens, timed after one warm-up pass (the objective's own work,
    the data pipeline and Lightning are not in it, so this is an upper bound on the run's rate)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = Backbone.from_config(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        shape = (cfg.data.micro_batch_size, cfg.data.seq_len)
        tokens = torch.randint(0, cfg.resolved_model.vocab_size, shape)
        t = torch.rand(shape[0])
        for i in range(passes + 1):
            if i == 1:
                t0 = time.perf_counter()
            loss = F.cross_entropy(model(tokens, t=t).flatten(0, 1), tokens.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return passes * tokens.numel() / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
