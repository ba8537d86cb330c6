"""Issue #15: one sampler shape and registry, one entry point, every setting reachable, --device/--dtype, --prompts."""

import dataclasses
import json

import pytest
import torch

from sunfish_lib.cli import build_parser, main
from sunfish_lib.config import SampleConfig
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone
from sunfish_lib.sampling.base import SamplerOutput
from sunfish_lib.sampling.masked import MaskedSampler
from sunfish_lib.sampling.samplers import SAMPLERS, build_sampler
from sunfish_lib.sampling.session import load_checkpoint, sample
from sunfish_lib.sampling.settings import SETTINGS, applies
from sunfish_lib.notebook.widgets import SamplingPanel
from sunfish_lib.sampling.noise import RowNoise
from tests.sampling_helpers import make_run
from tests.train_helpers import small_config

OBJECTIVE = {"ddpm": "continuous", "ddim": "continuous", "ancestral": "masked", "low_confidence": "masked",
             "random": "masked", "threshold": "masked", "margin": "masked", "ar": "ar"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs15")
    return {o: make_run(root / o, o) for o in ("masked", "ar", "continuous")}


def _model(cfg):
    torch.manual_seed(0)
    return Backbone.from_config(cfg).eval()


def test_registry_names_every_sampler():
    assert set(SAMPLERS) == set(OBJECTIVE)


@pytest.mark.parametrize("name", sorted(OBJECTIVE))
def test_every_sampler_has_the_same_call(tok, name):
    """Built from SampleConfig by the registry; sampler(ids, mask, seed, callback, record) -> SamplerOutput,
    the same ids as the loop it wraps given the same row streams (seed 3)."""
    cfg = small_config(OBJECTIVE[name], sampler=name, steps=4)
    model = _model(cfg)
    sampler = build_sampler(model, cfg, tok)
    prefix = tok.encode("ROMEO:")
    ids = torch.tensor([prefix + [5] * 6] * 2)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, len(prefix):] = True
    seen = []
    out = sampler(ids, mask, seed=3, record=True, callback=lambda step, total, x: seen.append(step))
    assert isinstance(out, SamplerOutput) and out.ids.shape == ids.shape
    assert torch.equal(out.ids[:, :len(prefix)], ids[:, :len(prefix)]) and not (out.ids == tok.mask_token_id).any()
    assert out.forward_passes >= 1 and len(out.trajectory) >= 1 and seen and seen == sorted(seen)
    x = ids.masked_fill(mask, tok.mask_token_id)
    again = build_sampler(model, cfg, tok).generate(x, noise=RowNoise(3))
    assert torch.equal(again, out.ids)


def test_masked_step_alone(tok):
    """One step commits exactly k per row (low_confidence) and costs one forward pass; k = 0: nothing, no pass."""
    cfg = small_config("masked", steps=4)
    s = MaskedSampler(_model(cfg), tok.mask_token_id, kind="low_confidence", steps=4, temperature=0)
    x = torch.full((2, 8), tok.mask_token_id)
    x[:, 0] = 5
    prompt = x != tok.mask_token_id
    commit, conf, ent = s.step(x, prompt, x == tok.mask_token_id, torch.tensor([2, 3]), record=True)
    assert commit.sum(1).tolist() == [2, 3] and s.forward_passes == 1
    assert ((x != tok.mask_token_id).sum(1) == torch.tensor([3, 4])).all()
    assert (conf[commit] > 0).all() and conf[prompt].eq(0).all() and ent.shape == x.shape
    before = x.clone()
    assert s.step(x, prompt, x == tok.mask_token_id, torch.tensor([0, 0])) is None
    assert s.forward_passes == 1 and torch.equal(x, before)


def test_range_checks_have_one_wording():
    """The samplers use the config's rules: the same message whether the config or the sampler sees the value."""
    from sunfish_lib.config.validation import check_sample_ranges

    cfg = small_config("masked")
    for field, bad in [("steps", 0), ("threshold", 1.5), ("top_p", 0.0), ("cfg_scale", -1.0), ("block_length", -2)]:
        with pytest.raises(SunfishError) as via_config:
            cfg.override({f"sample.{field}": bad}).validate()
        with pytest.raises(SunfishError) as via_sampler:
            MaskedSampler(_model(cfg), 0, **{field: bad})
        with pytest.raises(SunfishError) as direct:
            check_sample_ranges(**{field: bad})
        assert str(via_config.value) == str(via_sampler.value) == str(direct.value)


# -- every setting from one list -----------------------------------------------------------------

