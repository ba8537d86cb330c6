"""Conditional training (SFT) on a user's own prompt/completion JSONL: completion-only loss for every objective,
per-pair rows, one-line errors for bad rows, training and evaluation end to end."""

import json

import pytest
import torch
from torch import nn

from sunfish_lib.config import get_config
from sunfish_lib.data.pairs import PairsDataset, is_pairs_file, load_pairs
from sunfish_lib.diffusion import build_objective
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone
from sunfish_lib.tasks import task_tokenizer

WORDS = "the cat sat on a mat dog ran far away why because it was red blue".split()
ROWS = [
    {"prompt": "why the cat sat", "completion": "because it was red"},
    {"prompt": "the dog", "completion": "ran far away"},
    {"prompt": "", "completion": "a mat was blue"},
]
T = 12


@pytest.fixture
def words_tok():
    return task_tokenizer(WORDS)


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_rows_are_prompt_completion_eos_padded(words_tok, pairs_file):
    rows = load_pairs(pairs_file, words_tok, T)
    x, lm = rows["input_ids"], rows["loss_mask"]
    assert x.shape == lm.shape == (3, T)
    assert rows["prompt_len"].tolist() == [4, 2, 0]
    first = words_tok.encode("why the cat sat because it was red")
    assert x[0, :8].tolist() == first and (x[0, 8:] == words_tok.eos_token_id).all()  # EOS padding after it
    assert lm[0].tolist() == [False] * 4 + [True] * 8  # the padding counts as completion
    assert lm[2].all()  # empty prompt: every position is completion
    assert is_pairs_file(str(pairs_file))


def test_pairs_dataset_batches_whole_rows_and_resumes(words_tok, pairs_file):
    rows = load_pairs(pairs_file, words_tok, T)
    ds = PairsDataset(rows, batch_size=2, seed=3)
    it = iter(ds)
    b1, b2, b3 = next(it), next(it), next(it)
    assert b1["input_ids"].shape == (2, T) and b2["input_ids"].shape == (1, T)  # epoch of 3 rows: 2 + 1
    seen = sorted(map(tuple, torch.cat([b1["input_ids"], b2["input_ids"]]).tolist()))
    assert seen == sorted(map(tuple, rows["input_ids"].tolist()))  # each pair once per epoch, rows never mixed
    resumed = PairsDataset(rows, batch_size=2, seed=3)
    resumed.resume = {"rotation": 0, "streams": [b2["_resume"]["state"]]}
    assert torch.equal(next(iter(resumed))["input_ids"], b3["input_ids"])


class ContextFree(nn.Module):
    """A denoiser that ignores its input: its loss depends on the data only through the targets (labels)."""

    def __init__(self, V: int):
        super().__init__()
        self.h = nn.Parameter(torch.randn(T, 8))
        self.head = nn.Linear(8, V)
        self.cfg = type("C", (), {"time_conditioning": False})()

    def encode(self, z, t=None, segment_ids=None, attention_mask=None, **_):
        return self.h[None].expand(z.shape[0], -1, -1)

    def logits(self, h):
        return self.head(h)


@pytest.mark.parametrize("objective", ["masked", "ar"])
def test_prompt_labels_carry_no_loss(objective, words_tok, pairs_file):
    cfg = get_config("smoke", {"objective": objective, "seq_len": T})
    obj = build_objective(cfg, words_tok.mask_token_id, words_tok.eos_token_id)
    model = ContextFree(len(words_tok))
    batch = load_pairs(pairs_file, words_tok, T)
    batch.pop("prompt_len")

    def loss(b):
        g = torch.Generator().manual_seed(0)
        t = torch.full((3,), 0.7)
        return obj.loss_at(model, b, t, g)["loss"] if objective == "masked" else obj.loss(model, b)["loss"]

    base = loss(batch)
    other = words_tok.encode("dog")[0]
    prompt_changed = {**batch, "input_ids": batch["input_ids"].clone()}
    prompt_changed["input_ids"][0, 1] = other  # a prompt token ("the")
    completion_changed = {**batch, "input_ids": batch["input_ids"].clone()}
    completion_changed["input_ids"][0, 5] = other  # a completion token ("it")
    assert torch.equal(loss(prompt_changed), base)
    assert not torch.isclose(loss(completion_changed), base)


@pytest.mark.parametrize("objective", ["masked", "ar", "continuous"])
def test_backbone_output_gets_gradient_only_on_the_completion(objective, words_tok, pairs_file):
    cfg = get_config("smoke", {"objective": objective, "seq_len": T, "vocab_size": 64, "data.tokenizer": "words"})
    model = Backbone.from_config(cfg)
    obj = build_objective(cfg, words_tok.mask_token_id, words_tok.eos_token_id)
    batch = load_pairs(pairs_file, words_tok, T)
    prompt_len = batch.pop("prompt_len")
    seen, encode = {}, model.encode

    def spy(*a, **k):
        h = encode(*a, **k)
        if h.requires_grad:
            h.retain_grad()
            seen["h"] = h
        return h

    model.encode = spy
    t = torch.full((3,), 0.9)
    out = obj.loss_at(model, batch, t, torch.Generator().manual_seed(1)) if objective != "ar" else obj.loss(model, batch)
    out["loss"].backward()
    g = seen["h"].grad.abs().sum(-1)  # (B, T)
    for row, p in enumerate(prompt_len.tolist()):
        assert (g[row, :p] == 0).all(), f"{objective}: the prompt of row {row} carries loss"
    assert (g[0, 4:] > 0).sum() >= 3  # the completion does (masked: its masked positions at t = 0.9)


@pytest.mark.parametrize("line, needle", [
    ({"prompt": "the cat"}, "line 2: missing field 'completion'"),
    ({"prompt": "the cat", "completion": "  "}, "line 2: empty completion"),
    ({"prompt": " ".join(["cat"] * T), "completion": "red"}, "line 2: prompt is 12 tokens"),
    ({"prompt": "the cat sat on a mat", "completion": "it was red blue far away"}, "line 2: prompt + completion"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "red"}]},
     "line 2: a messages row needs a tokenizer with a chat template"),
])
def test_bad_rows_are_one_line_errors_naming_the_line(line, needle, words_tok, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(SunfishError) as e:
        load_pairs(path, words_tok, T)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_messages_rows_go_through_the_chat_template(words_tok, tmp_path):
    path = tmp_path / "chat.jsonl"
    msgs = [{"role": "user", "content": "why the cat sat"}, {"role": "assistant", "content": "because it was red"}]
    path.write_text(json.dumps({"messages": msgs}) + "\n")
    template = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}a {% endif %}"
    rows = load_pairs(path, words_tok, T, chat_template=template)
    assert rows["input_ids"][0, :9].tolist() == words_tok.encode("why the cat sat a because it was red")
    assert rows["prompt_len"].tolist() == [5]
