"""Remote code that `export` copies beside an exported model, so `transformers` loads it (trust_remote_code).

The three modules depend on torch and transformers only, never on sunfish_lib: they run
wherever the folder goes. tests/test_hf_export.py checks their logits against the backbone, tests/test_hf_copies.py
that each "# Copied from" block still matches its source, tests/test_hf_generate.py that they sample as Sunfish does.
"""
