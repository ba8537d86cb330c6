"""Two real ranks (gloo, CPU): disjoint data per rank, and the DataModule state gathered and restored per rank."""

import pytest
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.data_fixtures import make_docs, write_jsonl

pytestmark = pytest.mark.slow  # multi-process (2 CPU processes): outside the fast lane (-m 'not slow')

TOTAL, K = 12, 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, folder: str, out_dir: str) -> None:
    from sunfish_lib.config import DataConfig
    from sunfish_lib.data.datamodule import SunfishDataModule
    from sunfish_lib.data.tokenizer import get_tokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tok = get_tokenizer("bpe", 4096)
        data = DataConfig(source=folder, seq_len=16, micro_batch_size=2, shuffle_buffer=4, val_fraction=0.0)

        def module():
            return SunfishDataModule(data, seed=3, tokenizer=tok)  # rank and world from torch.distributed

        def take(dm, n):
            it = iter(dm.train_dataloader())
            return [next(it)["input_ids"] for _ in range(n)]

        reference = take(module(), TOTAL)
        first = module()
        before = take(first, K)
        state = first.state_dict()  # collective: every rank's position
        second = module()
        second.load_state_dict(state)
        after = take(second, TOTAL - K)
        torch.save({"reference": reference, "resumed": before + after, "ranks_in_state": len(state["ranks"]),
                    "consumed": [r["consumed"] for r in state["ranks"]]}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_resume_exactly_and_read_different_data(tmp_path):
    docs = make_docs(40, seed=9, max_words=30)
    write_jsonl(tmp_path / "data" / "a.jsonl", [{"text": d["text"], "id": d["id"]} for d in docs[:20]])
    write_jsonl(tmp_path / "data" / "b.jsonl", [{"text": d["text"], "id": d["id"]} for d in docs[20:]])
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path / "data"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for r in (r0, r1):
        assert r["ranks_in_state"] == 2 and r["consumed"] == [K, K]
        assert all(torch.equal(a, b) for a, b in zip(r["reference"], r["resumed"]))
    # Each rank reads its own file (2 shards, 2 ranks): no sequence shared between ranks.
    rows0 = {tuple(row.tolist()) for b in r0["reference"] for row in b}
    rows1 = {tuple(row.tolist()) for b in r1["reference"] for row in b}
    assert not rows0 & rows1
