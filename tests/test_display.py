"""The one samples view (sunfish_lib.notebook.display) and tables: what a reader sees."""

import html

import pytest
import torch

from sunfish_lib.data import get_tokenizer
from sunfish_lib.notebook.display import SamplesView, decode_pieces, sample_segments
from sunfish_lib.notebook.tables import short_labels, table_html


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer("bpe")


def test_decode_pieces_never_split_a_utf8_character(tok):
    text = "naïve café — 東京 ✓\nend"
    ids = tok.encode(text)
    pieces = decode_pieces(tok, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # decoding each token alone does split them (why the helper exists)
    assert any("\ufffd" in tok.decode([i]) for i in ids)


def test_segments_tell_prompt_infill_and_generated_apart(tok):
    m = tok.mask_token_id
    a, b, c = tok.encode("To be"), tok.encode(" or not"), tok.encode(" to be")
    start = a + [m] * len(b) + c + [m] * 2
    ids = a + b + c + tok.encode("!!")[:1] * 2
    segs = sample_segments(tok, ids, start)
    assert [k for _, k in segs] == ["prompt", "infill", "prompt", "generated"]
    assert segs[1][0] == " or not" and "".join(t for t, _ in segs) == tok.decode(ids)


QUALITY = {"tokens_per_sample": 5, "entropy": 1.2345, "reference_entropy": 1.5, "distinct_2": 0.75,
           "reference_distinct_2": 1.0, "distinct_3": 1.0, "reference_distinct_3": 1.0, "reference_windows": 8,
           "judge": "runs/wb/04_train_ar", "judge_ppl": 123.4, "reference_judge_ppl": 80.5, "judge_note": None,
           "per_sample": [{"entropy": 1.1, "distinct_2": 0.5, "judge_ppl": 99.0}]}


class _Gen:
    def __init__(self, ids, start):
        self.ids, self.start = torch.tensor([ids]), torch.tensor([start])


def test_samples_view_html_is_compact_styled_and_has_its_quality_beside(tok):
    m = tok.mask_token_id
    prompt = tok.encode("ROMEO:\n")
    gen_ids = tok.encode("\n\n\nO <night>\n")
    view = SamplesView.of(_Gen(prompt + gen_ids, prompt + [m] * len(gen_ids)), tok, QUALITY, title="masked")
    out = view._repr_html_()
    assert "\n" not in html.unescape(out).split("sunfish-sample", 1)[1]  # newlines are marks, not line breaks
    assert out.count("↵") == 5 + 1 and "max-height:96px;overflow-y:auto" in out  # 5 newlines + the legend
    assert 'class="sf-prompt"' in out and 'class="sf-generated"' in out and "&lt;night&gt;" in out
    for label, figure in [("unigram entropy (nats)", "1.234"), ("judge perplexity", "123.4"), ("held-out text", "80.5")]:
        assert label in out and figure in out
    assert "H 1.1 · d2 0.5 · ppl 99" in out


def test_no_judge_perplexity_without_a_judge_and_never_without_entropy(tok):
    q = {**QUALITY, "judge": None, "judge_ppl": None, "reference_judge_ppl": None,
         "judge_note": "no judge: pass --judge PATH"}
    view = SamplesView([[("a\tb", "generated")]], q)
    out = view.html()
    assert "judge perplexity" not in out and "no judge: pass --judge PATH" in out and "unigram entropy" in out
    text = view.text()
    assert "a→b" in text and "unigram entropy (nats):    1.234 (held-out text 1.5)" in text
    assert "judge perplexity" not in text


def test_text_marks_the_infilled_span(tok):
    view = SamplesView([[("A\n", "prompt"), ("x y", "infill"), ("B", "prompt")]])
    assert view.text() == "--- sample 1 ---\nA↵⟦x y⟧B"
    assert "\033[1;32mx y\033[0m" in view.text(color=True)


def test_table_html_and_short_labels():
    out = table_html([{"run": "a", "ppl": 12.3456789, "steps": 1200, "bpb": None, "fits": False}])
    assert "<th>ppl</th>" in out and ">12.346<" in out and ">1,200<" in out and ">–<" in out and ">no<" in out
    assert short_labels(["wb/04_train", "wb/08/scratch", "wb/07/scratch"]) == {
        "wb/04_train": "04_train", "wb/08/scratch": "08/scratch", "wb/07/scratch": "07/scratch"}


def test_compare_curves_keeps_objectives_apart_with_units_and_the_legend_outside():
    from sunfish_lib.notebook.plots import compare_curves

    rows = lambda loss: [{"step": s, "tokens": 128 * (s + 1), "train/loss": loss - s / 100} for s in range(5)] + \
        [{"step": 4, "tokens": 640, "val/loss": loss}]  # noqa: E731
    fig = compare_curves({"04_train": rows(6.3), "ar": rows(5.0), "07/tiny-continuous": rows(1.9)},
                         objectives={"04_train": "masked", "ar": "ar", "07/tiny-continuous": "continuous"})
    axes = fig.axes
    assert len(axes) == 3 * 3  # one row per objective, columns step / tokens / wall time
    ylabels = [ax.get_ylabel() for ax in axes[::3]]
    assert ylabels[0] == "masked loss: ELBO estimate (nats/token)" and ylabels[1] == "AR loss: exact NLL (nats/token)"
    assert "not a likelihood" in ylabels[2]
    for ax, expected in zip(axes[::3], (6.3, 5.0, 1.9)):  # each panel holds only its own objective's run
        assert {round(float(line.get_ydata()[0]), 2) for line in ax.lines} == {expected}
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1  # outside the axes
    assert len(fig.legends[0].get_texts()) == 6  # 3 runs x (train, val)
