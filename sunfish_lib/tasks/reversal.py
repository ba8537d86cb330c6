"""The reversal task (Kitouni et al. 2024, "The Factorization Curse", arXiv 2406.05183, Sec. 4 retrieval).

N facts key -> value; keys and values are drawn from disjoint token pools and are several tokens each.
Training: every fact as a whole statement ("k3 k17 is v5 v2", empty prompt: the masked model trains on it
with its ordinary objective, so any position may be masked, as MLM-U does; AR reads it left to right),
plus question/answer rows in both directions for a training share of the facts:
forward "fwd k3 k17 =" -> "v5 v2", backward "bwd v5 v2 =" -> "k3 k17".
Test: the held-out facts asked backwards (and forwards, for reference). A row's `infill` is the statement
with the answer span to fill: the masked model infills the key given the value; AR answers the backward
question form (the only form it can condition on the value with). Scored by exact match.
"""

from __future__ import annotations

import random

from sunfish_lib.errors import SunfishError
from sunfish_lib.tasks.base import exact_match

DEFAULTS = {"n_facts": 400, "key_tokens": 2, "value_tokens": 2, "pool": 40, "qa_share": 0.8}


def words(pool: int = DEFAULTS["pool"], **_) -> list[str]:
    return ["is", "fwd", "bwd", "="] + [f"k{i}" for i in range(pool)] + [f"v{i}" for i in range(pool)]


def make(seed: int = 0, n_facts: int = DEFAULTS["n_facts"], key_tokens: int = DEFAULTS["key_tokens"],
         value_tokens: int = DEFAULTS["value_tokens"], pool: int = DEFAULTS["pool"],
         qa_share: float = DEFAULTS["qa_share"]) -> dict[str, list[dict]]:
    """{"train": rows, "test": rows}; deterministic from `seed`."""
    if n_facts > pool ** min(key_tokens, value_tokens):
        raise SunfishError(f"reversal: n_facts={n_facts} distinct keys do not fit pool={pool}^{key_tokens}; "
                           "raise pool or key_tokens")
    if not 0 < qa_share < 1:
        raise SunfishError(f"reversal: qa_share={qa_share} must be in (0, 1)")
    rng = random.Random(seed)
    keys, values = set(), set()
    while len(keys) < n_facts:
        keys.add(" ".join(f"k{rng.randrange(pool)}" for _ in range(key_tokens)))
    while len(values) < n_facts:
        values.add(" ".join(f"v{rng.randrange(pool)}" for _ in range(value_tokens)))
    facts = list(zip(sorted(keys), rng.sample(sorted(values), n_facts)))
    rng.shuffle(facts)
    n_qa = int(round(qa_share * n_facts))
    train = [{"prompt": "", "completion": f"{k} is {v}", "kind": "statement"} for k, v in facts]
    for k, v in facts[:n_qa]:
        train.append({"prompt": f"fwd {k} =", "completion": v, "kind": "forward"})
        train.append({"prompt": f"bwd {v} =", "completion": k, "kind": "backward"})
    rng.shuffle(train)
    test = []
    for k, v in facts[n_qa:]:
        test.append({"prompt": f"fwd {k} =", "completion": v, "direction": "forward",
                     "infill": {"text": f"{k} is {v}", "start": key_tokens + 1, "length": value_tokens}})
        test.append({"prompt": f"bwd {v} =", "completion": k, "direction": "backward",
                     "infill": {"text": f"{k} is {v}", "start": 0, "length": key_tokens}})
    return {"train": train, "test": test}


score = exact_match
