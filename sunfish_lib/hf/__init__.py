"""The Hugging Face side: hub reachability, the exported folder's HF files, AR parents, and the remote code."""
