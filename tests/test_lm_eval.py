"""The lm-evaluation-harness adapter, offline: a local multiple-choice task over a JSONL, and each objective's scoring."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is in the dev extra; run bash scripts/setup.sh")

from sunfish_lib.config import get_config  # noqa: E402
from sunfish_lib.errors import SunfishError  # noqa: E402
from sunfish_lib.eval.harness import SunfishLM  # noqa: E402
from sunfish_lib.train.trainer import train  # noqa: E402
from tests.helpers import run_cli  # noqa: E402
from tests.sampling_helpers import make_run  # noqa: E402

WORDS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen twenty").split()
CHANCE = 0.25  # four choices

TASK_YAML = """task: sunfish_count
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
"""


def _counting_corpus(path, n_docs: int = 1500, seed: int = 0) -> None:
    """Documents of consecutive number words from a random start: the next word is the successor."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n_docs):
            s = rng.randrange(0, len(WORDS) - 3)
            f.write(json.dumps({"text": " ".join(WORDS[s:rng.randrange(s + 3, len(WORDS) + 1)])}) + "\n")


def _task(folder, n: int = 40, seed: int = 1) -> None:
    """A 4-way multiple-choice task: "five six seven" -> eight among three other number words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        s = rng.randrange(0, len(WORDS) - 4)
        k = rng.randrange(2, 4)
        answer = WORDS[s + k]
        choices = [answer] + rng.sample([w for w in WORDS if w != answer], 3)
        rng.shuffle(choices)
        rows.append({"context": " ".join(WORDS[s:s + k]), "choices": choices, "gold": choices.index(answer)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "count_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "sunfish_count.yaml").write_text(TASK_YAML.format(data=folder / "count_mc.jsonl"))


@pytest.fixture(scope="module")
def counting_ar_run(tmp_path_factory):
    """A 2-layer ar model trained 100 steps on the counting corpus (seconds on a CPU)."""
    root = tmp_path_factory.mktemp("count")
    _counting_corpus(root / "count.jsonl")
    cfg = get_config("smoke", {"objective": "ar", "sampler": "ar", "source": str(root / "count.jsonl"),
                               "micro_batch_size": 16, "max_steps": 100, "lr": 3e-3, "warmup_steps": 10,
                               "val_every": 100, "ckpt_every": 100, "log_every": 50, "val_batches": 1, "keep_best": 0})
    train(cfg, root / "run", progress=False)
    _task(root / "tasks")
    return root


@pytest.mark.slow
def test_local_task_beats_chance(counting_ar_run, capsys):
    """`sunfish eval-harness RUN --tasks ... --include-path DIR`: a learned model beats 1-in-4 chance."""
    root = counting_ar_run
    r = run_cli("eval-harness", str(root / "run"), "--tasks", "sunfish_count", "--include-path", str(root / "tasks"),
                "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    acc = json.loads(r.stdout.strip().splitlines()[-1])["sunfish_count"]["acc,none"]
    with capsys.disabled():
        print(f"\nsunfish_count (40 items, 4 choices): acc {acc:.3f} vs chance {CHANCE}")
    assert acc >= 0.6


@pytest.mark.slow
def test_lm_eval_command_line_with_sunfish_registered(counting_ar_run):
    """docs/exports-and-evaluation.md's `python -m sunfish_lib.eval.harness --model sunfish ...` line: lm_eval's own CLI, same score."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    root = counting_ar_run
    out = root / "lm_eval_out"
    r = subprocess.run([sys.executable, "-m", "sunfish_lib.eval.harness", "--model", "sunfish", "--model_args",
                        f"path={root / 'run'},draws=8", "--tasks", "sunfish_count", "--include_path",
                        str(root / "tasks"), "--output_path", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["sunfish_count"]
    assert results["acc,none"] >= 0.6


def test_ar_loglikelihood_is_exact_and_greedy(counting_ar_run):
    lm = SunfishLM(str(counting_ar_run / "run"))
    ctx, cont = "three four five", " six seven"
    ids = [lm.eos] + lm.tok.encode(ctx) + lm.tok.encode(cont)
    n = len(lm.tok.encode(cont))
    with torch.no_grad():
        logp = F.log_softmax(lm.model(torch.tensor([ids]))[0].float(), -1)
    exact = sum(logp[i - 1, ids[i]].item() for i in range(len(ids) - n, len(ids)))
    score, greedy = lm.score(ctx, cont)
    assert score == pytest.approx(exact, abs=1e-4) and greedy
    assert lm.score(ctx, " nine two")[0] < score - 2.0
    # rolling: windows of max_seq_len / 2 given what precedes them; a short text is one window after EOS
    rolling = lm.loglikelihood_rolling([_Req(("three four five six",))])[0]
    assert rolling == pytest.approx(lm.score("", "three four five six")[0], abs=1e-4)


def test_generate_until_stops_at_the_stop_string(counting_ar_run):
    """Greedy (lm_eval's default), so the same context gives the same text; a stop string cuts it there."""
    lm = SunfishLM(str(counting_ar_run / "run"))
    full = lm.generate_until([_Req(("eleven twelve", {"until": ["\n\n"], "max_gen_toks": 12}))])[0]
    words = full.split()
    assert len(words) >= 3 and set(words) <= set(WORDS), full  # it counts in number words
    stop = words[2]
    cut = lm.generate_until([_Req(("eleven twelve", {"until": [stop], "max_gen_toks": 12}))])[0]
    assert cut == full[:full.index(stop)] and len(cut) < len(full)
    assert "<|endoftext|>" not in full  # EOS ends a generation too


def test_masked_elbo_of_one_token_matches_its_exact_log_prob(tmp_path):
    """With one continuation token the conditional ELBO is exact (l = n = 1 always: the token masked, weight 1)."""
    run = make_run(tmp_path / "m", "masked")
    lm = SunfishLM(str(run), draws=4)
    ctx, cont = lm.tok.encode("To be, or not to"), lm.tok.encode(" be")[:1]
    x = torch.tensor([[lm.eos] + ctx + cont])
    z = x.clone()
    z[0, -1] = lm.tok.mask_token_id
    with torch.no_grad():
        logits = lm.model(z)[0, -1].float()
    logits[lm.tok.mask_token_id] = float("-inf")
    exact = F.log_softmax(logits, -1)[cont[0]].item()
    est, _ = lm._score_ids(ctx, cont)
    assert est == pytest.approx(exact, abs=1e-4)
    # several tokens: draws with different seeds agree (LLaDA's estimator has low variance) ...
    a = SunfishLM(str(run), draws=64, seed=1).score("To be", " or not to be")[0]
    b = SunfishLM(str(run), draws=64, seed=2).score("To be", " or not to be")[0]
    assert a < 0 and abs(a - b) < 0.1 * abs(a)
    # ... and the mean equals the exact expectation over l and the masked subsets (enumerated for n = 3)
    ids = lm.tok.encode(" or not to be")[:3]
    x = torch.tensor([[lm.eos] + lm.tok.encode("To be") + ids])
    assert SunfishLM(str(run), draws=4000, batch_size=500).score("To be", lm.tok.decode(ids))[0] == pytest.approx(
        _exact_conditional_elbo(lm, x, 3), rel=0.02)


@pytest.mark.slow
def test_continuous_loglikelihood_is_its_conditional_bound(tmp_path):
    """A continuous run scores a continuation by the chain's variational bound (#26): a lower bound on log p,
    so at most 0, and a longer continuation costs more."""
    run = make_run(tmp_path / "c", "continuous")
    lm = SunfishLM(str(run), draws=8)
    (one, _), (two, _) = lm.loglikelihood([_Req(("To be", " or")), _Req(("To be", " or not to be"))])
    assert one < 0 and two < one
    assert SunfishLM(str(run), draws=8, seed=3).score("To be", " or")[0] <= 0  # every draw of the bound is >= 0 nats
    r = run_cli("eval-harness", str(run), "--tasks", "no_such_task")
    assert r.returncode == 2 and "unknown task 'no_such_task'" in r.stderr and "Traceback" not in r.stderr


def _exact_conditional_elbo(lm, x, n: int) -> float:
    """E over l ~ U{1..n} and uniform l-subsets S of (n / l) sum_{i in S} log p(x_i | x with S masked)."""
    from itertools import combinations

    T, total = x.shape[1], 0.0
    for l in range(1, n + 1):
        subsets = list(combinations(range(T - n, T), l))
        for s in subsets:
            z = x.clone()
            z[0, list(s)] = lm.tok.mask_token_id
            with torch.no_grad():
                logits = lm.model(z)[0].float()
            logits[:, lm.tok.mask_token_id] = float("-inf")
            logp = F.log_softmax(logits, -1)
            total += (n / l) * sum(logp[i, x[0, i]].item() for i in s) / len(subsets) / n
    return total


class _Req:
    """What lm_eval hands a model: an object with `.args`."""

    def __init__(self, args):
        self.args = args
