"""`import sunfish_lib.data` and its torch-side modules need only torch (the GPU box lacks `datasets`)."""

import subprocess
import sys

HEAVY = ("datasets", "transformers", "tokenizers", "pytorch_lightning", "lightning", "pyarrow", "matplotlib")

CODE = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import sunfish_lib.data
from sunfish_lib.data import packing, loader, stream, sources, tokenizer, corpus, pipeline, summary, plots
from sunfish_lib.data.packing import PackSpec, make_batch
import numpy as np
spec = PackSpec(seq_len=4, batch_size=1, eos_id=0, pad_id=1)
print(make_batch([np.array([5, 0, 6, 7])], 4, spec)["input_ids"].tolist())
print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
"""


def test_data_package_imports_with_only_torch():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[[5, 0, 6, 7]]", "[]"]
