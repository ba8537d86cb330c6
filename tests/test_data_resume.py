"""Exact resumption: stop after k batches, restore into a fresh DataModule, continue — nothing repeated or skipped."""

import pytest
import torch

from sunfish_lib.config import DataConfig
from sunfish_lib.data.datamodule import SunfishDataModule
from sunfish_lib.errors import SunfishError
from tests.data_fixtures import make_docs, write_jsonl

TOTAL = 26


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    docs = make_docs(50, seed=5, min_words=3, max_words=40)
    write_jsonl(folder / "a.jsonl", [{"text": d["text"], "id": d["id"]} for d in docs[:25]])
    write_jsonl(folder / "b.jsonl", [{"text": d["text"], "id": d["id"]} for d in docs[25:]])
    return folder


def _data(folder, workers, **kw):
    # ~2,400 tokens for training: 26 batches of <= 2 x 32 tokens wrap around several passes (epochs),
    # blocks of 6 documents are shuffled, 20% of rows are shorter, documents are masked apart,
    # and the curriculum changes T every step.
    base = dict(source=str(folder), seq_len=32, micro_batch_size=2, num_workers=workers, shuffle_buffer=6,
                val_fraction=0.1, random_length_fraction=0.2, cross_document_attention=False,
                curriculum_steps=8, curriculum_start_len=8)
    return DataConfig(**{**base, **kw})


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _same(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


@pytest.mark.parametrize("workers,k", [(0, 7), (1, 11), (2, 7), (2, 12)])
def test_resume_continues_with_the_next_unseen_batch(small_corpus, bpe, workers, k):
    data = _data(small_corpus, workers)
    reference = _take(iter(SunfishDataModule(data, seed=1, tokenizer=bpe).train_dataloader()), TOTAL)
    assert {tuple(b["input_ids"].shape) for b in reference} >= {(2, 8), (2, 32)}  # the curriculum ran

    first = SunfishDataModule(data, seed=1, tokenizer=bpe)
    before = _take(iter(first.train_dataloader()), k)
    state = first.state_dict()
    assert state["ranks"][0]["consumed"] == k

    second = SunfishDataModule(data, seed=1, tokenizer=bpe)
    second.load_state_dict(state)
    after = _take(iter(second.train_dataloader()), TOTAL - k)
    assert _same(before + after, reference)

    # Resume a second time from the resumed module: still exact.
    third = SunfishDataModule(data, seed=1, tokenizer=bpe)
    third.load_state_dict(second.state_dict())
    assert _same(_take(iter(third.train_dataloader()), 3), _take(iter(
        SunfishDataModule(data, seed=1, tokenizer=bpe).train_dataloader()), TOTAL + 3)[TOTAL:])


def test_reiterating_a_loader_continues_instead_of_restarting(small_corpus, bpe):
    dm = SunfishDataModule(_data(small_corpus, 0), seed=2, tokenizer=bpe)
    loader = dm.train_dataloader()
    a = _take(iter(loader), 5)
    b = _take(iter(loader), 5)
    reference = _take(iter(SunfishDataModule(_data(small_corpus, 0), seed=2, tokenizer=bpe).train_dataloader()), 10)
    assert _same(a + b, reference)


def test_each_pass_is_a_new_permutation_of_all_training_documents(small_corpus, bpe):
    from sunfish_lib.data.sources import iter_documents, parse_source

    data = _data(small_corpus, 0, random_length_fraction=0.0, curriculum_steps=0, seq_len=64, micro_batch_size=8)
    train_docs = list(iter_documents(parse_source(data.source), "train", data.val_fraction))
    val_docs = list(iter_documents(parse_source(data.source), "validation", data.val_fraction))
    assert len(train_docs) + len(val_docs) == 50 and len(val_docs) >= 1
    stream, n_eos = [], 0
    for batch in SunfishDataModule(data, tokenizer=bpe).train_dataloader():
        ids = batch["input_ids"].flatten().tolist()
        stream += ids
        n_eos += ids.count(bpe.eos_token_id)
        if n_eos >= 2 * len(train_docs):
            break
    texts = bpe.decode(stream).split(bpe.eos_token)
    first, second = texts[: len(train_docs)], texts[len(train_docs): 2 * len(train_docs)]
    assert sorted(first) == sorted(second) == sorted(train_docs)  # every document once per pass, no val doc
    assert first != train_docs and second != first  # shuffled, differently each pass


def test_state_from_another_setup_is_refused(small_corpus, bpe):
    dm = SunfishDataModule(_data(small_corpus, 2), tokenizer=bpe)
    _take(iter(dm.train_dataloader()), 3)
    state = dm.state_dict()
    with pytest.raises(SunfishError, match="num_workers=2"):
        SunfishDataModule(_data(small_corpus, 0), tokenizer=bpe).load_state_dict(state)
    with pytest.raises(SunfishError, match="data.source"):
        SunfishDataModule(_data(small_corpus, 2, source="shakespeare"), tokenizer=bpe).load_state_dict(state)


def test_lightning_checkpoint_resume_is_exact(small_corpus, bpe, tmp_path):
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, batch_idx):
            assert "_resume" not in batch
            self.seen.append(batch["input_ids"].clone())
            return (self.w * batch["input_ids"].float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def fit(steps, ckpt_path=None, callbacks=()):
        model = Recorder()
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, callbacks=list(callbacks),
                             enable_checkpointing=bool(callbacks), default_root_dir=tmp_path)
        trainer.fit(model, datamodule=SunfishDataModule(_data(small_corpus, 2), seed=4, tokenizer=bpe),
                    ckpt_path=ckpt_path)
        return model.seen

    full = fit(9)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    fit(4, callbacks=[ckpt])
    (path,) = (tmp_path / "ckpt").glob("*step=4.ckpt")
    resumed = fit(9, ckpt_path=str(path))
    assert len(full) == 9 and len(resumed) == 5
    assert all(torch.equal(a, b) for a, b in zip(full[4:], resumed))
