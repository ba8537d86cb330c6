"""Sharded (DCP) checkpoints of FSDP2 runs, the rank-0 resume check, FSDP2 mixed precision (issue #17)."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dist_cp
from safetensors.torch import load_file

from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling import MaskedSampler, RowNoise
from sunfish_lib.io import dcp
from sunfish_lib.train import dcp_strategy
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.io.verify import _verified
from sunfish_lib.io.metrics import read_metrics, series
from sunfish_lib.train.module import SunfishModule, fsdp_mixed_precision
from tests.helpers import run_cli
from tests.train_helpers import SMALL_ARGS, small_config


def _module(**extra) -> SunfishModule:
    cfg = small_config("masked", **extra)
    return SunfishModule(cfg.to_dict(), mask_token_id=cfg.model.vocab_size - 1)


def _write_folder(path, module, step=3):
    """A one-rank DCP folder laid out as ShardedModelParallelStrategy.save_checkpoint lays it out."""
    tmp = dcp.tmp_of(path)
    ema = {str(i): p.detach() * 0.5 for i, p in enumerate(module.model.parameters())}
    dist_cp.save({"state_dict": module.state_dict(), "ema": ema}, checkpoint_id=str(tmp), no_dist=True)
    meta = {"loops": {"fit_loop": {}}, "global_step": step, "epoch": 0, "lr_schedulers": [],
            "pytorch-lightning_version": "2", "sunfish": {"config": module.cfg.to_dict(), "format": 1}}
    dcp.save_meta(tmp, meta)
    dcp.write_manifest(tmp, dcp.rank_crcs(tmp, 0))
    dcp.swap_in(tmp, path)
    return ema


def test_sharded_folder_is_checked_and_consolidates_in_one_process(tmp_path):
    module, path = _module(), tmp_path / "last.ckpt"
    ema = _write_folder(path, module)
    assert dcp.is_sharded(path) and not dcp.tmp_of(path).exists()
    assert sorted(json.loads((path / dcp.CRC_FILE).read_text())) == [".metadata", "__0_0.distcp", "meta.pt"]
    assert dcp.check_folder_fits(path, module) == 3 and dcp.saved_step(path) == 3
    model, cfg = dcp.load_sharded(path, use_ema=False)
    assert cfg == module.cfg
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), module.model.state_dict().values()))
    model, _ = dcp.load_sharded(path)  # the EMA weights, as sampling uses them
    assert all(torch.equal(p, ema[str(i)]) for i, p in enumerate(model.parameters()))
    # another run's model: the shapes in .metadata say so before anything is read
    with pytest.raises(SunfishError, match=r"does not fit this run's model \(state_dict: .* has shape"):
        dcp.check_folder_fits(path, _module(d_model=32))
    # one flipped byte in a shard: the CRC names the file
    shard = path / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SunfishError, match=r"__0_0.distcp is corrupt: a CRC-32 check failed"):
        dcp.check_folder_fits(path, module)
    with pytest.raises(SunfishError, match="CRC-32"):
        load_for_inference(path)
    (path / "__1_0.distcp").write_bytes(b"x")
    with pytest.raises(SunfishError, match=r"does not match its crc32.json \(unexpected __1_0.distcp\)"):
        dcp.verify_folder(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_crafted_metadata_is_refused_unread_even_with_a_matching_manifest(tmp_path):
    module, path = _module(), tmp_path / "last.ckpt"
    _write_folder(path, module)
    marker = tmp_path / "PWNED"
    (path / dcp.DCP_INDEX).write_bytes(pickle.dumps(_Evil(marker)))
    crcs = json.loads((path / dcp.CRC_FILE).read_text())
    crcs[dcp.DCP_INDEX] = dcp.file_crc32(path / dcp.DCP_INDEX)  # the attacker rewrites the manifest too
    (path / dcp.CRC_FILE).write_text(json.dumps(crcs))
    for attempt in (lambda: dcp.check_folder_fits(path, module), lambda: load_for_inference(path)):
        with pytest.raises(SunfishError, match=r"\.metadata was refused: it asks for posix.system"):
            attempt()
    assert not marker.exists()


def test_a_kill_between_the_two_renames_keeps_a_whole_checkpoint(tmp_path):
    module, path = _module(), tmp_path / "last.ckpt"
    _write_folder(path, module, step=3)
    _write_folder(path, module, step=6)  # replaces the folder
    assert dcp.saved_step(path) == 6 and not (tmp_path / "last.ckpt.old").exists()
    path.rename(tmp_path / "last.ckpt.old")  # what a kill after the first rename leaves
    dcp.recover_swap(path)
    assert dcp.saved_step(path) == 6 and dcp.check_folder_fits(path, module) == 6


def test_only_rank_zero_checks_the_checkpoint_and_the_others_get_its_verdict(tmp_path, monkeypatch):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"PK not really")
    calls = []
    monkeypatch.setattr(dcp_strategy, "check_resume", lambda path, module: calls.append(path) or 3)

    def trainer(rank, verdict):
        return SimpleNamespace(global_rank=rank, strategy=SimpleNamespace(
            broadcast=lambda obj, src=0: verdict if rank else obj))

    check = dcp_strategy.RankZeroResumeCheck(ckpt)
    with pytest.raises(SunfishError, match="^rank 0 found it truncated$"):
        check.setup(trainer(1, "rank 0 found it truncated"), None, "fit")
    assert calls == []  # rank 1 never read the file
    check.setup(trainer(1, ""), None, "fit")
    st = ckpt.stat()
    assert calls == [] and (str(ckpt.resolve()), st.st_size, st.st_mtime_ns) in _verified  # no second CRC pass
    check.setup(trainer(0, None), None, "fit")
    assert calls == [ckpt]
    monkeypatch.setattr(dcp_strategy, "check_resume", lambda path, module: (_ for _ in ()).throw(SunfishError("bad")))
    with pytest.raises(SunfishError, match="^bad$"):
        check.setup(trainer(0, None), None, "fit")


def test_fsdp2_mixed_precision_policy_follows_the_trainer_precision():
    from torch.distributed.device_mesh import init_device_mesh

    bf16 = fsdp_mixed_precision("bf16-mixed")
    assert (bf16.param_dtype, bf16.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert fsdp_mixed_precision("16-mixed").param_dtype == torch.float16
    assert fsdp_mixed_precision("32-true") is None and fsdp_mixed_precision("bf16-true") is None
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
    dtypes = {}
    for precision in ("bf16-mixed", "32-true"):
        module = _module()
        module._device_mesh, module._trainer = mesh, SimpleNamespace(precision=precision)
        module._shard()
        policy = module.model.blocks[0]._get_fsdp_state()._mp_policy
        tokens = torch.randint(0, 100, (2, 16))
        logits = module.model(tokens)
        logits.float().sum().backward()
        grad = module.model.blocks[0].attn.qkv.weight.grad
        dtypes[precision] = (policy.param_dtype, policy.reduce_dtype, logits.dtype, grad.dtype)
    assert dtypes["bf16-mixed"] == (torch.bfloat16, torch.float32, torch.bfloat16, torch.float32)
    assert dtypes["32-true"] == (None, None, torch.float32, torch.float32)


def _train(run_dir, *extra, devices=2):
    r = run_cli("train", "--preset", "smoke", "--objective", "masked", "--devices", str(devices), "--strategy", "fsdp",
                *SMALL_ARGS, "--max-steps", "6", "--set", "ema_decay=0.9", "--run-dir", str(run_dir), "--no-progress",
                *extra, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_fsdp_dcp_resume_is_exact_and_export_consolidates(tmp_path):
    """2 gloo processes: 6 steps straight == 3, stop, resume from the sharded folder, 3 more (EMA on)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(straight)
    _train(resumed, "--stop-at-step", "3")
    last = resumed / "checkpoints" / "last.ckpt"
    assert dcp.is_sharded(last) and dcp.saved_step(last) == 3
    shards = sorted(p.name for p in last.glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shard
    meta = torch.load(last / dcp.META_FILE, weights_only=True)
    assert not {"state_dict", "optimizer_states", "ema"} & set(meta)  # no full tensors on rank 0
    index = dcp.read_index(last).state_dict_metadata
    assert {"state_dict.model.tok_emb.weight", "ema.0", "optimizer_0.state.model.tok_emb.weight.exp_avg"} <= set(index)
    r = _train(resumed, "--resume")
    assert r.stdout.count("trained to step 6") == 1 and "start: step 3," in (resumed / "train.log").read_text()
    curves = [series(read_metrics(d), "train/loss") for d in (straight, resumed)]
    assert curves[0][0] == list(range(6)) and curves[0] == curves[1]  # the loss curve, exactly
    a, b = load_file(str(straight / "export" / "model.safetensors")), load_file(str(resumed / "export" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # `sunfish export` consolidates the sharded folder in one process; the export loads and samples
    (resumed / "export" / "model.safetensors").unlink()
    r = run_cli("export", str(resumed), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    c = load_file(str(resumed / "export" / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)  # the EMA weights, as training exported them
    model, cfg, tok = load_for_inference(resumed)
    x = torch.full((2, 16), tok.mask_token_id)
    out = MaskedSampler(model, tok.mask_token_id, steps=4).generate(x, noise=RowNoise(0))
    assert out.shape == (2, 16) and (out != tok.mask_token_id).all()
