"""Lightning's checkpoint IO for Sunfish runs: atomic writes, weights_only reads.

`AtomicCheckpointIO` writes through `sunfish_lib.io.checkpoint.atomic_torch_save` (`<name>.tmp`,
fsync, rename: a kill mid-write leaves the previous `last.ckpt` intact) and reads through
`safe_torch_load` (CRC-checked, `torch.load(weights_only=True)`). Loading and exporting models
outside the training loop live in `sunfish_lib.io`.
"""

from __future__ import annotations

from pathlib import Path

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from sunfish_lib.io.checkpoint import atomic_torch_save, safe_torch_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Atomic writes, weights_only reads (see module docstring)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return safe_torch_load(Path(path), map_location or "cpu")