def test_every_samplecfg_field_is_reachable_from_the_cli_and_the_panel(runs):
    fields = [f.name for f in dataclasses.fields(SampleConfig)]
    assert list(SETTINGS) == fields
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "sample")[1]
    dests = {a.dest: a for a in sub._actions}
    panel = SamplingPanel(checkpoint=runs["masked"])
    for name in fields:
        assert name in dests, f"sunfish sample has no flag for sample.{name}"
        assert dests[name].help, name
        assert hasattr(panel, name), f"the panel has no widget for sample.{name}"
        assert getattr(panel, name).tooltip, name
    assert {"device", "dtype", "prompts"} <= set(dests) and hasattr(panel, "device") and hasattr(panel, "dtype")
    # the panel shows only what acts on the checkpoint: eta (continuous) is disabled on a masked one
    assert panel.eta.disabled and not panel.threshold.disabled and not panel.cfg_scale.disabled
    assert set(panel.settings()) == {n for n in fields if applies(n, "masked", "uncond")}


def test_cli_threshold_block_cfg_flags_work_and_match_python(runs, capsys):
    argv = ["sample", str(runs["masked"]), "--sampler", "threshold", "--threshold", "0.9", "--block-length", "4",
            "--cfg-scale", "1.5", "--prompt", "ROMEO:", "--length", "8", "--steps", "4", "--seed", "2",
            "--device", "cpu", "--dtype", "float32", "--json", "--no-quality", "--no-save"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["settings"]["sampler"] == "threshold" and got["settings"]["block_length"] == 4
    assert got["settings"]["cfg_scale"] == 1.5 and got["settings"]["threshold"] == 0.9
    gen = sample(load_checkpoint(runs["masked"]), prompt="ROMEO:", seed=2, sampler="threshold", threshold=0.9,
                 block_length=4, cfg_scale=1.5, length=8, steps=4)
    assert got["ids"] == gen.ids.tolist()
    assert got["forward_passes"] == gen.forward_passes and gen.forward_passes % 2 == 0  # guided: 2 per step


@pytest.mark.parametrize("argv,message", [
    (["--threshold", "1.5"], "sample.threshold=1.5 must be in (0, 1]"),
    (["--block-length", "-1"], "sample.block_length=-1 must be >= 0"),
    (["--cfg-scale", "-2"], "sample.cfg_scale=-2.0 must be >= 0"),
    (["--top-p", "0"], "sample.top_p=0.0 must be in (0, 1]"),
    (["--device", "cuda:7"], "device='cuda:7'"),
    (["--device", "tpu9"], "device='tpu9'"),
    (["--dtype", "float8"], "argument --dtype: invalid choice"),
    (["--clamp", "maybe"], "--clamp takes true or false"),
    (["--steps", "many"], "argument --steps: invalid int value"),
    (["--prompts", "/no/such/prompts.txt"], "--prompts /no/such/prompts.txt: cannot read it"),
    (["--prompts", "{empty}"], "holds no prompt"),
    (["--prompts", "{badjson}"], "line 1 is not valid JSON"),
])
def test_bad_values_are_one_line_exit_2(runs, tmp_path, capsys, argv, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": \n')
    argv = [a.format(empty=tmp_path / "empty.txt", badjson=tmp_path / "bad.jsonl") for a in argv]
    assert main(["sample", str(runs["masked"]), *argv, "--no-save"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err


def test_device_defaults_to_the_best_available(monkeypatch):
    from sunfish_lib.model import devices

    assert devices.resolve_device(None).type == ("cuda" if torch.cuda.is_available() else devices.best_device())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.best_device() in ("mps", "cpu") and devices.resolve_device("auto").type == devices.best_device()
    assert devices.resolve_dtype("bfloat16") is torch.bfloat16 and devices.resolve_dtype(None) is torch.float32


def test_dtype_bfloat16_samples(runs):
    loaded = load_checkpoint(runs["masked"], dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    gen = sample(loaded, prompt="ROMEO:", seed=0, length=6, steps=3)
    assert gen.ids.shape[1] == len(loaded.tokenizer.encode("ROMEO:")) + 6
    assert not (gen.ids == loaded.tokenizer.mask_token_id).any()


# -- batched prompts -------------------------------------------------------------------------------

PROMPTS = ["ROMEO:", "To be, or not to be, that is", "O"]


@pytest.mark.parametrize("objective,sampler,mode", [("masked", "low_confidence", "uncond"),
                                                    ("masked", "threshold", "uncond"),
                                                    ("masked", "low_confidence", "infill"),
                                                    ("ar", "ar", "uncond"), ("continuous", "ddim", "uncond")])
def test_batched_prompts_equal_one_by_one(runs, objective, sampler, mode):
    """Prompts of different lengths in one call: right padding never attended to, each row as if alone.
    (continuous: x_T is drawn for the whole batch, so only the first prompt's rows share their noise with
    a lone call; the others are checked for shape and padding.)"""
    loaded = load_checkpoint(runs[objective])
    prompts = [p + " [MASK] end" for p in PROMPTS] if mode == "infill" else PROMPTS
    kw = dict(mode=mode, sampler=sampler, temperature=0, steps=4, length=5, mask_length=3, num_samples=2)
    if objective == "continuous":
        kw = dict(mode=mode, sampler=sampler, eta=0.0, steps=4, length=5, num_samples=1)
    batch = sample(loaded, prompts=prompts, seed=0, **kw)
    n = kw["num_samples"]
    lengths = [len(loaded.tokenizer.encode(p)) + (5 if mode == "uncond" else 3 - 1) for p in PROMPTS]
    assert batch.lengths is not None and batch.ids.shape == (len(prompts) * n, max(batch.lengths))
    pad = loaded.tokenizer.pad_token_id
    for i, p in enumerate(prompts):
        alone = sample(loaded, prompt=p, seed=0, **kw)
        for j in range(n):
            row, k = i * n + j, batch.lengths[i * n + j]
            if objective != "continuous" or i == 0:
                assert batch.texts[row] == alone.texts[j]
                assert batch.ids[row, :k].tolist() == alone.ids[j].tolist()
            assert k == alone.ids.shape[1]
            assert (batch.ids[row, k:] == pad).all() and (batch.start[row, k:] == pad).all()
    if mode == "uncond":
        assert sorted(set(batch.lengths)) == sorted(set(lengths))


def test_padding_is_masked_out_of_attention(runs):
    """Without the attention mask the short row would see the padding: its result changes (so the mask matters)."""
    loaded = load_checkpoint(runs["masked"])
    tok = loaded.tokenizer
    s = build_sampler(loaded.model, loaded.cfg.override({"sample.temperature": 0.0, "sample.sampler": "low_confidence"}),
                      tok)  # deterministic order: the same positions alone and in a batch
    long_, short = tok.encode(PROMPTS[1]) + [tok.mask_token_id] * 4, tok.encode(PROMPTS[0]) + [tok.mask_token_id] * 4
    x = torch.full((2, len(long_)), tok.pad_token_id)
    x[0], x[1, :len(short)] = torch.tensor(long_), torch.tensor(short)
    keys = torch.zeros_like(x)
    keys[0], keys[1, :len(short)] = 1, 1
    alone = s(torch.tensor([short])).ids[0]
    assert torch.equal(s(x, attention_mask=keys).ids[1, :len(short)], alone)
    assert not torch.equal(s(x).ids[1, :len(short)], alone)


def test_cli_prompts_file_lines_and_jsonl(runs, tmp_path, capsys):
    lines = tmp_path / "p.txt"
    lines.write_text("\n".join(PROMPTS) + "\n")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    common = ["--sampler", "low_confidence", "--temperature", "0", "--length", "4", "--steps", "4", "--num-samples", "1",
              "--json", "--no-save"]
    outs = []
    for f in (lines, jsonl):
        assert main(["sample", str(runs["masked"]), "--prompts", str(f), *common]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0]["texts"] == outs[1]["texts"] and len(outs[0]["texts"]) == 3
    for p, text in zip(PROMPTS, outs[0]["texts"]):
        assert main(["sample", str(runs["masked"]), "--prompt", p, *common]) == 0
        assert json.loads(capsys.readouterr().out)["texts"] == [text]


def test_one_public_entry_point():
    import sunfish_lib.sampling.generate as g

    assert not hasattr(g, "generate") and not hasattr(g, "build_sampler") and not hasattr(g, "ARSampler")


def test_ar_trajectory_commits_one_token_per_step_at_full_width(runs):
    from sunfish_lib.sampling.analysis import step_html

    loaded = load_checkpoint(runs["ar"])
    tok = loaded.tokenizer
    gen = sample(loaded, prompt="ROMEO:", seed=0, length=5, num_samples=2, record=True)
    traj, p = gen.trajectory, len(tok.encode("ROMEO:"))
    assert len(traj) == 5 and traj.stack("tokens").shape == (5, 2, p + 5)
    committed = traj.stack("committed")
    assert committed.sum(-1).eq(1).all()  # one token per step
    assert committed.float().argmax(-1)[:, 0].tolist() == [p, p + 1, p + 2, p + 3, p + 4]
    assert traj.stack("masked")[0, 0, p + 1:].all() and not traj.stack("masked")[-1].any()
    assert torch.equal(traj.stack("tokens")[-1], gen.ids)
    assert step_html(tok, traj, 2, 0).count('class="sf-tok sf-mask"') == 2  # after 3 of 5 tokens


def test_threshold_trajectory_can_commit_several_per_pass(runs):
    loaded = load_checkpoint(runs["masked"])
    gen = sample(loaded, prompt="ROMEO:", seed=0, length=8, steps=8, sampler="threshold", threshold=0.0001,
                 record=True)
    per_step = gen.trajectory.stack("committed").sum(-1)  # (S, B)
    assert per_step.max() > 1 and len(gen.trajectory) < 8  # several per forward pass, fewer passes than steps


# -- Fast-dLLM block cache -----------------------------------------------------------------------------

def _one_layer(tok, time_conditioning):
    cfg = small_config("masked").override({"model.n_layers": 1, "model.time_conditioning": time_conditioning})
    return _model(cfg)


@pytest.mark.parametrize("kind", ["prefix", "dual"])
def test_block_cache_window_pass_equals_the_full_pass_on_unchanged_input(tok, kind):
    """Recorded keys/values + the window's fresh ones give exactly the full pass's hidden states there."""
    from sunfish_lib.model.layers import BlockCache

    cfg = small_config("masked")
    model = _model(cfg)
    x = torch.randint(5, 200, (2, 24))
    keys = torch.ones_like(x)
    keys[1, 20:] = 0  # padding is still masked out of the keys in the window pass
    t = torch.tensor([0.5, 0.7])
    full = model.encode(x, t=t, attention_mask=keys)
    c = BlockCache(len(model.blocks), 8, 16 if kind == "dual" else 24)
    torch.testing.assert_close(model.encode(x, t=t, attention_mask=keys, kv_cache=c), full)
    c.recording = False
    win = model.encode(x[:, c.start:c.stop], t=t, attention_mask=keys, kv_cache=c)
    real = keys[:, c.start:c.stop].bool()  # (padding queries' own outputs are never read)
    torch.testing.assert_close(win[real], full[:, c.start:c.stop][real], rtol=1e-4, atol=1e-5)
    assert keys.sum() < keys.numel()


@pytest.mark.parametrize("kind,sampler", [("prefix", "low_confidence"), ("dual", "low_confidence"),
                                          ("dual", "threshold")])
def test_cache_is_exact_where_kept_keys_cannot_change_and_runs_fewer_positions(tok, kind, sampler):
    """One layer, no time input: kept keys/values depend only on tokens that do not change inside a block
    (committed prefix; the suffix is still [MASK]), so the cache must give the uncached samples exactly."""
    model = _one_layer(tok, False)
    x = torch.full((2, 40), tok.mask_token_id)
    x[:, :6] = torch.tensor(tok.encode("ROMEO: To be")[:6])
    kw = dict(kind=sampler, steps=16, block_length=8, temperature=0, threshold=0.5)
    off = MaskedSampler(model, tok.mask_token_id, **kw)
    on = MaskedSampler(model, tok.mask_token_id, cache=kind, **kw)
    a, b = off.generate(x), on.generate(x)
    assert torch.equal(a, b) and on.forward_passes == off.forward_passes
    assert on.positions < 0.75 * off.positions


def test_cache_is_off_by_default_and_refreshes_per_block(runs):
    assert SampleConfig().cache == "none"
    loaded = load_checkpoint(runs["masked"])
    gen = sample(loaded, prompt="ROMEO:", seed=0, length=12, steps=6, block_length=4, cache="prefix", record=True,
                 sampler="low_confidence")
    refreshed = gen.trajectory.stack("refreshed")[:, 0, 0]
    assert refreshed.tolist() == [True, False, True, False, True, False]  # 3 blocks of 2 steps
    with pytest.raises(SunfishError, match="sample.cache='ring' is not allowed; choose one of none, prefix, dual"):
        sample(loaded, cache="ring")
    with pytest.raises(SunfishError, match="needs low_confidence/random/threshold"):
        sample(loaded, cache="dual", sampler="ancestral")


def test_a_flag_that_does_not_act_on_the_checkpoint_is_noted(runs, capsys):
    assert main(["sample", str(runs["masked"]), "--eta", "0.5", "--length", "4", "--steps", "2", "--json",
                 "--no-quality", "--no-save"]) == 0
    err = capsys.readouterr().err
    assert "note: --eta does not act on a masked checkpoint in uncond mode; ignored" in err
