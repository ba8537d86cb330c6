"""Sample quality (sunfish_lib.eval.quality) on hand-made inputs with known values, and where it is shown."""

import json
import math

import pytest
import torch

from sunfish_lib.cli import main
from sunfish_lib.errors import SunfishError
from sunfish_lib.eval.quality import Judge, distinct_n, find_judge, load_judge, sample_quality, token_measures, unigram_entropy
from tests.sampling_helpers import make_run


def test_unigram_entropy_of_known_distributions():
    assert unigram_entropy([7, 7, 9, 9]) == pytest.approx(math.log(2))
    assert unigram_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4))
    assert unigram_entropy([5, 5, 5, 6]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert unigram_entropy([3] * 10) == 0.0


def test_distinct_n_of_known_strings():
    assert distinct_n([1, 2, 1, 2], 2) == pytest.approx(2 / 3)  # (1,2) (2,1) (1,2)
    assert distinct_n([5, 5, 5, 5], 1) == 0.25
    assert distinct_n([1, 2, 3, 4, 5], 3) == 1.0
    assert math.isnan(distinct_n([1], 2))
    m = token_measures([[1, 2, 1, 2], [4, 4, 4, 4]])  # means over rows
    assert m["distinct_2"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["entropy"] == pytest.approx(math.log(2) / 2)


P = torch.tensor([0.5, 0.25, 0.125, 0.125])  # the tiny model's next-token distribution, whatever came before


def _fixed_judge() -> Judge:
    """A 'model' whose next-token distribution is P at every position; text 'abcd' -> ids 0..3."""
    return Judge("fixed", lambda s: ["abcd".index(c) for c in s],
                 lambda x: P.log().expand(x.shape[0], x.shape[1], 4), bos_id=0, max_len=64)


def test_judge_perplexity_is_exp_of_the_hand_computed_nll():
    judge = _fixed_judge()
    nll, n = judge.nll("bad")  # ids 1, 0, 3 after BOS
    by_hand = -(math.log(0.25) + math.log(0.5) + math.log(0.125))
    assert n == 3 and nll == pytest.approx(by_hand)
    # pooled over texts: exp(total NLL / total tokens)
    assert judge.perplexity(["bad", "aa"]) == pytest.approx(math.exp((by_hand - 2 * math.log(0.5)) / 5))
    uniform = Judge("u", judge.encode, lambda x: torch.zeros(1, x.shape[1], 4), 0, 64)
    assert uniform.perplexity(["abcdabcd"]) == pytest.approx(4.0)


def test_a_sunfish_ar_judge_scores_like_the_ar_objective(tmp_path):
    from sunfish_lib.diffusion.autoregressive import Autoregressive

    run = make_run(tmp_path / "ar", "ar")
    judge = load_judge(run)
    from sunfish_lib.io.export import load_for_inference

    model, cfg, tok = load_for_inference(run)
    text = "ROMEO: what light through yonder window"
    ids = torch.tensor([[tok.eos_token_id] + tok.encode(text)])
    expected = Autoregressive().loss(model.eval(), {"input_ids": ids})["nll_per_seq"].item()  # mean nats/token
    nll, n = judge.nll(text)
    assert n == ids.shape[1] - 1 and nll / n == pytest.approx(expected, rel=1e-5)
    assert judge.perplexity([text]) == pytest.approx(math.exp(expected), rel=1e-5)


def test_a_diffusion_model_is_no_judge(tmp_path):
    run = make_run(tmp_path / "m", "masked")
    with pytest.raises(SunfishError, match="is a masked model; a judge must be causal"):
        load_judge(run)
    with pytest.raises(SunfishError, match="does not exist"):
        load_judge(tmp_path / "nowhere")


def test_find_judge_takes_the_workbooks_ar_model_nested_and_never_the_sampled_one(tmp_path):
    wb = tmp_path / "wb"
    masked = make_run(wb / "04_train", "masked")
    assert find_judge([wb], masked) is None
    ar = make_run(wb / "04_train" / "baselines" / "ar", "ar")
    assert find_judge([wb], masked) == ar
    assert find_judge([wb], ar) is None


def test_sample_quality_fields_and_the_held_out_scale(tmp_path):
    from sunfish_lib.sampling.session import load_checkpoint, sample

    loaded = load_checkpoint(make_run(tmp_path / "m", "masked", length=12, num_samples=2))
    gen = sample(loaded, prompt="ROMEO:", seed=0)
    q = sample_quality(gen.ids, gen.start, loaded.tokenizer, loaded.cfg)
    assert q["tokens_per_sample"] == 12 and len(q["per_sample"]) == 2
    gen_rows = [r[s == loaded.tokenizer.mask_token_id].tolist() for r, s in zip(gen.ids, gen.start)]
    assert q["entropy"] == pytest.approx(sum(unigram_entropy(r) for r in gen_rows) / 2)
    assert q["reference_windows"] == 8 and 0 < q["reference_entropy"] <= math.log(12)
    assert q["judge"] is None and q["judge_ppl"] is None and "no judge" in q["judge_note"]
    judge = load_judge(make_run(tmp_path / "ar", "ar"))
    q = sample_quality(gen.ids, gen.start, loaded.tokenizer, loaded.cfg, judge=judge)
    texts = [loaded.tokenizer.decode(r.tolist(), skip_special_tokens=True) for r in gen.ids]
    assert q["judge_ppl"] == pytest.approx(judge.perplexity(texts))
    assert q["reference_judge_ppl"] > 1 and q["entropy"] is not None  # never one without the other


def test_sample_json_carries_the_quality_fields(tmp_path, capsys):
    masked = make_run(tmp_path / "wb" / "04_train", "masked", length=8, num_samples=2)
    ar = make_run(tmp_path / "judge", "ar")
    assert main(["sample", str(masked), "--json", "--no-save", "--judge", str(ar)]) == 0
    q = json.loads(capsys.readouterr().out)["quality"]
    assert q["judge"] == str(ar) and q["judge_ppl"] > 1 and q["reference_judge_ppl"] > 1
    assert {"entropy", "reference_entropy", "distinct_2", "reference_distinct_2"} <= set(q)
    # no judge named, none in a workbook folder: said, not invented
    assert main(["sample", str(masked), "--json", "--no-save"]) == 0
    q = json.loads(capsys.readouterr().out)["quality"]
    assert q["judge_ppl"] is None and q["judge_note"].startswith("no independent judge: the checkpoint is not inside") and q["entropy"] is not None
    # inside a workbook run folder (run.json), its ar model is the default judge
    (tmp_path / "wb" / "run.json").write_text("{}")
    wb_ar = make_run(tmp_path / "wb" / "04_train_ar", "ar")
    assert main(["sample", str(masked), "--json", "--no-save"]) == 0
    assert json.loads(capsys.readouterr().out)["quality"]["judge"] == str(wb_ar)
    # the pretty output: samples once (newlines as marks), the quality figures under them
    assert main(["sample", str(masked), "--no-save", "--prompt", "A\nB"]) == 0
    out = capsys.readouterr().out
    assert "--- sample 1 ---" in out and "A↵B" in out and "unigram entropy (nats)" in out and "judge: " in out
    assert main(["sample", str(masked), "--no-save", "--judge", str(make_run(tmp_path / "other", "masked"))]) == 2
    assert "a judge must be causal" in capsys.readouterr().err
    assert main(["sample", str(masked), "--no-save", "--judge", str(masked / "export")]) == 2
    assert "is the same model as the sampled model" in capsys.readouterr().err


def test_an_overfit_check_is_no_judge(tmp_path):
    wb = tmp_path / "wb"
    overfit = make_run(wb / "03_overfit", "ar")
    (overfit / "status.json").write_text('{"state": "finished", "overfit_batches": 2}')
    assert find_judge([wb]) is None
    real = make_run(wb / "04_train" / "ar", "ar")
    assert find_judge([wb]) == real


def test_held_out_windows_may_be_longer_than_a_training_row(tmp_path):
    from sunfish_lib.eval.quality import reference_windows
    from sunfish_lib.sampling.session import load_checkpoint

    loaded = load_checkpoint(make_run(tmp_path / "m", "masked"))
    assert loaded.cfg.data.seq_len == 32
    windows = reference_windows(loaded.cfg, loaded.tokenizer, 64, count=3)
    assert [len(w) for w in windows] == [64, 64, 64] and loaded.tokenizer.eos_token_id not in windows[0]
