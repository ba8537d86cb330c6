"""Configuration of a Sunfish diffusion LM exported for `transformers` (torch + transformers only).

config.json holds Sunfish's whole run config (model, diffusion, data, train, sample
sections: what the Sunfish loader rebuilds the run from) plus `resolved_model`, the
backbone's fields with every default filled in (widths and the objective's switches),
so this file needs no Sunfish logic to build the model.
"""

from transformers import PretrainedConfig


class SunfishConfig(PretrainedConfig):
    model_type = "sunfish"

    def __init__(self, resolved_model=None, model=None, diffusion=None, data=None, train=None, sample=None,
                 seed=0, preset="custom", mask_token_id=None, tokenizer_size=None,
                 pad_token_id=None, eos_token_id=None, bos_token_id=None, **kwargs):
        self.resolved_model = dict(resolved_model or {})
        self.model, self.diffusion, self.data = model or {}, diffusion or {}, data or {}
        self.train, self.sample, self.seed, self.preset = train or {}, sample or {}, seed, preset
        self.mask_token_id, self.tokenizer_size = mask_token_id, tokenizer_size  # [MASK] and len(tokenizer)
        self.pad_token_id, self.eos_token_id, self.bos_token_id = pad_token_id, eos_token_id, bos_token_id
        m = self.resolved_model
        # The names generic transformers utilities read.
        self.vocab_size = m.get("vocab_size")
        self.hidden_size = m.get("d_model")
        self.num_hidden_layers = m.get("n_layers")
        self.num_attention_heads = m.get("n_heads")
        self.max_position_embeddings = m.get("max_seq_len")
        kwargs["tie_word_embeddings"] = False  # tying lives inside the model (logits = h @ tok_emb.T)
        super().__init__(**kwargs)

    @property
    def objective(self) -> str:
        """masked, ar or continuous: what the logits mean (see the model card / README)."""
        return self.diffusion.get("objective", "masked")
