"""Remote code that `export` copies beside an exported model, so `transformers` loads it (trust_remote_code).

The two modules depend on torch and transformers only, never on sunfish_lib: they run
wherever the folder goes. tests/test_hf_export.py keeps them in step with the backbone.
"""
