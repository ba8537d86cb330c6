import json

import pytest

from sunfish_lib.config import PRESETS, Config, ConfigError, get_config, parse_set_args
from sunfish_lib.diffusion.continuous import CDCD_RECIPE, PLAIN_RECIPE


def test_presets_validate_and_1p4b_shape():
    for name in PRESETS:
        cfg = get_config(name)
        assert cfg.preset == name
    big = get_config("1.4B")
    m = big.model
    assert (m.n_layers, m.n_heads, m.d_model, m.max_seq_len) == (24, 16, 2048, 2048)
    assert big.data.seq_len == 2048
    # global batch 256 sequences x 2048 tokens on one GPU (accumulate 64) and on 8 (accumulate 8)
    assert (big.accumulation, big.sequences_per_step, big.tokens_per_step) == (64, 256, 256 * 2048)
    eight = get_config("1.4B", devices=8)
    assert (eight.accumulation, eight.sequences_per_step) == (8, 256)


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_round_trip_exact(name, tmp_path):
    cfg = get_config(name, {"model.embed_dim": 64, "train.lr": 1.5e-4})
    again = Config.from_json(cfg.to_json())
    assert again == cfg
    cfg.save(tmp_path / "config.json")
    assert Config.load(tmp_path / "config.json") == cfg
    assert json.loads((tmp_path / "config.json").read_text())["model"]["embed_dim"] == 64


def test_overrides_dotted_bare_and_strings():
    cfg = get_config("tiny", {"model.n_layers": "6", "max_steps": "2e3", "dropout": 0.1, "d_ff": "null",
                              "cross_document_attention": "false", "objective": "masked", "sampler": "low_confidence"})
    assert cfg.model.n_layers == 6 and isinstance(cfg.model.n_layers, int)
    assert cfg.train.max_steps == 2000
    assert cfg.model.dropout == 0.1 and cfg.model.d_ff is None
    assert cfg.data.cross_document_attention is False
    assert cfg.diffusion.objective == "masked"
    assert parse_set_args(["a.b=1", "c = x=y"]) == {"a.b": "1", "c": "x=y"}


def test_resolved_model_follows_objective():
    assert get_config("tiny").resolved_model.time_conditioning is True
    masked = get_config("tiny", objective="masked", sampler="ancestral").resolved_model
    assert masked.time_conditioning is False and masked.causal is False
    ar = get_config("tiny", objective="ar", sampler="ar").resolved_model
    assert ar.causal is True and ar.time_conditioning is False
    forced = get_config("tiny", {"objective": "masked", "sampler": "random", "time_conditioning": True}).resolved_model
    assert forced.time_conditioning is True


BAD = [
    ({"model.n_heads": 3}, "model.d_model=128 is not divisible by model.n_heads=3"),
    ({"seq_len": 1000}, "data.seq_len=1000 exceeds model.max_seq_len=256"),
    ({"warmup_steps": 5000}, f"train.warmup_steps=5000 is longer than train.max_steps={PRESETS['tiny'].train.max_steps}"),
    ({"objective": "gaussian"}, "diffusion.objective='gaussian' is not allowed"),
    ({"schedule": "quadratic"}, "diffusion.schedule='quadratic' is not allowed"),
    ({"lr": 0}, "train.lr=0.0 must be > 0"),
    ({"micro_batch_size": -2}, "data.micro_batch_size=-2 must be > 0"),
    ({"precision": "fp8"}, "train.precision='fp8' is not allowed"),
    ({"strategy": "deepspeed"}, "train.strategy='deepspeed' is not allowed"),
    ({"model.n_layers": "four"}, "model.n_layers='four' is not a valid int"),
    ({"n_layerz": 3}, "unknown config key 'n_layerz'; did you mean"),
    ({"model.dropout": 1.0}, "model.dropout=1.0 must be in [0, 1)"),
    ({"sampler": "ddim", "objective": "masked"}, "sample.sampler='ddim' does not fit objective 'masked'"),
    ({"steps": 2000}, "sample.steps=2000 exceeds diffusion.num_timesteps=1000"),
    ({"steps": 0}, "sample.steps=0 must be > 0"),
    ({"cpu_offload": True}, "train.cpu_offload=True needs train.strategy='fsdp'"),
    ({"bpe_vocab_size": 8192}, "data.bpe_vocab_size=8192 exceeds model.vocab_size=1024"),
    ({"objective": "ar", "sampler": "ar", "causal": False}, "model.causal=False but objective 'ar'"),
    ({"time_conditioning": False}, "model.time_conditioning=False but objective 'continuous'"),
    ({"lr_mult_attn": -1}, "train.lr_mult_attn=-1.0 must be >= 0"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m.split("=")[0] for _, m in BAD])
def test_bad_configs_one_line_naming_field(overrides, message):
    with pytest.raises(ConfigError) as e:
        get_config("tiny", overrides)
    text = str(e.value)
    assert message in text
    assert "\n" not in text


def test_unknown_preset_and_ambiguous_key():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of tiny, 125M, 350M, 1.4B"):
        get_config("huge")
    # `dropout` is unique; a key present in two sections must be dotted — none today, so check the message path
    with pytest.raises(ConfigError, match="unknown config key 'model.seq_len'"):
        get_config("tiny", {"model.seq_len": 10})


def test_from_dict_rejects_unknown_and_bad_types():
    d = get_config("tiny").to_dict()
    d["train"]["warmup"] = 3
    with pytest.raises(ConfigError, match="unknown config key 'train.warmup'"):
        Config.from_dict(d)
    d = get_config("tiny").to_dict()
    d["model"]["n_layers"] = "x"
    with pytest.raises(ConfigError, match="model.n_layers='x' is not a valid int"):
        Config.from_dict(d)
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.from_json("{oops")


def test_choosing_only_an_objective_brings_its_default_sampler():
    from sunfish_lib.config import DEFAULT_SAMPLERS, get_config

    for objective, sampler in DEFAULT_SAMPLERS.items():
        assert get_config("tiny", {"objective": objective}).sample.sampler == sampler
    # an explicit sampler wins, and is still validated against the objective
    assert get_config("tiny", {"objective": "masked", "sampler": "threshold"}).sample.sampler == "threshold"
    with pytest.raises(ConfigError, match="does not fit objective 'masked'"):
        get_config("tiny", {"objective": "masked", "sampler": "ddim"})


def test_cfg_scale_is_refused_where_no_sampler_reads_it():
    with pytest.raises(ConfigError, match="sample.cfg_scale=2.0 applies to the masked samplers"):
        get_config("tiny", cfg_scale=2.0)  # continuous
    assert get_config("tiny", objective="masked", sampler="random", cfg_scale=2.0).sample.cfg_scale == 2.0


def test_continuous_default_is_the_cdcd_recipe_and_plain_undoes_it():
    """Every preset's continuous run trains CDCD_RECIPE (bench/continuous_recipe.py's choice); PLAIN_RECIPE's overrides
    give the seed's Diffusion-LM (x0 MSE, raw embeddings, no self-conditioning input)."""
    for name in PRESETS:
        d = get_config(name, objective="continuous").diffusion
        assert {k: getattr(d, k) for k in CDCD_RECIPE} == CDCD_RECIPE, name
    plain = get_config("tiny", PLAIN_RECIPE)
    assert (plain.diffusion.continuous_loss, plain.diffusion.embed_norm, plain.resolved_model.self_cond_input) == (
        "mse", False, False)
