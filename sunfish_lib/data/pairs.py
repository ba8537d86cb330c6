"""Conditional (SFT) data: JSONL rows of prompt -> completion, one pair per row, completion-only loss.

Rows are `{"prompt": str, "completion": str}` or the chat form `{"messages": [{"role", "content"}, ...]}`
(rendered through the tokenizer's chat template: every message but the last is the prompt, with the
generation prompt appended; the last, an assistant turn, is the completion).

As in LLaDA's SFT (Nie et al. 2025, Sec. 2.3 and App. B.1): a row is `prompt + completion + EOS`, padded
to `seq_len` with EOS; the padding EOS counts as completion, so the model learns where to stop. The batch
carries `loss_mask` (B, T) bool, True on the completion (its EOS padding included): objectives never mask
or noise the prompt and score only those tokens (`diffusion/masked.py`, `autoregressive.py`,
`continuous.py`). One pair per row, so no prompt attends to another pair's completion.

Bad rows are one-line `SunfishError`s naming the file and line: a missing field, an empty completion, a
prompt (or pair) longer than the sequence.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from sunfish_lib.errors import SunfishError

PAIR_KEYS = ("prompt", "completion")


def is_pairs_file(source: str) -> bool:
    """Whether `source` is one local .jsonl file whose first row is a prompt/completion or messages row."""
    path = Path(str(source)).expanduser()
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(row, dict) and ("messages" in row or "prompt" in row or "completion" in row)
    return False


def render_chat(messages, template: str, eos_token: str) -> tuple[str, str]:
    """(prompt, completion) of a chat row: the template over all messages but the last (with the generation
    prompt), and the last message's content (an assistant turn)."""
    # lazy: jinja2 is needed only by chat rows (a dependency of torch and transformers, always installed)
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    prompt = env.from_string(template).render(messages=messages[:-1], add_generation_prompt=True,
                                              eos_token=eos_token, bos_token="")
    return prompt, str(messages[-1]["content"])


