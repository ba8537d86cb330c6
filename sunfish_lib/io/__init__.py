"""Model IO: reading and writing what a run leaves on disk, below training and sampling.

- `files`: the one atomic write (`atomic_write`), run-folder JSON (`read_json`, `write_json`) and the
  one-line error for a write that fails (disk full);
- `metrics`: a run's logged metrics read back (`read_metrics`, `series`);
- `verify`: telling a bad checkpoint or safetensors file apart from a good one before anything trusts it;
- `checkpoint`: `atomic_torch_save`, `safe_torch_load` (weights_only, CRC-checked), Lightning `.ckpt` -> model;
- `export`: the Hugging Face folder (`export_model`, `load_exported`, `load_weights`) and
  `load_for_inference` (run folder, export or `.ckpt` -> model, config, tokenizer).

Nothing here knows Lightning's training loop (that stays in `sunfish_lib.train`); `files` and
`metrics` import neither torch nor Lightning.
"""
