"""Sample i of a call is a function of (model, settings, seed, i, its prompt), never of the batch around it.

For every sampler the config allows per objective, at temperature > 0 on tiny untrained models: a prompt's
sample 0 drawn alone equals row 0 of a batch of 4 and that prompt's row 0 inside a mixed `prompts=[...]` call
(other prompts, other lengths, before and after it); its row 1 is the same in the batch of 4 and the mixed call.
"""

from __future__ import annotations

import json

import pytest
import torch

from sunfish_lib.cli import main
from sunfish_lib.config import SAMPLERS
from sunfish_lib.data import get_tokenizer
from sunfish_lib.model import Backbone
from sunfish_lib.sampling.block import BlockSampler
from sunfish_lib.sampling.session import Loaded, sample
from tests.sampling_helpers import make_run
from tests.train_helpers import small_config

PROMPT = "ROMEO:"
OTHERS = ("", "JULIET: O Romeo, Romeo!")  # one shorter and one longer than PROMPT, on either side of it
CASES = [(objective, name) for objective, names in SAMPLERS.items() for name in names]
EXTRA = {  # settings that change how a sampler couples rows: ReMDM remasking, semi-AR blocks, the approximate cache
    "remask": ("masked", "low_confidence", {"remask": 0.3}),
    "semi_ar": ("masked", "threshold", {"block_length": 4, "threshold": 0.05}),
    "prefix_cache": ("masked", "low_confidence", {"cache": "prefix", "block_length": 4}),
    "top_k_top_p": ("masked", "margin", {"top_k": 40, "top_p": 0.9}),
    "ddpm_eta": ("continuous", "ddim", {"eta": 1.0}),
    "cfg": ("masked", "low_confidence", {"cfg_scale": 1.5}),
}
_MODELS: dict[str, Loaded] = {}


def _loaded(objective: str) -> Loaded:
    """A tiny untrained model of the objective (seeded), built once per test session."""
    if objective not in _MODELS:
        cfg = small_config(objective)
        torch.manual_seed(0)
        model = Backbone.from_config(cfg).eval()
        _MODELS[objective] = Loaded(model, cfg, get_tokenizer("bpe", cfg.data.bpe_vocab_size))
    return _MODELS[objective]


def _settings(objective: str, sampler: str, **extra) -> dict:
    steps = 8 if objective != "continuous" else 6
    return {"sampler": sampler, "steps": steps, "length": 12, "temperature": 0.9, **extra}


def _check(objective: str, mode: str, prompt: str, others: tuple[str, ...], seed: int, **settings) -> None:
    loaded = _loaded(objective)
    alone = sample(loaded, mode=mode, prompt=prompt, seed=seed, num_samples=1, **settings).texts
    four = sample(loaded, mode=mode, prompt=prompt, seed=seed, num_samples=4, **settings).texts
    mixed = sample(loaded, mode=mode, prompts=[others[0], prompt, others[1]], seed=seed, num_samples=2,
                   **settings).texts
    assert len(set(four)) > 1, "the rows of a batch must be different draws"
    assert four[0] == alone[0], "row 0 of a batch of 4 differs from the sample drawn alone"
    assert mixed[2:4] == four[:2], "the prompt's rows inside a mixed prompts call differ from its own batch"


@pytest.mark.parametrize("objective,sampler", CASES, ids=[f"{o}-{s}" for o, s in CASES])
def test_a_sample_does_not_depend_on_the_batch(objective, sampler):
    _check(objective, "uncond", PROMPT, OTHERS, 3, **_settings(objective, sampler))


@pytest.mark.parametrize("case", sorted(EXTRA))
def test_a_sample_does_not_depend_on_the_batch_with_coupling_settings(case):
    objective, sampler, extra = EXTRA[case]
    _check(objective, "uncond", PROMPT, OTHERS, 5, **_settings(objective, sampler, **extra))


def test_an_unprompted_row_beside_prompted_ones_is_as_alone_under_guidance():
    """Classifier-free guidance runs for the batch once any row has a prompt; a row without one gets un = cond."""
    _check("masked", "uncond", "", (PROMPT, OTHERS[1]), 4, **_settings("masked", "low_confidence", cfg_scale=1.5))


INFILL = ("ROMEO: [MASK] love", "[MASK] Romeo", "O [MASK] thou art [MASK], JULIET")  # spans at other columns


@pytest.mark.parametrize("objective,sampler", [c for c in CASES if c[0] != "ar"],
                         ids=[f"{o}-{s}" for o, s in CASES if o != "ar"])
def test_an_infill_does_not_depend_on_the_batch(objective, sampler):
    _check(objective, "infill", INFILL[0], INFILL[1:], 7, **_settings(objective, sampler, mask_length=4))


@pytest.mark.parametrize("extra", [{"block_length": 4}, {"block_length": 4, "remask": 0.3}], ids=["semi_ar", "remask"])
def test_rows_with_other_block_counts_keep_their_own_schedule(extra):
    """The other prompts have more semi-AR blocks than this one's single span: its steps are still its own."""
    _check("masked", "infill", INFILL[0], INFILL[1:], 9, **_settings("masked", "low_confidence", mask_length=4, **extra))


@pytest.mark.parametrize("objective,sampler", [("masked", "threshold"), ("block", "random")])
def test_sunfish_sample_with_prompts_gives_each_prompt_its_own_samples(tmp_path, capsys, objective, sampler):
    """The CLI path: `--num-samples 1`, `--num-samples 4` and a `--prompts` file agree on the prompt's samples."""
    run = make_run(tmp_path / "run", objective)
    (tmp_path / "prompts.txt").write_text("\n".join([OTHERS[1], PROMPT, "JULIET:"]) + "\n")
    flags = ["--sampler", sampler, "--steps", "6", "--length", "10", "--temperature", "0.8", "--seed", "11",
             "--no-save", "--json"]

    def texts(*argv):
        assert main(["sample", str(run), *argv, *flags]) == 0
        return json.loads(capsys.readouterr().out)["texts"]

    alone, four = texts("--prompt", PROMPT, "--num-samples", "1"), texts("--prompt", PROMPT, "--num-samples", "4")
    mixed = texts("--prompts", str(tmp_path / "prompts.txt"), "--num-samples", "2")
    assert len(set(four)) == 4 and four[0] == alone[0] and mixed[2:4] == four[:2]


def test_a_block_row_that_emitted_eos_ends_as_it_would_alone():
    """Variable length (EOS allowed): a row that has ended gets EOS in its remaining blocks at once, even while other
    rows of its batch go on, so it reads as it does alone."""
    from tests.test_block_sampling import EOS, K, L, MASK, V, model_of, start

    model = model_of()
    head, bias = model.logits, torch.zeros(V)
    bias[EOS] = 3.0  # an untrained model seldom emits EOS: make it likely enough to end rows early
    model.logits = lambda h: head(h) + bias
    s = BlockSampler(model, MASK, kind="low_confidence", steps=L, temperature=1.0, block_size=K, eos_id=EOS)
    coupled = 0
    for seed in range(8):
        alone, four = s(start(1), seed=seed).ids[0], s(start(4), seed=seed).ids
        assert torch.equal(four[0], alone), seed
        first_eos = [int((r[2:] == EOS).nonzero()[0]) + 2 if (r[2:] == EOS).any() else L for r in four]
        coupled += first_eos[0] < L - K and max(first_eos) == L  # row 0 ended early while another row went on
        if first_eos[0] < L:
            assert (alone[(first_eos[0] // K + 1) * K:] == EOS).all()  # the blocks after its EOS's are all EOS
    assert coupled >= 1  # the case this test is about happened