def _row_text(row, where: str, chat_template: str | None, eos_token: str) -> tuple[str, str]:
    """(prompt, completion) strings of one parsed row, or a one-line error naming `where`."""
    if not isinstance(row, dict):
        raise SunfishError(f"{where}: a row must be a JSON object with prompt and completion; got {type(row).__name__}")
    if "messages" in row:
        msgs = row["messages"]
        ok = isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m and "content" in m
                                                     for m in msgs)
        if not ok:
            raise SunfishError(f"{where}: messages must be a non-empty list of {{role, content}} objects")
        if msgs[-1]["role"] != "assistant":
            raise SunfishError(f"{where}: the last message is the completion and must have role assistant; "
                               f"got {msgs[-1]['role']!r}")
        if chat_template is None:
            raise SunfishError(f"{where}: a messages row needs a tokenizer with a chat template; set data.tokenizer "
                               "to one that has it, or write prompt/completion rows")
        prompt, completion = render_chat(msgs, chat_template, eos_token)
    else:
        missing = [k for k in PAIR_KEYS if k not in row]
        if missing:
            raise SunfishError(f"{where}: missing field {missing[0]!r}; each row needs prompt and completion "
                               "(or messages)")
        prompt, completion = row["prompt"], row["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise SunfishError(f"{where}: prompt and completion must be strings")
    if not completion.strip():
        raise SunfishError(f"{where}: empty completion; every row needs text to learn")
    return prompt, completion


def encode_pair(tok, prompt: str, completion: str, seq_len: int, where: str = "row") -> tuple[np.ndarray, int]:
    """(ids (seq_len,), prompt length P): prompt + completion + EOS, EOS-padded to seq_len."""
    p, c = tok.encode(prompt), tok.encode(completion)
    if len(p) >= seq_len:
        raise SunfishError(f"{where}: prompt is {len(p)} tokens, not shorter than data.seq_len={seq_len}; "
                           "raise data.seq_len or shorten the prompt")
    if len(p) + len(c) + 1 > seq_len:
        raise SunfishError(f"{where}: prompt + completion + EOS is {len(p) + len(c) + 1} tokens, longer than "
                           f"data.seq_len={seq_len}; raise data.seq_len or shorten the row")
    ids = np.full(seq_len, tok.eos_token_id, dtype=np.int64)
    ids[: len(p) + len(c)] = p + c
    return ids, len(p)


def held_out(line: str, val_fraction: float) -> bool:
    """Deterministic split by row content: the row's hash below val_fraction goes to validation."""
    h = int.from_bytes(hashlib.sha1(line.encode("utf-8")).digest()[:8], "big") / 2**64
    return h < val_fraction


def load_pairs(path, tok, seq_len: int, *, split: str | None = None, val_fraction: float = 0.0,
               chat_template: str | None = None) -> dict[str, torch.Tensor]:
    """Every row of a pairs JSONL as tensors: input_ids (N, T), loss_mask (N, T) bool, prompt_len (N,).

    split None: all rows; "train"/"validation": rows split by `held_out` (validation falls back to all
    rows when the share is empty, so a tiny file still validates)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SunfishError(f"pairs file {path} does not exist; give a .jsonl of prompt/completion rows")
    ids, plen, lines = [], [], []
    template = chat_template or getattr(tok, "chat_template", None)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SunfishError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        prompt, completion = _row_text(row, where, template, tok.eos_token)
        row_ids, p = encode_pair(tok, prompt, completion, seq_len, where)
        ids.append(row_ids)
        plen.append(p)
        lines.append(line)
    if not ids:
        raise SunfishError(f"pairs file {path} has no rows")
    keep = np.ones(len(ids), dtype=bool)
    if split is not None and val_fraction > 0:
        val = np.array([held_out(s, val_fraction) for s in lines])
        keep = val if split == "validation" else ~val
        if not keep.any():
            keep = np.ones(len(ids), dtype=bool)
    x = torch.from_numpy(np.stack(ids)[keep])
    p = torch.tensor(plen)[torch.from_numpy(keep)]
    return {"input_ids": x, "loss_mask": torch.arange(x.shape[1])[None] >= p[:, None], "prompt_len": p}


class PairsDataset(IterableDataset):
    """Batches of whole pairs: shuffled each epoch and endless (training) or one ordered pass (validation).

    Resumable like `PackedDataset`: each batch carries `_resume` = its stream and (epoch, rows consumed);
    `resume` (set by `ResumableLoader`) restarts every stream right after its last consumed batch.
    """

    def __init__(self, rows: dict[str, torch.Tensor], batch_size: int, *, loop: bool = True, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.rows, self.batch_size, self.loop, self.shuffle = rows, batch_size, loop, shuffle
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.resume: dict | None = None

    def __len__(self) -> int:
        return len(self.rows["input_ids"])

    def _order(self, stream: int, total: int, epoch: int) -> torch.Tensor:
        n = len(self)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        mine = order[stream::total]
        return mine if len(mine) else order[:1]  # more streams than rows: each still yields

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        logical = (worker + (self.resume or {}).get("rotation", 0)) % workers
        stream, total = self.rank * workers + logical, self.world_size * workers
        state = ((self.resume or {}).get("streams") or [None] * workers)[logical] or {"epoch": 0, "pos": 0}
        epoch, pos = int(state["epoch"]), int(state["pos"])
        while True:
            order = self._order(stream, total, epoch)
            while pos < len(order):
                take = order[pos: pos + self.batch_size]
                pos += len(take)
                batch = {k: v[take] for k, v in self.rows.items() if k != "prompt_len"}
                batch["_resume"] = {"stream": logical, "state": {"epoch": epoch, "pos": pos}}
                yield batch
            if not self.loop:
                return
            epoch, pos = epoch + 1, 0
