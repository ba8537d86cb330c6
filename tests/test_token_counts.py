"""Token counts: validation losses weighted by the tokens they score; tokens trained on while the curriculum runs."""

import pytest
import torch

from sunfish_lib.config import get_config
from sunfish_lib.eval.compare import tokens_after
from sunfish_lib.train.module import SunfishModule
from tests.train_helpers import small_config


@pytest.mark.parametrize("objective", ["ar", "masked"])
def test_val_loss_is_weighted_by_scored_tokens(objective):
    cfg = small_config(objective)
    V = cfg.model.vocab_size
    module = SunfishModule(cfg.to_dict(), mask_token_id=V - 1, eos_token_id=0)
    logged = {}
    module.log = lambda name, value, **kw: logged.update({name: kw["batch_size"]})
    am = torch.ones(4, 32, dtype=torch.long)
    am[0, 5:] = 0  # one short (padded) row
    module.validation_step({"input_ids": torch.randint(1, V - 1, (4, 32)), "attention_mask": am}, 0)
    assert logged["val/loss"] == 3 * 32 + 5  # scored tokens, not rows: batches with padding count less


def test_compare_counts_the_tokens_the_curriculum_actually_fed():
    cfg = get_config("tiny", seq_len=128, micro_batch_size=2, curriculum_steps=4, curriculum_start_len=64).to_dict()
    assert tokens_after(cfg, 6) == 2 * (64 + 80 + 96 + 112) + 2 * 2 * 128  # not 6 x 256
    assert tokens_after(get_config("tiny").to_dict(), 3) == 3 * 16 * 128
