"""Truncated, foreign, tampered and code-carrying checkpoint files, through every loader.

Each bad file must give exit code 2 (or a SunfishError from the API) with one line naming the
file and what is wrong, no traceback, and a pickle crafted to run code must never run: its
payload would create a marker file, and the marker must not exist after the loader refused it.
"""

import io
import os
import pathlib
import shutil
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from sunfish_lib.cli import main
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.train.checkpoint import AtomicCheckpointIO
from tests.train_helpers import small_config


class Payload:
    """Pickles as a call of `fn(*args)`: what a crafted checkpoint runs when loaded without weights_only."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker: pathlib.Path) -> dict[str, Payload]:
    return {"os.system": Payload(os.system, f"touch {marker}"),
            "exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
            "Path.touch": Payload(pathlib.Path.touch, pathlib.Path(marker))}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step masked run with EMA: config.json, tokenizer/, checkpoints/last.ckpt, export/."""
    from sunfish_lib.train.trainer import train

    folder = tmp_path_factory.mktemp("ckpt") / "run"
    train(small_config("masked", max_steps=2, val_every=2, ckpt_every=2, keep_best=0, ema_decay=0.9), folder,
          progress=False)
    return folder


def _edit(good: bytes, path: pathlib.Path, change) -> None:
    ckpt = torch.load(io.BytesIO(good), weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


def _flip(data: bytes, at: float) -> bytes:
    b = bytearray(data)
    i = int(len(b) * at)
    b[i:i + 16] = bytes(x ^ 0xFF for x in b[i:i + 16])
    return bytes(b)


def _zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes/readme.txt", "an unrelated archive")


# kind -> (write the bad last.ckpt from the good bytes, expected message part)
CKPTS = {
    "truncated": (lambda g, p, m: p.write_bytes(g[: len(g) // 2]), "is truncated or corrupt"),
    "empty": (lambda g, p, m: p.write_bytes(b""), "is empty (0 bytes)"),
    "text": (lambda g, p, m: p.write_text("step 2, loss 3.1\n"), "is not a Sunfish checkpoint (no PyTorch archive"),
    "foreign_pt": (lambda g, p, m: torch.save({"weights": torch.zeros(3)}, p),
                   {"resume": "lacks state_dict, optimizer_states", "other": "no 'sunfish' section"}),
    "safetensors": (lambda g, p, m: save_file({"x": torch.zeros(2)}, str(p)), "is a safetensors file, not a Sunfish"),
    "zip": (lambda g, p, m: _zip(p), "is a zip archive but not a Sunfish checkpoint"),
    "flipped_bytes": (lambda g, p, m: p.write_bytes(_flip(g, 0.5)), "a CRC-32 check failed"),
    "key_removed": (lambda g, p, m: _edit(g, p, lambda c: c["state_dict"].pop("model.ln_f.weight")),
                    {"resume": "(state_dict: missing model.ln_f.weight)", "other": "(missing ln_f.weight)"}),
    "shape_changed": (lambda g, p, m: _edit(g, p, lambda c: c["state_dict"].update({"model.ln_f.weight": torch.ones(7)})),
                      "ln_f.weight has shape (7,), the model (64,)"),
    "ema_changed": (lambda g, p, m: _edit(g, p, lambda c: c["ema"].pop()), "EMA weights that do not fit"),
    "no_optimizer": (lambda g, p, m: _edit(g, p, lambda c: c.pop("optimizer_states")), "lacks optimizer_states"),
    "optimizer_changed": (lambda g, p, m: _edit(g, p, lambda c: c["optimizer_states"][0]["state"][0].update(
        {"exp_avg": torch.zeros(5, 5, 5)})), "optimizer state that does not fit"),
    "pickle_in_checkpoint": (lambda g, p, m: _edit(g, p, lambda c: c.update({"x": payloads(m)["os.system"]})),
                             "was refused: it asks for posix.system"),
    "pickle_exec": (lambda g, p, m: torch.save({"state_dict": payloads(m)["exec"]}, p),
                    "was refused: it asks for exec when unpickled"),
    "pickle_path_touch": (lambda g, p, m: torch.save(payloads(m)["Path.touch"], p), "was refused"),
}
RESUME_ONLY = {"no_optimizer", "optimizer_changed"}  # sampling needs no optimizer state
LOADERS = ["resume", "sample", "evaluate", "load_for_inference"]
CASES = [(loader, kind) for loader in LOADERS for kind in CKPTS if loader == "resume" or kind not in RESUME_ONLY]


def _bad_run(run, tmp_path, kind):
    """A copy of the run (config, tokenizer) whose checkpoints/last.ckpt is the bad file; returns (folder, file, marker)."""
    folder, marker = tmp_path / "bad", tmp_path / "PWNED"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.json", folder)
    shutil.copytree(run / "tokenizer", folder / "tokenizer")
    ckpt = folder / "checkpoints" / "last.ckpt"
    CKPTS[kind][0]((run / "checkpoints" / "last.ckpt").read_bytes(), ckpt, marker)
    return folder, ckpt, marker


def _load(loader, folder, ckpt) -> tuple[int, str]:
    if loader == "resume":
        return main(["train", "--config", str(folder / "config.json"), "--run-dir", str(folder), "--resume",
                     "--max-steps", "3", "--no-progress"]), ""
    if loader == "sample":
        return main(["sample", str(ckpt), "--steps", "2", "--length", "4"]), ""
    if loader == "evaluate":
        return main(["evaluate", str(ckpt), "--batches", "1"]), ""
    with pytest.raises(SunfishError) as err:
        load_for_inference(ckpt)
    return 2, "error: " + str(err.value)


def _expect_one_line(code, err, path, expected) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0].startswith("error: ") and str(path) in lines[0] and expected in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("loader,kind", CASES, ids=[f"{loader}-{kind}" for loader, kind in CASES])
def test_bad_checkpoint_is_one_line_error_naming_the_file(run, tmp_path, capsys, loader, kind):
    folder, ckpt, marker = _bad_run(run, tmp_path, kind)
    code, api_err = _load(loader, folder, ckpt)
    expected = CKPTS[kind][1]
    expected = expected if isinstance(expected, str) else expected["resume" if loader == "resume" else "other"]
    line = _expect_one_line(code, api_err or capsys.readouterr().err, ckpt, expected)
    assert not marker.exists()  # the payload never ran
    assert ("nothing in it was executed" in line) == kind.startswith("pickle")


# -- exported weights (safetensors): sample / load_for_inference of a folder, and train.init_from ---------

def _edit_st(run, path, change):
    sd = load_file(str(run / "export" / "model.safetensors"))
    change(sd)
    save_file(sd, str(path))


EXPORTS = {
    "truncated": (lambda r, p, m: p.write_bytes(p.read_bytes()[:1000]), "is unreadable"),
    "empty": (lambda r, p, m: p.write_bytes(b""), "is empty (0 bytes)"),
    "text": (lambda r, p, m: p.write_text("weights go here"), "is unreadable"),
    "foreign_safetensors": (lambda r, p, m: save_file({"encoder.w": torch.zeros(2)}, str(p)), "(missing "),
    "key_removed": (lambda r, p, m: _edit_st(r, p, lambda sd: sd.pop("ln_f.weight")), "(missing ln_f.weight)"),
    "shape_changed": (lambda r, p, m: _edit_st(r, p, lambda sd: sd.update({"ln_f.weight": torch.ones(3)})),
                      "ln_f.weight has shape (3,), the model (64,)"),
    "flipped_bytes": (lambda r, p, m: p.write_bytes(_flip(p.read_bytes(), 0.6)), "fail the CRC-32 written at export"),
    "zip": (lambda r, p, m: _zip(p), "was refused: it is a pickle"),
    "pickle": (lambda r, p, m: torch.save({"w": payloads(m)["os.system"]}, p), "was refused: it is a pickle"),
}
EXPORT_LOADERS = ["init_from", "sample", "load_for_inference"]
EXPORT_CASES = [(loader, kind) for loader in EXPORT_LOADERS for kind in EXPORTS]


@pytest.mark.parametrize("loader,kind", EXPORT_CASES, ids=[f"{loader}-{kind}" for loader, kind in EXPORT_CASES])
def test_bad_exported_weights_are_one_line_errors(run, tmp_path, capsys, loader, kind):
    folder, marker = tmp_path / "export", tmp_path / "PWNED"
    shutil.copytree(run / "export", folder)
    path = folder / "model.safetensors"
    EXPORTS[kind][0](run, path, marker)
    api_err = ""
    if loader == "init_from":
        cfg = small_config("masked", max_steps=2, init_from=str(folder))
        cfg.save(tmp_path / "cfg.json")
        code = main(["train", "--config", str(tmp_path / "cfg.json"), "--run-dir", str(tmp_path / "new"),
                     "--no-progress"])
    elif loader == "sample":
        code = main(["sample", str(folder), "--steps", "2", "--length", "4"])
    else:
        with pytest.raises(SunfishError) as err:
            load_for_inference(folder)
        code, api_err = 2, "error: " + str(err.value)
    line = _expect_one_line(code, api_err or capsys.readouterr().err, path, EXPORTS[kind][1])
    assert not marker.exists()
    assert ("nothing in it was executed" in line) == (kind in ("zip", "pickle"))


# -- the payloads are real, and Lightning's own load path refuses them ------------------------------------

@pytest.mark.parametrize("name", ["os.system", "exec", "Path.touch"])
def test_payload_runs_when_loaded_unsafely_and_is_refused_by_lightning_io(tmp_path, name):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": payloads(marker)[name]}, path)
    torch.load(path, weights_only=False)  # the control: without weights_only the payload runs
    assert marker.exists()
    marker.unlink()
    with pytest.raises(SunfishError, match="was refused") as err:
        AtomicCheckpointIO().load_checkpoint(path)  # what Lightning's restore calls (every strategy)
    assert str(path) in str(err.value) and not marker.exists()


@pytest.mark.parametrize("strategy,devices", [("auto", 1), ("ddp", 2), ("fsdp", 2)])
def test_every_strategy_loads_checkpoints_through_the_safe_io(tmp_path, strategy, devices):
    from sunfish_lib.train.trainer import build_strategy

    cfg = small_config("masked", strategy=strategy, devices=devices)
    trainer_strategy = build_strategy(cfg)
    if isinstance(trainer_strategy, str):  # one device: build_trainer adds the IO as a plugin
        from sunfish_lib.train.trainer import build_trainer

        trainer_strategy = build_trainer(cfg, tmp_path, progress=False).strategy
    assert type(trainer_strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"


@pytest.mark.slow
def test_resume_refuses_a_crafted_last_ckpt_before_anything_runs(run, tmp_path, capsys):
    """`sunfish train --resume` in a real process: exit 2, one line, no marker, the run folder untouched."""
    from tests.helpers import run_cli

    folder, ckpt, marker = _bad_run(run, tmp_path, "pickle_in_checkpoint")
    before = ckpt.read_bytes()
    r = run_cli("train", "--config", str(folder / "config.json"), "--run-dir", str(folder), "--resume",
                "--max-steps", "3", "--no-progress", timeout=300)
    assert r.returncode == 2 and r.stdout == "" and not marker.exists()
    assert r.stderr.strip().splitlines() == [
        f"error: checkpoint {ckpt} was refused: it asks for posix.system when unpickled, which could run code; "
        "nothing in it was executed. Use a checkpoint you trust (sunfish writes only tensors and plain data)"]
    assert ckpt.read_bytes() == before and not (folder / "export").exists()


@pytest.mark.parametrize("kind,message", [("pickle", "was refused: it asks for posix.system"),
                                          ("truncated", "is unreadable")])
def test_convert_refuses_a_crafted_or_broken_pytorch_model_bin(tmp_path, capsys, kind, message):
    """`sunfish convert --from` an HF folder whose weights are a pickle (.bin), not safetensors."""
    from tests.convert_helpers import save_hf_model, save_tokenizer_without_mask

    save_tokenizer_without_mask(tmp_path / "tok")
    parent = tmp_path / "gpt2"
    save_hf_model(parent, "gpt2", tmp_path / "tok")
    sd = load_file(str(parent / "model.safetensors"))
    (parent / "model.safetensors").unlink()
    marker, weights = tmp_path / "PWNED", parent / "pytorch_model.bin"
    if kind == "pickle":
        torch.save({**sd, "lm_head.weight": payloads(marker)["os.system"]}, weights)
    else:
        torch.save(sd, weights)
        weights.write_bytes(weights.read_bytes()[:5000])
    code = main(["convert", "--from", str(parent), "--out", str(tmp_path / "out")])
    _expect_one_line(code, capsys.readouterr().err, weights, message)
    assert not marker.exists() and not (tmp_path / "out" / "model.safetensors").exists()
